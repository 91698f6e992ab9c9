"""Implementations that take their process down with them, for the process-isolation tests:
a segfault, ``os._exit(0)`` in the middle of a run, a hang in C code that holds the GIL, a
pure-Python endless loop, and an allocation without end.

Each is correct NumPy except in ``layer_norm``, so that a run over ``softmax``, ``layer_norm``
and ``rms_norm`` shows the layer_norm verdicts failing between softmax's and rms_norm's, which
are still made (rms_norm's after the worker died).
Loaded as ``cli_isolation_fixtures:NAME`` (on ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from transpec.adapters.numpy.adapter import NumpyAdapter

#: what the endless allocation holds on to (a module global: it survives the call)
HOARD: list[np.ndarray] = []


class _Hostile(NumpyAdapter):
    dtypes = ("float32",)
    call_timeout = 2.0


def _wide(x: Any) -> bool:
    """The trigger of the crashing kernels: a last axis of 3 or more (small examples pass, so
    the failure comes in the middle of a property; the same input fails again on replay)."""
    return int(np.shape(x)[-1]) >= 3


class Segfault(_Hostile):
    """Reads address 0 from C on a wide input: SIGSEGV."""

    name = "segfault"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if _wide(x):
            ctypes.string_at(0)
        return super().layer_norm(x, *args, **kwargs)


class ExitsQuietly(_Hostile):
    """``os._exit(0)`` on a wide input: the process ends with status 0, no exception, no
    cleanup."""

    name = "exits"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if _wide(x):
            os._exit(0)
        return super().layer_norm(x, *args, **kwargs)


class HangsHoldingTheGil(_Hostile):
    """Calls libc's ``sleep(600)`` through ``ctypes.PyDLL``, which keeps the GIL during the
    call: no other thread of the process runs, no signal handler either, until it returns."""

    name = "gil-hang"
    call_timeout = 1.0

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        ctypes.PyDLL(None).sleep(600)
        return super().layer_norm(x, *args, **kwargs)


class Spins(_Hostile):
    """An endless pure-Python loop (in-process, its thread would spin on after the time-out)."""

    name = "spins"
    call_timeout = 1.0

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        while True:
            pass


class Hoards(_Hostile):
    """Allocates 64 MiB blocks, touched, without end, and keeps them (a time limit long
    enough for the memory limit to be reached first, on a loaded machine too)."""

    name = "hoards"
    call_timeout = 120.0

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        while True:
            block = np.empty(2**23)
            block.fill(1.0)
            HOARD.append(block)


class TerminatesTheRun(_Hostile):
    """Correct, but its tenth softmax call sends the signal named by ``HOSTILE_SIGNAL`` to the
    process that started it -- in a worker process, the run: a CI runner stopping the job while
    a call is in flight."""

    name = "terminates-the-run"
    calls = 0

    def softmax(self, x: Any, dim: int = -1) -> Any:
        type(self).calls += 1
        if type(self).calls == 10:
            os.kill(os.getppid(), getattr(signal, os.environ.get("HOSTILE_SIGNAL", "SIGTERM")))
            time.sleep(30.0)
        return super().softmax(x, dim)


class ForksThenSegfaults(_Hostile):
    """On a wide input, forks a child that sleeps on (holding every descriptor of the worker,
    the pipe to the run included), then segfaults."""

    name = "forks-then-segfaults"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if _wide(x):
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            ctypes.string_at(0)
        return super().layer_norm(x, *args, **kwargs)


class ExitsLater(_Hostile):
    """Correct, but every call leaves a thread behind that ends the process a moment after the
    call returned."""

    name = "exits-later"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        def later() -> None:
            time.sleep(0.05)
            os._exit(3)

        threading.Thread(target=later, daemon=True).start()
        return super().layer_norm(x, *args, **kwargs)


class SegfaultingBackward(_Hostile):
    """A correct forward pass; a backward pass that reads address 0 from C on a wide input."""

    name = "segfaulting-backward"

    def softmax_vjp(self, grad_output: Any, x: Any, dim: int = -1) -> Any:
        if _wide(x):
            ctypes.string_at(0)
        return super().softmax_vjp(grad_output, x, dim)


class SlowSoftmax(_Hostile):
    """Sleeps 0.3 s in every softmax call, then answers correctly: a time limit of 0.2 s must
    find it hung however late the run reads its answer."""

    name = "slow-softmax"

    def softmax(self, x: Any, dim: int) -> Any:
        time.sleep(0.3)
        return super().softmax(x, dim)


class TruncatingSoftmax(_Hostile):
    """Converts float inputs to float32 by truncation (towards zero), not to nearest: what it
    reports it was sent is not what the run expects, so it must be judged on its report."""

    name = "truncating-softmax"

    def to_native(self, array: np.ndarray, dtype: str, device: str) -> Any:
        if array.dtype == np.bool_:
            return super().to_native(array, dtype, device)
        nearest = np.asarray(array, dtype=np.float32)
        overshoot = np.abs(nearest.astype(np.float64)) > np.abs(array)
        return np.where(overshoot, np.nextafter(nearest, np.float32(0)), nearest)
