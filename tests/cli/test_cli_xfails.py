"""Known failures (``--xfails``): listed failures are expected and do not fail the run, a listed
verdict that passes is reported (and fails under ``--strict-xfails``), the file is checked line
by line, and the file transpec ships for torch lists real verdicts of the torch adapter."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from transpec.cli import main
from transpec.errors import KnownFailuresFileError
from transpec.runs import Verdict
from transpec.xfails import KnownFailures, shipped

HERE = Path(__file__).resolve().parent
#: WrongScaleAttention fails these two properties in float32 (its scale is wrong)
ATTENTION = [
    "check",
    "cli_fixtures:WrongScaleAttention",
    "--component",
    "attention",
    "--property",
    "equivalence,large_logits",
    "--dtype",
    "float32",
    "--max-examples",
    "4",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "known.txt"
    path.write_text(text)
    return str(path)


def test_listed_failures_are_expected_and_the_run_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ATTENTION) == 1  # without the file: the two failures fail the run
    capsys.readouterr()
    known = _write(
        tmp_path,
        "# the scale is ignored\n"
        "attention.equivalence[float32-cpu]   # scale ignored (upstream #1)\n"
        "attention.large_*[*-cpu]              # scale ignored (upstream #1)\n",
    )
    report = tmp_path / "r.json"
    junit = tmp_path / "r.xml"
    argv = [*ATTENTION, "--xfails", known, "--json", str(report), "--junit", str(junit)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "known failures: " in out and "(2 entries)" in out
    assert "xfail inf" in out or "xfail " in out
    assert "2 expected failures" in out
    assert f"xfail attention.equivalence[float32-cpu] -- {known}:2: scale ignored" in out
    data = json.loads(report.read_text())
    statuses = {v["name"]: (v["status"], v["known_failure"]) for v in data["verdicts"]}
    assert statuses["attention.equivalence[float32-cpu]"] == (
        "xfailed",
        f"{known}:2: scale ignored (upstream #1)",
    )
    assert statuses["attention.large_logits[float32-cpu]"][0] == "xfailed"
    assert data["summary"]["xfailed"] == 2 and data["summary"]["failed"] == 0
    assert data["known_failures"] == {"file": known, "strict": False}
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.get("skipped") == "2"
    skipped = suite.findall("testcase/skipped")
    assert [s.get("type") for s in skipped] == ["xfail", "xfail"]
    assert all("expected failure" in (s.get("message") or "") for s in skipped)


def test_a_listed_verdict_that_passes_is_reported_and_fails_only_when_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known = _write(
        tmp_path,
        "attention.equivalence[float32-cpu]  # scale ignored\n"
        "attention.shape_dtype[float32-cpu]  # was broken once\n",
    )
    argv = [*ATTENTION[:4], "--property", "equivalence,shape_dtype", *ATTENTION[6:]]
    junit = tmp_path / "r.xml"
    assert main([*argv, "--xfails", known, "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "XPASS attention.shape_dtype[float32-cpu]" in out
    assert "fixed upstream?" in out
    assert "1 listed but passed" in out
    note = ET.parse(junit).getroot().find("testcase[@name='shape_dtype[float32-cpu]']/system-out")
    assert note is not None and "XPASS" in (note.text or "")
    assert main([*argv, "--xfails", known, "--strict-xfails", "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "fails the run: --strict-xfails" in out
    failure = ET.parse(junit).getroot().find("testcase[@name='shape_dtype[float32-cpu]']/failure")
    assert failure is not None and failure.get("type") == "xpass"


def test_an_unlisted_failure_still_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known = _write(tmp_path, "attention.equivalence[float32-cpu]  # scale ignored\n")
    assert main([*ATTENTION, "--xfails", known]) == 1
    out = capsys.readouterr().out
    assert "FAILED attention.large_logits[float32-cpu]" in out
    assert "1 failed, 1 expected failures" in out


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("attention.equivalence[float32-cpu]\n", [":1:", "needs its reason"]),
        ("attention.equivalence[float32-cpu]  #   \n", [":1:", "needs its reason"]),
        ("\n# c\nattention.equivalence  # x\n", [":3:", "not a verdict id"]),
        ("attention.equivalence[float32]  # x\n", ["not a verdict id"]),
        ("atention.equivalence[float32-cpu]  # x\n", ["unknown component 'atention'"]),
        ("attention.equivalance[float32-cpu]  # x\n", ["no property 'equivalance'"]),
        ("attention.*[float23-cpu]  # x\n", ["unknown dtype 'float23'"]),
    ],
)
def test_a_wrong_entry_is_one_line_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]
) -> None:
    known = _write(tmp_path, text)
    with pytest.raises(KnownFailuresFileError):
        KnownFailures.load(known)
    assert main([*ATTENTION, "--xfails", known]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"transpec: error: {known}:"), err
    assert all(n in err[0] for n in needles), err


def test_missing_file_and_strict_without_file_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ATTENTION, "--xfails", str(tmp_path / "nope.txt")]) == 2
    assert "cannot read the known-failures file" in capsys.readouterr().err
    assert main([*ATTENTION, "--strict-xfails"]) == 2
    assert "--strict-xfails needs --xfails" in capsys.readouterr().err


def test_globs_are_star_and_question_mark_only() -> None:
    known = KnownFailures.parse("attention.*[float?6-*]  # x\n")
    assert known.find("attention.causality[float16-cpu]") is not None
    assert known.find("attention.causality[bfloat16-cpu]") is None  # 'b' is not matched by ^
    assert known.find("softmax.causality[float16-cpu]") is None
    literal = KnownFailures.parse("softmax.equivalence[float16-cpu]  # x\n")
    # brackets are literal, not a character class
    assert literal.find("softmax.equivalence[float16-cpu]") is not None
    assert literal.find("softmax.equivalencef") is None


def test_errors_and_skips_are_never_expected() -> None:
    known = KnownFailures.parse("softmax.*[*-cpu]  # x\n")
    for status in ("error", "skipped"):
        verdict = Verdict("softmax", "equivalence", "float32", "cpu", status)  # type: ignore[arg-type]
        known.apply(verdict)
        assert verdict.status == status and verdict.known_failure is None


def test_the_shipped_torch_file_lists_real_torch_verdicts() -> None:
    """Every entry of the shipped file names verdicts the torch adapter makes; each has its
    reason (the loader refuses entries without one)."""
    pytest.importorskip("torch")
    from transpec.adapters.registry import load_adapter
    from transpec.runs import plan

    known = KnownFailures.load("torch-2.13-cpu")
    assert known.source == "torch-2.13-cpu" and "torch-2.13-cpu" in shipped()
    names = [case.name for case in plan(load_adapter("torch"), devices=["cpu"])]
    assert known.entries and known.unmatched(names) == []
    assert all(entry.reason for entry in known.entries)


def test_plugin_marks_listed_verdicts_xfail(tmp_path: Path) -> None:
    """``pytest --transpec-xfails``: a listed failure is XFAIL, a listed pass XPASS, and with
    ``--transpec-strict-xfails`` the XPASS fails the session."""
    import os
    import subprocess
    import sys

    known = _write(
        tmp_path,
        "attention.equivalence[float32-cpu]  # scale ignored\n"
        "attention.shape_dtype[float32-cpu]  # was broken once\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rxX",
        "--transpec",
        "cli_fixtures:WrongScaleAttention",
        "--transpec-component",
        "attention",
        "--transpec-property",
        "equivalence,shape_dtype",
        "--transpec-dtype",
        "float32",
        "--transpec-max-examples",
        "4",
        "--transpec-xfails",
        known,
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, *extra], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )

    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 xfailed, 1 xpassed" in proc.stdout
    assert f"known failure ({known}:1): scale ignored" in proc.stdout
    strict = run("--transpec-strict-xfails")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "1 failed, 1 xfailed" in strict.stdout
    bad = run("--transpec-xfails", _write(tmp_path, "softmax.nope[float32-cpu]  # x\n"))
    assert bad.returncode == 4 and "no property 'nope'" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_the_torch_gate_passes_with_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    """``transpec check torch --xfails torch-2.13-cpu`` exits 0 on the pinned torch: every
    failure is listed (a nondeterministic one that passes is an XPASS, not a failure)."""
    torch = pytest.importorskip("torch")
    if not torch.__version__.startswith("2.13."):
        pytest.skip(f"the shipped file is for torch 2.13, not {torch.__version__}")
    assert main(["check", "torch", "--device", "cpu", "--xfails", "torch-2.13-cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "expected failures" in out
