r"""The backward passes of the NumPy layers, by hand (no autograd, nothing from the oracle).

Each ``*_vjp`` method runs its layer's forward step by step in the working precision
(:func:`~transpec.adapters.numpy.work.work_dtype`: float16 and bfloat16 in float32), each step
returning its value and a function that takes the step's output cotangent ȳ back to its inputs'
-- the textbook gradients:

==============  ==============================================================================
step            backward (ȳ the cotangent of the step's output)
==============  ==============================================================================
linear          y = x Wᵀ + b: x̄ = ȳ W, W̄ = Σ_rows ȳᵀ x, b̄ = Σ_rows ȳ
activation      x̄ = φ'(x) ȳ: relu 1[x > 0]; GELU Φ(x) + x φ(x); tanh-GELU
                ½(1 + t) + ½ x (1 − t²) √(2/π)(1 + 3·0.044715 x²), t = tanh(√(2/π)(x + 0.044715 x³))
silu            z σ(z): z̄ = σ(z)(1 + z(1 − σ(z))) ȳ
attention head  O = P V, P = softmax(α Q Kᵀ + M): V̄ = Pᵀ Ō, P̄ = Ō Vᵀ,
                S̄ = P ∘ (P̄ − rowsum(Ō ∘ O)), Q̄ = α S̄ K, K̄ = α S̄ᵀ Q
LayerNorm       y = ŷ w + b, ŷ = (x − μ)/σ: x̄ = (ĝ − mean ĝ − ŷ mean(ĝ ŷ))/σ, ĝ = ȳ ∘ w,
                w̄ = Σ_rows ȳ ∘ ŷ, b̄ = Σ_rows ȳ
residual        x + f(x): x̄ = ȳ + f's x̄
==============  ==============================================================================

A value read twice (self-attention's input as query, key and value; the decoder's memory as key
and value; a residual's input) sums its cotangents. Parameter gradients are keyed by
``state_dict`` name (``"self_attn.in_proj_weight"``); each gradient is rounded to its argument's
dtype once, at the end. A query row with no visible key has zero weights, so nothing flows
through it (``fully_masked_row="zero"``, as the forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from transpec.adapters.numpy.layers import _np_act, _np_erf
from transpec.adapters.numpy.work import work_dtype

#: a step's backward: the cotangent of its output -> that of its input
Back = Callable[[np.ndarray], np.ndarray]


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as a matrix of its last axis (rows = every leading index)."""
    return a.reshape(-1, a.shape[-1])


class _Tape:
    """The parameters of one call in the working dtype, and their gradients summed by key."""

    def __init__(self, params: Mapping[str, Any], work: np.dtype) -> None:
        self.given = {k: v for k, v in params.items() if v is not None}
        self.w = {k: np.asarray(v).astype(work) for k, v in self.given.items()}
        self.grads: dict[str, np.ndarray] = {}

    def accumulate(self, key: str, grad: np.ndarray, rows: slice | None = None) -> None:
        total = self.grads.setdefault(key, np.zeros_like(self.w[key]))
        if rows is None:
            total += grad
        else:
            total[rows] += grad

    def results(self) -> dict[str, np.ndarray]:
        """Every parameter's gradient in its own dtype (zeros where nothing reached it)."""
        out = {}
        for key, value in self.given.items():
            grad = self.grads.get(key, np.zeros_like(self.w[key]))
            out[key] = grad.astype(np.asarray(value).dtype)
        return out

    # -- steps --------------------------------------------------------------------------------

    def linear(
        self, x: np.ndarray, weight: str, bias: str | None, rows: slice | None = None
    ) -> tuple[np.ndarray, Back]:
        """y = x Wᵀ + b (W, b: rows ``rows`` of the parameters, e.g. in_proj's q block)."""
        w = self.w[weight] if rows is None else self.w[weight][rows]
        b = None if bias is None or bias not in self.w else self.w[bias]
        if b is not None and rows is not None:
            b = b[rows]
        y = x @ w.T
        if b is not None:
            y = y + b

        def back(g: np.ndarray) -> np.ndarray:
            g2 = _rows(g)
            self.accumulate(weight, g2.T @ _rows(x), rows)
            if b is not None:
                assert bias is not None
                self.accumulate(bias, g2.sum(axis=0), rows)
            return g @ w

        return y, back

    @staticmethod
    def activation(h: np.ndarray, name: str) -> tuple[np.ndarray, Back]:
        """relu, exact GELU or tanh-GELU, and φ'(h) for the backward."""
        y = _np_act(h, name)
        one, half = h.dtype.type(1), h.dtype.type(0.5)
        if name == "relu":
            slope = (h > 0).astype(h.dtype)
        elif name == "gelu":
            cdf = half * (one + _np_erf(h / h.dtype.type(math.sqrt(2))))
            pdf = np.exp(-half * h * h) / h.dtype.type(math.sqrt(2 * math.pi))
            slope = cdf + h * pdf
        else:  # gelu_tanh
            c, k = h.dtype.type(math.sqrt(2 / math.pi)), h.dtype.type(0.044715)
            t = np.tanh(c * (h + k * h * h * h))
            slope = half * (one + t) + half * h * (one - t * t) * c * (
                one + h.dtype.type(3) * k * h * h
            )
        return y, lambda g: g * slope

    def layer_norm(self, x: np.ndarray, name: str, eps: float) -> tuple[np.ndarray, Back]:
        """y = (x − μ)/√(var + eps) ∘ w + b over the last axis."""
        mu = x.mean(axis=-1, keepdims=True)
        c = x - mu
        var = (c * c).mean(axis=-1, keepdims=True)
        sigma = np.sqrt(var + x.dtype.type(eps))
        yhat = c / sigma
        w_key, b_key = f"{name}.weight", f"{name}.bias"
        w = self.w.get(w_key)
        y = yhat if w is None else yhat * w
        if b_key in self.w:
            y = y + self.w[b_key]

        def back(g: np.ndarray) -> np.ndarray:
            if w is not None:
                self.accumulate(w_key, _rows(g * yhat).sum(axis=0))
            if b_key in self.w:
                self.accumulate(b_key, _rows(g).sum(axis=0))
            gh = g if w is None else g * w
            return (
                gh
                - gh.mean(axis=-1, keepdims=True)
                - yhat * (gh * yhat).mean(axis=-1, keepdims=True)
            ) / sigma

        return y, back

    def attention(
        self,
        q_in: np.ndarray,
        k_in: np.ndarray,
        v_in: np.ndarray,
        prefix: str,
        heads: int,
        mask: np.ndarray | None,
    ) -> tuple[np.ndarray, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """nn.MultiheadAttention on batch-first (B, L, E) inputs; ``mask`` additive (B, 1, L, S)
        or None. The backward returns (q̄_in, k̄_in, v̄_in)."""
        p_, v, back_heads = self._heads(q_in, k_in, v_in, prefix, heads, mask)
        b, lq, e = q_in.shape
        o = p_ @ v  # (B, H, L, Dh)
        merged = o.transpose(0, 2, 1, 3).reshape(b, lq, e)
        out, back_out = self.linear(merged, f"{prefix}out_proj.weight", f"{prefix}out_proj.bias")

        def back(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            do = _split(back_out(g), heads)
            dv = np.swapaxes(p_, -1, -2) @ do
            dp = do @ np.swapaxes(v, -1, -2)
            return back_heads(dp, dv, np.sum(do * o, axis=-1, keepdims=True))

        return out, back

    def _heads(
        self,
        q_in: np.ndarray,
        k_in: np.ndarray,
        v_in: np.ndarray,
        prefix: str,
        heads: int,
        mask: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """The in-projections, the weights P (B, H, L, S) and values V of every head, and the
        backward from (P̄, V̄, D): S̄ = P ∘ (P̄ − D), Q̄ = α S̄ K, K̄ = α S̄ᵀ Q, then through
        the projections (D = rowsum(P ∘ P̄), computed by the caller in its own form)."""
        work = q_in.dtype
        e = q_in.shape[-1]
        dh = e // heads
        if f"{prefix}in_proj_weight" in self.w:
            names = [f"{prefix}in_proj_weight"] * 3
            blocks: list[slice | None] = [slice(i * e, (i + 1) * e) for i in range(3)]
        else:  # kdim/vdim != embed_dim: separate projections
            names = [f"{prefix}{n}_proj_weight" for n in "qkv"]
            blocks = [None, None, None]
        bias = f"{prefix}in_proj_bias" if f"{prefix}in_proj_bias" in self.w else None
        projected = []
        for i, x in enumerate((q_in, k_in, v_in)):
            w = names[i]
            rows = blocks[i]
            if bias is not None and rows is None:
                rows_b = slice(i * e, (i + 1) * e)
                y, back_proj = self._linear_split_bias(x, w, bias, rows_b)
            else:
                y, back_proj = self.linear(x, w, bias, rows)
            projected.append((_split(y, heads), back_proj))
        (q, bq), (k, bk), (v, bv) = projected
        scale = work.type(1.0 / math.sqrt(dh))
        s = (q @ np.swapaxes(k, -1, -2)) * scale
        if mask is not None:
            s = s + mask
        m = s.max(axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), work.type(0), m)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(s - m)
            total = p.sum(axis=-1, keepdims=True)
            p = p / np.where(total == 0, work.type(1), total)  # no visible key: weights 0

        def back(
            dp: np.ndarray, dv: np.ndarray, d: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            ds = p * (dp - d)
            dq = (ds @ k) * scale
            dk = (np.swapaxes(ds, -1, -2) @ q) * scale
            return bq(_merge(dq)), bk(_merge(dk)), bv(_merge(dv))

        return p, v, back

    def _linear_split_bias(
        self, x: np.ndarray, weight: str, bias: str, rows: slice
    ) -> tuple[np.ndarray, Back]:
        """y = x Wᵀ + b[rows]: a separate q/k/v_proj_weight with its block of in_proj_bias."""
        y, back_w = self.linear(x, weight, None)
        y = y + self.w[bias][rows]

        def back(g: np.ndarray) -> np.ndarray:
            self.accumulate(bias, _rows(g).sum(axis=0), rows)
            return back_w(g)

        return y, back

    def feed_forward(self, x: np.ndarray, activation: str) -> tuple[np.ndarray, Back]:
        """linear2(φ(linear1(x)))."""
        h, back1 = self.linear(x, "linear1.weight", "linear1.bias")
        a, back_act = self.activation(h, activation)
        y, back2 = self.linear(a, "linear2.weight", "linear2.bias")
        return y, lambda g: back1(back_act(back2(g)))


def _split(y: np.ndarray, heads: int) -> np.ndarray:
    """(B, L, E) -> (B, H, L, E/H)."""
    b, length, e = y.shape
    return y.reshape(b, length, heads, e // heads).transpose(0, 2, 1, 3)


def _merge(y: np.ndarray) -> np.ndarray:
    """(B, H, L, Dh) -> (B, L, H·Dh)."""
    b, h, length, dh = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, length, h * dh)


def _summed(grads: tuple[np.ndarray, ...]) -> np.ndarray:
    """One input read as query, key and value: its cotangent is the sum of the three."""
    total = grads[0]
    for g in grads[1:]:
        total = total + g
    return total


def _sublayer(
    x: np.ndarray,
    f: Callable[[np.ndarray], tuple[np.ndarray, Back]],
    tape: _Tape,
    norm: str,
    eps: float,
    norm_first: bool,
) -> tuple[np.ndarray, Back]:
    """pre-LN x + f(LN(x)), post-LN LN(x + f(x)); the residual's identity path adds ȳ."""
    if norm_first:
        n, back_norm = tape.layer_norm(x, norm, eps)
        y, back_f = f(n)
        return x + y, lambda g: g + back_norm(back_f(g))
    y, back_f = f(x)
    out, back_norm = tape.layer_norm(x + y, norm, eps)

    def back(g: np.ndarray) -> np.ndarray:
        gs = back_norm(g)
        return gs + back_f(gs)

    return out, back


class NumpyLayerGradientsMixin:
    """``multi_head_attention_vjp``, ``feed_forward_vjp``, ``swiglu_feed_forward_vjp``,
    ``encoder_layer_vjp``, ``decoder_layer_vjp`` (module docstring); the masks are built by the
    forward's own ``_mask`` (``nn.MultiheadAttention`` polarity) and the layouts swapped by its
    ``_bf``."""

    _mask: Callable[[Any, Any, np.dtype], np.ndarray | None]
    _bf: Callable[[np.ndarray, bool], np.ndarray]

    def multi_head_attention_vjp(
        self,
        grad_output: np.ndarray,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        params: Mapping[str, Any],
        num_heads: int,
        key_padding_mask: np.ndarray | None = None,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> dict[str, np.ndarray]:
        """querȳ, keȳ, valuē and every parameter's gradient of ``multi_head_attention``."""
        work = work_dtype(query.dtype)
        tape = _Tape(params, work)
        bf = bool(batch_first)
        q, k, v = (self._bf(a.astype(work), bf) for a in (query, key, value))
        mask = self._mask(attn_mask, key_padding_mask, work)
        _, back = tape.attention(q, k, v, "", int(num_heads), mask)
        grads = back(self._bf(grad_output.astype(work), bf))
        out = tape.results()
        for name, grad, given in zip(
            ("query", "key", "value"), grads, (query, key, value), strict=True
        ):
            out[name] = np.ascontiguousarray(self._bf(grad, bf)).astype(given.dtype)
        return out

    def multi_head_attention_weights_vjp(
        self,
        grad_output: np.ndarray,
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
    ) -> dict[str, np.ndarray]:
        """querȳ, keȳ and the in-projections' gradients of ``multi_head_attention_weights``:
        P̄ = ȳ (per head) or ȳ/H for every head (averaged), S̄ = P ∘ (P̄ − rowsum(P ∘ P̄)),
        then the score products and the projections; the value path gets nothing."""
        work = work_dtype(query.dtype)
        tape = _Tape(params, work)
        bf = bool(batch_first)
        q, k, v = (self._bf(a.astype(work), bf) for a in (query, key, value))
        mask = self._mask(attn_mask, key_padding_mask, work)
        heads = int(num_heads)
        p, vh, back = tape._heads(q, k, v, "", heads, mask)
        g = grad_output.astype(work)  # batch first whatever batch_first says
        if average_attn_weights:
            g = np.repeat(g[:, None] / work.type(heads), heads, axis=1)
        grads = back(g, np.zeros_like(vh), np.sum(p * g, axis=-1, keepdims=True))
        out = tape.results()
        for name, grad, given in zip(("query", "key"), grads, (query, key), strict=False):
            out[name] = np.ascontiguousarray(self._bf(grad, bf)).astype(given.dtype)
        return out

    def feed_forward_vjp(
        self,
        grad_output: np.ndarray,
        x: np.ndarray,
        params: Mapping[str, Any],
        activation: str = "relu",
    ) -> dict[str, np.ndarray]:
        """x̄ and the gradients of linear1 and linear2 of ``feed_forward``."""
        work = work_dtype(x.dtype)
        tape = _Tape(params, work)
        _, back = tape.feed_forward(x.astype(work), activation)
        dx = back(grad_output.astype(work))
        return {"x": dx.astype(x.dtype), **tape.results()}

    def swiglu_feed_forward_vjp(
        self, grad_output: np.ndarray, x: np.ndarray, params: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """y = (silu(a) ∘ b) W₂ᵀ, a = x W₁ᵀ, b = x W₃ᵀ: h̄ = ȳ W₂, ā = h̄ ∘ b ∘ silu'(a),
        b̄ = h̄ ∘ silu(a), x̄ = ā W₁ + b̄ W₃."""
        work = work_dtype(x.dtype)
        tape = _Tape(params, work)
        xw = x.astype(work)
        a, back1 = tape.linear(xw, "w1.weight", None)
        b, back3 = tape.linear(xw, "w3.weight", None)
        e = np.exp(-np.abs(a))
        one = work.type(1)
        sig = np.where(a >= 0, one / (one + e), e / (one + e))
        gate = a * sig
        _, back2 = tape.linear(gate * b, "w2.weight", None)
        dh = back2(grad_output.astype(work))
        da = dh * b * (sig * (one + a * (one - sig)))
        dx = back1(da) + back3(dh * gate)
        return {"x": dx.astype(x.dtype), **tape.results()}

    def encoder_layer_vjp(
        self,
        grad_output: np.ndarray,
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
    ) -> dict[str, np.ndarray]:
        """src̄ and every parameter's gradient of ``encoder_layer``: the two sublayers walked
        backwards, self-attention's input summing its query, key and value cotangents."""
        work = work_dtype(src.dtype)
        tape = _Tape(params, work)
        bf = bool(batch_first)
        mask = self._mask(src_mask, src_key_padding_mask, work)

        def attend(y: np.ndarray) -> tuple[np.ndarray, Back]:
            out, back = tape.attention(y, y, y, "self_attn.", int(nhead), mask)
            return out, lambda g: _summed(back(g))

        def ffn(y: np.ndarray) -> tuple[np.ndarray, Back]:
            return tape.feed_forward(y, activation)

        x = self._bf(src.astype(work), bf)
        x, back1 = _sublayer(x, attend, tape, "norm1", layer_norm_eps, bool(norm_first))
        _, back2 = _sublayer(x, ffn, tape, "norm2", layer_norm_eps, bool(norm_first))
        dsrc = back1(back2(self._bf(grad_output.astype(work), bf)))
        dsrc = np.ascontiguousarray(self._bf(dsrc, bf))
        return {"src": dsrc.astype(src.dtype), **tape.results()}

    def decoder_layer_vjp(
        self,
        grad_output: np.ndarray,
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
    ) -> dict[str, np.ndarray]:
        """tgt̄, memorȳ and every parameter's gradient of ``decoder_layer``: the memory is the
        cross-attention's key and value, so its gradient is the sum of both paths'."""
        work = work_dtype(tgt.dtype)
        tape = _Tape(params, work)
        bf = bool(batch_first)
        self_mask = self._mask(tgt_mask, tgt_key_padding_mask, work)
        cross_mask = self._mask(memory_mask, memory_key_padding_mask, work)
        mem = self._bf(memory.astype(work), bf)
        dmem = [np.zeros_like(mem)]

        def attend(y: np.ndarray) -> tuple[np.ndarray, Back]:
            out, back = tape.attention(y, y, y, "self_attn.", int(nhead), self_mask)
            return out, lambda g: _summed(back(g))

        def cross(y: np.ndarray) -> tuple[np.ndarray, Back]:
            out, back = tape.attention(y, mem, mem, "multihead_attn.", int(nhead), cross_mask)

            def back_cross(g: np.ndarray) -> np.ndarray:
                dq, dk, dv = back(g)
                dmem[0] = dmem[0] + dk + dv
                return dq

            return out, back_cross

        def ffn(y: np.ndarray) -> tuple[np.ndarray, Back]:
            return tape.feed_forward(y, activation)

        nf, eps = bool(norm_first), layer_norm_eps
        x = self._bf(tgt.astype(work), bf)
        x, back1 = _sublayer(x, attend, tape, "norm1", eps, nf)
        x, back2 = _sublayer(x, cross, tape, "norm2", eps, nf)
        _, back3 = _sublayer(x, ffn, tape, "norm3", eps, nf)
        dtgt = back1(back2(back3(self._bf(grad_output.astype(work), bf))))
        return {
            "tgt": np.ascontiguousarray(self._bf(dtgt, bf)).astype(tgt.dtype),
            "memory": np.ascontiguousarray(self._bf(dmem[0], bf)).astype(memory.dtype),
            **tape.results(),
        }
