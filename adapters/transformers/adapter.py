"""Hugging Face transformers' building blocks, called as the library's models call them.

Two built-in adapters, each the blocks of one model family with that family's conventions:

=====================  ======================================  ==================================
component              ``transformers`` (Llama, sdpa)          ``transformers-gemma`` (eager)
=====================  ======================================  ==================================
attention              ``sdpa_attention_forward``              Gemma 2's ``eager_attention_forward``
                       (``ALL_ATTENTION_FUNCTIONS["sdpa"]``)   (softcap), masks from
                       masks from ``masking_utils.sdpa_mask``  ``masking_utils.eager_mask``
rms_norm               ``LlamaRMSNorm``                        ``GemmaRMSNorm``
rotary_embedding       ``LlamaRotaryEmbedding`` +              --
                       ``apply_rotary_pos_emb``
multi_head_attention   ``BertSelfAttention`` (sdpa) +          --
                       ``BertSelfOutput.dense``
=====================  ======================================  ==================================

BERT's attention block (``BertAttention``) is ``BertSelfAttention``, then ``BertSelfOutput``:
its ``dense`` layer is nn.MultiheadAttention's output projection, followed by dropout, a
residual and a LayerNorm that the component does not have; the adapter calls the first two
(the self-attention with Q/K/V from the drawn ``in_proj_weight`` rows, absent biases as zeros)
and stops there. Only self-attention is passed (BERT's cross-attention reads keys and values
from one sequence), with boolean masks.

Inputs are (B, H, L, E) tensors (the layout the attention functions take; they return
(B, L, H, E), transposed back here); a module stub carries ``num_key_value_groups`` (grouped
heads are the functions' own ``repeat_kv``/``enable_gqa``) and ``head_dim``. Modules are built
from their constructor arguments or a ``LlamaConfig``; nothing is downloaded.

What the library's source says, and the adapters therefore declare:

* ``sdpa_attention_forward`` passes ``is_causal`` to SDPA only when the query length is > 1
  ("not in decoding phase ... we want full attention on the single query token"):
  ``causal_alignment="top_left_decode_all"``. A boolean mask is SDPA's (True = attend, -inf).
* ``eager_mask`` turns the boolean mask into 0 / ``torch.finfo(dtype).min`` and the eager
  function *adds* it to the scores: ``mask_fill="finfo_min"``, ``mask_fill_mode="add"``; an
  additive -inf mask that hides a whole row gives softmax's 0/0 (``fully_masked_row="nan"``).
  Gemma 2 caps the scaled scores before the mask, as transpec does.
* ``LlamaRMSNorm(hidden_size, eps=1e-6)`` and ``GemmaRMSNorm(dim, eps=1e-6)``: eps=None means
  the modules' default 1e-6; Gemma scales by (1 + weight) (``rms_norm_weight="one_plus_w"``:
  the drawn weight is the module's parameter). Both normalize the last dim only.
* The Llama rotary embedding rotates the two halves (``rotate_half``: ``rope_pairing=
  "half_split"``, canonical) and computes its angles in float32 (``inv_freq`` and
  ``position_ids.float()``).

Precisions: float32 math for float16/bfloat16 with every intermediate tensor in the input dtype
(the modules cast their float32 results back; eager rounds its scores and weights to the input
dtype); float64 and float32 inputs are declared at their own precision (what the modules do to
float64 is triaged in docs/findings.md). Rejected by design: inputs that are not 4-D (attention),
odd head dims (RoPE), multi-dim normalized shapes (the modules normalize the last dim), and an
attention mask together with ``is_causal`` or a per-head boolean mask where the masking
utilities build one (B, 1, Lq, Lk) mask that already carries causality.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.base import Precision
from transpec.adapters.torch.arrays import TorchArrays, torch_module
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

_HALF = ("float16", "bfloat16")
#: the eps the RMSNorm modules default to (``eps: float = 1e-6``)
MODULE_EPS = 1e-6


@functools.cache
def _transformers() -> ModuleType:
    """``transformers``, imported on first use, offline (no hub access)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    return transformers


def _stub(q_heads: int, kv_heads: int, head_dim: int) -> Any:
    """The attention module the functions read: ``num_key_value_groups``, ``head_dim``, eval."""
    torch = torch_module()
    module = torch.nn.Module()
    module.num_key_value_groups = q_heads // kv_heads
    module.head_dim = head_dim
    module.is_causal = True
    module.eval()
    return module


def _keep_function(mask: Any) -> Any:
    """A ``masking_utils`` mask function reading a (B, 1, Lq, Lk) boolean keep-mask."""

    def keep(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
        return mask[batch_idx, 0, q_idx, kv_idx]

    return keep


class _TransformersBase(TorchArrays):
    """What both built-ins share: torch tensors on the CPU, the modules' rms_norm."""

    framework = "torch"
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu",)
    #: the RMSNorm module (attribute of its modeling module)
    _rms_module: tuple[str, str] = ("", "")

    def __init__(self) -> None:
        super().__init__()
        _transformers()  # a missing transformers is one ImportError at load time

    def describe(self) -> str:
        torch = torch_module()
        return (
            f"{self.name} (transformers {_transformers().__version__}, torch {torch.__version__})"
        )

    def precision(self, component: str, dtype: str) -> Precision:
        """(dtype, dtype) for float64/float32; float32 math, intermediates in the dtype, for
        float16/bfloat16."""
        dtype = canonical_dtype(dtype)
        if dtype in _HALF:
            return Precision(accumulate="float32", store=dtype)
        return Precision(accumulate=dtype, store=dtype)

    def _attention_support(self, args: Mapping[str, Any]) -> str | None:
        q, mask = args.get("q"), args.get("attn_mask")
        if q is not None and np.ndim(q) != 4:
            return "the attention functions take 4-D (B, H, L, E) inputs"
        if mask is not None and bool(args.get("is_causal", False)):
            return "the model's mask carries causality: attn_mask with is_causal is not passed"
        per_head = mask is not None and np.ndim(mask) >= 3 and np.shape(mask)[-3] != 1
        if per_head and np.asarray(mask).dtype == np.bool_:
            return "masking_utils builds one (B, 1, Lq, Lk) mask for every head"
        return None

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        if component == "attention":
            return self._attention_support(args)
        if component == "rms_norm":
            if len(tuple(args.get("normalized_shape", ()))) != 1:
                return "the RMSNorm modules normalize the last dim only"
            if args.get("weight") is None:
                return "the RMSNorm modules always have a weight parameter"
        if component == "multi_head_attention" and "query" in args:
            return self._bert_support(args)
        if component == "rotary_embedding":
            x = args.get("x")
            if x is not None and (np.ndim(x) < 2 or np.shape(x)[-1] % 2):
                return "the Llama rotary embedding takes (..., L, D) with an even head dim D"
        return None

    @staticmethod
    def _bert_support(args: Mapping[str, Any]) -> str | None:
        """What BERT's self-attention block does not take."""
        query, key, value = (np.asarray(args[n]) for n in ("query", "key", "value"))
        if not (np.array_equal(query, key) and np.array_equal(key, value)):
            return "BertSelfAttention reads queries, keys and values from one sequence"
        params = args.get("params") or {}
        if params.get("in_proj_weight") is None or params.get("bias_k") is not None:
            return "BERT has one projection per Q/K/V of width hidden_size and no bias_k/bias_v"
        for name in ("key_padding_mask", "attn_mask"):
            mask = args.get(name)
            if mask is not None and np.asarray(mask).dtype != np.bool_:
                return "the masking utilities build boolean masks (no float mask)"
        attn = args.get("attn_mask")
        if attn is not None and np.ndim(attn) != 2:
            return "masking_utils builds one mask for every head"
        return None

    @staticmethod
    def _mask_4d(mask: Any, batch: int, q_len: int, kv_len: int) -> Any:
        """A boolean mask broadcast to (B, 1, Lq, Lk) (shared by the heads)."""
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        return mask.expand(batch, 1, q_len, kv_len)

    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        """The family's RMSNorm module over the last dim, its weight the drawn weight, its eps
        ``eps`` (None: the module's default)."""
        torch = torch_module()
        import importlib

        module_path, cls_name = self._rms_module
        cls = getattr(importlib.import_module(module_path), cls_name)
        dim = int(next(iter(normalized_shape)))
        norm = cls(dim) if eps is None else cls(dim, eps=float(eps))
        norm = norm.to(dtype=weight.dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
        norm.eval()
        return norm(x)


class TransformersAdapter(_TransformersBase):
    """Llama's blocks with ``sdpa_attention_forward``: see the module docstring."""

    name = "transformers"
    conventions = Conventions(
        causal_alignment="top_left_decode_all", rms_norm_default_eps=MODULE_EPS
    )
    _rms_module = ("transformers.models.llama.modeling_llama", "LlamaRMSNorm")

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
        """``ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, mask, scaling=scale,
        is_causal=is_causal)``; a shared boolean mask built by ``masking_utils.sdpa_mask``."""
        from transformers import masking_utils
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        batch, q_len, kv_len = q.shape[0], q.shape[-2], k.shape[-2]
        mask = attn_mask
        while mask is not None and mask.dim() < 4:
            mask = mask.unsqueeze(0)  # the functions take 4-D masks, as the models build them
        if mask is not None and mask.dtype == torch_module().bool and mask.shape[-3] == 1:
            keep = self._mask_4d(mask, batch, q_len, kv_len)
            mask = masking_utils.sdpa_mask(
                batch_size=batch,
                q_length=q_len,
                kv_length=kv_len,
                mask_function=_keep_function(keep),
                allow_is_causal_skip=False,
                device=q.device,
            )
        attention = ALL_ATTENTION_FUNCTIONS["sdpa"]
        out, _ = attention(
            _stub(q.shape[1], k.shape[1], q.shape[-1]),
            q,
            k,
            v,
            mask,
            scaling=scale,
            is_causal=bool(is_causal),
        )
        return out.transpose(1, 2)

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
        """BERT's self-attention: ``BertSelfAttention(BertConfig(hidden_size=E,
        num_attention_heads=H))`` (sdpa) on the query, then ``BertSelfOutput.dense`` (the output
        projection; its dropout, residual and LayerNorm are not part of the component). The
        weights are the drawn ``in_proj_weight`` rows and ``out_proj``; the boolean masks
        (nn.MultiheadAttention's True = masked) become the mask ``masking_utils.sdpa_mask``
        builds from a 2-D padding mask and the attention mask as a mask function."""
        torch = torch_module()
        from transformers import BertConfig, masking_utils
        from transformers.models.bert import modeling_bert

        x = query if batch_first or query.dim() == 2 else query.transpose(0, 1)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        batch, length, width = x.shape
        config = BertConfig(  # type: ignore[call-arg]  # attn_implementation: a config kwarg
            hidden_size=width,
            num_attention_heads=int(num_heads),
            attention_probs_dropout_prob=0.0,
            hidden_dropout_prob=0.0,
            attn_implementation="sdpa",
        )
        attention = modeling_bert.BertSelfAttention(config).to(dtype=x.dtype).eval()
        output = modeling_bert.BertSelfOutput(config).to(dtype=x.dtype).eval()
        w_in, b_in = params["in_proj_weight"], params.get("in_proj_bias")
        with torch.no_grad():
            for i, linear in enumerate((attention.query, attention.key, attention.value)):
                linear.weight.copy_(w_in[i * width : (i + 1) * width])
                part = None if b_in is None else b_in[i * width : (i + 1) * width]
                linear.bias.copy_(torch.zeros(width) if part is None else part)
            output.dense.weight.copy_(params["out_proj.weight"])
            bias = params.get("out_proj.bias")
            output.dense.bias.copy_(torch.zeros(width) if bias is None else bias)
        mask = None
        if key_padding_mask is not None or attn_mask is not None:
            padding = None
            if key_padding_mask is not None:
                padding = ~key_padding_mask.reshape(batch, length)
            function = masking_utils.bidirectional_mask_function
            if attn_mask is not None:
                hidden = attn_mask

                def function(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
                    return ~hidden[q_idx, kv_idx]

            mask = masking_utils.sdpa_mask(
                batch_size=batch,
                q_length=length,
                kv_length=length,
                mask_function=function,
                attention_mask=padding,
                allow_is_causal_skip=False,
                device=x.device,
            )
        with torch.no_grad():
            heads, _ = attention(x, attention_mask=mask)
            y = output.dense(heads)
        if unbatched:
            return y[0]
        return y if batch_first else y.transpose(0, 1)

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        """``LlamaRotaryEmbedding(LlamaConfig(head_dim=D, rope_theta=base))(x, position_ids)``
        then ``apply_rotary_pos_emb`` on x viewed as (1, N, L, D)."""
        torch = torch_module()
        from transformers import LlamaConfig
        from transformers.models.llama import modeling_llama

        length, dim = x.shape[-2], x.shape[-1]
        config = LlamaConfig(
            hidden_size=dim,
            num_attention_heads=1,
            head_dim=dim,
            max_position_embeddings=max(2048, length),
            rope_parameters={"rope_type": "default", "rope_theta": float(base)},
        )
        rotary = modeling_llama.LlamaRotaryEmbedding(config)
        if positions is None:
            position_ids = torch.arange(offset, offset + length, dtype=torch.int64)
        else:
            position_ids = positions.to(torch.int64)
        position_ids = position_ids.reshape(1, length)
        lead = x.shape[:-2]
        view = x.reshape(1, -1, length, dim)
        cos, sin = rotary(view, position_ids)
        rotated, _ = modeling_llama.apply_rotary_pos_emb(view, view, cos, sin)
        return rotated.reshape(*lead, length, dim)


class TransformersGemmaAdapter(_TransformersBase):
    """Gemma's blocks: Gemma 2's ``eager_attention_forward`` (softcap, additive masks) and
    ``GemmaRMSNorm`` (1 + weight): see the module docstring."""

    name = "transformers-gemma"
    conventions = Conventions(
        mask_fill="finfo_min",  # type: ignore[arg-type]  # a named rule (spec.conventions)
        mask_fill_mode="add",
        fully_masked_row="nan",
        rms_norm_weight="one_plus_w",
        rms_norm_default_eps=MODULE_EPS,
    )
    _rms_module = ("transformers.models.gemma.modeling_gemma", "GemmaRMSNorm")

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> Any:
        """Gemma 2's ``eager_attention_forward(module, q, k, v, mask, scaling=scale,
        softcap=softcap)``; the mask from ``masking_utils.eager_mask`` (0 / finfo(dtype).min,
        top-left causal with ``is_causal``), an additive mask as given."""
        torch = torch_module()
        from transformers import masking_utils
        from transformers.models.gemma2 import modeling_gemma2

        batch, q_len, kv_len = q.shape[0], q.shape[-2], k.shape[-2]
        mask = attn_mask
        while mask is not None and mask.dim() < 4:
            mask = mask.unsqueeze(0)  # the functions take 4-D masks, as the models build them
        if is_causal or (mask is not None and mask.dtype == torch.bool):
            function = masking_utils.causal_mask_function
            if mask is not None:
                function = _keep_function(self._mask_4d(mask, batch, q_len, kv_len))
            mask = masking_utils.eager_mask(
                batch_size=batch,
                q_length=q_len,
                kv_length=kv_len,
                mask_function=function,
                dtype=q.dtype,
                device=q.device,
            )
        out, _ = modeling_gemma2.eager_attention_forward(
            _stub(q.shape[1], k.shape[1], q.shape[-1]),
            q,
            k,
            v,
            mask,
            scaling=scale,
            softcap=softcap,
        )
        return out.transpose(1, 2)
