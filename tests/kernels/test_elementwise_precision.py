"""The third precision knob: element-wise math in one precision, reductions in another.

jax.nn.softmax on float16/bfloat16 input computes x - max, exp and the division in the input
dtype, while its sum runs in float32 (jnp.sum upcasts half inputs) and is rounded back to the
input dtype. ``Precision("float32", dtype, elementwise=dtype)`` declares exactly that
(docs/tolerance.md §2.7). Here that recipe is written with NumPy and ml_dtypes (and, where jax
is installed, jax.nn.softmax itself is judged):

* declared with the knob it passes every softmax property, the error statistic included;
* declared as float32 math (two knobs) it fails: its element-wise roundings exceed that model;
* declared with a finer element-wise precision than it has, it fails;
* a sum in the input dtype, declared with the knob (float32 accumulation), still fails;
* the knob keeps the bfloat16 bound meaningful where all-half math (γ_n >= 1) does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Adapter, Precision
from transpec.oracle.catalogue import select
from transpec.oracle.engine.error_model import units
from transpec.oracle.kernels import reference as ref_mod
from transpec.oracle.kernels.tolerance import tolerance

HALF = ("float16", "bfloat16")
SOFTMAX = {p.name: p for p in select(components=["softmax"])}


def half_softmax(x: np.ndarray, dim: int = -1, sum_dtype: Any = np.float32) -> np.ndarray:
    """jax.nn.softmax's recipe on a half array: x - max, exp and the division in x's dtype,
    the sum in ``sum_dtype`` rounded back to x's dtype."""
    m = np.max(x, axis=dim, keepdims=True)
    m = np.where(np.isneginf(m), np.zeros_like(m), m)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - m)
        s = np.sum(e.astype(sum_dtype), axis=dim, keepdims=True).astype(x.dtype)
        return np.asarray(e / s)


class HalfElementwiseSoftmax(Adapter):
    """The recipe, declaring ``elementwise`` (None: the two-knob float32 declaration)."""

    name = "half-elementwise-softmax"
    dtypes = HALF

    def __init__(self, elementwise: Callable[[str], str | None] = lambda dtype: dtype) -> None:
        self._elementwise = elementwise

    def precision(self, component: str, dtype: str) -> Precision:
        return Precision("float32", dtype, elementwise=self._elementwise(dtype))

    def softmax(self, x: np.ndarray, dim: int = -1) -> np.ndarray:
        return half_softmax(x, dim)


class HalfSumSoftmax(HalfElementwiseSoftmax):
    """The recipe with its sum accumulated in the input dtype too, declaring float32 sums."""

    name = "half-sum-softmax"

    def softmax(self, x: np.ndarray, dim: int = -1) -> np.ndarray:
        m = np.max(x, axis=dim, keepdims=True)
        e = np.exp(x - m)
        total = np.zeros_like(np.take(e, [0], axis=dim))
        for j in range(e.shape[dim]):  # left to right, rounded to x's dtype at every step
            total = (total + np.take(e, [j], axis=dim)).astype(x.dtype)
        return np.asarray(e / total)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(
    "prop",
    ["equivalence", "error_statistic", "rows_sum_to_one", "shift_invariance", "large_logits"],
)
def test_declared_elementwise_precision_passes(
    run_property: Callable[..., float], prop: str, dtype: str
) -> None:
    ratio = run_property(SOFTMAX[prop], HalfElementwiseSoftmax(), dtype, 30)
    assert 0.0 <= ratio <= 1.0


@pytest.mark.parametrize(
    ("prop", "dtype"),
    [("error_statistic", "float16"), ("error_statistic", "bfloat16"), ("equivalence", "bfloat16")],
)
def test_undeclared_elementwise_precision_fails(
    rejects: Callable[..., BaseException], prop: str, dtype: str
) -> None:
    error = rejects("softmax", prop, HalfElementwiseSoftmax(lambda d: None), dtype, 30)
    assert prop in str(error) or "out of tolerance" in str(error)


@pytest.mark.parametrize(("dtype", "finer"), [("bfloat16", "float16"), ("float16", "float32")])
def test_a_finer_elementwise_declaration_than_computed_fails(
    rejects: Callable[..., BaseException], dtype: str, finer: str
) -> None:
    adapter = HalfElementwiseSoftmax(lambda d: finer)
    error = rejects("softmax", "error_statistic", adapter, dtype, 30)
    assert "error_statistic" in str(error)


@pytest.mark.parametrize("dtype", HALF)
def test_a_half_sum_declared_as_float32_fails_under_the_knob(
    rejects: Callable[..., BaseException], dtype: str
) -> None:
    error = rejects("softmax", "error_statistic", HalfSumSoftmax(), dtype, 30)
    assert "error_statistic" in str(error)


def test_the_knob_keeps_the_bfloat16_bound_meaningful() -> None:
    """512 logits: all-half math has γ_n = 1 and every weight may be off by more than itself;
    with element-wise bfloat16 and float32 sums the relative bound stays below 30 % of p
    (measured 25 %: the shift x - m of up to 8 rounded in bfloat16 dominates)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-4.0, 4.0, size=(8, 512))
    ref = ref_mod.softmax(x)
    p = ref.value
    knob = tolerance("softmax", ref, "bfloat16", Precision("float32", "bfloat16", "bfloat16"))
    all_half = tolerance("softmax", ref, "bfloat16", Precision("bfloat16", "bfloat16"))
    assert np.min(all_half.bound / p) > 1.0  # 0 or 2p would pass: the bound says nothing
    assert np.max(knob.bound / p) < 0.3
    assert "u_elem=0.00391" in knob.derivation


def test_undeclared_elementwise_is_the_accumulation_precision_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 40)) * 3
    ref = ref_mod.softmax(x)
    for dtype in ("float32", "float16", "bfloat16"):
        two = tolerance("softmax", ref, dtype, Precision("float32", dtype))
        three = tolerance("softmax", ref, dtype, Precision("float32", dtype, "float32"))
        np.testing.assert_array_equal(two.bound, three.bound)


def test_rules_that_do_not_split_the_precisions_get_the_coarser_one() -> None:
    knob = Precision("float32", "bfloat16", elementwise="bfloat16")
    plain = units("bfloat16", knob)
    split = units("bfloat16", knob, elementwise=True)
    assert plain.acc == plain.elem == 2.0**-8
    assert split.acc == 2.0**-24 and split.elem == split.to_elem == 2.0**-8
    finer = units("bfloat16", Precision("float32", "bfloat16", "float64"), elementwise=True)
    assert finer.to_elem == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"elementwise": "float8"}, "Precision.elementwise: unknown dtype 'float8'"),
        ({"elementwise": 16}, "Precision.elementwise must be a dtype name, got int"),
        ({"accumulate": "fp33"}, "Precision.accumulate: unknown dtype 'fp33'"),
    ],
)
def test_precision_names_are_checked(kwargs: dict[str, Any], message: str) -> None:
    fields = {"accumulate": "float32", "store": "float16", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        Precision(**fields)
    assert "\n" not in str(info.value)


class JaxSoftmax(HalfElementwiseSoftmax):
    """jax.nn.softmax itself, on jax arrays (CPU)."""

    name = "jax-softmax"
    framework = "jax"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        import jax

        return jax.nn.softmax(x, axis=dim)

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        import jax.numpy as jnp

        return jnp.asarray(super().to_native(array, dtype, device))

    def from_native(self, value: Any) -> tuple[np.ndarray, str]:
        return super().from_native(np.asarray(value))

    def is_native(self, value: Any) -> bool:
        import jax

        return isinstance(value, jax.Array)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("prop", ["equivalence", "error_statistic"])
def test_jax_softmax_passes_with_the_knob(
    run_property: Callable[..., float], prop: str, dtype: str
) -> None:
    pytest.importorskip("jax")
    ratio = run_property(SOFTMAX[prop], JaxSoftmax(), dtype, 10)
    assert 0.0 <= ratio <= 1.0


@pytest.mark.parametrize("dtype", HALF)
def test_jax_softmax_fails_declared_as_float32_math(
    rejects: Callable[..., BaseException], dtype: str
) -> None:
    pytest.importorskip("jax")
    error = rejects("softmax", "error_statistic", JaxSoftmax(lambda d: None), dtype, 10)
    assert "error_statistic" in str(error)
