"""What running the implementation in a worker process costs: the same ``transpec check`` with
``--isolation none`` and ``--isolation process``, one after the other, side by side.

    python benchmarks/isolation.py                        # the default run: transpec check torch
    python benchmarks/isolation.py numpy --component softmax,attention
    python benchmarks/isolation.py torch --rounds 2       # none, process, none, process

Each row is one ``transpec check ... --quiet`` as a subprocess (wall-clock and CPU seconds of
the run and its worker, the verdict counts); the last line gives the ratio process / none of
the best wall-clock time of each mode, and whether both modes gave the same verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(adapter: str, isolation: str, extra: list[str], folder: Path) -> dict[str, object]:
    report = folder / f"{isolation}.json"
    command = [sys.executable, "-m", "transpec.cli", "check", adapter, "--quiet"]
    command += ["--isolation", isolation, "--json", str(report)]
    command += ["--failures-dir", str(folder / f"failures-{isolation}"), *extra]
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"transpec check exited {done.returncode}: {done.stderr.strip()[-500:]}")
    data = json.loads(report.read_text())
    verdicts = {v["name"]: (v["status"], v["failure_kind"]) for v in data["verdicts"]}
    return {"wall": wall, "cpu": cpu, "summary": data["summary"], "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", nargs="?", default="torch")
    parser.add_argument("--rounds", type=int, default=1, help="none/process pairs to run")
    args, extra = parser.parse_known_args()
    runs: dict[str, list[dict[str, object]]] = {"none": [], "process": []}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"transpec check {args.adapter} {' '.join(extra)}".rstrip())
        print(f"{'isolation':<10}  {'wall s':>8}  {'cpu s':>8}  verdicts")
        for _ in range(args.rounds):
            for isolation in ("none", "process"):
                result = one_run(args.adapter, isolation, extra, Path(tmp))
                runs[isolation].append(result)
                summary = result["summary"]
                assert isinstance(summary, dict)
                counts = ", ".join(f"{summary.get(k, 0)} {k}" for k in ("passed", "failed"))
                print(f"{isolation:<10}  {result['wall']:>8.1f}  {result['cpu']:>8.1f}  {counts}")
    best = {mode: min(float(str(r["wall"])) for r in rs) for mode, rs in runs.items()}
    same = all(r["verdicts"] == runs["none"][0]["verdicts"] for rs in runs.values() for r in rs)
    print(
        f"process / none (best wall time): {best['process'] / best['none']:.2f}; "
        f"same verdicts: {'yes' if same else 'NO'}"
    )


if __name__ == "__main__":
    main()
