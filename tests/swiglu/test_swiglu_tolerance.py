"""The derived SwiGLU tolerance: correct NumPy and torch implementations pass every property in
every dtype they declare (no false alarm), the bound is not vacuous, and an output a few bounds
off fails."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle import swiglu
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation

Accepts = Callable[..., float]

COMPONENT = swiglu.COMPONENT
NUMERIC = ("equivalence", "token_permutation_equivariance", "up_projection_homogeneity")


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_numpy_passes(accepts: Accepts, name: str, dtype: str) -> None:
    assert accepts(COMPONENT, name, NumpyAdapter(), dtype, 30) <= 1.0


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_torch_passes(accepts: Accepts, name: str, dtype: str) -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    assert accepts(COMPONENT, name, TorchAdapter(), dtype, 30) <= 1.0


def test_torch_declares_the_layer_precision() -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    adapter = TorchAdapter()
    assert adapter.provides("swiglu_feed_forward")
    assert adapter.precision("swiglu_feed_forward", "bfloat16") == Precision("float32", "bfloat16")
    assert adapter.precision("swiglu_feed_forward", "float32") == Precision("float32", "float32")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_bound_is_tight_enough_to_matter(accepts: Accepts, dtype: str) -> None:
    """The worst equivalence ratio of a correct implementation is a visible fraction of the
    bound (the bound is a worst case, not a multiple of |y|)."""
    assert accepts(COMPONENT, "equivalence", NumpyAdapter(), dtype, 30) > 1e-2


def _args(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((2, 5, 6)),
        "params": {
            "w1.weight": rng.uniform(-0.5, 0.5, (13, 6)),
            "w2.weight": rng.uniform(-0.5, 0.5, (6, 13)),
            "w3.weight": rng.uniform(-0.5, 0.5, (13, 6)),
        },
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_an_output_a_few_bounds_off_fails(dtype: str) -> None:
    harness = Harness(NumpyAdapter(), dtype)
    call = harness.call("swiglu_feed_forward", _args())
    bound = np.asarray(call.tolerance.bound)
    off = call.reference.value + 3.0 * bound
    assert np.all(np.abs(off - call.reference.value) > bound)
    with pytest.raises(PropertyViolation):
        harness.assert_equivalent(
            type(call)(call.component, off, call.inputs, call.sent, call.reference, call.tolerance)
        )


def test_the_derivation_names_its_numbers() -> None:
    ref = swiglu.compute_component("swiglu_feed_forward", _args())
    tol = swiglu.tolerance("swiglu_feed_forward", ref, "bfloat16", Precision("float32", "bfloat16"))
    assert "u_store=0.00391" in tol.derivation and "n=6" in tol.derivation
    assert "m=13" in tol.derivation and "§3.8" in tol.derivation
    assert set(tol.parts) == {"propagated", "down_projection", "output"}
    with pytest.raises(TypeError):
        swiglu.tolerance("feed_forward", ref, "float32", Precision("float32", "float32"))


def test_overflow_of_the_output_is_required_in_float16() -> None:
    args = _args()
    args["x"] = args["x"] * 400.0  # |y| far beyond 65504
    ref = swiglu.compute_component("swiglu_feed_forward", args)
    tol = swiglu.tolerance("swiglu_feed_forward", ref, "float16", Precision("float32", "float16"))
    assert tol.must_overflow is not None and tol.must_overflow.any()
