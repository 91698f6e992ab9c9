"""Numeric kernels of the building blocks (float64 or high precision).

GENERATED from transpec.spec (spec/blocks.py, spec/nodes.py); do not edit by hand.
Regenerate with ``python -m transpec.spec.codegen``; a test checks this file is in sync.

Every kernel takes ``xp``, a math namespace (NumPy for float64, the mpmath namespace of
:mod:`transpec.oracle.kernels.highprec` for object arrays of ``mpmath.mpf``), calls only ``xp.max``,
``xp.sum``, ``xp.exp``, ``xp.log``, ``xp.sqrt``, ``xp.tanh``, ``xp.where``, ``xp.isneginf``,
``xp.matmul``, ``xp.swapaxes`` and arithmetic on values, and works on any leading batch/head
dimensions. Index bookkeeping (reduction axes, kv heads, the causal mask) uses NumPy directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transpec.spec.conventions import CANONICAL, Conventions

Array = Any


def softmax(x: Array, *, xp: Any = np) -> Array:
    r"""Row softmax over the last axis: softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m).

    m is the row maximum (0 for a row that is entirely -inf), so every exponent is <= 0;
    the shift cancels exactly. A row that is entirely -inf gives NaN (0/0); policies for
    such rows live in the reference.

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{softmax}\left(X\right)
    """
    m = xp.max(x, axis=-1, keepdims=True)
    shift = xp.where(xp.isneginf(m), 0.0, m)
    e = xp.exp(x - shift)
    return e / xp.sum(e, axis=-1, keepdims=True)


def logsumexp(x: Array, *, xp: Any = np) -> Array:
    r"""log sum_j exp(x_j) = m + log sum_j exp(x_j - m) over the last axis, which it drops.

    m is the row maximum (0 for an all -inf row, whose result is -inf).

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{logsumexp}\left(X\right)
    """
    m = xp.max(x, axis=-1, keepdims=True)
    shift = xp.where(xp.isneginf(m), 0.0, m)
    total = xp.sum(xp.exp(x - shift), axis=-1, keepdims=True)
    return (shift + xp.log(total))[..., 0]


def attention_scores(
    q: Array,
    k: Array,
    scale: float,
    softcap: float | None,
    *,
    xp: Any = np,
) -> Array:
    r"""S = scale * Q K^T, then softcap * tanh(S / softcap) when a softcap is given.

    Shapes: q (..., Lq, E), k (..., Lk, E) -> (..., Lq, Lk).

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{softcap}_{c}\left(\alpha Q K^{T}\right)
    """
    s = scale * xp.matmul(q, xp.swapaxes(k, -1, -2))
    if softcap is not None:
        s = softcap * xp.tanh(s / softcap)
    return s


def attention(
    q: Array,
    k: Array,
    v: Array,
    bias: Array | None,
    scale: float,
    softcap: float | None = None,
    *,
    xp: Any = np,
) -> tuple[Array, Array]:
    r"""O = softmax(S + B) V with S from :func:`attention_scores`; returns (O, P).

    ``bias`` broadcasts to the score shape (..., Lq, Lk) and holds 0 / -inf (or finite
    values). Shapes: q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev) -> (..., Lq, Ev).
    A row whose biased scores are all -inf gives NaN (see :func:`softmax`).

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{softmax}\left(B + \operatorname{softcap}_{c}\left(\alpha Q
        K^{T}\right)\right) V
    """
    s = scale * xp.matmul(q, xp.swapaxes(k, -1, -2))
    if softcap is not None:
        s = softcap * xp.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    m = xp.max(s, axis=-1, keepdims=True)
    shift = xp.where(xp.isneginf(m), 0.0, m)
    e = xp.exp(s - shift)
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return xp.matmul(p, v), p


def layer_norm(
    x: Array,
    n_axes: int,
    weight: Array | None,
    bias: Array | None,
    eps: float,
    *,
    unbiased: bool = False,
    eps_inside_sqrt: bool = True,
    xp: Any = np,
) -> Array:
    r"""y = (x - mu) / sqrt(var + eps) * w + b over the trailing ``n_axes`` axes.

    mu and var are the mean and the variance over those axes (n elements); ``unbiased``
    divides the sum of squares by n - 1 instead of n; ``eps_inside_sqrt=False`` computes
    (x - mu) / (sqrt(var) + eps). The mean is subtracted before squaring (two passes).

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{LN}_{\epsilon}\left(X\right) \odot \gamma + \mathbf{1} \beta
    """
    axes = tuple(range(-n_axes, 0))
    n = 1
    for a in axes:
        n *= x.shape[a]
    mu = xp.sum(x, axis=axes, keepdims=True) / n
    d = x - mu
    ss = xp.sum(d * d, axis=axes, keepdims=True)
    var = ss / (n - 1 if unbiased else n)
    denom = xp.sqrt(var + eps) if eps_inside_sqrt else xp.sqrt(var) + eps
    y = d / denom
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm(
    x: Array,
    n_axes: int,
    weight: Array | None,
    eps: float,
    *,
    eps_inside_sqrt: bool = True,
    one_plus_weight: bool = False,
    xp: Any = np,
) -> Array:
    r"""y = x / sqrt(mean(x^2) + eps) * w over the trailing ``n_axes`` axes.

    ``eps_inside_sqrt=False`` computes x / (sqrt(mean(x^2)) + eps); ``one_plus_weight``
    multiplies by (1 + w) (Gemma) instead of w.

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{RMS}_{\epsilon}\left(X\right) \odot \tilde{\gamma}
    """
    axes = tuple(range(-n_axes, 0))
    n = 1
    for a in axes:
        n *= x.shape[a]
    ms = xp.sum(x * x, axis=axes, keepdims=True) / n
    denom = xp.sqrt(ms + eps) if eps_inside_sqrt else xp.sqrt(ms) + eps
    y = x / denom
    if weight is not None:
        y = y * (1 + weight if one_plus_weight else weight)
    return y


def kv_heads(hq: int, hkv: int, mapping: str = "interleave") -> np.ndarray:
    """The kv head each query head reads: h // (hq // hkv) ('interleave', repeat_interleave)
    or h % hkv ('tile').
    """
    if hkv <= 0 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of kv heads ({hkv})")
    if mapping == "interleave":
        return np.arange(hq) // (hq // hkv)
    if mapping == "tile":
        return np.arange(hq) % hkv
    raise ValueError(f"gqa mapping {mapping!r} is not 'interleave' or 'tile'")


def sdpa(
    q: Array,
    k: Array,
    v: Array,
    attn_mask: Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    softcap: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
    xp: Any = np,
) -> tuple[Array, Array]:
    r"""Scaled dot-product attention with every convention of :class:`Conventions`.

    Returns (O, P). q (..., Hq, Lq, E), k (..., Hkv, Lk, E), v (..., Hkv, Lk, Ev); Hq a
    multiple of Hkv (query head h reads kv head h // (Hq / Hkv), or h % Hkv under
    ``gqa_mapping='tile'``). scale None means 1 / sqrt(E). The softcap applies to the
    scaled scores, before the mask. A boolean ``attn_mask`` keeps True (or ignores True
    under ``bool_mask='ignore'``); a float mask is added. Masked scores (boolean or
    causal, top-left or bottom-right aligned) are -inf, or replaced by ``mask_fill`` (or
    it is added to them, ``mask_fill_mode='add'``).
    A query row whose scores are all -inf outputs 0 (``fully_masked_row='zero'``) or NaN.

    Definition (LaTeX, from transpec.spec.blocks):

        \operatorname{softmax}\left(\operatorname{mask}_{M,\,f}\left(\operatorname{softcap}_
        {c}\left(\alpha Q K^{T}\right)\right) + B\right) V
    """
    lq, lk = q.shape[-2], k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if q.ndim >= 3 and k.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        heads = kv_heads(q.shape[-3], k.shape[-3], conventions.gqa_mapping)
        k = k[..., heads, :, :]
        v = v[..., heads, :, :]
    keep = None
    bias = None
    if attn_mask is not None and attn_mask.dtype == bool:
        keep = attn_mask if conventions.bool_mask == "keep" else ~attn_mask
    elif attn_mask is not None:
        bias = attn_mask
    if is_causal:
        bottom_right = conventions.causal_offset(lq, lk) != 0
        offset = lk - lq if bottom_right else 0
        causal = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + offset
        keep = causal if keep is None else keep & causal
    # an added fill (mask_fill_mode='add'): the masked keys' fill joins the additive
    # mask and no key is hidden
    if conventions.mask_fill is not None and conventions.mask_fill_mode == "add":
        if keep is not None:
            added = np.where(keep, 0.0, float(conventions.mask_fill))
            bias = added if bias is None else added + bias
        keep = None
    fill = float("-inf") if conventions.mask_fill is None else conventions.mask_fill
    s = scale * xp.matmul(q, xp.swapaxes(k, -1, -2))
    if softcap is not None:
        s = softcap * xp.tanh(s / softcap)
    if keep is not None:
        s = xp.where(keep, s, fill)
    if bias is not None:
        s = s + bias
    # rows with no key to attend to: 0 or NaN per the convention, never 0/0
    dead = xp.isneginf(xp.max(s, axis=-1, keepdims=True))
    s = xp.where(dead, 0.0, s)
    m = xp.max(s, axis=-1, keepdims=True)
    shift = xp.where(xp.isneginf(m), 0.0, m)
    e = xp.exp(s - shift)
    p = e / xp.sum(e, axis=-1, keepdims=True)
    dead_value = 0.0 if conventions.fully_masked_row == "zero" else float("nan")
    p = xp.where(dead, dead_value, p)
    return xp.matmul(p, v), p
