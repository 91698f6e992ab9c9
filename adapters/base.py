"""The adapter contract: how an implementation under test is plugged into transpec.

An adapter is the implementation under test plus what it declares about itself:

* **components** -- methods that mirror the PyTorch functional signatures people know. A method
  that is absent (or ``None``) means "not provided": its properties are reported as skipped.
  Every component's method and signature is in its registry record
  (:mod:`transpec.oracle.components`); ``transpec list components`` prints them, e.g.
  ``softmax(x, dim=-1)``, ``scaled_dot_product_attention(q, k, v, attn_mask=None,
  is_causal=False, scale=None, enable_gqa=False)``, ``layer_norm(x, normalized_shape,
  weight=None, bias=None, eps=1e-5)``, ``encoder_layer(src, params, nhead, ...)``.

  Shapes follow PyTorch: attention takes ``q: (..., Hq, Lq, E)``, ``k: (..., Hkv, Lk, E)``,
  ``v: (..., Hkv, Lk, Ev)`` and returns ``(..., Hq, Lq, Ev)``; ``attn_mask`` broadcasts to
  ``(..., Hq, Lq, Lk)`` and is boolean or additive (same float dtype as q).
  ``rms_norm`` with ``eps=None`` uses the machine epsilon of the input dtype (as ``F.rms_norm``).
  The embedding and positional components are described in
  :mod:`transpec.adapters.torch.positional`: ``input`` and ``positions`` are integer arrays
  (converted by ``index_to_native``, never rounded); components without a float input receive
  ``dtype``, the name of the dtype under test (``"float16"``, ...), and return an array of that
  dtype.

  The layer components (:mod:`transpec.adapters.torch.layers`) have the semantics of
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

The arrays a method receives are its own: converted afresh for each call, shared with nothing
the harness judges by. A method must not modify them (nor the ``params`` dict): the harness
reads every input back after the call (``from_native``, ``to_numpy`` for boolean and integer
arrays), and a change is a failure of kind ``"mutated_input"``. The declarations are read once:
:func:`validate_adapter` checks them before a run (one-line
:class:`~transpec.errors.AdapterDeclarationError`) and returns the :class:`Declared` snapshot
the run is judged under; a method that changes its adapter's ``conventions`` fails with kind
``"changed_conventions"`` and is still judged under the snapshot.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transpec.errors import AdapterDeclarationError
from transpec.oracle import components as registry
from transpec.oracle.components import names as component_names
from transpec.oracle.engine.dtypes import canonical_dtype, numpy_dtype
from transpec.spec.conventions import Conventions

#: every component name, in registry order (:data:`transpec.oracle.components.REGISTRY`)
COMPONENTS: tuple[str, ...] = component_names()


@dataclass(frozen=True)
class Precision:
    """Where an implementation rounds, as names of dtypes.

    ``accumulate``: the precision of sums and dot products (and of softmax/statistics math);
    ``store``: the precision intermediates (scores, probabilities, normalized values) are
    rounded to between stages; ``elementwise``: the precision of the element-wise math (the
    shift x - max, exp, the division by a sum, the scaling of scores, x - mean and the affine
    of the norms), None for the same as ``accumulate``. ``Precision("float32", "bfloat16",
    elementwise="bfloat16")`` is jax.nn's half-precision softmax: x - max, exp and the division
    in the input dtype, the sum in float32 (docs/tolerance.md §2.7). The output is always
    rounded to the dtype under test. Every name is checked (``ValueError``, one line).
    """

    accumulate: str
    store: str
    elementwise: str | None = None

    def __post_init__(self) -> None:
        for knob in ("accumulate", "store", "elementwise"):
            value = getattr(self, knob)
            if value is None and knob == "elementwise":
                continue
            if not isinstance(value, str):
                raise ValueError(
                    f"Precision.{knob} must be a dtype name, got {type(value).__name__}"
                )
            try:
                canonical_dtype(value)
            except ValueError as exc:
                raise ValueError(f"Precision.{knob}: {exc}") from None

    @property
    def elementwise_dtype(self) -> str:
        """The canonical name of the element-wise precision (``accumulate`` when undeclared)."""
        return canonical_dtype(self.elementwise or self.accumulate)


class Adapter:
    """Base class of adapters. Subclass it, set the class attributes, implement components.

    The default conversion treats native arrays as NumPy arrays of the dtype under test
    (float64, float32, float16, and bfloat16 as ``ml_dtypes.bfloat16``). Override
    ``to_native``/``from_native`` for a framework.
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
    #: the thread model: each call runs in a new daemon thread (False, the default) so that a
    #: hang can be timed out; True runs every call of this adapter in one dedicated worker
    #: thread, in order, for libraries whose state is bound to the thread that made it (a
    #: kernel cache, a device context). A hung call then loses that worker: the next call gets
    #: a new one. Conversions (``to_native``/``from_native``) run in the run's own thread.
    dedicated_thread: bool = False

    # -- declarations -------------------------------------------------------------------------

    def precision(self, component: str, dtype: str) -> Precision:
        """Declared internal precision. Default: float32 math for float16/bfloat16 inputs,
        the input dtype otherwise; intermediates stored in the input dtype."""
        dtype = canonical_dtype(dtype)
        accumulate = "float32" if dtype in ("float16", "bfloat16") else dtype
        return Precision(accumulate=accumulate, store=dtype)

    def provides(self, component: str) -> bool:
        """True when the adapter implements ``component``."""
        record = registry.REGISTRY.get(component)
        return record is not None and callable(getattr(self, record.method, None))

    def components(self) -> tuple[str, ...]:
        return tuple(c for c in COMPONENTS if self.provides(c))

    def available_devices(self) -> tuple[str, ...]:
        """The declared devices that exist on this machine (default: all declared)."""
        return self.devices

    # -- optional declarations (defaults: none) -------------------------------------------------

    def component_dtypes(self, component: str) -> tuple[str, ...] | None:
        """The dtypes the implementation supports for ``component``, where that is fewer than
        :attr:`dtypes` (a library with a bfloat16 LayerNorm but no bfloat16 softmax); None:
        all of :attr:`dtypes` (default). A declared dtype outside it is skipped for that
        component, with the reason."""
        return None

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """Why the implementation rejects these arguments *by design* (e.g. a kernel without
        ``Ev != E``), or None when it takes them. An example it rejects is discarded: neither a
        failure nor a pass. ``args`` hold NumPy arrays (read their shapes, not their values).
        Default: every argument is taken."""
        return None

    def layer_semantics(self, component: str, args: Mapping[str, Any]) -> dict[str, str]:
        """What a layer implementation computes where its code paths differ, for these
        arguments: overrides of ``"fully_masked_row"`` (self-attention, ``"zero"``/``"nan"``),
        ``"cross_fully_masked_row"`` (the decoder's cross-attention), ``"activation"`` (the one
        actually computed) and ``"float_attn_mask"`` (``"additive"`` or
        ``"nonzero_is_masked"``). Default: none; the conventions and the arguments apply
        (:func:`transpec.oracle.layers.tolerance.layer_reference`)."""
        return {}

    def slow_path_adapter(self) -> Adapter | None:
        """The same implementation on its other code path, for ``fast_slow_agreement`` (torch's
        modules have a fused fast path and a slow one); None when it has one path (default)."""
        return None

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
        target = numpy_dtype(dtype)
        if target.name == "bfloat16":  # rounded as the oracle rounds: through float32
            return np.asarray(array, dtype=np.float32).astype(target)
        return np.asarray(array, dtype=target)

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

    def to_numpy(self, value: Any) -> np.ndarray:
        """A native boolean or integer array -> a NumPy copy of it (same values, its own dtype).

        The harness reads boolean masks and index arrays back with it after a call, to check
        that the implementation left them as they were (``from_native`` takes floats only).
        The default suits any array NumPy can convert (``__array__``)."""
        return np.array(value, copy=True)

    def synchronize(self, device: str) -> None:
        """Wait for queued device work (CUDA adapters override this)."""

    # -- gradients (the backward pass) ----------------------------------------------------------

    def backward_precision(self, component: str, dtype: str) -> Precision:
        """Declared precision of the backward pass of ``component`` (many kernels accumulate
        dQ in float32 and store dS in the input dtype). Default: the forward's
        :meth:`precision`."""
        return self.precision(component, dtype)

    def provides_gradients(self, component: str) -> bool:
        """True when the adapter computes the backward pass of ``component``: by default, when
        it has a ``<method>_vjp`` method (``softmax_vjp``, ``layer_norm_vjp``, ...)."""
        record = registry.REGISTRY.get(component)
        return (
            record is not None
            and bool(record.gradients)
            and callable(getattr(self, f"{record.method}_vjp", None))
        )

    def vjp(self, component: str, args: Mapping[str, Any], grad_output: Any) -> Mapping[str, Any]:
        """The vector-Jacobian product of ``component`` at ``args`` (native arrays, keyed by the
        method's parameters) for the cotangent ``grad_output`` (a native array of the output's
        shape): a dict from each differentiable argument (the record's ``gradients``) that is a
        float array in ``args`` to its gradient, a native array of that argument's shape and
        dtype. Default: ``self.<method>_vjp(grad_output, **args)``; a framework with autograd
        overrides this to differentiate the forward method itself."""
        record = registry.get(component)
        method = getattr(self, f"{record.method}_vjp", None)
        if not callable(method):
            raise NotImplementedError(f"{self.name} has no {record.method}_vjp method")
        return dict(method(grad_output, **args))


class FunctionAdapter(Adapter):
    """Wraps a bare function as an adapter providing one component.

    >>> def my_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    ...     ...
    >>> adapter = FunctionAdapter(my_attention, component="attention", base="torch")

    The function is called with the component's signature (its registry record,
    :func:`transpec.oracle.components.get`), on arrays converted by ``base``: an array base
    (:mod:`transpec.adapters.arrays`: ``"numpy"``, the default, ``"torch"``, ``"jax"``) or an
    adapter, of which only the conversion, dtypes and devices are used. What the function
    computes is never inherited from the base: its conventions are the canonical ones unless
    ``conventions`` declares others, its precision the default (:meth:`Adapter.precision`), it
    rejects no input and has one code path.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        component: str,
        *,
        base: Adapter | str | None = None,
        conventions: Conventions | None = None,
        dtypes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        record = registry.get(component)
        if not callable(function):
            raise TypeError(f"{function!r} is not callable")
        self._function = function
        self._component = component
        #: the array base's name when it was given by name (how a saved case reloads it)
        self.base_name: str | None = None
        self._base: Adapter
        if isinstance(base, str):
            from transpec.adapters.arrays import load_array_base

            self.base_name = base
            self._base = load_array_base(base)
        elif base is None:
            from transpec.adapters.arrays import NumpyArrays

            self.base_name = "numpy"
            self._base = NumpyArrays()
        else:
            self._base = base
        self.conventions = conventions if conventions is not None else Conventions()
        self.dtypes = tuple(canonical_dtype(d) for d in (dtypes or self._base.dtypes))
        self.devices = self._base.devices
        self.call_timeout = self._base.call_timeout
        self.name = name or str(getattr(function, "__qualname__", "function"))
        self.framework = self._base.framework
        setattr(self, record.method, function)

    def provides(self, component: str) -> bool:
        return component == self._component

    def provides_gradients(self, component: str) -> bool:
        """The function's backward: by the base's autograd (a torch base differentiates the
        function itself), or a ``<method>_vjp`` attribute set on this adapter."""
        if component != self._component:
            return False
        return type(self._base).vjp is not Adapter.vjp or super().provides_gradients(component)

    def vjp(self, component: str, args: Mapping[str, Any], grad_output: Any) -> Mapping[str, Any]:
        base_vjp = type(self._base).vjp
        if base_vjp is not Adapter.vjp:
            # the base's autograd, applied to this adapter, whose method is the function
            return base_vjp(self, component, args, grad_output)
        return super().vjp(component, args, grad_output)

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

    def to_numpy(self, value: Any) -> np.ndarray:
        return self._base.to_numpy(value)

    def synchronize(self, device: str) -> None:
        self._base.synchronize(device)


# -- declarations, checked once --------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """The declarations a run judges an adapter under, copied when the run begins.

    ``conventions`` is a copy of the adapter's (a method that changes or edits the adapter's
    object during a call changes neither this copy nor the verdicts), ``call_timeout`` the
    checked time limit of one call in seconds."""

    conventions: Conventions
    call_timeout: float

    @classmethod
    def of(cls, adapter: Adapter) -> Declared:
        """The snapshot of ``adapter``'s conventions and time limit, both checked;
        :class:`~transpec.errors.AdapterDeclarationError` naming what is wrong."""
        label = adapter_label(adapter)
        conventions = getattr(adapter, "conventions", None)
        if not isinstance(conventions, Conventions):
            raise AdapterDeclarationError(
                f"adapter {label}: conventions must be a transpec Conventions, got "
                f"{type(conventions).__name__}"
            )
        return cls(dataclasses.replace(conventions), checked_timeout(adapter))

    def conventions_for(self, dtype: str) -> Conventions:
        """The snapshot's conventions with per-dtype values resolved for ``dtype``."""
        return self.conventions.for_dtype(canonical_dtype(dtype))


def adapter_label(adapter: Any) -> str:
    """The adapter's ``name`` for messages (its class name when the name is not a string)."""
    name = getattr(adapter, "name", None)
    return repr(name) if isinstance(name, str) else type(adapter).__name__


def checked_timeout(adapter: Adapter) -> float:
    """``adapter.call_timeout`` as a float; an
    :class:`~transpec.errors.AdapterDeclarationError` unless it is a finite number > 0 (a
    zero, negative, NaN or infinite limit would time every call out or let a hang stop the
    run)."""
    value = getattr(adapter, "call_timeout", None)
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
        and float(value) > 0
    ):
        return float(value)
    raise AdapterDeclarationError(
        f"adapter {adapter_label(adapter)}: call_timeout must be a finite number of seconds "
        f"> 0, got {value!r}"
    )


def _names(adapter: Adapter, attribute: str) -> tuple[str, ...]:
    """``adapter.<attribute>`` checked to be a non-empty tuple (or list) of non-empty names."""
    label = adapter_label(adapter)
    value = getattr(adapter, attribute, None)
    if isinstance(value, str):
        raise AdapterDeclarationError(
            f"adapter {label}: {attribute} must be a tuple of names, got the string {value!r} "
            f"(write ({value!r},))"
        )
    if not isinstance(value, (tuple, list)):
        raise AdapterDeclarationError(
            f"adapter {label}: {attribute} must be a tuple of names, got {type(value).__name__}"
        )
    if not value:
        raise AdapterDeclarationError(f"adapter {label}: {attribute} is empty: nothing to test")
    for item in value:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise AdapterDeclarationError(
                f"adapter {label}: {attribute} must hold names without spaces, got {item!r}"
            )
    return tuple(value)


def _hook(adapter: Adapter, hook: str, *args: Any) -> Any:
    """Call a declaration hook; what it raises becomes one line naming the hook."""
    try:
        return getattr(adapter, hook)(*args)
    except Exception as exc:
        text = " ".join(str(exc).split())
        shown = ", ".join(map(repr, args))
        raise AdapterDeclarationError(
            f"adapter {adapter_label(adapter)}: {hook}({shown}) raised {type(exc).__name__}"
            + (f": {text[:200]}" if text else "")
        ) from None


def validate_adapter(adapter: Adapter) -> Declared:
    """Check what ``adapter`` declares before a run and return the :class:`Declared` snapshot
    to judge it under.

    ``conventions`` a :class:`Conventions`; ``call_timeout`` a finite number > 0; ``dtypes``
    a non-empty tuple of known dtype names; ``devices`` a non-empty tuple of device names;
    ``available_devices()`` and ``provides(component)`` for every component must return
    without raising (``available_devices`` a tuple of names). Anything else is an
    :class:`~transpec.errors.AdapterDeclarationError` (a ``ValueError``) with a one-line
    message: a run planned on such declarations would crash, hang or pass vacuously.
    """
    if not isinstance(adapter, Adapter):
        raise AdapterDeclarationError(f"expected a transpec Adapter, got {type(adapter).__name__}")
    declared = Declared.of(adapter)
    label = adapter_label(adapter)
    for name in _names(adapter, "dtypes"):
        try:
            canonical_dtype(name)
        except ValueError as exc:
            raise AdapterDeclarationError(f"adapter {label}: dtypes: {exc}") from None
        try:
            declared.conventions_for(name)
        except ValueError as exc:
            raise AdapterDeclarationError(f"adapter {label}: {exc}") from None
    _names(adapter, "devices")
    available = _hook(adapter, "available_devices")
    if isinstance(available, str) or not isinstance(available, (tuple, list)):
        raise AdapterDeclarationError(
            f"adapter {label}: available_devices() must return a tuple of names, got "
            f"{type(available).__name__}"
        )
    if not all(isinstance(d, str) for d in available):
        raise AdapterDeclarationError(
            f"adapter {label}: available_devices() must return names, got {available!r}"
        )
    for component in COMPONENTS:
        answer = _hook(adapter, "provides", component)
        if not isinstance(answer, (bool, np.bool_)):
            raise AdapterDeclarationError(
                f"adapter {label}: provides({component!r}) must return True or False, got "
                f"{type(answer).__name__}"
            )
        per_component = _hook(adapter, "component_dtypes", component)
        if per_component is None:
            continue
        if isinstance(per_component, str) or not isinstance(per_component, (tuple, list)):
            raise AdapterDeclarationError(
                f"adapter {label}: component_dtypes({component!r}) must return a tuple of "
                f"dtype names or None, got {type(per_component).__name__}"
            )
        for name in per_component:
            try:
                canonical_dtype(name)
            except (TypeError, ValueError) as exc:
                raise AdapterDeclarationError(
                    f"adapter {label}: component_dtypes({component!r}): {exc}"
                ) from None
    return declared
