"""Bare functions for the array-base tests (imported as ``bare_functions:NAME``)."""

from __future__ import annotations

from typing import Any


def torch_rms_norm(x: Any, normalized_shape: Any, weight: Any = None, eps: Any = None) -> Any:
    """``F.rms_norm`` as it is: eps=None is float32's epsilon for float16/bfloat16 input."""
    import torch

    return torch.nn.functional.rms_norm(x, tuple(normalized_shape), weight, eps)


def canonical_rms_norm(x: Any, normalized_shape: Any, weight: Any = None, eps: Any = None) -> Any:
    """``F.rms_norm`` with eps=None made the canonical finfo(input dtype).eps."""
    import torch

    eps = torch.finfo(x.dtype).eps if eps is None else eps
    return torch.nn.functional.rms_norm(x, tuple(normalized_shape), weight, eps)


def jax_softmax(x: Any, dim: int = -1) -> Any:
    """``jax.nn.softmax`` as users call it."""
    import jax

    return jax.nn.softmax(x, axis=dim)


def flushing_softmax(x: Any, dim: int = -1) -> Any:
    """A correct NumPy softmax whose results below the smallest normal number are flushed to 0
    (as an FTZ kernel returns them)."""
    import numpy as np

    from transpec.adapters.numpy.adapter import NumpyAdapter

    y = NumpyAdapter().softmax(x, dim)
    return np.where(np.abs(y) < np.finfo(y.dtype).tiny, np.zeros_like(y), y)


def float32_eps_layer_norm(
    x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Any:
    """A correct NumPy LayerNorm that takes eps as a float32 attribute (as ONNX does)."""
    import numpy as np

    from transpec.adapters.numpy.adapter import NumpyAdapter

    rounded = float(np.float32(eps))
    return NumpyAdapter().layer_norm(x, normalized_shape, weight, bias, rounded)
