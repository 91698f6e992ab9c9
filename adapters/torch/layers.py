r"""The layer components in torch: multi-head attention, feed-forward, encoder and decoder
layers, and the SwiGLU feed-forward.

:class:`TorchLayers`, inherited by :class:`~transpec.adapters.torch.adapter.TorchAdapter`, runs the
real modules (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer``; ``F.linear`` and the activation for the feed-forward block) in
eval mode with the oracle's parameters loaded with ``load_state_dict``: the adapter maps layouts
(``batch_first``, the activation's name), never the computation. ``layer_path = "default"``
calls the module as users do for inference, under ``torch.no_grad()``, so torch takes its fast
path where it does; ``layer_path = "slow"`` calls it with gradients enabled (parameters require
grad), which forces the slow path, and ``need_weights=False`` for ``nn.MultiheadAttention`` (what
the layers pass internally). ``swiglu_feed_forward(x, params)``, LLaMA's bias-free SwiGLU FFN
``w2(silu(w1(x)) * w3(x))`` with ``params`` ``"w1.weight"``, ``"w2.weight"``, ``"w3.weight"``,
calls ``F.linear`` and ``F.silu`` as users do. The NumPy counterpart is
:mod:`transpec.adapters.numpy.layers`.

Masks have ``nn.MultiheadAttention``'s polarity (bool True = not allowed; float masks added).

What torch does on each path (the fully masked query row, the activation, the float mask) is
measured and tabled in docs/torch.md (``tests/layers`` keeps it checked) and
declared through :meth:`TorchLayers.layer_semantics`, so that the reference follows the path
taken. The default path's disagreements with the slow path are real: the
``fast_slow_agreement`` property reports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.adapters.torch.gradients import differentiating
from transpec.oracle import components

#: the layer components (the registry's family "layers"): torch's nn modules
LAYER_COMPONENTS: tuple[str, ...] = components.names("layers")
#: the components torch computes as a chain of kernels (the modules, and SwiGLU's F.linear /
#: F.silu steps): float32 math inside each kernel, every intermediate tensor in the dtype
CHAINED_COMPONENTS: tuple[str, ...] = LAYER_COMPONENTS + components.names("swiglu")

_BOOL = np.bool_


def _is_float_mask(mask: Any) -> bool:
    if mask is None:
        return False
    dtype = getattr(mask, "dtype", None)
    return dtype is not None and "bool" not in str(dtype)


def _functional(module: Any, call: Any, params: Mapping[str, Any]) -> Any:
    """``call(module)`` with ``params`` (state_dict keys) as the module's parameters and
    gradients enabled: ``torch.func.functional_call`` of a wrapper whose forward is ``call``."""
    import torch

    class Call(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self) -> Any:
            return call(self.inner)

    given = {f"inner.{k}": v for k, v in params.items() if v is not None}
    with torch.enable_grad():
        return torch.func.functional_call(Call(), given, ())


# -- torch -------------------------------------------------------------------------------------


class TorchLayers:
    """The layer components on torch modules (see the module docstring)."""

    #: "default": as users call the module for inference (no grad, fast path where torch
    #: takes it); "slow": gradients enabled, the slow path
    layer_path: str = "default"

    def slow_path_adapter(self) -> Any:
        """The same adapter on the slow path (for ``fast_slow_agreement``)."""
        from transpec.adapters.torch.adapter import TorchSlowAdapter

        return TorchSlowAdapter()

    # -- which path torch takes (mirrors the checks in torch/nn/modules/{activation,transformer}.py)

    @staticmethod
    def _mha_fast(batched: bool, batch_first: bool, heads: int, *masks: Any) -> bool:
        return batched and batch_first and heads % 2 == 0 and not any(map(_is_float_mask, masks))

    def layer_semantics(self, component: str, args: Mapping[str, Any]) -> dict[str, str]:
        """The path's true conventions for these arguments (float64/bool NumPy args)."""
        slow = self.layer_path == "slow"
        act = str(args.get("activation", "relu"))
        bf = bool(args.get("batch_first", True))
        if component == "multi_head_attention":
            # default path: need_weights=True (torch's default) -> NaN on both slow and fast
            return {"fully_masked_row": "zero" if slow else "nan"}
        if component == "multi_head_attention_weights":
            # need_weights=True on both paths: the explicit softmax, 0/0 = NaN rows
            return {"fully_masked_row": "nan"}
        if component == "encoder_layer":
            src = np.asarray(args["src"])
            fast = not slow and src.ndim == 3 and bf and int(args["nhead"]) % 2 == 0
            if "self_attn.in_proj_bias" not in args["params"]:
                fast = False
            if fast:
                return {
                    "fully_masked_row": "nan",
                    "activation": "gelu" if act == "gelu_tanh" else act,
                    "float_attn_mask": "nonzero_is_masked",
                }
            return {"fully_masked_row": "zero"}
        if component == "decoder_layer":
            tgt = np.asarray(args["tgt"])
            fast = (
                not slow
                and self._mha_fast(
                    tgt.ndim == 3,
                    bf,
                    int(args["nhead"]),
                    args.get("tgt_mask"),
                    args.get("tgt_key_padding_mask"),
                )
                and "self_attn.in_proj_bias" in args["params"]
            )
            return {"fully_masked_row": "nan" if fast else "zero", "cross_fully_masked_row": "zero"}
        return {}

    def backward_layer_semantics(self, component: str, args: Mapping[str, Any]) -> dict[str, str]:
        """The conventions of the differentiated call: with gradients enabled the encoder and
        decoder layers take their slow path; ``nn.MultiheadAttention`` keeps this path's
        ``need_weights``."""
        if component in ("encoder_layer", "decoder_layer"):
            return dict(self.slow_path_adapter().layer_semantics(component, args))
        return self.layer_semantics(component, args)

    # -- helpers

    def _torch_call(self, build: Any, call: Any, params: Mapping[str, Any]) -> Any:
        """Build the module and call it on this adapter's path, on one intra-op thread: the
        modules under test are tiny, and waking torch's thread pool on a busy machine costs
        50-200 ms a call (measured on two loaded cores) against 0.5 ms; the path and the
        semantics do not depend on the thread count. Differentiated (the backward's forward
        call), the module runs with gradients enabled on ``params`` themselves
        (``torch.func.functional_call``), so autograd reaches them as it reaches a user's
        parameters."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if differentiating():
                return _functional(build(), call, params)
            if self.layer_path == "slow":
                with torch.enable_grad():
                    return call(build()).detach()
            with torch.no_grad():
                return call(build())
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _load(module: Any, params: Mapping[str, Any]) -> Any:
        module.load_state_dict({k: v for k, v in params.items() if v is not None}, strict=True)
        for p in module.parameters():
            p.requires_grad_(True)
        return module.eval()

    @staticmethod
    def _activation(name: str) -> Any:
        import torch

        if name == "gelu_tanh":
            return torch.nn.GELU(approximate="tanh")
        if name in ("relu", "gelu"):
            return name
        raise ValueError(f"unknown activation {name!r}; expected relu, gelu or gelu_tanh")

    def _build_layer(
        self,
        module_class: Any,
        x: Any,
        params: Mapping[str, Any],
        nhead: int,
        *,
        norm_first: bool,
        activation: str,
        layer_norm_eps: float,
        batch_first: bool,
    ) -> Any:
        """An encoder or decoder layer module of ``x``'s width, dtype and device, dropout 0,
        sized by ``params`` (dim_feedforward, bias) and loaded with them."""
        m = module_class(
            int(x.shape[-1]),
            int(nhead),
            int(params["linear1.weight"].shape[0]),
            dropout=0.0,
            activation=self._activation(activation),
            layer_norm_eps=layer_norm_eps,
            batch_first=batch_first,
            norm_first=norm_first,
            bias="linear1.bias" in params,
            device=x.device,
            dtype=x.dtype,
        )
        return self._load(m, params)

    def _build_mha(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Mapping[str, Any],
        num_heads: int,
        batch_first: bool,
    ) -> Any:
        """An ``nn.MultiheadAttention`` of ``query``'s width, dtype and device, with the kdim and
        vdim of ``key`` and ``value`` and a bias where ``params`` has one, loaded with them."""
        import torch

        m = torch.nn.MultiheadAttention(
            int(query.shape[-1]),
            int(num_heads),
            bias=params.get("in_proj_bias") is not None,
            kdim=int(key.shape[-1]),
            vdim=int(value.shape[-1]),
            batch_first=batch_first,
            device=query.device,
            dtype=query.dtype,
        )
        return self._load(m, params)

    # -- components

    def multi_head_attention(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Mapping[str, Any],
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> Any:
        """``nn.MultiheadAttention(E, num_heads, batch_first=...)(query, key, value, ...)``.

        Equal query/key/value tensors are passed as one tensor, as users write self-attention
        (``mha(x, x, x)``), so the fast path can be taken."""
        import torch

        if not differentiating():  # differentiated, each input keeps its own gradient
            if key is not query and key.shape == query.shape and torch.equal(key, query):
                key = query
            if value is not key and value.shape == key.shape and torch.equal(value, key):
                value = key

        def build() -> Any:
            return self._build_mha(query, key, value, params, num_heads, batch_first)

        need = self.layer_path != "slow"

        def call(m: Any) -> Any:
            out, _ = m(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=need,
            )
            return out

        return self._torch_call(build, call, params)

    def multi_head_attention_weights(
        self,
        query: Any,
        key: Any,
        value: Any,
        params: Mapping[str, Any],
        num_heads: int,
        key_padding_mask: Any = None,
        attn_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
        average_attn_weights: bool = True,
    ) -> Any:
        """The weights ``nn.MultiheadAttention(...)(query, key, value, need_weights=True,
        average_attn_weights=...)`` returns: (B, Lq, Lk), or (B, H, Lq, Lk) per head. torch
        takes no fast path with ``need_weights=True``: both paths run the explicit softmax."""

        def build() -> Any:
            return self._build_mha(query, key, value, params, num_heads, batch_first)

        def call(m: Any) -> Any:
            _, weights = m(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=True,
                average_attn_weights=bool(average_attn_weights),
            )
            return weights

        return self._torch_call(build, call, params)

    def feed_forward(self, x: Any, params: Mapping[str, Any], activation: str = "relu") -> Any:
        """``linear2(activation(linear1(x)))`` with ``F.linear`` and ``F.relu``/``F.gelu``."""
        import torch

        F = torch.nn.functional
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # see _torch_call
        try:
            return self._ffn(F, x, params, activation)
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _ffn(F: Any, x: Any, params: Mapping[str, Any], activation: str) -> Any:
        import torch

        with contextlib.nullcontext() if differentiating() else torch.no_grad():
            h = F.linear(x, params["linear1.weight"], params.get("linear1.bias"))
            if activation == "relu":
                h = F.relu(h)
            elif activation in ("gelu", "gelu_tanh"):
                h = F.gelu(h, approximate="tanh" if activation == "gelu_tanh" else "none")
            else:
                raise ValueError(f"unknown activation {activation!r}")
            return F.linear(h, params["linear2.weight"], params.get("linear2.bias"))

    def swiglu_feed_forward(self, x: Any, params: Mapping[str, Any]) -> Any:
        """LLaMA's SwiGLU FFN ``w2(F.silu(w1(x)) * w3(x))`` with ``F.linear`` and ``F.silu``
        (bias-free ``w1``, ``w2``, ``w3``), on one intra-op thread as :meth:`feed_forward`."""
        import torch

        F = torch.nn.functional
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # see _torch_call
        try:
            with contextlib.nullcontext() if differentiating() else torch.no_grad():
                gate = F.silu(F.linear(x, params["w1.weight"]))
                return F.linear(gate * F.linear(x, params["w3.weight"]), params["w2.weight"])
        finally:
            torch.set_num_threads(threads)

    def encoder_layer(
        self,
        src: Any,
        params: Mapping[str, Any],
        nhead: int,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        src_mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
        batch_first: bool = True,
    ) -> Any:
        """``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0, ...)(src)``."""
        import torch

        def build() -> Any:
            return self._build_layer(
                torch.nn.TransformerEncoderLayer,
                src,
                params,
                nhead,
                norm_first=norm_first,
                activation=activation,
                layer_norm_eps=layer_norm_eps,
                batch_first=batch_first,
            )

        def call(m: Any) -> Any:
            return m(
                src,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                is_causal=is_causal,
            )

        return self._torch_call(build, call, params)

    def decoder_layer(
        self,
        tgt: Any,
        memory: Any,
        params: Mapping[str, Any],
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
        """``nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout=0, ...)``."""
        import torch

        def build() -> Any:
            return self._build_layer(
                torch.nn.TransformerDecoderLayer,
                tgt,
                params,
                nhead,
                norm_first=norm_first,
                activation=activation,
                layer_norm_eps=layer_norm_eps,
                batch_first=batch_first,
            )

        def call(m: Any) -> Any:
            return m(
                tgt,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=tgt_is_causal,
            )

        return self._torch_call(build, call, params)


# -- numpy -------------------------------------------------------------------------------------
