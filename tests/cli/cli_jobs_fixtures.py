"""Implementations for the tests of a run judged in several job processes (``--jobs``).

Loaded as ``cli_jobs_fixtures:NAME`` (on ``PYTHONPATH`` for subprocesses). Each is correct
NumPy; what it does besides is aimed at the process that called it (its worker's parent: a job
process under ``--jobs N``). The environment variable ``JOBS_MARKER`` names a file each writes
once, so that a test knows when the moment came and which processes were involved.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from transpec.adapters.numpy.adapter import NumpyAdapter


def _first_time() -> bool:
    """True once across every process of the run: the marker is created atomically."""
    try:
        fd = os.open(os.environ["JOBS_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()} {os.getppid()}\n".encode())
    os.close(fd)
    return True


class KillsItsJob(NumpyAdapter):
    """Its first layer_norm call, in the whole run, kills the process that called it with
    SIGKILL (a job that ends abruptly: killed from outside, or by the kernel's OOM killer)."""

    name = "kills-its-job"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if _first_time():
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(30.0)  # (dies with its job)
        return super().layer_norm(x, *args, **kwargs)


class SleepsInACall(NumpyAdapter):
    """Its tenth layer_norm call (in one worker) writes the marker and sleeps: a run stopped
    then has a call in flight in a job."""

    name = "sleeps-in-a-call"
    calls = 0

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == 10 and _first_time():
            time.sleep(60.0)
        return super().layer_norm(x, *args, **kwargs)
