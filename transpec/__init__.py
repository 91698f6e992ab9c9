"""transpec: a verified specification of the transformer's building blocks and a test oracle.

The names most programs need are here::

    from transpec import run, reproduce, assert_conforms, conformance_tests
    from transpec import Adapter, FunctionAdapter, Precision, Conventions, TranspecError

    result = run(MyAdapter(), components=["attention"])     # every verdict of a run
    verdict = reproduce("transpec-failures/attention-....npz")  # one saved case again
    assert_conforms(MyAdapter())                            # AssertionError with the reports
    test_my_kernels = conformance_tests(MyAdapter())        # a parametrized pytest test

The package is split by concern:

* :mod:`transpec.spec`     -- SymPy definitions, proofs of their identities, derivations;
* :mod:`transpec.oracle`   -- float64 and high-precision references, the tolerance model,
  properties, strategies;
* :mod:`transpec.adapters` -- the implementations under test, wrapped;
* the user-facing layer: :mod:`transpec.runs` (the run: planning, execution, verdicts),
  :mod:`transpec.jobs` (a run's cases judged in several processes at once),
  :mod:`transpec.reports` (text, JSON, JUnit), :mod:`transpec.htmlreport` (the HTML page:
  ``write_html(run(...), "report.html")``), :mod:`transpec.cases` (saved cases, reproduce),
  :mod:`transpec.cli` (the ``transpec`` command), :mod:`transpec.plugin` (pytest), and
  :mod:`transpec.errors` (:class:`TranspecError` and the errors under it).

``import transpec`` is cheap: it imports neither torch, SymPy, Hypothesis nor NumPy. Each name
above is imported from its module on first use (:data:`_LAZY`); ``TranspecError`` is imported
at once (:mod:`transpec.errors` imports nothing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transpec.errors import TranspecError

if TYPE_CHECKING:
    from transpec.adapters.base import Adapter, FunctionAdapter, Precision
    from transpec.cases import reproduce
    from transpec.plugin import assert_conforms, conformance_tests
    from transpec.runs import run
    from transpec.spec.conventions import Conventions

__version__ = "0.1.0"

#: public name -> "module:attribute", imported on first access
_LAZY: dict[str, str] = {
    "run": "transpec.runs:run",
    "reproduce": "transpec.cases:reproduce",
    "assert_conforms": "transpec.plugin:assert_conforms",
    "conformance_tests": "transpec.plugin:conformance_tests",
    "Adapter": "transpec.adapters.base:Adapter",
    "FunctionAdapter": "transpec.adapters.base:FunctionAdapter",
    "Precision": "transpec.adapters.base:Precision",
    "Conventions": "transpec.spec.conventions:Conventions",
}

__all__ = [
    "Adapter",
    "Conventions",
    "FunctionAdapter",
    "Precision",
    "TranspecError",
    "__version__",
    "assert_conforms",
    "conformance_tests",
    "reproduce",
    "run",
]


def __getattr__(name: str) -> Any:
    """Import a public name of :data:`_LAZY` from its module on first access."""
    try:
        target = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
