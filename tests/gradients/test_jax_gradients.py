"""JAX backward passes are judged through ``jax.vjp`` of the forward call: a ``jax.custom_vjp``
attention kernel is judged by its own backward rule, as its users run it (killed when the rule
is wrong, passing when it is right), and the built-in jax adapter's softmax and attention
backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from transpec.adapters.base import FunctionAdapter  # noqa: E402

jnp = jax.numpy


def _custom_vjp_attention(with_d_term: bool) -> Callable[..., Any]:
    """softmax(α Q Kᵀ + B) V as a ``jax.custom_vjp`` kernel whose backward is written by hand:
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − D), D = rowsum(dO ∘ O) (left out when
    ``with_d_term`` is False: the classic wrong FlashAttention backward), dQ = α dS K,
    dK = α dSᵀ Q, dB = dS."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
    def core(q: Any, k: Any, v: Any, bias: Any, scale: float) -> Any:
        return _forward(q, k, v, bias, scale)[0]

    def _forward(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
        s = scale * q @ jnp.swapaxes(k, -1, -2) + bias
        m = jnp.max(s, axis=-1, keepdims=True)
        m = jnp.where(jnp.isneginf(m), 0, m)
        e = jnp.exp(s - m)
        total = jnp.sum(e, axis=-1, keepdims=True)
        p = e / jnp.where(total == 0, 1, total)  # fully masked rows: weights 0
        return p @ v, p

    def fwd(q: Any, k: Any, v: Any, bias: Any, scale: float) -> tuple[Any, Any]:
        o, p = _forward(q, k, v, bias, scale)
        return o, (q, k, v, p, o)

    def bwd(scale: float, saved: Any, g: Any) -> tuple[Any, ...]:
        q, k, v, p, o = saved
        dv = jnp.swapaxes(p, -1, -2) @ g
        dp = g @ jnp.swapaxes(v, -1, -2)
        d = jnp.sum(g * o, axis=-1, keepdims=True) if with_d_term else 0
        ds = p * (dp - d)
        return scale * ds @ k, scale * jnp.swapaxes(ds, -1, -2) @ q, dv, ds

    core.defvjp(fwd, bwd)

    def attention(
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        group = q.shape[-3] // k.shape[-3] if q.ndim >= 3 else 1
        if group > 1:
            k, v = jnp.repeat(k, group, axis=-3), jnp.repeat(v, group, axis=-3)
        lq, lk = q.shape[-2], k.shape[-2]
        bias = jnp.zeros((lq, lk), dtype=q.dtype)
        if is_causal:
            bias = jnp.where(jnp.tril(jnp.ones((lq, lk), dtype=bool)), bias, -jnp.inf)
        if attn_mask is not None:
            if attn_mask.dtype == jnp.bool_:
                bias = jnp.where(attn_mask, bias, -jnp.inf)
            else:
                bias = bias + attn_mask
        bias = jnp.broadcast_to(bias, (*q.shape[:-1], lk))
        alpha = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
        return core(q, k, v, bias.astype(q.dtype), alpha)

    return attention


def _adapter(with_d_term: bool) -> FunctionAdapter:
    return FunctionAdapter(
        _custom_vjp_attention(with_d_term),
        component="attention",
        base="jax",
        dtypes=("float64", "float32"),
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["grad_equivalence_q", "grad_equivalence_k", "grad_equivalence_v"])
def test_a_right_custom_vjp_kernel_passes(
    name: str, dtype: str, accepts: Callable[..., float]
) -> None:
    assert accepts("attention", name, _adapter(with_d_term=True), dtype, 8) <= 1.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_custom_vjp_kernel_without_the_d_term_is_killed(
    dtype: str, rejects: Callable[..., BaseException]
) -> None:
    failure = rejects("attention", "grad_equivalence_q", _adapter(with_d_term=False), dtype, 20)
    assert "gradient of q" in str(failure)


@pytest.mark.parametrize("component", ["softmax", "attention"])
def test_the_jax_adapter_backward_passes(component: str, accepts: Callable[..., float]) -> None:
    """jax.nn.softmax and jax.nn.dot_product_attention differentiated by jax.vjp, float32."""
    from transpec.adapters.jax.adapter import JaxAdapter

    name = "grad_equivalence_x" if component == "softmax" else "grad_equivalence_q"
    assert accepts(component, name, JaxAdapter(), "float32", 6) <= 1.0
