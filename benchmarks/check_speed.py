"""Two revisions of transpec side by side on the same ``transpec check``: runs alternated, wall
and CPU seconds, and whether the verdicts are the same.

    python benchmarks/check_speed.py before=/path/to/old/venv/bin/python after=.venv/bin/python
    python benchmarks/check_speed.py A=... B=... --rounds 3 -- --isolation none

Each ``NAME=PYTHON`` is an interpreter whose ``transpec`` is the revision to time (a second
checkout's virtual environment, say). Rounds alternate them (A, B, A, B, ...), so that the load
of a shared machine falls on both alike; every run is ``transpec check torch`` (or what follows
``--``) under ``CI=true`` in a scratch directory. Per run: wall-clock seconds, CPU seconds
(user + system) of the run itself and of its children (the worker process; with ``--jobs``, the
jobs and their workers), and the machine's
load. At the end: the best and the median of each, the ratio of each revision's medians (wall,
and the CPU of the run and its children together) to the first revision's, and the differences
of each run's verdicts from the first run of the first revision (:mod:`compare_reports`:
status, failure kind, ratio, examples). On a loaded machine the wall-clock time says little;
the CPU seconds say more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_reports import differences

#: run inside the timed interpreter: the check, then its own and its children's CPU seconds
_TIMED = """
import json, os, resource, sys, time
start = time.perf_counter()
from transpec.cli import main
try:
    code = main(sys.argv[2:])
finally:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(sys.argv[1], "w") as fh:
        json.dump({"wall": time.perf_counter() - start,
                   "cpu": own.ru_utime + own.ru_stime,
                   "children": kids.ru_utime + kids.ru_stime,
                   "load": os.getloadavg()[0]}, fh)
sys.exit(code)
"""


def one_run(python: str, check: list[str], folder: Path, tag: str) -> dict[str, float]:
    report, timing = folder / f"{tag}.json", folder / f"{tag}-time.json"
    command = [python, "-c", _TIMED, str(timing), "check", *check, "--quiet"]
    command += ["--json", str(report), "--failures-dir", str(folder / f"failures-{tag}")]
    done = subprocess.run(
        command,
        cwd=folder,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"{tag}: transpec check exited {done.returncode}: {done.stderr[-500:]}")
    result: dict[str, float] = json.loads(timing.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="NAME=PYTHON, two or more")
    parser.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    check = ["torch"]
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1 :]
        check = rest if rest and not rest[0].startswith("-") else ["torch", *rest]
    args = parser.parse_args(argv)
    pythons = {
        name: os.path.abspath(python) if os.sep in python else python
        for name, python in (r.split("=", 1) for r in args.revisions)
    }
    times: dict[str, list[dict[str, float]]] = {name: [] for name in pythons}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first: dict[str, object] | None = None
        print(f"transpec check {' '.join(check)}   (CI=true, runs alternated)")
        print(f"{'round':>5}  {'revision':<10} {'wall s':>7} {'cpu s':>7} {'children s':>10}  load")
        for r in range(args.rounds):
            for name, python in pythons.items():
                tag = f"{name}-{r}"
                t = one_run(python, check, folder, tag)
                times[name].append(t)
                report = json.loads((folder / f"{tag}.json").read_text())
                if first is None:
                    first = report
                diff = differences(first, report)
                print(
                    f"{r:>5}  {name:<10} {t['wall']:7.1f} {t['cpu']:7.1f} {t['children']:10.1f}  "
                    f"{t['load']:4.1f}   {len(diff)} verdict difference(s)",
                    flush=True,
                )
                for line in diff[:10]:
                    print(f"        {line}")
    print()
    medians: dict[str, tuple[float, float]] = {}
    for name, runs in times.items():
        parts = []
        for key, label in (("wall", "wall"), ("cpu", "cpu"), ("children", "children")):
            values = [t[key] for t in runs]
            parts.append(f"{label} best {min(values):.1f} median {statistics.median(values):.1f}")
        total = [t["cpu"] + t["children"] for t in runs]
        print(
            f"{name:<10} "
            + "; ".join(parts)
            + f"; cpu+children median {statistics.median(total):.1f}"
        )
        medians[name] = (statistics.median(t["wall"] for t in runs), statistics.median(total))
    first, *others = medians
    for name in others:
        wall = medians[name][0] / medians[first][0]
        cpu = medians[name][1] / medians[first][1]
        print(f"{name}/{first}: wall median x{wall:.2f}, cpu+children median x{cpu:.2f}")


if __name__ == "__main__":
    main()
