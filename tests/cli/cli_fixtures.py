"""Implementations for the CLI tests: one deliberately wrong attention, and broken softmaxes.

Loaded by the tests as ``cli_fixtures:NAME`` (the tests put this directory on ``sys.path``, or
on ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

from transpec.adapters.numpy.adapter import NumpyAdapter


class NumpyWithoutBfloat16(NumpyAdapter):
    """The NumPy adapter declaring float64, float32 and float16 only: a requested bfloat16
    runs nothing."""

    dtypes = ("float64", "float32", "float16")


class WrongScaleAttention(NumpyAdapter):
    """Attention that always scales by 1/d: the wrong default (1/sqrt(d) is right) and a given
    ``scale`` ignored -- two classic bugs; masking, causality and the rest are right."""

    name = "wrong-scale"
    dtypes = ("float64", "float32", "float16")  # bfloat16 undeclared: its verdicts are skips

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        scale = 1.0 / q.shape[-1]
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )


def wrong_softmax(x: Any, dim: int = -1) -> Any:
    """softmax without the max subtraction and with the sum over the wrong rows: wrong."""
    e = np.exp(x)
    return (e / (e.sum(axis=dim, keepdims=True) + 1.0)).astype(x.dtype)


def right_softmax(x: Any, dim: int = -1) -> Any:
    """A correct softmax (for the function-adapter tests)."""
    return NumpyAdapter().softmax(x, dim)


class _Broken(NumpyAdapter):
    """Softmax that is broken in some way; attention and the norms stay correct."""

    dtypes = ("float32",)
    call_timeout = 0.5


class RaisesSoftmax(_Broken):
    name = "raises"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        raise RuntimeError("kernel exploded")


class HangsSoftmax(_Broken):
    name = "hangs"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        time.sleep(3.0)
        return super().softmax(x, dim)


class WrongShapeSoftmax(_Broken):
    name = "wrong-shape"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim)[..., None]


class WrongDtypeSoftmax(_Broken):
    name = "wrong-dtype"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim).astype(np.float64)


class NotArraySoftmax(_Broken):
    name = "not-array"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim).tolist()


class NaNSoftmax(_Broken):
    name = "nan"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return np.full_like(super().softmax(x, dim), np.nan)


class FlakySoftmax(_Broken):
    """Right twice, then wrong (doubled) on every third call: a nondeterministic kernel."""

    name = "flaky"
    calls = 0

    def softmax(self, x: Any, dim: int = -1) -> Any:
        type(self).calls += 1
        out = super().softmax(x, dim)
        return out * 2 if type(self).calls % 3 == 0 else out


class InterruptedSoftmax(_Broken):
    """Correct, but the twelfth call sends SIGINT to the process (a user pressing Ctrl-C)."""

    name = "interrupted"
    calls = 0

    def softmax(self, x: Any, dim: int = -1) -> Any:
        type(self).calls += 1
        if type(self).calls == 12:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
        return super().softmax(x, dim)


NOT_AN_ADAPTER = 42
