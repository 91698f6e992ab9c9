"""bfloat16 in NumPy-based adapters, through ml_dtypes.

The default conversion of :class:`~transpec.adapters.base.Adapter` gives ``ml_dtypes.bfloat16``
arrays, rounded as the oracle rounds (to nearest even, through float32); the NumPy adapter
computes them in float32 and rounds once, and declares (float32, float32). Its verdicts are
sensible: it passes, and the same adapter with one defect fails in bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from transpec.adapters.base import Adapter, Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.dtypes import round_to


def test_conversion_rounds_as_the_oracle_and_reads_back() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-40, 38, 1000), [0.0, -0.0]])
    native = Adapter().to_native(x, "bfloat16", "cpu")
    assert native.dtype == np.dtype(ml_dtypes.bfloat16)
    back, name = Adapter().from_native(native)
    assert name == "bfloat16"
    np.testing.assert_array_equal(back, round_to(x, "bfloat16"))


def test_numpy_adapter_declares_bfloat16() -> None:
    adapter = NumpyAdapter()
    assert "bfloat16" in adapter.dtypes
    assert adapter.precision("softmax", "bfloat16") == Precision("float32", "float32")


@pytest.mark.parametrize(
    ("component", "prop"),
    [
        ("softmax", "equivalence"),
        ("softmax", "error_statistic"),
        ("attention", "equivalence"),
        ("attention", "error_statistic"),
        ("layer_norm", "equivalence"),
        ("layer_norm", "large_mean"),
        ("rms_norm", "equivalence"),
        ("rotary_embedding", "equivalence"),
        ("encoder_layer", "equivalence"),
    ],
)
def test_numpy_adapter_passes_in_bfloat16(
    accepts: Callable[..., float], component: str, prop: str
) -> None:
    assert accepts(component, prop, NumpyAdapter(), "bfloat16", examples=10) <= 1.0


class HalfSumSoftmax(NumpyAdapter):
    """Softmax whose row sum is accumulated in bfloat16, left to right, while float32 is
    declared."""

    name = "numpy-bfloat16-sum"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        w = np.moveaxis(x.astype(np.float32), dim, -1)
        e = np.exp(w - np.max(w, axis=-1, keepdims=True))
        total = np.zeros((*e.shape[:-1], 1), dtype=x.dtype)
        for j in range(e.shape[-1]):
            total = (total + e[..., j : j + 1].astype(x.dtype)).astype(x.dtype)
        return np.moveaxis((e / total.astype(np.float32)).astype(x.dtype), -1, dim)


class ScaledLayerNorm(NumpyAdapter):
    """LayerNorm whose output is 2 % too large."""

    name = "numpy-layer-norm-x1.02"

    def layer_norm(self, x: Any, normalized_shape: Any, *args: Any, **kwargs: Any) -> Any:
        y = super().layer_norm(x, normalized_shape, *args, **kwargs)
        return (y.astype(np.float32) * np.float32(1.02)).astype(x.dtype)


@pytest.mark.parametrize(
    ("component", "prop", "adapter"),
    [
        ("softmax", "error_statistic", HalfSumSoftmax()),
        ("layer_norm", "equivalence", ScaledLayerNorm()),
    ],
    ids=["bfloat16-sum", "layer-norm-x1.02"],
)
def test_a_defect_fails_in_bfloat16(
    rejects: Callable[..., BaseException], component: str, prop: str, adapter: Adapter
) -> None:
    rejects(component, prop, adapter, "bfloat16", 25)
