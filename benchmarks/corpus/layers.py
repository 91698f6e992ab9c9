r"""Multi-head attention (its output and its attention weights), feed-forward, encoder and
decoder layers: a stepwise torch implementation, its wrong variants, and right ones computed
another way.

The semantics are ``nn.MultiheadAttention``, ``linear2(act(linear1(x)))``,
``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer`` in eval mode
(:mod:`transpec.adapters.torch.layers`):

.. math::

    \mathrm{MHA}(X_q, X_k, X_v) = [O_1 \cdots O_H] W_o^\top + b_o, \quad
    O_h = \mathrm{softmax}\!\big(Q_h K_h^\top / \sqrt{D_h} + M\big) V_h,

with :math:`Q = X_q W_q^\top + b_q` (rows ``[0:E]``, ``[E:2E]``, ``[2E:3E]`` of
``in_proj_weight`` for Q, K, V), head h the columns :math:`h D_h .. (h+1) D_h - 1`, masks in
``nn.MultiheadAttention`` polarity (bool True = not allowed, floats added) and a query row with
no visible key giving a zero attention row (transpec's canonical ``fully_masked_row="zero"``).
The weights (``need_weights=True``) are
:math:`P_h = \mathrm{softmax}(Q_h K_h^\top/\sqrt{D_h} + M)`, (B, H, L, S), or their mean over
the heads (B, L, S) with ``average_attn_weights``.
Post-LN sublayers are :math:`\mathrm{LN}(x + f(x))`, pre-LN ones :math:`x + f(\mathrm{LN}(x))`.

The base computes in the compute dtype (float32 for float16/bfloat16) and rounds once at the
end, one method per step (``project``, ``split_heads``, ``merge_heads``, ``scale``, ``masks``,
``scores``, ``softmax_rows``, ``head_average``, ``sublayer``, ``activation``, ...), so each
chaff overrides exactly the step with its defect. The SwiGLU feed-forward block (LLaMA's
bias-free :math:`(\operatorname{silu}(xW_1^\top) \odot xW_3^\top)W_2^\top`) has the same
structure, one method per step (``gate_up``, ``gate``, ``combine``, ``down``).

These are the corpus's own implementations, not torch modules with a fast and a slow path:
they declare no path-dependent semantics and have no slow path (``fast_slow_agreement``, which
compares torch's module paths, does not apply to them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._registry import ALL_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype

F = torch.nn.functional
Params = Mapping[str, Any]


class LayerBase(CorpusAdapter):
    """The four layer components written step by step in torch (compute dtype throughout)."""

    def slow_path_adapter(self) -> None:
        """None: not a torch module, no second path to compare with (module docstring)."""
        return None

    def layer_semantics(self, component: str, args: Mapping[str, Any]) -> dict[str, str]:
        """Canonical everywhere: zero rows for fully masked queries, the activation asked."""
        return {}

    # -- steps --------------------------------------------------------------------------------

    @staticmethod
    def _sub(params: Params, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def linear(self, x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
        w = params[f"{name}.weight"].to(x.dtype)
        b = params.get(f"{name}.bias")
        return F.linear(x, w, None if b is None else b.to(x.dtype))

    def project(self, x: torch.Tensor, params: Params, i: int) -> torch.Tensor:
        """Block i (0: Q, 1: K, 2: V) of the fused input projection, or ``q/k/v_proj_weight``
        when kdim/vdim differ from E."""
        if params.get("in_proj_weight") is None:
            w = params[f"{'qkv'[i]}_proj_weight"].to(x.dtype)
            e = w.shape[0]
        else:
            e = params["in_proj_weight"].shape[1]
            w = params["in_proj_weight"].to(x.dtype)[i * e : (i + 1) * e]
        b = params.get("in_proj_bias")
        return F.linear(x, w, None if b is None else b.to(x.dtype)[i * e : (i + 1) * e])

    def split_heads(self, y: torch.Tensor, heads: int) -> torch.Tensor:
        """(B, L, E) -> (B, H, L, Dh): head h is columns h·Dh..(h+1)·Dh-1."""
        b, n, e = y.shape
        return y.reshape(b, n, heads, e // heads).transpose(1, 2)

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        """(B, H, L, Dh) -> (B, L, H·Dh), heads in order."""
        b, h, n, dh = o.shape
        return o.transpose(1, 2).reshape(b, n, h * dh)

    def scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)

    def masks(self, attn_mask: Any, key_padding_mask: Any, work: torch.dtype) -> Any:
        """Additive (B, 1, L, S) bias (bool True -> -inf), or None."""
        total: Any = None
        for m, expand in ((attn_mask, lambda t: t[None, None]), (key_padding_mask, None)):
            if m is None:
                continue
            bias = (
                torch.where(m, float("-inf"), 0.0).to(work) if m.dtype == torch.bool else m.to(work)
            )
            bias = expand(bias) if expand else bias[:, None, None, :]
            total = bias if total is None else total + bias
        return total

    def scores(self, q: torch.Tensor, k: torch.Tensor, bias: Any, head_dim: int) -> torch.Tensor:
        """q kᵀ·scale + bias per head."""
        s = (q @ k.transpose(-2, -1)) * self.scale(head_dim)
        return s if bias is None else s + bias

    def softmax_rows(self, s: torch.Tensor) -> torch.Tensor:
        """softmax over the keys; a row with no visible key gives zeros."""
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m)
        tot = p.sum(dim=-1, keepdim=True)
        return p / torch.where(tot == 0, torch.ones_like(tot), tot)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Any, head_dim: int
    ) -> torch.Tensor:
        """softmax(q kᵀ·scale + bias) v per head; a row with no visible key gives zeros."""
        return self.softmax_rows(self.scores(q, k, bias, head_dim)) @ v

    def mha(
        self,
        xq: torch.Tensor,
        xk: torch.Tensor,
        xv: torch.Tensor,
        params: Params,
        heads: int,
        bias: Any,
    ) -> torch.Tensor:
        """Batch-first multi-head attention in the compute dtype."""
        e = xq.shape[-1]
        q = self.split_heads(self.project(xq, params, 0), heads)
        k = self.split_heads(self.project(xk, params, 1), heads)
        v = self.split_heads(self.project(xv, params, 2), heads)
        o = self.merge_heads(self.attend(q, k, v, bias, e // heads))
        return self.linear(o, params, "out_proj")

    def activation(self, h: torch.Tensor, name: str) -> torch.Tensor:
        if name == "relu":
            return F.relu(h)
        if name in ("gelu", "gelu_tanh"):
            return F.gelu(h, approximate="tanh" if name == "gelu_tanh" else "none")
        raise ValueError(f"unknown activation {name!r}; expected relu, gelu or gelu_tanh")

    def ffn(self, x: torch.Tensor, params: Params, activation: str) -> torch.Tensor:
        h = self.activation(self.linear(x, params, "linear1"), activation)
        return self.linear(h, params, "linear2")

    def layer_norm_of(self, x: torch.Tensor, params: Params, name: str, eps: float) -> torch.Tensor:
        w = params[f"{name}.weight"].to(x.dtype)
        b = params.get(f"{name}.bias")
        return F.layer_norm(x, (x.shape[-1],), w, None if b is None else b.to(x.dtype), eps)

    def sublayer(
        self,
        x: torch.Tensor,
        f: Callable[[torch.Tensor], torch.Tensor],
        params: Params,
        norm: str,
        eps: float,
        norm_first: bool,
    ) -> torch.Tensor:
        """post-LN: LN(x + f(x)); pre-LN: x + f(LN(x))."""
        if norm_first:
            return x + f(self.layer_norm_of(x, params, norm, eps))
        return self.layer_norm_of(x + f(x), params, norm, eps)

    def ffn_sublayer(
        self,
        x: torch.Tensor,
        params: Params,
        activation: str,
        norm: str,
        eps: float,
        norm_first: bool,
    ) -> torch.Tensor:
        return self.sublayer(
            x, lambda y: self.ffn(y, params, activation), params, norm, eps, norm_first
        )

    def norm_first(self, requested: bool) -> bool:
        return requested

    @staticmethod
    def _bf(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
        return x if batch_first else x.transpose(0, 1)

    def _work(self, x: torch.Tensor) -> torch.dtype:
        return compute_dtype(x.dtype)

    @staticmethod
    def _params(params: Params, work: torch.dtype) -> dict[str, Any]:
        return {k: (None if v is None else v.to(work)) for k, v in params.items()}

    # -- components ---------------------------------------------------------------------------

    def multi_head_attention(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Params,
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> Any:
        """``nn.MultiheadAttention`` semantics; ``is_causal`` is a hint, ``attn_mask`` applies."""
        work = self._work(query)
        q, k, v = (self._bf(a.to(work), batch_first) for a in (query, key, value))
        bias = self.masks(attn_mask, key_padding_mask, work)
        out = self.mha(q, k, v, self._params(params, work), int(num_heads), bias)
        return self._bf(out, batch_first).to(query.dtype).contiguous()

    def feed_forward(self, x: Any, params: Params, activation: str = "relu") -> Any:
        """FFN(x) = act(x W_1ᵀ + b_1) W_2ᵀ + b_2."""
        work = self._work(x)
        return self.ffn(x.to(work), self._params(params, work), activation).to(x.dtype)

    def encoder_layer(
        self,
        src: Any,
        params: Params,
        nhead: int,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        src_mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> Any:
        """x = sub(x, SA, norm1); x = sub(x, FFN, norm2) (post- or pre-LN)."""
        work = self._work(src)
        p = self._params(params, work)
        x = self._bf(src.to(work), batch_first)
        bias = self.masks(src_mask, src_key_padding_mask, work)
        sa = self._sub(p, "self_attn.")
        nf = self.norm_first(norm_first)
        x = self.sublayer(
            x, lambda y: self.mha(y, y, y, sa, int(nhead), bias), p, "norm1", layer_norm_eps, nf
        )
        x = self.ffn_sublayer(x, p, activation, "norm2", layer_norm_eps, nf)
        return self._bf(x, batch_first).to(src.dtype).contiguous()

    def cross_keys(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The keys and values of cross-attention: the encoder's memory."""
        return memory

    def cross_masks(self, memory_mask: Any, memory_key_padding_mask: Any, work: torch.dtype) -> Any:
        return self.masks(memory_mask, memory_key_padding_mask, work)

    def decoder_layer(
        self,
        tgt: Any,
        memory: Any,
        params: Params,
        nhead: int,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        batch_first: bool = True,
    ) -> Any:
        """x = sub(x, SA, norm1); x = sub(x, CA(·, memory), norm2); x = sub(x, FFN, norm3)."""
        work = self._work(tgt)
        p = self._params(params, work)
        x = self._bf(tgt.to(work), batch_first)
        mem = self._bf(memory.to(work), batch_first)
        self_bias = self.masks(tgt_mask, tgt_key_padding_mask, work)
        cross_bias = self.cross_masks(memory_mask, memory_key_padding_mask, work)
        sa, ca = self._sub(p, "self_attn."), self._sub(p, "multihead_attn.")
        h = int(nhead)
        eps = layer_norm_eps
        nf = self.norm_first(norm_first)

        def cross(y: torch.Tensor) -> torch.Tensor:
            kv = self.cross_keys(y, mem)
            return self.mha(y, kv, kv, ca, h, cross_bias)

        x = self.sublayer(x, lambda y: self.mha(y, y, y, sa, h, self_bias), p, "norm1", eps, nf)
        x = self.sublayer(x, cross, p, "norm2", eps, nf)
        x = self.ffn_sublayer(x, p, activation, "norm3", eps, nf)
        return self._bf(x, batch_first).to(tgt.dtype).contiguous()


class MHABase(LayerBase):
    """Multi-head attention, one fused input projection, step by step."""

    component = "multi_head_attention"


class MHAWeightsBase(LayerBase):
    """The attention weights of multi-head attention (``need_weights=True``), step by step."""

    component = "multi_head_attention_weights"

    def head_scores(
        self, xq: torch.Tensor, xk: torch.Tensor, params: Params, heads: int, bias: Any
    ) -> torch.Tensor:
        """(B, H, L, S) scores Q_h K_hᵀ/√D_h + M of every head."""
        e = xq.shape[-1]
        q = self.split_heads(self.project(xq, params, 0), heads)
        k = self.split_heads(self.project(xk, params, 1), heads)
        return self.scores(q, k, bias, e // heads)

    def head_average(self, s: torch.Tensor) -> torch.Tensor:
        """(B, H, L, S) scores -> (B, L, S): the mean over the heads of their weights."""
        return self.softmax_rows(s).mean(dim=1)

    def multi_head_attention_weights(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Params,
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
        average_attn_weights: bool = True,
    ) -> Any:
        """(B, H, L, S) weights, or their mean over the heads; batch first whatever
        ``batch_first`` says (as ``nn.MultiheadAttention``)."""
        work = self._work(query)
        q, k = (self._bf(a.to(work), batch_first) for a in (query, key))
        bias = self.masks(attn_mask, key_padding_mask, work)
        s = self.head_scores(q, k, self._params(params, work), int(num_heads), bias)
        p = self.head_average(s) if average_attn_weights else self.softmax_rows(s)
        return p.to(query.dtype).contiguous()


class FFNBase(LayerBase):
    """The position-wise feed-forward block."""

    component = "feed_forward"


class EncoderBase(LayerBase):
    """The encoder layer (self-attention and feed-forward sublayers)."""

    component = "encoder_layer"


class DecoderBase(LayerBase):
    """The decoder layer (self-attention, cross-attention and feed-forward sublayers)."""

    component = "decoder_layer"


# -- chaffs ------------------------------------------------------------------------------------

_HEADS = "needs H >= 2 and D_h >= 2 (drawn in every dtype); the columns are mixed across heads, "


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why=_HEADS + "an O(1) change of the attention outputs",
)
class MhaHeadSplitDhH(MHABase):
    """Heads split as (B, L, Dh, H): head h takes every H-th column instead of a block."""

    def split_heads(self, y: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, e = y.shape
        return y.reshape(b, n, e // heads, heads).permute(0, 3, 1, 2)


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why=_HEADS + "the out projection then multiplies the wrong columns: an O(1) change",
)
class MhaConcatTransposed(MHABase):
    """Head outputs transposed before concatenation: (B, L, Dh, H) flattened, not (B, L, H, Dh)."""

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = o.shape
        return o.permute(0, 2, 3, 1).reshape(b, n, h * dh)


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="Q and K projections exchanged: the scores become Kᵀ-side scores, O(1) different "
    "whenever W_q != W_k (always, drawn independently)",
)
class MhaInProjQKSwapped(MHABase):
    """Q taken from in_proj_weight rows [E:2E] and K from rows [0:E]."""

    def project(self, x: torch.Tensor, params: Params, i: int) -> torch.Tensor:
        return super().project(x, params, {0: 1, 1: 0}.get(i, i))


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="V = X W_kᵀ + b_k instead of X W_vᵀ + b_v: O(1) different (independent draws)",
)
class MhaValueFromKeyRows(MHABase):
    """V taken from K's rows [E:2E] of in_proj_weight."""

    def project(self, x: torch.Tensor, params: Params, i: int) -> torch.Tensor:
        return super().project(x, params, 1 if i == 2 else i)


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="logits off by sqrt(D_h) (needs D_h >= 2, drawn in every dtype): softmax weights "
    "change by O(1) for O(1) logits",
)
class MhaScaleMissing(MHABase):
    """No 1/sqrt(d_head) on the scores."""

    def scale(self, head_dim: int) -> float:
        return 1.0


@chaff(
    "multi_head_attention_weights",
    visible=ALL_DTYPES,
    why="with average_attn_weights and H >= 2 (both drawn in every dtype) every weight is H "
    "times too large: rows sum to H",
)
class MhawHeadSumNotMean(MHAWeightsBase):
    """Heads "averaged" by summing their weights without dividing by H."""

    def head_average(self, s: torch.Tensor) -> torch.Tensor:
        return self.softmax_rows(s).sum(dim=1)


@chaff(
    "multi_head_attention_weights",
    visible=ALL_DTYPES,
    why="softmax of the mean score is not the mean of the softmaxes (softmax is not linear): "
    "with average_attn_weights, H >= 2 and L_k >= 2 (drawn in every dtype) the heads score "
    "keys differently and the weights move by up to 0.2 (median largest difference 0.03 on "
    "drawn unmasked examples), above the bf16 bound",
)
class MhawSoftmaxOfMeanScores(MHAWeightsBase):
    """Heads averaged before the softmax: softmax of the mean scores, not the mean weights."""

    def head_average(self, s: torch.Tensor) -> torch.Tensor:
        return self.softmax_rows(s.mean(dim=1))


@chaff(
    "multi_head_attention_weights",
    visible=ALL_DTYPES,
    why="hidden keys get O(1/L_k) weight (needs a mask that hides a key or adds a bias: "
    "padding, boolean, causal and additive masks are drawn in every dtype)",
)
class MhawWeightsBeforeMask(MHAWeightsBase):
    """The weights returned are the softmax of the scores before the mask is added."""

    def scores(self, q: torch.Tensor, k: torch.Tensor, bias: Any, head_dim: int) -> torch.Tensor:
        return super().scores(q, k, None, head_dim)


@chaff(
    "feed_forward",
    visible=("float64", "float32", "float16"),
    why="tanh-GELU differs from erf-GELU by up to 4.7e-4 absolute (at x = 2.70, 1.8e-4 "
    "relative; in the tail x < -3 up to 22% of values below 1e-3): far above the fp64/fp32 "
    "bounds, about one fp16 ulp of the hidden units (u = 4.9e-4) and still seen through "
    "linear2, below bf16's rounding of the hidden units and of the output (u = 3.9e-3)",
)
class FfnGeluTanhForExact(FFNBase):
    """activation="gelu" computed with the tanh approximation."""

    def activation(self, h: torch.Tensor, name: str) -> torch.Tensor:
        return super().activation(h, "gelu_tanh" if name == "gelu" else name)


@chaff(
    "encoder_layer",
    visible=ALL_DTYPES,
    why="post-LN and pre-LN differ by O(1) (the output is normalized or not)",
)
class EncoderNormFirstIgnored(EncoderBase):
    """norm_first ignored: always post-LN."""

    def norm_first(self, requested: bool) -> bool:
        return False


@chaff(
    "encoder_layer",
    visible=ALL_DTYPES,
    why="the feed-forward output replaces x instead of being added to it: O(1)",
)
class EncoderFfnResidualMissing(EncoderBase):
    """No residual connection around the feed-forward sublayer."""

    def ffn_sublayer(
        self,
        x: torch.Tensor,
        params: Params,
        activation: str,
        norm: str,
        eps: float,
        norm_first: bool,
    ) -> torch.Tensor:
        if norm_first:
            return self.ffn(self.layer_norm_of(x, params, norm, eps), params, activation)
        return self.layer_norm_of(self.ffn(x, params, activation), params, norm, eps)


@chaff(
    "decoder_layer",
    visible=ALL_DTYPES,
    why="cross-attention over the target instead of the memory: O(1) different outputs",
)
class DecoderCrossAttendsToSelf(DecoderBase):
    """Cross-attention uses the decoder states as keys and values."""

    def cross_keys(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return x


@chaff(
    "decoder_layer",
    visible=ALL_DTYPES,
    why="padded memory positions get O(1) weight (needs a key padding mask that pads: drawn)",
)
class DecoderMemoryPaddingIgnored(DecoderBase):
    """memory_key_padding_mask ignored in cross-attention."""

    def cross_masks(self, memory_mask: Any, memory_key_padding_mask: Any, work: torch.dtype) -> Any:
        return self.masks(memory_mask, None, work)


# -- wheats ------------------------------------------------------------------------------------


@wheat("multi_head_attention")
class MhaPerHeadProjections(MHABase):
    """One small projection per head (rows of in_proj_weight per head), no fused matmul."""

    def mha(
        self,
        xq: torch.Tensor,
        xk: torch.Tensor,
        xv: torch.Tensor,
        params: Params,
        heads: int,
        bias: Any,
    ) -> torch.Tensor:
        e = xq.shape[-1]
        dh = e // heads
        b = params.get("in_proj_bias")
        if params.get("in_proj_weight") is None:  # kdim/vdim != E: separate projections
            ws = [params[f"{n}_proj_weight"] for n in "qkv"]
        else:
            ws = [params["in_proj_weight"][i * e : (i + 1) * e] for i in range(3)]
        outs = []
        for h in range(heads):

            def proj(x: torch.Tensor, i: int, h: int = h) -> torch.Tensor:
                rows = slice(h * dh, (h + 1) * dh)
                bias_rows = slice(i * e + h * dh, i * e + (h + 1) * dh)
                return F.linear(x, ws[i][rows], None if b is None else b[bias_rows]).unsqueeze(1)

            o = self.attend(proj(xq, 0), proj(xk, 1), proj(xv, 2), bias, dh)  # (B, 1, L, Dh)
            outs.append(o[:, 0])
        return self.linear(torch.cat(outs, dim=-1), params, "out_proj")


@wheat("multi_head_attention_weights")
class MhawPerHeadRunningMean(MHAWeightsBase):
    """Weights head by head from each head's rows of the projections; the mean as a running
    sum divided by H at the end."""

    def head_scores(
        self, xq: torch.Tensor, xk: torch.Tensor, params: Params, heads: int, bias: Any
    ) -> torch.Tensor:
        e = xq.shape[-1]
        dh = e // heads
        b = params.get("in_proj_bias")
        if params.get("in_proj_weight") is None:  # kdim != E: separate projections
            wq, wk = params["q_proj_weight"], params["k_proj_weight"]
        else:
            wq, wk = params["in_proj_weight"][:e], params["in_proj_weight"][e : 2 * e]
        per_head = []
        for h in range(heads):
            rows = slice(h * dh, (h + 1) * dh)
            bq = None if b is None else b[h * dh : (h + 1) * dh]
            bk = None if b is None else b[e + h * dh : e + (h + 1) * dh]
            q = F.linear(xq, wq[rows], bq).unsqueeze(1)  # (B, 1, L, Dh)
            k = F.linear(xk, wk[rows], bk).unsqueeze(1)
            per_head.append(self.scores(q, k, bias, dh))
        return torch.cat(per_head, dim=1)

    def head_average(self, s: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(s[:, 0])
        for h in range(s.shape[1]):
            total = total + self.softmax_rows(s[:, h])
        return total / s.shape[1]


@wheat("encoder_layer")
class EncoderFloat64Internals(EncoderBase):
    """Computed entirely in float64 and rounded once to the input dtype."""

    def _work(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64


@wheat("decoder_layer")
class DecoderFloat64Internals(DecoderBase):
    """Computed entirely in float64 and rounded once to the input dtype."""

    def _work(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64


@wheat("feed_forward")
class FfnErfByHand(FFNBase):
    """Exact GELU written out as x·(1 + erf(x/√2))/2, tanh-GELU as its formula."""

    def activation(self, h: torch.Tensor, name: str) -> torch.Tensor:
        if name == "gelu":
            return 0.5 * h * (1.0 + torch.erf(h * (1.0 / math.sqrt(2.0))))
        if name == "gelu_tanh":
            c = math.sqrt(2.0 / math.pi)
            return 0.5 * h * (1.0 + torch.tanh(c * (h + 0.044715 * h * h * h)))
        return super().activation(h, name)


# -- the SwiGLU feed-forward block ---------------------------------------------------------------


class SwigluBase(LayerBase):
    r"""LLaMA's SwiGLU FFN :math:`(\operatorname{silu}(xW_1^\top) \odot xW_3^\top)W_2^\top`,
    bias-free, step by step: ``gate_up`` (the two input projections), ``gate`` (silu),
    ``combine`` (the gating product), ``down`` (the output projection over a token matrix)."""

    component = "swiglu_feed_forward"

    def gate_up(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """(x W_1ᵀ, x W_3ᵀ): the gate's and the up projection's pre-activations."""
        return F.linear(x, params["w1.weight"]), F.linear(x, params["w3.weight"])

    def gate(self, a: torch.Tensor) -> torch.Tensor:
        return F.silu(a)

    def combine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.gate(a) * b

    def down(self, h: torch.Tensor, params: Params, shape: torch.Size) -> torch.Tensor:
        """h W_2ᵀ over the tokens of ``h`` (..., hidden), returned in ``shape`` (..., d)."""
        return F.linear(h, params["w2.weight"]).reshape(shape)

    def swiglu_feed_forward(self, x: Any, params: Params) -> Any:
        """SwiGLU(x) = (silu(x W_1ᵀ) ⊙ x W_3ᵀ) W_2ᵀ in the compute dtype, rounded once."""
        work = self._work(x)
        p = self._params(params, work)
        a, b = self.gate_up(x.to(work), p)
        return self.down(self.combine(a, b), p, x.shape).to(x.dtype)


@chaff(
    "swiglu_feed_forward",
    visible=ALL_DTYPES,
    why="silu(xW_3ᵀ)·xW_1ᵀ differs from silu(xW_1ᵀ)·xW_3ᵀ by O(1) relative wherever the two "
    "projections differ (independent W_1, W_3 drawn in every dtype)",
)
class SwigluGateUpSwapped(SwigluBase):
    """Gate and up projections swapped: w2(silu(w3 x) * w1 x)."""

    def gate_up(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = super().gate_up(x, params)
        return b, a


@chaff(
    "swiglu_feed_forward",
    visible=ALL_DTYPES,
    why="silu(ab) is not silu(a)·b: an O(1) change of every hidden unit with |a|, |b| ~ 1",
)
class SwigluSiluAfterProduct(SwigluBase):
    """silu applied after the gating product: w2(silu(w1 x * w3 x))."""

    def combine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.gate(a * b)


@chaff(
    "swiglu_feed_forward",
    visible=ALL_DTYPES,
    why="σ(a) = silu(a)/a: the hidden units are off by the factor a, O(1) for |a| ~ 1",
)
class SwigluSigmoidGate(SwigluBase):
    """sigmoid instead of silu as the gate (GLU, not SwiGLU): w2(σ(w1 x) * w3 x)."""

    def gate(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(a)


@chaff(
    "swiglu_feed_forward",
    visible=ALL_DTYPES,
    why="with two or more tokens and d >= 2 (drawn in every dtype) the (d, N) result read "
    "back row-major puts features of one token into others: O(1) changes",
)
class SwigluTokensReshaped(SwigluBase):
    """Down projection computed as W_2 hᵀ (d, tokens) and reshaped, not transposed, back."""

    def down(self, h: torch.Tensor, params: Params, shape: torch.Size) -> torch.Tensor:
        tokens = h.reshape(-1, h.shape[-1])
        return (params["w2.weight"] @ tokens.T).reshape(shape)


@chaff(
    "swiglu_feed_forward",
    visible=("float16", "bfloat16"),
    why="for float16/bfloat16 inputs the result stays in the float32 compute dtype (for "
    "float64/float32 the compute dtype is the input dtype)",
)
class SwigluComputeDtypeReturned(SwigluBase):
    """Returns the float32 compute-dtype result for float16/bfloat16 inputs (no final cast)."""

    def swiglu_feed_forward(self, x: Any, params: Params) -> Any:
        work = self._work(x)
        p = self._params(params, work)
        a, b = self.gate_up(x.to(work), p)
        return self.down(self.combine(a, b), p, x.shape)


@wheat("swiglu_feed_forward")
class SwigluFusedGateUp(SwigluBase):
    """W_1 and W_3 fused into one (2·hidden, d) projection, split after; silu as a·σ(a)."""

    def gate_up(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        fused = torch.cat([params["w1.weight"], params["w3.weight"]], dim=0)
        a, b = F.linear(x, fused).chunk(2, dim=-1)
        return a, b

    def gate(self, a: torch.Tensor) -> torch.Tensor:
        return a * torch.sigmoid(a)


@wheat("swiglu_feed_forward")
class SwigluFloat64Internals(SwigluBase):
    """Computed entirely in float64 and rounded once to the input dtype."""

    def _work(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64
