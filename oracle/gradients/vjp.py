r"""The vector-Jacobian products of the kernels, written once over a math namespace ``xp``.

``xp`` is NumPy (float64) or the mpmath namespace of :mod:`transpec.oracle.kernels.highprec`
(object arrays of ``mpmath.mpf``): the formulas use arithmetic, ``xp.sum``, ``xp.matmul``,
``xp.swapaxes``, ``xp.sqrt``, ``xp.tanh`` and ``xp.where`` only, so the float64 reference and the
high-precision one are the same code. Each closed form is proved from the block's SymPy
definition in :mod:`transpec.spec.backward`; ``g`` is the cotangent (the gradient of the loss
with respect to the block's output).

===========  ==========================================================================
softmax      :math:`\bar x = p \circ (g - \langle g, p\rangle)`
attention    :math:`\bar V = P^\top \bar O,\ \bar P = \bar O V^\top,\
             D = \operatorname{rowsum}(\bar O \circ O),\ \bar T = P \circ (\bar P - D)`,
             :math:`\bar A = \bar T` on visible keys (the additive mask),
             :math:`\bar S = \bar T \circ (1 - \tanh^2(S/c))` (softcap),
             :math:`\bar Q = \alpha \bar S K,\ \bar K = \alpha \bar S^\top Q`, summed over the
             query heads of a kv head (GQA) and over broadcast dims
layer_norm   :math:`\bar x = \frac1\sigma(\hat g - \overline{\hat g} - \kappa\,\hat y\,
             \tfrac1d\textstyle\sum \hat g \hat y)`, :math:`\hat g = g \circ w`,
             :math:`\bar w = \sum_{rows} g \circ \hat y`, :math:`\bar b = \sum_{rows} g`
rms_norm     :math:`\bar x = \frac1r(\hat g - \kappa\,\hat y\,\tfrac1n\textstyle\sum \hat g
             \hat y)`, :math:`\bar w = \sum_{rows} g \circ \hat y`
===========  ==========================================================================

(:math:`d` is the variance's divisor, n or n - 1; :math:`\kappa = 1` with eps inside the square
root, :math:`\sigma / \sqrt{var}` (:math:`r / \operatorname{rms}`) with eps added to it.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def reduce_to(x: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``x`` over the dims that broadcasting ``shape`` to ``x.shape`` added or stretched:
    the gradient of an input that was broadcast."""
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    if lead:
        x = np.sum(x, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if stretched:
        x = np.sum(x, axis=stretched, keepdims=True)
    return x


def softmax_vjp(p: Array, g: Array, *, xp: Any = np) -> Array:
    """x̄ = p ∘ (g − ⟨g, p⟩) over the last axis."""
    d = xp.sum(g * p, axis=-1, keepdims=True)
    return p * (g - d)


def group_sum(x: Array, kv_heads: int, mapping: str) -> Array:
    """Gradients of the Hq expanded kv heads (axis -3) summed into the ``kv_heads`` heads they
    were copied from: query head h read kv head h // G ("interleave") or h % Hkv ("tile")."""
    hq = x.shape[-3]
    if hq == kv_heads:
        return x
    groups = hq // kv_heads
    lead = x.shape[:-3]
    if mapping == "interleave":
        return np.sum(x.reshape((*lead, kv_heads, groups, *x.shape[-2:])), axis=-3)
    return np.sum(x.reshape((*lead, groups, kv_heads, *x.shape[-2:])), axis=-4)


def attention_vjp(
    q: Array,
    k: Array,
    v: Array,
    p: Array,
    g: Array,
    *,
    scale: Any,
    softcap: float | None,
    visible: np.ndarray,
    fill: float | None,
    xp: Any = np,
) -> dict[str, Array]:
    """The gradients of attention with K/V already expanded to the query heads.

    ``p`` are the weights the forward used (0 on masked keys and on fully masked rows of the
    zero convention, NaN on those of the NaN convention); ``visible`` the keys not replaced by
    the mask (a replaced score is the constant fill: no gradient reaches q, k or the additive
    mask through it). Returns ``dq``, ``dk``, ``dv`` (expanded heads, broadcast batch dims) and
    ``dt``, the gradient of the masked scores T = S + A (the additive mask's gradient).
    """
    o = xp.matmul(p, v)
    dv = xp.matmul(xp.swapaxes(p, -1, -2), g)
    dp = xp.matmul(g, xp.swapaxes(v, -1, -2))
    d = xp.sum(g * o, axis=-1, keepdims=True)
    dt = p * (dp - d)
    if fill is not None:
        dt = xp.where(visible, dt, 0.0)
    ds = dt
    if softcap is not None:
        raw = xp.matmul(q, xp.swapaxes(k, -1, -2)) * scale
        t = xp.tanh(raw / softcap)
        ds = dt * (1 - t * t)
    dq = xp.matmul(ds, k) * scale
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), q) * scale
    return {"dq": dq, "dk": dk, "dv": dv, "dt": dt}


def layer_norm_vjp(
    x: Array,
    n_axes: int,
    weight: Array | None,
    eps: float,
    g: Array,
    *,
    unbiased: bool = False,
    eps_inside_sqrt: bool = True,
    xp: Any = np,
) -> dict[str, Array]:
    """x̄, w̄ and b̄ of y = (x − μ)/σ · w + b over the trailing ``n_axes`` axes."""
    axes = tuple(range(-n_axes, 0))
    lead = tuple(range(x.ndim - n_axes))
    n = int(np.prod(x.shape[x.ndim - n_axes :]))
    divisor = n - 1 if unbiased else n
    mu = xp.sum(x, axis=axes, keepdims=True) / n
    c = x - mu
    var = xp.sum(c * c, axis=axes, keepdims=True) / divisor
    if eps_inside_sqrt:
        sigma = xp.sqrt(var + eps)
        kappa: Any = 1
    else:
        sd = xp.sqrt(var)
        sigma = sd + eps
        kappa = sigma / sd
    yhat = c / sigma
    gh = g if weight is None else g * weight
    m1 = xp.sum(gh, axis=axes, keepdims=True) / n
    m2 = xp.sum(gh * yhat, axis=axes, keepdims=True) / divisor
    dx = (gh - m1 - yhat * kappa * m2) / sigma
    return {
        "x": dx,
        "weight": xp.sum(g * yhat, axis=lead) if lead else g * yhat,
        "bias": xp.sum(g, axis=lead) if lead else g,
    }


def rms_norm_vjp(
    x: Array,
    n_axes: int,
    weight: Array | None,
    eps: float,
    g: Array,
    *,
    eps_inside_sqrt: bool = True,
    one_plus_weight: bool = False,
    xp: Any = np,
) -> dict[str, Array]:
    """x̄ and w̄ of y = x / r · w' over the trailing ``n_axes`` axes (w' = w or 1 + w)."""
    axes = tuple(range(-n_axes, 0))
    lead = tuple(range(x.ndim - n_axes))
    n = int(np.prod(x.shape[x.ndim - n_axes :]))
    ms = xp.sum(x * x, axis=axes, keepdims=True) / n
    if eps_inside_sqrt:
        r = xp.sqrt(ms + eps)
        kappa: Any = 1
    else:
        rms = xp.sqrt(ms)
        r = rms + eps
        kappa = r / rms
    yhat = x / r
    w_eff = None if weight is None else (1 + weight) if one_plus_weight else weight
    gh = g if w_eff is None else g * w_eff
    m2 = xp.sum(gh * yhat, axis=axes, keepdims=True) / n
    dx = (gh - yhat * kappa * m2) / r
    return {"x": dx, "weight": xp.sum(g * yhat, axis=lead) if lead else g * yhat}
