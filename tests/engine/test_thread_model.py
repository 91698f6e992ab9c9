"""The thread model: every call in a new thread by default; ``dedicated_thread = True`` runs
every call of an adapter in one worker thread, and a hang still times out."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import ImplementationFailure


class ThreadRecording(NumpyAdapter):
    dtypes = ("float32",)
    call_timeout = 0.5

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def softmax(self, x: Any, dim: int = -1) -> Any:
        self.threads.append(threading.current_thread())
        if x.shape[-1] == 3:
            time.sleep(2.0)
        return super().softmax(x, dim)


class ThreadBound(ThreadRecording):
    dedicated_thread = True


def _call(harness: Harness, n: int) -> None:
    harness.call("softmax", {"x": np.linspace(0.0, 1.0, n), "dim": -1})


def test_default_calls_run_each_in_a_new_thread() -> None:
    adapter = ThreadRecording()
    harness = Harness(adapter, "float32")
    for _ in range(3):
        _call(harness, 4)
    assert len({id(t) for t in adapter.threads}) == 3
    assert threading.current_thread() not in adapter.threads


def test_a_dedicated_thread_runs_every_call_and_a_hang_still_times_out() -> None:
    adapter = ThreadBound()
    harness = Harness(adapter, "float32")
    for _ in range(3):
        _call(harness, 4)
    assert len({id(t) for t in adapter.threads}) == 1
    assert threading.current_thread() not in adapter.threads
    with pytest.raises(ImplementationFailure) as hung:
        _call(harness, 3)
    assert hung.value.kind == "hung"
    _call(harness, 4)  # a new worker: the stuck one still sleeps
    assert len({id(t) for t in adapter.threads}) == 2
