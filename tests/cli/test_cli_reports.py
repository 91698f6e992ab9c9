"""Reports from a hand-made result: the table's columns and cells, strict JSON, JUnit counts."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from transpec import reports as report
from transpec.oracle.engine.profiles import resolve
from transpec.runs import RunResult, Verdict


def _result() -> RunResult:
    result = RunResult(
        adapter="demo (numpy)",
        adapter_spec="demo:Demo",
        conventions={"causal_alignment": "bottom_right"},
        profile=resolve("ci"),
        components=("attention", "rms_norm"),
        dtypes=("float32",),
        devices=("cpu", "cuda"),
        seconds=1.5,
    )
    result.verdicts = [
        Verdict("attention", "causality", "float32", "cpu", "passed", ratio=0.25, examples=12),
        Verdict(
            "attention",
            "causality",
            "float32",
            "cuda",
            "failed",
            ratio=float("inf"),
            message="implementation failure (not_array): list",
            report="FAILED ...",
            failure_kind="not_array",
        ),
        Verdict(
            "rms_norm",
            "equivalence",
            "float32",
            "cpu",
            "skipped",
            message="adapter does not provide rms_norm",
        ),
        Verdict(
            "rms_norm",
            "equivalence",
            "float32",
            "cuda",
            "skipped",
            message="adapter does not provide rms_norm",
        ),
    ]
    return result


def test_table_has_a_column_per_dtype_and_device_and_a_summary() -> None:
    text = report.table(_result())
    head = text.splitlines()[0].split()
    assert head == ["component", "property", "float32/cpu", "float32/cuda"]
    row = next(line for line in text.splitlines() if line.startswith("attention"))
    assert row.split() == ["attention", "causality", "ok", "0.25", "FAILED", "inf"]
    assert "1 passed, 1 failed, 2 skipped" in text
    assert "adapter does not provide rms_norm" in text
    assert "causal_alignment='bottom_right'" in report.header(_result())


def test_json_is_strict_and_junit_counts_match() -> None:
    result = _result()
    data = json.loads(json.dumps(report.to_json(result), allow_nan=False))
    ratios = [v["ratio"] for v in data["verdicts"]]
    assert ratios == [0.25, "inf", None, None]
    assert data["summary"]["failed"] == 1 and data["interrupted"] is False
    suite = ET.fromstring(report.junit_xml(result))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    assert result.exit_code == 1
    result.interrupted = True
    assert result.exit_code == 130
    assert "INTERRUPTED" in report.summary_line(result)


_REGIMES: list[tuple[str, dict[str, Any], str]] = [
    (
        "softmax",
        {"x": np.array([[1.0, np.inf], [2.0, 3.0]]), "dim": 0},
        "row length 2, max |x| = 3",
    ),
    ("softmax", {"x": np.array([-np.inf, -np.inf])}, ""),
    (
        "attention",
        {
            "q": np.full((1, 4, 1, 8), 0.5),
            "k": np.full((1, 2, 6, 8), 2.0),
            "v": np.ones((1, 2, 6, 8)),
            "attn_mask": np.ones((1, 6), dtype=bool),
            "is_causal": True,
            "scale": -0.5,
            "enable_gqa": True,
        },
        "Lq=1, Lk=6 (decode), GQA 4/2 heads, head dim 8, |logits| <= 4, causal, bool mask",
    ),
    (
        "attention",
        {
            "q": np.ones((3, 4)),
            "k": np.ones((5, 4)),
            "v": np.ones((5, 4)),
            "attn_mask": np.ones((3, 5)),
        },
        "Lq=3, Lk=5, head dim 4, |logits| <= 2, additive mask",
    ),
    (
        "layer_norm",
        {"x": np.array([[1.0, 3.0], [10.0, 10.0]]), "normalized_shape": (2,), "eps": 1e-5},
        "n=2 normalized elements, max |mean|/std = inf, eps=1e-05",
    ),
    (
        "rms_norm",
        {"x": np.array([[1.0, 3.0, 5.0, 7.0]]), "normalized_shape": [2, 2], "eps": None},
        "n=4 normalized elements, max |mean|/std = 1.79",
    ),
    ("embedding", {"input": np.array([1]), "weight": np.ones((2, 3))}, ""),
    ("gelu", {"x": np.ones(3)}, ""),
    ("attention", {"x": np.ones(3)}, ""),
]


@pytest.mark.parametrize(("component", "args", "line"), _REGIMES)
def test_the_regime_line_is_the_records_hook_and_never_raises(
    component: str, args: dict[str, Any], line: str
) -> None:
    """A kernel's regime from its record's hook; nothing for a component without one, an
    unknown name or arguments the hook cannot read."""
    assert report._regime(component, args) == line
    text = report.summarize_args(component, args)
    assert text.endswith(f"\nregime: {line}") if line else "regime:" not in text


def test_passing_verdicts_name_the_rows_they_judged() -> None:
    """A verdict whose long inputs were judged on sampled rows says so, in the text report and
    in the JSON; the others carry nothing."""
    from transpec import reports
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.runs import run

    result = run(
        NumpyAdapter(),
        components=["attention"],
        properties=["long_context", "equivalence"],
        dtypes=["float32"],
        max_examples=2,
        failures_dir=None,
    )
    by_name = {v.property: v for v in result.verdicts}
    sampled, whole = by_name["long_context"], by_name["equivalence"]
    assert sampled.status == whole.status == "passed"
    assert sampled.judged_rows is not None
    assert re.fullmatch(
        r"2 calls on sampled rows; last: judged \d+ of \d+ query rows: 0-.*", sampled.judged_rows
    )
    assert whole.judged_rows is None
    text = reports.sampled_rows_section(result)
    assert text.splitlines()[1] == f"  {sampled.name}: {sampled.judged_rows}"
    assert whole.name not in text
    verdicts = {v["name"]: v for v in reports.to_json(result)["verdicts"]}
    assert verdicts[sampled.name]["judged_rows"] == sampled.judged_rows
    assert verdicts[whole.name]["judged_rows"] is None
