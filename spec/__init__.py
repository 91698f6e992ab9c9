"""transpec.spec: the SymPy specification of the transformer's building blocks.

Importing this package is cheap; SymPy is imported by the submodules that need it
(:mod:`transpec.spec.blocks`, :mod:`transpec.spec.proofs`, :mod:`transpec.spec.derive`).
:mod:`transpec.spec.conventions` never imports SymPy.
"""

from transpec.spec.conventions import CANONICAL as CANONICAL
from transpec.spec.conventions import Conventions as Conventions

__all__ = ["CANONICAL", "Conventions"]
