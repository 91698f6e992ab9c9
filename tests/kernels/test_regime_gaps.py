"""Regimes the ci examples must reach, each shown with a wrong implementation that only they
expose (rejected) and a correct low-precision one (accepted), through the runner's ``ci``
profile: what a user's CI concludes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.kernels.strategies import EXP_OVERFLOW, large_logit_target
from transpec.runs import run


def _verdicts(adapter: Any, component: str, prop: str, dtype: str) -> list[Any]:
    result = run(
        adapter,
        components=[component],
        properties=[prop],
        dtypes=[dtype],
        devices=["cpu"],
        profile="ci",
        failures_dir=None,
    )
    return list(result.verdicts)


def _status(adapter: Any, component: str, prop: str, dtype: str) -> str:
    (verdict,) = _verdicts(adapter, component, prop, dtype)
    return str(verdict.status)


# -- the default scale with Ev != E -----------------------------------------------------------


class ScaleFromValueDim(NumpyAdapter):
    """Wrong: the default scale 1/sqrt(Ev) (the value head dim) instead of 1/sqrt(E)."""

    name = "scale-from-value-dim"

    def scaled_dot_product_attention(  # type: ignore[override]
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        if scale is None:
            scale = 1.0 / np.sqrt(v.shape[-1])
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_a_default_scale_from_the_value_dim_is_rejected(dtype: str) -> None:
    assert _status(ScaleFromValueDim(), "attention", "equivalence", dtype) == "failed"
    assert _status(NumpyAdapter(), "attention", "equivalence", dtype) == "passed"


# -- logits beyond the overflow of a wider exp ------------------------------------------------


def _softmax_no_max(work: str) -> type[NumpyAdapter]:
    class NoMaxSubtraction(NumpyAdapter):
        """Wrong: exp(x) / Σ exp(x) without the max, computed in ``work``."""

        name = f"softmax-no-max-{work}"

        def softmax(self, x: Any, dim: int = -1) -> Any:
            w = x.astype(work)
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(w)
                return (e / e.sum(axis=dim, keepdims=True)).astype(x.dtype)

    return NoMaxSubtraction


def test_large_logits_pass_the_overflow_of_the_precision_exp_runs_in() -> None:
    rng = np.random.default_rng(0)
    for dtype, limits in (("float16", (11.09, 88.72, 709.78)), ("float32", (88.72, 709.78))):
        peaks = np.array([float(large_logit_target(rng, dtype)) for _ in range(300)])
        assert peaks.min() > EXP_OVERFLOW[dtype]
        for limit in limits:  # each limit is passed by a good share of the draws
            assert np.mean(peaks > limit) > 0.25, (dtype, limit)
        assert peaks.max() < 65504.0  # representable in float16


@pytest.mark.parametrize(("dtype", "work"), [("float16", "float32"), ("float32", "float64")])
def test_no_max_subtraction_in_a_wider_precision_is_rejected(dtype: str, work: str) -> None:
    assert _status(_softmax_no_max(work)(), "softmax", "large_logits", dtype) == "failed"
    # the NumPy adapter computes float16 in float32, with the max subtracted
    assert _status(NumpyAdapter(), "softmax", "large_logits", dtype) == "passed"
    assert _status(NumpyAdapter(), "attention", "large_logits", dtype) == "passed"


# -- key padding with Lq = Lk -----------------------------------------------------------------


class PaddingZeroesQueries(NumpyAdapter):
    """Wrong: a key-padding mask (B, 1, 1, Lk) also zeroes the outputs of the padded query
    positions when Lq == Lk."""

    name = "padding-zeroes-queries"

    def scaled_dot_product_attention(  # type: ignore[override]
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        out = super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa)
        if attn_mask is None or attn_mask.ndim < 2 or attn_mask.shape[-2] != 1:
            return out
        if q.shape[-2] != k.shape[-2]:
            return out
        keep = attn_mask if attn_mask.dtype == np.bool_ else ~np.isneginf(attn_mask)
        return np.where(np.swapaxes(keep, -1, -2), out, 0).astype(out.dtype)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_padding_that_also_zeroes_queries_is_rejected(dtype: str) -> None:
    prop = "key_padding_invariance"
    assert _status(PaddingZeroesQueries(), "attention", prop, dtype) == "failed"
    assert _status(NumpyAdapter(), "attention", prop, dtype) == "passed"


# -- GQA: declared, never probed --------------------------------------------------------------


class GroupSizeConfused(NumpyAdapter):
    """Wrong: query head h reads kv head h // Hkv (raises or misreads on grouped input)."""

    name = "gqa-group-size-confused"

    def scaled_dot_product_attention(  # type: ignore[override]
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        hq, hkv = q.shape[-3], k.shape[-3]
        if hq != hkv:
            index = np.arange(hq) // hkv
            k, v = np.take(k, index, axis=-3), np.take(v, index, axis=-3)
        return super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)


class RepeatsKV(NumpyAdapter):
    """Correct, without GQA: declares it, and transpec passes repeated K/V."""

    name = "repeats-kv"
    supports_gqa = False

    def scaled_dot_product_attention(  # type: ignore[override]
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
    ) -> Any:
        if q.shape[-3] != k.shape[-3]:
            raise NotImplementedError("grouped heads")
        return super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)


def test_a_raise_on_grouped_input_is_a_failure_not_a_skip() -> None:
    (verdict,) = _verdicts(GroupSizeConfused(), "attention", "gqa", "float32")
    assert verdict.status == "failed"
    assert "raised" in verdict.message and "IndexError" in verdict.message


@pytest.mark.parametrize("prop", ["value_linearity", "convex_hull", "equivalence"])
def test_an_adapter_declaring_no_gqa_is_judged_on_repeated_kv(prop: str) -> None:
    # these properties reason about K/V in the layout they drew: the lowered call must not
    # make transpec itself raise (it did: V was repeated twice)
    assert _status(RepeatsKV(), "attention", prop, "float16") == "passed"
    assert _status(RepeatsKV(), "attention", "gqa", "float16") == "skipped"


# -- LayerNorm at |μ|/σ in the hundreds (float16) -----------------------------------------------


class OnePassVariance(NumpyAdapter):
    """Wrong: var = E[x²] - E[x]² in the float32 math of float16 inputs."""

    name = "one-pass-variance"

    def layer_norm(  # type: ignore[override]
        self,
        x: Any,
        normalized_shape: Any,
        weight: Any = None,
        bias: Any = None,
        eps: float = 1e-5,
    ) -> Any:
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        axes = tuple(range(-len(shape), 0))
        xw = x.astype(np.float32)
        mu = np.mean(xw, axis=axes, keepdims=True)
        var = np.mean(xw * xw, axis=axes, keepdims=True) - mu * mu
        with np.errstate(invalid="ignore", divide="ignore"):
            y = (xw - mu) / np.sqrt(var + np.float32(eps))
        if weight is not None:
            y = y * weight.astype(np.float32)
        if bias is not None:
            y = y + bias.astype(np.float32)
        return y.astype(x.dtype)


def test_a_one_pass_variance_in_float32_is_rejected_on_float16_rows() -> None:
    assert _status(OnePassVariance(), "layer_norm", "large_mean", "float16") == "failed"
    # the NumPy adapter's two-pass variance in float32: within the bound
    assert _status(NumpyAdapter(), "layer_norm", "large_mean", "float16") == "passed"
    assert _status(NumpyAdapter(), "layer_norm", "equivalence", "float16") == "passed"


@pytest.mark.parametrize(("dtype", "floor"), [("float16", 200.0), ("bfloat16", 350.0)])
def test_large_mean_rows_on_the_half_grids_are_exact_and_never_constant(
    dtype: str, floor: float
) -> None:
    from hypothesis import given, settings

    from transpec.oracle.engine.dtypes import round_to
    from transpec.oracle.kernels.strategies import LARGE_MEAN_ROWS, layer_norm_inputs

    @settings(max_examples=20, deadline=None, database=None, derandomize=True)
    @given(layer_norm_inputs(dtype, regimes="large_mean"))
    def check(args: dict[str, Any]) -> None:
        x = args["x"]
        n_axes = len(args["normalized_shape"])
        axes = tuple(range(-n_axes, 0))
        assert np.array_equal(round_to(x, dtype), x)  # already on the dtype's grid
        sd = np.std(x, axis=axes)
        assert np.all(sd > 0)
        assert int(np.prod(x.shape[: x.ndim - n_axes])) >= LARGE_MEAN_ROWS
        ratio = np.abs(np.mean(x, axis=axes)) / sd
        if int(np.prod(args["normalized_shape"])) >= 32:
            assert np.median(ratio) > floor, float(np.median(ratio))

    check()
