"""Finding an adapter by name: the built-in ones, or ``module:attribute`` for your own.

>>> load_adapter("numpy")                                       # doctest: +SKIP
>>> load_adapter("torch-flash")                                 # doctest: +SKIP
>>> load_adapter("my_kernels:MyAdapter")                        # an Adapter subclass or instance
>>> load_adapter("my_kernels:attention", component="attention")  # a bare function

``module:attribute`` is resolved with :func:`importlib.import_module` and a chain of
``getattr`` (``pkg.mod:Outer.attr`` works; nothing is ever evaluated). The current directory is
on ``sys.path`` while the module imports, as under pytest, so ``my_kernels.py`` next to you is
found. Importing this module imports no framework: a built-in adapter imports its framework
when it is loaded.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transpec.adapters.base import Adapter, FunctionAdapter
from transpec.errors import AdapterLoadError
from transpec.oracle import components


@dataclass(frozen=True)
class BuiltinAdapter:
    """A built-in adapter: a one-line description and a factory that imports it when called."""

    description: str
    module: str
    attribute: str
    #: the framework it needs, as the name of the top-level module (None: NumPy only)
    requires: str | None = None
    #: the optional dependency set of transpec that installs it (``pip install 'transpec[X]'``)
    extra: str | None = None

    def __post_init__(self) -> None:
        # report code reads an entry's first docstring line as its summary
        object.__setattr__(self, "__doc__", self.description)

    @property
    def spec(self) -> str:
        """The same adapter as a ``module:attribute`` specification."""
        return f"{self.module}:{self.attribute}"

    def factory(self) -> Adapter:
        """Import the adapter's module and instantiate it (raises ImportError without its
        framework)."""
        cls = getattr(importlib.import_module(self.module), self.attribute)
        adapter: Adapter = cls()
        return adapter

    def __str__(self) -> str:
        return self.description


_TORCH = "transpec.adapters.torch.adapter"

#: name -> built-in adapter (description, lazily importing factory)
BUILTIN_ADAPTERS: dict[str, BuiltinAdapter] = {
    "numpy": BuiltinAdapter(
        "plain NumPy implementation, canonical conventions (float64/32/16, cpu)",
        "transpec.adapters.numpy.adapter",
        "NumpyAdapter",
    ),
    "torch": BuiltinAdapter(
        "torch.nn.functional: softmax, SDPA (default dispatch), layer_norm, rms_norm",
        _TORCH,
        "TorchAdapter",
        "torch",
    ),
    "torch-slow": BuiltinAdapter(
        "torch layer modules on their slow path (gradients enabled, need_weights=False)",
        _TORCH,
        "TorchSlowAdapter",
        "torch",
    ),
    "torch-math": BuiltinAdapter(
        "F.scaled_dot_product_attention on the math backend only",
        _TORCH,
        "TorchMathAdapter",
        "torch",
    ),
    "torch-flash": BuiltinAdapter(
        "F.scaled_dot_product_attention on the flash backend only (CPU and CUDA)",
        _TORCH,
        "TorchFlashAdapter",
        "torch",
    ),
    "torch-efficient": BuiltinAdapter(
        "F.scaled_dot_product_attention on the memory-efficient backend only (CUDA)",
        _TORCH,
        "TorchEfficientAdapter",
        "torch",
    ),
    "torch-cudnn": BuiltinAdapter(
        "F.scaled_dot_product_attention on the cuDNN backend only (CUDA)",
        _TORCH,
        "TorchCuDNNAdapter",
        "torch",
    ),
    "onnxruntime": BuiltinAdapter(
        "ONNX Runtime, CPU provider: opset-23 Softmax, LayerNormalization, RMSNormalization, "
        "Attention",
        "transpec.adapters.onnxruntime.adapter",
        "OnnxRuntimeAdapter",
        "onnxruntime",
        "onnxruntime",
    ),
    "transformers": BuiltinAdapter(
        "Hugging Face transformers, Llama: sdpa_attention_forward, LlamaRMSNorm, "
        "LlamaRotaryEmbedding; BERT's self-attention as multi_head_attention",
        "transpec.adapters.transformers.adapter",
        "TransformersAdapter",
        "transformers",
        "transformers",
    ),
    "transformers-gemma": BuiltinAdapter(
        "Hugging Face transformers, Gemma: Gemma 2's eager_attention_forward (softcap, "
        "additive finfo.min masks), GemmaRMSNorm",
        "transpec.adapters.transformers.adapter",
        "TransformersGemmaAdapter",
        "transformers",
        "transformers",
    ),
    "jax": BuiltinAdapter(
        "JAX on the CPU: jax.nn.softmax, jax.nn.dot_product_attention (XLA); Flax NNX "
        "LayerNorm, RMSNorm, MultiHeadAttention",
        "transpec.adapters.jax.adapter",
        "JaxAdapter",
        "jax",
        "jax",
    ),
    "flax-weights": BuiltinAdapter(
        "Flax NNX MultiHeadAttention with sow_weights=True (its finfo(dtype).min path): the "
        "output and the per-head attention weights",
        "transpec.adapters.jax.adapter",
        "FlaxWeightsAdapter",
        "flax",
        "jax",
    ),
}


#: the top-level modules each extra installs (a missing one is reported with its extra)
_EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "onnxruntime": ("onnx", "onnxruntime"),
    "jax": ("jax", "jaxlib", "flax"),
    "transformers": ("transformers", "torch"),
}


#: how a missing module is named in the message
_DISPLAY = {
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime",
    "jax": "JAX",
    "flax": "Flax",
    "transformers": "Hugging Face transformers",
}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_builtin(name: str) -> Adapter:
    entry = BUILTIN_ADAPTERS[name]
    try:
        return entry.factory()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        needed = {entry.requires, *_EXTRA_MODULES.get(entry.extra or "", ())} - {None}
        if missing in needed:
            extra = entry.extra or entry.requires
            raise AdapterLoadError(
                f"the {name} adapter needs {_DISPLAY.get(missing, missing)}: "
                f"pip install 'transpec[{extra}]'"
            ) from None
        raise AdapterLoadError(f"loading the {name} adapter failed: {_one_line(exc)}") from None


def _import_module(module: str) -> Any:
    """Import ``module`` with the current directory on sys.path (as pytest's rootdir is)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module == missing or module.startswith(missing + "."):
            raise AdapterLoadError(
                f"module {missing!r} not found (looked in the current directory and sys.path)"
            ) from None
        raise AdapterLoadError(f"importing module {module!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's module may raise anything while importing
        raise AdapterLoadError(f"importing module {module!r} failed: {_one_line(exc)}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _resolve(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    module, attribute = module.strip(), attribute.strip()
    if not module or not attribute or ":" in attribute:
        raise AdapterLoadError(
            f"adapter {spec!r} is not of the form module:attribute (e.g. my_kernels:MyAdapter)"
        )
    parts = attribute.split(".")
    if not all(p.isidentifier() for p in parts):
        raise AdapterLoadError(f"attribute {attribute!r} in {spec!r} is not a dotted name")
    obj = _import_module(module)
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = module if i == 0 else f"{module}:{'.'.join(parts[:i])}"
            raise AdapterLoadError(f"{owner!r} has no attribute {part!r}") from None
    return obj


def _check_component(component: str) -> None:
    try:
        components.get(component)
    except components.UnknownComponentError as err:
        raise AdapterLoadError(str(err)) from None


def load_adapter(
    spec: str, *, component: str | None = None, base: str | Adapter | None = None
) -> Adapter:
    """The adapter named by ``spec``.

    ``spec`` is a built-in name (see :data:`BUILTIN_ADAPTERS`) or ``module:attribute`` naming
    an :class:`Adapter` subclass (instantiated without arguments), an :class:`Adapter`
    instance, or a plain function. A function implements one component, so ``component``
    (``"softmax"``, ``"attention"``, ``"layer_norm"``, ``"rms_norm"``) is required with it and
    refused with an adapter; it is wrapped in a :class:`FunctionAdapter` whose conversion,
    dtypes and devices are those of ``base`` (the name of an array base,
    :data:`~transpec.adapters.arrays.ARRAY_BASES`, an adapter, or an adapter's
    ``module:attribute``; NumPy arrays by default),
    with canonical conventions.

    Every failure is an :class:`AdapterLoadError` (a ``ValueError``) with a one-line message.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AdapterLoadError(f"an adapter is a built-in name or module:attribute, got {spec!r}")
    spec = spec.strip()
    if component is not None:
        _check_component(component)
    if ":" not in spec:
        if spec not in BUILTIN_ADAPTERS:
            raise AdapterLoadError(
                f"unknown adapter {spec!r}; built-in adapters: {', '.join(BUILTIN_ADAPTERS)} "
                "(or give module:attribute)"
            )
        if component is not None:
            raise AdapterLoadError(
                f"{spec!r} is an adapter, not a function: component={component!r} applies "
                "to functions only"
            )
        return _load_builtin(spec)

    obj = _resolve(spec)
    if isinstance(obj, type):
        if not issubclass(obj, Adapter):
            raise AdapterLoadError(f"{spec!r} is a class but not a transpec Adapter subclass")
        if component is not None:
            raise AdapterLoadError(
                f"{spec!r} is an adapter, not a function: component={component!r} applies "
                "to functions only"
            )
        try:
            return obj()
        except Exception as exc:
            raise AdapterLoadError(f"{spec!r}() failed: {_one_line(exc)}") from None
    if isinstance(obj, Adapter):
        if component is not None:
            raise AdapterLoadError(
                f"{spec!r} is an adapter, not a function: component={component!r} applies "
                "to functions only"
            )
        return obj
    if callable(obj):
        if component is None:
            raise AdapterLoadError(
                f"{spec!r} is a function: say which component it implements "
                f"(one of {', '.join(components.names())})"
            )
        function: Callable[..., Any] = obj
        if isinstance(base, str) and ":" in base:
            base = load_adapter(base)  # an adapter class or instance whose arrays it takes
        return FunctionAdapter(function, component, base=base)
    raise AdapterLoadError(
        f"{spec!r} is a {type(obj).__name__}, not an Adapter subclass, an Adapter instance "
        "or a function"
    )
