"""The gate cannot be fooled: nothing tested is not a pass (exit 5), reports survive a closed
pipe, hostile text, bad paths, a change of directory and termination, stdout stays transpec's,
and case files are read as data (no import without ``--trust``, every field validated, archive
sizes checked before anything is decompressed, nondeterministic cases marked).

Every test drives ``transpec`` as a subprocess, and every JSON and JUnit report it writes must
parse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
SOFTMAX = ["--component", "softmax", "--dtype", "float32", "--max-examples", "3", "--quiet"]


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


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, a single ``transpec: error:`` line on stderr holding every needle, no run."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("transpec: error: "), lines
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "verdicts to make" not in proc.stdout  # nothing ran
    return lines[0]


def _reports(tmp_path: Path) -> tuple[dict[str, Any], ET.Element]:
    return json.loads((tmp_path / "r.json").read_text()), ET.parse(tmp_path / "r.xml").getroot()


REPORTS = ["--json", "r.json", "--junit", "r.xml"]


# -- 1. no empty pass -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        # every verdict of every component skipped (the count follows the catalogue)
        (["cli_hostile_fixtures:Misnamed"], "no verdict ran: all "),
        (
            ["cli_hostile_fixtures:DeclaresCuda", "--device", "cuda", "--component", "softmax"],
            "device cuda is not available on this machine",
        ),
        (
            [
                "cli_fixtures:NumpyWithoutBfloat16",
                "--component",
                "softmax",
                "--dtype",
                "float32,bfloat16",
            ],
            "dtype bfloat16 ran nothing",
        ),
        (
            ["cli_hostile_fixtures:Misnamed", "--component", "softmax", "--device", "cpu"],
            "no verdict ran",
        ),
        (
            [
                "cli_hostile_fixtures:DeclaresCuda",
                "--component",
                "softmax",
                "--device",
                "cpu,cuda",
                "--property",
                "equivalence",
                "--dtype",
                "float32",
            ],
            "device cuda ran nothing",
        ),
    ],
)
def test_nothing_tested_exits_5_with_one_line(tmp_path: Path, argv: list[str], reason: str) -> None:
    proc = _transpec(tmp_path, "check", *argv, "--max-examples", "2", "--quiet", *REPORTS)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (line,) = _lines(proc.stderr, "transpec: nothing tested: ")
    assert reason in line
    assert "Traceback" not in proc.stderr
    data, junit = _reports(tmp_path)
    assert data["nothing_tested"] and reason in data["nothing_tested"]
    assert junit.tag == "testsuite"


def test_a_misnamed_method_is_named_in_a_warning(tmp_path: Path) -> None:
    proc = _transpec(tmp_path, "check", "cli_hostile_fixtures:Misnamed", "--quiet")
    warnings = _lines(proc.stderr, "transpec: warning: ")
    assert len(warnings) == 2, proc.stderr
    assert "'layernorm'" in warnings[0] + warnings[1]
    assert any(
        "'scaled_dot_product'" in w and "scaled_dot_product_attention" in w for w in warnings
    )
    # the built-in adapters have no such method
    clean = _transpec(tmp_path, "check", "numpy", *SOFTMAX)
    assert clean.returncode == 0, clean.stderr
    assert not _lines(clean.stderr, "transpec: warning: ")


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--transpec", "cli_hostile_fixtures:Misnamed"], "no verdict ran"),
        (
            [
                "--transpec",
                "cli_hostile_fixtures:DeclaresCuda",
                "--transpec-device",
                "cuda",
                "--transpec-component",
                "softmax",
            ],
            "device cuda is not available",
        ),
    ],
)
def test_pytest_plugin_exits_5_when_nothing_was_tested(
    tmp_path: Path, argv: list[str], reason: str
) -> None:
    proc = _pytest(tmp_path, *argv)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (line,) = _lines(proc.stdout, "transpec: nothing tested: ")
    assert reason in line
    if "Misnamed" in argv[1]:
        assert "did you mean 'layer_norm'" in proc.stdout


# -- 2. reports survive ---------------------------------------------------------------------------


def test_a_closed_pipe_on_stdout_keeps_the_reports_and_the_exit_status(tmp_path: Path) -> None:
    """``transpec check ... --json r.json | head -3``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "transpec.cli", "check", "numpy", *SOFTMAX, *REPORTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()  # what head does after three lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    data, junit = _reports(tmp_path)
    assert data["summary"]["passed"] == len(data["verdicts"]) > 0
    assert len(junit.findall("testcase")) == len(data["verdicts"])


def test_junit_carries_messages_xml_forbids(tmp_path: Path) -> None:
    proc = _transpec(tmp_path, "check", "cli_hostile_fixtures:Unprintable", *SOFTMAX, *REPORTS)
    assert proc.returncode == 1, proc.stderr
    data, junit = _reports(tmp_path)  # both parse
    failures = [f for f in junit.iter("failure")]
    assert failures
    message = failures[0].get("message") or ""
    assert "kernel" in message and "\\x00exploded" in message and "\x1b" not in message
    assert "<&> done" in message
    assert any("exploded" in v["message"] for v in data["verdicts"])


@pytest.mark.parametrize("case", ["missing directory", "a directory", "not writable"])
def test_a_report_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, case: str
) -> None:
    if case == "missing directory":
        target = str(tmp_path / "no" / "such" / "r.json")
        needle = "does not exist"
    elif case == "a directory":
        target = str(tmp_path)
        needle = "it is a directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes everywhere")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "r.json")
        needle = "Permission denied"
    for option in ("--json", "--junit"):
        proc = _transpec(tmp_path, "check", "numpy", *SOFTMAX, option, target)
        _one_error(proc, option, needle)


def test_report_paths_do_not_follow_the_implementations_chdir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _transpec(
        tmp_path,
        "check",
        "cli_hostile_fixtures:ChangesDirectory",
        *SOFTMAX,
        *REPORTS,
        HOSTILE_CHDIR=str(elsewhere),
    )
    assert proc.returncode == 0, proc.stderr
    _reports(tmp_path)
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_termination_keeps_the_verdicts_so_far(tmp_path: Path, name: str, status: int) -> None:
    if not hasattr(signal, name):
        pytest.skip(f"no {name} here")
    argv = ["check", "cli_hostile_fixtures:Terminated", "--component", "softmax"]
    # the fixture signals its own process: the run's only without a worker (a run with one:
    # test_cli_isolation.py)
    argv += ["--max-examples", "4", *REPORTS, "--isolation", "none"]
    proc = _transpec(tmp_path, *argv, HOSTILE_SIGNAL=name)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"transpec: stopped by {name}" in proc.stderr
    assert "INTERRUPTED" in proc.stdout
    data, junit = _reports(tmp_path)
    assert data["interrupted"] is True
    assert 1 <= len(data["verdicts"]) < 5
    assert all(v["status"] == "passed" for v in data["verdicts"])
    assert junit.find("properties/property[@name='interrupted']").get("value") == "true"  # type: ignore[union-attr]


def test_what_the_implementation_prints_goes_to_stderr(tmp_path: Path) -> None:
    proc = _transpec(tmp_path, "check", "cli_hostile_fixtures:Chatty", *SOFTMAX, *REPORTS)
    assert proc.returncode == 0, proc.stderr
    assert "CHATTER" not in proc.stdout
    assert "CHATTER FROM PRINT" in proc.stderr and "CHATTER FROM FD" in proc.stderr
    assert proc.stdout.startswith("transpec conformance run")
    assert "softmax" in proc.stdout and "0 failed" in proc.stdout
    _reports(tmp_path)


@pytest.mark.parametrize("option", ["--dtype", "--component", "--device", "--property"])
def test_an_empty_selection_is_a_usage_error(tmp_path: Path, option: str) -> None:
    _one_error(_transpec(tmp_path, "check", "numpy", option, ""), option, "at least one name")
    _one_error(_transpec(tmp_path, "check", "numpy", option, " , "), option)


# -- 3. safe case files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A case saved by a wrong attention (a user module, not a built-in adapter)."""
    root = tmp_path_factory.mktemp("case")
    argv = ["check", "cli_fixtures:WrongScaleAttention", "--component", "attention"]
    argv += ["--property", "equivalence", "--dtype", "float32", "--max-examples", "4", "-q"]
    proc = _transpec(root, *argv)
    assert proc.returncode == 1, proc.stderr
    (path,) = (root / "transpec-failures").glob("*.npz")
    assert "--trust" in proc.stdout  # the printed command says how to replay it
    return path


def _rewrite(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of ``source`` with metadata fields changed (``None`` removes the field)."""
    with np.load(source, allow_pickle=False) as data:
        entries = {k: np.array(data[k]) for k in data.files}
    meta = json.loads(str(entries["__transpec__"]))
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    entries["__transpec__"] = np.array(json.dumps(meta))
    np.savez(target, **entries)
    return target


def test_a_case_file_never_imports_what_it_names_without_trust(
    tmp_path: Path, saved_case: Path
) -> None:
    # a module that would run on import: it must not
    (tmp_path / "evil_module.py").write_text(
        "import pathlib\npathlib.Path('PWNED').write_text('ran')\nclass Evil: pass\n"
    )
    evil = _rewrite(saved_case, tmp_path / "evil.npz", adapter="evil_module:Evil")
    _one_error(_transpec(tmp_path, "reproduce", str(evil)), "'evil_module'", "--trust", "--adapter")
    assert not (tmp_path / "PWNED").exists()
    function = _rewrite(
        saved_case, tmp_path / "function.npz", adapter="numpy", adapter_kind="function",
        base="evil_module:Evil",
    )  # fmt: skip
    _one_error(_transpec(tmp_path, "reproduce", str(function)), "'evil_module'")
    assert not (tmp_path / "PWNED").exists()
    # the user's own file: --trust imports it and it still fails; --adapter names another one
    still = _transpec(tmp_path, "reproduce", str(saved_case), "--trust")
    assert still.returncode == 1, still.stderr
    assert "FAILED attention.equivalence[float32-cpu]" in still.stdout
    assert _transpec(tmp_path, "reproduce", str(saved_case), "--adapter", "numpy").returncode == 0
    # a built-in adapter named in the file needs no trust
    builtin = _rewrite(saved_case, tmp_path / "builtin.npz", adapter="numpy")
    assert _transpec(tmp_path, "reproduce", str(builtin)).returncode == 0


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"component": None}, "metadata field 'component' is missing"),
        ({"dtype": 32}, "metadata field 'dtype' must be a string"),
        ({"args": []}, "metadata field 'args' must be an object"),
        ({"order": [1, 2]}, "metadata field 'order' must be a list of strings"),
        ({"flaky": "yes"}, "metadata field 'flaky' must be true or false"),
        ({"seed": True}, "metadata field 'seed' must be an integer or null"),
        ({"exec": "rm -rf /"}, "unknown metadata field 'exec'"),
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"device": "cpu; rm"}, "not a device name"),
        ({"format": "other"}, "unsupported case file format"),
        ({"args": {"scale": {"tuple": 5}}}, "metadata field 'args'"),
    ],
)
def test_every_metadata_field_is_validated(
    tmp_path: Path, saved_case: Path, changes: dict[str, Any], needle: str
) -> None:
    bad = _rewrite(saved_case, tmp_path / "bad.npz", **changes)
    _one_error(
        _transpec(tmp_path, "reproduce", str(bad), "--trust"), "cannot read case file: ", needle
    )


def test_metadata_that_is_not_an_object_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "list.npz"
    np.savez(path, __transpec__=np.array("[1, 2, 3]"))
    _one_error(_transpec(tmp_path, "reproduce", str(path)), "cannot read case file: ", "object")


def _npy_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], nbytes: int) -> None:
    from numpy.lib import format as npy

    with archive.open(name, "w", force_zip64=True) as member:
        npy.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": shape})
        chunk = bytes(32 * 2**20)
        while nbytes:
            n = min(nbytes, len(chunk))
            member.write(chunk[:n])
            nbytes -= n


def test_a_zip_bomb_is_refused_before_it_is_decompressed(tmp_path: Path) -> None:
    """2.4 MB on disk, 2.5 GB of zeros inside: refused from the archive's directory."""
    bomb = tmp_path / "bomb.npz"
    n = 2_500_000_000 // 8
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("__transpec__.npy", b"")
        _npy_member(archive, "arg_q.npy", (n,), n * 8)
    assert bomb.stat().st_size < 3_000_000
    start = time.perf_counter()
    proc = _transpec(tmp_path, "reproduce", str(bomb))
    _one_error(proc, "cannot read case file: ", "arg_q.npy", "expands to", "MiB")
    assert time.perf_counter() - start < 60


def test_an_array_header_larger_than_its_member_is_refused(tmp_path: Path) -> None:
    """A small member whose header claims 8 TB: NumPy would allocate that before reading."""
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as archive:
        _npy_member(archive, "arg_q.npy", (10**12,), 64)
    _one_error(
        _transpec(tmp_path, "reproduce", str(liar)), "cannot read case file: ", "declares an array"
    )


def test_a_nondeterministic_failure_is_marked_in_the_file_and_the_replay(tmp_path: Path) -> None:
    argv = ["check", "cli_fixtures:FlakySoftmax", "--component", "softmax"]
    argv += ["--property", "equivalence", "--dtype", "float32", "--max-examples", "10", "-q"]
    proc = _transpec(tmp_path, *argv)
    assert proc.returncode == 1, proc.stderr
    (path,) = (tmp_path / "transpec-failures").glob("*.npz")
    with np.load(path, allow_pickle=False) as data:
        assert json.loads(str(data["__transpec__"]))["flaky"] is True
    replay = _transpec(tmp_path, "reproduce", str(path), "--trust")
    assert replay.returncode in (0, 1), replay.stderr
    assert "nondeterministic" in replay.stdout
    assert "does not show the implementation is fixed" in replay.stdout
