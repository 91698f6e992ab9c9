"""Hostile implementations for the gate's tests: misnamed methods, a device it declares but
cannot have, chatter on stdout, a change of directory, messages XML cannot carry, and a kernel
that gets the process terminated.

Loaded by the tests as ``cli_hostile_fixtures:NAME`` (on ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from transpec.adapters.base import Adapter
from transpec.adapters.numpy.adapter import NumpyAdapter


class Misnamed(Adapter):
    """Two methods whose names miss their component's method: nothing is ever called."""

    name = "misnamed"

    def layernorm(self, x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
                  eps: float = 1e-5) -> Any:  # fmt: skip
        return x

    def scaled_dot_product(self, q: Any, k: Any, v: Any, attn_mask: Any = None,
                           is_causal: bool = False, scale: Any = None,
                           enable_gqa: bool = False) -> Any:  # fmt: skip
        return q


class DeclaresCuda(NumpyAdapter):
    """Declares cuda (as the torch adapter does) on a machine where it is not available."""

    name = "declares-cuda"
    devices = ("cpu", "cuda")

    def available_devices(self) -> tuple[str, ...]:
        return ("cpu",)


class Chatty(NumpyAdapter):
    """Correct, but prints on every call, through Python and straight to descriptor 1."""

    name = "chatty"
    dtypes = ("float32",)

    def softmax(self, x: Any, dim: int = -1) -> Any:
        print("CHATTER FROM PRINT")
        sys.stdout.flush()
        os.write(1, b"CHATTER FROM FD\n")
        return super().softmax(x, dim)


class ChangesDirectory(NumpyAdapter):
    """Correct, but moves the process to another directory on its first call."""

    name = "chdir"
    dtypes = ("float32",)

    def softmax(self, x: Any, dim: int = -1) -> Any:
        os.chdir(os.environ.get("HOSTILE_CHDIR", "/"))
        return super().softmax(x, dim)


class Unprintable(NumpyAdapter):
    """Raises with a message full of what XML 1.0 forbids: ANSI colours, NUL, controls, a lone
    surrogate, U+FFFE."""

    name = "unprintable"
    dtypes = ("float32",)

    def softmax(self, x: Any, dim: int = -1) -> Any:
        raise RuntimeError("\x1b[31mkernel\x1b[0m \x00exploded\x07 \x0b\ud800\ufffe <&> done")


class Terminated(NumpyAdapter):
    """Correct, but the twelfth call sends the signal named by ``HOSTILE_SIGNAL`` (SIGTERM by
    default) to its own process: a CI runner stopping the job."""

    name = "terminated"
    dtypes = ("float32",)
    calls = 0

    def softmax(self, x: Any, dim: int = -1) -> Any:
        type(self).calls += 1
        if type(self).calls == 12:
            os.kill(os.getpid(), getattr(signal, os.environ.get("HOSTILE_SIGNAL", "SIGTERM")))
            time.sleep(1.0)
        return super().softmax(x, dim)
