"""Calibration as pytest items, so that pytest-xdist spreads it over processes and hosts.

Each (adapter, component, dtype, shard) of :mod:`calibrate` is one test item: it draws
``TRANSPEC_CALIBRATION_CASES`` cases (default 500) from the default strategy with the seed
``TRANSPEC_CALIBRATION_SEED + shard`` (default 20260), judges every one through the harness
(per-element bound and RMS statistic), writes its row as JSON into
``TRANSPEC_CALIBRATION_DIR`` (default ``calibration-rows``) and fails on a false alarm. The
items are independent, so xdist's schedulers distribute them as they are; nothing here
schedules. ``python benchmarks/calibrate.py --merge DIR`` prints the table of all the rows.

    TRANSPEC_CALIBRATION_SHARDS=8 pytest benchmarks/calibration_campaign.py -n 8
    TRANSPEC_CALIBRATION_SHARDS=32 pytest benchmarks/calibration_campaign.py \\
        --dist worksteal --tx 4*ssh=gpu-a//python=/opt/venv/bin/python \\
        --tx 4*ssh=gpu-b//python=/opt/venv/bin/python --rsyncdir benchmarks

(docs/scaleout.md). ``TRANSPEC_CALIBRATION_ADAPTERS`` (default ``torch,numpy``) and
``TRANSPEC_CALIBRATION_COMPONENTS`` (default all four kernels) narrow the campaign.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import calibrate
import pytest


def _env_list(name: str, default: str) -> list[str]:
    return [item for item in os.environ.get(name, default).split(",") if item]


def _items() -> list[tuple[str, str, str, int]]:
    from transpec.adapters.registry import load_adapter

    shards = int(os.environ.get("TRANSPEC_CALIBRATION_SHARDS", "1"))
    items = []
    for adapter in _env_list("TRANSPEC_CALIBRATION_ADAPTERS", "torch,numpy"):
        for dtype in load_adapter(adapter).dtypes:
            for component in _env_list(
                "TRANSPEC_CALIBRATION_COMPONENTS", ",".join(calibrate.COMPONENTS)
            ):
                items += [(adapter, component, dtype, shard) for shard in range(shards)]
    return items


@pytest.mark.parametrize(("adapter", "component", "dtype", "shard"), _items(), ids=lambda x: str(x))
def test_calibration_shard(adapter: str, component: str, dtype: str, shard: int) -> None:
    cases = int(os.environ.get("TRANSPEC_CALIBRATION_CASES", "500"))
    seed = int(os.environ.get("TRANSPEC_CALIBRATION_SEED", "20260")) + shard
    row = calibrate._sample(adapter, component, dtype, cases, seed)
    out = Path(os.environ.get("TRANSPEC_CALIBRATION_DIR", "calibration-rows"))
    out.mkdir(parents=True, exist_ok=True)
    name = f"{adapter}-{component}-{dtype}-{shard}.json"
    (out / name).write_text(json.dumps(asdict(row)))
    alarms = row.false_alarms + row.stat_false_alarms + row.failures
    assert alarms == 0, f"{alarms} false alarms in {row.cases} cases: {row.worst[:300]}"
