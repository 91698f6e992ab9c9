"""Diff two JSON reports of ``transpec check``: the same verdicts and the same ratios?

    transpec check torch --json before.json        # on one revision
    transpec check torch --json after.json         # on another
    python benchmarks/compare_reports.py before.json after.json

Under the ``ci`` profile (``CI=true``) the examples are derandomized, so a change that keeps
behaviour gives the same verdict, the same status, the same failure kind and the same worst
ratio for every ``component.property[dtype-device]`` -- bit for bit. The script prints every
difference (a verdict only in one report, a status, a failure kind, a ratio) and exits 1 when
there is one, 0 when the two reports agree. The order of the verdicts, timings, file names and
messages are not compared: they are presentation, not behaviour.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: the fields of a verdict that are its behaviour
COMPARED: tuple[str, ...] = ("status", "failure_kind", "ratio", "examples")


def _verdicts(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in report["verdicts"]}


def _same(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    return bool(a == b)


def differences(
    before: Mapping[str, Any], after: Mapping[str, Any], *, rel: float = 0.0
) -> list[str]:
    """One line per difference in behaviour between two JSON reports (empty: the same)."""
    a, b = _verdicts(before), _verdicts(after)
    out = [f"only in the first report: {name}" for name in a if name not in b]
    out += [f"only in the second report: {name}" for name in b if name not in a]
    for name in a:
        if name not in b:
            continue
        for key in COMPARED:
            x, y = a[name].get(key), b[name].get(key)
            if not _same(x, y, rel):
                out.append(f"{name}: {key} {x!r} -> {y!r}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument(
        "--rel", type=float, default=0.0, help="relative difference of ratios allowed (default 0)"
    )
    args = parser.parse_args(argv)
    try:
        before = json.loads(args.before.read_text())
        after = json.loads(args.after.read_text())
    except (OSError, ValueError) as err:
        print(f"compare_reports: {err}", file=sys.stderr)
        return 2
    diff = differences(before, after, rel=args.rel)
    for line in diff:
        print(line)
    n = len(_verdicts(before))
    print(f"{n} verdicts compared, {len(diff)} difference(s)")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
