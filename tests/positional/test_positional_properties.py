"""Embedding and positional properties: torch (four dtypes) and numpy pass; each known-wrong
implementation is rejected by the property meant to catch it; declared variants conform."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from transpec.adapters.base import Adapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.adapters.torch.adapter import TorchAdapter
from transpec.oracle.catalogue import PROPERTIES, select
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.spec.conventions import Conventions

POSITIONAL = ("embedding", "sinusoidal_positional_encoding", "rotary_embedding", "alibi_bias")


Runner = Callable[..., float]


def test_catalogue_has_the_positional_properties() -> None:
    ids = {p.id for p in PROPERTIES}
    for component in POSITIONAL:
        assert {f"{component}.equivalence", f"{component}.shape_dtype"} <= ids
    assert {
        "embedding.lookup_exact",
        "sinusoidal_positional_encoding.sinusoidal_shift_is_rotation",
        "sinusoidal_positional_encoding.position_offset",
        "rotary_embedding.rope_relative_position",
        "rotary_embedding.rope_norm_preservation",
        "rotary_embedding.position_offset",
    } <= ids


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_torch_passes_every_positional_property(dtype: str, run_property: Runner) -> None:
    adapter = TorchAdapter()
    for prop in select(POSITIONAL):
        assert run_property(prop, adapter, dtype, 8) <= 1.0, prop.id


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_numpy_passes_every_positional_property(dtype: str, run_property: Runner) -> None:
    adapter = NumpyAdapter()
    for prop in select(POSITIONAL):
        assert run_property(prop, adapter, dtype, 8) <= 1.0, prop.id


# -- wrong implementations ---------------------------------------------------------------------


def _table(length: int, d: int, offset: int, exponent: Any, layout: str = "interleaved") -> Any:
    """A float32 sinusoidal table with the frequency of column j given by exponent(j, d)."""
    pos = torch.arange(offset, offset + length, dtype=torch.float32)[:, None]
    cols = torch.arange(d, dtype=torch.float32)
    pe = torch.empty(length, d)
    if layout == "interleaved":
        omega = torch.pow(10000.0, -exponent(cols, d))
        pe[:, 0::2] = torch.sin(pos * omega[0::2])
        pe[:, 1::2] = torch.cos(pos * omega[1::2])
    else:
        half = torch.arange(d // 2, dtype=torch.float32)
        omega = torch.pow(10000.0, -2 * half / d)
        pe[:, : d // 2] = torch.sin(pos * omega)
        pe[:, d // 2 :] = torch.cos(pos * omega)
    return pe


class SinusoidExponentIOverD(TorchAdapter):
    """ω_i = 10000^(-i/d) instead of 10000^(-2i/d)."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        pe = _table(
            length, d_model, offset, lambda j, d: torch.div(j, 2, rounding_mode="floor") / d
        )
        return pe.to(self._dtype(dtype))


class SinusoidColumnExponent(TorchAdapter):
    """The exponent from the column index j (j/d) instead of 2⌊j/2⌋/d: sin and cos of a pair
    get different frequencies."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        return _table(length, d_model, offset, lambda j, d: j / d).to(self._dtype(dtype))


class SinusoidConcatenated(TorchAdapter):
    """[sin | cos] halves (tensor2tensor's layout with the paper's frequencies)."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        pe = _table(length, d_model, offset, None, layout="concatenated")  # type: ignore[arg-type]
        return pe.to(self._dtype(dtype))


class SinusoidConcatenatedDeclared(SinusoidConcatenated):
    conventions = Conventions(sinusoidal_layout="concatenated")


class SinusoidOffsetOffByOne(TorchAdapter):
    """A cached table read from row offset + 1 when decoding (offset > 0)."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        start = offset + 1 if offset else 0
        return super().sinusoidal_positional_encoding(length, d_model, start, dtype)


class SinusoidAlwaysFloat32(TorchAdapter):
    """Returns the float32 table whatever dtype is asked for."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        return super().sinusoidal_positional_encoding(length, d_model, offset, "float32")


class SinusoidHalfAngles(TorchAdapter):
    """Positions and angles in float16 (positions above 2048 are not representable)."""

    def sinusoidal_positional_encoding(self, length, d_model, offset=0, dtype="float32"):  # type: ignore[no-untyped-def]
        position = torch.arange(offset, offset + length).to(torch.float16)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        angle = (position * div.to(torch.float16)).float()
        pe = torch.zeros(length, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        return pe.to(self._dtype(dtype))


def _gptj(x: Any, pos: Any, base: float) -> Any:
    """GPT-J rotate_every_two RoPE (interleaved pairs), float32 angles."""
    dim = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
    freqs = torch.outer(pos.float(), inv)
    cos = torch.repeat_interleave(freqs.cos(), 2, dim=-1).to(x.dtype)
    sin = torch.repeat_interleave(freqs.sin(), 2, dim=-1).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def _positions(x: Any, positions: Any, offset: int) -> Any:
    return torch.arange(offset, offset + x.shape[-2]) if positions is None else positions


class RopeInterleavedUndeclared(TorchAdapter):
    def rotary_embedding(self, x, positions=None, offset=0, base=10000.0):  # type: ignore[no-untyped-def]
        return _gptj(x, _positions(x, positions, offset), base)


class RopeInterleavedDeclared(RopeInterleavedUndeclared):
    conventions = Conventions(rope_pairing="interleaved")


class RopeOffsetOffByOne(TorchAdapter):
    """KV-cache decode rotates the new tokens at offset + 1."""

    def rotary_embedding(self, x, positions=None, offset=0, base=10000.0):  # type: ignore[no-untyped-def]
        if positions is None and offset:
            offset += 1
        return super().rotary_embedding(x, positions, offset, base)


class RopeShortCache(TorchAdapter):
    """A cos/sin cache of 32 positions indexed cyclically (positions mod 32)."""

    def rotary_embedding(self, x, positions=None, offset=0, base=10000.0):  # type: ignore[no-untyped-def]
        pos = _positions(x, positions, offset) % 32
        return super().rotary_embedding(x, pos.to(torch.int64), 0, base)


class RopeRotateHalfSign(TorchAdapter):
    """rotate_half returns [x2, x1] instead of [-x2, x1]."""

    def rotary_embedding(self, x, positions=None, offset=0, base=10000.0):  # type: ignore[no-untyped-def]
        dim = x.shape[-1]
        pos = _positions(x, positions, offset).float()
        inv = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
        emb = torch.cat((torch.outer(pos, inv),) * 2, dim=-1)
        rotated = torch.cat((x[..., dim // 2 :], x[..., : dim // 2]), dim=-1)
        return x * emb.cos().to(x.dtype) + rotated * emb.sin().to(x.dtype)


class EmbeddingNoScale(TorchAdapter):
    def embedding(self, input, weight, scale_by_sqrt_d=False):  # type: ignore[no-untyped-def]
        return torch.nn.functional.embedding(input, weight)


class EmbeddingMaxNorm(TorchAdapter):
    """``nn.Embedding(max_norm=1.0)``: rows of norm > 1 are renormalized on lookup."""

    def embedding(self, input, weight, scale_by_sqrt_d=False):  # type: ignore[no-untyped-def]
        out = torch.nn.functional.embedding(input, weight.clone(), max_norm=1.0)
        return out * math.sqrt(weight.shape[-1]) if scale_by_sqrt_d else out


class AlibiGeometric(TorchAdapter):
    """Slopes 2^(-8h/n) over all n heads, also when n is not a power of 2."""

    def alibi_bias(self, num_heads, query_length, key_length, dtype="float32"):  # type: ignore[no-untyped-def]
        h = torch.arange(1, num_heads + 1, dtype=torch.float32)
        slopes = 2.0 ** (-8.0 * h / num_heads)
        p = torch.arange(query_length) + key_length - query_length
        dist = (torch.arange(key_length)[None, :] - p[:, None]).float()
        return (slopes[:, None, None] * dist).to(self._dtype(dtype))


class EmbeddingFlattened(TorchAdapter):
    """Flattens the ids first: (N, d) instead of input.shape + (d,)."""

    def embedding(self, input, weight, scale_by_sqrt_d=False):  # type: ignore[no-untyped-def]
        return super().embedding(input.reshape(-1), weight, scale_by_sqrt_d)


class RopeFloat32Result(TorchAdapter):
    """cos/sin kept in float32: x * cos promotes a float16/bfloat16 x to float32."""

    def rotary_embedding(self, x, positions=None, offset=0, base=10000.0):  # type: ignore[no-untyped-def]
        dim = x.shape[-1]
        pos = _positions(x, positions, offset).float()
        inv = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
        emb = torch.cat((torch.outer(pos, inv),) * 2, dim=-1)
        rotated = torch.cat((-x[..., dim // 2 :], x[..., : dim // 2]), dim=-1)
        return x * emb.cos() + rotated * emb.sin()


class AlibiHeadsLast(TorchAdapter):
    """Returns (Lq, Lk, H) instead of (H, Lq, Lk)."""

    def alibi_bias(self, num_heads, query_length, key_length, dtype="float32"):  # type: ignore[no-untyped-def]
        return super().alibi_bias(num_heads, query_length, key_length, dtype).permute(1, 2, 0)


WRONG = [
    ("embedding.shape_dtype", EmbeddingFlattened, "float32"),
    ("rotary_embedding.shape_dtype", RopeFloat32Result, "float16"),
    ("alibi_bias.shape_dtype", AlibiHeadsLast, "float64"),
    ("sinusoidal_positional_encoding.equivalence", SinusoidExponentIOverD, "float32"),
    (
        "sinusoidal_positional_encoding.sinusoidal_shift_is_rotation",
        SinusoidExponentIOverD,
        "float16",
    ),
    (
        "sinusoidal_positional_encoding.sinusoidal_shift_is_rotation",
        SinusoidColumnExponent,
        "bfloat16",
    ),
    ("sinusoidal_positional_encoding.equivalence", SinusoidConcatenated, "bfloat16"),
    ("sinusoidal_positional_encoding.position_offset", SinusoidOffsetOffByOne, "float32"),
    ("sinusoidal_positional_encoding.equivalence", SinusoidOffsetOffByOne, "float16"),
    ("sinusoidal_positional_encoding.shape_dtype", SinusoidAlwaysFloat32, "float16"),
    ("sinusoidal_positional_encoding.equivalence", SinusoidHalfAngles, "float16"),
    ("rotary_embedding.equivalence", RopeInterleavedUndeclared, "bfloat16"),
    ("rotary_embedding.position_offset", RopeOffsetOffByOne, "float32"),
    ("rotary_embedding.equivalence", RopeOffsetOffByOne, "float16"),
    ("rotary_embedding.rope_relative_position", RopeShortCache, "float32"),
    ("rotary_embedding.rope_norm_preservation", RopeRotateHalfSign, "float16"),
    ("embedding.equivalence", EmbeddingNoScale, "bfloat16"),
    ("embedding.lookup_exact", EmbeddingMaxNorm, "float32"),
    ("alibi_bias.equivalence", AlibiGeometric, "float16"),
]


@pytest.mark.parametrize(
    ("prop_id", "cls", "dtype"), WRONG, ids=[f"{p}-{c.__name__}-{d}" for p, c, d in WRONG]
)
def test_wrong_implementation_is_rejected(
    prop_id: str, cls: type[Adapter], dtype: str, rejects: Callable[..., BaseException]
) -> None:
    component, name = prop_id.split(".")
    message = str(rejects(component, name, cls(), dtype, 40))
    assert message and "\n" not in message.strip().splitlines()[0]


@pytest.mark.parametrize(
    ("cls", "component"),
    [
        (SinusoidConcatenatedDeclared, "sinusoidal_positional_encoding"),
        (RopeInterleavedDeclared, "rotary_embedding"),
    ],
)
def test_declared_variant_conforms(
    cls: type[Adapter], component: str, run_property: Runner
) -> None:
    for dtype in ("float32", "bfloat16"):
        for prop in select(component):
            assert run_property(prop, cls(), dtype, 6) <= 1.0, prop.id


def test_torch_sinusoid_far_positions_within_the_angle_bound() -> None:
    """At p = 16384 the float32 angle error (~1e-3 rad) is real; the bound covers it and the
    ratio shows it is not slack; the same table from float16 angles is out of bound."""
    harness = Harness(TorchAdapter(), "float32")
    args = {"length": 8, "d_model": 64, "offset": 16384, "dtype": "float32"}
    call = harness.call("sinusoidal_positional_encoding", args)
    error = float(np.max(np.abs(call.output - call.reference.value)))
    assert error > 1e-5  # far above float32's u·|PE|: the angle's rounding
    assert 0.02 < harness.assert_equivalent(call) <= 1.0
    half = Harness(SinusoidHalfAngles(), "float32")
    with pytest.raises(PropertyViolation):
        half.assert_equivalent(half.call("sinusoidal_positional_encoding", args))


def test_positional_arguments_are_validated() -> None:
    harness = Harness(NumpyAdapter(), "float32")
    with pytest.raises(TypeError, match="integer array"):
        harness.call("embedding", {"input": np.zeros(3), "weight": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="positions or an offset"):
        harness.call(
            "rotary_embedding",
            {"x": np.ones((2, 4)), "positions": np.arange(2), "offset": 3, "base": 10000.0},
        )
