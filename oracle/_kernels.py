"""Numeric kernels of the building blocks (float64 or high precision).

Interface placeholder: these signatures are the contract between the spec's code generator and
the oracle's reference. Every kernel takes ``xp``, a math namespace (NumPy for float64, the
mpmath namespace of :mod:`transpec.oracle.highprec` for object arrays of ``mpmath.mpf``), and
works on any leading batch/head dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def softmax(x: Array, *, xp: Any = np) -> Array:
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), m = max_j x_j, over the last axis.

    A row that is entirely -inf gives NaN (0/0); policies for such rows live in the reference.
    """
    m = xp.max(x, axis=-1, keepdims=True)
    m = xp.where(xp.isneginf(m), 0.0, m)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=-1, keepdims=True)


def logsumexp(x: Array, *, xp: Any = np) -> Array:
    """log sum_j exp(x_j) = m + log sum_j exp(x_j - m) over the last axis (-inf for empty rows)."""
    m = xp.max(x, axis=-1, keepdims=True)
    m = xp.where(xp.isneginf(m), 0.0, m)
    s = xp.sum(xp.exp(x - m), axis=-1, keepdims=True)
    return (m + xp.log(s))[..., 0]


def attention_scores(
    q: Array, k: Array, scale: float, softcap: float | None, *, xp: Any = np
) -> Array:
    """S = scale * Q K^T, then softcap * tanh(S / softcap) when a softcap is given."""
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
    """O = softmax(S + B) V with S from :func:`attention_scores`; returns (O, P).

    ``bias`` broadcasts to the score shape and holds 0 / -inf (or finite values).
    """
    s = attention_scores(q, k, scale, softcap, xp=xp)
    if bias is not None:
        s = s + bias
    p = softmax(s, xp=xp)
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
    """y = (x - mu) / sqrt(var + eps) * w + b over the trailing ``n_axes`` axes.

    ``unbiased`` divides the sum of squares by n - 1; ``eps_inside_sqrt=False`` computes
    (x - mu) / (sqrt(var) + eps).
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
    """y = x / sqrt(mean(x^2) + eps) * w over the trailing ``n_axes`` axes."""
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
