"""Implementations that misbehave towards the harness rather than (only) compute wrong values.

Each edits what it was given -- its input arrays, the ``params`` dict, its adapter's
conventions -- or declares something a run cannot be planned on. Loaded by the engine tests
(this directory on ``sys.path``) and by the CLI tests as ``hostile_adapters:NAME`` (this
directory on ``PYTHONPATH`` of a subprocess).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.spec.conventions import Conventions

#: the relative error the wrong-and-mutating implementations add to a right output
NUDGE = 1e-6


class ScalesInputsWrongEncoder(NumpyAdapter):
    """``encoder_layer`` wrong by ``NUDGE`` (relative), and scaling ``src`` and every
    parameter by the same factor in place, so that a reference computed on what it leaves
    behind would match its output."""

    name = "scales-inputs-wrong-encoder"
    dtypes = ("float64",)

    def encoder_layer(self, src: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().encoder_layer(src, params, *args, **kwargs)
        src *= 1 + NUDGE
        for value in params.values():
            if value is not None:
                value *= 1 + NUDGE
        return out * (1 + NUDGE)


class ZeroesQueryAttention(NumpyAdapter):
    """Right attention, then ``q`` overwritten with zeros: right values, mutated input."""

    name = "zeroes-query"

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
        out = super().scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
        q[...] = 0.0
        return out


class FlipsMaskAttention(NumpyAdapter):
    """Right attention, then its boolean mask inverted in place."""

    name = "flips-mask"

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
        out = super().scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
        if attn_mask is not None and attn_mask.dtype == np.bool_:
            np.logical_not(attn_mask, out=attn_mask)
        return out


class EditsWeightEmbedding(NumpyAdapter):
    """A wrong embedding (every row scaled by 1.5) that scales ``weight`` in place first, so
    that its output equals the rows of the table it leaves behind."""

    name = "edits-weight-embedding"
    dtypes = ("float64",)

    def embedding(self, input: Any, weight: Any, *args: Any, **kwargs: Any) -> Any:
        weight *= 1.5
        return super().embedding(input, weight, *args, **kwargs)


class ZeroesIndicesEmbedding(NumpyAdapter):
    """Right embedding, then the token ids overwritten with zeros."""

    name = "zeroes-indices"

    def embedding(self, input: Any, weight: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().embedding(input, weight, *args, **kwargs)
        input[...] = 0
        return out


class EditsParamsEncoder(NumpyAdapter):
    """Right ``encoder_layer``, then one parameter array scaled in place."""

    name = "edits-params"

    def encoder_layer(self, src: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().encoder_layer(src, params, *args, **kwargs)
        params["linear1.weight"] *= 2.0
        return out


class ReplacesParamsEncoder(NumpyAdapter):
    """Right ``encoder_layer``, then one entry of the ``params`` dict replaced by another
    array (the arrays sent are untouched)."""

    name = "replaces-params"

    def encoder_layer(self, src: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().encoder_layer(src, params, *args, **kwargs)
        params["linear1.weight"] = params["linear1.weight"] * 2.0
        return out


class IgnoreMaskAttention(NumpyAdapter):
    """Attention that reads a boolean mask as True = masked out (the ``"ignore"`` convention)
    while declaring the canonical ``"keep"``, and declares ``"ignore"`` from its first call on,
    by assigning its class's ``conventions``: judged under the conventions it began with, it
    is wrong, and the change itself is reported."""

    name = "changes-conventions"
    conventions = Conventions()

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
        type(self).conventions = Conventions(bool_mask="ignore")
        if attn_mask is not None and attn_mask.dtype == np.bool_:
            attn_mask = ~attn_mask
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )


class EditsConventionsInPlace(NumpyAdapter):
    """Right softmax that edits its (frozen) conventions object in place."""

    name = "edits-conventions"
    conventions = Conventions()

    def softmax(self, x: Any, dim: int = -1) -> Any:
        object.__setattr__(self.conventions, "gqa_mapping", "tile")
        return super().softmax(x, dim)


def _torch_scales_query() -> type:
    """A torch adapter whose SDPA scales ``q`` in place (``q.mul_(scale)``) and then calls
    ``F.scaled_dot_product_attention`` with ``scale=1``: values right to rounding, input
    mutated."""
    import math

    import torch

    from transpec.adapters.torch.adapter import TorchAdapter

    class TorchScalesQuery(TorchAdapter):
        name = "torch-scales-query"

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
            factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
            q.mul_(factor)
            return torch.nn.functional.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                is_causal=is_causal,
                scale=1.0,
                enable_gqa=enable_gqa,
            )

    TorchScalesQuery.__module__ = __name__
    TorchScalesQuery.__qualname__ = "TorchScalesQuery"
    return TorchScalesQuery


def __getattr__(name: str) -> Any:
    """``TorchScalesQuery``, made on first use: importing this module must not import torch."""
    if name == "TorchScalesQuery":
        cls = _torch_scales_query()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- declarations a run cannot be planned on --------------------------------------------------


class ZeroTimeout(NumpyAdapter):
    name = "zero-timeout"
    call_timeout = 0.0


class NaNTimeout(NumpyAdapter):
    name = "nan-timeout"
    call_timeout = float("nan")


class TextTimeout(NumpyAdapter):
    name = "text-timeout"
    call_timeout = "5"  # type: ignore[assignment]


class StringDtypes(NumpyAdapter):
    name = "string-dtypes"
    dtypes = "float32"  # type: ignore[assignment]


class NoDtypes(NumpyAdapter):
    name = "no-dtypes"
    dtypes = ()


class NumberDevices(NumpyAdapter):
    name = "number-devices"
    devices = ("cpu", 0)  # type: ignore[assignment]


class RaisingDevices(NumpyAdapter):
    name = "raising-devices"

    def available_devices(self) -> tuple[str, ...]:
        raise RuntimeError("no driver\nsecond line")


class RaisingProvides(NumpyAdapter):
    name = "raising-provides"

    def provides(self, component: str) -> bool:
        if component == "attention":
            raise KeyError(component)
        return super().provides(component)
