"""JAX as an implementation under test: ``jax.nn.softmax``, ``jax.nn.dot_product_attention``
and Flax NNX's ``LayerNorm`` and ``RMSNorm`` (:mod:`transpec.adapters.jax.flax_modules`) and
``MultiHeadAttention`` (:mod:`transpec.adapters.jax.flax_attention`), in the built-in ``jax``
adapter; Flax's ``MultiHeadAttention`` on its other path (``sow_weights=True``) with the
attention weights, in the built-in ``flax-weights`` adapter (:class:`FlaxWeightsAdapter`).

Called as JAX's users call them, eagerly, on ``jax.Array`` inputs from the JAX array base
(:class:`~transpec.adapters.jax.arrays.JaxArrays`: float64 through x64, bfloat16 through
ml_dtypes). ``dot_product_attention`` takes (B, L, H, E) arrays: the adapter maps transpec's
(B, H, L, E) to it and back (on the host, see below), and passes a boolean mask as ``mask`` (True =
attend) and an additive one as ``bias``.

What JAX computes, measured on jax 0.10.2, CPU (docs/findings.md), and declared:

* XLA on the CPU flushes float64 and float32 subnormal results to zero
  (``flush_subnormals=("float64", "float32")``);
* ``dot_product_attention`` replaces the scores of masked keys (boolean ``mask``,
  ``is_causal``) by -0.7 times float32's largest number: the fill is taken in the dtype of the
  logits, which are never narrower than float32 (``promote_types(dtype, float32)``), and capped
  at float32's range (``_get_large_negative``), so it is float32(-0.7·finfo(float32).max) =
  -2.381976325057654e38 in every dtype (``mask_fill``, one value for all dtypes). A query whose
  every key is masked this way gets the mean of the value rows;
* a query whose every score is -inf (an additive ``bias`` of -inf on each key) gets NaN: the
  softmax computes exp(x - max) with max = -inf (``fully_masked_row="nan"``, the 0/0 of a
  softmax that does not guard it);
* ``jax.nn.softmax`` in float16 and bfloat16 computes x - max, exp and the division in the
  input dtype and its sum in float32 (``Precision("float32", dtype, elementwise=dtype)``, the
  element-wise knob of docs/tolerance.md §2.7);
* ``dot_product_attention`` in float16 and bfloat16 computes the logits and the softmax in
  float32 (``preferred_element_type=float32``, then ``astype(float32)``), rounds the
  probabilities to the input dtype and multiplies them by V with float32 sums (XLA's CPU dot
  on half inputs): float32 math with intermediates stored in the input dtype, the default
  ``Precision("float32", dtype)``. In float64 its softmax is float32 too: not declared (a
  defect, docs/findings.md).

The library is called eagerly, op by op, as its documentation's examples call it: ``jax.nn``
keeps ``softmax`` un-jitted on purpose (jitting it changed numerics), and a jitted
``dot_product_attention`` computes other bits than the eager one (XLA fuses the vmapped ops) and
fails to compile in float16 on the CPU (docs/findings.md). Eager dispatch compiles one XLA
executable per primitive and new shape (about 13 per attention call): that compilation is
almost all of the run's time, so the layout swap (B, H, L, E) <-> (B, L, H, E), which is exact,
is done on the host, and the JAX array base keeps compiled executables in JAX's persistent
compilation cache (:func:`~transpec.adapters.jax.arrays.jax_module`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.adapters.base import Precision
from transpec.adapters.jax.arrays import JaxArrays, jax_module
from transpec.adapters.jax.flax_attention import (
    FLAX_ATTENTION_COMPONENTS,
    FlaxMultiHeadAttention,
    FlaxSownWeights,
    flax_mha_support,
)
from transpec.adapters.jax.flax_modules import (
    FLAX_COMPONENTS,
    FlaxNorms,
    flax_available,
    nnx_module,
)
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

#: the fill ``jax.nn.dot_product_attention`` puts in masked scores, in every dtype: -0.7 times
#: float32's largest number, computed in float32 (``jax._src.nn.functions._get_large_negative``)
MASK_FILL = float(np.float32(-0.7) * np.finfo(np.float32).max)


class JaxAdapter(FlaxNorms, FlaxMultiHeadAttention, JaxArrays):
    """``jax.nn.softmax`` and ``jax.nn.dot_product_attention`` (the XLA implementation), and
    Flax NNX's norms and ``MultiHeadAttention`` when flax is installed: see the module
    docstrings for what is declared and why. Flax's attention module, called with
    ``dropout_rate=0``, runs ``jax.nn.dot_product_attention``: the declarations of the
    attention hold for it unchanged."""

    name = "jax"
    conventions = Conventions(
        flush_subnormals=("float64", "float32"),
        mask_fill=MASK_FILL,
        fully_masked_row="nan",
        # flax.nnx.LayerNorm / RMSNorm (flax_modules)
        layer_norm_variance_algorithm="one_pass",
        rms_norm_default_eps=1e-6,
    )

    def precision(self, component: str, dtype: str) -> Precision:
        """``jax.nn.softmax`` in float16/bfloat16: element-wise math in the input dtype, its sum
        in float32; everything else: the default (float32 math, intermediates stored in the
        input dtype, for half inputs; the input dtype otherwise)."""
        dtype = canonical_dtype(dtype)
        if component == "softmax" and dtype in ("float16", "bfloat16"):
            return Precision(accumulate="float32", store=dtype, elementwise=dtype)
        return super().precision(component, dtype)

    def provides(self, component: str) -> bool:
        if component in FLAX_COMPONENTS + FLAX_ATTENTION_COMPONENTS:
            return flax_available()
        return component in ("softmax", "attention")

    def describe(self) -> str:
        text = super().describe()
        if flax_available():
            import flax

            text = text.replace("; devices", f", flax {flax.__version__}; devices", 1)
        return text

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """``dot_product_attention`` takes 3-D or 4-D (B, L, H, E) inputs with one head dim for
        Q, K and V: other ranks and Ev != E are not passed; for Flax's ``MultiHeadAttention``
        see :func:`~transpec.adapters.jax.flax_attention.flax_mha_support`."""
        if component == "multi_head_attention":
            return flax_mha_support(args)
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
        """``jax.nn.dot_product_attention`` on the (B, L, H, E) layout of the (B, H, L, E) inputs
        (swapped on the host: a copy, exact); a boolean mask is its ``mask`` (True = attend), a
        float one its additive ``bias``."""
        jax = jax_module()
        mask = bias = None
        if attn_mask is not None:
            if attn_mask.dtype == jax.numpy.bool_:
                mask = attn_mask
            else:
                bias = attn_mask
        out = jax.nn.dot_product_attention(
            _swap_heads_and_length(q),
            _swap_heads_and_length(k),
            _swap_heads_and_length(v),
            bias=bias,
            mask=mask,
            scale=scale,
            is_causal=bool(is_causal),
        )
        return _swap_heads_and_length(out)


def _swap_heads_and_length(array: Any) -> Any:
    """``array`` with its axes -3 and -2 swapped, copied through the host into a new array on
    the same device: exact, and no XLA executable to compile for each new shape (as
    ``jnp.swapaxes`` would eagerly). Under a transformation (``jax.vjp`` differentiating the
    call) the array is a tracer with no value on any host, and the swap is ``jnp.swapaxes``."""
    jax = jax_module()
    if isinstance(array, jax.core.Tracer):
        return jax.numpy.swapaxes(array, -3, -2)
    (device,) = array.devices()
    return jax.device_put(np.ascontiguousarray(np.swapaxes(np.asarray(array), -3, -2)), device)


#: the components of the ``flax-weights`` adapter
FLAX_WEIGHTS_COMPONENTS: tuple[str, ...] = ("multi_head_attention", "multi_head_attention_weights")


class FlaxWeightsAdapter(FlaxSownWeights, JaxArrays):
    """Flax NNX ``MultiHeadAttention`` called with ``sow_weights=True``: its own
    ``dot_product_attention_weights`` path, which also computes the output of a module built
    with ``dropout_rate > 0`` in eval mode (:mod:`transpec.adapters.jax.flax_attention`).

    What that path computes (flax 0.12.8, ``flax/nnx/nn/attention.py``), and is declared:

    * masked scores are *replaced* by ``jnp.finfo(dtype).min`` of the computation dtype
      (``mask_fill="finfo_min"``), not by jax.nn's -0.7·finfo(float32).max;
    * ``query / sqrt(depth)``, the logits and ``jax.nn.softmax`` in the input dtype (float32
      sums on the CPU): for float16/bfloat16, element-wise math in the input dtype
      (``Precision("float32", dtype, elementwise=dtype)``); float64 in float64;
    * XLA on the CPU flushes float64 and float32 subnormals (as for the ``jax`` adapter).

    The weights are what the module sows, per head; ``multi_head_attention`` is the output of
    the same call."""

    name = "flax-weights"
    conventions = Conventions(
        flush_subnormals=("float64", "float32"),
        mask_fill="finfo_min",  # type: ignore[arg-type]  # a named rule (spec.conventions)
    )

    def __init__(self) -> None:
        super().__init__()
        nnx_module()  # a missing flax is one ImportError at load time

    def precision(self, component: str, dtype: str) -> Precision:
        """float16/bfloat16: the scaling of q, the logits and the softmax's element-wise math in
        the input dtype, sums in float32; float32/float64: the input dtype."""
        dtype = canonical_dtype(dtype)
        if dtype in ("float16", "bfloat16"):
            return Precision(accumulate="float32", store=dtype, elementwise=dtype)
        return super().precision(component, dtype)

    def provides(self, component: str) -> bool:
        return component in FLAX_WEIGHTS_COMPONENTS and flax_available()

    def describe(self) -> str:
        import flax

        return super().describe().replace("; devices", f", flax {flax.__version__}; devices", 1)

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """See :func:`~transpec.adapters.jax.flax_attention.flax_mha_support`."""
        return flax_mha_support(args)
