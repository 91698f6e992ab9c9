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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

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
    """Arguments of one layer component (see the module docstring).

    ``masks``: kinds for the self-attention masks (MHA, encoder, decoder target);
    ``memory_masks``: kinds for the decoder's memory masks; ``self_attention``: MHA with
    query = key = value (True), distinct inputs (False) or both (None).
    """
    canonical_dtype(dtype)
    if component not in (
        "multi_head_attention",
        "multi_head_attention_weights",
        "feed_forward",
        "encoder_layer",
        "decoder_layer",
    ):
        raise ValueError(f"unknown layer component {component!r}")
    kinds = _choice(masks, LAYER_MASKS, "masks")
    mem_kinds = _choice(memory_masks, LAYER_MASKS, "memory_masks")
    acts = _choice(activations, ACTIVATIONS, "activations")
    if not 1 <= min_heads <= 4:
        raise ValueError("min_heads must be in 1..4")

    @st.composite
    def draw(d: st.DrawFn) -> Args:
        heads, e = d(_sizes(min_heads=min_heads, odd_heads=odd_heads))
        rng = np.random.default_rng(d(st.integers(0, 2**32 - 1)))
        batch = d(st.integers(1, 3))
        length = d(st.integers(min_len, 16))
        bf = d(st.booleans()) if batch_first is None else batch_first
        as_float = d(st.booleans())

        def seq(n: int, width: int = e) -> np.ndarray:
            x = rng.standard_normal((batch, n, width))
            return x if bf else np.ascontiguousarray(x.transpose(1, 0, 2))

        if component == "feed_forward":
            f = d(st.integers(1, 64))
            shape = d(st.sampled_from([(length, e), (batch, length, e)]))
            return {
                "x": rng.standard_normal(shape),
                "params": ParamDict(ffn_params(rng, e, f)),
                "activation": d(st.sampled_from(acts)),
            }
        kind = d(st.sampled_from(kinds))
        if component in ("multi_head_attention", "multi_head_attention_weights"):
            selfish = d(st.booleans()) if self_attention is None else self_attention
            lk = length if selfish else d(st.integers(1, 16))
            if kind == "causal" and lk != length:
                lk = length
            # distinct key/value inputs may have their own widths (kdim, vdim != embed_dim)
            kdim = vdim = e
            if not selfish and d(st.booleans()):
                kdim, vdim = d(st.integers(1, 16)), d(st.integers(1, 16))
                if kdim == vdim == e:
                    kdim = e + 1
            q = seq(length)
            k = q if selfish else seq(lk, kdim)
            v = q if selfish else seq(lk, vdim)
            attn, kpm, causal = _mask(rng, kind, batch, length, lk, as_float)
            separate = (kdim, vdim) != (e, e)
            params = mha_params_kv(rng, e, kdim, vdim) if separate else mha_params(rng, e)
            drawn = {
                "query": q,
                "key": k,
                "value": v,
                "params": ParamDict(params),
                "num_heads": heads,
                "key_padding_mask": kpm,
                "attn_mask": attn,
                "is_causal": causal,
                "batch_first": bf,
            }
            if component == "multi_head_attention_weights":
                drawn["average_attn_weights"] = d(st.booleans())
            return drawn
        f = d(st.integers(1, 64))
        act = d(st.sampled_from(acts))
        norm_first = d(st.booleans())
        eps = d(st.sampled_from([1e-5, 1e-6]))
        if component == "encoder_layer":
            attn, kpm, causal = _mask(rng, kind, batch, length, length, as_float)
            params = {
                **mha_params(rng, e, "self_attn."),
                **ffn_params(rng, e, f),
                **norm_params(rng, e, "norm1"),
                **norm_params(rng, e, "norm2"),
            }
            return {
                "src": seq(length),
                "params": ParamDict(params),
                "nhead": heads,
                "norm_first": norm_first,
                "activation": act,
                "layer_norm_eps": eps,
                "src_mask": attn,
                "src_key_padding_mask": kpm,
                "is_causal": causal,
                "batch_first": bf,
            }
        ls = d(st.integers(1, 16))
        mem_kind = d(st.sampled_from(mem_kinds))
        attn, kpm, causal = _mask(rng, kind, batch, length, length, as_float)
        m_attn, m_kpm, _ = _mask(
            rng, mem_kind if mem_kind != "causal" else "none", batch, length, ls, as_float
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
            "tgt": seq(length),
            "memory": seq(ls),
            "params": ParamDict(params),
            "nhead": heads,
            "norm_first": norm_first,
            "activation": act,
            "layer_norm_eps": eps,
            "tgt_mask": attn,
            "memory_mask": m_attn,
            "tgt_key_padding_mask": kpm,
            "memory_key_padding_mask": m_kpm,
            "tgt_is_causal": causal,
            "batch_first": bf,
        }

    return draw()
