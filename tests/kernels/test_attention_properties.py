"""Each attention property rejects a deliberately wrong implementation and accepts NumPy's.

Every wrong implementation below is NumPy attention with one defect; the property named in
its test must find the defect within a few derandomized examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.catalogue import select
from transpec.oracle.engine.dtypes import round_to

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


def _additive(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean or float mask (or None) as an additive float mask."""
    if mask is None:
        return np.zeros(shape[-2:])
    if mask.dtype == np.bool_:
        return np.where(mask, 0.0, -np.inf)
    return mask.astype(np.float64)


class _Wrong(NumpyAdapter):
    """NumPy attention with a defect in ``defect`` (a hook on the arguments or the output)."""

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        return self.defect(q, k, v, attn_mask, is_causal, scale, enable_gqa)

    def correct(self, *args: Any) -> Any:
        return super().scaled_dot_product_attention(*args)

    def defect(self, *args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


class ScaleByDPlusOne(_Wrong):
    name = "scale-1/sqrt(d+1)"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        s = 1.0 / np.sqrt(q.shape[-1] + 1) if scale is None else scale
        return self.correct(q, k, v, mask, causal, s, gqa)


class HalfProbabilities(_Wrong):
    """float16 inputs, float32 math declared, but the probabilities are rounded to bfloat16."""

    name = "bf16-probabilities"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
        s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (
            q32 @ np.swapaxes(k32, -1, -2)
        )
        s = s + _additive(mask, s.shape).astype(np.float32)
        if causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p = round_to(p / p.sum(axis=-1, keepdims=True), "bfloat16").astype(np.float32)
        return (p @ v32).astype(np.float16)


class SwappedAxes(_Wrong):
    name = "swapped-axes"

    def defect(self, *args: Any) -> Any:
        return np.swapaxes(self.correct(*args), 1, 2)


class Float64Output(_Wrong):
    name = "float64-output"

    def defect(self, *args: Any) -> Any:
        return self.correct(*args).astype(np.float64)


class BottomRightCausal(_Wrong):
    """Declares top-left causal alignment but anchors the mask bottom-right."""

    name = "bottom-right-causal"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        if causal:
            lq, lk = q.shape[-2], k.shape[-2]
            mask = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)
        return self.correct(q, k, v, mask, False, scale, gqa)


class FiniteFill(_Wrong):
    """Masked scores replaced by -4 (an undeclared, far too small finite fill)."""

    name = "fill-4"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        if mask is not None and mask.dtype == np.bool_:
            mask = np.where(mask, 0.0, -4.0).astype(q.dtype)
        elif mask is not None:
            mask = np.where(np.isneginf(mask), -4.0, mask).astype(q.dtype)
        return self.correct(q, k, v, mask, causal, scale, gqa)


class BatchRolled(_Wrong):
    name = "keys-of-the-previous-example"

    def defect(self, q: Any, k: Any, v: Any, *rest: Any) -> Any:
        return self.correct(q, np.roll(k, 1, axis=0), np.roll(v, 1, axis=0), *rest)


class HeadRolled(_Wrong):
    name = "keys-of-the-previous-head"

    def defect(self, q: Any, k: Any, v: Any, *rest: Any) -> Any:
        return self.correct(q, np.roll(k, 1, axis=1), np.roll(v, 1, axis=1), *rest)


class KeyPositionBias(_Wrong):
    """An undeclared position bias -0.5·j on the scores (ALiBi-like)."""

    name = "key-position-bias"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        lk = k.shape[-2]
        bias = _additive(mask, (q.shape[-2], lk)) - 0.5 * np.arange(lk)
        return self.correct(q, k, v, bias.astype(q.dtype), causal, scale, gqa)


class QueryPositionScale(_Wrong):
    """Query row i scaled by 1 + i/4 (a position-dependent temperature)."""

    name = "query-position-scale"

    def defect(self, q: Any, *rest: Any) -> Any:
        ramp = (1.0 + np.arange(q.shape[-2]) / 4.0)[:, None]
        return self.correct((q * ramp).astype(q.dtype), *rest)


class OutputOffset(_Wrong):
    name = "output-offset"

    def defect(self, *args: Any) -> Any:
        return (self.correct(*args) + 0.25).astype(args[0].dtype)


class Unnormalized(_Wrong):
    """exp(S - m) V without dividing by the row sum: still linear in V, outside the hull."""

    name = "unnormalized"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
        s = s + _additive(mask, s.shape)
        if causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        p = np.exp(s - np.where(np.isneginf(m), 0.0, m))
        return (p @ v).astype(q.dtype)


class NaNForMaskedRows(_Wrong):
    """A naive softmax: a fully masked row is 0/0 = NaN, but 'zero' is declared."""

    name = "nan-rows"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        out = self.correct(q, k, v, mask, causal, scale, gqa)
        keep = np.ones((*out.shape[:-1], k.shape[-2]), dtype=bool)
        if mask is not None:
            keep = keep & (mask if mask.dtype == np.bool_ else ~np.isneginf(mask))
        if causal:
            keep = keep & np.tril(np.ones(keep.shape[-2:], dtype=bool))
        dead = ~keep.any(axis=-1, keepdims=True)
        return np.where(dead, np.nan, out).astype(out.dtype)


class NoMaxSubtraction(_Wrong):
    """exp(S) / Σ exp(S) in float32 with no max subtracted: overflows beyond 88."""

    name = "no-max-subtraction"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = np.float32(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (
            q @ np.swapaxes(k, -1, -2)
        )
        s = s + _additive(mask, s.shape).astype(s.dtype)
        if causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.exp(s)
            out = (p / p.sum(axis=-1, keepdims=True)) @ v
        return out.astype(q.dtype)


class TiledHeads(_Wrong):
    """Declares the interleaved GQA mapping (h // g) but tiles the kv heads (h % Hkv)."""

    name = "tiled-gqa"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        g = q.shape[1] // k.shape[1]
        if g > 1:
            k, v = np.tile(k, (1, g, 1, 1)), np.tile(v, (1, g, 1, 1))
        return self.correct(q, k, v, mask, causal, scale, False)


class SplitKeysMergedWithoutRescaling(_Wrong):
    """Keys in splits of 256 merged as l = l_a·e^(m_a - m) + l_b: the second split's sum is
    not rescaled to the common maximum (exact only while every key fits in one split)."""

    name = "split-merge-no-rescale"

    def defect(self, q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: Any, gqa: bool) -> Any:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
        s = s + _additive(mask, s.shape).astype(s.dtype)
        if causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        m = np.full((*s.shape[:-1], 1), -np.inf, dtype=s.dtype)
        ell = np.zeros_like(m)
        acc = np.zeros((*s.shape[:-1], v.shape[-1]), dtype=s.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            for j in range(0, s.shape[-1], 256):
                sb = s[..., j : j + 256]
                m_new = np.maximum(m, sb.max(axis=-1, keepdims=True))
                shift = np.where(np.isneginf(m_new), 0.0, m_new)
                rescale = np.exp(np.where(np.isneginf(m), -np.inf, m - shift))
                e = np.exp(sb - shift)
                # the defect: l_a·e^(m_a - m) only for the first split, l_a after it
                ell = (ell * rescale if j == 0 else ell) + e.sum(-1, keepdims=True)
                acc = acc * rescale + e @ v[..., j : j + 256, :]
                m = m_new
            out = acc / ell
        return out.astype(q.dtype)


class SoftcapAfterMask(NumpyAdapter):
    """The cap applied after the mask: cap · tanh(-inf / cap) = -cap, so masked keys leak."""

    name = "softcap-after-mask"

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
        softcap: Any = None,
    ) -> Any:
        g = q.shape[-3] // k.shape[-3]
        k64, v64 = np.repeat(k, g, axis=-3).astype(float), np.repeat(v, g, axis=-3).astype(float)
        s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (
            q.astype(float) @ np.swapaxes(k64, -1, -2)
        )
        s = s + _additive(attn_mask, s.shape)
        if is_causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
        if softcap is not None:
            s = softcap * np.tanh(s / softcap)  # the defect: after the mask
        m = s.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            p = np.exp(s - np.where(np.isneginf(m), 0.0, m))
            p = np.nan_to_num(p / p.sum(axis=-1, keepdims=True))
        return (p @ v64).astype(q.dtype)


WRONG = [
    ("equivalence", ScaleByDPlusOne(), "float64"),
    ("error_statistic", HalfProbabilities(), "float16"),
    ("shape_dtype", SwappedAxes(), "float32"),
    ("shape_dtype", Float64Output(), "float32"),
    ("causality", BottomRightCausal(), "float32"),
    ("key_padding_invariance", FiniteFill(), "float32"),
    ("batch_independence", BatchRolled(), "float32"),
    ("head_independence", HeadRolled(), "float32"),
    ("kv_permutation_invariance", KeyPositionBias(), "float32"),
    ("query_permutation_equivariance", QueryPositionScale(), "float32"),
    ("value_linearity", OutputOffset(), "float32"),
    ("convex_hull", Unnormalized(), "float32"),
    ("fully_masked_rows", NaNForMaskedRows(), "float32"),
    ("large_logits", NoMaxSubtraction(), "float32"),
    ("gqa", TiledHeads(), "float32"),
    ("long_context", SplitKeysMergedWithoutRescaling(), "float32"),
    ("softcap", SoftcapAfterMask(), "float32"),
]


@pytest.mark.parametrize(("name", "adapter", "dtype"), WRONG, ids=lambda x: getattr(x, "name", x))
def test_rejects_the_wrong_implementation(
    name: str, adapter: Any, dtype: str, rejects: Any
) -> None:
    rejects("attention", name, adapter, dtype)


def test_every_attention_property_has_a_wrong_implementation() -> None:
    """The forward ones here; the backward ones in tests/gradients."""
    forward = {p.name for p in select("attention") if not p.backward}
    assert forward == {name for name, _, _ in WRONG}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("name", [p.name for p in select("attention") if not p.backward])
def test_accepts_numpy(name: str, dtype: str, accepts: Any) -> None:
    assert accepts("attention", name, NumpyAdapter(), dtype, examples=4) <= 1.0


@pytest.mark.parametrize(
    ("name", "adapter"),
    [
        ("value_linearity", Unnormalized()),
        ("convex_hull", ScaleByDPlusOne()),
        ("causality", KeyPositionBias()),
    ],
    ids=["linearity-of-unnormalized", "hull-of-wrong-scale", "causality-of-position-bias"],
)
def test_properties_are_distinct(name: str, adapter: Any, accepts: Any) -> None:
    """A defect one property is about can be invisible to another: each verdict says
    something of its own (these wrong implementations keep the named property)."""
    assert accepts("attention", name, adapter, "float64", examples=6) <= 1.0
