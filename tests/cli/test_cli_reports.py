"""Reports from a hand-made result: the table's columns and cells, strict JSON, JUnit counts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

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
