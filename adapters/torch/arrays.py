"""torch tensors for an implementation under test, and nothing else: conversion, dtypes, devices.

:class:`TorchArrays` is the array base of the torch framework: it converts NumPy arrays to
tensors and back and declares what torch can hold, with transpec's canonical conventions and
default precision. It says nothing about what any torch function computes: the built-in
:class:`~transpec.adapters.torch.adapter.TorchAdapter` declares torch's own conventions, rejected
inputs and precisions on top of it, and a bare function given ``--base torch`` gets this base
alone (canonical conventions unless declared with ``--convention``).

torch is imported when the base is instantiated, never when this module is imported; a
CPU-only build (``torch_build``) is not imported even then: a run whose implementation lives in a
worker process only reads the adapter's declarations, and the worker imports torch.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.base import Adapter
from transpec.adapters.torch.gradients import TorchGradientsMixin
from transpec.oracle.engine.dtypes import canonical_dtype


@functools.cache
def torch_module() -> ModuleType:
    """The ``torch`` module, imported on first use."""
    import torch

    return torch


@dataclass(frozen=True)
class TorchBuild:
    """What the declarations of a torch adapter say about the installed torch."""

    #: ``torch.__version__``
    version: str
    #: ``torch.version.cuda`` when torch sees a GPU, else None
    cuda: str | None


@functools.cache
def torch_build() -> TorchBuild:
    """The installed torch's version and CUDA (when it sees a GPU).

    A CPU-only build (version label ``+cpu``, as the wheels of PyTorch's CPU index have) sees
    no GPU: its version is read from the distribution's metadata, without importing torch
    (about a second of CPU that a run with a worker process would spend twice). Any other
    build, or torch already imported, is asked itself; a missing torch is an ImportError."""
    if "torch" not in sys.modules:
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            version = ""
        if version.endswith("+cpu") and importlib.util.find_spec("torch") is not None:
            return TorchBuild(version=version, cuda=None)
    torch = torch_module()
    cuda = str(torch.version.cuda) if torch.cuda.is_available() else None
    return TorchBuild(version=str(torch.__version__), cuda=cuda)


def torch_dtype(dtype: str) -> Any:
    """The torch dtype of a canonical dtype name."""
    torch = torch_module()
    return {
        "float64": torch.float64,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[canonical_dtype(dtype)]


class TorchArrays(TorchGradientsMixin, Adapter):
    """Conversion to and from torch tensors on CPU (and CUDA when torch sees a GPU).

    float64 NumPy arrays are rounded to the dtype under test exactly as
    :func:`transpec.oracle.engine.dtypes.round_to` rounds (float32/float16 by NumPy, bfloat16
    from float32 by torch, nearest-even); boolean arrays stay boolean; integer arrays become
    int64 tensors. Tensors are C-contiguous (fused kernels need a unit last-dim stride).
    Canonical conventions, the default precision, no rejected inputs. Backward passes are
    ``torch.autograd.grad`` of the same call (:class:`TorchGradientsMixin`).
    """

    name = "torch-arrays"
    framework = "torch"
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu", "cuda")

    def __init__(self) -> None:
        # Instantiating a torch adapter is using torch: find it here, so that a missing torch
        # is one ImportError at load time (imported unless a CPU-only build: torch_build).
        # Devices: the declared ones that exist here; an adapter that only declares CUDA keeps
        # its declaration and reports none available.
        cuda = torch_build().cuda is not None
        present = tuple(d for d in type(self).devices if d != "cuda" or cuda)
        self.devices = present or type(self).devices
        self._available = present

    def available_devices(self) -> tuple[str, ...]:
        """The declared devices present here: ``cpu``, and ``cuda`` when torch sees a GPU."""
        return self._available

    def describe(self) -> str:
        build = torch_build()
        devices = ", ".join(self.available_devices()) or "no device available"
        cuda = f", CUDA {build.cuda}" if build.cuda is not None else ""
        return f"{self.name} (torch {build.version}{cuda}; devices: {devices})"

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        """float64 array -> C-contiguous tensor of ``dtype`` on ``device`` (rounded as
        ``round_to``); a bool array -> a bool tensor."""
        torch = torch_module()
        arr = np.asarray(array)
        if arr.dtype == np.bool_:
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.bool_)).to(device)
        name = canonical_dtype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            if name == "bfloat16":
                # float64 -> float32 (NumPy) -> bfloat16 (torch, nearest-even): round_to's path
                base = np.array(arr, dtype=np.float32)
            else:
                base = np.array(arr, dtype=np.dtype(name))
        base = np.ascontiguousarray(base)
        return torch.from_numpy(base).to(device=device, dtype=torch_dtype(name))

    def index_to_native(self, array: np.ndarray, device: str) -> Any:
        """An integer NumPy array -> an int64 tensor on ``device``."""
        torch = torch_module()
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        """tensor -> (float64 NumPy copy on the CPU, canonical name of the tensor's dtype)."""
        torch = torch_module()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(value).__name__}")
        name = canonical_dtype(str(value.dtype))
        out = value.detach().to(device="cpu", dtype=torch.float64).numpy()
        return np.array(out, dtype=np.float64), name

    def is_native(self, value: Any) -> bool:
        return isinstance(value, torch_module().Tensor)

    def to_numpy(self, value: Any) -> np.ndarray:
        """bool/integer tensor -> NumPy copy on the CPU, same dtype (a float tensor: float64)."""
        torch = torch_module()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(value).__name__}")
        tensor = value.detach().to(device="cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype=torch.float64)
        return np.array(tensor.numpy(), copy=True)

    def synchronize(self, device: str) -> None:
        torch = torch_module()
        if str(device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()
