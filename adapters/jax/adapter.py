"""JAX as an implementation under test: ``jax.nn.softmax`` and ``jax.nn.dot_product_attention``.

Called as JAX's users call them, eagerly, on ``jax.Array`` inputs from the JAX array base
(:class:`~transpec.adapters.jax.arrays.JaxArrays`: float64 through x64, bfloat16 through
ml_dtypes). ``dot_product_attention`` takes (B, L, H, E) arrays: the adapter maps transpec's
(B, H, L, E) to it with ``jnp.swapaxes`` and back, and passes a boolean mask as ``mask`` (True =
attend) and an additive one as ``bias``.

What JAX computes, measured on jax 0.10.2, CPU (docs/findings.md), and declared:

* XLA on the CPU flushes float64 and float32 subnormal results to zero
  (``flush_subnormals=("float64", "float32")``);
* ``dot_product_attention`` replaces masked scores by a large finite negative number
  (-0.7 · finfo(dtype).max), so a query whose every key is masked gets the mean of the value
  rows (a finite ``mask_fill``; the value declared is that of float16, the least negative, which
  gives the same reference wherever a score is not itself below it: a per-dtype fill is what the
  declaration means);
* ``jax.nn.softmax`` in float16 and bfloat16 computes x - max, exp and the division in the
  input dtype and its sum in float32 (``Precision("float32", dtype, elementwise=dtype)``, the
  element-wise knob of docs/tolerance.md §2.7);
* ``dot_product_attention`` in float16 and bfloat16 is computed op by op, each intermediate
  rounded to the input dtype (``Precision(dtype, dtype)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.adapters.base import Precision
from transpec.adapters.jax.arrays import JaxArrays, jax_module
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

#: the fill ``jax.nn.dot_product_attention`` puts in masked scores, for float16
_FLOAT16_FILL = -0.7 * float(np.finfo(np.float16).max)


class JaxAdapter(JaxArrays):
    """``jax.nn.softmax`` and ``jax.nn.dot_product_attention`` (the XLA implementation): see the
    module docstring for what is declared and why."""

    name = "jax"
    conventions = Conventions(flush_subnormals=("float64", "float32"), mask_fill=_FLOAT16_FILL)

    def precision(self, component: str, dtype: str) -> Precision:
        """(dtype, dtype): XLA's CPU ops round every intermediate to the input dtype; except
        the sum of softmax in float16/bfloat16, which jax.nn.softmax runs in float32."""
        dtype = canonical_dtype(dtype)
        if component == "softmax" and dtype in ("float16", "bfloat16"):
            return Precision(accumulate="float32", store=dtype, elementwise=dtype)
        return Precision(accumulate=dtype, store=dtype)

    def provides(self, component: str) -> bool:
        return component in ("softmax", "attention")

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """``dot_product_attention`` takes 3-D or 4-D (B, L, H, E) inputs with one head dim for
        Q, K and V: other ranks and Ev != E are not passed."""
        if component != "attention":
            return None
        q, v = args.get("q"), args.get("v")
        if q is not None and np.ndim(q) != 4:
            return "jax.nn.dot_product_attention takes 4-D (B, L, H, E) inputs here"
        if q is not None and v is not None and np.shape(q)[-1] != np.shape(v)[-1]:
            return "jax.nn.dot_product_attention needs the value head dim equal to E"
        return None

    def softmax(self, x: Any, dim: int = -1) -> Any:
        """``jax.nn.softmax(x, axis=dim)``."""
        return jax_module().nn.softmax(x, axis=dim)

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        """``jax.nn.dot_product_attention`` on (B, L, H, E) views of the (B, H, L, E) inputs."""
        jax = jax_module()
        jnp = jax.numpy
        mask = bias = None
        if attn_mask is not None:
            if attn_mask.dtype == jnp.bool_:
                mask = attn_mask
            else:
                bias = attn_mask
        out = jax.nn.dot_product_attention(
            jnp.swapaxes(q, -3, -2),
            jnp.swapaxes(k, -3, -2),
            jnp.swapaxes(v, -3, -2),
            bias=bias,
            mask=mask,
            scale=scale,
            is_causal=bool(is_causal),
        )
        return jnp.swapaxes(out, -3, -2)
