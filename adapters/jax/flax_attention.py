"""Flax NNX's ``MultiHeadAttention`` as transpec's ``multi_head_attention`` (and, on its
weights path, ``multi_head_attention_weights``).

A Flax user builds ``nnx.MultiHeadAttention(num_heads=H, in_features=E, qkv_features=E,
out_features=E, in_kv_features=kdim, decode=False, dropout_rate=0.0, deterministic=True,
use_bias=..., param_dtype=..., rngs=...)``, loads its weights and calls
``module(inputs_q, inputs_k, inputs_v, mask=mask, is_causal=...)`` on (batch..., length,
features) arrays: :class:`FlaxMultiHeadAttention` does the same, eagerly, with the parameters in
the dtype under test. Modules are built once per shape, dtype and bias (``nnx.split``); each call
merges the drawn weights into a fresh module (``nnx.merge``), so that ``jax.vjp`` can
differentiate the very call with respect to them.

The weights transpec draws are ``nn.MultiheadAttention``'s (``in_proj_weight`` (3E, E), rows
[0:E] for Q, [E:2E] for K, [2E:3E] for V, or ``q/k/v_proj_weight``; ``in_proj_bias`` (3E,);
``out_proj.weight`` (E, E), ``out_proj.bias`` (E,)); Flax stores them per head: the query,
key and value ``LinearGeneral`` kernels are (in_features, H, D) with
``kernel[i, h, d] = W[h·D + d, i]`` (W transposed, its rows split into heads) and biases (H, D);
the output kernel is (H, D, E) with ``kernel[h, d, o] = W_o[o, h·D + d]``, its bias (E,). The
rearrangement is an exact copy, done on the host (no XLA executable per shape), or with
``jnp`` under ``jax.vjp``. ``batch_first=False`` inputs (L, B, E) are swapped to (B, L, E) the
same way, and the output back.

Masks: Flax's ``mask`` is boolean, True = attend, broadcastable to (batch..., H, Lq, Lk), as
``nnx.make_attention_mask`` and ``nnx.combine_masks`` build it: the adapter ANDs the negations of
transpec's ``attn_mask`` ((L, S) or per head (B·H, L, S)) and ``key_padding_mask`` (B, S) (both
True = masked, ``nn.MultiheadAttention``'s meaning) into one such mask on the host.
``is_causal`` (transpec's hint that ``attn_mask`` is the causal mask) is passed as Flax's own
``is_causal``, with the mask.

What Flax computes (flax 0.12.8, ``flax/nnx/nn/attention.py``): with ``dropout_rate=0`` and
``sow_weights=False`` its ``dot_product_attention`` calls ``jax.nn.dot_product_attention``
("Will use the more optimized ``jax.nn.dot_product_attention`` if dropout is not activated and
``module=None``"), so this component has the ``jax`` adapter's conventions for the attention
itself: masked scores replaced by -0.7·finfo(float32).max in every dtype, logits and softmax in
float32 for half inputs (float64 included: the defect of docs/findings.md). The projections are
``LinearGeneral`` dots in the dtype under test (float32 sums on the CPU for half inputs): the
default precision. Its other path, ``dot_product_attention_weights`` (taken with dropout or
``sow_weights=True``), replaces masked scores with ``finfo(dtype).min`` and takes the softmax
in the input dtype: :class:`FlaxSownWeights` calls the module that way (``nnx.capture(module,
nnx.Intermediate)(..., sow_weights=True)``) and also returns the per-head weights it sows, with
those declarations (the built-in ``flax-weights`` adapter).

Rejected by design (``supports``): float masks (Flax's ``mask`` is boolean; an additive mask
is the ``bias`` of the attention function, which ``MultiHeadAttention`` never passes), keys and
values of different widths (one ``in_kv_features``), ``bias_k``/``bias_v`` (no such
parameters), and biases on some projections only (one ``use_bias`` for all four).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from transpec.adapters.jax.arrays import jax_module
from transpec.adapters.jax.flax_modules import nnx_module

#: the components this mixin adds
FLAX_ATTENTION_COMPONENTS: tuple[str, ...] = ("multi_head_attention",)

_IN_BIAS = "in_proj_bias"
_OUT_BIAS = "out_proj.bias"


def flax_mha_support(args: Mapping[str, Any]) -> str | None:
    """Why ``nnx.MultiHeadAttention`` does not take these ``multi_head_attention`` (or
    ``multi_head_attention_weights``) arguments (None when it does); ``args`` hold NumPy
    arrays."""
    if args.get("average_attn_weights") is True:
        return "nnx.MultiHeadAttention sows per-head weights (no average over heads)"
    for name in ("key_padding_mask", "attn_mask"):
        mask = args.get(name)
        if mask is not None and np.asarray(mask).dtype != np.bool_:
            return "nnx.MultiHeadAttention takes a boolean mask (True = attend), no additive one"
    key, value = args.get("key"), args.get("value")
    if key is not None and value is not None and np.shape(key)[-1] != np.shape(value)[-1]:
        return "nnx.MultiHeadAttention has one in_kv_features for keys and values"
    params = args.get("params") or {}
    if params.get("bias_k") is not None or params.get("bias_v") is not None:
        return "nnx.MultiHeadAttention has no bias_k/bias_v"
    if (params.get(_IN_BIAS) is None) != (params.get(_OUT_BIAS) is None):
        return "nnx.MultiHeadAttention has one use_bias for its four projections"
    return None


def _arranged(array: Any, arrange: Callable[[Any], Any]) -> Any:
    """``arrange(array)`` (a reshape, transpose or slice: exact) as a new ``jax.Array`` on the
    same device, computed on the host; under ``jax.vjp`` (a tracer) by ``jnp`` itself."""
    jax = jax_module()
    if isinstance(array, jax.core.Tracer):
        return arrange(array)
    (device,) = array.devices()
    return jax.device_put(np.ascontiguousarray(arrange(np.asarray(array))), device)


def _in_kernel(weight: Any, *, rows: slice, heads: int) -> Any:
    """Rows ``rows`` of a torch (H·D, in) projection weight as Flax's (in, H, D) kernel."""
    part = weight[rows]
    return part.T.reshape(part.shape[1], heads, part.shape[0] // heads)


def _in_bias(bias: Any, *, rows: slice, heads: int) -> Any:
    """Entries ``rows`` of a torch (3·H·D,) in-projection bias as Flax's (H, D) bias."""
    part = bias[rows]
    return part.reshape(heads, part.shape[0] // heads)


def _out_kernel(weight: Any, *, heads: int) -> Any:
    """A torch (E, H·D) output projection weight as Flax's (H, D, E) kernel."""
    return weight.T.reshape(heads, weight.shape[1] // heads, weight.shape[0])


class FlaxMultiHeadAttention:
    """``flax.nnx.MultiHeadAttention`` behind ``multi_head_attention``: see the module
    docstring."""

    @staticmethod
    @functools.cache
    def _flax_mha(
        heads: int, width: int, kv_width: int, use_bias: bool, dtype: str
    ) -> tuple[Any, Any]:
        """(graph, state) of ``nnx.MultiHeadAttention`` for these sizes, split once."""
        nnx = nnx_module()
        module = nnx.MultiHeadAttention(
            num_heads=heads,
            in_features=width,
            qkv_features=width,
            out_features=width,
            in_kv_features=kv_width,
            decode=False,
            dropout_rate=0.0,
            deterministic=True,
            use_bias=use_bias,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
        return nnx.split(module)

    @staticmethod
    def _flax_weights(params: Mapping[str, Any], heads: int, width: int) -> dict[str, Any]:
        """The drawn ``nn.MultiheadAttention`` weights as Flax's per-head parameters (the pure
        dict of ``nnx.to_pure_dict``)."""
        weights: dict[str, Any] = {}
        in_weight = params.get("in_proj_weight")
        in_bias = params.get(_IN_BIAS)
        for i, name in enumerate(("query", "key", "value")):
            rows = slice(i * width, (i + 1) * width)  # of in_proj_weight and in_proj_bias
            if in_weight is None:  # its own (E, kdim) weight
                kernel = _arranged(
                    params[f"{name[0]}_proj_weight"],
                    functools.partial(_in_kernel, rows=slice(None), heads=heads),
                )
            else:
                kernel = _arranged(in_weight, functools.partial(_in_kernel, rows=rows, heads=heads))
            weights[name] = {"kernel": kernel}
            if in_bias is not None:
                weights[name]["bias"] = _arranged(
                    in_bias, functools.partial(_in_bias, rows=rows, heads=heads)
                )
        out = {
            "kernel": _arranged(
                params["out_proj.weight"], functools.partial(_out_kernel, heads=heads)
            )
        }
        if params.get(_OUT_BIAS) is not None:
            out["bias"] = params[_OUT_BIAS]
        weights["out"] = out
        return weights

    #: whether the module is called with ``sow_weights=True`` (Flax's weights path)
    sow_weights: bool = False

    def _flax_call(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Any,
        num_heads: int,
        key_padding_mask: Any,
        attn_mask: Any,
        is_causal: bool,
        batch_first: bool,
    ) -> tuple[Any, Any]:
        """(the output, the intermediates it sowed or None) of ``module(query, key, value,
        mask=keep, is_causal=is_causal)`` on batch-first arrays, the output back in the inputs'
        layout; on the weights path ``nnx.capture(module, nnx.Intermediate)(...,
        sow_weights=True)``, as Flax documents extracting intermediates."""
        import copy

        nnx = nnx_module()
        heads, width = int(num_heads), int(query.shape[-1])
        graph, template = self._flax_mha(
            heads,
            width,
            int(key.shape[-1]),
            params.get(_IN_BIAS) is not None,
            str(query.dtype),
        )
        state = copy.deepcopy(template)
        nnx.replace_by_pure_dict(state, self._flax_weights(params, heads, width))
        module = nnx.merge(graph, state)

        swap = query.ndim == 3 and not batch_first

        def batch_major(x: Any) -> Any:
            return _arranged(x, lambda a: a.swapaxes(0, 1)) if swap else x

        inputs = (batch_major(query), batch_major(key), batch_major(value))
        mask = _keep_mask(key_padding_mask, attn_mask, query, heads, swap)
        if not self.sow_weights:
            return batch_major(module(*inputs, mask=mask, is_causal=bool(is_causal))), None
        out, sown = nnx.capture(module, nnx.Intermediate)(
            *inputs, mask=mask, is_causal=bool(is_causal), sow_weights=True
        )
        return batch_major(out), sown

    def multi_head_attention(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Any,
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = False,
    ) -> Any:
        """``nnx.MultiHeadAttention(num_heads, E, E, E, in_kv_features=kdim, decode=False,
        dropout_rate=0.0, deterministic=True)`` with the drawn weights, called as
        ``module(query, key, value, mask=keep, is_causal=is_causal)`` on batch-first arrays
        (and ``sow_weights=True`` on the weights path)."""
        out, _ = self._flax_call(
            query,
            key,
            value,
            params,
            num_heads,
            key_padding_mask,
            attn_mask,
            is_causal,
            batch_first,
        )
        return out


class FlaxSownWeights(FlaxMultiHeadAttention):
    """Flax NNX ``MultiHeadAttention`` on its weights path: called with ``sow_weights=True``,
    the output and the per-head attention weights the module sows, captured as Flax documents
    it (``nnx.capture(module, nnx.Intermediate)``: ``["attention_weights"]``)."""

    sow_weights = True

    def multi_head_attention_weights(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Any,
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = False,
        average_attn_weights: bool = True,
    ) -> Any:
        """The weights ``module(..., sow_weights=True)`` sows: (B, H, Lq, Lk), per head
        (``average_attn_weights=False``; an average over heads is not Flax's and is refused)."""
        _, sown = self._flax_call(
            query,
            key,
            value,
            params,
            num_heads,
            key_padding_mask,
            attn_mask,
            is_causal,
            batch_first,
        )
        (weights,) = sown["attention_weights"].get_value()
        return weights


def _keep_mask(key_padding_mask: Any, attn_mask: Any, query: Any, heads: int, swap: bool) -> Any:
    """Flax's boolean mask (True = attend), (B, 1 or H, L, S) or unbatched (1 or H, L, S), from
    transpec's masks (True = masked): the AND of their negations, built on the host as
    ``nnx.combine_masks`` would; None without a mask."""
    if key_padding_mask is None and attn_mask is None:
        return None
    jax = jax_module()
    unbatched = query.ndim == 2
    batch = 1 if unbatched else int(query.shape[1 if swap else 0])
    keep: np.ndarray | None = None
    if attn_mask is not None:
        hidden = np.asarray(attn_mask)
        if hidden.ndim == 2:
            hidden = hidden[None, None]
        else:  # (B·H, L, S), index b·H + h
            hidden = hidden.reshape(batch, heads, *hidden.shape[-2:])
        keep = ~hidden
    if key_padding_mask is not None:
        padded = np.asarray(key_padding_mask).reshape(batch, 1, 1, -1)
        keep = ~padded if keep is None else keep & ~padded
    assert keep is not None
    if unbatched:
        keep = keep[0]
    device = attn_mask.devices() if attn_mask is not None else key_padding_mask.devices()
    (one,) = device
    return jax.device_put(np.ascontiguousarray(keep), one)
