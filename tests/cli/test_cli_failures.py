"""A wrong implementation fails with a report, a saved case and a command that replays it;
broken implementations are failures and the run goes on; transpec's own errors are error
verdicts; JSON and JUnit reports carry every verdict; Ctrl-C keeps the verdicts so far."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from transpec.cli import main
from transpec.oracle.engine.profiles import resolve
from transpec.runs import Case, load_case, run, run_case

HERE = Path(__file__).resolve().parent
WRONG = "cli_fixtures:WrongScaleAttention"
FAST = ["--max-examples", "6", "--quiet"]


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def _fixtures() -> object:
    import cli_fixtures

    return cli_fixtures


def test_wrong_attention_fails_saves_and_reproduces(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["check", WRONG, "--component", "attention", "--property", "equivalence"]
    argv += ["--dtype", "float32", "--failures-dir", str(tmp_path / "cases"), *FAST]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED attention.equivalence[float32-cpu]" in out
    assert "worst element" in out and "tolerance derivation:" in out
    assert "counterexample (shrunk" in out
    command = next(
        line.split("reproduce: ", 1)[1]
        for line in out.splitlines()
        if "reproduce: transpec reproduce" in line
    )
    saved = Path(command.split()[2])  # transpec reproduce FILE --trust
    assert saved.is_file()
    meta, args = load_case(saved)
    assert meta["adapter"] == WRONG
    assert (meta["component"], meta["property"], meta["dtype"]) == (
        "attention",
        "equivalence",
        "float32",
    )
    assert meta["conventions"]["causal_alignment"] == "top_left"
    assert {"q", "k", "v"} <= set(args)

    # the one-line command replays exactly that case: it still fails, with the same report
    assert command.startswith("transpec reproduce ")
    assert main(command.split()[1:]) == 1
    replay = capsys.readouterr().out
    assert replay.splitlines()[0] == next(
        line for line in out.splitlines() if line.startswith("FAILED attention.equivalence")
    )
    assert "worst element" in replay
    # ... and passes against a correct implementation
    assert main([*command.split()[1:], "--adapter", "numpy"]) == 0
    assert "passed attention.equivalence[float32-cpu]" in capsys.readouterr().out


def test_json_and_junit_reports_carry_every_verdict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    json_path, junit_path = tmp_path / "report.json", tmp_path / "report.xml"
    argv = ["check", WRONG, "--component", "attention", "--property", "equivalence,causality"]
    argv += ["--dtype", "float32,bfloat16", "--json", str(json_path), "--junit", str(junit_path)]
    assert main([*argv, *FAST]) == 1
    capsys.readouterr()

    data = json.loads(json_path.read_text())
    assert data["interrupted"] is False
    assert data["adapter"]["spec"] == WRONG
    assert data["settings"]["profile"] == "ci" and data["settings"]["max_examples"] == 6
    verdicts = {v["name"]: v for v in data["verdicts"]}
    assert set(verdicts) == {
        f"attention.{p}[{d}-cpu]"
        for p in ("equivalence", "causality")
        for d in ("float32", "bfloat16")
    }
    failed = verdicts["attention.equivalence[float32-cpu]"]
    assert failed["status"] == "failed" and failed["failure_file"]
    assert failed["worst"]["derivation"] and failed["reproduce_command"]
    assert verdicts["attention.causality[float32-cpu]"]["status"] == "passed"
    skipped = verdicts["attention.causality[bfloat16-cpu]"]
    assert skipped["status"] == "skipped" and "bfloat16" in skipped["message"]
    assert data["summary"] == {
        "passed": 1,
        "failed": 1,
        "skipped": 2,
        "error": 0,
        "xfailed": 0,
        "xpassed": 0,
        "total": 4,
    }

    suite = ET.parse(junit_path).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == 4
    assert suite.get("failures") == "1" and suite.get("skipped") == "2"
    failure = next(c for c in cases if c.find("failure") is not None)
    assert failure.get("name") == "equivalence[float32-cpu]"
    assert "reproduce: transpec reproduce" in (failure.find("failure").text or "")
    assert all(c.find("skipped").get("message") for c in cases if c.find("skipped") is not None)


@pytest.mark.parametrize(
    ("adapter", "kind"),
    [
        ("RaisesSoftmax", "raised"),
        ("HangsSoftmax", "hung"),
        ("WrongShapeSoftmax", "shape"),
        ("WrongDtypeSoftmax", "dtype"),
        ("NotArraySoftmax", "not_array"),
        ("NaNSoftmax", "violation"),
    ],
)
def test_broken_implementation_is_a_failure_and_the_run_goes_on(
    adapter: str, kind: str, tmp_path: Path
) -> None:
    impl = getattr(_fixtures(), adapter)()
    result = run(
        impl,
        components=["softmax", "rms_norm"],
        properties=["equivalence"],
        max_examples=3,
        failures_dir=tmp_path,
    )
    by_name = {v.name: v for v in result.verdicts}
    broken = by_name["softmax.equivalence[float32-cpu]"]
    assert broken.status == "failed", broken
    assert broken.failure_kind == kind
    assert broken.report.startswith("FAILED softmax.equivalence[float32-cpu]")
    assert broken.failure_file and Path(broken.failure_file).is_file()
    if kind == "hung":
        assert broken.examples == 1  # a hang is not shrunk: every retry would cost the timeout
    # the next component still ran and passed
    assert by_name["rms_norm.equivalence[float32-cpu]"].status == "passed"
    assert result.exit_code == 1


def test_a_nondeterministic_implementation_is_a_failure(tmp_path: Path) -> None:
    """Hypothesis calls it Flaky (failed, then passed on replay); transpec calls it failed."""
    result = run(
        _fixtures().FlakySoftmax(),
        components=["softmax"],
        properties=["equivalence"],
        max_examples=10,
        failures_dir=tmp_path,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "failed" and verdict.failure_kind == "violation"
    assert verdict.message.startswith("nondeterministic:")
    assert verdict.failure_file and Path(verdict.failure_file).is_file()


def test_an_exception_inside_transpec_is_an_error_verdict_not_a_crash(tmp_path: Path) -> None:
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.oracle.catalogue import select

    def broken_check(harness: object, args: object) -> float:
        raise TypeError("a bug in a property check")

    prop = dataclasses.replace(select("softmax", "equivalence")[0], check=broken_check)
    verdict = run_case(
        NumpyAdapter(),
        Case(prop, "float32", "cpu", None),
        resolve("ci", max_examples=2),
        failures_dir=tmp_path,
    )
    assert verdict.status == "error"
    assert "internal error in transpec: TypeError" in verdict.message
    assert "Traceback" in verdict.report and "a bug in a property check" in verdict.report


def test_ctrl_c_keeps_the_verdicts_so_far(tmp_path: Path) -> None:
    """SIGINT arrives during the 12th call of the implementation (InterruptedSoftmax)."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "transpec.cli",
            "check",
            "cli_fixtures:InterruptedSoftmax",
            "--component",
            "softmax",
            "--max-examples",
            "4",
            "--isolation",
            "none",  # the fixture signals its own process: the run's only without a worker
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    assert 1 <= len(data["verdicts"]) < 5
    assert all(v["status"] == "passed" for v in data["verdicts"])
    assert "INTERRUPTED" in proc.stdout
    assert "Traceback" not in proc.stderr
