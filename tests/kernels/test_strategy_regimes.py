"""The strategies reach every regime the oracle targets, never overflow the dtype, validate
eagerly."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from transpec.oracle.engine.dtypes import FORMATS, round_to
from transpec.oracle.kernels import strategies as strat

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


class _Reached(Exception):
    def __init__(self, example: Any) -> None:
        super().__init__("reached")
        self.example = example


def _reach(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool]) -> Any:
    """The first of at most 300 derandomized examples that meets ``condition`` (no shrinking:
    only reachability is asked); fails when none does."""

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def search(example: Any) -> None:
        if condition(example):
            raise _Reached(example)

    with pytest.raises(_Reached) as info:
        search()
    return info.value.example


def _max_logit(a: dict[str, Any]) -> float:
    q, k = a["q"], a["k"]
    k = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    return float(np.max(np.abs(scale * (q @ np.swapaxes(k, -1, -2)))))


def _fully_masked(a: dict[str, Any]) -> bool:
    m = a["attn_mask"]
    if m is None:
        return False
    keep = m if m.dtype == np.bool_ else ~np.isneginf(m)
    return bool((~keep.any(axis=-1)).any())


ATTENTION_REGIMES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "Lq < Lk": lambda a: a["q"].shape[-2] < a["k"].shape[-2],
    "Lq > Lk": lambda a: a["q"].shape[-2] > a["k"].shape[-2],
    "decode Lq = 1": lambda a: a["q"].shape[-2] == 1 and a["k"].shape[-2] > 8,
    "length 97 or 113": lambda a: a["k"].shape[-2] in (97, 113),
    "odd length > 64": lambda a: a["k"].shape[-2] > 64 and a["k"].shape[-2] % 8 != 0,
    "head dim not a multiple of 8": lambda a: a["q"].shape[-1] % 8 != 0 and a["q"].shape[-1] > 8,
    "Ev != E": lambda a: a["v"].shape[-1] != a["q"].shape[-1],
    "GQA groups > 1": lambda a: a["enable_gqa"] and a["q"].shape[1] > a["k"].shape[1],
    "fully masked row": _fully_masked,
    "is_causal": lambda a: a["is_causal"],
    "boolean mask": lambda a: a["attn_mask"] is not None and a["attn_mask"].dtype == np.bool_,
    "additive mask": lambda a: a["attn_mask"] is not None and a["attn_mask"].dtype != np.bool_,
    "key padding": lambda a: a["attn_mask"] is not None and a["attn_mask"].shape[1:3] == (1, 1),
    "negative scale": lambda a: a["scale"] is not None and a["scale"] < 0,
    "custom positive scale": lambda a: a["scale"] is not None and a["scale"] > 0,
    "query rows of very different scale": lambda a: (
        float(np.ptp(np.log2(np.abs(a["q"]).max(axis=-1) + 1e-300))) >= 4
    ),
}


@pytest.mark.parametrize("regime", list(ATTENTION_REGIMES))
def test_attention_regimes_are_reached(regime: str) -> None:
    _reach(strat.attention_inputs("float32"), ATTENTION_REGIMES[regime])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_large_logits_pass_the_exp_overflow_of_the_dtype(dtype: str) -> None:
    threshold = strat.EXP_OVERFLOW[dtype]
    example = _reach(
        strat.attention_inputs(dtype, logits="large"),
        lambda a: (
            _max_logit({**a, "q": round_to(a["q"], dtype), "k": round_to(a["k"], dtype)})
            > threshold
        ),
    )
    assert np.isfinite(round_to(example["q"], dtype)).all()
    _reach(
        strat.softmax_inputs(dtype, logits="large"),
        lambda a: float(np.max(np.abs(a["x"][np.isfinite(a["x"])]))) > threshold,
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_no_input_overflows_the_dtype(dtype: str, data: Any) -> None:
    biggest = FORMATS[dtype].max_value
    component = data.draw(st.sampled_from(["attention", "softmax", "layer_norm", "rms_norm"]))
    args = data.draw(strat.inputs(component, dtype))
    for value in args.values():
        if isinstance(value, np.ndarray) and value.dtype != np.bool_:
            finite = value[np.isfinite(value)]
            assert np.all(np.abs(finite) < biggest / 16)
            assert not np.isposinf(value).any() and not np.isnan(value).any()
    if component == "attention":
        # the unscaled scores fit too (an implementation may scale after Q Kᵀ)
        q, k = round_to(args["q"], dtype), round_to(args["k"], dtype)
        k = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
        assert np.max(np.abs(q @ np.swapaxes(k, -1, -2))) < biggest / 16


def _sigma2_over_eps(a: dict[str, Any]) -> np.ndarray:
    axes = tuple(range(-len(a["normalized_shape"]), 0))
    return np.var(a["x"], axis=axes) / a["eps"]


NORM_REGIMES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "σ² ≈ eps": lambda a: (
        a["eps"] is not None
        and bool(np.all((_sigma2_over_eps(a) > 0.05) & (_sigma2_over_eps(a) < 20)))
    ),
    "small n": lambda a: math.prod(a["normalized_shape"]) <= 8,
    "n >= 97": lambda a: math.prod(a["normalized_shape"]) >= 97,
    "multi-dim normalized shape": lambda a: (
        len(a["normalized_shape"]) >= 2 and sorted(a["normalized_shape"])[-2] > 1
    ),
    "with weight": lambda a: a["weight"] is not None,
    "without weight": lambda a: a["weight"] is None,
}


@pytest.mark.parametrize("regime", list(NORM_REGIMES))
@pytest.mark.parametrize(
    "factory", [strat.layer_norm_inputs, strat.rms_norm_inputs], ids=["layer_norm", "rms_norm"]
)
def test_norm_regimes_are_reached(regime: str, factory: Any) -> None:
    _reach(factory("float16"), NORM_REGIMES[regime])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_large_mean_reaches_the_ratio_of_the_dtype(dtype: str) -> None:
    target = strat.LARGE_MEAN_RATIO[dtype] / 2

    def far(a: dict[str, Any]) -> bool:
        x = round_to(a["x"], dtype)
        axes = tuple(range(-len(a["normalized_shape"]), 0))
        mu, sd = np.mean(x, axis=axes), np.std(x, axis=axes)
        return bool(np.all(sd > 0) and np.max(np.abs(mu) / sd) > target)

    _reach(strat.layer_norm_inputs(dtype, regimes="large_mean"), far)


def test_layer_norm_bias_and_rms_default_eps_are_reached() -> None:
    _reach(strat.layer_norm_inputs("float32"), lambda a: a["bias"] is not None)
    _reach(strat.layer_norm_inputs("float32"), lambda a: a["bias"] is None)
    _reach(strat.rms_norm_inputs("bfloat16"), lambda a: a["eps"] is None)


def test_softmax_reaches_every_axis_and_minus_infinity() -> None:
    _reach(strat.softmax_inputs("float32"), lambda a: a["x"].ndim >= 3 and a["dim"] == 0)
    _reach(strat.softmax_inputs("float32"), lambda a: a["dim"] < 0 and a["x"].ndim >= 2)
    _reach(strat.softmax_inputs("float32"), lambda a: bool(np.isneginf(a["x"]).any()))


@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(strat.softmax_inputs("float16"))
def test_softmax_rows_are_never_entirely_minus_infinity(args: dict[str, Any]) -> None:
    assert np.isfinite(args["x"]).any(axis=args["dim"]).all()


@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(strat.attention_inputs("float32", mask_kinds=("bool", "additive", "key_padding")))
def test_masks_outside_the_fully_masked_regime_keep_a_key_per_query(args: dict[str, Any]) -> None:
    assert not _fully_masked(args)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: strat.attention_inputs("float8"), ValueError),
        (lambda: strat.attention_inputs(16), TypeError),  # type: ignore[arg-type]
        (lambda: strat.attention_inputs("float32", mask_kinds=("sliding",)), ValueError),
        (lambda: strat.attention_inputs("float32", mask_kinds=()), ValueError),
        (lambda: strat.attention_inputs("float32", logits="huge"), ValueError),
        (lambda: strat.attention_inputs("float32", row_spread=-1), ValueError),
        (lambda: strat.attention_inputs("float32", shapes=(1, 2)), TypeError),  # type: ignore
        (lambda: strat.attention_shapes(max_batch=0), ValueError),
        (lambda: strat.attention_shapes(max_groups=1, gqa=True), ValueError),
        (lambda: strat.attention_shapes(gqa="yes"), TypeError),  # type: ignore[arg-type]
        (lambda: strat.lengths(min_value=5, max_value=4), ValueError),
        (lambda: strat.softmax_inputs("float32", max_dims=0), ValueError),
        (lambda: strat.softmax_inputs("float32", neg_inf=1), TypeError),  # type: ignore
        (lambda: strat.layer_norm_inputs("float32", regimes=("tiny",)), ValueError),
        (lambda: strat.layer_norm_inputs("float32", eps=(0.0,)), ValueError),
        (
            lambda: strat.layer_norm_inputs(
                "float32", min_normalized_dims=3, max_normalized_dims=2
            ),
            ValueError,
        ),
        (lambda: strat.rms_norm_inputs("float32", regimes=("large_mean",)), ValueError),
        (lambda: strat.rms_norm_inputs("float32", min_rows=0), ValueError),
        (lambda: strat.inputs("gelu", "float32"), ValueError),
    ],
)
def test_bad_options_raise_when_the_strategy_is_built(call: Callable[[], Any], error: type) -> None:
    with pytest.raises(error):
        call()
