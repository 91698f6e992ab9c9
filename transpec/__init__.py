"""transpec: a verified specification of the transformer's building blocks and a test oracle.

The package is split by concern:

* :mod:`transpec.spec`     -- SymPy definitions, proofs of their identities, derivations;
* :mod:`transpec.oracle`   -- float64 and high-precision references, the tolerance model,
  properties, strategies, the runner, the CLI and the pytest plugin;
* :mod:`transpec.adapters` -- the implementations under test, wrapped.

``import transpec`` is cheap: it imports neither torch nor sympy.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
