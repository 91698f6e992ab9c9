"""Hypothesis strategies for the layer components (multi-head attention, feed-forward, encoder
and decoder layers).

Sizes stay small so that the CI profile is fast: embed dim <= 32 (heads 1-4, odd counts
included, head dim 1-8), lengths <= 16, batch <= 3, feed-forward width <= 64. Parameters are
dicts keyed by the torch module's ``state_dict`` names, drawn with Xavier-uniform weights
(U(-a, a), a = sqrt(6/(fan_in + fan_out)), the modules' own initialization), biases N(0, 0.1²),
LayerNorm weights 1 + N(0, 0.1²). Inputs are N(0, 1). Masks have nn.MultiheadAttention's
polarity (bool True = masked; float masks are added): none, key padding (bool or float -inf,
sometimes a fully padded sequence: its query rows are fully masked, and the reference follows
the convention the adapter declares for its path), a random boolean attention mask, the causal
mask (bool, or the float ``square_subsequent_mask``, with the ``is_causal`` hint or not), and a
finite additive mask. As elsewhere, array values come from a NumPy generator seeded by a drawn
integer; shapes, flags and regimes are drawn by Hypothesis and shrink.

:func:`layer_inputs` draws what every layer shares (:class:`LayerDraw`), then the block's own
arguments with the ``"draw"`` hook of its record (``draw_<component>``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.oracle import components
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.engine.strategy import Args

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "gelu_tanh")
LAYER_MASKS: tuple[str, ...] = (
    "none",
    "key_padding",
    "fully_padded",
    "attn_bool",
    "causal",
    "additive",
)


class ParamDict(dict[str, np.ndarray]):
    """A dict of parameter arrays whose repr gives each name with its shape and value range,
    so a counterexample stays readable (the arrays themselves are in the saved case)."""

    def __repr__(self) -> str:
        def one(value: Any) -> str:
            arr = np.asarray(value)
            if not arr.size:
                return f"{tuple(arr.shape)}"
            return f"{tuple(arr.shape)} |x|<={float(np.max(np.abs(arr))):.3g}"

        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in self.items()) + "}"


def _xavier(rng: np.random.Generator, out_f: int, in_f: int) -> np.ndarray:
    a = math.sqrt(6.0 / (in_f + out_f))
    return rng.uniform(-a, a, size=(out_f, in_f))


def mha_params(rng: np.random.Generator, e: int, prefix: str = "") -> dict[str, np.ndarray]:
    """nn.MultiheadAttention(e, h) state_dict entries (with ``prefix``)."""
    return {
        f"{prefix}in_proj_weight": _xavier(rng, 3 * e, e),
        f"{prefix}in_proj_bias": rng.normal(0.0, 0.1, 3 * e),
        f"{prefix}out_proj.weight": _xavier(rng, e, e),
        f"{prefix}out_proj.bias": rng.normal(0.0, 0.1, e),
    }


def mha_params_kv(rng: np.random.Generator, e: int, kdim: int, vdim: int) -> dict[str, np.ndarray]:
    """nn.MultiheadAttention(e, h, kdim=kdim, vdim=vdim) state_dict entries when kdim or vdim
    differs from e: separate ``q_proj_weight`` (e, e), ``k_proj_weight`` (e, kdim) and
    ``v_proj_weight`` (e, vdim) in place of ``in_proj_weight``."""
    return {
        "q_proj_weight": _xavier(rng, e, e),
        "k_proj_weight": _xavier(rng, e, kdim),
        "v_proj_weight": _xavier(rng, e, vdim),
        "in_proj_bias": rng.normal(0.0, 0.1, 3 * e),
        "out_proj.weight": _xavier(rng, e, e),
        "out_proj.bias": rng.normal(0.0, 0.1, e),
    }


def ffn_params(rng: np.random.Generator, e: int, f: int) -> dict[str, np.ndarray]:
    return {
        "linear1.weight": _xavier(rng, f, e),
        "linear1.bias": rng.normal(0.0, 0.1, f),
        "linear2.weight": _xavier(rng, e, f),
        "linear2.bias": rng.normal(0.0, 0.1, e),
    }


def norm_params(rng: np.random.Generator, e: int, name: str) -> dict[str, np.ndarray]:
    return {
        f"{name}.weight": 1.0 + rng.normal(0.0, 0.1, e),
        f"{name}.bias": rng.normal(0.0, 0.1, e),
    }


def _mask(
    rng: np.random.Generator, kind: str, batch: int, lq: int, lk: int, as_float: bool
) -> tuple[Any, Any, bool]:
    """(attn_mask, key_padding_mask, is_causal) of one kind, in MHA polarity."""
    attn: Any = None
    kpm: Any = None
    causal = False
    if kind in ("key_padding", "fully_padded"):
        pad = np.zeros((batch, lk), dtype=bool)
        for b in range(batch):
            n = int(rng.integers(0, lk))  # keep >= 1 key
            pad[b, lk - n :] = True
        if kind == "fully_padded":
            pad[int(rng.integers(0, batch))] = True
        kpm = np.where(pad, -np.inf, 0.0) if as_float else pad
    elif kind == "attn_bool":
        m = rng.random((lq, lk)) < 0.3
        m[:, int(rng.integers(0, lk))] = False  # every query keeps a key
        attn = np.where(m, -np.inf, 0.0) if as_float else m
    elif kind == "causal":
        m = np.triu(np.ones((lq, lk), dtype=bool), 1)
        attn = np.where(m, -np.inf, 0.0) if as_float else m
        causal = lq == lk and bool(rng.integers(0, 2))
    elif kind == "additive":
        attn = rng.normal(0.0, 1.0, (lq, lk))
    return attn, kpm, causal


@st.composite
def _sizes(draw: st.DrawFn, *, min_heads: int, odd_heads: bool) -> tuple[int, int]:
    heads = draw(st.integers(min_heads, 4))
    if not odd_heads and heads % 2:
        heads = heads + 1 if heads < 4 else heads - 1
    head_dim = draw(st.integers(1, 8))
    return heads, heads * head_dim


def _choice(values: Sequence[str] | None, allowed: Sequence[str], name: str) -> tuple[str, ...]:
    chosen = tuple(allowed if values is None else values)
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise ValueError(f"{name} must be a non-empty selection of {', '.join(allowed)}")
    return chosen


@dataclass(frozen=True)
class LayerDraw:
    """What the arguments of every layer share in one example: the head count and embed dim, the
    generator of the array values, batch, sequence length and layout, whether masks are float,
    and the strategy's selections of mask kinds and activations."""

    heads: int
    e: int
    rng: np.random.Generator
    batch: int
    length: int
    batch_first: bool
    as_float: bool
    masks: tuple[str, ...]
    memory_masks: tuple[str, ...]
    activations: tuple[str, ...]
    self_attention: bool | None

    def seq(self, n: int, width: int | None = None) -> np.ndarray:
        """A N(0, 1) sequence of length ``n`` and ``width`` features (default: the embed dim),
        (B, n, width) batch first, else (n, B, width)."""
        x = self.rng.standard_normal((self.batch, n, self.e if width is None else width))
        return x if self.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))


# -- the blocks' own arguments (the "draw" hooks of their records) ---------------------------


def draw_feed_forward(d: st.DrawFn, shared: LayerDraw) -> Args:
    """``feed_forward``'s arguments: x of shape (L, E) or (B, L, E), the weights of a hidden
    width 1-64, an activation."""
    rng, e, length = shared.rng, shared.e, shared.length
    f = d(st.integers(1, 64))
    shape = d(st.sampled_from([(length, e), (shared.batch, length, e)]))
    return {
        "x": rng.standard_normal(shape),
        "params": ParamDict(ffn_params(rng, e, f)),
        "activation": d(st.sampled_from(shared.activations)),
    }


def draw_multi_head_attention(d: st.DrawFn, shared: LayerDraw) -> Args:
    """``multi_head_attention``'s arguments: self-attention (query = key = value) or distinct
    key and value of their own length and, sometimes, their own widths (kdim, vdim), masks of
    one kind."""
    rng, e, length = shared.rng, shared.e, shared.length
    kind = d(st.sampled_from(shared.masks))
    selfish = d(st.booleans()) if shared.self_attention is None else shared.self_attention
    lk = length if selfish else d(st.integers(1, 16))
    if kind == "causal" and lk != length:
        lk = length
    # distinct key/value inputs may have their own widths (kdim, vdim != embed_dim)
    kdim = vdim = e
    if not selfish and d(st.booleans()):
        kdim, vdim = d(st.integers(1, 16)), d(st.integers(1, 16))
        if kdim == vdim == e:
            kdim = e + 1
    q = shared.seq(length)
    k = q if selfish else shared.seq(lk, kdim)
    v = q if selfish else shared.seq(lk, vdim)
    attn, kpm, causal = _mask(rng, kind, shared.batch, length, lk, shared.as_float)
    separate = (kdim, vdim) != (e, e)
    params = mha_params_kv(rng, e, kdim, vdim) if separate else mha_params(rng, e)
    return {
        "query": q,
        "key": k,
        "value": v,
        "params": ParamDict(params),
        "num_heads": shared.heads,
        "key_padding_mask": kpm,
        "attn_mask": attn,
        "is_causal": causal,
        "batch_first": shared.batch_first,
    }


def draw_multi_head_attention_weights(d: st.DrawFn, shared: LayerDraw) -> Args:
    """``multi_head_attention_weights``'s arguments: those of ``multi_head_attention`` and
    whether the weights are averaged over heads."""
    drawn = draw_multi_head_attention(d, shared)
    drawn["average_attn_weights"] = d(st.booleans())
    return drawn


def _layer_settings(d: st.DrawFn, shared: LayerDraw) -> tuple[str, int, str, bool, float]:
    """What the encoder and decoder layers draw alike: the self-attention mask kind, the
    feed-forward width 1-64, the activation, pre- or post-LN and the LayerNorm eps."""
    kind = d(st.sampled_from(shared.masks))
    f = d(st.integers(1, 64))
    act = d(st.sampled_from(shared.activations))
    norm_first = d(st.booleans())
    eps = d(st.sampled_from([1e-5, 1e-6]))
    return kind, f, act, norm_first, eps


def draw_encoder_layer(d: st.DrawFn, shared: LayerDraw) -> Args:
    """``encoder_layer``'s arguments: src, the state_dict of nn.TransformerEncoderLayer, its
    settings and the source masks of one kind."""
    rng, e, length = shared.rng, shared.e, shared.length
    kind, f, act, norm_first, eps = _layer_settings(d, shared)
    attn, kpm, causal = _mask(rng, kind, shared.batch, length, length, shared.as_float)
    params = {
        **mha_params(rng, e, "self_attn."),
        **ffn_params(rng, e, f),
        **norm_params(rng, e, "norm1"),
        **norm_params(rng, e, "norm2"),
    }
    return {
        "src": shared.seq(length),
        "params": ParamDict(params),
        "nhead": shared.heads,
        "norm_first": norm_first,
        "activation": act,
        "layer_norm_eps": eps,
        "src_mask": attn,
        "src_key_padding_mask": kpm,
        "is_causal": causal,
        "batch_first": shared.batch_first,
    }


def draw_decoder_layer(d: st.DrawFn, shared: LayerDraw) -> Args:
    """``decoder_layer``'s arguments: tgt, a memory of its own length, the state_dict of
    nn.TransformerDecoderLayer, its settings, target masks of one kind and memory masks of
    another (never causal)."""
    rng, e, length, batch = shared.rng, shared.e, shared.length, shared.batch
    kind, f, act, norm_first, eps = _layer_settings(d, shared)
    ls = d(st.integers(1, 16))
    mem_kind = d(st.sampled_from(shared.memory_masks))
    attn, kpm, causal = _mask(rng, kind, batch, length, length, shared.as_float)
    m_attn, m_kpm, _ = _mask(
        rng, mem_kind if mem_kind != "causal" else "none", batch, length, ls, shared.as_float
    )
    params = {
        **mha_params(rng, e, "self_attn."),
        **mha_params(rng, e, "multihead_attn."),
        **ffn_params(rng, e, f),
        **norm_params(rng, e, "norm1"),
        **norm_params(rng, e, "norm2"),
        **norm_params(rng, e, "norm3"),
    }
    return {
        "tgt": shared.seq(length),
        "memory": shared.seq(ls),
        "params": ParamDict(params),
        "nhead": shared.heads,
        "norm_first": norm_first,
        "activation": act,
        "layer_norm_eps": eps,
        "tgt_mask": attn,
        "memory_mask": m_attn,
        "tgt_key_padding_mask": kpm,
        "memory_key_padding_mask": m_kpm,
        "tgt_is_causal": causal,
        "batch_first": shared.batch_first,
    }


def layer_inputs(
    component: str,
    dtype: str,
    *,
    masks: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    batch_first: bool | None = None,
    min_heads: int = 1,
    odd_heads: bool = True,
    self_attention: bool | None = None,
    min_len: int = 1,
    memory_masks: Sequence[str] | None = None,
) -> st.SearchStrategy[Args]:
    """Arguments of one layer component (see the module docstring): the sizes, layout and
    mask encoding every layer shares, then the block's own arguments (its record's ``"draw"``
    hook).

    ``masks``: kinds for the self-attention masks (MHA, encoder, decoder target);
    ``memory_masks``: kinds for the decoder's memory masks; ``self_attention``: MHA with
    query = key = value (True), distinct inputs (False) or both (None).
    """
    canonical_dtype(dtype)
    record = components.get(component)
    if record.family.name != "layers":
        raise ValueError(f"unknown layer component {component!r}")
    kinds = _choice(masks, LAYER_MASKS, "masks")
    mem_kinds = _choice(memory_masks, LAYER_MASKS, "memory_masks")
    acts = _choice(activations, ACTIVATIONS, "activations")
    if not 1 <= min_heads <= 4:
        raise ValueError("min_heads must be in 1..4")
    block = record.hook("draw")
    sizes = _sizes(min_heads=min_heads, odd_heads=odd_heads)

    @st.composite
    def draw(d: st.DrawFn) -> Args:
        heads, e = d(sizes)
        rng = np.random.default_rng(d(st.integers(0, 2**32 - 1)))
        batch = d(st.integers(1, 3))
        length = d(st.integers(min_len, 16))
        bf = d(st.booleans()) if batch_first is None else batch_first
        as_float = d(st.booleans())
        shared = LayerDraw(
            heads=heads,
            e=e,
            rng=rng,
            batch=batch,
            length=length,
            batch_first=bf,
            as_float=as_float,
            masks=kinds,
            memory_masks=mem_kinds,
            activations=acts,
            self_attention=self_attention,
        )
        drawn: Args = block(d, shared)
        return drawn

    return draw()
