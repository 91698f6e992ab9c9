"""Array bases: per framework, the conversion of arrays and nothing else.

An array base converts the oracle's float64 NumPy arrays to a framework's arrays (rounding to the
dtype under test) and back, and declares the dtypes and devices the framework can hold. It has
transpec's canonical conventions and the default precision, rejects no input and has one code
path: it says nothing about what any function of the framework computes. A bare function under
test (``transpec check mod:fn --component C --base torch``) takes its arrays from a base; what the
function computes is declared separately (``--convention key=value``), never inherited from the
framework's built-in adapter.

=========  ==========================================================  ===================
name       class                                                       needs
=========  ==========================================================  ===================
``numpy``  :class:`NumpyArrays`                                        --
``torch``  :class:`transpec.adapters.torch.arrays.TorchArrays`         ``transpec[torch]``
``jax``    :class:`transpec.adapters.jax.arrays.JaxArrays`             ``transpec[jax]``
=========  ==========================================================  ===================

The built-in adapters of a library (``torch``, ``jax``, ``onnxruntime``, ...) subclass their
framework's base and declare that library's conventions on top.
"""

from __future__ import annotations

import importlib

from transpec.adapters.base import Adapter
from transpec.errors import AdapterLoadError


class NumpyArrays(Adapter):
    """NumPy arrays of the dtype under test (float64, float32, float16) on the CPU."""

    name = "numpy-arrays"
    framework = "numpy"


#: base name -> (module, class, the top-level module it needs, the extra that installs it)
ARRAY_BASES: dict[str, tuple[str, str, str | None, str | None]] = {
    "numpy": ("transpec.adapters.arrays", "NumpyArrays", None, None),
    "torch": ("transpec.adapters.torch.arrays", "TorchArrays", "torch", "torch"),
    "jax": ("transpec.adapters.jax.arrays", "JaxArrays", "jax", "jax"),
}


def load_array_base(name: str) -> Adapter:
    """The array base called ``name`` (:data:`ARRAY_BASES`); an
    :class:`~transpec.errors.AdapterLoadError` with one line for an unknown name or a framework
    that is not installed."""
    if name not in ARRAY_BASES:
        raise AdapterLoadError(
            f"unknown array base {name!r}; expected one of {', '.join(ARRAY_BASES)}"
        )
    module, attribute, requires, extra = ARRAY_BASES[name]
    try:
        cls = getattr(importlib.import_module(module), attribute)
        base: Adapter = cls()
    except ModuleNotFoundError as exc:
        if requires is not None and (exc.name or "").split(".")[0] == requires:
            raise AdapterLoadError(
                f"the {name} array base needs {requires}: pip install 'transpec[{extra}]'"
            ) from None
        raise
    return base
