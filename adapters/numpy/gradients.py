r"""The backward passes of the NumPy adapter, written from the formulas (no autograd).

Like the forward methods, this code shares nothing with the oracle: each ``*_vjp`` method
recomputes its forward quantities and applies the textbook gradient; float16 is computed in
float32 and each gradient rounded to float16 once. Every method takes the cotangent
``grad_output`` first, then the forward method's arguments, and returns a dict of gradients
keyed by argument name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from transpec.adapters.numpy.work import work_dtype
from transpec.oracle.engine.dtypes import unit_roundoff

Array = npt.NDArray[np.floating]


def _sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to the shape of the input it came from."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and x.shape[axis] != 1:
            x = x.sum(axis=axis, keepdims=True)
    return x


class NumpyGradientsMixin:
    """``softmax_vjp``, ``scaled_dot_product_attention_vjp``, ``layer_norm_vjp``,
    ``rms_norm_vjp``: the canonical conventions of :class:`NumpyAdapter`."""

    def softmax_vjp(self, grad_output: Array, x: Array, dim: int = -1) -> dict[str, Array]:
        r"""x̄ = p ∘ (g − Σ_j g_j p_j) along ``dim``."""
        w = x.astype(work_dtype(x.dtype))
        g = grad_output.astype(w.dtype)
        m = np.max(w, axis=dim, keepdims=True)
        m = np.where(np.isneginf(m), 0, m).astype(w.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(w - m)
            p = e / np.sum(e, axis=dim, keepdims=True)
            dx = p * (g - np.sum(g * p, axis=dim, keepdims=True))
        return {"x": dx.astype(x.dtype)}

    def scaled_dot_product_attention_vjp(
        self,
        grad_output: Array,
        q: Array,
        k: Array,
        v: Array,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> dict[str, Array]:
        r"""dV = Pᵀ dO, dP = dO Vᵀ, dT = P ∘ (dP − rowsum(dO ∘ O)), dS = dT ∘ (1 − tanh²(S/c))
        with a softcap c (scores c·tanh(S/c) before the mask), dQ = α dS K, dK = α dSᵀ Q;
        grouped heads summed back to their kv head; a float mask gets dT."""
        work = work_dtype(q.dtype)
        qw, kw, vw = q.astype(work), k.astype(work), v.astype(work)
        g = grad_output.astype(work)
        hq, hkv = qw.shape[-3] if qw.ndim >= 3 else 1, kw.shape[-3] if kw.ndim >= 3 else 1
        group = hq // hkv
        if group > 1:
            kw, vw = np.repeat(kw, group, axis=-3), np.repeat(vw, group, axis=-3)
        s_val = work.type(1.0 / np.sqrt(qw.shape[-1]) if scale is None else float(scale))
        scores = np.matmul(qw, np.swapaxes(kw, -1, -2)) * s_val
        capped = None
        if softcap is not None:
            capped = np.tanh(scores / work.type(softcap))
            scores = work.type(softcap) * capped
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
        m = np.max(scores, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0, m).astype(work)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(scores - m)
            total = np.sum(p, axis=-1, keepdims=True)
            p = p / np.where(total == 0, 1, total).astype(work)
        o = np.matmul(p, vw)
        dv = np.matmul(np.swapaxes(p, -1, -2), g)
        dp = np.matmul(g, np.swapaxes(vw, -1, -2))
        dt = p * (dp - np.sum(g * o, axis=-1, keepdims=True))
        ds = dt if capped is None else dt * (1 - capped * capped)
        dq = np.matmul(ds, kw) * s_val
        dk = np.matmul(np.swapaxes(ds, -1, -2), qw) * s_val
        if group > 1:
            lead = dk.shape[:-3]
            dk = dk.reshape((*lead, hkv, group, *dk.shape[-2:])).sum(axis=-3)
            dv = dv.reshape((*lead, hkv, group, *dv.shape[-2:])).sum(axis=-3)
        out = {
            "q": _sum_to(dq, q.shape).astype(q.dtype),
            "k": _sum_to(dk, k.shape).astype(k.dtype),
            "v": _sum_to(dv, v.shape).astype(v.dtype),
        }
        if attn_mask is not None and attn_mask.dtype != np.bool_:
            out["attn_mask"] = _sum_to(dt, attn_mask.shape).astype(attn_mask.dtype)
        return out

    def layer_norm_vjp(
        self,
        grad_output: Array,
        x: Array,
        normalized_shape: int | Sequence[int],
        weight: Array | None = None,
        bias: Array | None = None,
        eps: float = 1e-5,
    ) -> dict[str, Any]:
        r"""x̄ = (ĝ − mean ĝ − ŷ mean(ĝ ŷ)) / σ with ĝ = g ∘ w; w̄ = Σ g ŷ, b̄ = Σ g over the
        leading dims."""
        dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        axes = tuple(range(x.ndim - len(tuple(dims)), x.ndim))
        lead = tuple(range(x.ndim - len(tuple(dims))))
        work = work_dtype(x.dtype)
        xw, g = x.astype(work), grad_output.astype(work)
        mu = np.mean(xw, axis=axes, keepdims=True)
        var = np.mean((xw - mu) ** 2, axis=axes, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rstd = 1 / np.sqrt(var + work.type(eps))
            yhat = (xw - mu) * rstd
            gh = g if weight is None else g * weight.astype(work)
            dx = rstd * (
                gh
                - np.mean(gh, axis=axes, keepdims=True)
                - yhat * np.mean(gh * yhat, axis=axes, keepdims=True)
            )
        out: dict[str, Any] = {"x": dx.astype(x.dtype)}
        if weight is not None:
            out["weight"] = np.sum(g * yhat, axis=lead).astype(weight.dtype)
        if bias is not None:
            out["bias"] = np.sum(g, axis=lead).astype(bias.dtype)
        return out

    def rms_norm_vjp(
        self,
        grad_output: Array,
        x: Array,
        normalized_shape: int | Sequence[int],
        weight: Array | None = None,
        eps: float | None = None,
    ) -> dict[str, Any]:
        r"""x̄ = (ĝ − ŷ mean(ĝ ŷ)) / r with ĝ = g ∘ w, ŷ = x / r; w̄ = Σ g ŷ."""
        dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        axes = tuple(range(x.ndim - len(tuple(dims)), x.ndim))
        lead = tuple(range(x.ndim - len(tuple(dims))))
        # eps=None: finfo(x.dtype).eps = 2u, as the forward (np.finfo does not know bfloat16)
        e = 2.0 * unit_roundoff(x.dtype.name) if eps is None else float(eps)
        work = work_dtype(x.dtype)
        xw, g = x.astype(work), grad_output.astype(work)
        with np.errstate(invalid="ignore", divide="ignore"):
            rinv = 1 / np.sqrt(np.mean(xw * xw, axis=axes, keepdims=True) + work.type(e))
            yhat = xw * rinv
            gh = g if weight is None else g * weight.astype(work)
            dx = rinv * (gh - yhat * np.mean(gh * yhat, axis=axes, keepdims=True))
        out: dict[str, Any] = {"x": dx.astype(x.dtype)}
        if weight is not None:
            out["weight"] = np.sum(g * yhat, axis=lead).astype(weight.dtype)
        return out
