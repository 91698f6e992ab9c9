"""Process isolation: an implementation that segfaults, exits, hangs in C holding the GIL,
spins, or allocates without end ends only its worker process. Its verdicts fail with kind
``crashed`` or ``hung`` (the signal or exit code named), the case that did it is saved and
replays as the same failure, the components after it still run, and the JSON and JUnit
reports parse. A stop that comes before the run begins still writes the reports.

Every test drives ``transpec`` as a subprocess (``cli_isolation_fixtures``,
``cli_slow_import_fixtures``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
RUN = ["--component", "softmax,layer_norm,rms_norm", "--max-examples", "4", "--quiet"]
RUN += ["--property", "equivalence,shape_dtype,shift_invariance"]
REPORTS = ["--json", "r.json", "--junit", "r.xml"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _transpec(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transpec.cli", *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        cwd=cwd,
        timeout=300,
    )


def _reports(tmp_path: Path) -> tuple[dict[str, Any], ET.Element]:
    return json.loads((tmp_path / "r.json").read_text()), ET.parse(tmp_path / "r.xml").getroot()


@pytest.mark.parametrize(
    ("fixture", "kind", "words", "options"),
    [
        ("Segfault", "crashed", "killed by signal SIGSEGV", []),
        ("ForksThenSegfaults", "crashed", "killed by signal SIGSEGV", []),
        ("ExitsQuietly", "crashed", "exited with code 0", []),
        ("HangsHoldingTheGil", "hung", "did not return within 1 s", []),
        ("Spins", "hung", "its worker process was killed", []),
        ("Hoards", "crashed", "ran out of memory in its worker process (limit 512 MiB)",
         ["--memory-limit", "512"]),
    ],
)  # fmt: skip
def test_a_worker_that_dies_or_hangs_fails_its_verdicts_and_the_run_goes_on(
    tmp_path: Path, fixture: str, kind: str, words: str, options: list[str]
) -> None:
    started = time.monotonic()
    proc = _transpec(
        tmp_path,
        "check",
        f"cli_isolation_fixtures:{fixture}",
        *RUN,
        *REPORTS,
        "--isolation",
        "process",
        *options,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    data, junit = _reports(tmp_path)
    verdicts = {v["name"]: v for v in data["verdicts"]}
    by_component: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts.values():
        by_component.setdefault(v["component"], []).append(v)
    # the components before and after the one that took its worker down were judged, and passed
    for component in ("softmax", "rms_norm"):
        assert by_component[component], component
        assert all(v["status"] == "passed" for v in by_component[component])
    failed = [v for v in by_component["layer_norm"] if v["status"] == "failed"]
    assert len(failed) >= 2 and all(v["failure_kind"] == kind for v in failed), failed
    assert all(words in v["message"] for v in failed), failed[0]["message"]
    assert junit.get("failures") == str(len(failed))
    first = failed[0]
    cases = {(c.get("classname"), c.get("name")): c for c in junit.iter("testcase")}
    case = cases[("transpec.layer_norm", f"{first['property']}[float32-cpu]")]
    assert case.find("failure") is not None and kind in case.find("failure").get("message", "")  # type: ignore[union-attr]
    # nothing hung for more than the call time-outs that were spent
    assert seconds < 200, seconds
    # the saved case replays as the same failure, in a worker of its own
    assert first["failure_file"] and Path(first["failure_file"]).is_file()
    replay = _transpec(
        tmp_path,
        "reproduce",
        first["failure_file"],
        "--trust",
        "--isolation",
        "process",
        *options,
    )
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert f"implementation failure ({kind})" in replay.stdout
    assert words in " ".join(replay.stdout.split())  # reports wrap long messages


def test_a_worker_that_dies_after_answering_fails_the_next_call(tmp_path: Path) -> None:
    """A thread the implementation left behind ends the worker after the call returned: never
    a silent restart -- the next call, whichever it is, fails saying so."""
    proc = _transpec(tmp_path, "check", "cli_isolation_fixtures:ExitsLater", *RUN, *REPORTS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data, _ = _reports(tmp_path)
    crashed = [v for v in data["verdicts"] if v["failure_kind"] == "crashed"]
    assert crashed, data["verdicts"]
    assert all("exited with code 3" in v["message"] for v in crashed)
    assert data["verdicts"][-1]["component"] == "rms_norm"  # the run went on to the end


def test_the_worker_is_the_default_of_check(tmp_path: Path) -> None:
    proc = _transpec(tmp_path, "check", "cli_isolation_fixtures:Segfault", *RUN, *REPORTS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data, junit = _reports(tmp_path)
    assert "isolation:   process (the implementation runs in a worker process" in proc.stdout
    assert data["settings"]["isolation"] == "process" and data["settings"]["memory_limit"] > 0
    assert junit.find("properties/property[@name='isolation']").get("value") == "process"  # type: ignore[union-attr]
    kinds = {v["failure_kind"] for v in data["verdicts"] if v["component"] == "layer_norm"}
    assert "crashed" in kinds and kinds <= {"crashed", None}  # None: a property that passed


def test_without_isolation_a_segfault_ends_the_run(tmp_path: Path) -> None:
    """The negative control: in-process, the same implementation takes the run with it."""
    proc = _transpec(
        tmp_path, "check", "cli_isolation_fixtures:Segfault", *RUN, *REPORTS, "--isolation", "none"
    )
    assert proc.returncode == -signal.SIGSEGV, proc.returncode
    assert not (tmp_path / "r.json").exists()  # checked writable, never written


def test_a_bad_memory_limit_is_a_usage_error(tmp_path: Path) -> None:
    proc = _transpec(tmp_path, "check", "numpy", *RUN, "--memory-limit", "-1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "transpec: error: --memory-limit must be a number of MiB >= 0, got -1"
    ]


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_during_a_call_in_the_worker_keeps_the_verdicts_so_far(
    tmp_path: Path, name: str, status: int
) -> None:
    started = time.monotonic()
    argv = ["check", "cli_isolation_fixtures:TerminatesTheRun", "--component", "softmax"]
    argv += ["--max-examples", "4", "--quiet", *REPORTS, "--isolation", "process"]
    proc = _transpec(tmp_path, *argv, HOSTILE_SIGNAL=name)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert time.monotonic() - started < 25  # the worker sleeping in the call was not awaited
    assert "Traceback" not in proc.stderr
    data, junit = _reports(tmp_path)
    assert data["interrupted"] is True
    assert 1 <= len(data["verdicts"]) < 5
    assert all(v["status"] == "passed" for v in data["verdicts"])
    assert junit.find("properties/property[@name='interrupted']").get("value") == "true"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_stop_before_the_run_begins_still_writes_the_reports(
    tmp_path: Path, name: str, status: int
) -> None:
    marker = tmp_path / "importing"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transpec.cli",
            "check",
            "cli_slow_import_fixtures:Loaded",
            *REPORTS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(SLOW_IMPORT_MARKER=str(marker)),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()
    process.send_signal(getattr(signal, name))
    stdout, stderr = process.communicate(timeout=60)
    if name == "SIGINT":
        assert process.returncode == 130, stdout + stderr
        assert "transpec: interrupted" in stderr
    else:
        assert process.returncode == status, stdout + stderr
        assert f"transpec: stopped by {name}" in stderr
    assert "Traceback" not in stderr
    data, junit = _reports(tmp_path)
    assert data["interrupted"] is True and data["verdicts"] == []
    assert junit.find("properties/property[@name='interrupted']").get("value") == "true"  # type: ignore[union-attr]
