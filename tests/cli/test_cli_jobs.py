"""``transpec check --jobs N``: the cases judged in several job processes make the verdicts of a
serial run, in the same order; a job that dies leaves its cases to the run; a stop ends every
job and worker at once and keeps the verdicts so far; bad counts are usage errors.

Every test drives ``transpec`` as a subprocess (``cli_jobs_fixtures``, ``cli_fixtures``,
``cli_isolation_fixtures``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
NORMS = ["--component", "softmax,layer_norm,rms_norm", "--max-examples", "6", "--quiet"]
REPORTS = ["--json", "r.json", "--junit", "r.xml"]
#: what a verdict says, all of it but its time and the paths of its saved case
SAME = ("name", "status", "ratio", "examples", "discarded", "message", "failure_kind")
SAME += ("worst", "counterexample", "judged_rows")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "transpec.cli", *args]


def _transpec(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(*args), capture_output=True, text=True, env=_env(**env), cwd=cwd, timeout=300
    )


def marker(path: Path) -> tuple[int, int] | None:
    """``(worker pid, job pid)`` that a ``cli_jobs_fixtures`` implementation wrote, or None
    while it has not (yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    worker, job = text.split()
    return int(worker), int(job)


def _verdicts(path: Path) -> list[dict[str, Any]]:
    """The verdicts of a JSON report, what :data:`SAME` names of each (a crash's message
    without the seconds the call took)."""
    data = json.loads(path.read_text())
    out = [{k: v[k] for k in SAME} for v in data["verdicts"]]
    for v in out:
        v["message"] = re.sub(r"after [0-9.e+-]+ s\b", "after (seconds)", v["message"])
    return out


@pytest.mark.parametrize(
    ("adapter", "selection", "code"),
    [
        ("numpy", ["--component", "softmax,attention,rms_norm", "--max-examples", "5"], 0),
        ("cli_fixtures:WrongScaleAttention", ["--component", "attention,softmax"], 1),
        ("cli_isolation_fixtures:Segfault", ["--property", "equivalence,shape_dtype"], 1),
    ],
)
def test_jobs_make_the_verdicts_of_a_serial_run_in_its_order(
    tmp_path: Path, adapter: str, selection: list[str], code: int
) -> None:
    """Statuses, ratios, example counts, messages, worst elements and counterexamples: a case
    draws the same examples in whichever process judges it."""
    runs = {}
    for jobs in ("1", "2"):
        folder = tmp_path / f"jobs-{jobs}"
        folder.mkdir()
        proc = _transpec(folder, "check", adapter, *NORMS, *selection, *REPORTS, "--jobs", jobs)
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        runs[jobs] = _verdicts(folder / "r.json")
        settings = json.loads((folder / "r.json").read_text())["settings"]
        assert settings["jobs"] == int(jobs)
        junit = ET.parse(folder / "r.xml").getroot()
        assert junit.find("properties/property[@name='jobs']").get("value") == jobs  # type: ignore[union-attr]
        if jobs == "2":
            assert "2 jobs judge the cases at once" in proc.stdout
    assert runs["1"] == runs["2"]
    assert any(v["status"] != "skipped" for v in runs["1"])
    if code == 1:  # the failures were saved by the jobs, and replay as failures
        data = json.loads((tmp_path / "jobs-2" / "r.json").read_text())
        failed = [v for v in data["verdicts"] if v["status"] == "failed"]
        assert failed and all(Path(v["failure_file"]).is_file() for v in failed)
        replay = _transpec(tmp_path, "reproduce", failed[0]["failure_file"], "--trust")
        assert replay.returncode == 1, replay.stdout + replay.stderr


def test_a_job_that_dies_leaves_its_cases_to_the_run(tmp_path: Path) -> None:
    """A job killed from outside (here by the implementation, through its worker) breaks the
    pool: the cases not yet judged, the one in flight included, are judged by the run itself,
    and every verdict is made as a serial run makes it."""
    serial = tmp_path / "serial"
    serial.mkdir()
    proc = _transpec(serial, "check", "numpy", *NORMS, *REPORTS, "--jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _transpec(
        tmp_path,
        "check",
        "cli_jobs_fixtures:KillsItsJob",
        *NORMS,
        *REPORTS,
        "--jobs",
        "2",
        JOBS_MARKER=str(tmp_path / "marker"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert marker(tmp_path / "marker") is not None  # the job was killed
    assert "transpec: warning: a job process ended abruptly; the " in proc.stderr
    assert "Traceback" not in proc.stderr
    mine, theirs = _verdicts(tmp_path / "r.json"), _verdicts(serial / "r.json")
    assert [v["name"] for v in mine] == [v["name"] for v in theirs]
    assert all(v["status"] == "passed" for v in mine)


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_ends_every_job_and_worker_and_keeps_the_verdicts_so_far(
    tmp_path: Path, name: str, status: int
) -> None:
    """Stopped while a job waits on a call that sleeps for a minute: the run ends within
    seconds, its reports say ``interrupted``, and neither that job nor its worker outlives it."""
    argv = _argv("check", "cli_jobs_fixtures:SleepsInACall", *NORMS, *REPORTS, "--jobs", "2")
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(JOBS_MARKER=str(tmp_path / "marker")),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    while marker(tmp_path / "marker") is None and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    pids = marker(tmp_path / "marker")
    assert pids is not None
    worker, job = pids
    assert job != process.pid  # the call was in a job's worker
    started = time.monotonic()
    process.send_signal(getattr(signal, name))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stdout + stderr
    assert time.monotonic() - started < 20  # the sleeping call was not awaited
    assert "Traceback" not in stderr
    assert _gone(job) and _gone(worker)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] is True
    assert all(v["status"] == "passed" for v in data["verdicts"])


def test_a_run_killed_outright_takes_its_jobs_and_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves the run no time to stop anything: each job and each worker dies with its
    parent (``PR_SET_PDEATHSIG``) instead of sleeping on as an orphan."""
    argv = _argv("check", "cli_jobs_fixtures:SleepsInACall", *NORMS, "--jobs", "2")
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(JOBS_MARKER=str(tmp_path / "marker")),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    while marker(tmp_path / "marker") is None and time.monotonic() < deadline:
        assert process.poll() is None
        time.sleep(0.05)
    pids = marker(tmp_path / "marker")
    assert pids is not None
    process.kill()
    process.wait(timeout=30)
    worker, job = pids
    assert _gone(job) and _gone(worker)


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--jobs", "0"], "--jobs must be a number >= 1 or auto, got '0'"),
        (["--jobs", "many"], "--jobs must be a number >= 1 or auto, got 'many'"),
        (["--jobs", "-2"], "--jobs must be a number >= 1 or auto, got '-2'"),
        (
            ["--jobs", "2", "--isolation", "none"],
            "--jobs 2 needs --isolation process (each job calls the implementation in its own "
            "worker process)",
        ),
    ],
)
def test_a_bad_job_count_is_a_usage_error(tmp_path: Path, options: list[str], line: str) -> None:
    proc = _transpec(tmp_path, "check", "numpy", *NORMS, *options)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"transpec: error: {line}"]
