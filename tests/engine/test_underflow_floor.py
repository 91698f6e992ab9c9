"""The underflow floor of the tolerance model (docs/tolerance.md §2.5).

η, half the subnormal spacing, is rounded up to a float64 number: in float64 itself 2^-1075 is
not representable and would round to 0, leaving subnormal outputs with no floor at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle.engine.compare import compare
from transpec.oracle.engine.dtypes import FORMATS, round_to
from transpec.oracle.kernels.reference import softmax
from transpec.oracle.kernels.tolerance import tolerance

#: the declared precision of a typical kernel: float32 math for the half formats
PRECISION = {
    "float64": Precision("float64", "float64"),
    "float32": Precision("float32", "float32"),
    "float16": Precision("float32", "float16"),
    "bfloat16": Precision("float32", "bfloat16"),
}


def _log_sum_exp_softmax(x: np.ndarray) -> np.ndarray:
    """exp((x - m) - log Σ exp(x - m)) in float64: a correct softmax whose smallest weights
    underflow to float64 subnormals differently from the reference's exp(x - m) / Σ."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True)))


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_the_floor_is_at_least_the_smallest_subnormal_of_the_output(dtype: str) -> None:
    ref = softmax(np.array([[0.0, -1e4, -3.0]]))  # a weight of exactly 0
    tol = tolerance("softmax", ref, dtype, PRECISION[dtype])
    smallest = FORMATS[dtype].smallest_subnormal
    assert float(np.min(tol.bound)) >= smallest
    # one subnormal step off where the reference is 0: within the bound
    actual = ref.value + np.array([[0.0, smallest, 0.0]])
    assert compare(actual, ref, tol).passed


def test_a_float64_weight_one_subnormal_step_off_passes() -> None:
    # gaps near 745 put the smallest weights among the float64 subnormals (< 2.2e-308)
    x = np.array([[0.0, -708.5, -711.3, -730.9, -740.2, -744.0, -2.0]])
    ref = softmax(x)
    tiny = (ref.value > 0) & (ref.value < FORMATS["float64"].smallest_normal)
    assert tiny.sum() >= 3
    tol = tolerance("softmax", ref, "float64", PRECISION["float64"])
    step = FORMATS["float64"].smallest_subnormal
    off = ref.value + np.where(tiny, step, 0.0)
    assert compare(off, ref, tol).passed
    assert compare(_log_sum_exp_softmax(x), ref, tol).passed


def test_the_floor_still_rejects_wrong_subnormal_and_flushed_weights() -> None:
    x = np.array([[0.0, -708.5, -711.3, -730.9, -740.2, -744.0, -2.0]])
    ref = softmax(x)
    tol = tolerance("softmax", ref, "float64", PRECISION["float64"])
    step = FORMATS["float64"].smallest_subnormal
    tiny = (ref.value > 0) & (ref.value < FORMATS["float64"].smallest_normal)
    # sixteen subnormal steps: beyond c·(η_out + η_acc + η_store) = 6 steps
    far = compare(ref.value + np.where(tiny, 16 * step, 0.0), ref, tol)
    assert not far.passed and far.ratio > 2
    # flushing a normal weight (e^-708.5 ≈ 3e-308) to zero is far outside
    flushed = np.where(ref.value < 1e-300, 0.0, ref.value)
    assert not compare(flushed, ref, tol).passed


def test_a_correct_float16_softmax_passes_where_its_weights_underflow() -> None:
    rng = np.random.default_rng(3)
    x = round_to(rng.uniform(-20.0, 0.0, size=(8, 33)), "float16")
    ref = softmax(x)
    assert np.any((ref.value > 0) & (ref.value < FORMATS["float16"].smallest_normal))
    e = np.exp((x - x.max(axis=-1, keepdims=True)).astype(np.float32))
    out = (e / e.sum(axis=-1, keepdims=True, dtype=np.float32)).astype(np.float16)
    tol = tolerance("softmax", ref, "float16", PRECISION["float16"])
    assert compare(out.astype(np.float64), ref, tol).passed
