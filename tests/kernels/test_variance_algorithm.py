"""The one-pass variance E[x²] - E[x]² as a declaration, and the hard bound |y_i| <= √(n - 1).

Flax's LayerNorm (``use_fast_variance=True``) and Keras' numpy backend compute the one-pass
variance. Declared (``layer_norm_variance_algorithm="one_pass"``), it is judged by the bound
that algorithm has (docs/tolerance.md §3.3): the cancellation term γ·E[x²] instead of γ·var.
Undeclared it fails the large-mean regime as before. Whatever is declared, ``bounded_output``
holds every LayerNorm to |y_i| <= √(n - 1) (unit weight, no bias): on x = [-74.634, -74.669] in
float32 the one-pass variance gives ±5.46 where no x gives more than 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.kernels import reference as ref_mod
from transpec.oracle.kernels.properties import _check_bounded_output
from transpec.oracle.kernels.tolerance import tolerance
from transpec.spec.conventions import Conventions

ONE_PASS = Conventions(layer_norm_variance_algorithm="one_pass")


class OnePassLayerNorm(NumpyAdapter):
    """var = max(E[x²] - μ², 0) in ``work`` (float32 for float16 inputs by default)."""

    name = "one-pass-layer-norm"

    def __init__(self, conventions: Conventions = ONE_PASS, half_math: bool = False) -> None:
        self.conventions = conventions
        self._half_math = half_math

    def layer_norm(
        self, x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
    ) -> Any:
        dims = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
        axes = tuple(range(x.ndim - dims, x.ndim))
        w = x if (x.dtype != np.float16 or self._half_math) else x.astype(np.float32)
        mu = w.mean(axis=axes, keepdims=True)
        var = np.maximum((w * w).mean(axis=axes, keepdims=True) - mu * mu, 0)
        y = (w - mu) / np.sqrt(var + w.dtype.type(eps))
        if weight is not None:
            y = y * weight.astype(w.dtype)
        if bias is not None:
            y = y + bias.astype(w.dtype)
        return y.astype(x.dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("prop", ["equivalence", "large_mean", "error_statistic"])
def test_declared_one_pass_passes(accepts: Callable[..., float], prop: str, dtype: str) -> None:
    assert accepts("layer_norm", prop, OnePassLayerNorm(), dtype, examples=30) <= 1


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_undeclared_one_pass_fails(rejects: Callable[..., BaseException], dtype: str) -> None:
    error = rejects("layer_norm", "large_mean", OnePassLayerNorm(Conventions()), dtype, 30)
    assert "out of tolerance" in str(error)


def test_one_pass_declared_but_computed_in_float16_fails(
    rejects: Callable[..., BaseException],
) -> None:
    """The declaration covers the algorithm, not a precision it does not have: float16 math
    while float32 is declared still fails."""
    error = rejects("layer_norm", "large_mean", OnePassLayerNorm(half_math=True), "float16", 30)
    assert "element(s)" in str(error)  # out of tolerance, or NaN where x² overflowed float16


@pytest.mark.parametrize("conventions", [ONE_PASS, Conventions()], ids=["declared", "undeclared"])
def test_the_hard_bound_rejects_one_pass_whatever_it_declares(
    rejects: Callable[..., BaseException], conventions: Conventions
) -> None:
    error = rejects("layer_norm", "bounded_output", OnePassLayerNorm(conventions), "float32", 30)
    assert "exceeds √(n - 1)" in str(error)


def test_the_example_two_features_in_float32() -> None:
    """x = [-74.634, -74.669]: the exact y is ±0.98, the one-pass float32 result ±5.5. The
    declared one-pass bound covers it (that is what the algorithm costs there); the hard bound
    does not."""
    args = {"x": np.array([-74.634, -74.669]), "normalized_shape": (2,), "eps": 1e-5}
    harness = Harness(OnePassLayerNorm(), "float32")
    call = harness.call("layer_norm", {**args, "weight": None, "bias": None})
    assert abs(float(call.output[0])) > 5.0  # 5.53 with eps = 1e-5 (5.46 with Flax's 1e-6)
    assert abs(abs(float(call.reference.value[0])) - 0.98) < 0.02
    assert harness.assert_equivalent(call) <= 1.0
    with pytest.raises(PropertyViolation, match="exceeds √\\(n - 1\\) = 1"):
        _check_bounded_output(harness, {**args, "weight": None, "bias": None})
    two_pass = Harness(NumpyAdapter(), "float32")
    assert _check_bounded_output(two_pass, {**args, "weight": None, "bias": None}) <= 1.0


def test_the_one_pass_bound_grows_with_the_square_of_the_mean() -> None:
    """What the choice costs, per element: at |μ|/σ = 1 the two bounds are close, at 100 the
    one-pass bound is ~(μ/σ)/2 times larger (γ·μ²/σ² against γ·|μ|/σ)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 64))
    base = (base - base.mean(-1, keepdims=True)) / base.std(-1, keepdims=True)
    prec = Precision("float32", "float32")
    ratios = []
    for mean in (1.0, 100.0):
        x = base + mean
        one = tolerance(
            "layer_norm", ref_mod.layer_norm(x, 64, conventions=ONE_PASS), "float32", prec
        )
        two = tolerance("layer_norm", ref_mod.layer_norm(x, 64), "float32", prec)
        ratios.append(float(np.median(one.bound / two.bound)))
    assert ratios[0] < 2.0
    assert ratios[1] > 20.0
