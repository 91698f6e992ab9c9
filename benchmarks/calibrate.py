"""Calibration: transpec's tolerances on correct implementations, over many random cases.

For each correct implementation (torch CPU in float64/float32/float16/bfloat16 and transpec's
NumPy adapter in float64/float32/float16), each component and each dtype, cases are drawn from
the default strategies (:func:`transpec.oracle.kernels.strategies.inputs`, every regime: large
logits, fully masked rows, GQA, Lq != Lk, σ² ≈ eps, |μ| >> σ, small n, ...). Each case is called
through the harness and judged two ways:

* the per-element bound: ratio = max_i |out_i - ref_i| / bound_i (a false alarm when > 1,
  or when NaN/inf positions differ);
* the RMS statistic (:func:`transpec.oracle.engine.compare.error_statistic`), where meaningful.

Printed per adapter, component and dtype: cases, false alarms, and the median / p99 / max of
both ratios. A correct implementation must give 0 false alarms. Tightness: a max ratio far
below 1 (say < 1e-3) means the bound is looser than anything a correct kernel needs.

    python benchmarks/calibrate.py                      # 10,000 cases per adapter and dtype
    python benchmarks/calibrate.py --cases 2000 --jobs 2 --json calibration.json
    python benchmarks/calibrate.py --merge calibration-rows   # rows of a campaign run by pytest

Across processes and hosts, the same rows are pytest items (``benchmarks/calibration_campaign.py``,
spread by pytest-xdist: docs/scaleout.md); ``--merge`` prints their table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COMPONENTS = ("softmax", "attention", "layer_norm", "rms_norm")

#: inputs left out per (adapter, component): (why, strategy options). Not false alarms: real
#: defects of the implementation, which transpec reports (and which calibration must not count)
EXCLUDED: dict[tuple[str, str], tuple[str, dict[str, object]]] = {
    ("torch", "attention"): (
        "negative scales: with is_causal=True torch's CPU flash kernel (the default dispatch) "
        "returns NaN for scale < 0 (torch 2.13; the math backend is right) -- a real defect "
        "that transpec reports, not a false alarm",
        {"scales": ("default", "custom")},
    ),
}


@dataclass
class Row:
    adapter: str
    component: str
    dtype: str
    cases: int = 0
    rejected: int = 0
    false_alarms: int = 0
    failures: int = 0  # the implementation raised or returned an unusable array
    stat_cases: int = 0
    stat_false_alarms: int = 0
    seconds: float = 0.0
    ratios: list[float] = field(default_factory=list)
    stat_ratios: list[float] = field(default_factory=list)
    worst: str = ""

    def summary(self, values: list[float]) -> tuple[float, float, float]:
        if not values:
            return (float("nan"),) * 3
        a = np.asarray(values)
        return float(np.median(a)), float(np.quantile(a, 0.99)), float(a.max())


def _sample(adapter_name: str, component: str, dtype: str, cases: int, seed: int) -> Row:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import UnsatisfiedAssumption

    from transpec.adapters.registry import load_adapter
    from transpec.oracle.engine.compare import compare, error_statistic
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.outcome import ImplementationFailure
    from transpec.oracle.kernels import strategies

    adapter = load_adapter(adapter_name)
    harness = Harness(adapter, dtype, "cpu")
    row = Row(adapter_name, component, dtype)

    def test(args: dict) -> None:
        try:
            call = harness.call(component, args)
        except UnsatisfiedAssumption:
            row.rejected += 1
            raise
        except ImplementationFailure as exc:
            row.cases += 1
            row.failures += 1
            row.worst = row.worst or exc.describe()
            return
        row.cases += 1
        result = compare(call.output, call.reference, call.tolerance)
        ratio = float(result.ratio)
        row.ratios.append(ratio)
        if not result.passed:
            row.false_alarms += 1
            if not row.worst:
                row.worst = result.message
        stat = error_statistic(
            component,
            call.sent,
            call.output,
            call.reference,
            conventions=harness.conventions,
            dtype=dtype,
            precision=harness.precision(component),
        )
        if getattr(stat, "meaningful", True):
            row.stat_cases += 1
            row.stat_ratios.append(float(stat.ratio))
            if not stat.passed:
                row.stat_false_alarms += 1
                if not row.worst:
                    row.worst = f"statistic ratio {float(stat.ratio):.3g}: {stat.figures}"

    options = EXCLUDED.get((adapter_name, component), (None, {}))[1]
    run = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )(hypothesis_seed(seed)(given(strategies.inputs(component, dtype, **options))(test)))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run()
    row.seconds = time.perf_counter() - start
    return row


def _job(job: tuple[str, str, str, int, int]) -> Row:
    return _sample(*job)


def _merged(directory: Path) -> list[Row]:
    """The rows a campaign saved (one JSON file per shard), summed per adapter, component
    and dtype."""
    merged: dict[tuple[str, str, str], Row] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        key = (data["adapter"], data["component"], data["dtype"])
        row = merged.setdefault(key, Row(*key))
        for name in ("cases", "rejected", "false_alarms", "failures", "stat_cases"):
            setattr(row, name, getattr(row, name) + int(data[name]))
        row.stat_false_alarms += int(data["stat_false_alarms"])
        row.seconds += float(data["seconds"])
        row.ratios += [float(r) for r in data["ratios"]]
        row.stat_ratios += [float(r) for r in data["stat_ratios"]]
        row.worst = row.worst or data["worst"]
    return list(merged.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        type=int,
        default=10_000,
        help="cases per adapter and dtype (split evenly over the four components; default 10000)",
    )
    parser.add_argument("--adapters", default="torch,numpy")
    parser.add_argument("--components", default=",".join(COMPONENTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--merge", default="", metavar="DIR", help="print the table of the rows saved in DIR"
    )
    args = parser.parse_args(argv)

    from transpec.adapters.registry import load_adapter

    components = [c for c in args.components.split(",") if c]
    per_component = max(1, args.cases // len(components))
    start = time.perf_counter()
    if args.merge:
        rows = _merged(Path(args.merge))
        per_component = max((r.cases for r in rows), default=0)
    else:
        jobs = []
        for name in [a for a in args.adapters.split(",") if a]:
            for dtype in load_adapter(name).dtypes:
                for component in components:
                    jobs.append((name, component, dtype, per_component, args.seed))
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(_job, jobs))
    wall = time.perf_counter() - start

    for (name, component), (why, _) in EXCLUDED.items():
        print(f"excluded for {name} {component}: {why}")
    print(
        f"calibration: {per_component} cases per adapter x component x dtype "
        f"({per_component * len(components)} per adapter and dtype), seed {args.seed}, "
        f"{wall:.0f} s"
    )
    print()
    head = (
        f"{'adapter':7} {'component':10} {'dtype':8} {'cases':>6} {'false':>5} {'fail':>4} "
        f"{'elem med':>9} {'p99':>9} {'max':>9}  {'stat n':>6} {'false':>5} "
        f"{'stat med':>9} {'p99':>9} {'max':>9} {'s':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        m, p, x = r.summary(r.ratios)
        sm, sp, sx = r.summary(r.stat_ratios)
        print(
            f"{r.adapter:7} {r.component:10} {r.dtype:8} {r.cases:6d} {r.false_alarms:5d} "
            f"{r.failures:4d} {m:9.2e} {p:9.2e} {x:9.2e}  {r.stat_cases:6d} "
            f"{r.stat_false_alarms:5d} {sm:9.2e} {sp:9.2e} {sx:9.2e} {r.seconds:5.0f}"
        )
    alarms = sum(r.false_alarms + r.stat_false_alarms + r.failures for r in rows)
    total = sum(r.cases for r in rows)
    print()
    print(f"false alarms: {alarms} in {total} cases")
    for r in rows:
        if r.worst:
            print(f"  {r.adapter} {r.component} {r.dtype}: {r.worst[:300]}")
    for r in rows:
        top = max(r.ratios) if r.ratios else float("nan")
        if top == 0.0:
            print(
                f"  exact: {r.adapter} {r.component} {r.dtype}: every output equals the reference"
            )
        elif top < 1e-3:
            print(f"  LOOSE: {r.adapter} {r.component} {r.dtype}: max ratio {top:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows]))
    return 1 if alarms else 0


if __name__ == "__main__":
    raise SystemExit(main())
