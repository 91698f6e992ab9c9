"""Each softmax, LayerNorm and RMSNorm property rejects a wrong implementation, accepts NumPy's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.catalogue import select
from transpec.oracle.engine.dtypes import round_to

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


def _axes(x: np.ndarray, normalized_shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))


def _affine(y: np.ndarray, weight: Any, bias: Any = None) -> np.ndarray:
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# -- softmax -----------------------------------------------------------------------------------


class Temperature(NumpyAdapter):
    name = "softmax-temperature-1.05"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax((x / 1.05).astype(x.dtype), dim)


class SoftmaxFloat64(NumpyAdapter):
    name = "softmax-float64-output"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim).astype(np.float64)


class OverNormalized(NumpyAdapter):
    name = "softmax-sum-1.01"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return (super().softmax(x, dim) / np.float32(1.01)).astype(x.dtype)


class NormalizedSigmoid(NumpyAdapter):
    name = "normalized-sigmoid"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
        return (s / s.sum(axis=dim, keepdims=True)).astype(x.dtype)


class SoftmaxNoMax(NumpyAdapter):
    name = "softmax-no-max-subtraction"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(x)
            return (e / e.sum(axis=dim, keepdims=True)).astype(x.dtype)


class SoftmaxHalfSum(NumpyAdapter):
    """float16: exp in float32 but the row sum accumulated in float16, left to right, while
    float32 accumulation is declared."""

    name = "softmax-float16-sum"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        w = np.moveaxis(x.astype(np.float32), dim, -1)
        e = np.exp(w - np.max(w, axis=-1, keepdims=True))
        total = np.zeros((*e.shape[:-1], 1), dtype=x.dtype)
        for j in range(e.shape[-1]):
            total = (total + e[..., j : j + 1].astype(x.dtype)).astype(x.dtype)
        return np.moveaxis((e / total.astype(np.float32)).astype(x.dtype), -1, dim)


# -- LayerNorm ----------------------------------------------------------------------------------


class _LayerNorm(NumpyAdapter):
    """LayerNorm in float64 (or float32 for float16 inputs) with a replaceable statistic."""

    def layer_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
    ) -> Any:
        axes = _axes(x, normalized_shape)
        work = np.float32 if x.dtype == np.float16 else x.dtype
        y = self.normalize(x.astype(work), axes, eps)
        return _affine(y, weight, bias).astype(x.dtype)

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)


class UnbiasedVariance(_LayerNorm):
    name = "layer-norm-unbiased"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        n = int(np.prod([x.shape[a] for a in axes]))
        mu = x.mean(axis=axes, keepdims=True)
        return (x - mu) / np.sqrt(
            ((x - mu) ** 2).sum(axis=axes, keepdims=True) / max(n - 1, 1) + eps
        )


class HalfRstd(_LayerNorm):
    """float16 inputs, float32 math declared, but 1/σ is rounded to bfloat16."""

    name = "layer-norm-bf16-rstd"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
        return (x - mu) * round_to(rstd, "bfloat16").astype(x.dtype)


class LayerNormFloat64(NumpyAdapter):
    name = "layer-norm-float64-output"

    def layer_norm(self, x: Any, *args: Any, **kw: Any) -> Any:
        return super().layer_norm(x, *args, **kw).astype(np.float64)


class NoCentering(_LayerNorm):
    name = "layer-norm-no-centering"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        return x / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)


class VarianceNotStd(_LayerNorm):
    name = "layer-norm-divides-by-variance"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        return (x - mu) / (((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)


class EpsAddedToStd(_LayerNorm):
    name = "layer-norm-eps-added-to-std"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        return (x - mu) / (np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True)) + eps)


class OnePassVariance(_LayerNorm):
    """var = E[x²] - μ², in the working precision: cancels catastrophically at |μ| ≫ σ."""

    name = "layer-norm-one-pass-variance"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        var = np.maximum((x * x).mean(axis=axes, keepdims=True) - mu * mu, 0)
        return (x - mu) / np.sqrt(var + x.dtype.type(eps))


class LastDimOnly(_LayerNorm):
    name = "layer-norm-last-dim-only"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        return super().normalize(x, (-1,), eps)


# -- RMSNorm -----------------------------------------------------------------------------------


class _RMSNorm(NumpyAdapter):
    def rms_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> Any:
        axes = _axes(x, normalized_shape)
        e = float(np.finfo(x.dtype).eps) if eps is None else float(eps)
        work = np.float32 if x.dtype == np.float16 else x.dtype
        return _affine(self.normalize(x.astype(work), axes, e), weight).astype(x.dtype)

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)


class RMSOverNMinusOne(_RMSNorm):
    name = "rms-norm-n-minus-1"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        n = int(np.prod([x.shape[a] for a in axes]))
        return x / np.sqrt((x * x).sum(axis=axes, keepdims=True) / max(n - 1, 1) + eps)


class RMSHalfRstd(_RMSNorm):
    name = "rms-norm-bf16-rstd"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        rstd = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
        return x * round_to(rstd, "bfloat16").astype(x.dtype)


class RMSFloat64(NumpyAdapter):
    name = "rms-norm-float64-output"

    def rms_norm(self, x: Any, *args: Any, **kw: Any) -> Any:
        return super().rms_norm(x, *args, **kw).astype(np.float64)


class RMSDividesByMeanSquare(_RMSNorm):
    name = "rms-norm-divides-by-mean-square"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        return x / ((x * x).mean(axis=axes, keepdims=True) + eps)


class RMSEpsAddedToRMS(_RMSNorm):
    name = "rms-norm-eps-added-to-rms"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        return x / (np.sqrt((x * x).mean(axis=axes, keepdims=True)) + eps)


class RMSLastDimOnly(_RMSNorm):
    name = "rms-norm-last-dim-only"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        return super().normalize(x, (-1,), eps)


class TileTailDropped(_LayerNorm):
    """The statistics of a row reduced over its first tile of 1024 elements only (a split
    reduction that forgets its tail): right up to 1024 features."""

    name = "layer-norm-tile-tail-dropped"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        head = x[..., :1024]
        mu = head.mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(((head - mu) ** 2).mean(axis=-1, keepdims=True) + eps)


class RMSTileTailDropped(_RMSNorm):
    name = "rms-norm-tile-tail-dropped"

    def normalize(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        head = x[..., :1024]
        return x / np.sqrt((head * head).mean(axis=-1, keepdims=True) + eps)


WRONG = [
    ("softmax", "equivalence", Temperature(), "float32"),
    ("softmax", "shape_dtype", SoftmaxFloat64(), "float32"),
    ("softmax", "rows_sum_to_one", OverNormalized(), "float32"),
    ("softmax", "shift_invariance", NormalizedSigmoid(), "float32"),
    ("softmax", "large_logits", SoftmaxNoMax(), "float32"),
    ("softmax", "error_statistic", SoftmaxHalfSum(), "float16"),
    ("layer_norm", "equivalence", UnbiasedVariance(), "float32"),
    ("layer_norm", "error_statistic", HalfRstd(), "float16"),
    ("layer_norm", "shape_dtype", LayerNormFloat64(), "float32"),
    ("layer_norm", "shift_invariance", NoCentering(), "float32"),
    ("layer_norm", "scale_invariance", VarianceNotStd(), "float32"),
    ("layer_norm", "small_variance", EpsAddedToStd(), "float32"),
    ("layer_norm", "large_mean", OnePassVariance(), "float32"),
    ("layer_norm", "bounded_output", OnePassVariance(), "float32"),
    ("layer_norm", "normalized_shape", LastDimOnly(), "float32"),
    ("layer_norm", "long_input", TileTailDropped(), "float32"),
    ("rms_norm", "equivalence", RMSOverNMinusOne(), "float32"),
    ("rms_norm", "error_statistic", RMSHalfRstd(), "float16"),
    ("rms_norm", "shape_dtype", RMSFloat64(), "float32"),
    ("rms_norm", "scale_invariance", RMSDividesByMeanSquare(), "float32"),
    ("rms_norm", "small_variance", RMSEpsAddedToRMS(), "float32"),
    ("rms_norm", "normalized_shape", RMSLastDimOnly(), "float32"),
    ("rms_norm", "long_input", RMSTileTailDropped(), "float32"),
]


@pytest.mark.parametrize(
    ("component", "name", "adapter", "dtype"), WRONG, ids=lambda x: getattr(x, "name", x)
)
def test_rejects_the_wrong_implementation(
    component: str, name: str, adapter: Any, dtype: str, rejects: Any
) -> None:
    rejects(component, name, adapter, dtype)


@pytest.mark.parametrize("component", ["softmax", "layer_norm", "rms_norm"])
def test_every_property_has_a_wrong_implementation(component: str) -> None:
    """The forward ones here; the backward ones in tests/gradients."""
    covered = {name for comp, name, _, _ in WRONG if comp == component}
    assert {p.name for p in select(component) if not p.backward} == covered


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize(
    "prop",
    [p for p in select(["softmax", "layer_norm", "rms_norm"]) if not p.backward],
    ids=lambda p: p.id,
)
def test_accepts_numpy(prop: Any, dtype: str, accepts: Any) -> None:
    assert accepts(prop.component, prop.name, NumpyAdapter(), dtype, examples=5) <= 1.0


def test_one_pass_variance_passes_where_the_mean_is_small(accepts: Any) -> None:
    """The large-mean defect is invisible at |μ| ~ σ: the regime is what exposes it."""
    assert accepts("layer_norm", "small_variance", OnePassVariance(), "float64", examples=8) <= 1
