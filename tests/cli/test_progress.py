"""Progress on stderr: a bar on a terminal, a line a minute otherwise, nothing unless armed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from transpec import progress
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.cli import main
from transpec.runs import run


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (9.4, "9s"), (65.3, "1m05s"), (3725, "1h02m"), (-3, "0s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert progress.duration(seconds) == text


def test_terminal_bar_counts_and_estimates() -> None:
    clock, out = Clock(), Terminal()
    bar = progress.Progress(4, 10, out, clock=clock)
    assert bar.terminal and bar.remaining() is None
    for _ in range(10):
        clock.now += 1.0
        bar.example()
    bar.verdict()  # one case of four done in 10 s
    clock.now += 1.0
    bar.example()  # redrawn: the verdict cleared the line
    assert bar.fraction() == pytest.approx(1.1 / 4)
    assert bar.remaining() == pytest.approx(11.0 * (1 - 1.1 / 4) / (1.1 / 4))
    text = out.getvalue()
    assert "\r\x1b[K[#####" in text and "1/4 verdicts  11 examples  11s elapsed  ~29s left" in text
    before = out.getvalue()
    bar.close()
    assert out.getvalue() == before + "\r\x1b[K"  # the bar is cleared at the end


def test_a_bar_is_redrawn_at_most_ten_times_a_second() -> None:
    clock, out = Clock(), Terminal()
    bar = progress.Progress(1, 1000, out, clock=clock)
    for _ in range(500):
        clock.now += 0.001
        bar.example()
    assert out.getvalue().count("\r\x1b[K[") <= 6


def test_elsewhere_a_line_a_minute() -> None:
    clock, out = Clock(), io.StringIO()
    bar = progress.Progress(2, 5, out, clock=clock)
    assert not bar.terminal
    clock.now += 59.0
    bar.example()
    assert out.getvalue() == ""
    clock.now += 1.0
    bar.example()
    bar.verdict()
    assert out.getvalue() == (
        "transpec: progress: [####................]  0/2 verdicts  2 examples  1m00s elapsed  "
        "~4m00s left\n"
    )
    bar.close()
    assert "\r" not in out.getvalue()


def test_a_broken_stream_silences_progress_not_the_run() -> None:
    class Broken(Terminal):
        def write(self, text: str) -> int:
            raise OSError("gone")

    bar = progress.Progress(1, 1, Broken())
    bar.example()
    bar.verdict()
    bar.close()


def test_a_run_reports_only_when_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    out = io.StringIO()
    kwargs = {"components": ["softmax"], "properties": ["equivalence"], "dtypes": ["float32"]}
    result = run(NumpyAdapter(), failures_dir=None, max_examples=5, **kwargs)  # not armed
    progress.enable(out)
    armed = run(NumpyAdapter(), failures_dir=None, max_examples=5, **kwargs)
    lines = out.getvalue().splitlines()
    examples = sum(v.examples for v in armed.verdicts)
    assert result.verdicts and examples > 0
    assert lines[-1].startswith("transpec: progress: [####################]  1/1 verdicts")
    assert f"  {examples} examples" in lines[-1]
    assert len(lines) == examples + 1  # one line per example and one for the verdict
    assert progress.begin(1, 1) is None  # the arming was used up


def test_check_shows_progress_even_when_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    argv = ["check", "numpy", "--component", "softmax", "--dtype", "float32", "--quiet"]
    assert main([*argv, "--max-examples", "3", "--failures-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "transpec: progress: " in err and "verdicts" in err and "left" in err
