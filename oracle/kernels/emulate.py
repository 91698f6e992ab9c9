"""A correct kernel of every block that rounds exactly where a declared Precision says.

Used by the statistical check (:func:`transpec.oracle.engine.compare.error_statistic`) as the
yardstick of "the typical rounding error of a correct implementation at this precision". Arithmetic
runs in the NumPy dtype of the accumulation precision (float64, float32 or float16, whose NumPy
arithmetic rounds every operation); bfloat16, which NumPy lacks, is float32 arithmetic rounded to
bfloat16 (:func:`transpec.oracle.engine.dtypes.round_to`) after every operation of a reduction and
every stage.

Every sum and dot product is *recursive* (left to right, one rounding per addition): the
textbook order, whose typical error (~sqrt(n)·u) is the largest of the usual algorithms, so
that pairwise, blocked, Welford or FMA-based implementations come out at or below the yardstick
(docs/tolerance.md §4.1). Between stages the values are rounded to the storage precision:

==========  ===========================================================================
softmax     e = exp(x - m) [acc]; p = e / Σe [acc] -> output dtype
attention   S = scale·QKᵀ [acc] -> store; softcap, mask [acc] -> store; P = softmax(S)
            [acc] -> store; O = P V [acc] -> output dtype
layer_norm  μ, var [acc]; ŷ = (x - μ)/σ [acc] -> store; y = ŷ w + b [acc] -> output
rms_norm    ms [acc]; ŷ = x / r [acc] -> store; y = ŷ w' [acc] -> output
==========  ===========================================================================

With ``Precision.elementwise`` declared (docs/tolerance.md §2.7) the element-wise operations
(softmax's x - m, exp and division, the scaling of scores, LayerNorm's x - μ, the divisions by
σ or r and the affine) run in that precision, and the sums, μ and σ computed in ``acc`` are
rounded to it before use. ``layer_norm_variance_algorithm="one_pass"`` emulates
max(E[x²] - μ², 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from transpec.oracle import components
from transpec.oracle.engine.dtypes import canonical_dtype, round_to
from transpec.oracle.kernels import reference as refmod

if TYPE_CHECKING:
    from transpec.adapters.base import Precision
    from transpec.spec.conventions import Conventions

_NUMPY = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


class _Arith:
    """Arithmetic in one precision: ``a(x)`` casts into it, ``r(x)`` rounds a stage result."""

    def __init__(self, dtype: str) -> None:
        self.name = dtype
        self.np_dtype = _NUMPY.get(dtype, np.float32)

    def a(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        if self.name == "bfloat16":
            arr = round_to(arr, "bfloat16")
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(self.np_dtype)

    def r(self, x: Any) -> np.ndarray:
        """Round a stage result computed in ``np_dtype`` to this precision."""
        if self.name == "bfloat16":
            return round_to(np.asarray(x, dtype=np.float64), "bfloat16").astype(np.float32)
        return np.asarray(x, dtype=self.np_dtype)


def _store(x: Any, store: str, acc: _Arith) -> np.ndarray:
    """Round to the storage precision, then continue in the accumulation precision."""
    return acc.a(round_to(np.asarray(x, dtype=np.float64), store))


def recursive_sum(x: np.ndarray, acc: _Arith, axes: tuple[int, ...] = (-1,)) -> np.ndarray:
    """Σ over ``axes`` left to right, rounding each partial sum (keepdims)."""
    x = np.asarray(x)
    nd = x.ndim
    axes = tuple(sorted(a % nd for a in axes))
    moved = np.moveaxis(x, axes, tuple(range(nd - len(axes), nd)))
    flat = moved.reshape((*moved.shape[: nd - len(axes)], -1))
    total = np.zeros(flat.shape[:-1], dtype=acc.np_dtype)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        for j in range(flat.shape[-1]):
            total = acc.r(total + flat[..., j])
    return np.expand_dims(total, axes)


def recursive_matmul(a: np.ndarray, b: np.ndarray, acc: _Arith) -> np.ndarray:
    """a @ b with each dot product accumulated left to right (products and sums rounded)."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    total = np.zeros(shape, dtype=acc.np_dtype)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        for j in range(a.shape[-1]):
            total = acc.r(total + acc.r(a[..., :, j : j + 1] * b[..., j : j + 1, :]))
    return total


def _softmax_last(x: np.ndarray, acc: _Arith, elem: _Arith | None = None) -> np.ndarray:
    """Softmax over the last axis: the shift, exp and division in ``elem`` (``acc`` when None),
    the sum in ``acc`` and rounded to ``elem`` before the division; returned in ``acc``."""
    if elem is None or elem.name == acc.name:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
            m = np.max(x, axis=-1, keepdims=True)
            m = np.where(np.isneginf(m), 0, m).astype(x.dtype)
            e = acc.r(np.exp(acc.r(x - m)))
            s = recursive_sum(e, acc)
            return acc.r(e / s)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        xe = elem.a(x)
        m = np.max(xe, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0, m).astype(xe.dtype)
        e = elem.r(np.exp(elem.r(xe - m)))
        s = recursive_sum(acc.a(e), acc)
        return acc.a(elem.r(e / elem.a(s)))


def emulate(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions,
    dtype: str,
    precision: Precision,
) -> np.ndarray:
    """The output of a correct kernel of ``component`` rounding as ``precision`` declares.

    ``args`` are the inputs as the implementation received them (float64 arrays holding values
    of ``dtype``). Returns float64 holding values of ``dtype``.
    """
    refmod.check_args(component, args)
    dtype = canonical_dtype(dtype)
    acc = _Arith(canonical_dtype(precision.accumulate))
    store = canonical_dtype(precision.store)
    declared_elem = getattr(precision, "elementwise", None)
    kernel: Callable[..., np.ndarray] = components.get(component).hook("emulate")
    if declared_elem is None or canonical_dtype(declared_elem) == acc.name:
        return kernel(args, conventions, dtype, acc, store)
    return kernel(args, conventions, dtype, acc, store, elem=_Arith(canonical_dtype(declared_elem)))


# -- the kernel records' "emulate" hooks: (args, conventions, output dtype, accumulation
# arithmetic, storage dtype) -> the output in the output dtype, as float64 ------------------------


def softmax(
    args: Mapping[str, Any],
    conventions: Conventions,
    dtype: str,
    acc: _Arith,
    store: str,
    elem: _Arith | None = None,
) -> np.ndarray:
    """Softmax of ``args["x"]`` along ``dim``, in ``acc`` (the shift, exp and division in
    ``elem`` when given), rounded to ``dtype``."""
    dim = int(args.get("dim", -1))
    x = np.moveaxis(np.asarray(args["x"], dtype=np.float64), dim, -1)
    p = _softmax_last(acc.a(x), acc, elem)
    return np.moveaxis(round_to(p, dtype), -1, dim)


def attention(
    args: Mapping[str, Any],
    conventions: Conventions,
    dtype: str,
    acc: _Arith,
    store: str,
    elem: _Arith | None = None,
) -> np.ndarray:
    """Attention of ``args`` under ``conventions``: every product and sum in ``acc`` (the
    scaling and the softmax's element-wise math in ``elem`` when given), the scores and the
    probabilities stored in ``store``, the output rounded to ``dtype``."""
    setup = refmod.attention_setup(**dict(args), conventions=conventions)
    q, k, v = acc.a(setup.q), acc.a(setup.k), acc.a(setup.v)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        s = recursive_matmul(q, np.swapaxes(k, -1, -2), acc)
        if elem is None:
            s = _store(acc.r(s * acc.a(setup.scale)), store, acc)
        else:
            s = _store(elem.r(elem.a(s) * elem.a(setup.scale)), store, acc)
        if setup.softcap is not None:
            cap = acc.a(setup.softcap)
            s = _store(acc.r(cap * acc.r(np.tanh(acc.r(s / cap)))), store, acc)
        if setup.additive is not None:
            s = _store(acc.r(s + acc.a(setup.additive)), store, acc)
        fill = -math.inf if setup.fill is None else setup.fill
        t = np.where(setup.visible, s, acc.a(fill))
        dead = np.broadcast_to(setup.dead, (*t.shape[:-1], 1))
        t = np.where(dead, acc.a(0.0), t)
        p = _store(_softmax_last(t, acc, elem), store, acc)
        p = np.where(dead, acc.a(0.0), p)
        o = np.asarray(recursive_matmul(p, v, acc), dtype=np.float64)
        if setup.fully_masked_row == "nan":
            o = np.where(dead, math.nan, o)
    return round_to(o, dtype)


def _norm_setup(
    args: Mapping[str, Any],
) -> tuple[np.ndarray, int, tuple[int, ...], np.ndarray | None]:
    x = np.asarray(args["x"], dtype=np.float64)
    ns = args["normalized_shape"]
    shape = (int(ns),) if isinstance(ns, (int, np.integer)) else tuple(int(s) for s in ns)
    w = args.get("weight")
    return x, len(shape), shape, None if w is None else np.asarray(w, dtype=np.float64)


def _root_plus_eps(v: np.ndarray, eps: float, inside: bool, acc: _Arith) -> np.ndarray:
    """The normalizing denominator in the accumulation arithmetic: √(v + eps) when eps is
    inside the square root, else √v + eps, each operation rounded."""
    if inside:
        return acc.r(np.sqrt(acc.r(v + acc.a(eps))))
    return acc.r(acc.r(np.sqrt(v)) + acc.a(eps))


def layer_norm(
    args: Mapping[str, Any],
    conventions: Conventions,
    dtype: str,
    acc: _Arith,
    store: str,
    elem: _Arith | None = None,
) -> np.ndarray:
    """LayerNorm of ``args`` under ``conventions``: μ, the variance and (x - μ)/σ in ``acc``
    (x - μ, the division and the affine in ``elem`` when given, μ and σ rounded to it), the
    normalized values stored in ``store``, the affine output rounded to ``dtype``."""
    el = acc if elem is None else elem
    x64, n_axes, shape, w = _norm_setup(args)
    b = args.get("bias")
    eps = float(args.get("eps", 1e-5))
    axes = tuple(range(-n_axes, 0))
    n = math.prod(shape)
    div = n - 1 if conventions.layer_norm_variance == "unbiased" else n
    x = acc.a(x64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        mu = acc.r(recursive_sum(x, acc, axes) / acc.a(n))
        d = el.r(el.a(x) - el.a(mu))
        da = acc.a(d)
        if conventions.layer_norm_variance_algorithm == "one_pass":  # E[x²] - μ², clamped at 0
            ms = acc.r(recursive_sum(acc.r(x * x), acc, axes) / acc.a(n))
            var = acc.r(acc.r(ms - acc.r(mu * mu)) * acc.a(n / div))
            var = np.maximum(var, acc.a(0.0))
        else:
            var = recursive_sum(acc.r(da * da), acc, axes)
            var = acc.r(var / acc.a(div))
        sigma = _root_plus_eps(var, eps, conventions.layer_norm_eps == "inside_sqrt", acc)
        y = el.a(_store(el.r(el.a(d) / el.a(sigma)), store, acc))
        if w is not None:
            y = el.r(y * el.a(w))
        if b is not None:
            y = el.r(y + el.a(np.asarray(b, dtype=np.float64)))
    return round_to(np.asarray(y, dtype=np.float64), dtype)


def rms_norm(
    args: Mapping[str, Any],
    conventions: Conventions,
    dtype: str,
    acc: _Arith,
    store: str,
    elem: _Arith | None = None,
) -> np.ndarray:
    """RMSNorm of ``args`` under ``conventions``: the mean square and x / r in ``acc`` (the
    division and the weight in ``elem`` when given, r rounded to it), the normalized values
    stored in ``store``, the weighted output rounded to ``dtype``."""
    el = acc if elem is None else elem
    x64, n_axes, shape, w = _norm_setup(args)
    eps = refmod.rms_norm_eps(args.get("eps"), dtype, conventions)
    axes = tuple(range(-n_axes, 0))
    n = math.prod(shape)
    x = acc.a(x64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        ms = recursive_sum(acc.r(x * x), acc, axes)
        ms = acc.r(ms / acc.a(n))
        r = _root_plus_eps(ms, eps, conventions.rms_norm_eps == "inside_sqrt", acc)
        y = el.a(_store(el.r(el.a(x) / el.a(r)), store, acc))
        if w is not None:
            ww = el.a(w)
            if conventions.rms_norm_weight == "one_plus_w":
                ww = el.r(el.a(1.0) + ww)
            y = el.r(y * ww)
    return round_to(np.asarray(y, dtype=np.float64), dtype)
