"""The layer components in plain NumPy, written from the formulas (it does not call the oracle):
multi-head attention (and its weights), the feed-forward block, the encoder and decoder layers
and the SwiGLU feed-forward, with the semantics of the torch modules in eval mode
(:mod:`transpec.adapters.torch.layers`). Masks have ``nn.MultiheadAttention``'s polarity (bool
True = not allowed; float masks added).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.adapters.numpy.work import work_dtype

_BOOL = np.bool_


def _np_erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _np_act(h: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(h, h.dtype.type(0))
    if name == "gelu":
        return h * h.dtype.type(0.5) * (h.dtype.type(1) + _np_erf(h / h.dtype.type(math.sqrt(2))))
    if name == "gelu_tanh":
        c = h.dtype.type(math.sqrt(2 / math.pi))
        return (
            h
            * h.dtype.type(0.5)
            * (h.dtype.type(1) + np.tanh(c * (h + h.dtype.type(0.044715) * h * h * h)))
        )
    raise ValueError(f"unknown activation {name!r}; expected relu, gelu or gelu_tanh")


def _np_sub(params: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``params`` under ``prefix`` (``"self_attn."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def _np_bias(mask: np.ndarray | None, work: np.dtype) -> np.ndarray | None:
    """nn.MultiheadAttention polarity -> additive: bool True -> -inf; floats added as given."""
    if mask is None:
        return None
    if mask.dtype == _BOOL:
        return np.where(mask, work.type(-np.inf), work.type(0))
    return mask.astype(work)


class NumpyLayers:
    """The layer components in plain NumPy, computed in the input dtype (float16 and bfloat16:
    in float32, rounded once at the end). A query row whose every key is masked attends to
    nothing: its attention output is zero (transpec's canonical ``fully_masked_row="zero"``)."""

    @staticmethod
    def _linear(x: np.ndarray, params: Mapping[str, Any], name: str) -> np.ndarray:
        w = params[f"{name}.weight"].astype(x.dtype)
        y = x @ w.T
        b = params.get(f"{name}.bias")
        return y if b is None else y + b.astype(x.dtype)

    @staticmethod
    def _layer_norm(x: np.ndarray, params: Mapping[str, Any], name: str, eps: float) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        c = x - mu
        var = (c * c).mean(axis=-1, keepdims=True)
        y = c / np.sqrt(var + x.dtype.type(eps))
        y = y * params[f"{name}.weight"].astype(x.dtype)
        b = params.get(f"{name}.bias")
        return y if b is None else y + b.astype(x.dtype)

    def _mha(
        self,
        q_in: np.ndarray,
        kv_in: np.ndarray,
        v_in: np.ndarray,
        params: Mapping[str, Any],
        heads: int,
        mask: np.ndarray | None,
        weights: bool = False,
    ) -> np.ndarray:
        """Batch-first (B, L, E) inputs in the work dtype; mask additive (B, 1, L, S) or None.
        ``weights``: return the per-head attention weights P (B, H, L, S) instead."""
        work = q_in.dtype
        b, lq, e = q_in.shape
        ls = kv_in.shape[1]
        dh = e // heads
        if params.get("in_proj_weight") is not None:
            w_in = params["in_proj_weight"].astype(work)
            ws = [w_in[i * e : (i + 1) * e] for i in range(3)]
        else:  # kdim/vdim != embed_dim: separate projections
            ws = [params[f"{n}_proj_weight"].astype(work) for n in "qkv"]
        bias = params.get("in_proj_bias")
        bias = None if bias is None else bias.astype(work)

        def project(x: np.ndarray, i: int) -> np.ndarray:
            y = x @ ws[i].T
            if bias is not None:
                y = y + bias[i * e : (i + 1) * e]
            return y.reshape(x.shape[0], x.shape[1], heads, dh).transpose(0, 2, 1, 3)

        q, k, v = project(q_in, 0), project(kv_in, 1), project(v_in, 2)  # (B, H, L, Dh)
        s = (q @ k.transpose(0, 1, 3, 2)) * work.type(1.0 / math.sqrt(dh))  # (B, H, L, S)
        if mask is not None:
            s = s + mask
        m = s.max(axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), work.type(0), m)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(s - m)
            tot = p.sum(axis=-1, keepdims=True)
            p = p / np.where(tot == 0, work.type(1), tot)  # no visible key: weights stay 0
        if weights:
            return p
        o = (p @ v).transpose(0, 2, 1, 3).reshape(b, lq, e)
        del ls
        out = o @ params["out_proj.weight"].astype(work).T
        ob = params.get("out_proj.bias")
        return out if ob is None else out + ob.astype(work)

    @staticmethod
    def _mask(attn_mask: Any, kpm: Any, work: np.dtype) -> np.ndarray | None:
        a, k = _np_bias(attn_mask, work), _np_bias(kpm, work)
        if a is None and k is None:
            return None
        total = np.zeros((), dtype=work)
        if a is not None:
            total = total + a[None, None]
        if k is not None:
            total = total + k[:, None, None, :]
        return total

    @staticmethod
    def _bf(x: np.ndarray, batch_first: bool) -> np.ndarray:
        return x if batch_first else x.transpose(1, 0, 2)

    def multi_head_attention(
        self,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        params: Mapping[str, Any],
        num_heads: int,
        key_padding_mask: np.ndarray | None = None,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> np.ndarray:
        r"""Y = [O_1 ⋯ O_H] W_oᵀ + b_o, O_h = softmax(Q_h K_hᵀ/√D_h + M) V_h, Q = X_q W_qᵀ + b_q
        (rows [0:E], [E:2E], [2E:3E] of ``in_proj_weight`` for Q, K, V, or ``q/k/v_proj_weight``
        when kdim/vdim differ from E); head h takes
        columns h·D_h:(h+1)·D_h. ``is_causal`` is a hint: ``attn_mask`` is what applies."""
        work = work_dtype(query.dtype)
        q, k, v = (self._bf(a.astype(work), batch_first) for a in (query, key, value))
        mask = self._mask(attn_mask, key_padding_mask, work)
        out = self._mha(q, k, v, params, int(num_heads), mask)
        return self._bf(out, batch_first).astype(query.dtype)

    def multi_head_attention_weights(
        self,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        params: Mapping[str, Any],
        num_heads: int,
        key_padding_mask: np.ndarray | None = None,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        batch_first: bool = True,
        average_attn_weights: bool = True,
    ) -> np.ndarray:
        """P_h = softmax(Q_h K_hᵀ/√D_h + M) per head, (B, H, L, S), or its mean over the heads
        (B, L, S) with ``average_attn_weights``; batch first whatever ``batch_first`` says (as
        torch). A query row with no visible key has zero weights (``fully_masked_row="zero"``;
        torch: NaN)."""
        work = work_dtype(query.dtype)
        q, k, v = (self._bf(a.astype(work), batch_first) for a in (query, key, value))
        mask = self._mask(attn_mask, key_padding_mask, work)
        p = self._mha(q, k, v, params, int(num_heads), mask, weights=True)
        if average_attn_weights:
            p = p.mean(axis=1)
        return np.ascontiguousarray(p).astype(query.dtype)

    def feed_forward(
        self, x: np.ndarray, params: Mapping[str, Any], activation: str = "relu"
    ) -> np.ndarray:
        """FFN(x) = σ(x W_1ᵀ + b_1) W_2ᵀ + b_2."""
        return self._ffn(x.astype(work_dtype(x.dtype)), params, activation).astype(x.dtype)

    def _ffn(self, x: np.ndarray, params: Mapping[str, Any], activation: str) -> np.ndarray:
        """σ(x W_1ᵀ + b_1) W_2ᵀ + b_2 in the dtype of ``x`` (the working precision)."""
        return self._linear(
            _np_act(self._linear(x, params, "linear1"), activation), params, "linear2"
        )

    def swiglu_feed_forward(self, x: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
        """SwiGLU(x) = (silu(x W_1ᵀ) ⊙ x W_3ᵀ) W_2ᵀ, silu(z) = z·σ(z), bias-free (LLaMA's
        FeedForward); σ as 1/(1 + e^-z) for z >= 0 and e^z/(1 + e^z) for z < 0."""
        w = x.astype(work_dtype(x.dtype))
        a = self._linear(w, params, "w1")
        e = np.exp(-np.abs(a))
        one = a.dtype.type(1)
        gate = a * np.where(a >= 0, one / (one + e), e / (one + e))
        return self._linear(gate * self._linear(w, params, "w3"), params, "w2").astype(x.dtype)

    def _sublayer(
        self,
        x: np.ndarray,
        f: Any,
        params: Mapping[str, Any],
        norm: str,
        eps: float,
        norm_first: bool,
    ) -> np.ndarray:
        if norm_first:
            return x + f(self._layer_norm(x, params, norm, eps))
        return self._layer_norm(x + f(x), params, norm, eps)

    def encoder_layer(
        self,
        src: np.ndarray,
        params: Mapping[str, Any],
        nhead: int,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        src_mask: np.ndarray | None = None,
        src_key_padding_mask: np.ndarray | None = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> np.ndarray:
        """post-LN: x = LN1(x + SA(x)); x = LN2(x + FFN(x)). pre-LN: x = x + SA(LN1(x));
        x = x + FFN(LN2(x))."""
        work = work_dtype(src.dtype)
        x = self._bf(src.astype(work), batch_first)
        mask = self._mask(src_mask, src_key_padding_mask, work)
        sa = _np_sub(params, "self_attn.")

        def attend(y: np.ndarray) -> np.ndarray:
            return self._mha(y, y, y, sa, int(nhead), mask)

        def ffn(y: np.ndarray) -> np.ndarray:
            return self._ffn(y, params, activation)

        x = self._sublayer(x, attend, params, "norm1", layer_norm_eps, norm_first)
        x = self._sublayer(x, ffn, params, "norm2", layer_norm_eps, norm_first)
        return np.ascontiguousarray(self._bf(x, batch_first)).astype(src.dtype)

    def decoder_layer(
        self,
        tgt: np.ndarray,
        memory: np.ndarray,
        params: Mapping[str, Any],
        nhead: int,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        tgt_mask: np.ndarray | None = None,
        memory_mask: np.ndarray | None = None,
        tgt_key_padding_mask: np.ndarray | None = None,
        memory_key_padding_mask: np.ndarray | None = None,
        tgt_is_causal: bool = False,
        batch_first: bool = True,
    ) -> np.ndarray:
        """post-LN: x = LN1(x + SA(x)); x = LN2(x + CA(x, m)); x = LN3(x + FFN(x)); pre-LN
        applies each LN to the sublayer's input."""
        work = work_dtype(tgt.dtype)
        x = self._bf(tgt.astype(work), batch_first)
        mem = self._bf(memory.astype(work), batch_first)
        self_mask = self._mask(tgt_mask, tgt_key_padding_mask, work)
        cross_mask = self._mask(memory_mask, memory_key_padding_mask, work)

        sa, ca = _np_sub(params, "self_attn."), _np_sub(params, "multihead_attn.")

        def attend(y: np.ndarray) -> np.ndarray:
            return self._mha(y, y, y, sa, int(nhead), self_mask)

        def cross(y: np.ndarray) -> np.ndarray:
            return self._mha(y, mem, mem, ca, int(nhead), cross_mask)

        def ffn(y: np.ndarray) -> np.ndarray:
            return self._ffn(y, params, activation)

        x = self._sublayer(x, attend, params, "norm1", layer_norm_eps, norm_first)
        x = self._sublayer(x, cross, params, "norm2", layer_norm_eps, norm_first)
        x = self._sublayer(x, ffn, params, "norm3", layer_norm_eps, norm_first)
        return np.ascontiguousarray(self._bf(x, batch_first)).astype(tgt.dtype)
