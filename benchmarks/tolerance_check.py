"""Measure the tolerance model: false alarms, tightness, the RMS statistic, bug detection.

    python benchmarks/tolerance_check.py --cases 400 --seed 0

For every component and dtype it draws random cases over the regimes the strategies target
(unit scale, large logits, rows of very different scale, fully masked rows, causal and GQA
attention with Lq != Lk, LayerNorm with |mean| >> std and variance near eps, small n), runs correct
implementations (torch CPU: F.softmax, F.scaled_dot_product_attention, F.layer_norm,
F.rms_norm, with the precisions and conventions TorchAdapter declares; NumPy computed plainly
in float32/float16) and subtly wrong ones, and prints:

* per implementation/component/dtype: cases, elementwise failures (false alarms for correct
  implementations), error/tolerance median / p99 / max over cases (max per case), and the RMS
  statistic's ratio rms(impl)/rms(emulated) median / p99 / max over the meaningful cases;
* per wrong implementation: the fraction of cases the elementwise bound rejects, the fraction the
  statistic rejects at the threshold in use, and the median RMS ratio.

The figures in docs/tolerance.md §5 come from this script.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from transpec.adapters.base import Precision
from transpec.oracle.engine.compare import (
    RMS_RATIO_THRESHOLD,
    RMS_RATIO_THRESHOLD_FLOAT32,
    compare,
    error_statistic,
)
from transpec.oracle.engine.dtypes import round_to
from transpec.oracle.kernels import reference as refmod
from transpec.oracle.kernels.tolerance import tolerance
from transpec.oracle.reference import compute
from transpec.spec.conventions import CANONICAL, Conventions

Case = dict[str, Any]
Impl = Callable[[Case, str], np.ndarray]

# -- cases -------------------------------------------------------------------------------------


def softmax_case(rng: np.random.Generator) -> Case:
    rows = int(rng.choice([1, 4, 16, 32, 64]))
    n = int(rng.choice([7, 33, 64, 100, 257, 1000]))
    regime = rng.choice(["unit", "large", "mixed", "masked"])
    x = rng.standard_normal((rows, n))
    if regime == "large":
        x *= 10 ** rng.uniform(1, 4)
    elif regime == "mixed":
        x *= 10 ** rng.uniform(-3, 3, size=(rows, 1))
    elif regime == "masked":
        x[rng.random(x.shape) < 0.3] = -np.inf
    return {"x": x, "dim": -1}


def attention_case(rng: np.random.Generator) -> Case:
    b = int(rng.integers(1, 3))
    hkv = int(rng.choice([1, 2]))
    hq = hkv * int(rng.choice([1, 2, 3]))
    lq = int(rng.choice([1, 5, 16, 33, 97]))
    lk = int(rng.choice([5, 16, 64, 113, 300]))
    e = int(rng.choice([8, 16, 40, 64]))
    regime = rng.choice(["unit", "large", "mixed", "masked", "causal"])
    q = rng.standard_normal((b, hq, lq, e))
    k = rng.standard_normal((b, hkv, lk, e))
    v = rng.standard_normal((b, hkv, lk, e if rng.random() < 0.7 else 24))
    args: Case = {"q": q, "k": k, "v": v, "enable_gqa": hq != hkv}
    if regime == "large":
        q *= 10 ** rng.uniform(0.5, 1.5)
        k *= 10 ** rng.uniform(0, 1)
    elif regime == "mixed":
        q *= 10 ** rng.uniform(-3, 1.3, size=(lq, 1))
    elif regime == "masked":
        mask = rng.random((lq, lk)) < 0.6
        mask[rng.random(lq) < 0.2] = False
        args["attn_mask"] = mask
    elif regime == "causal":
        args["is_causal"] = True
    if rng.random() < 0.2:
        # no negative scale: torch's math backend (float64) takes sqrt(scale) and returns NaN
        args["scale"] = float(rng.choice([0.05, 0.3, 2.0]))
    return args


def layer_norm_case(rng: np.random.Generator) -> Case:
    rows = int(rng.choice([1, 4, 16, 32, 64]))
    n = int(rng.choice([4, 8, 32, 100, 768, 1024]))
    regime = rng.choice(["unit", "offset", "small_var", "scale"])
    x = rng.standard_normal((rows, n))
    if regime == "offset":
        x = x + 10 ** rng.uniform(0, 2.5) * rng.standard_normal((rows, 1))
    elif regime == "small_var":
        x = x * math.sqrt(1e-5) * 10 ** rng.uniform(-1, 1)
    elif regime == "scale":
        x = x * 10 ** rng.uniform(-2, 3, size=(rows, 1))
    w = rng.standard_normal(n) if rng.random() < 0.7 else None
    bias = rng.standard_normal(n) if rng.random() < 0.7 else None
    return {"x": x, "normalized_shape": (n,), "weight": w, "bias": bias, "eps": 1e-5}


def rms_norm_case(rng: np.random.Generator) -> Case:
    args = layer_norm_case(rng)
    args.pop("bias")
    args["eps"] = None if rng.random() < 0.5 else 1e-6
    return args


CASES = {
    "softmax": softmax_case,
    "attention": attention_case,
    "layer_norm": layer_norm_case,
    "rms_norm": rms_norm_case,
}

# -- implementations ---------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def _t(a: Any, dt: str) -> Any:
    torch = _torch()
    if a is None:
        return None
    if a.dtype == np.bool_:
        return torch.tensor(a)
    return torch.tensor(a).to(getattr(torch, dt))


def _np(out: Any) -> np.ndarray:
    return out.to(_torch().float64).numpy()


def torch_softmax(a: Case, dt: str) -> np.ndarray:
    return _np(_torch().softmax(_t(a["x"], dt), dim=a["dim"]))


def torch_sdpa(a: Case, dt: str, scale: float | None = None) -> np.ndarray:
    functional = _torch().nn.functional

    mask = a.get("attn_mask")
    return _np(
        functional.scaled_dot_product_attention(
            _t(a["q"], dt),
            _t(a["k"], dt),
            _t(a["v"], dt),
            attn_mask=None if mask is None else _t(mask, dt),
            is_causal=bool(a.get("is_causal", False)),
            scale=a.get("scale") if scale is None else scale,
            enable_gqa=bool(a.get("enable_gqa", False)),
        )
    )


def torch_layer_norm(a: Case, dt: str) -> np.ndarray:
    functional = _torch().nn.functional

    return _np(
        functional.layer_norm(
            _t(a["x"], dt), a["normalized_shape"], _t(a["weight"], dt), _t(a["bias"], dt), a["eps"]
        )
    )


def torch_rms_norm(a: Case, dt: str) -> np.ndarray:
    functional = _torch().nn.functional

    return _np(
        functional.rms_norm(_t(a["x"], dt), a["normalized_shape"], _t(a["weight"], dt), a["eps"])
    )


def numpy_softmax(a: Case, dt: str) -> np.ndarray:
    x = np.asarray(a["x"], dtype=dt)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        e = np.exp(x - m)
        return np.asarray(e / np.sum(e, axis=-1, keepdims=True), dtype=np.float64)


def numpy_sdpa(a: Case, dt: str) -> np.ndarray:
    setup = refmod.attention_setup(**a)
    q, k, v = (np.asarray(t, dtype=dt) for t in (setup.q, setup.k, setup.v))
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(setup.scale, dtype=dt)
    s = np.where(setup.visible, s, np.asarray(-np.inf, dtype=dt))
    with np.errstate(invalid="ignore"):
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), np.asarray(0, dtype=dt), m)
        e = np.exp(s - m)
        den = np.sum(e, axis=-1, keepdims=True)
        p = np.where(den > 0, e / np.where(den > 0, den, 1), 0).astype(dt)
    return np.asarray(np.matmul(p, v), dtype=np.float64)


def numpy_layer_norm(a: Case, dt: str) -> np.ndarray:
    x = np.asarray(a["x"], dtype=np.float32)
    mu = np.mean(x, axis=-1, keepdims=True)
    d = x - mu
    var = np.mean(d * d, axis=-1, keepdims=True)
    y = (d / np.sqrt(var + np.float32(a["eps"]))).astype(dt)
    if a["weight"] is not None:
        y = y * np.asarray(a["weight"], dtype=dt)
    if a["bias"] is not None:
        y = y + np.asarray(a["bias"], dtype=dt)
    return np.asarray(y, dtype=np.float64)


def numpy_rms_norm(a: Case, dt: str) -> np.ndarray:
    x = np.asarray(a["x"], dtype=np.float32)
    eps = refmod.rms_norm_eps(a["eps"], dt)
    ms = np.mean(x * x, axis=-1, keepdims=True)
    y = (x / np.sqrt(ms + np.float32(eps))).astype(dt)
    if a["weight"] is not None:
        y = y * np.asarray(a["weight"], dtype=dt)
    return np.asarray(y, dtype=np.float64)


# -- wrong implementations (the bugs the model must see) --------------------------------------


def bug_scale_d_plus_1(a: Case, dt: str) -> np.ndarray:
    e = a["q"].shape[-1]
    scale = a.get("scale")
    wrong = 1 / math.sqrt(e + 1) if scale is None else scale * math.sqrt(e / (e + 1))
    return torch_sdpa(a, dt, scale=wrong)


def _ln_float32(a: Case, dt: str, *, unbiased: bool, eps_outside: bool) -> np.ndarray:
    torch = _torch()
    x = _t(a["x"], dt).float()
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=unbiased)
    sigma = var.sqrt() + a["eps"] if eps_outside else (var + a["eps"]).sqrt()
    y = (x - mu) / sigma
    if a["weight"] is not None:
        y = y * _t(a["weight"], dt).float()
    if a["bias"] is not None:
        y = y + _t(a["bias"], dt).float()
    return _np(y.to(getattr(torch, dt)))


def bug_ln_eps_outside(a: Case, dt: str) -> np.ndarray:
    return _ln_float32(a, dt, unbiased=False, eps_outside=True)


def bug_ln_unbiased(a: Case, dt: str) -> np.ndarray:
    return _ln_float32(a, dt, unbiased=True, eps_outside=False)


def bug_softmax_no_max(a: Case, dt: str) -> np.ndarray:
    x = np.asarray(a["x"], dtype=np.float32 if dt == "float32" else np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return np.asarray(e / np.sum(e, axis=-1, keepdims=True), dtype=np.float64)


# -- the measurement ---------------------------------------------------------------------------


def _precision_torch(component: str, dt: str) -> tuple[Precision, Conventions]:
    from transpec.adapters.torch.adapter import TorchAdapter

    adapter = TorchAdapter()
    return adapter.precision(component, dt), adapter.conventions


def measure(
    component: str,
    impl: Impl,
    dt: str,
    precision: Precision,
    conventions: Conventions,
    cases: int,
    rng: np.random.Generator,
    case_fn: Callable[[np.random.Generator], Case] | None = None,
    show: bool = False,
) -> dict[str, Any]:
    ratios, stats, fails, stat_fails, meaningful = [], [], 0, 0, 0
    for _ in range(cases):
        raw = (case_fn or CASES[component])(rng)
        args = {
            key: round_to(val, dt) if isinstance(val, np.ndarray) and val.dtype != bool else val
            for key, val in raw.items()
        }
        ref = compute(component, args, conventions=conventions, dtype=dt)
        out = impl(args, dt)
        tol = tolerance(component, ref, dt, precision)
        cmp = compare(out, ref, tol)
        ratios.append(cmp.ratio)
        fails += not cmp.passed
        st = error_statistic(
            component,
            args,
            out,
            ref,
            conventions=conventions,
            dtype=dt,
            precision=precision,
        )
        if st.meaningful:
            meaningful += 1
            stats.append(st.figures["rms_ratio"])
            stat_fails += not st.passed
        if show and (not cmp.passed or not st.passed):
            shapes = {
                key: np.shape(val) if isinstance(val, np.ndarray) else val
                for key, val in args.items()
            }
            print(f"  alarm {component} {dt}: {shapes} {cmp.message[:200]} {st.figures}")
    return {
        "cases": cases,
        "fails": fails,
        "ratios": np.array(ratios),
        "stats": np.array(stats),
        "stat_fails": stat_fails,
        "meaningful": meaningful,
    }


def _fmt(arr: np.ndarray) -> str:
    if arr.size == 0:
        return "       -        -        -"
    finite = np.where(np.isfinite(arr), arr, np.inf)
    return f"{np.median(finite):8.3g} {np.quantile(finite, 0.99):8.3g} {np.max(finite):8.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="cases per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated components")
    parser.add_argument(
        "--show-alarms", action="store_true", help="print every rejected correct result"
    )
    parser.add_argument(
        "--highprec",
        type=int,
        default=0,
        metavar="N",
        help="instead: float64 reference vs 40 digits on N cases per block and regime",
    )
    opts = parser.parse_args(argv)
    if opts.highprec:
        return highprec_report(opts.highprec, opts.seed)
    only = set(filter(None, opts.only.split(",")))
    rng = np.random.default_rng(opts.seed)
    t0 = time.time()
    correct: list[tuple[str, str, Impl, str, Precision | None]] = []
    for dt in ("float64", "float32", "float16", "bfloat16"):
        for comp, fn in (
            ("softmax", torch_softmax),
            ("attention", torch_sdpa),
            ("layer_norm", torch_layer_norm),
            ("rms_norm", torch_rms_norm),
        ):
            correct.append(("torch", comp, fn, dt, None))
    for dt in ("float32", "float16"):
        for comp, fn in (
            ("softmax", numpy_softmax),
            ("attention", numpy_sdpa),
            ("layer_norm", numpy_layer_norm),
            ("rms_norm", numpy_rms_norm),
        ):
            # softmax and attention all in dt; the norms' statistics in float32
            acc = dt if comp in ("softmax", "attention") else "float32"
            correct.append(("numpy", comp, fn, dt, Precision(acc, dt)))
    print(
        f"RMS ratio thresholds in use: {RMS_RATIO_THRESHOLD} (float16/bfloat16), "
        f"{RMS_RATIO_THRESHOLD_FLOAT32} (float32)"
    )
    header = (
        f"{'impl':6} {'component':10} {'dtype':8} {'cases':>5} {'fail':>4} "
        f"{'err/tol: median      p99      max':>34} | {'stat n':>6} {'fail':>4} "
        f"{'rms ratio: median      p99      max':>36}"
    )
    print(header)
    totals: dict[str, list[float]] = defaultdict(list)
    for name, comp, fn, dt, prec in correct:
        if only and comp not in only:
            continue
        conv = CANONICAL
        if prec is None:
            prec, conv = _precision_torch(comp, dt)
        r = measure(comp, fn, dt, prec, conv, opts.cases, rng, show=opts.show_alarms)
        totals[dt].extend(r["ratios"])
        print(
            f"{name:6} {comp:10} {dt:8} {r['cases']:5d} {r['fails']:4d} {_fmt(r['ratios']):>34} "
            f"| {r['meaningful']:6d} {r['stat_fails']:4d} {_fmt(r['stats']):>36}",
            flush=True,
        )
    print("\nwrong implementations (fraction rejected: elementwise bound, RMS statistic)")
    bugs: list[tuple[str, str, Impl, Callable[[np.random.Generator], Case] | None]] = [
        ("scale 1/sqrt(d+1)", "attention", bug_scale_d_plus_1, big_keys_case),
        ("scale 1/sqrt(d+1) (all regimes)", "attention", bug_scale_d_plus_1, None),
        ("LayerNorm eps outside sqrt", "layer_norm", bug_ln_eps_outside, small_var_case),
        ("LayerNorm unbiased variance", "layer_norm", bug_ln_unbiased, small_n_case),
        ("softmax without max subtraction", "softmax", bug_softmax_no_max, large_logit_case),
    ]
    for label, comp, fn, case_fn in bugs:
        if only and comp not in only:
            continue
        for dt in ("float32", "float16", "bfloat16"):
            if fn is bug_softmax_no_max and dt == "bfloat16":
                continue
            prec, conv = _precision_torch(comp, dt)
            r = measure(comp, fn, dt, prec, conv, max(opts.cases // 4, 20), rng, case_fn)
            stat_rate = r["stat_fails"] / r["meaningful"] if r["meaningful"] else float("nan")
            med = float(np.median(r["stats"])) if r["stats"].size else float("nan")
            print(
                f"{label:34} {dt:8} bound {r['fails'] / r['cases']:5.2f}  statistic "
                f"{stat_rate:5.2f} (n={r['meaningful']}, median rms ratio {med:.3g})",
                flush=True,
            )
    print(f"\n{time.time() - t0:.0f} s")
    return 0


def big_keys_case(rng: np.random.Generator) -> Case:
    """1000 keys, head dim 64, unit scale: the case where only the statistic sees the scale."""
    q = rng.standard_normal((1, 2, 16, 64))
    k = rng.standard_normal((1, 2, 1000, 64))
    v = rng.standard_normal((1, 2, 1000, 64))
    return {"q": q, "k": k, "v": v}


def small_var_case(rng: np.random.Generator) -> Case:
    n = int(rng.choice([16, 64, 256]))
    x = rng.standard_normal((16, n)) * math.sqrt(1e-5) * 10 ** rng.uniform(-0.5, 0.5)
    return {"x": x, "normalized_shape": (n,), "weight": None, "bias": None, "eps": 1e-5}


def small_n_case(rng: np.random.Generator) -> Case:
    n = int(rng.choice([4, 8, 16, 32]))
    x = rng.standard_normal((32, n))
    return {"x": x, "normalized_shape": (n,), "weight": None, "bias": None, "eps": 1e-5}


def large_logit_case(rng: np.random.Generator) -> Case:
    return {"x": rng.standard_normal((8, 64)) * 40 + 60, "dim": -1}


def _hp_case(component: str, hard: bool, rng: np.random.Generator) -> Case:
    n = rng.standard_normal
    if component == "softmax":
        x = n((6, 64))
        if hard:
            x *= np.array([[1e-8], [1.0], [30.0], [3e3], [1e4], [1e4]])
            x[5, :40] = -np.inf
        return {"x": x, "dim": -1}
    if component == "attention":
        q, k, v = n((2, 4, 9, 16)), n((2, 2, 33, 16)), n((2, 2, 33, 8))
        args: Case = {"q": q, "k": k, "v": v, "enable_gqa": True, "is_causal": True}
        if hard:
            args["q"] = q * np.array([1e-6, 1e-2, 1.0, 10.0, 30.0, 100, 100, 100, 100])[:, None]
            args["k"] = k * 30
            mask = rng.random((9, 33)) < 0.5
            mask[3] = False
            args["attn_mask"] = mask
        return args
    x = n((6, 64))
    if hard:
        x = x * np.array([[1e-3], [1e-3], [1e-2], [1.0], [1e-4], [1e150]])
        x = x + np.array([[1e3], [-1e4], [0.0], [0.0], [0.0], [0.0]])
    if component == "layer_norm":
        return {"x": x, "normalized_shape": 64, "weight": n(64), "bias": n(64), "eps": 1e-5}
    return {"x": x, "normalized_shape": 64, "weight": n(64), "eps": 1e-6}


def highprec_report(cases: int, seed: int) -> int:
    """Worst |ref64 - ref40digits| / absref and worst |ref64 - ref40| / float64 bound."""
    from transpec.oracle.kernels import highprec

    rng = np.random.default_rng(seed)
    p64 = Precision("float64", "float64")
    print(
        f"{'component':10} {'regime':6} {'cases':>5} {'max rel (/absref)':>18} "
        f"{'max err/bound':>14}"
    )
    for component in CASES:
        for hard in (False, True):
            worst_rel, worst_ratio = 0.0, 0.0
            for _ in range(cases):
                args = _hp_case(component, hard, rng)
                ref = compute(component, args)
                hp = highprec.compute(component, args, conventions=CANONICAL)
                if not np.array_equal(np.isnan(ref.value), np.isnan(hp)):
                    print(f"{component}: NaN positions differ", file=sys.stderr)
                    return 1
                ok = ~np.isnan(hp) & (ref.abs_value > 0)
                err = np.abs(ref.value - hp)[ok]
                bound = np.broadcast_to(tolerance(component, ref, "float64", p64).bound, hp.shape)
                worst_rel = max(worst_rel, float(np.max(err / ref.abs_value[ok], initial=0.0)))
                worst_ratio = max(worst_ratio, float(np.max(err / bound[ok], initial=0.0)))
            regime = "hard" if hard else "unit"
            print(f"{component:10} {regime:6} {cases:5d} {worst_rel:18.3g} {worst_ratio:14.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
