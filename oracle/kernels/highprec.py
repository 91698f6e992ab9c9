"""High-precision reference: the same kernels over object arrays of ``mpmath.mpf``.

The kernels of :mod:`transpec.oracle.kernels._kernels` take a math namespace ``xp``; :data:`xp` here
implements the functions they use (max, sum, exp, log, sqrt, tanh, where, isneginf, matmul,
swapaxes) on NumPy object arrays whose elements are ``mpmath.mpf`` numbers, so that the one
definition of every block runs in float64 (NumPy) and in arbitrary precision (this module).
Conventions are resolved by the very functions of :mod:`transpec.oracle.kernels.reference` that the
float64 reference uses (masks, GQA head map, fully masked rows), so the two references differ in
rounding only.

Inputs are float64 values and convert to mpf exactly; the default scale 1/sqrt(E) is computed in
the working precision (the float64 reference rounds it once more). ``compute`` returns the
result rounded once, to the nearest float64.

>>> import numpy as np
>>> compute("softmax", {"x": np.array([0.0, 1.0])}, conventions=CANONICAL, dtype="float64")
array([0.26894142, 0.73105858])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mpmath
import numpy as np

from transpec.oracle import components
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.kernels import _kernels as kernels
from transpec.oracle.kernels import reference as refmod
from transpec.spec.conventions import CANONICAL, Conventions

#: the fewest significant decimal digits accepted: float64 needs 17 to round-trip, and the
#: references must be exact to well below a float64 ulp after cancellation in the norms
MIN_DIGITS = 30


def _ufunc(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    vec = np.frompyfunc(fn, 1, 1)

    def apply(x: Any) -> Any:
        out = vec(x)
        return out if isinstance(out, np.ndarray) else np.asarray(out, dtype=object)[()]

    return apply


class MPNamespace:
    """The math namespace of the kernels over object arrays of ``mpmath.mpf``.

    Elementwise functions evaluate ``mpmath`` at the current working precision
    (``mpmath.mp.dps``); reductions and ``matmul`` use NumPy's object loops, i.e. mpf arithmetic.
    """

    exp = staticmethod(_ufunc(mpmath.exp))
    log = staticmethod(_ufunc(mpmath.log))
    sqrt = staticmethod(_ufunc(mpmath.sqrt))
    tanh = staticmethod(_ufunc(mpmath.tanh))
    _isneginf = staticmethod(_ufunc(lambda a: bool(a == mpmath.mpf("-inf"))))

    @staticmethod
    def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return np.max(np.asarray(x, dtype=object), axis=axis, keepdims=keepdims)

    @staticmethod
    def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return np.sum(np.asarray(x, dtype=object), axis=axis, keepdims=keepdims)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, np.asarray(a, dtype=object), np.asarray(b, dtype=object))

    @staticmethod
    def isneginf(x: Any) -> Any:
        return np.asarray(MPNamespace._isneginf(np.asarray(x, dtype=object)), dtype=bool)

    @staticmethod
    def matmul(a: Any, b: Any) -> Any:
        return np.matmul(np.asarray(a, dtype=object), np.asarray(b, dtype=object))

    @staticmethod
    def swapaxes(x: Any, a: int, b: int) -> Any:
        return np.swapaxes(x, a, b)


#: the namespace instance the kernels receive
xp = MPNamespace()

_to_mpf = np.frompyfunc(lambda v: mpmath.mpf(float(v)), 1, 1)
_to_float = np.frompyfunc(float, 1, 1)


def to_mp(x: Any) -> np.ndarray:
    """float64 values -> an object array of mpf (exact)."""
    arr = np.asarray(x, dtype=np.float64)
    return np.asarray(_to_mpf(arr), dtype=object).reshape(arr.shape)


def to_float64(x: Any) -> np.ndarray:
    """An object array of mpf -> float64, each element rounded to nearest."""
    arr = np.asarray(x, dtype=object)
    with np.errstate(invalid="ignore"):
        return np.asarray(_to_float(arr), dtype=np.float64).reshape(arr.shape)


def _check_digits(digits: Any) -> int:
    if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)):
        raise TypeError(f"digits must be an int, got {type(digits).__name__}")
    if digits < MIN_DIGITS:
        raise ValueError(f"digits must be >= {MIN_DIGITS}, got {digits}")
    return int(digits)


def compute(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    digits: int = 40,
) -> np.ndarray:
    """The value of ``component`` on ``args`` computed with ``digits`` significant digits.

    Same arguments and conventions as :func:`transpec.oracle.reference.compute`; returns the
    result as float64 (NaN where the convention asks for NaN).
    """
    refmod.check_args(component, args)
    dtype = canonical_dtype(dtype)
    digits = _check_digits(digits)
    kernel: Callable[..., np.ndarray] = components.get(component).hook("highprec")
    with mpmath.workdps(digits):
        return to_float64(kernel(args, conventions, dtype))


# -- the kernel records' "highprec" hooks: (args, conventions, dtype) -> an object array of mpf
# at the working precision, validated by the float64 reference's own checks ---------------------


def softmax(args: Mapping[str, Any], conventions: Conventions, dtype: str) -> np.ndarray:
    """Softmax of ``args["x"]`` along ``dim``; NaN for a slice that is all -inf or holds NaN or
    +inf."""
    refmod.softmax(args["x"], args.get("dim", -1), conventions=conventions)  # validation
    dim = int(args.get("dim", -1))
    x64 = np.moveaxis(np.asarray(args["x"], dtype=np.float64), dim, -1)
    # mpf raises on 0/0 where float64 gives NaN: a slice that is all -inf (or holds NaN/+inf)
    # is NaN by the formula; compute the others only
    undefined = np.all(np.isneginf(x64), axis=-1, keepdims=True) | np.any(
        np.isnan(x64) | np.isposinf(x64), axis=-1, keepdims=True
    )
    x = to_mp(np.where(undefined, 0.0, x64))
    p = np.asarray(kernels.softmax(x, xp=xp), dtype=object)
    p = np.where(undefined, mpmath.mpf("nan"), p)
    return np.moveaxis(p, -1, dim)


def attention(args: Mapping[str, Any], conventions: Conventions, dtype: str) -> np.ndarray:
    """Attention of ``args`` under ``conventions``; the default scale 1/sqrt(E) in the working
    precision."""
    setup = refmod.attention_setup(**dict(args), conventions=conventions)
    scale: Any = setup.scale
    if args.get("scale") is None:
        scale = 1 / mpmath.sqrt(setup.q.shape[-1])
    mp_setup = refmod.AttentionSetup(
        q=to_mp(setup.q),
        k=to_mp(setup.k),
        v=to_mp(setup.v),
        visible=setup.visible,
        additive=None if setup.additive is None else to_mp(setup.additive),
        fill=setup.fill,
        scale=scale,
        softcap=setup.softcap,
        fully_masked_row=setup.fully_masked_row,
        dead=setup.dead,
    )
    o, _p, _dead = refmod.attention_core(mp_setup, xp=xp)
    return np.asarray(o, dtype=object)


def _norm_args(args: Mapping[str, Any]) -> tuple[np.ndarray, int, Any, Any]:
    """x, the number of normalized axes, the weight and the bias (None when absent) of a norm's
    validated ``args``, the arrays as mpf."""
    x = np.asarray(args["x"], dtype=np.float64)
    ns = args["normalized_shape"]
    n_axes = 1 if isinstance(ns, (int, np.integer)) else len(tuple(ns))
    w = args.get("weight")
    b = args.get("bias")
    return (
        to_mp(x),
        n_axes,
        None if w is None else to_mp(w),
        None if b is None else to_mp(b),
    )


def _zero_denominator(args: Mapping[str, Any], n_axes: int, eps: float, centered: bool) -> Any:
    """Rows whose denominator is exactly 0 (eps = 0 and a constant/zero row): NaN in float64,
    ZeroDivisionError in mpf. Returns the row indicator (keepdims) or None."""
    if eps != 0:
        return None
    x = np.asarray(args["x"], dtype=np.float64)
    axes = tuple(range(-n_axes, 0))
    if centered:
        flat = x.reshape((*x.shape[: x.ndim - n_axes], -1))
        zero = np.all(flat == flat[..., :1], axis=-1)
    else:
        zero = np.all(x == 0, axis=axes)
    zero = zero.reshape(zero.shape + (1,) * n_axes)
    return zero if zero.any() else None


def _guarded(out_fn: Any, x: np.ndarray, zero: Any) -> np.ndarray:
    if zero is None:
        return np.asarray(out_fn(x), dtype=object)
    filler = to_mp(np.broadcast_to(np.arange(1.0, x.shape[-1] + 1.0), x.shape))
    out = np.asarray(out_fn(np.where(zero, filler, x)), dtype=object)
    return np.where(zero, mpmath.mpf("nan"), out)


def layer_norm(args: Mapping[str, Any], conventions: Conventions, dtype: str) -> np.ndarray:
    """LayerNorm of ``args`` under ``conventions``; NaN for a row whose denominator is 0."""
    refmod.layer_norm(**dict(args), conventions=conventions)  # validation (same messages)
    x, n_axes, w, b = _norm_args(args)
    eps = float(args.get("eps", 1e-5))
    zero = _zero_denominator(args, n_axes, eps, centered=True)
    return _guarded(
        lambda xx: kernels.layer_norm(
            xx,
            n_axes,
            w,
            b,
            eps,
            unbiased=conventions.layer_norm_variance == "unbiased",
            eps_inside_sqrt=conventions.layer_norm_eps == "inside_sqrt",
            xp=xp,
        ),
        x,
        zero,
    )


def rms_norm(args: Mapping[str, Any], conventions: Conventions, dtype: str) -> np.ndarray:
    """RMSNorm of ``args`` under ``conventions`` in ``dtype`` (whose epsilon is eps=None's
    value); NaN for a row whose denominator is 0."""
    refmod.rms_norm(**dict(args), conventions=conventions, dtype=dtype)  # validation
    x, n_axes, w, _ = _norm_args(args)
    eps = refmod.rms_norm_eps(args.get("eps"), dtype, conventions)
    zero = _zero_denominator(args, n_axes, eps, centered=False)
    return _guarded(
        lambda xx: kernels.rms_norm(
            xx,
            n_axes,
            w,
            eps,
            eps_inside_sqrt=conventions.rms_norm_eps == "inside_sqrt",
            one_plus_weight=conventions.rms_norm_weight == "one_plus_w",
            xp=xp,
        ),
        x,
        zero,
    )
