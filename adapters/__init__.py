"""transpec.adapters: implementations under test, wrapped behind one contract.

Framework adapters import their framework only when they are used.
"""

from transpec.adapters.base import COMPONENTS as COMPONENTS
from transpec.adapters.base import Adapter as Adapter
from transpec.adapters.base import FunctionAdapter as FunctionAdapter
from transpec.adapters.base import Precision as Precision

__all__ = ["COMPONENTS", "Adapter", "FunctionAdapter", "Precision"]
