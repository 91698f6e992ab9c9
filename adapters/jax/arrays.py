"""JAX arrays for an implementation under test, and nothing else: conversion, dtypes, devices.

:class:`JaxArrays` is the array base of JAX (see :mod:`transpec.adapters.arrays`): canonical
conventions, the default precision. float64 needs JAX's 64-bit mode, which is process-wide:
instantiating the base turns it on (``jax_enable_x64``), as a user testing float64 would; it
changes the default dtype of arrays created from Python scalars in the same process (documented
by JAX), not the dtype of the arrays transpec hands over, which are always explicit.

Compiled executables are kept in JAX's persistent compilation cache, which JAX leaves off
unless a directory is configured: eager JAX compiles one executable per primitive and new
shape, and that compilation is most of a run's time (docs/findings.md); a later run reading
the same executables back takes about a third of the time. The directory is the user's own
JAX setting when there is one (``JAX_COMPILATION_CACHE_DIR`` or ``jax_compilation_cache_dir``),
else ``$XDG_CACHE_HOME/transpec/jax`` (``~/.cache/transpec/jax``); ``TRANSPEC_JAX_CACHE=off``
leaves JAX's setting alone. The cache is keyed by JAX on the program, the compiler options
and the jaxlib version: an executable read back is the one the compiler would make.

jax is imported when the base is instantiated, never when this module is imported.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.base import Adapter
from transpec.adapters.jax.gradients import JaxGradientsMixin
from transpec.oracle.engine.dtypes import canonical_dtype


@functools.cache
def jax_module() -> ModuleType:
    """The ``jax`` module, imported on first use, with 64-bit mode on and the persistent
    compilation cache configured (see the module docstring)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    _use_persistent_cache(jax)
    return jax


def _use_persistent_cache(jax: ModuleType) -> None:
    """Point JAX's persistent compilation cache at transpec's directory and cache every
    executable (JAX's defaults skip those compiled in under a second: all of eager JAX's),
    unless the user configured a directory or set ``TRANSPEC_JAX_CACHE=off``."""
    if os.environ.get("TRANSPEC_JAX_CACHE", "").strip().lower() in ("0", "off", "false", "no"):
        return
    if jax.config.jax_compilation_cache_dir:
        return
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    jax.config.update("jax_compilation_cache_dir", str(Path(root) / "transpec" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def numpy_dtype(dtype: str) -> Any:
    """The NumPy dtype JAX uses for a canonical dtype name (bfloat16: ml_dtypes', JAX's own)."""
    name = canonical_dtype(dtype)
    if name == "bfloat16":
        return jax_module().numpy.bfloat16
    return np.dtype(name)


class JaxArrays(JaxGradientsMixin, Adapter):
    """Conversion to and from ``jax.Array`` on the CPU (and a GPU when JAX sees one, named
    ``cuda``). float64 arrays are rounded to the dtype under test as
    :func:`transpec.oracle.engine.dtypes.round_to` rounds (bfloat16 from float32, nearest-even,
    by ml_dtypes); boolean arrays stay boolean; integer arrays become int64 arrays. Gradients:
    ``jax.vjp`` of the forward call (:mod:`transpec.adapters.jax.gradients`)."""

    name = "jax-arrays"
    framework = "jax"
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu", "cuda")

    def __init__(self) -> None:
        jax = jax_module()
        try:
            gpu = bool(jax.devices("gpu"))
        except RuntimeError:  # no GPU backend in this jaxlib
            gpu = False
        present = tuple(d for d in type(self).devices if d != "cuda" or gpu)
        self.devices = present or type(self).devices
        self._available = present

    def available_devices(self) -> tuple[str, ...]:
        return self._available

    def describe(self) -> str:
        jax = jax_module()
        devices = ", ".join(self.available_devices()) or "no device available"
        return f"{self.name} (jax {jax.__version__}; devices: {devices})"

    def _device(self, device: str) -> Any:
        jax = jax_module()
        return jax.devices("gpu" if str(device).startswith("cuda") else "cpu")[0]

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        """float64 array -> ``jax.Array`` of ``dtype`` on ``device``; bool stays bool."""
        jax = jax_module()
        arr = np.asarray(array)
        if arr.dtype == np.bool_:
            return jax.device_put(np.array(arr, dtype=np.bool_), self._device(device))
        name = canonical_dtype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            if name == "bfloat16":
                base = np.array(arr, dtype=np.float32).astype(numpy_dtype(name))
            else:
                base = np.array(arr, dtype=numpy_dtype(name))
        return jax.device_put(base, self._device(device))

    def index_to_native(self, array: np.ndarray, device: str) -> Any:
        jax = jax_module()
        return jax.device_put(np.array(array, dtype=np.int64), self._device(device))

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        """``jax.Array`` -> (float64 NumPy copy, canonical name of its dtype)."""
        jax = jax_module()
        if not isinstance(value, jax.Array):
            raise TypeError(f"expected a jax.Array, got {type(value).__name__}")
        name = canonical_dtype(str(value.dtype))
        return np.array(np.asarray(value).astype(np.float64), dtype=np.float64), name

    def is_native(self, value: Any) -> bool:
        return isinstance(value, jax_module().Array)

    def to_numpy(self, value: Any) -> np.ndarray:
        jax = jax_module()
        if not isinstance(value, jax.Array):
            raise TypeError(f"expected a jax.Array, got {type(value).__name__}")
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.floating) or arr.dtype == numpy_dtype("bfloat16"):
            arr = arr.astype(np.float64)
        return np.array(arr, copy=True)

    def synchronize(self, device: str) -> None:
        """JAX dispatches asynchronously; converting back blocks, so nothing to wait for."""
