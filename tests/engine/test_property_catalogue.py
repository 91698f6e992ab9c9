"""The catalogue itself: names, selection, skip reasons, example-seeded transformations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from transpec.adapters.base import FunctionAdapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.catalogue import PROPERTIES, names, select
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.property import example_rng

EXPECTED = {
    "softmax": {
        "equivalence",
        "error_statistic",
        "shape_dtype",
        "rows_sum_to_one",
        "shift_invariance",
        "large_logits",
    },
    "attention": {
        "equivalence",
        "error_statistic",
        "shape_dtype",
        "causality",
        "key_padding_invariance",
        "batch_independence",
        "head_independence",
        "kv_permutation_invariance",
        "query_permutation_equivariance",
        "value_linearity",
        "convex_hull",
        "fully_masked_rows",
        "large_logits",
        "long_context",
        "gqa",
        "softcap",
    },
    "layer_norm": {
        "equivalence",
        "error_statistic",
        "shape_dtype",
        "shift_invariance",
        "scale_invariance",
        "small_variance",
        "bounded_output",
        "large_mean",
        "normalized_shape",
        "long_input",
    },
    "rms_norm": {
        "equivalence",
        "error_statistic",
        "shape_dtype",
        "scale_invariance",
        "small_variance",
        "normalized_shape",
        "long_input",
    },
}


#: the properties of the backward passes (``Property.backward``; a run adds them on request)
EXPECTED_BACKWARD = {
    "softmax": {"grad_equivalence_x", "grad_row_sum", "grad_linearity"},
    "attention": {
        "grad_equivalence_q",
        "grad_equivalence_k",
        "grad_equivalence_v",
        "grad_equivalence_attn_mask",
        "grad_causal_zeros",
        "grad_masked_keys_zero",
        "grad_gqa_group_sum",
        "grad_linearity",
    },
    "layer_norm": {
        "grad_equivalence_x",
        "grad_equivalence_weight",
        "grad_equivalence_bias",
        "grad_row_sum",
        "grad_orthogonality",
        "grad_linearity",
    },
    "rms_norm": {
        "grad_equivalence_x",
        "grad_equivalence_weight",
        "grad_orthogonality",
        "grad_linearity",
    },
}


def _layer_backward(component: str) -> set[str]:
    from transpec.oracle.components import get

    own = {f"grad_equivalence_{g}" for g in get(component).gradients} | {"grad_linearity"}
    return own | ({"grad_padded_keys_zero"} if component == "multi_head_attention" else set())


EXPECTED_BACKWARD.update(
    {
        c: _layer_backward(c)
        for c in (
            "multi_head_attention",
            "feed_forward",
            "swiglu_feed_forward",
            "encoder_layer",
            "decoder_layer",
        )
    }
)


def test_the_catalogue_names_every_property_once() -> None:
    ids = [p.id for p in PROPERTIES]
    assert len(ids) == len(set(ids))
    for component, expected in EXPECTED.items():
        assert {p.name for p in select(component) if not p.backward} == expected
        backward = EXPECTED_BACKWARD.get(component, set())
        assert {p.name for p in select(component) if p.backward} == backward
    for p in PROPERTIES:
        assert p.summary and "\n" not in p.summary
    assert names("rms_norm") == tuple(f"rms_norm.{n}" for n in [p.name for p in select("rms_norm")])


def test_select_by_component_name_and_id() -> None:
    assert set(EXPECTED) <= {p.component for p in select(names="equivalence")}
    assert [p.id for p in select(names=["attention.gqa"])] == ["attention.gqa"]
    assert [p.id for p in select("softmax", "large_logits")] == ["softmax.large_logits"]
    assert select() == PROPERTIES
    with pytest.raises(ValueError, match="unknown component"):
        select("gelu")
    with pytest.raises(ValueError, match="unknown propert"):
        select(names="monotonicity")
    with pytest.raises(ValueError, match="no property matches"):
        select("softmax", "gqa")


def test_skip_reasons() -> None:
    numpy = NumpyAdapter()
    numpy.dtypes = ("float64", "float32", "float16")  # bfloat16 undeclared
    (equivalence,) = select("attention", "equivalence")
    assert equivalence.applies(numpy, "float32") is None
    assert "bfloat16" in (equivalence.applies(numpy, "bfloat16") or "")

    def softmax_only(x: Any, dim: int = -1) -> Any:
        return np.exp(x) / np.exp(x).sum(axis=dim, keepdims=True)

    only = FunctionAdapter(softmax_only, component="softmax")
    assert "does not provide attention" in (equivalence.applies(only, "float32") or "")


def test_gqa_is_skipped_only_when_the_adapter_declares_it_cannot_run_it() -> None:
    class RaisesOnGQA(NumpyAdapter):
        name = "raises-on-gqa"

        def scaled_dot_product_attention(
            self, q: Any, k: Any, v: Any, *args: Any, enable_gqa: bool = False, **kw: Any
        ) -> Any:
            if q.shape[1] != k.shape[1]:
                raise NotImplementedError("grouped heads")
            return super().scaled_dot_product_attention(q, k, v, *args, **kw)

    class NoGQAArgument(NumpyAdapter):
        def scaled_dot_product_attention(  # type: ignore[override]
            self, q: Any, k: Any, v: Any, attn_mask: Any = None, is_causal: bool = False
        ) -> Any:
            return super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal)

    class Declared(NumpyAdapter):
        supports_gqa = False

    (gqa,) = select("attention", "gqa")
    # accepting enable_gqa declares support: a raise on grouped input is then a failure
    assert gqa.applies(RaisesOnGQA(), "float32") is None
    assert "no enable_gqa" in (gqa.applies(NoGQAArgument(), "float32") or "")
    assert "declares" in (gqa.applies(Declared(), "float32") or "")
    assert gqa.applies(NumpyAdapter(), "float32") is None


def test_arguments_an_adapter_rejects_by_design_are_discarded_not_failed() -> None:
    class NoValueDim(NumpyAdapter):
        def supports(
            self, component: str, args: Any, *, dtype: Any = None, device: Any = None
        ) -> str | None:
            if component == "attention" and args["v"].shape[-1] != args["q"].shape[-1]:
                return "Ev != E is not supported"
            return None

    rng = np.random.default_rng(0)
    args = {
        "q": rng.standard_normal((1, 1, 3, 4)),
        "k": rng.standard_normal((1, 1, 5, 4)),
        "v": rng.standard_normal((1, 1, 5, 2)),
    }
    with pytest.raises(ValueError, match="Ev != E is not supported"):
        Harness(NoValueDim(), "float32").call("attention", args)  # outside Hypothesis

    @settings(max_examples=5, database=None, derandomize=True)
    @given(st.just(args))
    def inside(example: dict[str, Any]) -> None:
        Harness(NoValueDim(), "float32").call("attention", example)

    with pytest.raises(Unsatisfiable):  # every example discarded: none failed
        inside()
    args["v"] = rng.standard_normal((1, 1, 5, 4))
    assert Harness(NoValueDim(), "float32").call("attention", args).output.shape == (1, 1, 3, 4)


def test_transformations_are_a_function_of_the_example() -> None:
    a = {"x": np.arange(6.0), "dim": -1}
    b = {"x": np.arange(6.0) + 1, "dim": -1}
    first = example_rng(a, "salt").permutation(50)
    assert np.array_equal(first, example_rng(dict(a), "salt").permutation(50))
    assert not np.array_equal(first, example_rng(b, "salt").permutation(50))
    assert not np.array_equal(first, example_rng(a, "pepper").permutation(50))
