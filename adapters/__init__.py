"""transpec.adapters: implementations under test, wrapped behind one contract.

Framework adapters import their framework only when they are used: importing this package
imports NumPy, never torch.
"""

from transpec.adapters.base import COMPONENTS as COMPONENTS
from transpec.adapters.base import Adapter as Adapter
from transpec.adapters.base import FunctionAdapter as FunctionAdapter
from transpec.adapters.base import Precision as Precision
from transpec.adapters.numpy.adapter import NumpyAdapter as NumpyAdapter
from transpec.adapters.registry import BUILTIN_ADAPTERS as BUILTIN_ADAPTERS
from transpec.adapters.registry import AdapterLoadError as AdapterLoadError
from transpec.adapters.registry import load_adapter as load_adapter

__all__ = [
    "BUILTIN_ADAPTERS",
    "COMPONENTS",
    "Adapter",
    "AdapterLoadError",
    "FunctionAdapter",
    "NumpyAdapter",
    "Precision",
    "load_adapter",
]
