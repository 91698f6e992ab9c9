"""Flax NNX's normalization modules as transpec's ``layer_norm`` and ``rms_norm``.

A Flax user builds ``nnx.LayerNorm(num_features, epsilon=..., use_bias=..., use_scale=...,
dtype=..., param_dtype=..., rngs=...)``, loads its weights into the ``scale`` and ``bias``
parameters and calls it on an array: :class:`FlaxNorms` does the same, eagerly, with the
module in the dtype under test (``dtype`` and ``param_dtype``), the normalized axes as
``reduction_axes`` and ``feature_axes`` (its parameters are flat, ``(num_features,)``, so a
weight over several axes is loaded flattened, as Flax reshapes it back). Modules are cached
per shape, dtype, eps and present weights; the weights are loaded on every call.

What Flax computes (flax 0.12, ``flax/nnx/nn/normalization.py``, and its documentation):

* statistics in at least float32 (``_compute_stats``: "Computes in float32 precision for
  stability in half precision training"), the normalized value in float32 too, rounded once
  to the dtype of the result: the default precision (float32 math for float16/bfloat16);
* ``use_fast_variance=True`` by default: the variance is E[x²] − E[x]², clipped at 0
  (``layer_norm_variance_algorithm="one_pass"``, judged by that algorithm's bound);
* ``RMSNorm``'s default epsilon is 1e-6 (``rms_norm_default_eps=1e-6``: ``eps=None`` means
  the module built without an ``epsilon``); ``LayerNorm``'s is 1e-6 too, but transpec's
  ``layer_norm`` always passes one.

flax is imported on the first call; without it these components are not provided.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.jax.arrays import jax_module

#: the components this mixin adds
FLAX_COMPONENTS: tuple[str, ...] = ("layer_norm", "rms_norm")


@functools.cache
def flax_available() -> bool:
    """True when ``flax.nnx`` can be imported (``pip install 'transpec[jax]'`` installs it)."""
    return importlib.util.find_spec("flax") is not None


@functools.cache
def nnx_module() -> ModuleType:
    """``flax.nnx``, imported on first use (after jax, so that 64-bit mode is on)."""
    jax_module()
    from flax import nnx

    return nnx


def _host_flat(array: Any) -> Any:
    """``array`` flattened, through the host (exact; no executable compiled per shape)."""
    jax = jax_module()
    (device,) = array.devices()
    return jax.device_put(np.ascontiguousarray(np.asarray(array).reshape(-1)), device)


class FlaxNorms:
    """``flax.nnx.LayerNorm`` and ``flax.nnx.RMSNorm`` behind ``layer_norm`` and ``rms_norm``."""

    _flax_cache: dict[tuple[Any, ...], Any]

    def _flax_module(
        self, kind: str, shape: tuple[int, ...], dtype: Any, eps: float | None, **flags: bool
    ) -> Any:
        """The cached ``nnx.<kind>`` over the last ``len(shape)`` axes, in ``dtype``."""
        cache = self.__dict__.setdefault("_flax_cache", {})
        key = (kind, shape, str(dtype), eps, tuple(sorted(flags.items())))
        module = cache.get(key)
        if module is None:
            nnx = nnx_module()
            axes = tuple(range(-len(shape), 0))
            options: dict[str, Any] = dict(flags)
            if eps is not None:
                options["epsilon"] = eps
            module = getattr(nnx, kind)(
                math.prod(shape),
                reduction_axes=axes,
                feature_axes=axes,
                dtype=dtype,
                param_dtype=dtype,
                rngs=nnx.Rngs(0),
                **options,
            )
            cache[key] = module
        return module

    def layer_norm(
        self,
        x: Any,
        normalized_shape: Any,
        weight: Any = None,
        bias: Any = None,
        eps: float = 1e-5,
    ) -> Any:
        """``nnx.LayerNorm(prod(normalized_shape), epsilon=eps, use_scale=weight is not None,
        use_bias=bias is not None)`` over the last ``len(normalized_shape)`` axes."""
        shape = tuple(int(n) for n in normalized_shape)
        module = self._flax_module(
            "LayerNorm",
            shape,
            x.dtype,
            float(eps),
            use_scale=weight is not None,
            use_bias=bias is not None,
        )
        if weight is not None:
            module.scale[...] = _host_flat(weight)
        if bias is not None:
            module.bias[...] = _host_flat(bias)
        return module(x)

    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        """``nnx.RMSNorm(prod(normalized_shape), epsilon=eps, use_scale=weight is not None)``
        over the last ``len(normalized_shape)`` axes; ``eps=None`` builds it without an
        ``epsilon`` (Flax's default, 1e-6)."""
        shape = tuple(int(n) for n in normalized_shape)
        module = self._flax_module(
            "RMSNorm",
            shape,
            x.dtype,
            None if eps is None else float(eps),
            use_scale=weight is not None,
        )
        if weight is not None:
            module.scale[...] = _host_flat(weight)
        return module(x)
