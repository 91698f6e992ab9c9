r"""The SwiGLU feed-forward block (LLaMA's FFN): reference, tolerance, strategy and properties.

.. math::

    \mathrm{SwiGLU}(x) = \big(\operatorname{silu}(x W_1^\top) \odot x W_3^\top\big)\, W_2^\top,
    \qquad \operatorname{silu}(z) = z\,\sigma(z) = \frac{z}{1 + e^{-z}}

on the last axis of ``x: (..., d)``, every leading axis a token; ``params`` holds the weights of
the three bias-free ``nn.Linear`` modules of LLaMA's ``FeedForward`` under their ``state_dict``
names: ``"w1.weight"`` (hidden, d), the gate; ``"w3.weight"`` (hidden, d), the up projection;
``"w2.weight"`` (d, hidden), the down projection. There is no convention to declare: every
library agrees on these semantics.

This one module holds, side by side, everything the oracle needs for the component
``swiglu_feed_forward`` (the protocol of :mod:`transpec.oracle.components`):

* :func:`compute_component` -- the float64 reference (:func:`swiglu_feed_forward`, built on
  :func:`silu`) as a :class:`SwigluReference`;
* :func:`tolerance` -- the per-element bound, derived by componentwise forward error
  propagation through the three matrix products, silu and the gating product
  (docs/tolerance.md §3.8);
* :func:`inputs` -- the Hypothesis strategy: shapes with and without leading axes, d = 1,
  hidden sizes that are not multiples of 8, unit-scale inputs, large pre-activations where
  silu saturates (silu(z) -> z for z >> 0, -> 0 for z << 0) and gates pushed negative;
* :func:`properties` -- ``equivalence``, ``shape_dtype``, ``token_permutation_equivariance``
  and ``up_projection_homogeneity``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype
from transpec.oracle.engine.error_model import Units, gamma, units
from transpec.oracle.engine.strategy import Args
from transpec.oracle.kernels.reference import Reference

if TYPE_CHECKING:
    from transpec.adapters.base import Precision
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.property import Property
    from transpec.oracle.kernels.tolerance import Tolerance

__all__ = [
    "COMPONENT",
    "PARAM_KEYS",
    "REGIMES",
    "SILU_CURVATURE",
    "SwigluReference",
    "compute_component",
    "inputs",
    "properties",
    "silu",
    "silu_slope",
    "swiglu_feed_forward",
    "tolerance",
]


COMPONENT = "swiglu_feed_forward"
#: the state_dict names of the three bias-free linear maps (LLaMA's FeedForward)
PARAM_KEYS: tuple[str, ...] = ("w1.weight", "w2.weight", "w3.weight")
#: max over z of |silu''(z)| = silu''(0) = 1/2 (silu'' = σ(1-σ)(2 + z(1-2σ)); docs §3.8)
SILU_CURVATURE = 0.5
#: input regimes of :func:`inputs`
REGIMES: tuple[str, ...] = ("unit", "saturating", "negative_gate")


# -- the float64 reference ---------------------------------------------------------------------


def silu(z: npt.ArrayLike) -> FloatArray:
    r""":math:`\operatorname{silu}(z) = z\,\sigma(z) = z / (1 + e^{-z})` (``F.silu``), with
    :math:`\sigma` evaluated without overflow: :math:`1/(1 + e^{-z})` for z >= 0 and
    :math:`e^{z}/(1 + e^{z})` for z < 0."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    sigma = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return z * sigma


def silu_slope(z: npt.ArrayLike) -> FloatArray:
    r""":math:`|\operatorname{silu}'(z)| = |\sigma(z)\,(1 + z(1 - \sigma(z)))|`, at most 1.0998."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    sigma = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return np.abs(sigma * (1.0 + z * (1.0 - sigma)))


def _weights(params: Any, d: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(W1, W2, W3) as float64, their shapes checked against d."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{COMPONENT} needs params, a dict of the arrays {', '.join(PARAM_KEYS)}")
    unknown = sorted(set(params) - set(PARAM_KEYS))
    missing = [k for k in PARAM_KEYS if params.get(k) is None]
    if unknown or missing:
        raise ValueError(
            f"{COMPONENT} params must be exactly {', '.join(PARAM_KEYS)} "
            f"(unknown: {unknown}, missing: {missing})"
        )
    w1, w2, w3 = (np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS)
    hidden = w1.shape[0] if w1.ndim == 2 else -1
    expected = {"w1.weight": (hidden, d), "w2.weight": (d, hidden), "w3.weight": (hidden, d)}
    for key, w in zip(PARAM_KEYS, (w1, w2, w3), strict=True):
        if w.shape != expected[key] or hidden < 1:
            raise ValueError(f"{key} has shape {w.shape}, expected {expected[key]} (hidden, d={d})")
    return w1, w2, w3


def swiglu_feed_forward(x: npt.ArrayLike, params: Mapping[str, Any]) -> FloatArray:
    r""":math:`(\operatorname{silu}(x W_1^\top) \odot x W_3^\top)\,W_2^\top` in float64 on
    ``x: (..., d)``; ``params``: ``"w1.weight"`` (hidden, d), ``"w2.weight"`` (d, hidden),
    ``"w3.weight"`` (hidden, d), bias-free (LLaMA's ``FeedForward``)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 1:
        raise ValueError("x must have a feature axis (..., d)")
    w1, w2, w3 = _weights(params, arr.shape[-1])
    gate = silu(np.matmul(arr, w1.T))
    up = np.matmul(arr, w3.T)
    return np.matmul(gate * up, w2.T)


@dataclass(frozen=True)
class SwigluReference(Reference):
    """The reference of one call: ``value`` (float64), ``abs_value`` = (|silu(xW1ᵀ)| ⊙ |xW3ᵀ|)
    |W2|ᵀ (the magnitude the down projection's rounding scales with), and the rounded arguments
    from which :func:`tolerance` propagates the rounding errors."""

    args: Mapping[str, Any] = field(default_factory=dict)


def compute_component(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Any = None,
    dtype: str = "float64",
    semantics: Any = None,
) -> SwigluReference:
    """The float64 reference of ``swiglu_feed_forward`` on ``args`` (``x``, ``params``), under
    the registry's protocol; ``conventions``, ``dtype`` and ``semantics`` do not change it (the
    block has no convention and no path-dependent semantics)."""
    if component != COMPONENT:
        raise ValueError(f"{__name__} computes {COMPONENT!r}, not {component!r}")
    if not isinstance(args, Mapping) or "x" not in args:
        raise TypeError(f"{COMPONENT} needs args with x and params")
    x = np.asarray(args["x"], dtype=np.float64)
    w1, w2, w3 = _weights(args.get("params", {}), x.shape[-1] if x.ndim else -1)
    a, b = np.matmul(x, w1.T), np.matmul(x, w3.T)
    value = np.matmul(silu(a) * b, w2.T)
    absolute = np.matmul(np.abs(silu(a)) * np.abs(b), np.abs(w2).T)
    return SwigluReference(
        value=value,
        abs_value=absolute,
        terms={"d": float(x.shape[-1]), "hidden": float(w1.shape[0])},
        args={"x": x, "params": {"w1.weight": w1, "w2.weight": w2, "w3.weight": w3}},
    )


# -- the tolerance -----------------------------------------------------------------------------


def _propagate(
    x: FloatArray, w1: FloatArray, w2: FloatArray, w3: FloatArray, un: Units
) -> tuple[FloatArray, dict[str, FloatArray]]:
    """(y, named first-order bounds) of the forward pass (see :func:`tolerance`)."""
    d, hidden = x.shape[-1], w1.shape[0]
    ax = np.abs(x)
    a, b = np.matmul(x, w1.T), np.matmul(x, w3.T)
    # the two input projections: a dot product of d terms, stored
    da = gamma(d, un.acc) * np.matmul(ax, np.abs(w1).T) + un.store * np.abs(a)
    db = gamma(d, un.acc) * np.matmul(ax, np.abs(w3).T) + un.store * np.abs(b)
    floor_in = d * un.eta_acc + un.eta_store
    da, db = da + floor_in, db + floor_in
    # silu: Taylor with |silu''| <= 1/2, plus its own evaluation (exp, 1 +, /, ·) and storage
    g = silu(a)
    dg = (
        silu_slope(a) * da
        + 0.5 * SILU_CURVATURE * da * da
        + (un.fn + 3.0 * un.acc) * np.abs(a)
        + un.store * np.abs(g)
        + un.eta_acc
        + un.eta_store
    )
    # the gating product: |g||δb| + |b||δg| + |δg||δb|, one rounding (formed, then stored)
    h = g * b
    dh = (
        np.abs(g) * db
        + np.abs(b) * dg
        + dg * db
        + (un.acc + un.store) * np.abs(h)
        + un.eta_acc
        + un.eta_store
    )
    # the down projection: the propagated δh, the dot product of `hidden` terms, storage
    aw2 = np.abs(w2)
    y = np.matmul(h, w2.T)
    propagated = np.matmul(dh, aw2.T)
    own = (
        gamma(hidden, un.acc) * np.matmul(np.abs(h), aw2.T)
        + un.store * np.abs(y)
        + hidden * un.eta_acc
        + un.eta_store
    )
    return y, {"propagated": propagated, "down_projection": own}


def tolerance(component: str, reference: Reference, dtype: str, precision: Precision) -> Tolerance:
    r"""The per-element bound for ``swiglu_feed_forward`` computed in ``dtype`` under
    ``precision`` (docs/tolerance.md §3.8). With a = xW1ᵀ, b = xW3ᵀ, g = silu(a), h = g ⊙ b,
    y = hW2ᵀ, n = d and m = hidden:

    * δa = γ_n(u_acc)|x||W1|ᵀ + u_store|a| + n·η_acc + η_store, δb likewise with W3;
    * δg = |silu'(a)|δa + ½·½·δa² + (u_fn + 3u_acc)|a| + u_store|g| + η_acc + η_store;
    * δh = |g|δb + |b|δg + δgδb + (u_acc + u_store)|h| + η_acc + η_store;
    * δy = δh|W2|ᵀ + γ_m(u_acc)|h||W2|ᵀ + u_store|y| + m·η_acc + η_store;

    bound = c·(δy + u_out|y| + η_out), c = :data:`transpec.oracle.kernels.tolerance.SAFETY`; ±inf is
    allowed (required) where the reference is within (beyond) the bound of the overflow
    threshold of ``dtype``.
    """
    from transpec.oracle.engine.error_model import SAFETY
    from transpec.oracle.kernels.tolerance import Tolerance, overflow_threshold

    if component != COMPONENT or not isinstance(reference, SwigluReference):
        raise TypeError(f"{component}: reference must be the SwigluReference of {COMPONENT}")
    dtype = canonical_dtype(dtype)
    un = units(dtype, precision)
    params = reference.args["params"]
    x = np.asarray(reference.args["x"], dtype=np.float64)
    w1, w2, w3 = (np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS)
    with np.errstate(over="ignore", invalid="ignore"):
        y, parts = _propagate(x, w1, w2, w3, un)
        output = un.out * np.abs(y) + un.eta_out
        first_order = parts["propagated"] + parts["down_projection"] + output
        bound = SAFETY * first_order
    bound = np.where(np.isnan(bound), np.inf, bound)
    thr = overflow_threshold(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        mag = np.abs(reference.value)
        may = (mag + bound >= thr) | np.isinf(reference.value)
        must = (mag - bound >= thr) | np.isinf(reference.value)
    rel = float(np.max(first_order / np.maximum(np.abs(y), 1.0))) if y.size else 0.0
    derivation = (
        f"{COMPONENT}: c·(δh|W2|ᵀ + γ_m(u_acc)|h||W2|ᵀ + u_store|y| + u_out|y| + floors), "
        "h = silu(a)⊙b, a = xW1ᵀ, b = xW3ᵀ: δa = γ_n(u_acc)|x||W1|ᵀ + u_store|a|, δb likewise, "
        "δg = |silu'(a)|δa + ¼δa² + (u_fn+3u_acc)|a| + u_store|g|, δh = |g|δb + |b|δg + δgδb + "
        f"(u_acc+u_store)|h|; c={SAFETY:g}, u_acc={un.acc:.3g}, u_store={un.store:.3g}, "
        f"u_out={un.out:.3g}, u_fn={un.fn:.3g}, n={x.shape[-1]}, m={w1.shape[0]}, max "
        f"first-order bound / max(|y|,1) = {rel:.3g} (docs/tolerance.md §3.8)"
    )
    return Tolerance(
        bound=np.array(bound),
        derivation=derivation,
        parts={**parts, "output": np.broadcast_to(output, y.shape)},
        may_overflow=may if may.any() else None,
        must_overflow=must if must.any() else None,
        dtype=dtype,
    )


# -- the strategy ------------------------------------------------------------------------------


class _Params(dict[str, np.ndarray]):
    """The parameter dict, shown as shapes and ranges in a counterexample."""

    def __repr__(self) -> str:
        return (
            "{"
            + ", ".join(
                f"{k}: {tuple(v.shape)} |w|<={float(np.max(np.abs(v))):.3g}"
                for k, v in self.items()
            )
            + "}"
        )


def _xavier(rng: np.random.Generator, out_f: int, in_f: int) -> np.ndarray:
    a = float(np.sqrt(6.0 / (in_f + out_f)))
    return rng.uniform(-a, a, size=(out_f, in_f))


def inputs(
    component: str,
    dtype: str,
    *,
    regimes: tuple[str, ...] | None = None,
    min_tokens: int = 1,
) -> st.SearchStrategy[Args]:
    """Arguments ``{"x", "params"}`` of ``swiglu_feed_forward``.

    Sizes: d in 1..32 (d = 1 drawn on purpose), hidden in 1..64 (any integer: most are not
    multiples of 8), x of shape (d,), (L, d), (B, L, d) or (2, B, L, d) with L <= 12, B <= 3;
    ``min_tokens`` >= 2 keeps a token axis of at least two tokens. Weights are Xavier-uniform
    (nn.Linear's scale). Regimes: ``"unit"`` x ~ N(0, 1); ``"saturating"`` x rescaled so that
    max |xW1ᵀ| is 12 or 30 (silu's σ saturates to 0 and 1 in every dtype; the magnitudes
    keep |h| and |y| far below float16's 65504); ``"negative_gate"`` x has a common direction v
    along which every row of W1 points the other way, so most gates sit near -4, -8 or -16
    (silu near its minimum and in its tail). Array values come from a generator seeded by a
    drawn integer.
    """
    if component != COMPONENT:
        raise ValueError(f"{__name__} draws {COMPONENT!r}, not {component!r}")
    canonical_dtype(dtype)
    chosen = REGIMES if regimes is None else tuple(regimes)
    if not chosen or any(r not in REGIMES for r in chosen):
        raise ValueError(f"regimes must be a non-empty selection of {', '.join(REGIMES)}")
    if min_tokens < 1:
        raise ValueError("min_tokens must be >= 1")

    @st.composite
    def draw(dr: st.DrawFn) -> Args:
        d = dr(st.one_of(st.just(1), st.integers(1, 32)))
        hidden = dr(st.one_of(st.sampled_from([1, 3, 11, 43]), st.integers(1, 64)))
        tokens = dr(st.integers(min_tokens, 12))
        batch = dr(st.integers(1, 3))
        shapes = [(tokens, d), (batch, tokens, d), (2, batch, tokens, d)]
        if min_tokens == 1:
            shapes.insert(0, (d,))
        shape = dr(st.sampled_from(shapes))
        regime = dr(st.sampled_from(chosen))
        rng = np.random.default_rng(dr(st.integers(0, 2**32 - 1)))
        x = rng.standard_normal(shape)
        w1, w2, w3 = _xavier(rng, hidden, d), _xavier(rng, d, hidden), _xavier(rng, hidden, d)
        if regime == "saturating":
            peak = float(np.max(np.abs(x @ w1.T)))
            target = dr(st.sampled_from([12.0, 30.0]))
            x = x * (target / peak) if peak > 0 else x
        elif regime == "negative_gate":
            v = rng.standard_normal(d)
            v /= np.linalg.norm(v)
            lift = dr(st.sampled_from([2.0, 4.0]))
            shift = dr(st.sampled_from([4.0, 8.0, 16.0]))
            x = x + lift * v  # x·v ≈ lift, so each gate moves by about -shift
            w1 = w1 - (shift / lift) * v
        return {"x": x, "params": _Params({"w1.weight": w1, "w2.weight": w2, "w3.weight": w3})}

    return draw()


# -- the properties ----------------------------------------------------------------------------

_BOTH = "sum of both calls' tolerances (their references' difference subtracted)"


def _token_axis(x: np.ndarray) -> int | None:
    """The innermost token axis of x (..., L, d), or None for a single token (d,)."""
    return x.ndim - 2 if x.ndim >= 2 else None


def _rng(args: Args, salt: str) -> np.random.Generator:
    from transpec.oracle.engine.property import example_rng

    flat = {"x": np.asarray(args["x"])}
    for key, value in sorted(args["params"].items()):
        flat[f"params.{key}"] = np.asarray(value)
    return example_rng(flat, salt)


def _check_permutation(harness: Harness, args: Args) -> float:
    """Permuting the tokens permutes the output: every token is transformed on its own."""
    from transpec.oracle.engine.harness import assert_relation, bound_of

    x = np.asarray(args["x"])
    axis = _token_axis(x)
    if axis is None or x.shape[axis] < 2:
        return 0.0
    order = _rng(args, "swiglu-token-permutation").permutation(x.shape[axis])
    if np.all(order == np.arange(order.size)):
        order = np.roll(order, 1)
    first = harness.call(COMPONENT, args)
    second = harness.call(COMPONENT, {**args, "x": np.take(x, order, axis=axis)})
    return assert_relation(
        second.output,
        np.take(first.output, order, axis=axis),
        second.reference.value,
        np.take(first.reference.value, order, axis=axis),
        bound_of(second) + np.take(bound_of(first), order, axis=axis),
        what="token_permutation_equivariance: permuting the tokens did not permute the output",
        derivation=_BOTH + " (every token is transformed on its own: exact outputs permute)",
    )


#: factors of :func:`_check_homogeneity`: powers of two (and their negatives), so that αW3 is
#: the exact scaling of the rounded W3 in every dtype away from underflow
_ALPHAS: tuple[float, ...] = (-2.0, -1.0, 0.5, 2.0)


def _check_homogeneity(harness: Harness, args: Args) -> float:
    """f(x; W1, W2, αW3) = α·f(x; W1, W2, W3): the block is linear in the up projection."""
    from transpec.oracle.engine.harness import assert_relation, bound_of

    alpha = float(_rng(args, "swiglu-up-homogeneity").choice(_ALPHAS))
    params = {k: np.asarray(v, dtype=np.float64) for k, v in args["params"].items()}
    scaled = {**params, "w3.weight": alpha * params["w3.weight"]}
    first = harness.call(COMPONENT, args)
    second = harness.call(COMPONENT, {**args, "params": scaled})
    return assert_relation(
        second.output,
        alpha * first.output,
        second.reference.value,
        alpha * first.reference.value,
        bound_of(second) + abs(alpha) * bound_of(first),
        what=f"up_projection_homogeneity: scaling W3 by {alpha:g} did not scale the output by "
        f"{alpha:g}",
        derivation="tolerance of the scaled call + |α|·tolerance of the first (their references' "
        "difference subtracted): the output is linear in W3",
    )


def _inputs(**options: Any) -> Callable[[str], st.SearchStrategy[Args]]:
    def strategy(dtype: str) -> st.SearchStrategy[Args]:
        return inputs(COMPONENT, dtype, **options)

    return strategy


def properties() -> tuple[Property, ...]:
    """The properties of ``swiglu_feed_forward``, as
    :class:`transpec.oracle.kernels.properties.Property` objects."""
    from transpec.oracle.engine.property import (
        Property,
        applies_when_declared,
        equivalence_check,
        shape_dtype_check,
    )

    applies = applies_when_declared(COMPONENT)
    return (
        Property(
            COMPONENT,
            "equivalence",
            "every element within the bound propagated through the three projections, silu and "
            "the gating product from the float64 reference",
            _inputs(),
            equivalence_check(COMPONENT),
            applies,
        ),
        Property(
            COMPONENT,
            "shape_dtype",
            "a native array of the reference's shape in the input dtype",
            _inputs(),
            shape_dtype_check(COMPONENT),
            applies,
        ),
        Property(
            COMPONENT,
            "token_permutation_equivariance",
            "permuting the tokens permutes the output (each token is transformed on its own)",
            _inputs(min_tokens=2),
            _check_permutation,
            applies,
        ),
        Property(
            COMPONENT,
            "up_projection_homogeneity",
            "scaling W3 by a power of two α scales the output by α (linear in the up "
            "projection; a swapped gate or a silu after the product is not)",
            _inputs(),
            _check_homogeneity,
            applies,
        ),
    )
