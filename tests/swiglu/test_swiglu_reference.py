"""The SwiGLU reference: the registry record resolves to it, it agrees with a 40-digit mpmath
evaluation, and its tolerance in float64 covers its own error."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle import components, swiglu
from transpec.oracle.kernels import highprec
from transpec.spec.conventions import CANONICAL

P64 = Precision("float64", "float64")


def _args(rng: np.random.Generator, shape: tuple[int, ...], hidden: int, scale: float) -> dict:
    d = shape[-1]
    return {
        "x": rng.standard_normal(shape) * scale,
        "params": {
            "w1.weight": rng.uniform(-0.5, 0.5, (hidden, d)),
            "w2.weight": rng.uniform(-0.5, 0.5, (d, hidden)),
            "w3.weight": rng.uniform(-0.5, 0.5, (hidden, d)),
        },
    }


def _highprec(args: dict, digits: int = 40) -> np.ndarray:
    """The block over mpf numbers: exact inputs, every operation at ``digits`` digits."""
    with mpmath.workdps(digits):
        x = highprec.to_mp(args["x"])
        w1, w2, w3 = (highprec.to_mp(args["params"][k]) for k in swiglu.PARAM_KEYS)
        a, b = np.matmul(x, w1.T), np.matmul(x, w3.T)
        silu = np.frompyfunc(lambda z: z / (1 + mpmath.exp(-z)), 1, 1)
        return highprec.to_float64(np.matmul(silu(a) * b, w2.T))


def test_the_registry_record_resolves_to_this_module() -> None:
    record = components.get("swiglu_feed_forward")
    assert record.family.name == "swiglu" and record.takes_params
    assert record.argument_names == ("x", "params")
    assert record.arguments_of("array") == ("x",) and record.arguments_of("params") == ("params",)
    args = _args(np.random.default_rng(0), (2, 3, 5), 7, 1.0)
    ref = record.compute_reference(args, conventions=CANONICAL)
    assert isinstance(ref, swiglu.SwigluReference)
    np.testing.assert_array_equal(ref.value, swiglu.swiglu_feed_forward(**args))
    tol = record.compute_tolerance(ref, "float16", Precision("float32", "float16"))
    assert np.shape(tol.bound) == ref.value.shape and np.all(tol.bound > 0)
    assert [p.name for p in record.property_list() if not p.backward] == [
        "equivalence",
        "shape_dtype",
        "token_permutation_equivariance",
        "up_projection_homogeneity",
    ]


CASES = [
    ((5,), 3, 1.0),  # one token
    ((4, 1), 11, 1.0),  # d = 1
    ((2, 3, 8), 43, 1.0),  # hidden not a multiple of 8
    ((3, 6), 20, 12.0),  # saturating silu, gates down to about -40
    ((2, 2, 4), 9, 0.01),  # small: silu ≈ z/2
]


@pytest.mark.parametrize(("shape", "hidden", "scale"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_reference_agrees_with_40_digits(
    shape: tuple[int, ...], hidden: int, scale: float, seed: int
) -> None:
    args = _args(np.random.default_rng(seed), shape, hidden, scale)
    ref = swiglu.compute_component("swiglu_feed_forward", args)
    hp = _highprec(args)
    err = np.abs(ref.value - hp)
    # unit-scale rounding: a few float64 roundings relative to the absolute-value reference
    assert np.all(err <= 1e-13 * ref.abs_value + 1e-300), float(np.max(err / ref.abs_value))
    # and within the derived float64 bound of the tolerance model itself
    tol = swiglu.tolerance("swiglu_feed_forward", ref, "float64", P64)
    assert np.all(err <= tol.bound)


def test_silu_saturates_without_overflow() -> None:
    z = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = swiglu.silu(z)
    np.testing.assert_allclose(out[2:], [0.0, 40.0, 800.0])
    assert out[0] == -0.0 and -1e-15 < out[1] < 0.0
    assert float(np.max(swiglu.silu_slope(np.linspace(-10, 10, 20001)))) < 1.1
    # max |silu''| = 1/2, at 0 (SILU_CURVATURE)
    h = 1e-4
    z = np.linspace(-10, 10, 20001)
    second = (swiglu.silu(z + h) - 2 * swiglu.silu(z) + swiglu.silu(z - h)) / h**2
    assert abs(float(np.max(np.abs(second))) - swiglu.SILU_CURVATURE) < 1e-4


def test_arguments_are_checked() -> None:
    args = _args(np.random.default_rng(0), (2, 4), 3, 1.0)
    with pytest.raises(ValueError, match=r"w2\.weight has shape"):
        swiglu.swiglu_feed_forward(args["x"], {**args["params"], "w2.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="missing"):
        swiglu.swiglu_feed_forward(args["x"], {"w1.weight": args["params"]["w1.weight"]})
    with pytest.raises(ValueError, match="unknown"):
        swiglu.swiglu_feed_forward(args["x"], {**args["params"], "w1.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="computes 'swiglu_feed_forward'"):
        swiglu.compute_component("feed_forward", args)
