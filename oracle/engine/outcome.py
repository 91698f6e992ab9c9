"""What a property check can conclude about an implementation, as exceptions and records.

A property check either returns the worst error-to-tolerance ratio it saw (a float, <= 1 when
it passed) or raises one of the two failures below. The runner turns both into a verdict with a
report; neither ever escapes a run.

* :class:`PropertyViolation` -- the implementation ran and returned an array, but the array
  breaks the property (an element out of tolerance, a NaN where none belongs, an earlier output
  that moved when a future key changed, ...).
* :class:`ImplementationFailure` -- the implementation did not produce a usable array or did
  not keep to the contract: it raised (``"raised"``), hung (``"hung"``), returned something
  that is not an array (``"not_array"``) or an array of the wrong shape (``"shape"``) or dtype
  (``"dtype"``), modified an input it was given, in place or by editing the ``params`` dict
  (``"mutated_input"``), or changed its adapter's conventions (``"changed_conventions"``; it is
  judged under those declared when the run began, whatever it changes), or -- run in a worker
  process (``isolation="process"``, :mod:`transpec.oracle.engine.isolation`) -- killed that
  process (``"crashed"``: a segfault, an abort, ``os._exit``; the signal or exit code is named).
  A hang is ``"hung"`` in both modes; in a worker process the parent kills the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from transpec.oracle.engine.picture import Evidence, StatisticEvidence

FailureKind = Literal[
    "raised",
    "hung",
    "not_array",
    "shape",
    "dtype",
    "mutated_input",
    "changed_conventions",
    "crashed",
]
#: every kind of :class:`ImplementationFailure`, in the order reports list them
FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)


@dataclass(frozen=True)
class Worst:
    """The worst element of a numeric comparison and how its tolerance was derived."""

    index: tuple[int, ...]
    actual: float
    expected: float
    error: float
    tolerance: float
    derivation: str

    @property
    def ratio(self) -> float:
        if self.error == float("inf") or self.error != self.error:
            return float("inf")  # a NaN/inf where a finite value belongs: unbounded error
        if self.tolerance > 0:
            return self.error / self.tolerance
        return 0.0 if self.error == 0 else float("inf")

    def describe(self) -> str:
        return (
            f"worst element at {list(self.index)}: got {self.actual!r}, expected "
            f"{self.expected!r}, |error| = {self.error:.3e} > tolerance {self.tolerance:.3e} "
            f"(ratio {self.ratio:.3g}); tolerance: {self.derivation}"
        )


class PropertyViolation(AssertionError):
    """The implementation's output breaks the property; ``details`` says where and by how much."""

    def __init__(
        self,
        message: str,
        *,
        worst: Worst | None = None,
        ratio: float = float("inf"),
        details: dict[str, Any] | None = None,
        evidence: Evidence | StatisticEvidence | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.worst = worst
        self.ratio = worst.ratio if worst is not None else ratio
        self.details = details or {}
        #: the compared arrays, by reference, for the picture of a reported failure
        #: (:mod:`transpec.oracle.engine.picture`); None when the check compared no arrays
        self.evidence = evidence

    def describe(self) -> str:
        if self.worst is None:
            return self.message
        return f"{self.message}\n{self.worst.describe()}"


class ImplementationFailure(Exception):
    """The implementation under test did not return a usable array or broke the contract
    (``kind``: one of :data:`FAILURE_KINDS`)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: FailureKind = kind
        self.message = message

    def describe(self) -> str:
        return f"implementation failure ({self.kind}): {self.message}"
