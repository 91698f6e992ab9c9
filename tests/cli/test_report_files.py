"""Every report file (JSON, JUnit, HTML) and every saved case is written atomically: a write
that fails half-way (disk full, Ctrl-C, an exception), a rename that fails, or a process killed
while it writes leaves the previous report whole and no temporary file beside it (a killed
process: the temporary file only, never a truncated report); a symbolic link is written through,
and an existing file keeps its permissions."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from transpec import htmlreport
from transpec import reports as report
from transpec.oracle.engine.profiles import resolve
from transpec.runs import RunResult, Verdict

WRITERS: dict[str, Callable[[RunResult, str | Path], None]] = {
    "json": report.write_json,
    "junit": report.write_junit,
    "html": htmlreport.write_html,
}


def _result(message: str = "out of tolerance") -> RunResult:
    result = RunResult(
        adapter="demo",
        adapter_spec=None,
        conventions={},
        profile=resolve("ci"),
        components=("softmax",),
        dtypes=("float32",),
        devices=("cpu",),
    )
    result.verdicts = [
        Verdict("softmax", "equivalence", "float32", "cpu", "failed", ratio=3.0, message=message),
        Verdict("softmax", "shape_dtype", "float32", "cpu", "passed", ratio=0.0, examples=4),
    ]
    return result


def _complete(kind: str, text: str) -> bool:
    """Whether ``text`` is a whole report of its kind (a truncated one is not)."""
    if kind == "json":
        return isinstance(json.loads(text), dict)
    if kind == "junit":
        return ET.fromstring(text.encode()).tag == "testsuite"
    return text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def _leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != name)


class _FailingFile:
    """A file object that writes the first half of what it is given, then raises ``error``."""

    def __init__(self, real: Any, error: BaseException) -> None:
        self.real, self.error = real, error

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise self.error

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_report_is_written_whole_with_nothing_beside_it(kind: str, tmp_path: Path) -> None:
    target = tmp_path / f"r.{kind}"
    WRITERS[kind](_result(), target)
    assert _complete(kind, target.read_text())
    assert _leftovers(tmp_path, target.name) == []
    assert target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(), RuntimeError("x")],
    ids=["disk-full", "ctrl-c", "exception"],
)
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_write_failing_half_way_leaves_the_previous_report_whole(
    kind: str, error: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / f"r.{kind}"
    WRITERS[kind](_result("the previous run"), target)
    before = target.read_text()
    real_fdopen = os.fdopen
    halves: list[int] = []

    def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> _FailingFile:
        halves.append(fd)
        return _FailingFile(real_fdopen(fd, *args, **kwargs), error)

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(type(error)):
        WRITERS[kind](_result("the new run " * 50), target)
    assert halves, "the failure was injected into the write"
    assert target.read_text() == before and _complete(kind, before)
    assert _leftovers(tmp_path, target.name) == []


def test_a_case_file_failing_half_way_leaves_no_truncated_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.oracle.catalogue import select
    from transpec.runs import Case, load_case, save_case

    prop = select(components=["softmax"], names=["equivalence"])[0]

    def save() -> Path:
        return save_case(
            tmp_path,
            adapter=NumpyAdapter(),
            adapter_spec="numpy",
            case=Case(prop, "float64", "cpu", None),
            args={"x": np.arange(4096.0).reshape(64, 64), "dim": -1},
            profile=resolve("ci"),
            verdict=Verdict("softmax", "equivalence", "float64", "cpu", "failed"),
        )

    real_fdopen = os.fdopen

    def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> _FailingFile:
        return _FailingFile(real_fdopen(fd, *args, **kwargs), KeyboardInterrupt())

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(KeyboardInterrupt):
        save()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    _, args = load_case(save())
    assert np.array_equal(args["x"], np.arange(4096.0).reshape(64, 64))
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_rename_that_fails_leaves_the_previous_report(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / f"r.{kind}"
    target.write_text("previous")

    def refuse(*args: Any) -> None:
        raise OSError(errno.EXDEV, "refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        WRITERS[kind](_result(), target)
    assert target.read_text() == "previous"
    assert _leftovers(tmp_path, target.name) == []


def test_a_symbolic_link_is_written_through_and_permissions_are_kept(tmp_path: Path) -> None:
    real = tmp_path / "reports" / "r.json"
    real.parent.mkdir()
    real.write_text("{}")
    real.chmod(0o600)
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    report.write_json(_result(), link)
    assert link.is_symlink() and _complete("json", real.read_text())
    assert real.stat().st_mode & 0o777 == 0o600


#: a child that writes a report whose write stops half-way until it is killed
_KILLED_MID_WRITE = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from test_report_files import WRITERS, _result
real_fdopen = os.fdopen
class Stuck:
    def __init__(self, real):
        self.real = real
    def write(self, text):
        self.real.write(text[: len(text) // 2])
        self.real.flush()
        print("half written", flush=True)
        time.sleep(120)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.real.close()
    def __getattr__(self, name):
        return getattr(self.real, name)
os.fdopen = lambda fd, *a, **k: Stuck(real_fdopen(fd, *a, **k))
WRITERS[{kind!r}](_result("the new run " * 200), Path({target!r}))
"""


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_process_killed_while_it_writes_leaves_the_previous_report_whole(
    kind: str, tmp_path: Path
) -> None:
    target = tmp_path / f"r.{kind}"
    WRITERS[kind](_result("the previous run"), target)
    before = target.read_text()
    code = _KILLED_MID_WRITE.format(here=str(Path(__file__).parent), kind=kind, target=str(target))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "half written\n", line + (child.stderr.read() if child.stderr else "")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert target.read_text() == before and _complete(kind, before)
    temporary = _leftovers(tmp_path, target.name)  # the half-written temporary file, only
    assert len(temporary) == 1 and temporary[0].startswith(f".{target.name}.")


def test_a_report_in_a_directory_that_takes_no_new_file_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file itself may be writable, but an atomic write needs a temporary file beside it:
    refused with one line before anything runs, not lost at the end of the run."""
    from transpec.cli import main

    target = tmp_path / "r.json"
    target.write_text("{}")
    real_access = os.access

    def access(path: Any, mode: int) -> bool:
        return False if Path(path) == tmp_path else real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    assert main(["check", "numpy", "--component", "softmax", "--json", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"transpec: error: cannot write the --json report {str(target)!r}: directory "
        f"{str(tmp_path)!r} is not writable"
    )
    assert target.read_text() == "{}"
