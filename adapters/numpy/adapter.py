r"""A plainly written NumPy implementation of the building blocks: a second opinion.

This code shares nothing with the oracle's reference (:mod:`transpec.oracle`): it is written
from the formulas, the way a user would write a NumPy kernel, and is judged by the oracle like
any other implementation. A disagreement between the two is a bug in one of them.

Every component computes in the input dtype, except float16 and bfloat16 (``ml_dtypes``), which
are computed in float32 and rounded to the input dtype once, at the end (NumPy has no half
arithmetic worth the name).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from transpec.adapters.base import Adapter, Precision
from transpec.adapters.numpy.gradients import NumpyGradientsMixin
from transpec.adapters.numpy.layer_gradients import NumpyLayerGradientsMixin
from transpec.adapters.numpy.layers import NumpyLayers
from transpec.adapters.numpy.positional import NumpyPositionalMixin
from transpec.adapters.numpy.work import work_dtype
from transpec.oracle.engine.dtypes import canonical_dtype, unit_roundoff
from transpec.spec.conventions import Conventions

Array = npt.NDArray[np.floating]


def _trailing_axes(x: np.ndarray, normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape) :]) != tuple(map(int, shape)):
        raise ValueError(f"normalized_shape {shape} does not match the trailing dims of {x.shape}")
    return tuple(range(x.ndim - len(shape), x.ndim))


class NumpyAdapter(
    NumpyGradientsMixin, NumpyLayerGradientsMixin, NumpyLayers, NumpyPositionalMixin, Adapter
):
    r"""NumPy softmax, scaled dot-product attention, LayerNorm and RMSNorm (and the embedding
    and positional components of :class:`~transpec.adapters.torch.positional.NumpyPositionalMixin`).

    Canonical conventions throughout: boolean masks keep True, additive masks are added to the
    scaled scores, ``is_causal`` is top-left (query i sees keys j <= i) and is combined with a
    mask when both are given, a query row with no key left outputs zeros, grouped-query heads
    map h -> h // (Hq / Hkv), LayerNorm uses the biased variance with eps inside the square
    root, RMSNorm ``eps=None`` is ``finfo(input dtype).eps``.

    Backward passes: the ``*_vjp`` methods of
    :class:`~transpec.adapters.numpy.gradients.NumpyGradientsMixin` (the kernels) and
    :class:`~transpec.adapters.numpy.layer_gradients.NumpyLayerGradientsMixin` (the layers).

    Precision: float64 and float32 compute in their own dtype; float16 and bfloat16 compute
    everything in float32 and round the output once, so (float32, float32) is declared for them.
    """

    name = "numpy"
    framework = "numpy"
    conventions = Conventions()
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu",)

    def precision(self, component: str, dtype: str) -> Precision:
        dtype = canonical_dtype(dtype)
        work = "float32" if dtype in ("float16", "bfloat16") else dtype
        return Precision(accumulate=work, store=work)

    def describe(self) -> str:
        return f"{self.name} (NumPy {np.__version__}; devices: cpu)"

    # -- components ---------------------------------------------------------------------------

    def softmax(self, x: Array, dim: int = -1) -> Array:
        r"""softmax(x)_i = exp(x_i - m) / \sum_j exp(x_j - m), m = max_j x_j, along ``dim``.

        A row that is entirely -inf is 0/0 = NaN, as in ``torch.softmax``.
        """
        w = x.astype(work_dtype(x.dtype))
        m = np.max(w, axis=dim, keepdims=True)
        m = np.where(np.isneginf(m), 0, m).astype(w.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(w - m)
            out = e / np.sum(e, axis=dim, keepdims=True)
        return out.astype(x.dtype)

    def scaled_dot_product_attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> Array:
        r"""O = P V, P = softmax(S), S = scale · Q Kᵀ + M, row-wise over the keys.

        With a ``softcap`` c the scaled scores are c · tanh(scale · Q Kᵀ / c) before M is added.

        Shapes: q (..., Hq, Lq, E), k (..., Hkv, Lk, E), v (..., Hkv, Lk, Ev) -> (..., Hq, Lq, Ev).
        scale defaults to 1/sqrt(E). M is 0 where a key is visible and -inf where it is not:
        a boolean ``attn_mask`` is a keep-mask (True = attend); a float one is added to S;
        ``is_causal`` hides keys j > i. With ``enable_gqa`` query head h reads kv head
        h // (Hq / Hkv). A row where every key is hidden outputs zeros.
        """
        work = work_dtype(q.dtype)
        qw, kw, vw = q.astype(work), k.astype(work), v.astype(work)
        hq, hkv = qw.shape[-3] if qw.ndim >= 3 else 1, kw.shape[-3] if kw.ndim >= 3 else 1
        if hq != hkv:
            if not enable_gqa or hq % hkv != 0:
                raise ValueError(
                    f"{hq} query heads and {hkv} kv heads need enable_gqa and Hq % Hkv == 0"
                )
            group = hq // hkv
            kw = np.repeat(kw, group, axis=-3)  # (..., Hq, Lk, E): kv head h // group
            vw = np.repeat(vw, group, axis=-3)
        e_qk = qw.shape[-1]
        s_val = 1.0 / np.sqrt(e_qk) if scale is None else float(scale)
        scores = np.matmul(qw, np.swapaxes(kw, -1, -2)) * work.type(s_val)  # (..., Lq, Lk)
        if softcap is not None:
            cap = work.type(float(softcap))
            scores = cap * np.tanh(scores / cap)
        lq, lk = scores.shape[-2], scores.shape[-1]
        visible = np.ones(scores.shape, dtype=bool)
        if is_causal:
            visible &= np.tril(np.ones((lq, lk), dtype=bool))
        if attn_mask is not None:
            if attn_mask.dtype == np.bool_:
                visible &= attn_mask
            else:
                scores = scores + attn_mask.astype(work)
        scores = np.where(visible, scores, work.type(-np.inf))
        if lk == 0:  # no key at all: every row is fully masked
            return np.zeros(scores.shape[:-1] + vw.shape[-1:], dtype=q.dtype)
        m = np.max(scores, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0, m).astype(work)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(scores - m)  # (..., Lq, Lk)
            total = np.sum(p, axis=-1, keepdims=True)
            # a row with no visible key has total 0: its weights stay 0, its output 0
            p = p / np.where(total == 0, 1, total).astype(work)
        out = np.matmul(p, vw)  # (..., Hq, Lq, Ev)
        return out.astype(q.dtype)

    def layer_norm(
        self,
        x: Array,
        normalized_shape: int | Sequence[int],
        weight: Array | None = None,
        bias: Array | None = None,
        eps: float = 1e-5,
    ) -> Array:
        r"""y = (x - μ) / sqrt(σ² + eps) · w + b over the trailing ``normalized_shape`` dims,
        μ the mean, σ² = mean((x - μ)²) the biased variance."""
        axes = _trailing_axes(x, normalized_shape)
        work = work_dtype(x.dtype)
        xw = x.astype(work)
        mu = np.mean(xw, axis=axes, keepdims=True)
        centred = xw - mu
        var = np.mean(centred * centred, axis=axes, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = centred / np.sqrt(var + work.type(eps))
        if weight is not None:
            y = y * weight.astype(work)
        if bias is not None:
            y = y + bias.astype(work)
        return y.astype(x.dtype)

    def rms_norm(
        self,
        x: Array,
        normalized_shape: int | Sequence[int],
        weight: Array | None = None,
        eps: float | None = None,
    ) -> Array:
        r"""y = x / sqrt(mean(x²) + eps) · w over the trailing ``normalized_shape`` dims;
        ``eps=None`` is ``finfo(x.dtype).eps`` (2u of the input dtype)."""
        axes = _trailing_axes(x, normalized_shape)
        e = 2.0 * unit_roundoff(x.dtype.name) if eps is None else float(eps)
        work = work_dtype(x.dtype)
        xw = x.astype(work)
        ms = np.mean(xw * xw, axis=axes, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = xw / np.sqrt(ms + work.type(e))
        if weight is not None:
            y = y * weight.astype(work)
        return y.astype(x.dtype)
