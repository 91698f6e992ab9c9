"""PyTorch as an implementation under test: ``torch.nn.functional`` behind the adapter contract.

torch is imported lazily, when an adapter is instantiated, never when this module is imported
(``import transpec.adapters`` stays cheap for people who test other frameworks).

What it declares rests on measurements of torch on CPU (docs/torch.md), which
``tests/adapters/test_torch_adapter.py`` keeps checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from transpec.adapters.base import Precision
from transpec.adapters.torch.arrays import TorchArrays, torch_build, torch_dtype, torch_module
from transpec.adapters.torch.layers import CHAINED_COMPONENTS, LAYER_COMPONENTS, TorchLayers
from transpec.adapters.torch.positional import TorchPositionalMixin
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions

_HALF = ("float16", "bfloat16")


#: the ``torch`` module, imported on first use; a torch dtype from its canonical name
_torch = torch_module
_torch_dtype = torch_dtype


def _ndim(value: Any) -> int:
    return len(tuple(value.shape))


def _flash_cpu_restriction(args: Mapping[str, Any], *, mask: bool = True) -> str | None:
    """Why the CPU flash kernel rejects these arguments (looking at the mask's rank only when
    ``mask``), or None when it takes them."""
    q, v, attn_mask = args.get("q"), args.get("v"), args.get("attn_mask")
    if q is None or v is None:
        return None
    if _ndim(q) != 4:
        return "the flash kernel takes 4-D (B, H, L, E) inputs only"
    if tuple(q.shape)[-1] != tuple(v.shape)[-1]:
        return "the flash kernel needs the value head dim Ev equal to the query head dim E"
    if mask and attn_mask is not None and _ndim(attn_mask) not in (2, 4):
        return "the flash kernel takes a 2-D or 4-D attn_mask only"
    return None


class TorchAdapter(TorchLayers, TorchPositionalMixin, TorchArrays):
    r"""``torch.nn.functional`` on CPU (and CUDA when present); SDPA with its default dispatch.

    Components: ``torch.softmax``, ``F.scaled_dot_product_attention``, ``F.layer_norm``,
    ``F.rms_norm``, and the embedding and positional components of
    :class:`~transpec.adapters.torch.positional.TorchPositionalMixin`. Conversion, and the
    backward passes through ``torch.autograd.grad`` of the same call, are the torch array
    base's (:class:`~transpec.adapters.torch.arrays.TorchArrays`); what this class adds is what
    torch's functions compute: its conventions, rejected inputs and precisions, forward and
    backward.

    What torch does on CPU (boolean masks, fully masked rows, causal alignment, GQA, the inputs
    each SDPA backend rejects, the precision of every kernel, the defects found) is measured
    and tabled in docs/torch.md; ``tests/adapters/test_torch_adapter.py`` keeps each row
    checked on the installed torch.

    Declared :class:`Precision` (accumulate, store) from these findings: float64 and float32 are
    (dtype, dtype); for float16/bfloat16, softmax, layer_norm, rms_norm and math-backend
    attention are (float32, float32), and flash / default attention (float32, dtype). The
    CUDA-only backends (efficient, cuDNN) are not measured here; they declare (float32, dtype).
    """

    name = "torch"
    framework = "torch"
    conventions = Conventions(rms_norm_default_eps="opmath")
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: SDPA backends dispatch is restricted to (names of ``SDPBackend`` members); None: torch's
    #: default dispatch
    sdpa_backends: tuple[str, ...] | None = None
    #: whether attention stores intermediates (the probabilities or exponentials) in a
    #: float16/bfloat16 input dtype (True) or keeps them in float32 (False)
    attention_stores_half: bool = True

    # -- declarations -------------------------------------------------------------------------

    def backward_precision(self, component: str, dtype: str) -> Precision:
        """float32 math for float16/bfloat16, every intermediate gradient (dP, dS) rounded to
        the input dtype; (dtype, dtype) otherwise."""
        dtype = canonical_dtype(dtype)
        if dtype in _HALF:
            return Precision(accumulate="float32", store=dtype)
        return Precision(accumulate=dtype, store=dtype)

    def precision(self, component: str, dtype: str) -> Precision:
        """(dtype, dtype) for float64/float32; for float16/bfloat16 float32 math, intermediates
        kept in float32 except attention's, which the flash kernels round to the input dtype
        (positional components: :meth:`positional_precision`)."""
        positional = self.positional_precision(component, dtype)
        if positional is not None:
            return positional
        dtype = canonical_dtype(dtype)
        if dtype not in _HALF:
            return Precision(accumulate=dtype, store=dtype)
        if component in CHAINED_COMPONENTS:
            # modules: float32 math inside each kernel, every intermediate tensor in the dtype
            return Precision(accumulate="float32", store=dtype)
        if component == "attention" and self.attention_stores_half:
            return Precision(accumulate="float32", store=dtype)
        return Precision(accumulate="float32", store="float32")

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """Why torch rejects (raises on) these arguments, or None when it takes them.

        ``args`` holds NumPy arrays or tensors (only shapes are read). Measured on CPU; on CUDA
        the rules of the math backend apply to the default dispatch.
        """
        if component != "attention":
            return None
        if args.get("softcap") is not None:
            return "F.scaled_dot_product_attention has no softcap"
        mask, causal = args.get("attn_mask"), bool(args.get("is_causal", False))
        flash = _flash_cpu_restriction(args)
        on_cuda = device is not None and str(device).startswith("cuda")
        if mask is not None and causal and (on_cuda or flash is not None):
            return "F.scaled_dot_product_attention rejects attn_mask together with is_causal=True"
        picks_flash = _flash_cpu_restriction(args, mask=False) is None
        if not on_cuda and picks_flash and mask is not None and _ndim(mask) == 1:
            return "SDPA's default dispatch picks the flash kernel, which fails on a 1-D attn_mask"
        return None

    def describe(self) -> str:
        build = torch_build()
        devices = ", ".join(self.available_devices()) or "no device available"
        backends = f"; SDPA backend {'/'.join(self.sdpa_backends)}" if self.sdpa_backends else ""
        cuda = f", CUDA {build.cuda}" if build.cuda is not None else ""
        return f"{self.name} (torch {build.version}{cuda}; devices: {devices}{backends})"

    # -- components ---------------------------------------------------------------------------

    def _sdpa_context(self) -> AbstractContextManager[Any]:
        if self.sdpa_backends is None:
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, b) for b in self.sdpa_backends])

    def softmax(self, x: Any, dim: int = -1) -> Any:
        """softmax(x)_i = exp(x_i - max x) / Σ_j exp(x_j - max x) along ``dim``."""
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
        """O = softmax(scale · Q Kᵀ + M) V, scale = 1/sqrt(E) by default.

        M: 0 / -inf from a boolean keep-mask, or the additive mask, or top-left causal.
        """
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
        """(x - μ) / sqrt(σ² + eps) · w + b over the trailing dims, σ² the biased variance."""
        F = _torch().nn.functional
        return F.layer_norm(x, tuple(normalized_shape), weight, bias, eps)

    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        """x / sqrt(mean(x²) + eps) · w over the trailing dims (eps=None: see the table)."""
        F = _torch().nn.functional
        return F.rms_norm(x, tuple(normalized_shape), weight, eps)


class _SDPABackendAdapter(TorchAdapter):
    """SDPA restricted to one backend with ``torch.nn.attention.sdpa_kernel``; attention only
    (the other components do not depend on the SDPA backend)."""

    def provides(self, component: str) -> bool:
        return component == "attention"


class TorchMathAdapter(_SDPABackendAdapter):
    """SDPA on the math backend (``SDPBackend.MATH``): the composite implementation; for
    float16/bfloat16 it upcasts to float32 and rounds the output once."""

    name = "torch-math"
    sdpa_backends = ("MATH",)
    attention_stores_half = False

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        if component == "attention" and args.get("attn_mask") is not None and args.get("is_causal"):
            return "the math backend rejects attn_mask together with is_causal=True"
        return None


class TorchFlashAdapter(_SDPABackendAdapter):
    """SDPA on ``SDPBackend.FLASH_ATTENTION`` (torch has a CPU flash kernel too)."""

    name = "torch-flash"
    sdpa_backends = ("FLASH_ATTENTION",)

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        if component != "attention":
            return None
        if device is not None and str(device).startswith("cuda"):
            if dtype is not None and canonical_dtype(dtype) not in _HALF:
                return "the CUDA flash kernel takes float16/bfloat16 only"
            if args.get("attn_mask") is not None:
                return "the CUDA flash kernel takes no attn_mask"
        return _flash_cpu_restriction(args)


class TorchEfficientAdapter(_SDPABackendAdapter):
    """SDPA on ``SDPBackend.EFFICIENT_ATTENTION`` (memory-efficient kernel; CUDA only)."""

    name = "torch-efficient"
    devices = ("cuda",)
    dtypes = ("float32", "float16", "bfloat16")
    sdpa_backends = ("EFFICIENT_ATTENTION",)


class TorchCuDNNAdapter(_SDPABackendAdapter):
    """SDPA on ``SDPBackend.CUDNN_ATTENTION`` (CUDA only; float16/bfloat16)."""

    name = "torch-cudnn"
    devices = ("cuda",)
    dtypes = ("float16", "bfloat16")
    sdpa_backends = ("CUDNN_ATTENTION",)


class TorchSlowAdapter(TorchAdapter):
    """The layer components on their slow path: the modules called with gradients enabled
    (``nn.MultiheadAttention`` with ``need_weights=False``), never the fused fast path. The
    fast-vs-slow property compares the default adapter with this one."""

    name = "torch-slow"
    layer_path = "slow"

    def slow_path_adapter(self) -> None:
        """None: this adapter is the slow path."""
        return None

    def provides(self, component: str) -> bool:
        return component in LAYER_COMPONENTS
