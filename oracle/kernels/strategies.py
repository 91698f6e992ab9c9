"""Hypothesis strategies for the arguments of each building block, reaching every regime.

Each public strategy is a function of the dtype under test (magnitudes are steered per dtype:
inputs that are ill-conditioned for the question asked, or that overflow the dtype itself, are
never generated) and keyword-only options whose defaults generate everything supported. Options
are validated eagerly: a bad option raises ``ValueError``/``TypeError`` when the strategy is
built, not when it is drawn from.

Arguments are dicts keyed by the component's parameter names (its registry record,
:mod:`transpec.oracle.components`); arrays are float64 (masks: bool or float64) in transpec's
canonical meaning (a boolean mask's ``True`` means *attend*). Array values come from a NumPy
generator seeded by a drawn integer, while shapes, scales and regimes are drawn by
Hypothesis, so examples stay cheap and still shrink (towards small shapes, seed 0, plain
regimes).

Regimes (the ones where kernels are known to break):

* attention -- ``Lq != Lk`` both ways, ``Lq = 1`` (decode), lengths that are not multiples of
  8/64/128 (97, 113, up to 300 keys), head dims that are not multiples of 8, ``Ev != E``, GQA
  with groups > 1, boolean/additive/causal/key-padding masks, fully masked rows, ``is_causal``,
  custom and negative scales (the default scale half the time), rows of very different scale,
  logits beyond the exponential's overflow threshold of the dtype (:data:`EXP_OVERFLOW`: > 11
  in float16, > 88 in float32) and of the wider precisions its kernels may compute exp in
  (:data:`LARGE_LOGIT_LIMITS`: > 88.7 and > 709.8 for float16 inputs);
* norms -- ``σ² ≈ eps``, small n (the biased/unbiased variance difference 1/(2n) is visible),
  ``|μ| ≫ σ``, multi-dimensional ``normalized_shape``, with and without weight/bias;
* softmax -- any axis, rows of very different scale, some -inf entries, large logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from transpec.oracle.engine.dtypes import FORMATS
from transpec.oracle.engine.strategy import (
    LONG_LENGTHS,
    checked_dtype,
    lengths,
    positive_int,
    scaled_rows,
    seeded_rng,
    selection,
    tristate,
)

#: ln(largest finite value): exp overflows beyond it (float16: 11.09, float32/bfloat16: 88.72)
EXP_OVERFLOW: dict[str, float] = {name: math.log(fmt.max_value) for name, fmt in FORMATS.items()}

#: the overflow thresholds a large logit must pass for inputs of each dtype: its own exp's, and
#: those of every wider precision a kernel may run exp in (float16/bfloat16 inputs commonly get
#: float32 math, float32 inputs sometimes float64), as long as the logit is representable
LARGE_LOGIT_LIMITS: dict[str, tuple[float, ...]] = {
    "float64": (EXP_OVERFLOW["float64"],),
    "float32": (EXP_OVERFLOW["float32"], EXP_OVERFLOW["float64"]),
    "float16": (EXP_OVERFLOW["float16"], EXP_OVERFLOW["float32"], EXP_OVERFLOW["float64"]),
    "bfloat16": (EXP_OVERFLOW["bfloat16"], EXP_OVERFLOW["float64"]),
}


MASK_KINDS: tuple[str, ...] = (
    "none",
    "bool",
    "additive",
    "causal_mask",
    "key_padding",
    "fully_masked_rows",
    "is_causal",
)
SCALE_KINDS: tuple[str, ...] = ("default", "custom", "negative")
LOGIT_REGIMES: tuple[str, ...] = ("moderate", "large")
LAYER_NORM_REGIMES: tuple[str, ...] = ("standard", "small_n", "small_variance", "large_mean")
RMS_NORM_REGIMES: tuple[str, ...] = ("standard", "small_n", "small_variance")

#: the largest |q| the logit steering puts on q alone (beyond it the factor is split between q
#: and k): far inside every dtype's range (float16: 256 of 65504)
_INPUT_LIMIT: dict[str, float] = {name: math.sqrt(fmt.max_value) for name, fmt in FORMATS.items()}

#: the largest unscaled score |q·k| the logit steering aims at: an implementation may form
#: q Kᵀ in the dtype before scaling, so with a small scale (1/√E for a wide head) a large logit
#: target must not push the unscaled scores near the dtype's overflow (float16: 2047 of 65504,
#: half the margin the strategies promise)
_UNSCALED_SCORE_LIMIT: dict[str, float] = {
    name: fmt.max_value / 32 for name, fmt in FORMATS.items()
}

#: |μ|/σ reached by the large-mean regime: large enough to break a one-pass variance
#: E[x²] - μ² (whose relative error u_acc·(μ/σ)² must exceed the output's bound), small enough
#: that the rows rounded to the dtype still have a spread. float64/float32 draw up to this
#: ratio with σ ≫ u·|μ|; float16/bfloat16, whose own precision caps the ratio, build their
#: rows on the dtype's grid instead (:data:`LARGE_MEAN_SPREAD_ULPS`) and reach it that way.
LARGE_MEAN_RATIO: dict[str, float] = {
    "float64": 1e6,
    "float32": 4096.0,
    "float16": 1024.0,
    "bfloat16": 1000.0,
}

#: the row spread σ of the large-mean regime in units of the spacing (ulp) of μ, for the
#: formats whose precision caps |μ|/σ: a one-pass variance in float32 math (the usual for
#: these inputs) loses u_32·(μ/σ)² of the variance, visible above the output's bound only
#: from |μ|/σ ≈ 200 (float16) and ≈ 400 (bfloat16). float16 rows spread over 2-6 ulps of μ
#: (|μ|/σ = 256-1024); bfloat16 rows, 8 bits, are μ with a sparse sprinkling of μ ± 1 ulp,
#: at least one of each (σ = 0.15-0.5 ulp, |μ|/σ = 380-1700). Both are exact inputs with an
#: exact reference, and well-conditioned for the float32 math of a correct kernel: the
#: tolerance's own large-mean term γ_n(u_32)·|μ|/σ stays below ~0.02.
LARGE_MEAN_SPREAD_ULPS: dict[str, tuple[float, float]] = {
    "float16": (2.0, 6.0),
    "bfloat16": (0.15, 0.5),
}
#: at least this many rows per large-mean example on the grid: the cancellation error of a
#: one-pass variance depends on how μ² happens to round, one draw per row
LARGE_MEAN_ROWS = 16


class AttentionShape(NamedTuple):
    """Sizes of one attention example: q (B, Hq, Lq, E), k (B, Hkv, Lk, E), v (B, Hkv, Lk, Ev)."""

    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    value_dim: int

    @property
    def groups(self) -> int:
        return self.q_heads // self.kv_heads


# -- building blocks -------------------------------------------------------------------------


def attention_shapes(
    *,
    max_batch: int = 2,
    max_kv_heads: int = 2,
    max_groups: int = 3,
    min_len: int = 1,
    max_len: int = 64,
    long_lengths: Sequence[int] = LONG_LENGTHS,
    min_head_dim: int = 1,
    max_head_dim: int = 40,
    value_dim: bool | None = None,
    gqa: bool | None = None,
    decode: bool | None = None,
    square: bool | None = None,
) -> st.SearchStrategy[AttentionShape]:
    """Attention sizes. ``gqa``: True forces groups > 1, False groups = 1, None both;
    ``decode``: True forces Lq = 1; ``value_dim``: True forces Ev != E, False Ev = E (None:
    each about half the time).

    Head dims include values that are not multiples of 8; lengths come from :func:`lengths`, so
    Lq < Lk and Lq > Lk occur, and about a third of the non-decode examples with short keys are
    square, Lq = Lk (self-attention: where a key-padding mask also pads the query positions).
    ``square``: True forces Lq = Lk (no decode, keys up to ``max_len``), False leaves the
    lengths independent, None mixes as described.
    """
    for name, value in (
        ("max_batch", max_batch),
        ("max_kv_heads", max_kv_heads),
        ("max_groups", max_groups),
        ("min_head_dim", min_head_dim),
    ):
        positive_int(name, value)
    positive_int("max_head_dim", max_head_dim, minimum=min_head_dim)
    if gqa is True and max_groups < 2:
        raise ValueError("gqa=True needs max_groups >= 2")
    if square is True and decode is True and min_len > 1:
        raise ValueError("square=True and decode=True need min_len = 1")
    if square is True:
        long_lengths = ()
        decode = False
    length = lengths(min_value=min_len, max_value=max_len, long=long_lengths)
    short_length = lengths(min_value=min_len, max_value=max_len, long=())
    special_dims = [d for d in (3, 5, 8, 13, 16, 24, 33, 40) if min_head_dim <= d <= max_head_dim]
    head_dims = st.integers(min_head_dim, max_head_dim)
    if special_dims:
        head_dims = st.one_of(head_dims, st.sampled_from(special_dims))
    gqa_s = tristate("gqa", gqa) if max_groups > 1 else st.just(False)
    decode_s = (
        st.one_of(st.just(False), st.just(False), st.just(True))
        if decode is None
        else (tristate("decode", decode))
    )
    value_s = tristate("value_dim", value_dim)
    square_s = st.integers(0, 2).map(lambda i: i == 2) if square is None else st.just(square)
    other_dims: dict[int, st.SearchStrategy[int]] = {}

    def other_head_dims(head_dim: int) -> st.SearchStrategy[int]:
        """Head dims other than ``head_dim`` (Ev != E), built once per ``head_dim``."""
        if head_dim not in other_dims:

            def differs(d: int) -> bool:
                return d != head_dim

            other_dims[head_dim] = head_dims.filter(differs)
        return other_dims[head_dim]

    @st.composite
    def draw_shape(draw: st.DrawFn) -> AttentionShape:
        batch = draw(st.integers(1, max_batch))
        kv_heads = draw(st.integers(1, max_kv_heads))
        groups = draw(st.integers(2, max_groups)) if draw(gqa_s) else 1
        kv_len = draw(length)
        # one long dimension per example keeps the cost moderate
        if draw(decode_s):
            q_len = 1
        elif kv_len <= max_len and draw(square_s):
            q_len = kv_len  # square
        else:
            q_len = draw(short_length if kv_len > max_len else length)
        head_dim = draw(head_dims)
        ev = head_dim
        if draw(value_s) and max_head_dim > min_head_dim:
            ev = draw(other_head_dims(head_dim))
        return AttentionShape(batch, kv_heads * groups, kv_heads, q_len, kv_len, head_dim, ev)

    return draw_shape()


def large_logit_target(
    rng: np.random.Generator, dtype: str, size: tuple[int, ...] | None = None
) -> Any:
    """A peak |logit| beyond the overflow of exp in ``dtype`` *and* in the wider precision a
    kernel may compute exp in (:data:`LARGE_LOGIT_LIMITS`): one limit is drawn per call (the
    dtype's own in float64, else each equally often), the peak is 1.1-2.5 x the dtype's own
    limit (11-28 for float16, 97-222 for float32/bfloat16, 780-1775 for float64) and 1.05-3.4
    x a wider one (93-300 past float32's 88.7, 745-2400 past float64's 709.8)."""
    limits = LARGE_LOGIT_LIMITS[dtype]
    which = int(rng.integers(0, len(limits)))
    low, high = (1.1, 2.5) if which == 0 else (1.05, 3.4)
    return limits[which] * rng.uniform(low, high, size=size)


def _mask_array(
    rng: np.random.Generator, kind: str, shape: AttentionShape, additive: bool
) -> np.ndarray:
    """A canonical mask (True/0 = attend) broadcastable to (B, Hq, Lq, Lk)."""
    B, H, Lq, Lk = shape.batch, shape.q_heads, shape.q_len, shape.kv_len
    if kind == "causal_mask":
        keep = np.tril(np.ones((Lq, Lk), dtype=bool))  # top-left alignment, explicit
    elif kind == "key_padding":
        valid = rng.integers(1, Lk + 1, size=B)
        if Lk > 1 and np.all(valid == Lk):  # at least one example pads at least one key
            valid[int(rng.integers(0, B))] = int(rng.integers(1, Lk))
        keep = (np.arange(Lk)[None, :] < valid[:, None])[:, None, None, :]
    else:
        layout = rng.integers(0, 3)
        full = ((Lq, Lk), (B, 1, Lq, Lk), (B, H, Lq, Lk))[layout]
        keep = rng.random(full) < rng.uniform(0.3, 0.95)
        if kind == "fully_masked_rows":
            rows = rng.random(full[:-1]) < 0.3
            rows.flat[rng.integers(0, rows.size)] = True
            keep = keep & ~rows[..., None]
        else:
            # every query keeps at least one key: fully masked rows are their own regime
            first = rng.integers(0, Lk, size=full[:-1])
            np.put_along_axis(keep, first[..., None], True, axis=-1)
    if not additive:
        return keep
    bias = np.zeros(keep.shape)
    if rng.random() < 0.5:  # a finite additive bias (ALiBi-like) on the kept positions
        bias = rng.uniform(-2.0, 2.0, size=keep.shape)
    return np.where(keep, bias, -np.inf)


def _scale_value(rng: np.random.Generator, kind: str) -> float | None:
    if kind == "default":
        return None
    magnitude = float(2.0 ** rng.uniform(-3.0, 1.0))
    return -magnitude if kind == "negative" else magnitude


@st.composite
def _attention_args(
    draw: st.DrawFn,
    dtype: str,
    shapes: st.SearchStrategy[AttentionShape],
    mask_kinds: tuple[str, ...],
    scales: tuple[str, ...],
    logits: tuple[str, ...],
    row_spread: float,
    value_spread: float,
    softcap: bool = False,
) -> dict[str, Any]:
    shape = draw(shapes)
    kind = draw(st.sampled_from(mask_kinds))
    additive = kind not in ("none", "is_causal") and draw(st.booleans())
    # the default scale half the time: a wrong default (1/√Ev, 1/E, ...) shows only there
    scale_kind = draw(st.sampled_from(("default", *scales) if len(scales) > 1 else scales))
    regime = draw(st.sampled_from(logits))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = seeded_rng(seed)
    B, Hq, Hkv = shape.batch, shape.q_heads, shape.kv_heads
    Lq, Lk, E, Ev = shape.q_len, shape.kv_len, shape.head_dim, shape.value_dim
    q = scaled_rows(rng, (B, Hq, Lq, E), row_spread)
    k = scaled_rows(rng, (B, Hkv, Lk, E), 0.0)
    v = scaled_rows(rng, (B, Hkv, Lk, Ev), value_spread)
    scale = _scale_value(rng, scale_kind)
    # steer the largest |logit| to a target: moderate, or beyond exp's overflow in this dtype
    effective = scale if scale is not None else 1.0 / math.sqrt(E)
    k_full = np.repeat(k, Hq // Hkv, axis=1)
    logits_now = float(np.max(np.abs(effective * (q @ np.swapaxes(k_full, -1, -2)))))
    if regime == "large":
        target = float(large_logit_target(rng, dtype))
    else:
        target = float(rng.uniform(0.5, 8.0))
    target = min(target, abs(effective) * _UNSCALED_SCORE_LIMIT[dtype])
    if logits_now > 0:
        factor = target / logits_now
        if float(np.max(np.abs(q))) * factor > _INPUT_LIMIT[dtype]:
            # a large factor on q alone could overflow the dtype: split it between q and k
            q, k = q * math.sqrt(factor), k * math.sqrt(factor)
        else:
            q = q * factor
    mask = None if kind in ("none", "is_causal") else _mask_array(rng, kind, shape, additive)
    return {
        "q": q,
        "k": k,
        "v": v,
        "attn_mask": mask,
        "is_causal": kind == "is_causal",
        "scale": scale,
        "enable_gqa": Hq != Hkv,
        **({"softcap": draw(st.sampled_from(SOFTCAPS))} if softcap else {}),
    }


#: the softcaps drawn (``softcap=True``): below the moderate logits (tanh saturates: every
#: score near ±cap), about them, and the values of Gemma 2 (50) and Grok (30), far above
SOFTCAPS: tuple[float, ...] = (0.5, 1.0, 5.0, 30.0, 50.0)


def attention_inputs(
    dtype: str,
    *,
    shapes: st.SearchStrategy[AttentionShape] | None = None,
    mask_kinds: Sequence[str] = MASK_KINDS,
    scales: Sequence[str] = SCALE_KINDS,
    logits: Sequence[str] = LOGIT_REGIMES,
    row_spread: float = 3.0,
    value_spread: float = 4.0,
    softcap: bool = False,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``scaled_dot_product_attention``: q, k, v, attn_mask, is_causal, scale,
    enable_gqa (True exactly when Hq != Hkv), and with ``softcap`` a softcap from
    :data:`SOFTCAPS` (the key is absent otherwise, so that a method without the argument is
    called as before).

    ``mask_kinds``: any of :data:`MASK_KINDS` (``"causal_mask"`` is an explicit top-left causal
    mask, ``"is_causal"`` sets the flag with no mask; boolean or additive -inf masks are drawn
    for the others). ``scales``: default 1/√E, custom positive, negative. ``logits``:
    ``"moderate"`` (max |logit| ≤ 8) or ``"large"`` (beyond exp's overflow in ``dtype`` and in
    the wider precisions of :data:`LARGE_LOGIT_LIMITS`, see :func:`large_logit_target`).
    ``row_spread``/``value_spread``: query/value rows are scaled by powers of two up to
    2^±spread (rows of very different scale).
    """
    dt = checked_dtype(dtype)
    kinds = selection("mask_kinds", mask_kinds, MASK_KINDS)
    scale_kinds = selection("scales", scales, SCALE_KINDS)
    regimes = selection("logits", logits, LOGIT_REGIMES)
    for name, spread in (("row_spread", row_spread), ("value_spread", value_spread)):
        if not isinstance(spread, (int, float)) or not 0 <= spread <= 8:
            raise ValueError(f"{name} must be a number in [0, 8], got {spread!r}")
    if shapes is None:
        shapes = attention_shapes()
    elif not isinstance(shapes, st.SearchStrategy):
        raise TypeError(f"shapes must be a strategy of AttentionShape, got {shapes!r}")
    return _attention_args(
        dt, shapes, kinds, scale_kinds, regimes, row_spread, value_spread, bool(softcap)
    )


# -- long context ----------------------------------------------------------------------------

#: key lengths of the long-context regime: just past powers of two and tile multiples, one
#: short of them, and 128k itself (the profile caps them, :func:`long_context_inputs`)
LONG_CONTEXT_LENGTHS: tuple[int, ...] = tuple(
    sorted(
        {2**n + 1 for n in range(8, 17)}
        | {2**n - 1 for n in range(9, 18)}
        | {3 * 256 + 1, 5 * 128 - 1, 7 * 64 + 33, 1000, 3 * 4096 + 17, 131072}
    )
)
#: query lengths of a chunk (chunked prefill, speculative decoding) against a long cache
LONG_CONTEXT_CHUNKS: tuple[int, ...] = (1, 2, 17, 63, 129, 257)
LONG_CONTEXT_MASKS: tuple[str, ...] = ("is_causal", "none", "key_padding", "causal_padding")


@st.composite
def _long_context_args(draw: st.DrawFn, keys_cap: int, scores_cap: int) -> dict[str, Any]:
    choices = [n for n in LONG_CONTEXT_LENGTHS if n <= keys_cap] or [keys_cap]
    kv_len = draw(st.sampled_from(choices))
    q_heads = draw(st.sampled_from((1, 2)))
    kind = draw(st.sampled_from(LONG_CONTEXT_MASKS))
    square = draw(st.booleans())
    q_len = kv_len if square else draw(st.sampled_from(LONG_CONTEXT_CHUNKS))
    q_len = max(1, min(q_len, scores_cap // (q_heads * kv_len)))
    head_dim = draw(st.sampled_from((16, 40, 64, 128)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = seeded_rng(seed)
    q = rng.standard_normal((1, q_heads, q_len, head_dim))
    k = rng.standard_normal((1, 1, kv_len, head_dim))
    v = rng.standard_normal((1, 1, kv_len, head_dim))
    mask = None
    if kind in ("key_padding", "causal_padding"):
        valid = int(rng.integers(max(1, kv_len - 300), kv_len))  # pad the last few keys
        mask = (np.arange(kv_len) < valid)[None, None, None, :]
    return {
        "q": q,
        "k": k,
        "v": v,
        "attn_mask": mask,
        "is_causal": kind in ("is_causal", "causal_padding"),
        "scale": None,
        "enable_gqa": q_heads != 1,
    }


def long_context_inputs(
    dtype: str,
    *,
    profile: str = "ci",
    max_keys: int | None = None,
    max_scores: int | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``scaled_dot_product_attention`` on long sequences: one batch, one kv head
    (two query heads, GQA, half the time), key lengths from :data:`LONG_CONTEXT_LENGTHS` up to
    ``max_keys``, queries as many as the keys (self-attention) or a chunk of
    :data:`LONG_CONTEXT_CHUNKS` (decode, chunked prefill against a cache: the causal alignment
    decides what they see), at most ``max_scores`` score elements (fewer queries when over);
    causal or not, the last keys padded out or not; head dims 16..128; moderate logits.

    ``max_keys``/``max_scores`` None: those of ``profile``, the name of the run's profile
    (:data:`~transpec.oracle.engine.profiles.LONG_CONTEXT_MAX_KEYS`,
    ``LONG_CONTEXT_MAX_SCORES``: 600 keys in ``ci``, 128k in ``thorough``).
    """
    from transpec.oracle.engine import profiles

    checked_dtype(dtype)
    if profile not in profiles.PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; expected one of {', '.join(profiles.PROFILES)}"
        )
    if max_keys is not None:
        positive_int("max_keys", max_keys)
    if max_scores is not None:
        positive_int("max_scores", max_scores)
    keys_cap = profiles.LONG_CONTEXT_MAX_KEYS[profile] if max_keys is None else max_keys
    scores_cap = profiles.LONG_CONTEXT_MAX_SCORES[profile] if max_scores is None else max_scores
    return _long_context_args(keys_cap, scores_cap)


# -- long norm inputs ------------------------------------------------------------------------

#: normalized lengths of the norms' long-input regime: hidden sizes just past and one short of
#: powers of two (a reduction split in tiles of 1024 or 4096 has a tail there)
LONG_NORM_FEATURES: tuple[int, ...] = (1000, 1025, 2047, 4097, 8193)
#: numbers of rows of that regime (tokens): tile multiples and one past or short of them
LONG_NORM_ROWS: tuple[int, ...] = (1, 2, 17, 255, 257, 4095, 4097, 8193, 16385)


@st.composite
def _long_norm_args(
    draw: st.DrawFn, centered: bool, dtype: str, max_elements: int
) -> dict[str, Any]:
    features = draw(st.sampled_from(LONG_NORM_FEATURES))
    rows = min(draw(st.sampled_from(LONG_NORM_ROWS)), max(1, max_elements // features))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = seeded_rng(seed)
    row_scale = np.exp2(np.round(rng.uniform(-3.0, 3.0, size=(rows, 1))))
    offset = rng.uniform(-2.0, 2.0, size=(rows, 1)) if centered else 0.0
    x = row_scale * (rng.standard_normal((rows, features)) + offset)
    args: dict[str, Any] = {"x": x, "normalized_shape": (features,)}
    args["weight"] = rng.normal(1.0, 0.5, size=features) if draw(st.booleans()) else None
    if centered:
        args["bias"] = rng.normal(0.0, 1.0, size=features) if draw(st.booleans()) else None
    args["eps"] = float(draw(st.sampled_from((1e-5, 1e-6))))
    return args


def long_norm_inputs(
    dtype: str,
    *,
    centered: bool,
    profile: str = "ci",
    max_elements: int | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``layer_norm`` (``centered``: with a bias) or ``rms_norm`` on long inputs: x of
    (rows, features), features from :data:`LONG_NORM_FEATURES`, rows from
    :data:`LONG_NORM_ROWS` (fewer when over ``max_elements``, one at least), rows of different
    scale (and offset for LayerNorm), a weight (and bias) or none, eps 1e-5 or 1e-6.

    ``max_elements`` None: that of ``profile``, the name of the run's profile
    (:data:`~transpec.oracle.engine.profiles.LONG_NORM_MAX_ELEMENTS`: 16,384 in ``ci``, past
    the reference's own sampling threshold of 2²⁵ elements in ``thorough``).
    """
    from transpec.oracle.engine import profiles

    dt = checked_dtype(dtype)
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {centered!r}")
    if profile not in profiles.PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; expected one of {', '.join(profiles.PROFILES)}"
        )
    if max_elements is not None:
        positive_int("max_elements", max_elements)
    cap = profiles.LONG_NORM_MAX_ELEMENTS[profile] if max_elements is None else max_elements
    return _long_norm_args(centered, dt, cap)


# -- softmax ---------------------------------------------------------------------------------


@st.composite
def _softmax_args(
    draw: st.DrawFn,
    dtype: str,
    max_dims: int,
    logits: tuple[str, ...],
    neg_inf: bool,
    max_len: int,
) -> dict[str, Any]:
    ndim = draw(st.integers(1, max_dims))
    axis_len = draw(lengths(max_value=max_len))
    other = draw(st.lists(st.integers(1, 6), min_size=ndim - 1, max_size=ndim - 1))
    dim = draw(st.integers(-ndim, ndim - 1))
    regime = draw(st.sampled_from(logits))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = seeded_rng(seed)
    # build with the softmax axis last, then move it into place
    x = scaled_rows(rng, (*other, axis_len), 2.0)
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    peak = np.where(peak > 0, peak, 1.0)
    if regime == "large":
        target = large_logit_target(rng, dtype, size=peak.shape)
    else:
        target = rng.uniform(0.5, 8.0, size=peak.shape)
    x = x / peak * target
    if neg_inf and axis_len > 1 and rng.random() < 0.3:
        holes = rng.random(x.shape) < 0.2
        holes[..., int(rng.integers(0, axis_len))] = False  # no row entirely -inf
        x = np.where(holes, -np.inf, x)
    x = np.moveaxis(x, -1, dim % ndim)
    return {"x": x, "dim": dim}


def softmax_inputs(
    dtype: str,
    *,
    max_dims: int = 4,
    max_len: int = 64,
    logits: Sequence[str] = LOGIT_REGIMES,
    neg_inf: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``softmax(x, dim)``: any axis of a 1..``max_dims``-dim array; rows scaled
    to a drawn peak |x| (moderate ≤ 8, or beyond exp's overflow of ``dtype``); with ``neg_inf``
    some entries are -inf (never a whole row)."""
    dt = checked_dtype(dtype)
    positive_int("max_dims", max_dims)
    positive_int("max_len", max_len)
    if not isinstance(neg_inf, bool):
        raise TypeError(f"neg_inf must be a bool, got {neg_inf!r}")
    return _softmax_args(dt, max_dims, selection("logits", logits, LOGIT_REGIMES), neg_inf, max_len)


@st.composite
def _softmax_statistic_args(draw: st.DrawFn, dtype: str) -> dict[str, Any]:
    rows = draw(st.integers(16, 48))
    axis_len = draw(st.sampled_from((256, 384, 512, 777, 1024)))
    rng = seeded_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((rows, axis_len))
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    x = x / peak * rng.uniform(2.0, 8.0, size=peak.shape)
    return {"x": x, "dim": -1}


def softmax_statistic_inputs(dtype: str) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``softmax(x, dim=-1)`` for the error statistic: 16..48 rows (independent
    samples, docs/tolerance.md §4.1) of 256..1024 logits, each row's peak |x| in [2, 8]: long
    rows, where a sum in a precision coarser than the declared one errs ~sqrt(n)·u."""
    return _softmax_statistic_args(checked_dtype(dtype))


# -- norms -----------------------------------------------------------------------------------


def _eps_option(eps: Sequence[float] | None) -> tuple[float, ...] | None:
    if eps is None:
        return None
    values = tuple(float(e) for e in eps)
    if not values or not all(math.isfinite(e) and e > 0 for e in values):
        raise ValueError(
            f"eps must be a non-empty sequence of positive finite numbers, got {eps!r}"
        )
    return values


def _eps_choices(dtype: str, regime: str) -> tuple[float, ...]:
    if regime == "small_variance" and dtype == "float16":
        # sqrt(eps) must be a normal float16 with full precision (smallest normal 6.1e-5)
        return (1e-5, 1e-4, 1e-3)
    return (1e-5, 1e-6, 1e-12, 1e-3)


def _large_mean_on_grid(
    rng: np.random.Generator,
    dtype: str,
    z: np.ndarray,
    axes: tuple[int, ...],
    group_shape: tuple[int, ...],
) -> np.ndarray:
    """Rows x = (m + d)·h on the grid of ``dtype`` (:data:`LARGE_MEAN_SPREAD_ULPS`): h a power
    of two (the spacing at μ, chosen so that σ is 2^-1..2^3, far above every eps drawn), m an
    integer in the upper quarter of the binade [2^(p-1), 2^p) (the largest |μ|/σ for the
    spread), d integer offsets of the drawn spread (never a constant row)."""
    low, high = LARGE_MEAN_SPREAD_ULPS[dtype]
    spread = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    digits = FORMATS[dtype].digits
    sigma = float(2.0 ** rng.uniform(-1.0, 3.0))
    h = float(2.0 ** round(math.log2(sigma / spread)))
    top = 2**digits
    m = rng.integers(3 * top // 4, top - 8, size=group_shape).astype(np.float64)
    m = m * rng.choice([-1.0, 1.0], size=group_shape)
    if spread >= 1.0:
        d = np.round(spread * z)
    else:  # sparse ±1: density spread² gives σ ≈ spread ulps
        u = rng.random(z.shape)
        d = np.where(u < spread**2 / 2, 1.0, np.where(u > 1.0 - spread**2 / 2, -1.0, 0.0))
    # never a constant row: the first element of each group one ulp up, the last one down
    flat = d.reshape(*group_shape[: d.ndim - len(axes)], -1)
    flat[..., 0] = np.maximum(flat[..., 0], 1.0)
    flat[..., -1] = np.minimum(flat[..., -1], -1.0)
    return (m + flat.reshape(d.shape)) * h


@st.composite
def _norm_args(
    draw: st.DrawFn,
    centered: bool,
    dtype: str,
    regimes: tuple[str, ...],
    normalized_dims: tuple[int, int],
    features: tuple[int, int],
    weight: st.SearchStrategy[bool],
    bias: st.SearchStrategy[bool] | None,
    default_eps: bool,
    eps_choices: tuple[float, ...] | None,
    min_rows: int,
) -> dict[str, Any]:
    """The arguments of a norm. ``centered``: the norm subtracts the mean (LayerNorm), so rows
    get an offset and the σ² ≈ eps regime is built around the mean; otherwise the mean square
    is what meets eps (RMSNorm). ``bias``: whether to pass a bias, None for a norm without one.
    ``default_eps``: eps is sometimes None outside the σ² ≈ eps regime."""
    regime = draw(st.sampled_from(regimes))
    n_axes = draw(st.integers(*normalized_dims))
    lead = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    if regime == "large_mean" and dtype in LARGE_MEAN_SPREAD_ULPS:
        # each row's one-pass cancellation is a draw of its own: many rows, many chances
        min_rows = max(min_rows, LARGE_MEAN_ROWS)
    if math.prod(lead) < min_rows:
        lead = (*lead, -(-min_rows // math.prod(lead)))
    if regime == "small_n":
        normalized = tuple(draw(st.lists(st.integers(1, 3), min_size=n_axes, max_size=n_axes)))
        if math.prod(normalized) < 2:
            normalized = (*normalized[:-1], 2)
    else:
        last = draw(lengths(min_value=features[0], max_value=features[1]))
        inner = tuple(draw(st.lists(st.integers(1, 5), min_size=n_axes - 1, max_size=n_axes - 1)))
        normalized = (*inner, last)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = seeded_rng(seed)
    shape = (*lead, *normalized)
    axes = tuple(range(-len(normalized), 0))
    z = rng.standard_normal(shape)
    # eps=None (the dtype's default) only outside the σ² ≈ eps regime, whose eps must be known
    use_default_eps = default_eps and regime != "small_variance" and draw(st.booleans())
    eps: float | None = None
    eps_value = 0.0
    if not use_default_eps:
        choices = eps_choices if eps_choices is not None else _eps_choices(dtype, regime)
        eps = float(draw(st.sampled_from(choices)))
        eps_value = eps
    if regime == "small_variance":
        # σ² (or mean(x²) for RMSNorm) within a factor 10 of eps, per normalized group
        ratio = np.exp(rng.uniform(math.log(0.1), math.log(10.0), size=lead + (1,) * n_axes))
        sigma = np.sqrt(eps_value * ratio)
        z = z - z.mean(axis=axes, keepdims=True) if centered else z
        z = z / np.sqrt(np.mean(z * z, axis=axes, keepdims=True) + 1e-300)
        x = sigma * z
        if centered:
            x = x + sigma * rng.uniform(-4.0, 4.0, size=sigma.shape)
    elif regime == "large_mean" and dtype in LARGE_MEAN_SPREAD_ULPS:
        x = _large_mean_on_grid(rng, dtype, z, axes, lead + (1,) * n_axes)
    elif regime == "large_mean":
        mean_ratio = LARGE_MEAN_RATIO[dtype] * float(2.0 ** rng.uniform(-3.0, 0.0))
        sigma_l = float(2.0 ** rng.uniform(-3.0, 3.0))
        mu = mean_ratio * sigma_l * rng.choice([-1.0, 1.0], size=lead + (1,) * n_axes)
        x = mu + sigma_l * z
    else:
        spread = rng.uniform(0.0, 4.0)
        row_scale = np.exp2(np.round(rng.uniform(-spread, spread, size=lead + (1,) * n_axes)))
        offset = rng.uniform(-2.0, 2.0, size=lead + (1,) * n_axes) if centered else 0.0
        x = row_scale * (z + offset)
    args: dict[str, Any] = {"x": x, "normalized_shape": normalized}
    args["weight"] = rng.normal(1.0, 0.5, size=normalized) if draw(weight) else None
    if bias is not None:
        args["bias"] = rng.normal(0.0, 1.0, size=normalized) if draw(bias) else None
    args["eps"] = eps
    return args


def layer_norm_inputs(
    dtype: str,
    *,
    regimes: Sequence[str] = LAYER_NORM_REGIMES,
    min_normalized_dims: int = 1,
    max_normalized_dims: int = 3,
    min_features: int = 2,
    max_features: int = 64,
    weight: bool | None = None,
    bias: bool | None = None,
    eps: Sequence[float] | None = None,
    min_rows: int = 1,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``layer_norm(x, normalized_shape, weight, bias, eps)``.

    Regimes: ``"standard"`` (rows of different scale and offset), ``"small_n"`` (2..27
    normalized elements), ``"small_variance"`` (σ² within ×10 of eps), ``"large_mean"``
    (|μ|/σ up to :data:`LARGE_MEAN_RATIO` of the dtype). ``weight``/``bias``: True, False or
    None (both). The last normalized dim comes from :func:`lengths` (occasionally 97..300).
    ``min_rows``: at least this many normalized groups (the statistical check needs many rows:
    the rounding of a row's mean and 1/σ is shared by the whole row). ``eps``: the values eps
    is drawn from (default: 1e-5, 1e-6, 1e-12, 1e-3; for float16's
    σ² ≈ eps regime 1e-5, 1e-4, 1e-3, so that sqrt(eps) is a normal float16).
    """
    dt = checked_dtype(dtype)
    chosen = selection("regimes", regimes, LAYER_NORM_REGIMES)
    positive_int("min_normalized_dims", min_normalized_dims)
    positive_int("max_normalized_dims", max_normalized_dims, minimum=min_normalized_dims)
    positive_int("min_features", min_features, minimum=2)
    positive_int("max_features", max_features, minimum=min_features)
    return _norm_args(
        centered=True,
        dtype=dt,
        regimes=chosen,
        normalized_dims=(min_normalized_dims, max_normalized_dims),
        features=(min_features, max_features),
        weight=tristate("weight", weight),
        bias=tristate("bias", bias),
        default_eps=False,
        eps_choices=_eps_option(eps),
        min_rows=positive_int("min_rows", min_rows),
    )


def rms_norm_inputs(
    dtype: str,
    *,
    regimes: Sequence[str] = RMS_NORM_REGIMES,
    min_normalized_dims: int = 1,
    max_normalized_dims: int = 3,
    min_features: int = 2,
    max_features: int = 64,
    weight: bool | None = None,
    default_eps: bool = True,
    eps: Sequence[float] | None = None,
    min_rows: int = 1,
) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments of ``rms_norm(x, normalized_shape, weight, eps)``; regimes as
    :func:`layer_norm_inputs` (``"small_variance"``: mean(x²) within ×10 of eps). With
    ``default_eps`` eps is sometimes None (the dtype's machine epsilon 2u)."""
    dt = checked_dtype(dtype)
    chosen = selection("regimes", regimes, RMS_NORM_REGIMES)
    positive_int("min_normalized_dims", min_normalized_dims)
    positive_int("max_normalized_dims", max_normalized_dims, minimum=min_normalized_dims)
    positive_int("min_features", min_features, minimum=2)
    positive_int("max_features", max_features, minimum=min_features)
    if not isinstance(default_eps, bool):
        raise TypeError(f"default_eps must be a bool, got {default_eps!r}")
    return _norm_args(
        centered=False,
        dtype=dt,
        regimes=chosen,
        normalized_dims=(min_normalized_dims, max_normalized_dims),
        features=(min_features, max_features),
        weight=tristate("weight", weight),
        bias=None,
        default_eps=default_eps,
        eps_choices=_eps_option(eps),
        min_rows=positive_int("min_rows", min_rows),
    )


def inputs(component: str, dtype: str, **options: Any) -> st.SearchStrategy[dict[str, Any]]:
    """The default strategy of ``component`` ("softmax", "attention", "layer_norm", "rms_norm")."""
    table = {
        "softmax": softmax_inputs,
        "attention": attention_inputs,
        "layer_norm": layer_norm_inputs,
        "rms_norm": rms_norm_inputs,
    }
    if component not in table:
        raise ValueError(f"{component} is not one of the kernels {', '.join(table)}")
    return table[component](dtype, **options)  # type: ignore[operator]
