"""The rounding-error model every tolerance rule is built from (docs/tolerance.md §2).

The standard model of floating-point arithmetic (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., §2.2): every operation rounds its exact result,
``fl(a op b) = (a op b)(1 + δ) + η`` with ``|δ| <= u`` (u the unit roundoff of the format the
result is rounded to) and ``|η| <= η_fmt``, the absolute error of a result that underflows
(Higham §2.1). On that model:

* a sum or dot product of n terms, in any order, has a relative error of at most
  ``γ_n = n·u / (1 - n·u)`` (Higham §3.1, Lemma 3.1 and (3.4)-(3.5)): :func:`gamma`;
* ``η_fmt`` is half the smallest subnormal spacing of the format (rounded up to a float64
  number): :func:`eta`;
* an elementary function (exp, tanh, sqrt, ...) computed in the element-wise precision (the
  accumulation precision unless declared otherwise) errs by ``u_fn = ELEMENTARY_ULPS · 2 · u``
  (one ulp is 2u): :attr:`Units.fn`;
* a first-order bound is multiplied by the safety factor ``c = SAFETY``.

:class:`Units` gathers the unit roundoffs and floors of one call (the declared
:class:`~transpec.adapters.base.Precision` and the output dtype); :func:`term` reads one of the
magnitudes a reference supplies (``Reference.terms``). The rules themselves live in
:mod:`transpec.oracle.kernels.tolerance`, :mod:`transpec.oracle.positional.tolerance` and
:mod:`transpec.oracle.layers.tolerance`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transpec.oracle.engine.dtypes import FORMATS, canonical_dtype

if TYPE_CHECKING:
    from transpec.oracle.kernels.reference import Reference

#: c, the safety factor on the first-order bound: absorbs the dropped O(u²) terms and the
#: algorithm-dependent constants (blocked/online softmax rescaling, reciprocal-then-multiply
#: instead of division). docs/tolerance.md §2.6.
SAFETY = 2.0

#: Error of exp, tanh, sqrt/rsqrt in ulps of the accumulation precision. Correctly rounded
#: functions have 0.5 ulp; vectorized libraries (SLEEF u10/u35, CUDA __expf, torch's exp_u20)
#: guarantee 1 to 3.5 ulp. docs/tolerance.md §2.3.
ELEMENTARY_ULPS = 4.0

#: nu at which γ_n = nu/(1-nu) stops being a useful bound; beyond it a relative error of 1 is
#: assumed (the convex-hull and |ŷ| <= sqrt(n) caps then decide). docs/tolerance.md §2.2.
GAMMA_LIMIT = 0.5

#: the unit roundoff of float64, u = 2^-53: the rounding of the oracle's own float64 arithmetic
#: (the sums and differences a metamorphic relation computes)
U64 = 2.0**-53


def gamma(n: float, u: float) -> float:
    """γ_n = n·u / (1 - n·u) (Higham §3.1); 1.0 once n·u >= GAMMA_LIMIT (docs §2.2)."""
    nu = float(n) * u
    if nu >= GAMMA_LIMIT:
        return 1.0
    return nu / (1.0 - nu)


def eta(dtype: str) -> float:
    """η = s/2, s the smallest subnormal of ``dtype``: half the subnormal spacing, the absolute
    underflow error of one rounding (docs §2.5), rounded up to a float64 number.

    For float64 itself half the smallest subnormal, 2^-1075, is not a float64 number: the
    division rounds it to 0, which would leave outputs that underflow with no floor at all (a
    subnormal one step off would have ratio inf). Rounded up it is the smallest subnormal
    2^-1074, so that c·η_out is at least the smallest subnormal of every output dtype.
    """
    smallest = FORMATS[dtype].smallest_subnormal
    half = smallest / 2.0
    return half if half > 0.0 else smallest


@dataclass(frozen=True)
class Units:
    """The unit roundoffs and underflow floors of one call.

    ``acc``, ``store``, ``out``: u of the declared accumulation and storage precision and of the
    output ``dtype``; ``elem``: u of the declared element-wise precision (``acc`` when
    undeclared); ``to_elem``: the rounding of a reduction's result (a sum, a mean, a norm's σ)
    into the element-wise precision before element-wise math uses it, ``elem`` when that
    precision is coarser than ``acc`` and 0 otherwise (docs/tolerance.md §2.7); ``fn`` =
    ELEMENTARY_ULPS · 2 · u_elem, the error of an elementary function evaluated in the
    element-wise precision; ``eta_acc``, ``eta_store``, ``eta_out``, ``eta_elem``: :func:`eta`
    of the same formats. ``dtype`` (canonical name) and ``precision`` are the declaration they
    were derived from.
    """

    dtype: str
    precision: Any
    acc: float
    store: float
    out: float
    fn: float
    eta_acc: float
    eta_store: float
    eta_out: float
    elem: float = 0.0
    to_elem: float = 0.0
    eta_elem: float = 0.0


def flush_floor(dtype: str) -> float:
    """The underflow floor of a format whose subnormals are flushed to zero: its smallest normal
    number, the largest error of one flush (a result just below it returned as 0; docs §2.5)."""
    return FORMATS[dtype].smallest_normal


@dataclass(frozen=True)
class Flushing:
    """A precision declaration together with the formats the implementation flushes subnormals
    in (the ``flush_subnormals`` convention): :func:`units` then takes :func:`flush_floor`
    instead of :func:`eta` as the underflow floor of those formats. Every other attribute is the
    declaration's own."""

    precision: Any
    flush_subnormals: tuple[str, ...]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.precision, name)


def underflow_floor(dtype: str, flushed: tuple[str, ...] = ()) -> float:
    """:func:`flush_floor` for a format in ``flushed``, else :func:`eta`."""
    return flush_floor(dtype) if dtype in flushed else eta(dtype)


def units(dtype: str, precision: Any, *, elementwise: bool = False) -> Units:
    """The :class:`Units` of output ``dtype`` (a canonical name) under ``precision`` (anything
    with ``.accumulate`` and ``.store`` dtype names, and optionally ``.elementwise``;
    ``TypeError`` otherwise).

    ``elementwise``: whether the caller's rule tells element-wise rounding (``Units.elem``) from
    reductions (``Units.acc``). A rule that does not is given ``acc`` = the coarser of the
    accumulation and element-wise precisions, so that a declared element-wise precision can
    only widen its bound (docs/tolerance.md §2.7). A :class:`Flushing` precision raises
    the underflow floors of its flushed formats."""
    try:
        acc = canonical_dtype(precision.accumulate)
        store = canonical_dtype(precision.store)
        declared_elem = getattr(precision, "elementwise", None)
        elem = acc if declared_elem is None else canonical_dtype(declared_elem)
    except AttributeError:
        raise TypeError(
            f"precision must have .accumulate and .store dtype names, got {precision!r}"
        ) from None
    if not elementwise and FORMATS[elem].unit_roundoff > FORMATS[acc].unit_roundoff:
        acc = elem
    if not elementwise:
        elem = acc
    u_acc = FORMATS[acc].unit_roundoff
    u_elem = FORMATS[elem].unit_roundoff
    flushed = tuple(getattr(precision, "flush_subnormals", ()) or ())
    return Units(
        dtype=dtype,
        precision=precision,
        acc=u_acc,
        store=FORMATS[store].unit_roundoff,
        out=FORMATS[dtype].unit_roundoff,
        fn=ELEMENTARY_ULPS * 2.0 * u_elem,
        eta_acc=underflow_floor(acc, flushed),
        eta_store=underflow_floor(store, flushed),
        eta_out=underflow_floor(dtype, flushed),
        elem=u_elem,
        to_elem=u_elem if u_elem > u_acc else 0.0,
        eta_elem=underflow_floor(elem, flushed),
    )


def term(ref: Reference, name: str) -> Any:
    """``ref.terms[name]``, or a ``ValueError`` saying the reference lacks it (a reference of
    another component)."""
    try:
        return ref.terms[name]
    except KeyError:
        raise ValueError(
            f"reference lacks the term {name!r}; was it computed for another component?"
        ) from None
