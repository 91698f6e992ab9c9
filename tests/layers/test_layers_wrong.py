"""Every layer property rejects a deliberately wrong implementation (each a NumPy adapter with one
bug), and the NumPy layers themselves are accepted."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

Rejects = Callable[..., BaseException]


def _mha(
    q_in: np.ndarray,
    kv_in: np.ndarray,
    v_in: np.ndarray,
    params: Mapping[str, Any],
    heads: int,
    mask: np.ndarray | None,
    *,
    interleaved: bool = False,
    scaled: bool = True,
) -> np.ndarray:
    """Multi-head attention with an optional bug: heads taking columns h::H (a wrong split
    order, merged back the same way) or no 1/sqrt(d) scale."""
    b, lq, e = q_in.shape
    dh = e // heads
    if params.get("in_proj_weight") is not None:
        ws = [params["in_proj_weight"][i * e : (i + 1) * e] for i in range(3)]
    else:
        ws = [params[f"{n}_proj_weight"] for n in "qkv"]
    bias = params["in_proj_bias"]

    def split(y: np.ndarray) -> np.ndarray:
        if interleaved:
            return y.reshape(y.shape[0], y.shape[1], dh, heads).transpose(0, 3, 1, 2)
        return y.reshape(y.shape[0], y.shape[1], heads, dh).transpose(0, 2, 1, 3)

    q, k, v = (
        split(x @ ws[i].T + bias[i * e : (i + 1) * e]) for i, x in enumerate((q_in, kv_in, v_in))
    )
    s = q @ k.transpose(0, 1, 3, 2)
    if scaled:
        s = s / math.sqrt(dh)
    if mask is not None:
        s = s + mask
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - m)
        p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    o = p @ v  # (B, H, L, dh)
    o = o.transpose(0, 2, 3, 1) if interleaved else o.transpose(0, 2, 1, 3)
    o = o.reshape(b, lq, e)
    return o @ params["out_proj.weight"].T + params["out_proj.bias"]


class WrongHeadSplit(NumpyAdapter):
    name = "wrong-head-split"
    dtypes = ("float64",)

    def _mha(self, q_in: Any, kv_in: Any, v_in: Any, params: Any, heads: int, mask: Any) -> Any:
        return _mha(q_in, kv_in, v_in, params, heads, mask, interleaved=True)


class NoScale(NumpyAdapter):
    name = "no-scale"
    dtypes = ("float64", "float32")

    def _mha(self, q_in: Any, kv_in: Any, v_in: Any, params: Any, heads: int, mask: Any) -> Any:
        return _mha(q_in, kv_in, v_in, params, heads, mask, scaled=False)


class AlwaysPostLN(NumpyAdapter):
    name = "always-post-ln"
    dtypes = ("float64", "float32")

    def _sublayer(self, x: Any, f: Any, params: Any, norm: str, eps: float, nf: bool) -> Any:
        return super()._sublayer(x, f, params, norm, eps, False)


class TanhGelu(NumpyAdapter):
    """GELU's tanh approximation where the exact (erf) GELU is asked for."""

    name = "tanh-gelu"
    dtypes = ("float64", "float32")

    def feed_forward(self, x: Any, params: Any, activation: str = "relu") -> Any:
        return super().feed_forward(x, params, "gelu_tanh" if activation == "gelu" else activation)

    def encoder_layer(self, src: Any, params: Any, nhead: int, *a: Any, **kw: Any) -> Any:
        if kw.get("activation") == "gelu":
            kw["activation"] = "gelu_tanh"
        return super().encoder_layer(src, params, nhead, *a, **kw)


class Float64Out(NumpyAdapter):
    name = "float64-out"
    dtypes = ("float32",)

    def feed_forward(self, x: Any, params: Any, activation: str = "relu") -> Any:
        return super().feed_forward(x, params, activation).astype(np.float64)


class PositionalLeak(NumpyAdapter):
    """Adds a small position-dependent term to the output: not permutation equivariant."""

    name = "positional-leak"
    dtypes = ("float64",)

    @staticmethod
    def _leak(y: np.ndarray, batch_first: bool) -> np.ndarray:
        pos = np.arange(y.shape[1 if batch_first else 0], dtype=y.dtype)
        shape = (1, -1, 1) if batch_first else (-1, 1, 1)
        return y + 1e-3 * pos.reshape(shape)

    def multi_head_attention(self, query: Any, key: Any, value: Any, *a: Any, **kw: Any) -> Any:
        out = super().multi_head_attention(query, key, value, *a, **kw)
        return self._leak(out, kw.get("batch_first", True))

    def encoder_layer(self, src: Any, params: Any, nhead: int, *a: Any, **kw: Any) -> Any:
        out = super().encoder_layer(src, params, nhead, *a, **kw)
        return self._leak(out, kw.get("batch_first", True))


class NoTargetMask(NumpyAdapter):
    name = "no-target-mask"
    dtypes = ("float64",)

    def decoder_layer(self, tgt: Any, memory: Any, params: Any, nhead: int, **kw: Any) -> Any:
        kw["tgt_mask"] = None
        return super().decoder_layer(tgt, memory, params, nhead, **kw)


class NoMemoryPadding(NumpyAdapter):
    name = "no-memory-padding"
    dtypes = ("float64",)

    def decoder_layer(self, tgt: Any, memory: Any, params: Any, nhead: int, **kw: Any) -> Any:
        kw["memory_key_padding_mask"] = None
        return super().decoder_layer(tgt, memory, params, nhead, **kw)


@pytest.mark.parametrize(
    ("component", "name", "adapter", "dtype"),
    [
        ("multi_head_attention", "equivalence", WrongHeadSplit(), "float64"),
        ("multi_head_attention", "equivalence", NoScale(), "float32"),
        ("encoder_layer", "equivalence", NoScale(), "float32"),
        ("encoder_layer", "equivalence", AlwaysPostLN(), "float32"),
        ("decoder_layer", "equivalence", AlwaysPostLN(), "float64"),
        ("feed_forward", "equivalence", TanhGelu(), "float64"),
        ("encoder_layer", "equivalence", TanhGelu(), "float64"),
        ("feed_forward", "shape_dtype", Float64Out(), "float32"),
        ("multi_head_attention", "head_independence", WrongHeadSplit(), "float64"),
        ("multi_head_attention", "permutation_equivariance", PositionalLeak(), "float64"),
        ("encoder_layer", "permutation_equivariance", PositionalLeak(), "float64"),
        ("decoder_layer", "decoder_causality", NoTargetMask(), "float64"),
        ("decoder_layer", "source_key_padding_invariance", NoMemoryPadding(), "float64"),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_wrong_layer_rejected(
    component: str, name: str, adapter: Any, dtype: str, layer_rejects: Rejects
) -> None:
    failure = layer_rejects(component, name, adapter, dtype)
    if name == "shape_dtype":
        assert isinstance(failure, ImplementationFailure) and failure.kind == "dtype"
    else:  # judged wrong, not crashed
        assert isinstance(failure, PropertyViolation), failure


def test_tanh_gelu_caught_in_float32_feed_forward(layer_rejects: Rejects) -> None:
    """The tanh/erf GELU difference (up to 2e-4·|x|) is far above float32's propagated bound."""
    failure = layer_rejects("feed_forward", "equivalence", TanhGelu(), "float32")
    assert isinstance(failure, PropertyViolation)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize(
    ("component", "name"),
    [
        ("multi_head_attention", "equivalence"),
        ("multi_head_attention", "head_independence"),
        ("multi_head_attention", "permutation_equivariance"),
        ("feed_forward", "equivalence"),
        ("feed_forward", "shape_dtype"),
        ("encoder_layer", "equivalence"),
        ("encoder_layer", "permutation_equivariance"),
        ("decoder_layer", "equivalence"),
        ("decoder_layer", "decoder_causality"),
        ("decoder_layer", "source_key_padding_invariance"),
    ],
)
def test_numpy_layers_accepted(
    component: str, name: str, dtype: str, layer_accepts: Callable[..., float]
) -> None:
    assert layer_accepts(component, name, NumpyAdapter(), dtype, examples=8) <= 1.0
