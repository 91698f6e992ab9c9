"""Judging an output against its reference: the per-element bound and the error statistic.

:func:`compare` applies a :class:`~transpec.oracle.kernels.tolerance.Tolerance` element by element.
NaN and ±inf positions must match exactly (never ``equal_nan`` by default): a NaN is expected
exactly where the reference is NaN (a declared ``fully_masked_row="nan"``, a softmax over an
all -inf slice), ±inf where the reference overflows the output dtype by more than the bound
(``Tolerance.must_overflow``) and allowed where it is within the bound of overflowing
(``Tolerance.may_overflow``).

:func:`error_statistic` is the statistical check of docs/tolerance.md §4: the RMS over one
example of |error| / absref (``absref = Reference.abs_value``), against the same statistic of a
correct kernel emulated at the declared precision (:mod:`transpec.oracle.kernels.emulate`).
Worst-case bounds must hold for every summation order and so cannot see a bug whose effect is a few
times the *typical* rounding error (a 1/sqrt(d+1) scale in bf16 with 1000 keys); the RMS ratio does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from transpec.oracle.engine.dtypes import FORMATS, canonical_dtype
from transpec.oracle.engine.outcome import Worst
from transpec.oracle.kernels.reference import Reference
from transpec.oracle.kernels.tolerance import Tolerance

if TYPE_CHECKING:
    from transpec.adapters.base import Precision
    from transpec.spec.conventions import Conventions


@dataclass(frozen=True)
class Comparison:
    """The verdict of one element-wise comparison.

    ``ratio``: max over elements of |error| / bound (inf on a NaN/inf position mismatch);
    ``worst``: the element with the largest ratio (or the first mismatching non-finite one);
    ``nonfinite_mismatch``: how many elements are NaN/±inf where the reference says otherwise
    (or finite where it says NaN/±inf).
    """

    passed: bool
    ratio: float
    worst: Worst | None
    nonfinite_mismatch: int
    message: str


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def error_ratios(
    actual: np.ndarray, expected: np.ndarray, bound: np.ndarray, finite: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(err, ratio, index of the worst element) of ``actual`` against ``expected``.

    err = |actual - expected| where ``finite``, else 0; ratio = err / bound where bound > 0,
    else inf where err > 0 and 0 where err = 0 (a zero bound demands equality); the worst
    element is the first with the largest ratio (C order). All four arrays have one shape.
    Shared by :func:`compare` (output against reference) and
    :func:`transpec.oracle.engine.harness.assert_related` (output against a relation's prediction).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        err = np.where(finite, np.abs(actual - expected), 0.0)
        ratio = np.where(
            bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0)
        )
    return err, ratio, _index(int(np.argmax(ratio)), ratio.shape)


def compare(actual: Any, reference: Reference, tol: Tolerance) -> Comparison:
    """Compare ``actual`` with ``reference.value`` under the per-element bound ``tol``."""
    if not isinstance(reference, Reference):
        raise TypeError(f"reference must be a Reference, got {type(reference).__name__}")
    if not isinstance(tol, Tolerance):
        raise TypeError(f"tol must be a Tolerance, got {type(tol).__name__}")
    act = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(reference.value, dtype=np.float64)
    if act.shape != ref.shape:
        raise ValueError(f"actual has shape {list(act.shape)}, reference {list(ref.shape)}")
    shape = ref.shape
    bound = np.broadcast_to(np.asarray(tol.bound, dtype=np.float64), shape)
    may = (
        np.zeros(shape, dtype=bool)
        if tol.may_overflow is None
        else np.broadcast_to(tol.may_overflow, shape)
    )
    must = (
        np.zeros(shape, dtype=bool)
        if tol.must_overflow is None
        else np.broadcast_to(tol.must_overflow, shape)
    )
    ref_nan = np.isnan(ref)
    act_nan = np.isnan(act)
    act_inf = np.isinf(act)
    ref_sign = np.sign(np.where(ref_nan, 0.0, ref))
    inf_ok = act_inf & may & (np.sign(act) == ref_sign)
    bad = (ref_nan != act_nan) | (must & ~(act_inf & (np.sign(act) == ref_sign)))
    bad |= act_inf & ~inf_ok & ~ref_nan
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        flat = int(np.flatnonzero(bad)[0])
        idx = _index(flat, shape)
        worst = Worst(
            index=idx,
            actual=float(act[idx]),
            expected=float(ref[idx]),
            error=math.inf,
            tolerance=float(bound[idx]),
            derivation=_nonfinite_reason(float(act[idx]), float(ref[idx]), bool(must[idx])),
        )
        return Comparison(
            passed=False,
            ratio=math.inf,
            worst=worst,
            nonfinite_mismatch=n_bad,
            message=f"{n_bad} element(s) NaN/inf where the reference is not (or the reverse); "
            + worst.describe(),
        )
    finite = ~(ref_nan | act_inf | act_nan)
    if not finite.any():
        return Comparison(True, 0.0, None, 0, "no finite element to compare; non-finite match")
    err, ratio, idx = error_ratios(act, ref, bound, finite)
    worst_ratio = float(ratio[idx])
    worst = Worst(
        index=idx,
        actual=float(act[idx]),
        expected=float(ref[idx]),
        error=float(err[idx]),
        tolerance=float(bound[idx]),
        derivation=tol.describe_at(idx),
    )
    passed = worst_ratio <= 1.0
    message = (
        f"max |error|/tolerance = {worst_ratio:.3g}"
        if passed
        else f"{int(np.count_nonzero(ratio > 1))} element(s) out of tolerance; " + worst.describe()
    )
    return Comparison(passed, worst_ratio, worst, 0, message)


def _nonfinite_reason(actual: float, expected: float, must_overflow: bool) -> str:
    if must_overflow:
        return "the reference overflows the output dtype here: ±inf of its sign is required"
    if math.isnan(expected):
        return "the reference is NaN here (declared convention or undefined result)"
    if math.isnan(actual):
        return "NaN where the reference is finite"
    return "±inf where the reference is finite and within the output dtype's range"


# -- the statistical check ---------------------------------------------------------------------

#: The allowed ratio RMS(implementation) / RMS(emulated correct kernel) for float16/bfloat16
#: outputs, where the error is dominated by the roundings the Precision declares. Chosen from
#: measurement (docs/tolerance.md §4.2): correct implementations stay below it over thousands of
#: random examples, the subtle bugs of §4.3 exceed it.
RMS_RATIO_THRESHOLD = 2.0

#: The allowed ratio for float32 outputs, where the algorithm (BLAS blocking, FMA, the exp
#: implementation, where the scale is applied) moves the typical error by up to ~6x in the
#: large-logit regime; there the element-wise bound is sharp enough for the bugs of §4.3
#: (docs/tolerance.md §4.2).
RMS_RATIO_THRESHOLD_FLOAT32 = 10.0

#: The statistic is only computed on examples with at least this many finite elements with a
#: nonzero absref (docs/tolerance.md §4.1): below it the RMS of a correct kernel scatters too much.
MIN_ELEMENTS = 64

#: ... spread over at least this many independent rows (query rows of attention, normalized
#: slices of the norms and softmax): the error of a row's normalization is shared by all its
#: elements, so the effective sample size is the number of rows (docs/tolerance.md §4.1).
MIN_ROWS = 16

#: ... and only when the emulated kernel's RMS is at least this fraction of the RMS that rounding
#: the exact result to the output dtype alone would give, u_out/sqrt(3)·rms(|ref|/absref): below
#: it most emulated outputs are exact (one-hot attention rows return a value row, probabilities
#: of 0 and 1), the yardstick is ~0 and no ratio means anything (docs/tolerance.md §4.1).
MIN_EMULATED_FRACTION = 0.5


@dataclass(frozen=True)
class Statistic:
    """The verdict of the statistical check on one example.

    ``passed`` is True when the check is not meaningful (``meaningful`` False, ``reason`` says
    why). ``ratio`` = rms / allowed_rms where allowed_rms = RMS_RATIO_THRESHOLD · emulated rms.
    ``errors``/``emulated_errors``: the relative errors of the implementation and of the emulated
    kernel that the two RMS values summarize (None when the check was not meaningful).
    """

    passed: bool
    ratio: float
    meaningful: bool
    figures: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    errors: np.ndarray | None = field(default=None, repr=False)
    emulated_errors: np.ndarray | None = field(default=None, repr=False)


def relative_errors(actual: Any, reference: Reference, floor: float = 0.0) -> np.ndarray:
    """|actual - ref| / max(absref, floor) over the finite elements with absref > 0 (flat).

    ``floor`` is the smallest normal number of the output dtype in :func:`error_statistic`:
    below it rounding errors are absolute (underflow), not relative, and a probability that
    underflows to 0 would otherwise count as a relative error of 1.
    """
    act = np.asarray(actual, dtype=np.float64)
    ref = np.asarray(reference.value, dtype=np.float64)
    absref = np.broadcast_to(np.asarray(reference.abs_value, dtype=np.float64), ref.shape)
    keep = np.isfinite(ref) & np.isfinite(act) & np.isfinite(absref) & (absref > 0)
    return np.asarray(np.abs(act[keep] - ref[keep]) / np.maximum(absref[keep], floor))


def _magnitude_ratio(reference: Reference, floor: float) -> np.ndarray:
    """|ref| / max(absref, floor) over the elements :func:`relative_errors` uses."""
    ref = np.asarray(reference.value, dtype=np.float64)
    absref = np.broadcast_to(np.asarray(reference.abs_value, dtype=np.float64), ref.shape)
    keep = np.isfinite(ref) & np.isfinite(absref) & (absref > 0)
    return np.asarray(np.abs(ref[keep]) / np.maximum(absref[keep], floor))


def _rows(reference: Reference) -> int:
    """Independent rows: the output elements over the reference's ``row_length`` term, the
    elements computed from one shared row (one query's output row, a softmax row, a normalized
    slice); every element is a row of its own when the reference has no such term."""
    size = int(np.size(reference.value))
    width = int(float(np.asarray(reference.terms.get("row_length", 1.0))))
    return size // max(width, 1)


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def error_statistic(
    component: str,
    args: Mapping[str, Any],
    actual: Any,
    reference: Reference,
    *,
    conventions: Conventions,
    dtype: str,
    precision: Precision,
    threshold: float | None = None,
) -> Statistic:
    """RMS of |error|/absref of ``actual`` against that of a correct emulated kernel.

    ``args`` are the inputs the implementation received (already rounded to ``dtype``) and
    ``reference`` is their reference. passed = rms(actual) <= threshold · rms(emulated), the
    threshold being RMS_RATIO_THRESHOLD (RMS_RATIO_THRESHOLD_FLOAT32 for float32) by default.
    Not meaningful (passed, ``meaningful=False``) for a float64 output (the float64 reference is
    no more accurate than the implementation), with fewer than MIN_ELEMENTS usable elements or
    fewer than MIN_ROWS rows, or an emulated RMS below MIN_EMULATED_FRACTION times that of
    rounding the exact result to the output dtype.
    """
    from transpec.oracle.engine.dtypes import unit_roundoff
    from transpec.oracle.kernels.emulate import emulate

    dtype = canonical_dtype(dtype)
    floor = FORMATS[dtype].smallest_normal
    impl = relative_errors(actual, reference, floor)
    if dtype == "float64":
        return Statistic(
            True,
            0.0,
            False,
            {"elements": float(impl.size)},
            "float64 output: the float64 reference's own rounding error is of the same size",
        )
    if threshold is None:
        threshold = RMS_RATIO_THRESHOLD_FLOAT32 if dtype == "float32" else RMS_RATIO_THRESHOLD
    if impl.size < MIN_ELEMENTS:
        return Statistic(
            True,
            0.0,
            False,
            {"elements": float(impl.size)},
            f"only {impl.size} usable elements (< {MIN_ELEMENTS})",
        )
    rows = _rows(reference)
    if rows < MIN_ROWS:
        return Statistic(
            True,
            0.0,
            False,
            {"elements": float(impl.size), "rows": float(rows)},
            f"only {rows} independent rows (< {MIN_ROWS})",
        )
    emulated = emulate(component, args, conventions=conventions, dtype=dtype, precision=precision)
    emu = relative_errors(emulated, reference, floor)
    rms_impl = rms(impl)
    rms_emu = rms(emu)
    u_out = unit_roundoff(dtype)
    rounding_rms = u_out / math.sqrt(3.0) * rms(_magnitude_ratio(reference, floor))
    figures = {
        "elements": float(impl.size),
        "rms": rms_impl,
        "emulated_rms": rms_emu,
        "rounding_rms": rounding_rms,
        "threshold": float(threshold),
        "u_out": u_out,
    }
    if not rms_emu > 0 or rms_emu < MIN_EMULATED_FRACTION * rounding_rms:
        return Statistic(
            True,
            0.0,
            False,
            figures,
            f"the emulated kernel's RMS {rms_emu:.3g} is below {MIN_EMULATED_FRACTION} x that "
            f"of rounding the exact result ({rounding_rms:.3g}): its outputs are (nearly) exact",
        )
    ratio = rms_impl / (threshold * rms_emu)
    figures["rms_ratio"] = rms_impl / rms_emu
    return Statistic(ratio <= 1.0, ratio, True, figures, "", impl, emu)
