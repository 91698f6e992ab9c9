"""The component registry: one record per building block, the single source of truth.

A *component* is one building block an adapter can implement (``softmax``, ``attention``,
``encoder_layer``, ...). Its :class:`Component` record says everything the rest of transpec
needs to know about it:

* ``name``         -- the one name used everywhere: the CLI, reports, case files, derivations;
* ``method``       -- the adapter method that implements it, and ``arguments``, its signature
  with the kind of every argument (:data:`ARGUMENT_KINDS`), which tells the harness how to
  hand each one to the implementation;
* ``family``       -- the :class:`Family` of blocks whose oracle code shares modules
  (:data:`KERNELS`, :data:`POSITIONAL`, :data:`LAYERS`, ...): it says where the block's
  ``reference``, ``tolerance``, ``strategy`` and ``properties`` are, as ``"module:function"``
  paths resolved on first use, so that importing the registry imports nothing (no NumPy,
  Hypothesis, SymPy or torch);
* ``summary``      -- what the block is and the regimes its properties reach, one line;
* ``derive_page``  -- the page of ``transpec derive`` that derives it.

The functions a record names follow one protocol, whatever the family:

* ``reference(component, args, *, conventions, dtype, semantics) -> Reference``: the float64
  reference on ``args`` (keyed by the adapter method's parameters) under the declared
  conventions; ``semantics`` is the adapter's ``layer_semantics(component, args)`` or None;
* ``tolerance(component, reference, dtype, precision) -> Tolerance``: the per-element bound;
* ``strategy(component, dtype, **options) -> SearchStrategy[dict]``: the default arguments;
* ``properties() -> tuple[Property, ...]``: the family's properties (the registry keeps those
  of the component).

Everything that lists or dispatches on components iterates over :data:`REGISTRY` or looks one up
with :func:`get`, which owns the only "unknown component" message.

Adding a block: write its SymPy definition (``spec/``), its oracle module (reference, tolerance,
strategy and properties under the protocol above), its adapter methods, and one record here.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from transpec.errors import UnknownComponentError

__all__ = [
    "ARGUMENT_KINDS",
    "REGISTRY",
    "Argument",
    "Component",
    "Family",
    "UnknownComponentError",
    "get",
    "names",
]

ArgumentKind = Literal["array", "mask", "layer_mask", "index", "params", "value"]

#: how the harness hands each kind of argument to an implementation
ARGUMENT_KINDS: dict[str, str] = {
    "array": "float array: rounded to the dtype under test (a boolean array stays boolean)",
    "mask": (
        "attention mask, boolean or additive: a boolean one in the meaning the adapter declares "
        "(conventions.bool_mask), an additive one rounded like any float array"
    ),
    "layer_mask": (
        "nn.MultiheadAttention mask: boolean True = not allowed whatever bool_mask declares, "
        "or float (added), rounded like any float array"
    ),
    "index": "integer array (token ids, positions): converted unrounded",
    "params": "dict of parameter arrays named by the torch module's state_dict keys: rounded",
    "value": "plain Python value (a flag, a size, a scalar, a dtype name): passed as it is",
}


@dataclass(frozen=True)
class Argument:
    """One parameter of a component's adapter method: its name and kind."""

    name: str
    kind: ArgumentKind = "value"

    def __post_init__(self) -> None:
        if self.kind not in ARGUMENT_KINDS:
            raise ValueError(f"unknown argument kind {self.kind!r}")


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def _family_properties(path: str) -> tuple[Any, ...]:
    """The properties a family's ``properties()`` builds, built once per process."""
    return tuple(_resolve(path)())


@dataclass(frozen=True)
class Family:
    """Blocks whose oracle code lives in the same modules: where their reference, tolerance,
    strategy and properties are, as ``"module:function"`` paths (the protocol of the module
    docstring)."""

    name: str
    reference: str
    tolerance: str
    strategy: str
    properties: str


@dataclass(frozen=True)
class Component:
    """The record of one component (see the module docstring). ``method`` defaults to
    ``name``."""

    name: str
    family: Family
    arguments: tuple[Argument, ...]
    summary: str
    derive_page: str
    method: str = ""
    #: the fields of :class:`~transpec.spec.conventions.Conventions` that change its reference
    conventions: tuple[str, ...] = ()
    #: the block's own functions that its family's shared code calls (``"name":
    #: "module:function"``), e.g. the layers' ``"forward"`` or the kernels' ``"emulate"``: what
    #: would otherwise be a switch on the component's name inside the family
    hooks: Mapping[str, str] = field(default_factory=dict)
    #: the arguments its backward pass differentiates (``"q"``, ``"weight"``, ...): the
    #: gradients an adapter's ``vjp`` returns (for those that are float arrays in the call),
    #: judged by the ``"vjp_reference"`` and ``"vjp_rule"`` hooks and the
    #: ``"gradient_properties"`` of :mod:`transpec.oracle.gradients`; empty: no backward oracle.
    #: A layer's parameters are named by their key in ``params`` (``"linear1.weight"``)
    gradients: tuple[str, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.method:
            object.__setattr__(self, "method", self.name)

    # -- the signature ----------------------------------------------------------------------

    @property
    def argument_names(self) -> tuple[str, ...]:
        """Every parameter of the adapter method, in the order of its signature."""
        return tuple(a.name for a in self.arguments)

    def arguments_of(self, *kinds: ArgumentKind) -> tuple[str, ...]:
        """The names of the arguments of the given kinds."""
        return tuple(a.name for a in self.arguments if a.kind in kinds)

    @property
    def takes_params(self) -> bool:
        """True for the layer components, whose weights come as a dict of arrays."""
        return bool(self.arguments_of("params"))

    @property
    def groups_kv(self) -> bool:
        """True when the component takes grouped K/V (an ``enable_gqa`` flag)."""
        return "enable_gqa" in self.argument_names

    # -- the oracle -------------------------------------------------------------------------

    @property
    def reference(self) -> str:
        """Where the float64 reference is (``"module:function"``)."""
        return self.family.reference

    @property
    def tolerance(self) -> str:
        """Where the tolerance rule is."""
        return self.family.tolerance

    @property
    def strategy(self) -> str:
        """Where the default input strategy is."""
        return self.family.strategy

    @property
    def properties(self) -> str:
        """Where the family's properties are built."""
        return self.family.properties

    def _function(self, role: str) -> Callable[..., Any]:
        if role not in self._cache:
            self._cache[role] = _resolve(getattr(self, role))
        return self._cache[role]

    def hook(self, name: str) -> Callable[..., Any]:
        """The block's function ``name`` (:attr:`hooks`); ``LookupError`` naming the component
        when it declares none."""
        key = f"hook:{name}"
        if key not in self._cache:
            if name not in self.hooks:
                raise LookupError(f"{self.name} declares no {name!r} hook")
            self._cache[key] = _resolve(self.hooks[name])
        return self._cache[key]

    def compute_reference(
        self,
        args: Any,
        *,
        conventions: Any,
        dtype: str = "float64",
        semantics: Any = None,
        rows: Any = None,
    ) -> Any:
        """The float64 reference on ``args`` (see the protocol in the module docstring).

        ``rows``: the query rows to compute (attention only: indices or ``"sampled"``); passed
        on only when given, so families without rows keep the protocol's signature."""
        extra = {} if rows is None else {"rows": rows}
        return self._function("reference")(
            self.name, args, conventions=conventions, dtype=dtype, semantics=semantics, **extra
        )

    def compute_tolerance(self, reference: Any, dtype: str, precision: Any) -> Any:
        """The per-element bound of the tolerance model for ``reference``."""
        return self._function("tolerance")(self.name, reference, dtype, precision)

    def inputs(self, dtype: str, **options: Any) -> Any:
        """The default strategy of this component's arguments in ``dtype``."""
        return self._function("strategy")(self.name, dtype, **options)

    def property_list(self) -> tuple[Any, ...]:
        """This component's properties, in catalogue order: its family's, then those of its
        backward pass (the ``"gradient_properties"`` hook), which a run includes on request."""
        own = tuple(p for p in _family_properties(self.properties) if p.component == self.name)
        if "gradient_properties" in self.hooks:
            backward = _family_properties(self.hooks["gradient_properties"])
            own += tuple(p for p in backward if p.component == self.name)
        return own


def _args(*spec: str) -> tuple[Argument, ...]:
    """``"q:array"``, ``"scale"`` (a value) ... -> Arguments."""
    out = []
    for item in spec:
        name, _, kind = item.partition(":")
        out.append(Argument(name, kind or "value"))  # type: ignore[arg-type]
    return tuple(out)


_MHA_ARGS = (
    "query:array",
    "key:array",
    "value:array",
    "params:params",
    "num_heads",
    "key_padding_mask:layer_mask",
    "attn_mask:layer_mask",
    "is_causal",
    "batch_first",
)
#: where the layers' hooks are
_LAYER_TOLERANCE = "transpec.oracle.layers.tolerance"
_LAYER_STRATEGIES = "transpec.oracle.layers.strategies"


def _layer_hooks(name: str, derivation: str) -> dict[str, str]:
    """The hooks of layer ``name``: its ``"forward"`` pass with error bounds
    (``forward_<name>(tracker, args, semantics) -> (value, bound)``) and the ``"derivation"``
    text of its tolerance (``derivation(component, args, semantics, units, stats, rel) ->
    str``), both in :mod:`transpec.oracle.layers.tolerance`, and the ``"draw"`` of its own
    arguments (``draw_<name>(draw, shared) -> dict``, :mod:`transpec.oracle.layers.strategies`)."""
    return {
        "forward": f"{_LAYER_TOLERANCE}:forward_{name}",
        "derivation": f"{_LAYER_TOLERANCE}:{derivation}",
        "draw": f"{_LAYER_STRATEGIES}:draw_{name}",
    }


#: softmax, attention and the norms: the kernels generated from the SymPy definitions
KERNELS = Family(
    "kernels",
    reference="transpec.oracle.kernels.reference:compute_component",
    tolerance="transpec.oracle.kernels.tolerance:tolerance",
    strategy="transpec.oracle.kernels.strategies:inputs",
    properties="transpec.oracle.kernels.properties:core_properties",
)
#: the token embedding and the positional encodings
POSITIONAL = Family(
    "positional",
    reference="transpec.oracle.positional.reference:compute_component",
    tolerance="transpec.oracle.kernels.tolerance:tolerance",
    strategy="transpec.oracle.positional.strategies:inputs",
    properties="transpec.oracle.positional.properties:positional_properties",
)
#: LLaMA's SwiGLU feed-forward: one block, one module
SWIGLU = Family(
    "swiglu",
    reference="transpec.oracle.swiglu:compute_component",
    tolerance="transpec.oracle.swiglu:tolerance",
    strategy="transpec.oracle.swiglu:inputs",
    properties="transpec.oracle.swiglu:properties",
)
#: the layers with nn.MultiheadAttention / nn.Transformer*Layer semantics
LAYERS = Family(
    "layers",
    reference="transpec.oracle.layers.tolerance:layer_reference",
    tolerance="transpec.oracle.layers.tolerance:tolerance",
    strategy="transpec.oracle.layers.strategies:layer_inputs",
    properties="transpec.oracle.layers.properties:layer_properties",
)

#: where the kernels' gradient properties are built
_GRADIENT_PROPERTIES = "transpec.oracle.gradients.properties:gradient_properties"
_LAYER_GRADIENTS = "transpec.oracle.gradients.layers"


def _layer_gradient_hooks(name: str) -> dict[str, str]:
    """The backward hooks of layer ``name``: the chain rule through its composition
    (:mod:`transpec.oracle.gradients.layers`) and its gradient properties."""
    return {
        "vjp_reference": f"{_LAYER_GRADIENTS}:{name}_gradient",
        "vjp_rule": f"{_LAYER_GRADIENTS}:layer_rules",
        "gradient_properties": "transpec.oracle.gradients.layer_properties:properties",
    }


_MHA_GRADS = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
_FFN_GRADS = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")
_NORM_GRADS = ("weight", "bias")

_RECORDS: tuple[Component, ...] = (
    Component(
        "softmax",
        KERNELS,
        _args("x:array", "dim"),
        summary="row softmax; large logits past exp overflow, -inf entries, rows of one scale",
        derive_page="softmax",
        hooks={
            "reference": "transpec.oracle.kernels.reference:softmax_reference",
            "rule": "transpec.oracle.kernels.tolerance:softmax_rule",
            "emulate": "transpec.oracle.kernels.emulate:softmax",
            "highprec": "transpec.oracle.kernels.highprec:softmax",
            "regime": "transpec.oracle.kernels.regime:softmax_regime",
            "vjp_reference": "transpec.oracle.gradients.reference:softmax_gradient",
            "vjp_rule": "transpec.oracle.gradients.tolerance:softmax_rules",
            "vjp_highprec": "transpec.oracle.gradients.reference:softmax_highprec",
            "gradient_properties": _GRADIENT_PROPERTIES,
        },
        gradients=("x",),
    ),
    Component(
        "attention",
        KERNELS,
        _args(
            "q:array",
            "k:array",
            "v:array",
            "attn_mask:mask",
            "is_causal",
            "scale",
            "enable_gqa",
            "softcap",
        ),
        summary=(
            "scaled dot-product attention; Lq != Lk both ways, decode, odd lengths, GQA, boolean "
            "and additive masks, fully masked rows, large logits, custom and negative scale, "
            "softcap (passed only when drawn)"
        ),
        derive_page="attention",
        conventions=(
            "bool_mask",
            "mask_fill",
            "causal_alignment",
            "fully_masked_row",
            "gqa_mapping",
            "mask_fill_mode",
        ),
        method="scaled_dot_product_attention",
        hooks={
            "reference": "transpec.oracle.kernels.reference:attention_reference",
            "rule": "transpec.oracle.kernels.tolerance:attention_rule",
            "emulate": "transpec.oracle.kernels.emulate:attention",
            "highprec": "transpec.oracle.kernels.highprec:attention",
            "regime": "transpec.oracle.kernels.regime:attention_regime",
            "vjp_reference": "transpec.oracle.gradients.reference:attention_gradient",
            "vjp_rule": "transpec.oracle.gradients.tolerance:attention_rules",
            "vjp_highprec": "transpec.oracle.gradients.reference:attention_highprec",
            "gradient_properties": _GRADIENT_PROPERTIES,
        },
        gradients=("q", "k", "v", "attn_mask"),
    ),
    Component(
        "layer_norm",
        KERNELS,
        _args("x:array", "normalized_shape", "weight:array", "bias:array", "eps"),
        summary="LayerNorm; sigma^2 near eps, |mu| >> sigma, small n, multi-dim normalized shapes",
        derive_page="layer_norm",
        conventions=("layer_norm_variance", "layer_norm_eps", "layer_norm_variance_algorithm"),
        hooks={
            "reference": "transpec.oracle.kernels.reference:layer_norm_reference",
            "rule": "transpec.oracle.kernels.tolerance:layer_norm_rule",
            "emulate": "transpec.oracle.kernels.emulate:layer_norm",
            "highprec": "transpec.oracle.kernels.highprec:layer_norm",
            "regime": "transpec.oracle.kernels.regime:norm_regime",
            "vjp_reference": "transpec.oracle.gradients.reference:layer_norm_gradient",
            "vjp_rule": "transpec.oracle.gradients.tolerance:layer_norm_rules",
            "vjp_highprec": "transpec.oracle.gradients.reference:layer_norm_highprec",
            "gradient_properties": _GRADIENT_PROPERTIES,
        },
        gradients=("x", "weight", "bias"),
    ),
    Component(
        "rms_norm",
        KERNELS,
        _args("x:array", "normalized_shape", "weight:array", "eps"),
        summary="RMSNorm; tiny mean square, eps=None (the dtype's machine epsilon), multi-dim",
        derive_page="rms_norm",
        conventions=("rms_norm_eps", "rms_norm_weight", "rms_norm_default_eps"),
        hooks={
            "reference": "transpec.oracle.kernels.reference:rms_norm_reference",
            "rule": "transpec.oracle.kernels.tolerance:rms_norm_rule",
            "emulate": "transpec.oracle.kernels.emulate:rms_norm",
            "highprec": "transpec.oracle.kernels.highprec:rms_norm",
            "regime": "transpec.oracle.kernels.regime:norm_regime",
            "vjp_reference": "transpec.oracle.gradients.reference:rms_norm_gradient",
            "vjp_rule": "transpec.oracle.gradients.tolerance:rms_norm_rules",
            "vjp_highprec": "transpec.oracle.gradients.reference:rms_norm_highprec",
            "gradient_properties": _GRADIENT_PROPERTIES,
        },
        gradients=("x", "weight"),
    ),
    Component(
        "embedding",
        POSITIONAL,
        _args("input:index", "weight:array", "scale_by_sqrt_d"),
        summary="token embedding lookup, optionally scaled by sqrt(d); repeated and boundary ids",
        derive_page="embedding",
        hooks={"rule": "transpec.oracle.positional.tolerance:embedding_rule"},
    ),
    Component(
        "sinusoidal_positional_encoding",
        POSITIONAL,
        _args("length", "d_model", "offset", "dtype"),
        summary="sinusoidal table; long positions, odd d_model, offsets",
        derive_page="sinusoidal_positional_encoding",
        hooks={"rule": "transpec.oracle.positional.tolerance:sinusoidal_rule"},
        conventions=("sinusoidal_layout", "sinusoidal_frequencies"),
    ),
    Component(
        "rotary_embedding",
        POSITIONAL,
        _args("x:array", "positions:index", "offset", "base"),
        summary="rotary embedding (RoPE); explicit positions, offsets, bases, long positions",
        derive_page="rotary_embedding",
        hooks={"rule": "transpec.oracle.positional.tolerance:rotary_rule"},
        conventions=("rope_pairing",),
    ),
    Component(
        "alibi_bias",
        POSITIONAL,
        _args("num_heads", "query_length", "key_length", "dtype"),
        summary="ALiBi bias; head counts that are and are not powers of two, Lq != Lk",
        derive_page="alibi_bias",
        hooks={"rule": "transpec.oracle.positional.tolerance:alibi_rule"},
    ),
    Component(
        "multi_head_attention",
        LAYERS,
        _args(*_MHA_ARGS),
        summary=(
            "nn.MultiheadAttention output; self and cross attention, kdim/vdim, masks, "
            "batch_first both ways"
        ),
        derive_page="multi_head_attention",
        conventions=("fully_masked_row", "mask_fill", "mask_fill_mode"),
        hooks={
            **_layer_hooks("multi_head_attention", "propagation_derivation"),
            **_layer_gradient_hooks("multi_head_attention"),
        },
        gradients=(
            "query",
            "key",
            "value",
            *_MHA_GRADS[:2],
            "q_proj_weight",
            "k_proj_weight",
            "v_proj_weight",
            *_MHA_GRADS[2:],
        ),
    ),
    Component(
        "multi_head_attention_weights",
        LAYERS,
        _args(*_MHA_ARGS, "average_attn_weights"),
        summary="the attention weights nn.MultiheadAttention returns with need_weights=True",
        derive_page="multi_head_attention",
        conventions=("fully_masked_row", "mask_fill", "mask_fill_mode"),
        hooks={
            **_layer_hooks("multi_head_attention_weights", "weights_derivation"),
            **_layer_gradient_hooks("multi_head_attention_weights"),
        },
        # the weights read the query and key projections only (no value, no out-projection)
        gradients=("query", "key", *_MHA_GRADS[:2], "q_proj_weight", "k_proj_weight"),
    ),
    Component(
        "feed_forward",
        LAYERS,
        _args("x:array", "params:params", "activation"),
        summary="linear2(activation(linear1(x))) with relu, exact and tanh GELU",
        derive_page="feed_forward",
        hooks={
            **_layer_hooks("feed_forward", "propagation_derivation"),
            **_layer_gradient_hooks("feed_forward"),
        },
        gradients=("x", *_FFN_GRADS),
    ),
    Component(
        "encoder_layer",
        LAYERS,
        _args(
            "src:array",
            "params:params",
            "nhead",
            "norm_first",
            "activation",
            "layer_norm_eps",
            "src_mask:layer_mask",
            "src_key_padding_mask:layer_mask",
            "is_causal",
            "batch_first",
        ),
        summary="nn.TransformerEncoderLayer in eval mode; pre- and post-LN, masks, activations",
        derive_page="encoder_layer",
        conventions=("fully_masked_row", "mask_fill", "mask_fill_mode"),
        hooks={
            **_layer_hooks("encoder_layer", "propagation_derivation"),
            **_layer_gradient_hooks("encoder_layer"),
        },
        gradients=(
            "src",
            *(f"self_attn.{k}" for k in _MHA_GRADS),
            *_FFN_GRADS,
            *(f"norm{i}.{k}" for i in (1, 2) for k in _NORM_GRADS),
        ),
    ),
    Component(
        "decoder_layer",
        LAYERS,
        _args(
            "tgt:array",
            "memory:array",
            "params:params",
            "nhead",
            "norm_first",
            "activation",
            "layer_norm_eps",
            "tgt_mask:layer_mask",
            "memory_mask:layer_mask",
            "tgt_key_padding_mask:layer_mask",
            "memory_key_padding_mask:layer_mask",
            "tgt_is_causal",
            "batch_first",
        ),
        summary="nn.TransformerDecoderLayer in eval mode; causal self-attention, memory padding",
        derive_page="decoder_layer",
        conventions=("fully_masked_row", "mask_fill", "mask_fill_mode"),
        hooks={
            **_layer_hooks("decoder_layer", "decoder_derivation"),
            **_layer_gradient_hooks("decoder_layer"),
        },
        gradients=(
            "tgt",
            "memory",
            *(f"self_attn.{k}" for k in _MHA_GRADS),
            *(f"multihead_attn.{k}" for k in _MHA_GRADS),
            *_FFN_GRADS,
            *(f"norm{i}.{k}" for i in (1, 2, 3) for k in _NORM_GRADS),
        ),
    ),
    Component(
        "swiglu_feed_forward",
        SWIGLU,
        _args("x:array", "params:params"),
        summary=(
            "LLaMA's SwiGLU FFN w2(silu(w1 x) * w3 x), bias-free; d = 1, hidden sizes not "
            "multiples of 8, leading dims, saturating silu, negative gates"
        ),
        derive_page="swiglu_feed_forward",
        hooks=_layer_gradient_hooks("swiglu_feed_forward"),
        gradients=("x", "w1.weight", "w2.weight", "w3.weight"),
    ),
)

#: every component, by name, in the order reports list them
REGISTRY: dict[str, Component] = {record.name: record for record in _RECORDS}


def names(family: str | None = None) -> tuple[str, ...]:
    """The registered component names (of one family)."""
    return tuple(n for n, c in REGISTRY.items() if family is None or c.family.name == family)


def get(name: str) -> Component:
    """The record of component ``name``; the one place an unknown name is reported."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownComponentError(
            f"unknown component {name!r}; expected one of {', '.join(REGISTRY)}"
        ) from None
