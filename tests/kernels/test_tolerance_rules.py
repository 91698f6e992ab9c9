"""Every tolerance rule accepts correct low-precision results and rejects known-wrong ones.

Correct: torch CPU in float32/float16/bfloat16 (with the precisions TorchAdapter declares) and
plain NumPy float32/float16. Wrong: a 1/sqrt(d+1) attention scale, LayerNorm with eps outside the
sqrt or an unbiased variance, softmax without max subtraction where exp overflows, NaN where
the declared convention says zero (and the reverse), a finite value where the output overflows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle.engine.compare import compare, error_statistic
from transpec.oracle.engine.dtypes import round_to
from transpec.oracle.kernels import reference as ref_mod
from transpec.oracle.kernels.tolerance import Tolerance, gamma, tolerance
from transpec.oracle.reference import compute
from transpec.spec.conventions import CANONICAL, Conventions

HALF = Precision("float32", "float32")


def _round(args: dict[str, Any], dt: str) -> dict[str, Any]:
    return {
        k: round_to(v, dt) if isinstance(v, np.ndarray) and v.dtype != np.bool_ else v
        for k, v in args.items()
    }


def _judge(
    component: str,
    args: dict[str, Any],
    out: np.ndarray,
    dt: str,
    precision: Precision,
    conventions: Conventions = CANONICAL,
) -> tuple[bool, bool]:
    """(elementwise bound passed, statistic passed) for ``out`` on the rounded ``args``."""
    ref = compute(component, args, conventions=conventions, dtype=dt)
    cmp = compare(out, ref, tolerance(component, ref, dt, precision))
    stat = error_statistic(
        component, args, out, ref, conventions=conventions, dtype=dt, precision=precision
    )
    return cmp.passed, stat.passed


# -- torch: correct results pass -----------------------------------------------------------------


def _torch_case(component: str, rng: np.random.Generator, regime: str) -> dict[str, Any]:
    n = rng.standard_normal
    if component == "softmax":
        x = n((6, 80)) * (30.0 if regime == "hard" else 1.0)
        return {"x": x, "dim": -1}
    if component == "attention":
        q, k, v = n((1, 4, 9, 16)), n((1, 2, 70, 16)), n((1, 2, 70, 8))
        if regime == "hard":
            q = q * np.array([1e-3, 1.0, 3.0, 10.0, 1, 1, 1, 1, 1])[:, None] * 2
        return {"q": q, "k": k, "v": v, "is_causal": regime == "hard", "enable_gqa": True}
    x = n((4, 96))
    if regime == "hard":
        x = x * np.sqrt(1e-5) * np.array([[0.3], [1.0], [3.0], [1.0]])
        x[3] += 2.0
    if component == "layer_norm":
        return {"x": x, "normalized_shape": (96,), "weight": n(96), "bias": n(96), "eps": 1e-5}
    return {"x": x, "normalized_shape": (96,), "weight": n(96), "eps": None}


def _torch_call(component: str, args: dict[str, Any], dt: str, **over: Any) -> np.ndarray:
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    tdt = getattr(torch, dt)

    def t(a: Any) -> Any:
        return None if a is None else torch.tensor(a).to(tdt)

    if component == "softmax":
        out = torch.softmax(t(args["x"]), dim=args["dim"])
    elif component == "attention":
        out = functional.scaled_dot_product_attention(
            t(args["q"]),
            t(args["k"]),
            t(args["v"]),
            is_causal=args.get("is_causal", False),
            enable_gqa=args.get("enable_gqa", False),
            **over,
        )
    elif component == "layer_norm":
        out = functional.layer_norm(
            t(args["x"]), args["normalized_shape"], t(args["weight"]), t(args["bias"]), 1e-5
        )
    else:
        out = functional.rms_norm(t(args["x"]), args["normalized_shape"], t(args["weight"]))
    return out.to(torch.float64).numpy()


def _torch_precision(component: str, dt: str) -> tuple[Precision, Conventions]:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    adapter = TorchAdapter()
    return adapter.precision(component, dt), adapter.conventions


@pytest.mark.parametrize("component", ["softmax", "attention", "layer_norm", "rms_norm"])
@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("regime", ["unit", "hard"])
def test_torch_cpu_results_are_accepted(component: str, dt: str, regime: str) -> None:
    precision, conventions = _torch_precision(component, dt)
    rng = np.random.default_rng(hash((component, dt, regime)) % 2**32)
    for _ in range(2):
        args = _round(_torch_case(component, rng, regime), dt)
        out = _torch_call(component, args, dt)
        assert _judge(component, args, out, dt, precision, conventions) == (True, True)


# -- NumPy: plain float32 / float16 computations pass --------------------------------------------


def _numpy_softmax(x: np.ndarray, dt: str) -> np.ndarray:
    x = x.astype(dt)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float64)


@pytest.mark.parametrize("dt", ["float32", "float16"])
def test_plain_numpy_softmax_and_attention_are_accepted(dt: str) -> None:
    rng = np.random.default_rng(7)
    x = round_to(rng.standard_normal((5, 300)) * 5, dt)
    prec = Precision(dt, dt)
    assert _judge("softmax", {"x": x, "dim": -1}, _numpy_softmax(x, dt), dt, prec) == (True, True)
    q = round_to(rng.standard_normal((2, 12, 32)), dt)
    k = round_to(rng.standard_normal((2, 50, 32)), dt)
    v = round_to(rng.standard_normal((2, 50, 16)), dt)
    scores = np.matmul(q.astype(dt), np.swapaxes(k.astype(dt), -1, -2)) * np.asarray(
        1 / math.sqrt(32), dt
    )
    p = _numpy_softmax(scores, dt)
    out = np.matmul(p.astype(dt), v.astype(dt)).astype(np.float64)
    assert _judge("attention", {"q": q, "k": k, "v": v}, out, dt, prec) == (True, True)


# -- known-wrong results are rejected ------------------------------------------------------------


def test_scale_d_plus_1_rejected_by_the_bound_in_float32() -> None:
    precision, conventions = _torch_precision("attention", "float32")
    rng = np.random.default_rng(3)
    args = _round(_torch_case("attention", rng, "unit"), "float32")
    wrong = _torch_call("attention", args, "float32", scale=1 / math.sqrt(17))
    ref = compute("attention", args, conventions=conventions)
    cmp = compare(wrong, ref, tolerance("attention", ref, "float32", precision))
    assert not cmp.passed and cmp.worst is not None and cmp.worst.ratio > 1


def test_scale_d_plus_1_in_bfloat16_with_1000_keys_only_the_statistic_sees() -> None:
    precision, conventions = _torch_precision("attention", "bfloat16")
    rng = np.random.default_rng(11)
    args = _round(
        {
            "q": rng.standard_normal((1, 1, 16, 64)),
            "k": rng.standard_normal((1, 1, 1000, 64)),
            "v": rng.standard_normal((1, 1, 1000, 64)),
        },
        "bfloat16",
    )
    good = _torch_call("attention", args, "bfloat16")
    wrong = _torch_call("attention", args, "bfloat16", scale=1 / math.sqrt(65))
    assert _judge("attention", args, good, "bfloat16", precision, conventions) == (True, True)
    # the worst-case bound cannot see it ...
    bound_ok, stat_ok = _judge("attention", args, wrong, "bfloat16", precision, conventions)
    assert bound_ok
    # ... the RMS of error/absref against the emulated kernel does
    assert not stat_ok


def _ln_wrong(x: np.ndarray, dt: str, *, unbiased: bool, eps_outside: bool) -> np.ndarray:
    x32 = x.astype(np.float32)
    d = x32 - x32.mean(axis=-1, keepdims=True)
    var = (d * d).sum(axis=-1, keepdims=True) / np.float32(x.shape[-1] - (1 if unbiased else 0))
    sigma = np.sqrt(var) + np.float32(1e-5) if eps_outside else np.sqrt(var + np.float32(1e-5))
    return round_to((d / sigma).astype(np.float64), dt)


@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16"])
def test_layer_norm_eps_outside_sqrt_rejected_near_eps(dt: str) -> None:
    rng = np.random.default_rng(5)
    x = round_to(rng.standard_normal((4, 64)) * math.sqrt(1e-5), dt)
    args = {"x": x, "normalized_shape": (64,), "weight": None, "bias": None, "eps": 1e-5}
    good = _ln_wrong(x, dt, unbiased=False, eps_outside=False)
    assert _judge("layer_norm", args, good, dt, HALF) == (True, True)
    wrong = _ln_wrong(x, dt, unbiased=False, eps_outside=True)
    assert _judge("layer_norm", args, wrong, dt, HALF)[0] is False


@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16"])
def test_layer_norm_unbiased_variance_rejected_at_small_n(dt: str) -> None:
    rng = np.random.default_rng(6)
    x = round_to(rng.standard_normal((16, 8)), dt)
    args = {"x": x, "normalized_shape": (8,), "weight": None, "bias": None, "eps": 1e-5}
    assert _judge(
        "layer_norm", args, _ln_wrong(x, dt, unbiased=False, eps_outside=False), dt, HALF
    ) == (True, True)
    assert (
        _judge("layer_norm", args, _ln_wrong(x, dt, unbiased=True, eps_outside=False), dt, HALF)[0]
        is False
    )
    # declared, the same variant conforms
    unb = Conventions(layer_norm_variance="unbiased")
    wrong = _ln_wrong(x, dt, unbiased=True, eps_outside=False)
    assert _judge("layer_norm", args, wrong, dt, HALF, unb) == (True, True)


def test_softmax_without_max_subtraction_overflows_and_is_rejected() -> None:
    x = round_to(np.random.default_rng(8).standard_normal((4, 64)) * 4 + 12, "float16")
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x.astype(np.float16))
        naive = (e / e.sum(axis=-1, keepdims=True)).astype(np.float64)
    ref = ref_mod.softmax(x)
    cmp = compare(naive, ref, tolerance("softmax", ref, "float16", Precision("float16", "float16")))
    assert not cmp.passed and cmp.nonfinite_mismatch > 0 and math.isinf(cmp.ratio)
    stable = _numpy_softmax(x, "float16")
    assert compare(
        stable, ref, tolerance("softmax", ref, "float16", Precision("float16", "float16"))
    ).passed


def test_nan_positions_must_match_the_declared_fully_masked_row() -> None:
    rng = np.random.default_rng(9)
    q, k, v = (
        rng.standard_normal((1, 1, 4, 8)),
        rng.standard_normal((1, 1, 6, 8)),
        rng.standard_normal((1, 1, 6, 8)),
    )
    mask = rng.random((4, 6)) < 0.7
    mask[2] = False
    zero = ref_mod.attention(q, k, v, attn_mask=mask)
    tol_zero = tolerance("attention", zero, "float32", Precision("float32", "float32"))
    assert compare(zero.value, zero, tol_zero).passed
    with_nan = zero.value.copy()
    with_nan[..., 2, :] = np.nan
    cmp = compare(with_nan, zero, tol_zero)
    assert not cmp.passed and cmp.nonfinite_mismatch == 8 and cmp.worst is not None
    assert cmp.worst.index[-2] == 2
    nan_conv = Conventions(fully_masked_row="nan")
    nan_ref = ref_mod.attention(q, k, v, attn_mask=mask, conventions=nan_conv)
    tol_nan = tolerance("attention", nan_ref, "float32", Precision("float32", "float32"))
    assert compare(with_nan, nan_ref, tol_nan).passed
    assert not compare(zero.value, nan_ref, tol_nan).passed
    # a stray NaN in a live row is never equal to anything
    stray = zero.value.copy()
    stray[0, 0, 0, 0] = np.nan
    assert not compare(stray, zero, tol_zero).passed


def test_overflow_to_inf_is_required_where_the_reference_exceeds_float16() -> None:
    x = round_to(np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 50.0]]), "float16")
    w = round_to(np.full(8, 3e4), "float16")
    ref = ref_mod.layer_norm(x, 8, weight=w, eps=0.0)
    assert np.abs(ref.value).max() > 65504
    tol = tolerance("layer_norm", ref, "float16", HALF)
    rounded = round_to(ref.value, "float16")  # the correctly rounded result holds inf
    assert np.isinf(rounded).any() and compare(rounded, ref, tol).passed
    clipped = np.clip(ref.value, -65504, 65504)
    cmp = compare(clipped, ref, tol)
    assert not cmp.passed and cmp.nonfinite_mismatch > 0
    wrong_sign = np.where(np.isinf(rounded), -rounded, rounded)
    assert not compare(wrong_sign, ref, tol).passed


def test_bound_components_and_derivation() -> None:
    rng = np.random.default_rng(10)
    ref = ref_mod.attention(
        rng.standard_normal((2, 5, 8)),
        rng.standard_normal((2, 7, 8)),
        rng.standard_normal((2, 7, 3)),
    )
    tol = tolerance("attention", ref, "bfloat16", Precision("float32", "bfloat16"))
    assert isinstance(tol, Tolerance) and tol.bound.shape == ref.value.shape
    assert "E=8" in tol.derivation and "Lk=7" in tol.derivation and "§3.2" in tol.derivation
    assert "bound=" in tol.describe_at((0, 0, 0))
    # the bound grows with coarser precisions and is never below u_out·|ref|
    tol32 = tolerance("attention", ref, "float32", Precision("float32", "float32"))
    assert (tol.bound > tol32.bound).all()
    assert (tol32.bound >= 2.0**-24 * np.abs(ref.value)).all()
    assert gamma(10, 2.0**-24) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert gamma(1000, 2.0**-8) == 1.0


def test_tolerance_and_compare_reject_bad_arguments() -> None:
    ref = ref_mod.softmax(np.zeros(4))
    with pytest.raises(ValueError, match="unknown component"):
        tolerance("gelu", ref, "float32", HALF)
    with pytest.raises(ValueError, match="dtype"):
        tolerance("softmax", ref, "float8", HALF)
    with pytest.raises(TypeError, match="precision"):
        tolerance("softmax", ref, "float32", "float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="term"):
        tolerance("attention", ref, "float32", HALF)
    tol = tolerance("softmax", ref, "float32", HALF)
    with pytest.raises(ValueError, match="shape"):
        compare(np.zeros(5), ref, tol)


def test_the_statistic_counts_the_rows_each_reference_names() -> None:
    """Independent rows: one per query (and head) for attention, one per softmax row or
    normalized slice."""
    from transpec.oracle.engine.compare import _rows

    x = np.ones((3, 4, 5))
    assert _rows(ref_mod.softmax(x, 1)) == 15
    assert _rows(ref_mod.layer_norm(x, (4, 5))) == 3
    assert _rows(ref_mod.rms_norm(x, 5)) == 12
    q, kv = np.ones((2, 3, 7, 4)), np.ones((2, 3, 9, 6))
    assert _rows(ref_mod.attention(q, np.ones((2, 3, 9, 4)), kv)) == 2 * 3 * 7
    assert _rows(ref_mod.Reference(value=x, abs_value=x)) == x.size


def test_statistic_is_not_meaningful_on_small_or_float64_examples() -> None:
    x = np.random.default_rng(12).standard_normal((2, 8))
    ref = ref_mod.softmax(x)
    args = {"x": x, "dim": -1}
    small = error_statistic(
        "softmax",
        args,
        ref.value * 1.01,
        ref,
        conventions=CANONICAL,
        dtype="float32",
        precision=HALF,
    )
    assert small.passed and not small.meaningful and "elements" in small.reason
    x = np.random.default_rng(12).standard_normal((16, 64))
    ref = ref_mod.softmax(x)
    f64 = error_statistic(
        "softmax",
        {"x": x, "dim": -1},
        ref.value * 1.01,
        ref,
        conventions=CANONICAL,
        dtype="float64",
        precision=Precision("float64", "float64"),
    )
    assert f64.passed and not f64.meaningful
    x32 = round_to(x, "float32")
    ref = ref_mod.softmax(x32)
    big = error_statistic(
        "softmax",
        {"x": x32, "dim": -1},
        ref.value * (1 + 1e-5),
        ref,
        conventions=CANONICAL,
        dtype="float32",
        precision=HALF,
    )
    assert big.meaningful and not big.passed and big.ratio > 1


# -- the bound holds for the emulated kernel at every declared precision --------------------------

_PRECISIONS = [
    ("float16", Precision("float16", "float16")),
    ("bfloat16", Precision("bfloat16", "bfloat16")),  # 300-term sums: n·u > 0.5, γ capped
    ("float16", Precision("float32", "float16")),
    ("bfloat16", Precision("float32", "bfloat16")),
    ("float32", Precision("float32", "float16")),
]


def _unit_args(component: str, rng: np.random.Generator) -> dict[str, Any]:
    n = rng.standard_normal
    if component == "softmax":
        return {"x": n((16, 300)) * 3, "dim": -1}
    if component == "attention":
        return {"q": n((1, 2, 16, 64)), "k": n((1, 2, 300, 64)), "v": n((1, 2, 300, 16))}
    if component == "layer_norm":
        return {"x": n((16, 300)) + 3, "normalized_shape": 300, "weight": n(300), "bias": n(300)}
    return {"x": n((16, 300)), "normalized_shape": 300, "weight": n(300), "eps": 1e-6}


@pytest.mark.parametrize("component", ["softmax", "attention", "layer_norm", "rms_norm"])
@pytest.mark.parametrize(("dt", "precision"), _PRECISIONS)
def test_emulated_kernel_passes_its_own_bound(
    component: str, dt: str, precision: Precision
) -> None:
    from transpec.oracle.kernels.emulate import emulate

    args = _round(_unit_args(component, np.random.default_rng(13)), dt)
    ref = compute(component, args, dtype=dt)
    out = emulate(component, args, conventions=CANONICAL, dtype=dt, precision=precision)
    cmp = compare(out, ref, tolerance(component, ref, dt, precision))
    assert cmp.passed, cmp.message
    stat = error_statistic(
        component, args, out, ref, conventions=CANONICAL, dtype=dt, precision=precision
    )
    assert stat.passed


def test_float16_accumulation_that_overflows_is_rejected() -> None:
    # Σx² of values ~300 overflows float16 (65504): a kernel accumulating in float16 returns
    # x/inf = 0, which is wrong however it is rounded; the bound models rounding, not range.
    from transpec.oracle.kernels.emulate import emulate

    x = round_to(np.random.default_rng(14).standard_normal((16, 64)) * 300, "float16")
    args = {"x": x, "normalized_shape": 64, "weight": None, "eps": 1e-6}
    ref = compute("rms_norm", args, dtype="float16")
    fp16 = Precision("float16", "float16")
    out = emulate("rms_norm", args, conventions=CANONICAL, dtype="float16", precision=fp16)
    assert not compare(out, ref, tolerance("rms_norm", ref, "float16", fp16)).passed
    fp32 = Precision("float32", "float16")
    out = emulate("rms_norm", args, conventions=CANONICAL, dtype="float16", precision=fp32)
    assert compare(out, ref, tolerance("rms_norm", ref, "float16", fp32)).passed


@pytest.mark.parametrize("dt", ["float32", "float16", "bfloat16"])
def test_rms_norm_eps_added_to_rms_rejected_at_small_rms(dt: str) -> None:
    x = round_to(np.random.default_rng(15).standard_normal((16, 64)) * 1e-3, dt)
    args = {"x": x, "normalized_shape": 64, "weight": None, "eps": 1e-5}
    x32 = x.astype(np.float32)
    ms = (x32 * x32).mean(axis=-1, keepdims=True)
    good = round_to((x32 / np.sqrt(ms + np.float32(1e-5))).astype(np.float64), dt)
    wrong = round_to((x32 / (np.sqrt(ms) + np.float32(1e-5))).astype(np.float64), dt)
    assert _judge("rms_norm", args, good, dt, HALF) == (True, True)
    assert _judge("rms_norm", args, wrong, dt, HALF)[0] is False
    added = Conventions(rms_norm_eps="added_to_rms")
    assert _judge("rms_norm", args, wrong, dt, HALF, added) == (True, True)


@pytest.mark.parametrize("dt", ["float32", "float16"])
def test_softmax_with_a_wrong_temperature_is_rejected(dt: str) -> None:
    x = round_to(np.random.default_rng(16).standard_normal((16, 100)) * 4, dt)
    good = _numpy_softmax(x, dt)
    wrong = _numpy_softmax(x * (1 + 1 / 64), dt)
    prec = Precision(dt, dt)
    assert _judge("softmax", {"x": x, "dim": -1}, good, dt, prec) == (True, True)
    assert _judge("softmax", {"x": x, "dim": -1}, wrong, dt, prec) == (False, False)


def test_inf_is_allowed_within_the_bound_of_overflowing() -> None:
    # a reference just below float16's overflow threshold (65520): a correct kernel may round
    # either way, so both the finite value and +inf pass; -inf never does
    x = np.array([[-1.0, 1.0]])
    w = np.array([65500.0, 65510.0])
    ref = ref_mod.layer_norm(x, 2, weight=w, eps=0.0)
    tol = tolerance("layer_norm", ref, "float16", HALF)
    assert tol.may_overflow is not None and tol.may_overflow[0, 1]
    assert tol.must_overflow is None or not tol.must_overflow[0, 1]
    assert compare(np.array([[-65504.0, 65504.0]]), ref, tol).passed
    assert compare(np.array([[-65504.0, np.inf]]), ref, tol).passed
    assert not compare(np.array([[-65504.0, -np.inf]]), ref, tol).passed
