"""The adapter contract: how an implementation under test is plugged into transpec.

An adapter is the implementation under test plus what it declares about itself:

* **components** -- methods that mirror the PyTorch functional signatures people know. A method
  that is absent (or ``None``) means "not provided": its properties are reported as skipped.

  ====================  ===========================================================================
  component             method
  ====================  ===========================================================================
  ``softmax``           ``softmax(x, dim=-1)``
  ``attention``         ``scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False,
                        scale=None, enable_gqa=False)``
  ``layer_norm``        ``layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)``
  ``rms_norm``          ``rms_norm(x, normalized_shape, weight=None, eps=None)``
  ``embedding``         ``embedding(input, weight, scale_by_sqrt_d=False)``
  ``sinusoidal_         ``sinusoidal_positional_encoding(length, d_model, offset=0, dtype=...)``
  positional_encoding``
  ``rotary_embedding``  ``rotary_embedding(x, positions=None, offset=0, base=10000.0)``
  ``alibi_bias``        ``alibi_bias(num_heads, query_length, key_length, dtype=...)``
  ``multi_head_``       ``multi_head_attention(query, key, value, params, num_heads,
  attention``           key_padding_mask=None, attn_mask=None, is_causal=False,
                        batch_first=True)``
  ``multi_head_``       ``multi_head_attention_weights(query, key, value, params, num_heads,
  attention_weights``   key_padding_mask=None, attn_mask=None, is_causal=False, batch_first=True,
                        average_attn_weights=True)``: the weights of ``need_weights=True``,
                        (B, Lq, Lk) averaged over heads, else (B, H, Lq, Lk)
  ``feed_forward``      ``feed_forward(x, params, activation="relu")``
  ``encoder_layer``     ``encoder_layer(src, params, nhead, norm_first=False, activation="relu",
                        layer_norm_eps=1e-5, src_mask=None, src_key_padding_mask=None,
                        is_causal=False, batch_first=True)``
  ``decoder_layer``     ``decoder_layer(tgt, memory, params, nhead, norm_first=False,
                        activation="relu", layer_norm_eps=1e-5, tgt_mask=None, memory_mask=None,
                        tgt_key_padding_mask=None, memory_key_padding_mask=None,
                        tgt_is_causal=False, batch_first=True)``
  ====================  ===========================================================================

  Shapes follow PyTorch: attention takes ``q: (..., Hq, Lq, E)``, ``k: (..., Hkv, Lk, E)``,
  ``v: (..., Hkv, Lk, Ev)`` and returns ``(..., Hq, Lq, Ev)``; ``attn_mask`` broadcasts to
  ``(..., Hq, Lq, Lk)`` and is boolean or additive (same float dtype as q).
  ``rms_norm`` with ``eps=None`` uses the machine epsilon of the input dtype (as ``F.rms_norm``).
  The embedding and positional components are described in :mod:`transpec.adapters.positional`:
  ``input`` and ``positions`` are integer arrays (converted by ``index_to_native``, never
  rounded); components without a float input receive ``dtype``, the name of the dtype under test
  (``"float16"``, ...), and return an array of that dtype.

  The layer components (:mod:`transpec.adapters.layers`) have the semantics of
  ``nn.MultiheadAttention``, ``linear2(activation(linear1(x)))``, ``nn.TransformerEncoderLayer``
  and ``nn.TransformerDecoderLayer`` in eval mode (no dropout). ``params`` is a dict of native
  arrays named by the torch module's ``state_dict`` keys (``"in_proj_weight"``,
  ``"self_attn.out_proj.bias"``, ``"linear1.weight"``, ``"norm2.bias"``, ...);
  ``activation`` is ``"relu"``, ``"gelu"`` (exact, erf) or ``"gelu_tanh"``. Their masks have
  ``nn.MultiheadAttention``'s meaning as part of the signature: a boolean mask is True where
  attention is *not* allowed (whatever ``bool_mask`` declares: that convention belongs to the
  ``attention`` component's SDPA signature), a float mask is added to the scaled scores.
  Shapes: (B, L, E) with ``batch_first``, else (L, B, E); ``key_padding_mask`` (B, S);
  ``attn_mask`` (L, S).

* **conventions** -- a :class:`transpec.spec.conventions.Conventions` naming every semantic
  choice where the implementation differs from transpec's canonical one.
* **dtypes, devices, precision** -- which dtypes and devices to test, and for each component and
  dtype the precision it accumulates in and the precision it stores intermediates in; the
  tolerance model is derived from these.
* **conversion** -- ``to_native`` turns a float64 (or bool) NumPy array into the framework's
  array in the dtype and device under test; ``from_native`` turns a result back into NumPy. The
  component methods then receive and return native arrays, so a user's method body can be the
  call to their own kernel and nothing else.

Every component method receives native arrays and returns one native array. The harness checks
its type, shape, dtype and finiteness; an exception, a hang, or a wrong result is a reported
failure, never a crash of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transpec.oracle.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

#: component name -> name of the adapter method that implements it
COMPONENT_METHODS: dict[str, str] = {
    "softmax": "softmax",
    "attention": "scaled_dot_product_attention",
    "layer_norm": "layer_norm",
    "rms_norm": "rms_norm",
    "embedding": "embedding",
    "sinusoidal_positional_encoding": "sinusoidal_positional_encoding",
    "rotary_embedding": "rotary_embedding",
    "alibi_bias": "alibi_bias",
    "multi_head_attention": "multi_head_attention",
    "multi_head_attention_weights": "multi_head_attention_weights",
    "feed_forward": "feed_forward",
    "encoder_layer": "encoder_layer",
    "decoder_layer": "decoder_layer",
}

COMPONENTS: tuple[str, ...] = tuple(COMPONENT_METHODS)


@dataclass(frozen=True)
class Precision:
    """Where an implementation rounds, as names of dtypes.

    ``accumulate``: the precision of sums and dot products (and of softmax/statistics math);
    ``store``: the precision intermediates (scores, probabilities, normalized values) are
    rounded to between stages. The output is always rounded to the dtype under test.
    """

    accumulate: str
    store: str


class Adapter:
    """Base class of adapters. Subclass it, set the class attributes, implement components.

    The default conversion treats native arrays as NumPy arrays of the dtype under test (which
    NumPy must know: float64, float32, float16). Override ``to_native``/``from_native`` for a
    framework.
    """

    #: short name shown in reports
    name: str = "adapter"
    #: name of the framework the native arrays belong to ("numpy", "torch", ...)
    framework: str = "numpy"
    #: the semantic choices this implementation makes
    conventions: Conventions = Conventions()
    #: dtypes to test by default
    dtypes: tuple[str, ...] = ("float64", "float32", "float16")
    #: devices to test by default
    devices: tuple[str, ...] = ("cpu",)
    #: seconds one component call may take before it counts as hung
    call_timeout: float = 60.0
    #: whether the attention method runs grouped-query attention (``enable_gqa=True`` with
    #: Hq a multiple of Hkv). Declared, never probed: with True (the default) and a method that
    #: accepts ``enable_gqa``, grouped inputs are passed as they are and a raise on them fails
    #: the property that drew them. With False (or a method without an ``enable_gqa``
    #: parameter), transpec passes K/V repeated per ``conventions.gqa_mapping`` instead and
    #: reports the ``gqa`` property as skipped.
    supports_gqa: bool = True

    # -- declarations -------------------------------------------------------------------------

    def precision(self, component: str, dtype: str) -> Precision:
        """Declared internal precision. Default: float32 math for float16/bfloat16 inputs,
        the input dtype otherwise; intermediates stored in the input dtype."""
        dtype = canonical_dtype(dtype)
        accumulate = "float32" if dtype in ("float16", "bfloat16") else dtype
        return Precision(accumulate=accumulate, store=dtype)

    def provides(self, component: str) -> bool:
        """True when the adapter implements ``component``."""
        method = COMPONENT_METHODS.get(component)
        return method is not None and callable(getattr(self, method, None))

    def components(self) -> tuple[str, ...]:
        return tuple(c for c in COMPONENTS if self.provides(c))

    def available_devices(self) -> tuple[str, ...]:
        """The declared devices that exist on this machine (default: all declared)."""
        return self.devices

    def describe(self) -> str:
        """One line for report headers: name, framework, versions."""
        return f"{self.name} ({self.framework})"

    # -- conversion ---------------------------------------------------------------------------

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        """A float64/bool NumPy array -> native array of ``dtype`` on ``device``.

        Boolean arrays stay boolean; float arrays are rounded to ``dtype`` here.
        """
        if array.dtype == np.bool_:
            return np.array(array, dtype=np.bool_)
        return np.asarray(array, dtype=np.dtype(canonical_dtype(dtype)))

    def index_to_native(self, array: np.ndarray, device: str) -> Any:
        """An integer NumPy array (token ids, positions) -> native int64 array on ``device``."""
        return np.asarray(array, dtype=np.int64)

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        """A native array -> (float64 NumPy array, canonical dtype name of the native array)."""
        arr = np.asarray(value)
        return np.asarray(arr, dtype=np.float64), canonical_dtype(arr.dtype.name)

    def is_native(self, value: Any) -> bool:
        """True when ``value`` is an array of this adapter's framework."""
        return isinstance(value, np.ndarray)

    def synchronize(self, device: str) -> None:
        """Wait for queued device work (CUDA adapters override this)."""


class FunctionAdapter(Adapter):
    """Wraps a bare function as an adapter providing one component.

    >>> def my_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    ...     ...
    >>> adapter = FunctionAdapter(my_attention, component="attention")

    The function is called with the component's signature (see :data:`COMPONENT_METHODS`),
    on arrays produced by ``base`` (NumPy by default; pass a framework adapter to take over its
    conversion, dtypes and devices).
    """

    def __init__(
        self,
        function: Callable[..., Any],
        component: str,
        *,
        base: Adapter | None = None,
        conventions: Conventions | None = None,
        dtypes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        if component not in COMPONENT_METHODS:
            raise ValueError(
                f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}"
            )
        if not callable(function):
            raise TypeError(f"{function!r} is not callable")
        self._function = function
        self._component = component
        self._base = base if base is not None else Adapter()
        self.conventions = conventions if conventions is not None else self._base.conventions
        self.dtypes = tuple(canonical_dtype(d) for d in (dtypes or self._base.dtypes))
        self.devices = self._base.devices
        self.call_timeout = self._base.call_timeout
        self.name = name or str(getattr(function, "__qualname__", "function"))
        self.framework = self._base.framework
        setattr(self, COMPONENT_METHODS[component], function)

    def provides(self, component: str) -> bool:
        return component == self._component

    def precision(self, component: str, dtype: str) -> Precision:
        return self._base.precision(component, dtype)

    def available_devices(self) -> tuple[str, ...]:
        return self._base.available_devices()

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        return self._base.to_native(array, dtype, device)

    def index_to_native(self, array: np.ndarray, device: str) -> Any:
        return self._base.index_to_native(array, device)

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        return self._base.from_native(value)

    def is_native(self, value: Any) -> bool:
        return self._base.is_native(value)

    def synchronize(self, device: str) -> None:
        self._base.synchronize(device)
