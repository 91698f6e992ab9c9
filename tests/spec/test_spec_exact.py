"""The float64 kernels agree with the exact semantics of the definitions at tiny sizes.

The exact side evaluates the SymPy definitions with the inputs' exact binary values (Rationals)
and the transcendental values at 50 digits; the float64 side is the generated kernel. They must
agree to ~1e-14 relative (the kernels' rounding at these sizes is a few units of 2^-53).
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any

import numpy as np
import pytest

import transpec.oracle.kernels._kernels as kernels
from transpec.spec.blocks import attention_exact, evaluate, kv_head
from transpec.spec.conventions import Conventions

RTOL = 1e-14


def assert_agrees(actual: np.ndarray, exact: np.ndarray, scale: np.ndarray | float) -> None:
    """|actual - exact| <= RTOL * scale elementwise, with NaN / inf at the same places."""
    actual, exact = np.asarray(actual, float), np.asarray(exact, float)
    assert actual.shape == exact.shape
    assert np.array_equal(np.isnan(actual), np.isnan(exact)), "NaN positions differ"
    assert np.array_equal(np.isinf(actual), np.isinf(exact)), "inf positions differ"
    ok = np.isfinite(exact)
    assert np.array_equal(actual[~ok & ~np.isnan(exact)], exact[~ok & ~np.isnan(exact)])
    bound = RTOL * np.broadcast_to(scale, exact.shape)[ok] + 1e-300
    err = np.abs(actual[ok] - exact[ok])
    assert np.all(err <= bound), f"max error / bound = {np.max(err / bound):.3g}"


def rng_for(*key: Any) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
def test_softmax_and_logsumexp_with_infinite_entries() -> None:
    x = rng_for("sm").normal(size=(3, 5)) * 4
    x[1, [0, 3]] = -np.inf
    x[2, :] = -np.inf  # a fully -inf row: NaN softmax, -inf logsumexp
    (p,) = evaluate("softmax", x=x)
    assert_agrees(quiet(kernels.softmax, x), p, np.abs(p))
    assert np.isnan(p[2]).all() and (p[1, [0, 3]] == 0).all()
    (lse,) = evaluate("logsumexp", x=x)
    assert_agrees(quiet(kernels.logsumexp, x), lse[:, 0], np.abs(lse[:, 0]))


def test_softmax_kernel_on_large_logits_matches_exact() -> None:
    x = np.array([[800.0, 799.0, -1000.0, 0.5]])  # exp overflows without the shift
    (p,) = evaluate("softmax", x=x)
    assert_agrees(kernels.softmax(x), p, np.abs(p))


@pytest.mark.parametrize("softcap", [None, 1.5])
@pytest.mark.parametrize("scale", [0.5, -0.7])
def test_attention_scores_and_attention_with_bias(scale: float, softcap: float | None) -> None:
    r = rng_for("att", scale, softcap)
    q, k, v = r.normal(size=(2, 3)), r.normal(size=(4, 3)), r.normal(size=(4, 2))
    bias = np.where(r.random((2, 4)) < 0.3, -np.inf, r.normal(size=(2, 4)))
    bias[0, 0] = 0.0
    (s,) = evaluate("attention_scores", q=q, k=k, scale=scale, softcap=softcap)
    # the dot products may cancel: the scale of a score is |alpha| |q| |k|^T, not |s|
    absref = abs(scale) * np.abs(q) @ np.abs(k).T
    assert_agrees(kernels.attention_scores(q, k, scale, softcap), s, absref)
    o, p = evaluate("attention", q=q, k=k, v=v, bias=bias, scale=scale, softcap=softcap)
    fo, fp = kernels.attention(q, k, v, bias, scale, softcap)
    assert_agrees(fp, p, np.abs(p))
    assert_agrees(fo, o, np.abs(p) @ np.abs(v))


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("inside", [True, False])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_variants(unbiased: bool, inside: bool, affine: bool) -> None:
    r = rng_for("ln", unbiased, inside, affine)
    x = r.normal(size=(2, 3, 4)) * 3 + 1  # normalized over the trailing (3, 4)... per row of 12
    w = r.normal(size=(3, 4)) if affine else None
    b = r.normal(size=(3, 4)) if affine else None
    got = kernels.layer_norm(x, 2, w, b, 0.01, unbiased=unbiased, eps_inside_sqrt=inside)
    (want,) = evaluate(
        "layer_norm",
        x=x.reshape(2, 12),
        weight=None if w is None else w.reshape(12),
        bias=None if b is None else b.reshape(12),
        eps=0.01,
        unbiased=unbiased,
        eps_inside_sqrt=inside,
    )
    scale = np.max(np.abs(want), axis=-1, keepdims=True)
    assert_agrees(got.reshape(2, 12), want, scale)


@pytest.mark.parametrize("inside", [True, False])
@pytest.mark.parametrize("one_plus", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_rms_norm_variants(inside: bool, one_plus: bool, weighted: bool) -> None:
    r = rng_for("rms", inside, one_plus, weighted)
    x = r.normal(size=(3, 5)) * 2
    w = r.normal(size=5) if weighted else None
    got = kernels.rms_norm(x, 1, w, 1e-3, eps_inside_sqrt=inside, one_plus_weight=one_plus)
    (want,) = evaluate(
        "rms_norm", x=x, weight=w, eps=1e-3, eps_inside_sqrt=inside, one_plus_weight=one_plus
    )
    assert_agrees(got, want, np.max(np.abs(want), axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# Full attention semantics: masks, causal alignments, GQA, softcap, fully masked rows.
CASES = {
    "plain": (Conventions(), None, False, None),
    "bool_keep": (Conventions(), "bool", False, None),
    "bool_ignore": (Conventions(bool_mask="ignore"), "bool", False, None),
    "additive": (Conventions(), "float", False, None),
    "causal_top_left": (Conventions(), None, True, None),
    "causal_bottom_right": (Conventions(causal_alignment="bottom_right"), None, True, None),
    "causal_and_bool": (Conventions(), "bool", True, None),
    "softcap_then_mask": (Conventions(), "bool", True, 2.0),
    "gqa_tile": (Conventions(gqa_mapping="tile"), None, False, None),
    "fully_masked_nan": (Conventions(fully_masked_row="nan"), "bool", False, None),
    "finite_fill": (Conventions(mask_fill=-1e9), "bool", True, None),
}


@pytest.mark.parametrize("shape", [(2, 3), (3, 2)], ids=["Lq<Lk", "Lq>Lk"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_sdpa_conventions_match_exact(case: str, shape: tuple[int, int]) -> None:
    conventions, mask_kind, causal, softcap = CASES[case]
    lq, lk = shape
    r = rng_for("sdpa", case, shape)
    q = r.normal(size=(1, 4, lq, 3))  # Hq = 4 query heads over Hkv = 2 kv heads
    k = r.normal(size=(1, 2, lk, 3))
    v = r.normal(size=(1, 2, lk, 2))
    mask: np.ndarray | None = None
    if mask_kind is not None:
        keep = r.random((lq, lk)) < 0.6
        keep[0, :] = False  # a fully masked query row
        keep[-1, -1] = True
        mask = keep if mask_kind == "bool" else np.where(keep, r.normal(size=(lq, lk)), -np.inf)
    scale = None if case != "additive" else -0.8
    eo, ep = attention_exact(q, k, v, mask, causal, scale, softcap, conventions=conventions)
    fo, fp = quiet(kernels.sdpa, q, k, v, mask, causal, scale, softcap, conventions=conventions)
    heads = [kv_head(h, 4, 2, conventions.gqa_mapping) for h in range(4)]
    absref = np.abs(np.nan_to_num(ep)) @ np.abs(v[:, heads])
    assert_agrees(fp, ep, np.abs(np.nan_to_num(ep)))
    assert_agrees(fo, eo, absref)


def test_fully_masked_row_follows_the_convention() -> None:
    r = rng_for("dead")
    q, k, v = r.normal(size=(1, 1, 2, 2)), r.normal(size=(1, 1, 3, 2)), r.normal(size=(1, 1, 3, 2))
    keep = np.array([[False, False, False], [True, False, True]])
    zero, _ = attention_exact(q, k, v, keep)
    nan, _ = attention_exact(q, k, v, keep, conventions=Conventions(fully_masked_row="nan"))
    assert (zero[0, 0, 0] == 0).all() and np.isnan(nan[0, 0, 0]).all()
    filled, _ = attention_exact(q, k, v, keep, conventions=Conventions(mask_fill=-1e9))
    np.testing.assert_allclose(filled[0, 0, 0], v[0, 0].mean(axis=0), rtol=1e-14)


def test_causal_alignments_differ_when_lengths_differ() -> None:
    r = rng_for("align")
    q, k, v = r.normal(size=(1, 1, 2, 2)), r.normal(size=(1, 1, 4, 2)), r.normal(size=(1, 1, 4, 2))
    top, _ = attention_exact(q, k, v, None, True)
    bottom, _ = attention_exact(
        q, k, v, None, True, conventions=Conventions(causal_alignment="bottom_right")
    )
    np.testing.assert_allclose(top[0, 0, 0], v[0, 0, 0], rtol=1e-14)  # query 0 sees key 0
    assert not np.allclose(top, bottom)


# ---------------------------------------------------------------------------------------------
# The comparison can fail: wrong values and wrong conventions are rejected.
def test_comparison_rejects_a_slightly_wrong_kernel_and_accepts_a_correct_one() -> None:
    x = rng_for("neg").normal(size=(2, 6))
    (p,) = evaluate("softmax", x=x)
    assert_agrees(kernels.softmax(x), p, np.abs(p))
    with pytest.raises(AssertionError):
        assert_agrees(kernels.softmax(x) * (1 + 1e-12), p, np.abs(p))
    with pytest.raises(AssertionError, match="NaN"):
        bad = kernels.softmax(x)
        bad[0, 0] = math.nan
        assert_agrees(bad, p, np.abs(p))


def test_exact_semantics_tell_the_conventions_apart() -> None:
    x = rng_for("conv").normal(size=(2, 4))
    (biased,) = evaluate("layer_norm", x=x, eps=0.0, unbiased=False)
    got_unbiased = kernels.layer_norm(x, 1, None, None, 0.0, unbiased=True)
    with pytest.raises(AssertionError):
        assert_agrees(got_unbiased, biased, np.abs(biased))
    q = rng_for("gqa").normal(size=(1, 4, 2, 2))
    k, v = rng_for("k").normal(size=(1, 2, 3, 2)), rng_for("v").normal(size=(1, 2, 3, 2))
    inter, _ = attention_exact(q, k, v)
    tiled, _ = kernels.sdpa(q, k, v, conventions=Conventions(gqa_mapping="tile"))
    with pytest.raises(AssertionError):
        assert_agrees(tiled, inter, np.abs(inter))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_generated_kernels_run_over_the_mpmath_namespace() -> None:
    """The same generated code over object arrays of mpf (oracle/kernels/highprec.py) matches
    exact."""
    highprec = pytest.importorskip("transpec.oracle.kernels.highprec")
    mpmath = pytest.importorskip("mpmath")
    r = rng_for("mp")
    q, k, v = r.normal(size=(1, 4, 2, 3)), r.normal(size=(1, 2, 3, 3)), r.normal(size=(1, 2, 3, 2))
    keep = r.random((2, 3)) < 0.6
    keep[0] = False
    with mpmath.workdps(40):
        for conventions in (Conventions(), Conventions(fully_masked_row="nan", mask_fill=None)):
            mo, _ = kernels.sdpa(
                highprec.to_mp(q),
                highprec.to_mp(k),
                highprec.to_mp(v),
                keep,
                True,
                None,
                2.0,
                conventions=conventions,
                xp=highprec.xp,
            )
            eo, ep = attention_exact(q, k, v, keep, True, None, 2.0, conventions=conventions)
            absref = np.abs(np.nan_to_num(ep)) @ np.abs(v[:, [0, 0, 1, 1]])
            assert_agrees(highprec.to_float64(mo), eo, absref)
        x = r.normal(size=(2, 5))
        (want,) = evaluate("layer_norm", x=x, eps=1e-5, unbiased=True)
        got = kernels.layer_norm(
            highprec.to_mp(x), 1, None, None, 1e-5, unbiased=True, xp=highprec.xp
        )
        assert_agrees(highprec.to_float64(got), want, np.abs(want))


# ---------------------------------------------------------------------------------------------
# The exact semantics against values worked out by hand.
def test_exact_definitions_reproduce_hand_values() -> None:
    from transpec.spec.blocks import layer_norm_exact, rms_norm_exact, softmax_exact

    p = softmax_exact(np.array([[0.0, math.log(3.0)], [5.0, 5.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-15)
    y = layer_norm_exact(np.array([1.0, 2.0, 3.0]), 3, eps_=0.0)
    np.testing.assert_allclose(y, [-math.sqrt(1.5), 0.0, math.sqrt(1.5)], rtol=1e-15, atol=1e-300)
    unbiased = Conventions(layer_norm_variance="unbiased")
    y = layer_norm_exact(np.array([1.0, 2.0, 3.0]), (3,), eps_=0.0, conventions=unbiased)
    np.testing.assert_allclose(y, [-1.0, 0.0, 1.0], rtol=1e-15, atol=1e-300)
    y = layer_norm_exact(
        np.array([1.0, 3.0]), 2, eps_=1.0, conventions=Conventions(layer_norm_eps="added_to_std")
    )
    np.testing.assert_allclose(y, [-0.5, 0.5], rtol=1e-15)  # (x - 2) / (1 + 1)
    y = rms_norm_exact(np.array([3.0, 4.0]), 2, np.array([1.0, -1.0]), eps_=0.0)
    r = math.sqrt(12.5)
    np.testing.assert_allclose(y, [3 / r, -4 / r], rtol=1e-15)
    gemma = Conventions(rms_norm_weight="one_plus_w", rms_norm_eps="added_to_rms")
    y = rms_norm_exact(np.array([3.0, 4.0]), 2, np.array([1.0, -1.0]), eps_=0.5, conventions=gemma)
    np.testing.assert_allclose(y, [2 * 3 / (r + 0.5), 0.0], rtol=1e-15, atol=1e-300)
    with pytest.raises(ValueError, match="does not end"):
        layer_norm_exact(np.ones((2, 3)), (2,))


def test_exact_attention_hand_values() -> None:
    # one query, keys with scores 0 and log 3 (scale 1): weights 1/4, 3/4
    q = np.array([[[[1.0]]]])
    k = np.array([[[[0.0], [math.log(3.0)]]]])
    v = np.array([[[[4.0], [8.0]]]])
    o, p = attention_exact(q, k, v, None, False, 1.0)
    np.testing.assert_allclose(p[0, 0], [[0.25, 0.75]], rtol=1e-15)
    np.testing.assert_allclose(o[0, 0], [[7.0]], rtol=1e-15)
    # decode step (Lq = 1): bottom-right causal sees every key, top-left only the first
    br = Conventions(causal_alignment="bottom_right")
    o_br, _ = attention_exact(q, k, v, None, True, 1.0, conventions=br)
    o_tl, _ = attention_exact(q, k, v, None, True, 1.0)
    np.testing.assert_allclose(o_br[0, 0], [[7.0]], rtol=1e-15)
    np.testing.assert_allclose(o_tl[0, 0], [[4.0]], rtol=1e-15)
    # softcap 1: scores tanh(0) = 0 and tanh(log 3) = 0.8
    _, pc = attention_exact(q, k, v, None, False, 1.0, 1.0)
    w = math.exp(0.8)
    np.testing.assert_allclose(pc[0, 0], [[1 / (1 + w), w / (1 + w)]], rtol=1e-15)
