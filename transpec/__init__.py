"""transpec: a verified specification of the transformer's building blocks and a test oracle.

The package is split by concern:

* :mod:`transpec.spec`     -- SymPy definitions, proofs of their identities, derivations;
* :mod:`transpec.oracle`   -- float64 and high-precision references, the tolerance model,
  properties, strategies;
* :mod:`transpec.adapters` -- the implementations under test, wrapped;
* the user-facing layer: :mod:`transpec.runs` (the run: planning, execution, verdicts),
  :mod:`transpec.reports` (text, JSON, JUnit), :mod:`transpec.cases` (saved cases, reproduce),
  :mod:`transpec.cli` (the ``transpec`` command), :mod:`transpec.plugin` (pytest), and
  :mod:`transpec.errors`.

``import transpec`` is cheap: it imports neither torch nor sympy.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
