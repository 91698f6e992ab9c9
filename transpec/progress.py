"""Progress of a run on stderr: examples done, verdicts done, elapsed, estimated remaining.

A slow implementation (eager JAX took 9 minutes for softmax and over 40 for attention in four
dtypes) leaves a run silent for minutes, ``--quiet`` entirely. ``transpec check`` arms a
:class:`Progress` for its run (:func:`enable`); :func:`transpec.runs.run` reports to it
through four calls: :func:`begin` and :func:`end` around the cases, :func:`example_done` for
every example and :func:`verdict_done` for every verdict. On a terminal it draws one line that
it redraws at most ten times a second and clears before each verdict is printed::

    [#######.............]  14/40 verdicts  1,273 examples  1m05s elapsed  ~2m01s left

Elsewhere (CI logs, a pipe) it writes that line once a minute. A run of the library (``run``
called from Python, the pytest plugin) reports nothing unless armed.

The estimate counts every case still to run as ``max_examples`` examples (a property that fails
early takes fewer) and extrapolates the time per example so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class Stream(Protocol):
    """Where progress is written: a text stream (``isatty`` is read when it has one, or its
    wrapped ``.stream`` has)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` (or the stream it wraps, ``.stream``) is a terminal."""
    for candidate in (stream, getattr(stream, "stream", None)):
        isatty = getattr(candidate, "isatty", None)
        if callable(isatty):
            try:
                return bool(isatty())
            except (OSError, ValueError):
                return False
    return False


#: seconds between two lines when the stream is not a terminal
LINE_INTERVAL = 60.0
#: seconds between two redraws of the bar on a terminal
REDRAW_INTERVAL = 0.1
#: width of the bar in characters
BAR_WIDTH = 20


def duration(seconds: float) -> str:
    """``65.3`` -> ``"1m05s"``, ``3725`` -> ``"1h02m"``, ``9.4`` -> ``"9s"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The progress of one run of ``cases`` verdicts of at most ``max_examples`` examples
    each, written to ``stream`` (a bar on a terminal, a line a minute otherwise)."""

    def __init__(
        self,
        cases: int,
        max_examples: int,
        stream: Stream,
        *,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cases = max(0, int(cases))
        self.max_examples = max(1, int(max_examples))
        self.stream = stream
        self.terminal = is_terminal(stream) if terminal is None else terminal
        self.clock = clock
        self.started = clock()
        self.verdicts = 0
        self.examples = 0
        self.examples_in_case = 0
        self._last_write = self.started
        self._drawn = False

    # -- events ----------------------------------------------------------------------------

    def example(self) -> None:
        """One example of the current case was run."""
        self.examples += 1
        self.examples_in_case += 1
        self._maybe_write()

    def verdict(self, examples: int = 0) -> None:
        """A verdict was made (the next case starts); ``examples``: those of its examples not
        reported one by one (a verdict made in another process). The bar is cleared so that
        the verdict's own line is printed on a clean line."""
        self.verdicts += 1
        self.examples += max(0, examples)
        self.examples_in_case = 0
        self.clear()
        self._maybe_write()

    def close(self) -> None:
        """The run ended: the bar is cleared (the run's summary follows)."""
        self.clear()

    # -- what it shows ---------------------------------------------------------------------

    def fraction(self) -> float:
        """The fraction of the run done, counting a case as ``max_examples`` examples."""
        if self.cases == 0:
            return 1.0
        current = min(self.examples_in_case, self.max_examples) / self.max_examples
        return min(1.0, (self.verdicts + current) / self.cases)

    def remaining(self) -> float | None:
        """Seconds left at the pace so far, None before anything was done."""
        done = self.fraction()
        if done <= 0.0:
            return None
        return (self.clock() - self.started) * (1.0 - done) / done

    def line(self) -> str:
        """``[####....]  14/40 verdicts  1,273 examples  1m05s elapsed  ~2m01s left``."""
        filled = int(self.fraction() * BAR_WIDTH)
        left = self.remaining()
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]  {self.verdicts}/{self.cases} "
            f"verdicts  {self.examples:,} examples  "
            f"{duration(self.clock() - self.started)} elapsed  "
            + (f"~{duration(left)} left" if left is not None else "estimating")
        )

    # -- writing ---------------------------------------------------------------------------

    def clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def _maybe_write(self) -> None:
        now = self.clock()
        if self.terminal:
            if now - self._last_write >= REDRAW_INTERVAL or not self._drawn:
                self._write("\r\x1b[K" + self.line())
                self._drawn = True
                self._last_write = now
        elif now - self._last_write >= LINE_INTERVAL:
            self._write("transpec: progress: " + self.line() + "\n")
            self._last_write = now

    def _write(self, text: str) -> None:
        # progress must never end a run: a closed or broken stream silences it
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.terminal = False
            self._drawn = False
            self._last_write = float("inf")


_armed: Stream | None = None
_current: Progress | None = None


def enable(stream: Stream) -> None:
    """Report the progress of the next :func:`transpec.runs.run` in this process to
    ``stream`` (``transpec check`` arms it with its stderr)."""
    global _armed
    _armed = stream


def begin(cases: int, max_examples: int) -> Progress | None:
    """Start reporting a run of ``cases`` verdicts if :func:`enable` armed it (the arming is
    used up); the :class:`Progress`, or None when not armed."""
    global _armed, _current
    stream, _armed = _armed, None
    _current = None if stream is None else Progress(cases, max_examples, stream)
    return _current


def end() -> None:
    """Stop reporting: the bar is cleared."""
    global _current
    if _current is not None:
        _current.close()
    _current = None


def example_done() -> None:
    """One example was run (a no-op when nothing reports)."""
    if _current is not None:
        _current.example()


def verdict_done(examples: int = 0) -> None:
    """A verdict was made (a no-op when nothing reports); ``examples``: those of its examples
    that were not reported by :func:`example_done` (it was made in another process)."""
    if _current is not None:
        _current.verdict(examples)
