"""The harness: rounding, mask encoding, GQA lowering, and every kind of implementation failure."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Adapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.dtypes import round_to
from transpec.oracle.engine.harness import Harness, assert_related, reference_gap
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
from transpec.spec.conventions import Conventions


def _softmax_args(shape: tuple[int, ...] = (3, 7)) -> dict[str, Any]:
    return {"x": np.random.default_rng(1).standard_normal(shape) * 3.0, "dim": -1}


def _attention_args(hq: int = 2, hkv: int = 2) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    mask = rng.random((1, 1, 4, 6)) < 0.7
    mask[..., 0] = True
    return {
        "q": rng.standard_normal((1, hq, 4, 5)),
        "k": rng.standard_normal((1, hkv, 6, 5)),
        "v": rng.standard_normal((1, hkv, 6, 3)),
        "attn_mask": mask,
        "is_causal": False,
        "scale": None,
        "enable_gqa": hq != hkv,
    }


class Raising(NumpyAdapter):
    name = "raising"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        raise RuntimeError("kernel launch failed\nsecond line")


class Hanging(NumpyAdapter):
    name = "hanging"
    call_timeout = 0.2

    def softmax(self, x: Any, dim: int = -1) -> Any:
        time.sleep(1.5)
        return super().softmax(x, dim)


class WrongShape(NumpyAdapter):
    name = "wrong-shape"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim)[..., :-1]


class WrongDtype(NumpyAdapter):
    name = "wrong-dtype"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim).astype(np.float64)


class IntegerOutput(NumpyAdapter):
    name = "integer-output"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return np.zeros(x.shape, dtype=np.int64)


class NotArray(NumpyAdapter):
    name = "not-array"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim).tolist()


class NaNOutput(NumpyAdapter):
    name = "nan-output"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        out = super().softmax(x, dim)
        out[0, 0] = np.nan
        return out


@pytest.mark.parametrize(
    ("adapter", "kind"),
    [
        (Raising(), "raised"),
        (Hanging(), "hung"),
        (WrongShape(), "shape"),
        (WrongDtype(), "dtype"),
        (IntegerOutput(), "dtype"),
        (NotArray(), "not_array"),
    ],
)
def test_failure_kinds(adapter: Adapter, kind: str) -> None:
    harness = Harness(adapter, "float32")
    with pytest.raises(ImplementationFailure) as info:
        harness.call("softmax", _softmax_args())
    assert info.value.kind == kind
    assert "\n" not in info.value.message


def test_raised_message_names_type_and_text_on_one_line() -> None:
    with pytest.raises(ImplementationFailure) as info:
        Harness(Raising(), "float32").call("softmax", _softmax_args())
    assert info.value.message == "RuntimeError: kernel launch failed second line"


def test_hang_returns_after_the_timeout_and_the_run_goes_on() -> None:
    harness = Harness(Hanging(), "float32")
    start = time.perf_counter()
    with pytest.raises(ImplementationFailure):
        harness.call("softmax", _softmax_args())
    assert time.perf_counter() - start < 1.2
    # the same harness still works with another adapter's call afterwards
    call = Harness(NumpyAdapter(), "float32").call("softmax", _softmax_args())
    assert call.output.shape == (3, 7)


def test_nan_output_is_a_property_violation_not_a_failure() -> None:
    harness = Harness(NaNOutput(), "float32")
    call = harness.call("softmax", _softmax_args())
    assert np.isnan(call.output[0, 0])
    with pytest.raises(PropertyViolation):
        harness.assert_equivalent(call)
    assert (
        harness.assert_equivalent(
            Harness(NumpyAdapter(), "float32").call("softmax", _softmax_args())
        )
        <= 1.0
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_inputs_are_rounded_as_the_implementation_received_them(dtype: str) -> None:
    args = _attention_args()
    call = Harness(NumpyAdapter(), dtype).call("attention", args)
    for name in ("q", "k", "v"):
        assert np.array_equal(call.inputs[name], round_to(args[name], dtype))
        assert call.inputs[name].dtype == np.float64
    assert call.inputs["attn_mask"].dtype == np.bool_
    assert np.array_equal(call.inputs["attn_mask"], args["attn_mask"])


class IgnoreMaskNumpy(NumpyAdapter):
    """Declares and implements True = masked out."""

    name = "ignore-mask"
    conventions = Conventions(bool_mask="ignore")

    def scaled_dot_product_attention(
        self, q: Any, k: Any, v: Any, attn_mask: Any = None, **kw: Any
    ) -> Any:
        keep = None if attn_mask is None else ~attn_mask
        return super().scaled_dot_product_attention(q, k, v, keep, **kw)


def test_boolean_masks_are_encoded_for_the_declared_meaning() -> None:
    args = _attention_args()
    canonical = Harness(NumpyAdapter(), "float64").call("attention", args)
    inverted = Harness(IgnoreMaskNumpy(), "float64").call("attention", args)
    assert np.array_equal(inverted.sent["attn_mask"], ~args["attn_mask"])
    assert np.array_equal(inverted.inputs["attn_mask"], args["attn_mask"])
    np.testing.assert_allclose(inverted.output, canonical.output, rtol=0, atol=1e-14)
    Harness(IgnoreMaskNumpy(), "float64").assert_equivalent(inverted)


class NoGQA(NumpyAdapter):
    name = "no-gqa"
    supports_gqa = False

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        if enable_gqa:
            raise NotImplementedError("enable_gqa")
        return super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)


def test_grouped_arguments_are_lowered_for_adapters_without_gqa() -> None:
    harness = Harness(NoGQA(), "float64")
    assert harness.gqa_support() is not None
    assert Harness(NumpyAdapter(), "float64").gqa_support() is None
    call = harness.call("attention", _attention_args(hq=4, hkv=2))
    assert call.output.shape == (1, 4, 4, 3)
    assert call.sent["k"].shape[1] == 4
    harness.assert_equivalent(call)


def test_unknown_arguments_and_components_are_refused() -> None:
    harness = Harness(NumpyAdapter(), "float32")
    with pytest.raises(ValueError, match="unknown argument"):
        harness.call("softmax", {"x": np.zeros(3), "axis": 0})
    with pytest.raises(ValueError, match="unknown component"):
        harness.call("gelu", {"x": np.zeros(3)})
    with pytest.raises(TypeError):
        Harness(object(), "float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Harness(NumpyAdapter(), "int8")


def test_assert_related_checks_values_and_nonfinite_positions() -> None:
    a = np.array([1.0, 2.0, np.nan])
    assert assert_related(a, a, 0.0, what="same", derivation="d") == 0.0
    assert assert_related(a, a + 0.5, 1.0, what="close", derivation="d") == 0.5
    with pytest.raises(PropertyViolation) as info:
        assert_related(a, a + 2.0, 1.0, what="far", derivation="d")
    assert info.value.worst is not None and info.value.worst.ratio == 2.0
    with pytest.raises(PropertyViolation):
        assert_related(np.array([1.0, 2.0, 3.0]), a, 10.0, what="nan", derivation="d")
    gap = reference_gap(np.array([1.0, np.nan, np.inf]), np.array([1.5, np.nan, np.inf]))
    assert list(gap) == [0.5, 0.0, 0.0]


def test_assert_relation_subtracts_the_references_difference() -> None:
    from transpec.oracle.engine.harness import assert_relation

    base = np.array([1.0, 2.0])
    ref_base = np.array([1.0, 2.0])
    ref_actual = np.array([1.5, 2.0])  # exact arithmetic says the first element moves by 0.5
    bound = np.array([0.1, 0.1])
    assert (
        assert_relation(
            np.array([1.5, 2.0]),
            base,
            ref_actual,
            ref_base,
            bound,
            what="moved as the references",
            derivation="d",
        )
        < 1e-9
    )
    with pytest.raises(PropertyViolation):  # staying put is now the violation
        assert_relation(base, base, ref_actual, ref_base, bound, what="stayed", derivation="d")


def test_torch_failure_kinds_and_bfloat16_rounding() -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    class ReturnsNumpy(TorchAdapter):
        def softmax(self, x: Any, dim: int = -1) -> Any:
            return super().softmax(x, dim).float().numpy()

    class ReturnsFloat32(TorchAdapter):
        def softmax(self, x: Any, dim: int = -1) -> Any:
            return super().softmax(x.float(), dim)

    args = _softmax_args()
    with pytest.raises(ImplementationFailure) as info:
        Harness(ReturnsNumpy(), "bfloat16").call("softmax", args)
    assert info.value.kind == "not_array"
    with pytest.raises(ImplementationFailure) as info:
        Harness(ReturnsFloat32(), "bfloat16").call("softmax", args)
    assert info.value.kind == "dtype" and "float32" in info.value.message
    harness = Harness(TorchAdapter(), "bfloat16")
    call = harness.call("softmax", args)
    assert np.array_equal(call.inputs["x"], round_to(args["x"], "bfloat16"))
    assert harness.assert_equivalent(call) <= 1.0
