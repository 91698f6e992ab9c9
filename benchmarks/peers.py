"""transpec side by side with the tolerance rules people use today, on the same cases.

Every chaff and wheat of the corpus is called on the same cases (drawn once per component and
dtype from :func:`transpec.oracle.kernels.strategies.inputs`, a fixed seed) and each output is
judged by four rules against the same float64 reference (computed on the inputs as rounded to the
dtype, under the entry's declared conventions -- so only the tolerance rule differs):

``transpec``      the per-element bound of the tolerance model (NaN/inf positions exact) and the
                  RMS error statistic against an emulated correct kernel;
``assert_close``  ``torch.testing.assert_close`` at its default (rtol, atol) for the dtype:
                  fp64 (1e-7, 1e-7), fp32 (1.3e-6, 1e-5), fp16 (1e-3, 1e-5), bf16 (1.6e-2, 1e-5);
``flash``         FlashAttention's test rule: max|out - ref| <= 2 max|base - ref| + fwd_atol, with
                  ref the reference rounded to the dtype, base a correct same-precision kernel
                  (float32 accumulation, intermediates stored in the dtype: FlashAttention's
                  ``attention_ref(upcast=False)``), fwd_atol = 2 max|(ref + 0.3) - 0.3 - ref| in
                  the dtype's arithmetic;
``onnx``          ONNX's backend tests: ``numpy.testing.assert_allclose(rtol=1e-3, atol=1e-7)``.

An entry is flagged in a dtype when any of its cases fails the rule (an exception or an output of
the wrong shape fails every rule). Printed per rule: chaffs killed, over the (chaff, dtype) pairs
where the defect is visible, chaffs killed in every such dtype, wheats falsely flagged over the
(wheat, dtype) pairs, and the seconds the rule itself took (the implementation calls and the
shared reference excluded).

    python benchmarks/peers.py                     # 24 cases per component and dtype
    python benchmarks/peers.py --cases 48 --jobs 2 --json peers.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import corpus
import numpy as np

METHODS = ("transpec", "assert_close", "flash", "onnx")
ASSERT_CLOSE_DEFAULTS = {
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
}

_CASES: dict[tuple[str, str], list[dict[str, Any]]] = {}


def draw_cases(component: str, dtype: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` argument dicts from the default strategy, the same for every entry (cached)."""
    key = (component, dtype)
    if key in _CASES:
        return _CASES[key]
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from transpec.oracle.kernels import strategies

    out: list[dict[str, Any]] = []

    def collect(args: dict[str, Any]) -> None:
        out.append(args)

    settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )(hypothesis_seed(seed)(given(strategies.inputs(component, dtype))(collect)))()
    _CASES[key] = out[:n]
    return _CASES[key]


def _in_dtype(values: np.ndarray, dtype: str) -> Any:
    import torch

    from transpec.oracle.engine.dtypes import round_to

    t = {"float64": torch.float64, "float32": torch.float32}.get(dtype)
    if t is None:
        t = torch.float16 if dtype == "float16" else torch.bfloat16
    return torch.from_numpy(round_to(values, dtype)).to(t)


def judge_entry(name: str, dtype: str, n: int, seed: int) -> dict[str, Any]:
    """Flags and timings of the four rules for one entry in one dtype."""
    import torch

    from transpec.adapters.base import Precision
    from transpec.oracle.engine.compare import compare, error_statistic
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.outcome import ImplementationFailure
    from transpec.oracle.kernels.emulate import emulate

    entry = corpus.entry(name)
    adapter = entry.make()
    harness = Harness(adapter, dtype, "cpu")
    flagged = dict.fromkeys(METHODS, False)
    seconds = dict.fromkeys(METHODS, 0.0)
    first: dict[str, str] = {}
    rtol, atol = ASSERT_CLOSE_DEFAULTS[dtype]
    acc = "float64" if dtype == "float64" else "float32"
    base_precision = Precision(accumulate=acc, store=dtype)
    for args in draw_cases(entry.component, dtype, n, seed):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call = harness.call(entry.component, args)
        except ImplementationFailure as exc:
            for m in METHODS:
                flagged[m] = True
                first.setdefault(m, exc.describe()[:120])
            continue
        except Exception as exc:  # hypothesis.reject() of an unsupported case, etc.
            if type(exc).__name__ == "UnsatisfiedAssumption":
                continue
            raise
        out, ref = call.output, call.reference.value

        t = time.perf_counter()
        tol = harness.tolerance(entry.component, call.reference)
        ok = compare(out, call.reference, tol).passed
        if ok:
            stat = error_statistic(
                entry.component,
                call.sent,
                out,
                call.reference,
                conventions=harness.conventions,
                dtype=dtype,
                precision=harness.precision(entry.component),
            )
            ok = bool(stat.passed)
        seconds["transpec"] += time.perf_counter() - t
        if not ok:
            flagged["transpec"] = True
            first.setdefault("transpec", "bound or statistic")

        t = time.perf_counter()
        try:
            torch.testing.assert_close(
                torch.from_numpy(out), torch.from_numpy(ref), rtol=rtol, atol=atol
            )
        except AssertionError:
            flagged["assert_close"] = True
            first.setdefault("assert_close", "assert_close")
        seconds["assert_close"] += time.perf_counter() - t

        t = time.perf_counter()
        base = emulate(
            entry.component,
            call.sent,
            conventions=harness.conventions,
            dtype=dtype,
            precision=base_precision,
        )
        ref_d = _in_dtype(ref, dtype)
        fwd_atol = 2 * float(((ref_d + 0.3) - 0.3 - ref_d).abs().max()) if ref.size else 0.0
        ref_r = ref_d.double()
        out_err = float((torch.from_numpy(out) - ref_r).abs().max()) if ref.size else 0.0
        base_err = float((torch.from_numpy(base) - ref_r).abs().max()) if ref.size else 0.0
        if not out_err <= 2 * base_err + fwd_atol:
            flagged["flash"] = True
            first.setdefault("flash", f"err {out_err:.3g} > 2*{base_err:.3g} + {fwd_atol:.3g}")
        seconds["flash"] += time.perf_counter() - t

        t = time.perf_counter()
        try:
            np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-7)
        except AssertionError:
            flagged["onnx"] = True
            first.setdefault("onnx", "assert_allclose")
        seconds["onnx"] += time.perf_counter() - t
    return {"name": name, "dtype": dtype, "flagged": flagged, "seconds": seconds, "why": first}


def _job(job: tuple[str, str, int, int]) -> dict[str, Any]:
    return judge_entry(*job)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24, help="cases per component and dtype")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    jobs = [(e.name, d, args.cases, args.seed) for e in corpus.ENTRIES for d in corpus.ALL_DTYPES]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_job, jobs, chunksize=4))
    wall = time.perf_counter() - start
    by = {(r["name"], r["dtype"]): r for r in results}

    visible = [(e.name, d) for e in corpus.CHAFFS for d in e.visible]
    wheat_pairs = [(e.name, d) for e in corpus.WHEATS for d in corpus.ALL_DTYPES]
    print(
        f"peers: {len(corpus.CHAFFS)} chaffs ({len(visible)} visible (chaff, dtype) pairs), "
        f"{len(corpus.WHEATS)} wheats x 4 dtypes, {args.cases} cases per component and dtype, "
        f"seed {args.seed}, {wall:.0f} s"
    )
    print()
    head = (
        f"{'rule':13} {'chaff pairs killed':>19} {'chaffs killed everywhere':>25} "
        f"{'wheat pairs flagged':>20} {'rule seconds':>13}"
    )
    print(head)
    print("-" * len(head))
    for m in METHODS:
        killed = sum(by[p]["flagged"][m] for p in visible)
        everywhere = sum(
            all(by[(e.name, d)]["flagged"][m] for d in e.visible) for e in corpus.CHAFFS
        )
        false = sum(by[p]["flagged"][m] for p in wheat_pairs)
        secs = sum(r["seconds"][m] for r in results)
        n_chaffs = len(corpus.CHAFFS)
        print(
            f"{m:13} {killed:>10d} / {len(visible):<6d} {everywhere:>14d} / {n_chaffs:<8d}"
            f" {false:>10d} / {len(wheat_pairs):<7d} {secs:>12.1f}"
        )
    print()
    print("wheats flagged (rule: entry dtype):")
    for m in METHODS:
        hits = [f"{n}:{d}" for n, d in wheat_pairs if by[(n, d)]["flagged"][m]]
        print(f"  {m:13} {len(hits):3d}  {' '.join(hits[:12])}{' ...' if len(hits) > 12 else ''}")
    print()
    print("visible chaff pairs missed (rule: entry dtype):")
    for m in METHODS:
        miss = [f"{n}:{d}" for n, d in visible if not by[(n, d)]["flagged"][m]]
        print(f"  {m:13} {len(miss):3d}  {' '.join(miss[:12])}{' ...' if len(miss) > 12 else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
