"""The bound's magnitudes computed in float32 are rigorous upper bounds of the float64 ones.

The streaming attention reference computes P|V| (``abs_value``), (P∘C)|V|, (P∘D)|V|, their row
sums, the maxima of C and D and Σ|v| in float32 with an upward correction (docs/tolerance.md
§3.2.2). On every regime the strategies draw (every dtype's logits, moderate and beyond exp's
overflow, every mask kind, fully masked rows, scales, softcaps, GQA), under finite fills, and at
extreme magnitudes, each such term is at least its float64 value and at most the stated
looseness above it; the value is the float64 one, bit for bit. Additive masks keep the float64
terms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transpec.oracle.engine.dtypes import DTYPES
from transpec.oracle.kernels import reference as kref
from transpec.oracle.kernels import strategies as strat
from transpec.oracle.kernels import upward
from transpec.spec.conventions import CANONICAL

from .test_streaming_reference import assert_float32_terms, float32_slack

BLOCK = 7  # every example crosses block edges and ragged tails
CONVENTIONS = {
    "canonical": CANONICAL,
    "bottom_right_nan": dataclasses.replace(
        CANONICAL, causal_alignment="bottom_right", fully_masked_row="nan"
    ),
    "fill": dataclasses.replace(CANONICAL, mask_fill=-1e4),
    "fill_min": dataclasses.replace(CANONICAL, mask_fill=-1.7976931348623157e308),
    "fill_added": dataclasses.replace(CANONICAL, mask_fill=-3.4e38, mask_fill_mode="add"),
}


def _both(args: dict[str, Any], conventions: Any) -> tuple[kref.Reference, kref.Reference, bool]:
    problem = kref.attention_problem(**args, conventions=conventions)
    f64 = kref._attention_blocks(problem, None, BLOCK, float32_terms=False)
    f32 = kref._attention_blocks(problem, None, BLOCK, float32_terms=True)
    assert np.array_equal(f32.value, f64.value, equal_nan=True)
    return f32, f64, kref.float32_terms_apply(problem)


def _check(args: dict[str, Any], conventions: Any) -> bool:
    f32, f64, applied = _both(args, conventions)
    slack = float32_slack(f32, args["q"], args["k"], args["v"], args["scale"])
    assert_float32_terms(f32, f64, BLOCK, slack)
    return applied


@pytest.mark.parametrize("conventions", list(CONVENTIONS.values()), ids=list(CONVENTIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_terms_bound_the_float64_ones_on_every_regime(dtype: str, conventions: Any) -> None:
    applied: list[bool] = []

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        args = data.draw(strat.attention_inputs(dtype, softcap=data.draw(st.booleans())))
        applied.append(_check(args, conventions))

    run()
    if conventions.mask_fill_mode == "add":  # an added fill is an additive mask: float64
        assert not any(applied)
    else:  # the float32 terms were taken (not only the float64 fallback) on many examples
        assert sum(applied) >= len(applied) // 3, (sum(applied), len(applied))


@pytest.mark.parametrize(
    ("q_scale", "k_scale", "v_scale", "scale"),
    [
        (1e145, 1e145, 1.0, None),  # scores near 1e297: one-hot weights, huge shifts
        (1e-200, 1.0, 1.0, None),  # tiny scores: uniform weights
        (1.0, 1.0, 1e-300, None),  # values near float64's underflow
        (1.0, 1.0, 1e290, None),  # values up to 1e296, near float64's overflow
        (2.0**-140, 2.0**-140, 2.0**-140, 1.0),  # every operand below float32's normal range
        (1.0, 1.0, 1.0, 1e-300),  # a scale near float64's underflow
        (40.0, 40.0, 1.0, None),  # logit gaps beyond 745: float64 weights underflow to 0
    ],
)
@pytest.mark.parametrize("causal", (False, True))
def test_float32_terms_at_extreme_magnitudes(
    q_scale: float, k_scale: float, v_scale: float, scale: float | None, causal: bool
) -> None:
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 2, 19, 8)) * q_scale * np.exp2(rng.integers(-20, 20, (2, 2, 19, 1)))
    k = rng.standard_normal((2, 2, 23, 8)) * k_scale
    v = rng.standard_normal((2, 2, 23, 5)) * v_scale * np.exp2(rng.integers(-20, 20, (2, 2, 23, 5)))
    mask = rng.random((19, 23)) < 0.7
    mask[4] = False  # a fully masked row
    for m in (None, mask):
        args = {"q": q, "k": k, "v": v, "attn_mask": m, "is_causal": causal, "scale": scale}
        assert _check(args, CANONICAL)


def test_additive_masks_keep_the_float64_terms() -> None:
    """An additive mask's magnitudes (up to float64's largest) enter C element by element:
    those problems take the float64 terms, equal to the direct reference's."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    additive = np.where(rng.random((9, 9)) < 0.7, rng.uniform(-2, 2, (9, 9)), -np.inf)
    problem = kref.attention_problem(q, k, v, additive)
    assert not kref.float32_terms_apply(problem)
    f32, f64, _ = _both({"q": q, "k": k, "v": v, "attn_mask": additive}, CANONICAL)
    assert np.array_equal(f32.abs_value, f64.abs_value)
    for name, term in f64.terms.items():
        assert np.array_equal(np.asarray(f32.terms[name]), np.asarray(term)), name


def test_non_finite_inputs_and_overflowing_scores_keep_the_float64_terms() -> None:
    q = np.ones((1, 3, 4))
    assert kref.float32_terms_apply(kref.attention_problem(q, q, q))
    assert not kref.float32_terms_apply(kref.attention_problem(q * 1e160, q * 1e160, q))
    bad = q.copy()
    bad[0, 1, 2] = np.inf
    assert not kref.float32_terms_apply(kref.attention_problem(q, q, bad))


def test_the_correction_counts() -> None:
    """upward_factor(k) = 1/(1 − (k + spare)·u), refused where (k + spare)·u reaches 1/2;
    looseness(k) ≈ 2(k + spare)·u."""
    k = 128 + 512 + 5
    expected = 1.0 / (1.0 - (k + upward.SPARE_ROUNDINGS) * upward.U32)
    assert upward.upward_factor(k) == expected
    assert 2.0 * (k + 3) * upward.U32 < upward.looseness(k) < 2.1 * (k + 3) * upward.U32
    with pytest.raises(ValueError, match="roundings"):
        upward.upward_factor(2**23)


def test_scale_back_equals_ldexp() -> None:
    """The per-row and per-column scaling gives ldexp's bits, inside the exact range and past
    it (results that under- and overflow, exponents that fall back to ldexp)."""
    rng = np.random.default_rng(9)
    up = np.ldexp(rng.random((3, 5, 6)), rng.integers(-126, 40, (3, 5, 6)))
    up[0, 1] = 0.0
    for low, high in ((-5, 5), (-880, 960), (-1100, -900), (900, 1100), (-1200, 1200)):
        rows = rng.integers(low, high, (3, 5, 1)).astype(np.int32)
        for cols in (0, rng.integers(-1074, 1023, (3, 1, 6)).astype(np.int32)):
            for factor in (0.5, 1.0000123, 1.999):
                with np.errstate(over="ignore"):
                    expected = np.ldexp(up * factor, rows + cols)
                    got = upward.scale_back(up.copy(), factor, rows, cols)
                assert np.array_equal(got, expected), (low, high, factor)
