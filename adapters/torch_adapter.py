"""PyTorch as an implementation under test: ``torch.nn.functional`` behind the adapter contract.

torch is imported lazily, on the first conversion or component call, never when this module is
imported (``import transpec.adapters`` must stay cheap for people who test other frameworks).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from types import ModuleType
from typing import Any

import numpy as np

from transpec.adapters.base import Adapter, Precision
from transpec.oracle.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions


@functools.cache
def _torch() -> ModuleType:
    """The ``torch`` module, imported on first use."""
    import torch

    return torch


def _torch_dtype(dtype: str) -> Any:
    torch = _torch()
    return {
        "float64": torch.float64,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[canonical_dtype(dtype)]


class TorchAdapter(Adapter):
    """``torch.nn.functional`` on CPU (and CUDA when present), SDPA with its default dispatch.

    Components: ``torch.softmax``, ``F.scaled_dot_product_attention``, ``F.layer_norm``,
    ``F.rms_norm``. Conversion: float64 NumPy arrays are rounded to the dtype under test
    exactly as :func:`transpec.oracle.dtypes.round_to` rounds (float32/float16 by NumPy,
    bfloat16 through float32 by torch), booleans stay boolean.
    """

    name = "torch"
    framework = "torch"
    conventions = Conventions()
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: SDPA backends this adapter restricts dispatch to (names of ``SDPBackend`` members);
    #: ``None`` lets torch choose.
    sdpa_backends: tuple[str, ...] | None = None
    #: devices on which the SDPA backends exist at all
    backend_devices: tuple[str, ...] = ("cpu", "cuda")

    # -- declarations -------------------------------------------------------------------------

    def __init__(self) -> None:
        # Instantiating a torch adapter is using torch: import it now (ImportError without it)
        # and keep the declared devices that exist on this machine.
        torch = _torch()
        self.devices = tuple(
            d
            for d in type(self).devices
            if d in self.backend_devices and (d != "cuda" or torch.cuda.is_available())
        )

    def available_devices(self) -> tuple[str, ...]:
        """``cpu`` always (when declared), ``cuda`` when ``torch.cuda.is_available()``."""
        return self.devices

    def precision(self, component: str, dtype: str) -> Precision:
        dtype = canonical_dtype(dtype)
        accumulate = "float32" if dtype in ("float16", "bfloat16") else dtype
        return Precision(accumulate=accumulate, store=dtype)

    def describe(self) -> str:
        torch = _torch()
        devices = ", ".join(self.available_devices()) or "no device available"
        backends = f", SDPA backend {'/'.join(self.sdpa_backends)}" if self.sdpa_backends else ""
        cuda = f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""
        return f"{self.name} (torch {torch.__version__}{cuda}; devices: {devices}{backends})"

    # -- conversion ---------------------------------------------------------------------------

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        torch = _torch()
        arr = np.asarray(array)
        if arr.dtype == np.bool_:
            return torch.from_numpy(np.array(arr, dtype=np.bool_)).to(device)
        name = canonical_dtype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            if name == "bfloat16":
                # float64 -> float32 (NumPy) -> bfloat16 (torch, nearest-even): round_to's path
                base = np.array(arr, dtype=np.float32)
            else:
                base = np.array(arr, dtype=np.dtype(name))
        tensor = torch.from_numpy(base)
        return tensor.to(device=device, dtype=_torch_dtype(name))

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        torch = _torch()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(value).__name__}")
        name = canonical_dtype(str(value.dtype))
        out = value.detach().to(device="cpu", dtype=torch.float64).numpy()
        return np.array(out, dtype=np.float64), name

    def is_native(self, value: Any) -> bool:
        return isinstance(value, _torch().Tensor)

    def synchronize(self, device: str) -> None:
        torch = _torch()
        if str(device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()

    # -- components ---------------------------------------------------------------------------

    def _sdpa_context(self) -> AbstractContextManager[Any]:
        if self.sdpa_backends is None:
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, b) for b in self.sdpa_backends])

    def softmax(self, x: Any, dim: int = -1) -> Any:
        """softmax(x)_i = exp(x_i) / sum_j exp(x_j) along ``dim`` (``torch.softmax``)."""
        return _torch().softmax(x, dim=dim)

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
        """O = softmax(scale · Q Kᵀ + M) V (``F.scaled_dot_product_attention``)."""
        F = _torch().nn.functional
        with self._sdpa_context():
            return F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
            )

    def layer_norm(
        self,
        x: Any,
        normalized_shape: Any,
        weight: Any = None,
        bias: Any = None,
        eps: float = 1e-5,
    ) -> Any:
        """(x - μ) / sqrt(σ² + eps) · w + b over the trailing dims (``F.layer_norm``)."""
        F = _torch().nn.functional
        return F.layer_norm(x, tuple(normalized_shape), weight, bias, eps)

    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        """x / sqrt(mean(x²) + eps) · w over the trailing dims (``F.rms_norm``)."""
        F = _torch().nn.functional
        return F.rms_norm(x, tuple(normalized_shape), weight, eps)


class _SDPABackendAdapter(TorchAdapter):
    """SDPA restricted to one backend with ``torch.nn.attention.sdpa_kernel``; attention only."""

    def provides(self, component: str) -> bool:
        return component == "attention"


class TorchMathAdapter(_SDPABackendAdapter):
    """SDPA restricted to the math backend (``SDPBackend.MATH``), the composite reference."""

    name = "torch-math"
    sdpa_backends = ("MATH",)


class TorchFlashAdapter(_SDPABackendAdapter):
    """SDPA restricted to ``SDPBackend.FLASH_ATTENTION`` (a CPU flash kernel exists too)."""

    name = "torch-flash"
    sdpa_backends = ("FLASH_ATTENTION",)


class TorchEfficientAdapter(_SDPABackendAdapter):
    """SDPA restricted to ``SDPBackend.EFFICIENT_ATTENTION`` (memory-efficient; CUDA only)."""

    name = "torch-efficient"
    devices = ("cuda",)
    backend_devices = ("cuda",)
    sdpa_backends = ("EFFICIENT_ATTENTION",)


class TorchCuDNNAdapter(_SDPABackendAdapter):
    """SDPA restricted to ``SDPBackend.CUDNN_ATTENTION`` (CUDA only)."""

    name = "torch-cudnn"
    devices = ("cuda",)
    backend_devices = ("cuda",)
    sdpa_backends = ("CUDNN_ATTENTION",)
