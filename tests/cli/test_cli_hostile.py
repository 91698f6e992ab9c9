"""``transpec check`` on implementations that edit what they are given, or declare what a run
cannot use: exit status 1 with the failure kind in the JSON report, or 2 with one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"  # hostile_adapters.py
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _check(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "transpec.cli", "check", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("spec", "component", "dtype", "kind", "named"),
    [
        ("ScalesInputsWrongEncoder", "encoder_layer", "float64", "mutated_input", "input src"),
        ("ZeroesQueryAttention", "attention", "float32", "mutated_input", "input q in place"),
        ("EditsWeightEmbedding", "embedding", "float64", "mutated_input", "input weight"),
        ("EditsParamsEncoder", "encoder_layer", "float32", "mutated_input", "params['linear1"),
        ("ReplacesParamsEncoder", "encoder_layer", "float32", "mutated_input", "replaced"),
        ("IgnoreMaskAttention", "attention", "float32", "changed_conventions", "bool_mask"),
        pytest.param(
            "TorchScalesQuery",
            "attention",
            "float32",
            "mutated_input",
            "input q in place",
            marks=pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed"),
        ),
    ],
)
def test_an_implementation_that_edits_its_inputs_fails_the_check(
    tmp_path: Path, spec: str, component: str, dtype: str, kind: str, named: str
) -> None:
    report = tmp_path / "out.json"
    proc = _check(
        tmp_path,
        f"hostile_adapters:{spec}",
        "--component",
        component,
        "--property",
        "equivalence",
        "--dtype",
        dtype,
        "--max-examples",
        "3",
        "--quiet",
        "--json",
        str(report),
        "--failures-dir",
        str(tmp_path / "cases"),
    )
    assert proc.returncode == 1, proc.stderr
    data = json.loads(report.read_text())
    (verdict,) = data["verdicts"]
    assert verdict["status"] == "failed"
    assert verdict["failure_kind"] == kind
    assert named in verdict["message"]
    assert f"implementation failure ({kind})" in proc.stdout
    assert data["adapter"]["conventions"]["bool_mask"] == "keep"
    assert verdict["failure_file"] and Path(verdict["failure_file"]).is_file()


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("ZeroTimeout", "call_timeout must be a finite number of seconds > 0, got 0.0"),
        ("StringDtypes", "dtypes must be a tuple of names"),
        ("RaisingDevices", "available_devices() raised RuntimeError: no driver second line"),
        ("RaisingProvides", "provides('attention') raised KeyError"),
    ],
)
def test_declarations_a_run_cannot_use_exit_2_with_one_line(
    tmp_path: Path, spec: str, text: str
) -> None:
    report = tmp_path / "out.json"
    proc = _check(
        tmp_path, f"hostile_adapters:{spec}", "--component", "softmax", "--json", str(report)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transpec: error: adapter ")
    assert text in lines[0]
    assert "Traceback" not in proc.stderr
    assert not report.exists()


def test_reproduce_with_an_adapter_whose_declarations_cannot_be_used_exits_2(
    tmp_path: Path,
) -> None:
    report = tmp_path / "out.json"
    proc = _check(
        tmp_path,
        "hostile_adapters:ZeroesQueryAttention",
        "--component",
        "attention",
        "--property",
        "equivalence",
        "--dtype",
        "float32",
        "--max-examples",
        "2",
        "--quiet",
        "--json",
        str(report),
    )
    assert proc.returncode == 1, proc.stderr
    saved = json.loads(report.read_text())["verdicts"][0]["failure_file"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE), env.get("PYTHONPATH", "")])
    replay = subprocess.run(
        [sys.executable, "-m", "transpec.cli", "reproduce", saved, "--trust"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 1 and "(mutated_input)" in replay.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "transpec.cli",
            "reproduce",
            saved,
            "--adapter",
            "hostile_adapters:ZeroTimeout",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "call_timeout must be a finite number" in lines[0]
