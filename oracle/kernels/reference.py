"""The float64 reference of every building block, under any declared :class:`Conventions`.

The numbers come from the kernels of :mod:`transpec.oracle.kernels._kernels` (generated from the
SymPy definitions); this module turns a component call into kernel calls: it validates the
arguments, applies the conventions (mask polarity, finite fills, causal alignment, fully masked
rows, GQA head map, norm variants) and computes, next to the value, what the tolerance model of
:mod:`transpec.oracle.kernels.tolerance` needs:

* ``abs_value`` -- the *componentwise absolute-value reference*: the same computation with every
  input replaced by its absolute value where the rounding errors scale with it.

  ==============  ====================================================================
  softmax         :math:`p` itself (every term of the sum is positive)
  attention       :math:`P|V|` (the output is a convex combination of value rows)
  layer_norm      :math:`(|x-\\mu| + \\overline{|x|})/\\sigma \\cdot |w| + |b|`
  rms_norm        :math:`|x|/r \\cdot |w'|` (:math:`w' = w` or :math:`1+w`)
  ==============  ====================================================================

  (:math:`\\overline{|x|}` is the mean of :math:`|x|` over the normalized dims: the
  absolute-value computation of :math:`\\mu`, whose rounding error is
  :math:`\\gamma_n \\overline{|x|}` and reaches every output through :math:`x - \\mu`.)

* ``terms`` -- per-element or per-row quantities the bound is made of (reduction lengths, score
  magnitudes weighted by the probabilities, :math:`1/\\sigma`, ...). Each block documents its own.
  Every block also has ``row_length``: the number of output elements computed from one shared
  row (a softmax row, one query's output row, a normalized slice), by which the statistical
  check (:func:`transpec.oracle.engine.compare.error_statistic`) counts independent rows.

Everything is float64 and vectorized (matrix products go to BLAS); any number of leading
batch/head dims is accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import queue
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np

from transpec.oracle import components
from transpec.oracle.engine import blas
from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype, unit_roundoff
from transpec.oracle.kernels import _kernels as kernels
from transpec.oracle.kernels import upward
from transpec.spec.conventions import CANONICAL, Conventions

COMPONENTS: tuple[str, ...] = ("softmax", "attention", "layer_norm", "rms_norm")


@dataclass(frozen=True)
class Reference:
    """A reference output and what the tolerance model needs to judge an implementation of it.

    ``value``: the float64 reference. ``abs_value``: the componentwise absolute-value reference
    (same shape; see the module docstring). ``terms``: named per-element quantities (arrays
    broadcastable to ``value``, or plain numbers). ``weights``: the attention probabilities
    (shape (..., Hq, Lq, Lk)) when the block computes them. ``rows``: when the reference
    holds only some query rows (axis -2 of the output), their indices, and ``full_shape`` the
    shape of the whole output; None when it holds every row. A norm's rows are those of its
    input's leading dims flattened (``row_layout="flat"``: value (len(rows), *normalized)).
    """

    value: FloatArray
    abs_value: FloatArray
    terms: Mapping[str, FloatArray | float] = field(default_factory=dict)
    weights: FloatArray | None = None
    rows: tuple[int, ...] | None = None
    full_shape: tuple[int, ...] | None = None
    #: where the judged rows sit in the whole output (:data:`~transpec.oracle.kernels.rows.
    #: ROW_LAYOUTS`): attention's query axis, or a norm's flattened leading dims
    row_layout: str = "query"


# -- argument checking -------------------------------------------------------------------------


def _as_float_array(x: Any, name: str) -> FloatArray:
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy raises many kinds
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def _check_conventions(conventions: Any) -> Conventions:
    if not isinstance(conventions, Conventions):
        raise TypeError(f"conventions must be a Conventions, got {type(conventions).__name__}")
    return conventions


def _normalized_axes(x: FloatArray, normalized_shape: Any, name: str) -> int:
    if isinstance(normalized_shape, (int, np.integer)):
        shape: tuple[int, ...] = (int(normalized_shape),)
    else:
        try:
            shape = tuple(int(s) for s in normalized_shape)
        except TypeError:
            raise TypeError(
                f"{name}: normalized_shape must be an int or a sequence of ints"
            ) from None
    if len(shape) == 0:
        raise ValueError(f"{name}: normalized_shape must name at least one dimension")
    if len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        raise ValueError(
            f"{name}: normalized_shape {list(shape)} does not match the trailing dims of "
            f"x with shape {list(x.shape)}"
        )
    if math.prod(shape) == 0:
        raise ValueError(f"{name}: normalized_shape {list(shape)} has no elements")
    return len(shape)


def _check_param(p: Any, name: str, shape: tuple[int, ...], block: str) -> FloatArray | None:
    if p is None:
        return None
    arr = _as_float_array(p, f"{block}: {name}")
    if arr.shape != shape:
        raise ValueError(
            f"{block}: {name} has shape {list(arr.shape)}, expected normalized_shape {list(shape)}"
        )
    return arr


def _check_eps(eps: Any, block: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise TypeError(f"{block}: eps must be a number, got {type(eps).__name__}")
    e = float(eps)
    if not math.isfinite(e) or e < 0:
        raise ValueError(f"{block}: eps must be finite and >= 0, got {eps!r}")
    return e


# -- softmax -----------------------------------------------------------------------------------


def softmax(x: Any, dim: int = -1, *, conventions: Conventions = CANONICAL) -> Reference:
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m) along ``dim``, m = max_j x_j.

    A slice that is entirely -inf gives NaN (0/0), whatever the conventions (they govern
    attention rows only); +inf or NaN inputs give NaN, as the formula does.

    ``abs_value`` is p itself. Terms (broadcastable to the value, along ``dim``):
    ``shift`` = |x_i - m| (0 where p_i = 0), ``mean_shift`` = sum_j p_j |x_j - m| per slice,
    ``n`` = the slice length.
    """
    _check_conventions(conventions)
    xa = _as_float_array(x, "softmax: x")
    if xa.ndim == 0:
        raise ValueError("softmax: x must have at least one dimension")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"softmax: dim must be an int, got {type(dim).__name__}")
    if not -xa.ndim <= int(dim) < xa.ndim:
        raise ValueError(f"softmax: dim {dim} out of range for x with {xa.ndim} dims")
    if xa.shape[int(dim)] == 0:
        raise ValueError("softmax: the softmax dimension is empty")
    xl = np.moveaxis(xa, int(dim), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        p = kernels.softmax(xl, xp=np)
        m = np.max(xl, axis=-1, keepdims=True)
        shift = np.where(p > 0, np.abs(xl - m), 0.0)
        mean_shift = np.sum(np.where(p > 0, p * shift, 0.0), axis=-1, keepdims=True)
    p = np.asarray(p, dtype=np.float64)
    terms: dict[str, FloatArray | float] = {
        "shift": np.moveaxis(shift, -1, int(dim)),
        "mean_shift": np.moveaxis(mean_shift, -1, int(dim)),
        "n": float(xl.shape[-1]),
        "row_length": float(xl.shape[-1]),
    }
    value = np.moveaxis(p, -1, int(dim))
    return Reference(value=value, abs_value=np.abs(value), terms=terms)


# -- attention ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionProblem:
    """The attention problem after conventions, before any (Lq, Lk) array exists.

    ``q`` (..., Lq, E); ``k``/``v`` (..., Lk, E/Ev) with the kv heads expanded per the GQA
    mapping; ``keep``: the boolean mask in transpec's meaning (True = attend), as given (at
    least 2 dims, not broadcast), or None; ``additive``: the float mask likewise (0 where
    none); ``causal_offset``: key j is visible to query i iff j <= i + offset (None without
    ``is_causal``); ``fill``: the finite value that replaces the scores of invisible keys, or
    None for -inf. :meth:`visible` and :meth:`additive_block` give any block of rows and keys,
    so that a streaming computation never holds more than one block of scores.
    """

    q: FloatArray
    k: FloatArray
    v: FloatArray
    keep: np.ndarray | None
    additive: FloatArray | None
    causal_offset: int | None
    fill: float | None
    scale: float
    softcap: float | None
    fully_masked_row: str
    score_shape: tuple[int, ...]

    @property
    def q_len(self) -> int:
        return int(self.q.shape[-2])

    @property
    def kv_len(self) -> int:
        return int(self.k.shape[-2])

    def visible(self, rows: np.ndarray, keys: slice) -> np.ndarray:
        """(len(rows), keys) or (..., len(rows), keys): True where key j is visible to query i
        (the boolean mask and the causal rule; broadcastable to the block of the scores)."""
        hidden = self.hidden_or_none(rows, keys)
        shape = (len(rows), len(np.arange(self.kv_len)[keys]))
        return (
            np.ones(shape, dtype=bool)
            if hidden is None
            else ~np.broadcast_to(hidden, (*hidden.shape[:-2], *shape))
        )

    def hidden_or_none(self, rows: np.ndarray, keys: slice) -> np.ndarray | None:
        """The complement of :meth:`visible` on a block, or None when every key of the block
        is visible to every row (broadcastable to the block of the scores)."""
        key_index = np.arange(self.kv_len)[keys]
        hidden: np.ndarray | None = None
        if self.causal_offset is not None and key_index[-1] > int(rows.min()) + self.causal_offset:
            hidden = key_index[None, :] > rows[:, None] + self.causal_offset
        if self.keep is not None:
            masked = ~_mask_block(self.keep, rows, keys)
            hidden = masked if hidden is None else hidden | masked
        return hidden

    def additive_block(self, rows: np.ndarray, keys: slice) -> FloatArray | None:
        """The additive mask on a block of rows and keys (broadcastable), or None."""
        return None if self.additive is None else _mask_block(self.additive, rows, keys)


def _mask_block(mask: np.ndarray, rows: np.ndarray, keys: slice) -> np.ndarray:
    """``mask`` (..., Lq or 1, Lk or 1) restricted to ``rows`` and ``keys`` (size-1 axes kept)."""
    if mask.shape[-1] != 1:
        mask = mask[..., keys]
    if mask.shape[-2] != 1:
        mask = mask[..., rows, :]
    return mask


@dataclass(frozen=True)
class AttentionSetup:
    """The attention problem after conventions: expanded K/V, masks and scale.

    ``visible``: keys a query may attend to by the boolean mask and the causal mask (broadcast
    to the score shape); ``additive``: the float mask (0 where none); ``fill``: the finite value
    that replaces the scores of invisible keys, or None for -inf; ``dead``: (..., Lq, 1), True
    on rows whose every score is -inf (``fully_masked_row`` decides their output).
    """

    q: FloatArray
    k: FloatArray
    v: FloatArray
    visible: np.ndarray
    additive: FloatArray | None
    fill: float | None
    scale: float
    softcap: float | None
    fully_masked_row: str
    dead: np.ndarray


def attention_problem(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
) -> AttentionProblem:
    """Validate attention arguments and resolve every convention, without materializing any
    (Lq, Lk) array (the GQA kv heads are expanded)."""
    conventions = _check_conventions(conventions)
    qa = _as_float_array(q, "attention: q")
    ka = _as_float_array(k, "attention: k")
    va = _as_float_array(v, "attention: v")
    for name, a in (("q", qa), ("k", ka), ("v", va)):
        if a.ndim < 2:
            raise ValueError(f"attention: {name} must have at least 2 dims (L, E), got {a.ndim}")
    if not qa.ndim == ka.ndim == va.ndim:
        raise ValueError(
            f"attention: q, k, v must have the same number of dims, got "
            f"{qa.ndim}, {ka.ndim}, {va.ndim}"
        )
    if qa.shape[-1] != ka.shape[-1]:
        raise ValueError(f"attention: q and k head dims differ ({qa.shape[-1]} vs {ka.shape[-1]})")
    if ka.shape[:-1] != va.shape[:-1]:
        raise ValueError(
            f"attention: k {list(ka.shape)} and v {list(va.shape)} must agree except in the "
            "last dim"
        )
    if qa.shape[-1] == 0 or ka.shape[-2] == 0:
        raise ValueError("attention: empty head dim or no keys")
    if isinstance(is_causal, (np.bool_,)):
        is_causal = bool(is_causal)
    if not isinstance(is_causal, bool):
        raise TypeError(f"attention: is_causal must be a bool, got {type(is_causal).__name__}")
    if not isinstance(enable_gqa, (bool, np.bool_)):
        raise TypeError(f"attention: enable_gqa must be a bool, got {type(enable_gqa).__name__}")
    if qa.ndim >= 3:
        hq, hkv = qa.shape[-3], ka.shape[-3]
        if hq != hkv:
            if not enable_gqa:
                raise ValueError(
                    f"attention: q has {hq} heads and k/v have {hkv}; set enable_gqa=True "
                    "for grouped-query attention"
                )
            if hkv == 0 or hq % hkv != 0:
                raise ValueError(f"attention: {hq} query heads is not a multiple of {hkv} kv heads")
            group = hq // hkv
            if conventions.gqa_mapping == "interleave":
                ka = np.repeat(ka, group, axis=-3)
                va = np.repeat(va, group, axis=-3)
            else:
                reps = [1] * ka.ndim
                reps[-3] = group
                ka = np.tile(ka, reps)
                va = np.tile(va, reps)
        if qa.shape[:-3] != ka.shape[:-3]:
            try:
                np.broadcast_shapes(qa.shape[:-3], ka.shape[:-3])
            except ValueError:
                raise ValueError(
                    f"attention: batch dims of q {list(qa.shape[:-3])} and k/v "
                    f"{list(ka.shape[:-3])} do not broadcast"
                ) from None
    if scale is None:
        s = 1.0 / math.sqrt(qa.shape[-1])
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
            raise TypeError(f"attention: scale must be a number, got {type(scale).__name__}")
        s = float(scale)
        if not math.isfinite(s):
            raise ValueError(f"attention: scale must be finite, got {scale!r}")
    cap: float | None = None
    if softcap is not None:
        cap = float(softcap)
        if not math.isfinite(cap) or cap <= 0:
            raise ValueError(f"attention: softcap must be finite and > 0, got {softcap!r}")

    lq, lk = qa.shape[-2], ka.shape[-2]
    score_shape = (*np.broadcast_shapes(qa.shape[:-2], ka.shape[:-2]), lq, lk)
    keep: np.ndarray | None = None
    additive: FloatArray | None = None
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        try:
            np.broadcast_shapes(mask.shape, score_shape)
            if np.broadcast_shapes(mask.shape, score_shape) != score_shape:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"attention: attn_mask of shape {list(mask.shape)} does not broadcast to the "
                f"scores {list(score_shape)}"
            ) from None
        if mask.ndim < 2:
            mask = mask.reshape((1,) * (2 - mask.ndim) + mask.shape)
        if mask.dtype == np.bool_:
            keep = mask if conventions.bool_mask == "keep" else ~mask
        else:
            fm = _as_float_array(mask, "attention: attn_mask")
            if np.isnan(fm).any() or np.isposinf(fm).any():
                raise ValueError("attention: a float attn_mask may not hold NaN or +inf")
            additive = fm
    offset: int | None = None
    if is_causal:
        offset = conventions.causal_offset(lq, lk)
    fill = None if conventions.mask_fill is None else float(conventions.mask_fill)
    if fill is not None and conventions.mask_fill_mode == "add":
        # an added fill is an additive mask: 0 where the key is visible, the fill where the
        # boolean mask or the causal rule hides it (on top of a float mask, if any); no key is
        # then invisible, and only a float mask's -inf is a hard mask
        hidden = np.zeros((lq, lk), dtype=bool) if keep is None else ~keep
        if offset is not None:
            hidden = hidden | (np.arange(lk)[None, :] > np.arange(lq)[:, None] + offset)
        added = np.where(hidden, fill, 0.0)
        additive = added if additive is None else added + additive
        keep, offset, fill = None, None, None
    return AttentionProblem(
        q=qa,
        k=ka,
        v=va,
        keep=keep,
        additive=additive,
        causal_offset=offset,
        fill=fill,
        scale=s,
        softcap=cap,
        fully_masked_row=conventions.fully_masked_row,
        score_shape=score_shape,
    )


def attention_setup(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
) -> AttentionSetup:
    """Validate attention arguments and resolve every convention (shared with high precision)."""
    problem = attention_problem(
        q, k, v, attn_mask, is_causal, scale, enable_gqa, softcap, conventions=conventions
    )
    return _materialized(problem)


def _materialized(problem: AttentionProblem) -> AttentionSetup:
    """The :class:`AttentionSetup` of a problem: its masks over every row and key."""
    score_shape = problem.score_shape
    visible = np.broadcast_to(problem.visible(np.arange(problem.q_len), slice(None)), score_shape)
    fill = problem.fill
    hard = ~visible if fill is None else np.zeros(score_shape, dtype=bool)
    additive = problem.additive
    if additive is not None:
        hard = hard | np.isneginf(np.broadcast_to(additive, score_shape))
    return AttentionSetup(
        q=problem.q,
        k=problem.k,
        v=problem.v,
        visible=visible,
        additive=additive,
        fill=fill,
        scale=problem.scale,
        softcap=problem.softcap,
        fully_masked_row=problem.fully_masked_row,
        dead=np.all(hard, axis=-1, keepdims=True),
    )


def masked_scores(setup: AttentionSetup, *, xp: Any = np) -> Any:
    """T = where(visible, S + A, fill or -inf); S = scale Q K^T (softcapped), A additive."""
    s = kernels.attention_scores(setup.q, setup.k, setup.scale, setup.softcap, xp=xp)
    if setup.additive is not None:
        s = s + setup.additive
    fill = -math.inf if setup.fill is None else setup.fill
    return xp.where(setup.visible, s, fill)


def attention_core(
    setup: AttentionSetup, *, xp: Any = np, scores: Any = None
) -> tuple[Any, Any, np.ndarray]:
    """O and P by the kernels, in the namespace ``xp``; also the fully-masked-row indicator.

    T = :func:`masked_scores` (or ``scores``, when the caller already has them);
    P = softmax(T); O = P V. A row of T that is all -inf follows ``fully_masked_row``:
    P = 0 and O = 0 ("zero") or O = NaN ("nan").
    """
    t = masked_scores(setup, xp=xp) if scores is None else scores
    dead = np.broadcast_to(setup.dead, (*t.shape[:-1], 1))
    if dead.any():
        # a dead row would be 0/0; give it a finite row and fix the result afterwards
        t = xp.where(dead, 0.0, t)
    p = kernels.softmax(t, xp=xp)
    if dead.any():
        p = xp.where(dead, 0.0, p)
    o = xp.matmul(p, setup.v)
    if dead.any() and setup.fully_masked_row == "nan":
        o = xp.where(dead, math.nan, o)
    return o, p, dead


#: up to this many score elements (B·H·Lq·Lk; 32 MiB) :func:`attention` also returns the
#: weights P (an array of the score shape); above it, memory stays linear in the lengths
STREAMING_THRESHOLD = 1 << 22
#: up to this many score elements :func:`attention` computes the whole matrix at once (fewer
#: array operations: the fastest for the small inputs of most properties); above, in blocks
DIRECT_LIMIT = 1 << 20
#: rows and keys per block: the temporaries are a few (B·H, STREAM_BLOCK, STREAM_BLOCK)
#: float64 arrays (0.5 MiB each per head); smaller blocks skip more of the keys the causal rule
#: hides (a block of rows reads the keys up to its last row), larger ones make fewer array calls
STREAM_BLOCK = 256


def attention(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    softcap: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
    rows: Any = None,
    streaming: bool | None = None,
) -> Reference:
    """O = softmax(S + A) V with S = scale · Q Kᵀ (then softcap · tanh(S/softcap)).

    Shapes: q (..., Hq, Lq, E), k (..., Hkv, Lk, E), v (..., Hkv, Lk, Ev) -> (..., Hq, Lq, Ev).
    Conventions applied: boolean mask polarity (``bool_mask``), finite ``mask_fill`` replacing
    the scores of masked keys (a fully masked row is then the mean of V), causal alignment
    (top-left: key j visible to query i iff j <= i; bottom-right: iff j <= i + Lk - Lq),
    ``attn_mask`` and ``is_causal`` together (both apply), the GQA head map (query head h reads
    kv head h // (Hq/Hkv) or h % Hkv; requires ``enable_gqa``), ``fully_masked_row`` for rows
    whose every score is -inf. Default scale 1/sqrt(E); any finite scale (negative too).

    ``rows``: query indices (a 1-D sequence of ints in [-Lq, Lq), any order, negative ones
    counted from the end); the reference is then that of those query rows only, in that order:
    value (..., Hq, len(rows), Ev), ``Reference.rows`` the indices (normalized) and
    ``Reference.full_shape`` the shape of the whole output. Query rows are independent, so
    each is exactly the corresponding row of the whole reference.

    Up to :data:`DIRECT_LIMIT` score elements the whole score matrix is computed at once
    (:func:`_attention_direct`); above, the computation runs over blocks of
    :data:`STREAM_BLOCK` query rows and keys (:func:`_attention_blocks`: the online-softmax
    merge for each row's maximum and normalizer, then every term block by block), in
    O(Lq·(E + Ev) + block²) memory per head, plus the weights P (``Reference.weights``,
    (..., Hq, Lq, Lk)) when the score matrix has at most :data:`STREAMING_THRESHOLD` elements.
    ``streaming``: True always streams and never keeps the weights; False always computes the
    whole matrix at once (with the weights, whatever its size). All give the same value and
    terms up to float64 rounding.

    ``abs_value`` = P|V| (where the streaming reference takes the float32 terms, an upper
    bound of it within a relative 2(E + b + 8)·2⁻²⁴, b keys per block: docs/tolerance.md
    §3.2.2). Terms (shapes broadcast to the output):

    * ``score_weighted`` = (P ∘ C)|V| and ``score_mean`` = Σ_j P_ij C_ij, where
      C_ij = |scale| Σ_e |q_ie||k_je| + |A_ij| bounds the magnitude of the score computation;
    * ``shift_weighted`` = (P ∘ D)|V| and ``shift_mean`` = Σ_j P_ij D_ij, D_ij = |T_ij - m_i|;
    * ``score_max`` = max_j C_ij and ``shift_max`` = max_j D_ij over keys with P_ij > 0;
    * ``sum_abs_v`` = Σ_j |v_j| over visible keys, ``v_range`` = max_j v_j - min_j v_j and
      ``max_abs_v`` over all keys (per column; the convex-hull cap of the bound);
    * ``n_dot`` = E, ``n_keys`` = Lk, ``softcap`` (0 when none), ``dead`` (1.0 on fully
      masked rows).
    """
    problem = attention_problem(
        q, k, v, attn_mask, is_causal, scale, enable_gqa, softcap, conventions=conventions
    )
    return _attention_of(problem, rows, streaming)


def _attention_of(problem: AttentionProblem, rows: Any, streaming: bool | None) -> Reference:
    """:func:`attention` of a resolved problem."""
    if streaming is not None and not isinstance(streaming, (bool, np.bool_)):
        raise TypeError(f"attention: streaming must be a bool or None, got {streaming!r}")
    if rows is not None:
        if streaming is False:
            raise ValueError("attention: rows are computed by the streaming reference")
        return _attention_blocks(problem, query_rows(rows, problem.q_len), STREAM_BLOCK)
    size = math.prod(problem.score_shape)
    if streaming is False or (streaming is None and size <= DIRECT_LIMIT):
        return _attention_direct(problem)
    small = size <= STREAMING_THRESHOLD
    return _attention_blocks(problem, None, STREAM_BLOCK, keep_weights=small and not streaming)


def query_rows(rows: Any, q_len: int, block: str = "attention") -> np.ndarray:
    """``rows`` as a 1-D int64 array of query indices in [0, q_len) (negative ones counted from
    the end); ``TypeError``/``ValueError`` for anything else (floats, bools, an empty or a
    multi-dimensional sequence, an index out of range)."""
    if isinstance(rows, (str, bytes)):
        raise TypeError(f"{block}: rows must be a sequence of ints, got {type(rows).__name__}")
    try:
        arr = np.asarray(rows)
    except Exception:
        raise TypeError(f"{block}: rows must be a sequence of ints") from None
    empty_list = arr.size == 0 and arr.dtype == np.float64  # np.asarray([]): refused below
    if (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)) and not empty_list:
        raise TypeError(f"{block}: rows must be ints, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{block}: rows must be a non-empty 1-D sequence, got shape {arr.shape}")
    idx = arr.astype(np.int64)
    if int(idx.min()) < -q_len or int(idx.max()) >= q_len:
        raise ValueError(
            f"{block}: rows must be in [-{q_len}, {q_len}) for {q_len} queries, got "
            f"{int(idx.min())}..{int(idx.max())}"
        )
    return np.where(idx < 0, idx + q_len, idx)


def _attention_direct(problem: AttentionProblem) -> Reference:
    """The reference over the whole (Lq, Lk) score matrix at once, by the generated kernels
    (:func:`attention_core`: softmax(T) V) and whole-matrix masks; the weights P kept.

    The few array operations it takes make it the fastest for small problems (at most
    :data:`DIRECT_LIMIT` score elements); :func:`_attention_blocks` computes the same value
    and terms over blocks (the tests hold the two to each other).
    """
    setup = _materialized(problem)
    with np.errstate(invalid="ignore", over="ignore"):
        t = masked_scores(setup, xp=np)
        o, p, dead = attention_core(setup, xp=np, scores=t)
        o = np.asarray(o, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        absv = np.abs(setup.v)
        pos = p > 0
        c = abs(setup.scale) * np.matmul(np.abs(setup.q), np.swapaxes(np.abs(setup.k), -1, -2))
        if setup.additive is not None:
            c = c + np.where(np.isfinite(setup.additive), np.abs(setup.additive), 0.0)
        if setup.fill is not None:
            c = np.where(setup.visible, c, 0.0)  # a replaced score is exact
        m = np.max(np.where(pos, t, -math.inf), axis=-1, keepdims=True)
        d = np.where(pos, np.abs(t - m), 0.0)
        pc = np.where(pos, p * c, 0.0)
        pd = np.where(pos, p * d, 0.0)
        vis = (setup.visible if setup.fill is None else np.ones_like(setup.visible)).astype(
            np.float64
        )
        if setup.additive is not None:
            vis = vis * (~np.isneginf(setup.additive))
        # the convex-hull cap uses the spread of V over all keys (per batch/head and column)
        vmax = np.max(setup.v, axis=-2, keepdims=True)
        vmin = np.min(setup.v, axis=-2, keepdims=True)
        vrange = np.where(dead, 0.0, vmax - vmin)
        vabs = np.where(dead, 0.0, np.maximum(np.abs(vmax), np.abs(vmin)))
    # an added fill of float64 magnitude (|fill| ~ 1e308) makes P*C overflow to inf on a row
    # whose keys are all masked: the bound is then capped by the spread of V, as designed
    with np.errstate(over="ignore", invalid="ignore"):
        terms: dict[str, FloatArray | float] = {
            "score_weighted": np.matmul(pc, absv),
            "score_mean": np.sum(pc, axis=-1, keepdims=True),
            "shift_weighted": np.matmul(pd, absv),
            "shift_mean": np.sum(pd, axis=-1, keepdims=True),
            "score_max": np.max(np.where(pos, c, 0.0), axis=-1, keepdims=True),
            "shift_max": np.max(d, axis=-1, keepdims=True),
            "sum_abs_v": np.matmul(vis, absv),
            "v_range": vrange,
            "max_abs_v": vabs,
            "n_dot": float(setup.q.shape[-1]),
            "n_keys": float(setup.k.shape[-2]),
            "row_length": float(o.shape[-1]),
            "softcap": 0.0 if setup.softcap is None else float(setup.softcap),
            "dead": dead.astype(np.float64),
        }
    return Reference(value=o, abs_value=np.matmul(p, absv), terms=terms, weights=p)


class _ScoreBlock(NamedTuple):
    """The masked scores T of a block of rows and keys and the masks they were made with."""

    keys: slice
    t: FloatArray
    hidden: np.ndarray | None  # True where a key is invisible (None: see ``causal_only``)
    additive: FloatArray | None
    live: np.ndarray  # (..., rows, 1): the row has a score that is not -inf by the masks
    causal_only: bool  # the causal rule alone hid keys (T is -inf exactly there)


def _score_block(
    problem: AttentionProblem,
    q: FloatArray,
    rows: np.ndarray,
    keys: slice,
    out: FloatArray | None = None,
) -> _ScoreBlock:
    """T = where(visible, S + A, fill or -inf) on one block, into ``out`` when given.

    S is :func:`~transpec.oracle.kernels._kernels.attention_scores` computed in place
    (scale·(q Kᵀ), then softcap·tanh(S/softcap): the same operations in the same order, hence
    the same numbers). Where only the causal rule hides keys, each row's hidden keys are a
    suffix of the block, filled row by row.
    """
    k_t = np.swapaxes(problem.k[..., keys, :], -1, -2)
    t = np.matmul(q, k_t) if out is None else np.matmul(q, k_t, out=out)
    t *= problem.scale
    if problem.softcap is not None:
        t /= problem.softcap
        np.tanh(t, out=t)
        t *= problem.softcap
    add = problem.additive_block(rows, keys)
    if add is not None:
        t += add
    fill = -math.inf if problem.fill is None else problem.fill
    offset = problem.causal_offset
    width = keys.stop - keys.start
    live_shape = (*t.shape[:-1], 1)
    if problem.keep is None and add is None and offset is not None and problem.fill is None:
        first_hidden = np.clip(rows + offset + 1 - keys.start, 0, width)  # per row
        if width < 128:  # short rows: one masked copy costs less than a loop over rows
            np.copyto(t, fill, where=np.arange(width)[None, :] >= first_hidden[:, None])
        else:
            for r in np.flatnonzero(first_hidden < width):
                t[..., r, first_hidden[r] :] = fill
        live = np.broadcast_to((first_hidden > 0)[:, None], live_shape)
        return _ScoreBlock(keys, t, None, None, live, True)
    hidden = problem.hidden_or_none(rows, keys)
    hard: np.ndarray | None = None
    if hidden is not None:
        np.copyto(t, fill, where=hidden)
        if problem.fill is None:
            hard = hidden
    if add is not None:
        neg = np.isneginf(add)
        hard = neg if hard is None else hard | neg
    if hard is None:
        live = np.ones(live_shape, dtype=bool)
    else:
        live = ~np.all(np.broadcast_to(hard, t.shape), axis=-1, keepdims=True)
    return _ScoreBlock(keys, t, hidden, add, live, False)


#: the streaming reference computes the bound's magnitudes in float32, corrected upward, where
#: :func:`float32_terms_apply` allows (False: always in float64)
FLOAT32_TERMS = True
#: where a weight P_ij = exp(T_ij − m_i)/ℓ_i is positive, its shift D_ij = m_i − T_ij is below
#: this: float64's exp is 0 below −745.2 (under half its smallest subnormal, 2⁻¹⁰⁷⁵)
SHIFT_LIMIT = 1024.0


def float32_terms_apply(problem: AttentionProblem) -> bool:
    """Whether the streaming reference may compute the bound's magnitudes in float32
    (:class:`_Float32Terms`): finite inputs, no additive mask (whose magnitudes, up to float64's
    largest, enter C element by element) and scores of float64 range (|scale|·max|q|·max|k|·E
    at most 2¹⁰⁰⁰, so that every T and every C is finite)."""
    if problem.additive is not None:
        return False
    arrays = (problem.q, problem.k, problem.v)
    if not all(np.isfinite(a).all() for a in arrays):
        return False
    top = abs(problem.scale) * float(np.max(np.abs(problem.q))) * float(np.max(np.abs(problem.k)))
    return top * problem.q.shape[-1] <= 2.0**1000


class _Float32Terms:
    """The magnitudes of the attention bound that are sums of nonnegative products, over key
    blocks in float32, each corrected upward into a bound of the float64 term
    (:mod:`transpec.oracle.kernels.upward`; docs/tolerance.md §3.2.2).

    Per block of rows and keys: C' = |Q'||K'|ᵀ (one float32 product of the scaled |Q| and |K|),
    D = m − T rounded to float32, the maxima of C' and D over the keys with P > 0, and one float32
    product [P∘C'; P∘D; P; visible] · [|V'|, 1] giving (P∘C)|V|, (P∘D)|V|, P|V| (the reference's
    ``abs_value``) and Σ|v| over the visible keys, with the row sums Σ_j P_ij C_ij and
    Σ_j P_ij D_ij in the column of ones. The operands
    are scaled by exact powers of two: each query row of |Q| and each head's |K| to a maximum in
    [0.5, 1), each column of |V| likewise; the scales come back exactly at the end. The scaled
    operands and the sums cover the whole batch and are made once; :meth:`add` takes one block
    of one chunk of the batch and heads.
    """

    def __init__(
        self,
        problem: AttentionProblem,
        q_sel: FloatArray,
        absv: FloatArray,
        block: int,
        count_visible: bool,
    ) -> None:
        """``q_sel``: the query rows computed; ``absv`` = |V|; ``block``: keys per block;
        ``count_visible``: also Σ|v| over visible keys."""
        batch = problem.score_shape[:-2]
        n_rows = q_sel.shape[-2]
        absq = np.abs(q_sel)
        q_exp = upward.exponents(np.max(absq, axis=-1, keepdims=True))  # (..., rows, 1)
        self.q_exp = _over_batch(q_exp, batch)
        self.q32 = _over_batch(upward.scaled_float32(absq, q_exp), batch)
        absk = np.abs(problem.k)
        k_exp = upward.exponents(np.max(absk, axis=(-2, -1), keepdims=True))
        self.k_exp = _over_batch(k_exp, batch)
        k32 = _over_batch(upward.scaled_float32(absk, k_exp), batch)
        self.k32_t = np.swapaxes(k32, -1, -2)
        v_exp = upward.exponents(np.max(absv, axis=-2, keepdims=True))  # (..., 1, Ev)
        self.v_exp = _over_batch(v_exp, batch)
        v32 = upward.scaled_float32(absv, v_exp)
        v32_ones = np.concatenate([v32, np.ones((*v32.shape[:-1], 1), np.float32)], -1)
        self.v32_ones = _over_batch(v32_ones, batch)
        self.problem = problem
        self.slabs = 4 if count_visible else 3
        ev = problem.v.shape[-1]
        self.sums = np.zeros((*batch, self.slabs, n_rows, ev + 1))
        self.score_max = np.zeros((*batch, n_rows, 1), np.float32)
        self.shift_max = np.zeros((*batch, n_rows, 1), np.float32)
        self.block = block
        e = problem.q.shape[-1]
        self.factor = upward.upward_factor(e + block + 5)
        self.loss = problem.kv_len * (6 * e + 2 * SHIFT_LIMIT + 8) * upward.TINY32
        self.scale_mantissa, self.scale_exp = math.frexp(abs(problem.scale))
        wide, narrow = (*batch, n_rows, ev), (*batch, n_rows, 1)
        names = ["score_weighted", "shift_weighted", "abs_value"]
        names += ["sum_abs_v"] if count_visible else []
        self.out: dict[str, FloatArray] = {name: np.empty(wide) for name in names}
        for name in ("score_mean", "shift_mean", "score_max", "shift_max"):
            self.out[name] = np.empty(narrow)

    def add(
        self,
        at: tuple[Any, ...],
        rs: slice,
        sb: _ScoreBlock,
        p: FloatArray,
        pos: np.ndarray,
        shifted: FloatArray,
        work: _Workspace,
    ) -> None:
        """Add the block of rows ``rs`` and keys ``sb.keys`` of the chunk ``at`` of the batch:
        weights ``p`` (float64), ``pos`` = P > 0, ``shifted`` = T − m (−D exactly: IEEE
        subtraction is antisymmetric; T − 0 on a fully masked row, where P = 0); ``work``:
        the calling thread's buffers."""
        keys = sb.keys
        chunk = p.shape[:-2]
        n_block, width = p.shape[-2], p.shape[-1]
        stack = _buffer_view(work.stack32, *chunk, self.slabs, n_block, width)
        c = _buffer_view(work.c32, *chunk, n_block, width)
        np.matmul(self.q32[at][..., rs, :], self.k32_t[at][..., keys], out=c)  # C' (scaled)
        if self.problem.fill is not None and sb.hidden is not None:
            np.copyto(c, 0.0, where=sb.hidden)  # a replaced score is exact
        d = _buffer_view(work.d32, *chunk, n_block, width)
        np.negative(shifted, out=d, casting="same_kind")  # D = m − T, rounded to float32
        # every weight positive (no hidden key, none underflowing): plain maxima, and no
        # 0·inf to clear in P∘D
        every = bool(pos.all())
        # the maxima over the keys with P > 0 (C', D >= 0 there: 0 where there are none)
        for top, x in ((self.score_max, c), (self.shift_max, d)):
            rows_top = top[at][..., rs, :]
            if every:
                block_max = np.max(x, axis=-1, keepdims=True)
            else:
                block_max = np.max(x, axis=-1, keepdims=True, where=pos, initial=0.0)
            np.maximum(rows_top, block_max, out=rows_top)
        pc, pd, p32 = stack[..., 0, :, :], stack[..., 1, :, :], stack[..., 2, :, :]
        np.copyto(p32, p, casting="same_kind")
        np.multiply(p32, c, out=pc)  # P∘C'
        np.multiply(p32, d, out=pd)  # P∘D: NaN where P = 0 and D = inf (T = -inf) ...
        if not every:
            np.fmax(pd, 0.0, out=pd)  # ... to 0
        if self.slabs == 4:
            np.copyto(stack[..., 3, :, :], True if sb.hidden is None else ~sb.hidden)
        flat = stack.reshape(*chunk, self.slabs * n_block, width)
        product = np.matmul(flat, self.v32_ones[at][..., keys, :])
        self.sums[at][..., rs, :] += product.reshape(*chunk, self.slabs, n_block, -1)

    def finish(self, at: tuple[Any, ...], rs: slice, dead: np.ndarray) -> None:
        """Correct the terms of the rows ``rs`` of the chunk ``at`` once every key block of
        theirs is added (``dead``: which of those rows are fully masked), into :meth:`terms`:
        (Ŝ + L)/(1 − k·u) scaled back, with k = E + b + 5 roundings (b keys per block) and
        absolute losses L = Lk·(6E + 2·SHIFT_LIMIT + 8)·2⁻¹²⁶ in the scaled units
        (docs/tolerance.md §3.2.2); exactly 0 on fully masked rows (where P = 0, every computed
        product is 0 and so is every exact one). Each block of rows is corrected by the thread
        that summed it, while its sums are in cache."""
        problem = self.problem
        ev = problem.v.shape[-1]
        any_dead = bool(dead.any())
        c_exp = self.q_exp[at][..., rs, :] + self.k_exp[at] + self.scale_exp
        v_exp = self.v_exp[at]
        sums = self.sums[at][..., rs, :]

        def corrected(
            name: str, s: np.ndarray, row_exp: Any, col_exp: Any = 0, mantissa: float = 1.0
        ) -> None:
            up = np.add(s, self.loss, dtype=np.float64)
            up = upward.scale_back(up, self.factor * mantissa, row_exp, col_exp)
            if any_dead:
                np.copyto(up, 0.0, where=dead)
            self.out[name][at][..., rs, :] = up

        pc, pd = sums[..., 0, :, :], sums[..., 1, :, :]
        m = self.scale_mantissa
        corrected("score_weighted", pc[..., :ev], c_exp, v_exp, m)
        corrected("score_mean", pc[..., ev:], c_exp, 0, m)
        corrected("shift_weighted", pd[..., :ev], 0, v_exp)
        corrected("shift_mean", pd[..., ev:], 0)
        corrected("score_max", self.score_max[at][..., rs, :], c_exp, 0, m)
        corrected("shift_max", self.shift_max[at][..., rs, :], 0)
        corrected("abs_value", sums[..., 2, :, :ev], 0, v_exp)
        if self.slabs == 4:
            corrected("sum_abs_v", sums[..., 3, :, :ev], 0, v_exp)

    def terms(self) -> dict[str, FloatArray]:
        """The terms and ``abs_value`` (P|V|), each corrected upward by :meth:`finish`."""
        return self.out


def _over_batch(a: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
    """``a`` (..., m, n) broadcast to the batch dims of the scores: (*batch, m, n), a view."""
    return np.broadcast_to(a, (*batch, *a.shape[-2:]))


_Task = TypeVar("_Task")


class _Workspace:
    """The work buffers of one thread of the streaming reference, for blocks of at most
    ``size`` score elements (flat; :func:`_buffer_view` shapes them): float64 scores T,
    T − m, weights, C and D, the mask P > 0, and the float32 C', D and stacked slabs of
    :class:`_Float32Terms`. Allocated once per thread: fresh allocations of large arrays cost
    more than the arithmetic."""

    def __init__(self, size: int, slabs: int) -> None:
        self.t, self.e, self.p, self.c, self.d = (np.empty(size) for _ in range(5))
        self.pos = np.empty(size, dtype=bool)
        self.c32, self.d32 = (np.empty(size, np.float32) for _ in range(2))
        self.stack32 = np.empty(slabs * size, np.float32)


#: threads of the streaming reference (None: one per core this process may run on). Blocks of
#: rows are independent and write disjoint parts of the outputs; each thread takes whole blocks
#: with BLAS held to one thread meanwhile (:mod:`~transpec.oracle.engine.blas`), so the
#: element-wise passes, half the work, run on every core rather than on one while BLAS alone
#: spreads. A block's operations
#: do not depend on which thread runs them; BLAS may pick another kernel for one thread than
#: for several, so the last bits can differ from a run on one thread, as they differ between
#: machines of other core counts (each within the reference's own float64 bound).
STREAM_THREADS: int | None = None


def _stream_threads(tasks: int) -> int:
    """How many threads take the streaming reference's ``tasks`` blocks: 1 where there is one
    block, one core, or no ``threadpoolctl`` to hold BLAS to one thread per block."""
    if tasks < 2:
        return 1
    wanted = STREAM_THREADS
    if wanted is None:
        try:
            wanted = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            wanted = os.cpu_count() or 1
    wanted = min(wanted, tasks)
    if wanted < 2 or not blas.can_hold():
        return 1
    return wanted


def _run_blocks(
    tasks: Sequence[_Task],
    run: Callable[[_Task, _Workspace], None],
    threads: int,
    make_workspace: Callable[[], _Workspace],
) -> None:
    """``run(task, workspace)`` for every task: in order on one workspace, or over
    ``threads`` threads, each with its own workspace, BLAS held to one thread meanwhile. The
    first exception of a task (or an interrupt) is raised once the tasks already started have
    ended; the others are not started."""
    if threads == 1:
        work = make_workspace()
        for task in tasks:
            run(task, work)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()
    for _ in range(threads):
        pool.put(make_workspace())

    def one(task: Any) -> None:
        work = pool.get()
        try:
            # numpy's error state is per thread: the same as the caller's
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                run(task, work)
        finally:
            pool.put(work)

    with blas.one_thread():
        executor = ThreadPoolExecutor(max_workers=threads)
        try:
            for future in [executor.submit(one, task) for task in tasks]:
                future.result()
        finally:
            # after an error or an interrupt (Ctrl-C), the blocks not yet started are dropped
            executor.shutdown(wait=True, cancel_futures=True)


def _buffer_view(buf: np.ndarray, *shape: int) -> np.ndarray:
    """The first prod(shape) elements of the flat work buffer ``buf``, as a contiguous array
    of ``shape``."""
    return buf[: math.prod(shape)].reshape(shape)


#: the streaming reference keeps the score blocks of its first pass for the second while they
#: hold at most this many elements per block of rows (64 MiB), and recomputes them beyond
SCORE_CACHE = 1 << 23


#: the streaming reference takes the batch and heads in chunks of at most this many score
#: elements per block of rows and keys (2 MiB of float64): its element-wise passes over a block
#: then run in cache, and its buffers are reused by the allocator rather than mapped afresh
STREAM_CHUNK = 1 << 18


def _batch_chunks(batch: tuple[int, ...], heads: int) -> list[tuple[Any, ...]]:
    """Indices of the chunks of the batch dims ``batch``, each at most ``heads`` elements of
    the last: integers for the leading dims, then a slice; ``(...,)`` (everything) when the
    whole batch fits in one chunk."""
    if not batch or math.prod(batch) <= heads:
        return [(Ellipsis,)]
    return [
        (*lead, slice(h0, min(h0 + heads, batch[-1])))
        for lead in np.ndindex(*batch[:-1])
        for h0 in range(0, batch[-1], heads)
    ]


def _attention_blocks(
    problem: AttentionProblem,
    rows: np.ndarray | None,
    block: int,
    *,
    keep_weights: bool = False,
    float32_terms: bool | None = None,
) -> Reference:
    """The value and every term of :func:`attention` over blocks of ``block`` query rows and
    keys; ``keep_weights``: also the weights P, (..., Lq, Lk).

    For each block of rows, a first pass over the key blocks computes the row maximum m_i and
    the normalizer ℓ_i = Σ_j exp(T_ij - m_i) by the online-softmax merge
    ℓ = ℓ_a·e^{m_a - m} + ℓ_b·e^{m_b - m} (``online_softmax_merge``, proved in
    ``spec/proofs.py``), and which rows are fully masked. With (m_i, ℓ_i) final, every weight
    P_ij = exp(T_ij - m_i)/ℓ_i is the direct one and every term of the tolerance model is a sum
    or a maximum over keys of per-key quantities: the second pass adds them block by block
    (O = PV; P|V|, (P∘C)|V|, (P∘D)|V|; Σ P C,
    Σ P D, max C, max D; Σ|v| over visible keys, from prefix sums of |V| when only the causal
    rule hides keys). The scores of the first pass are kept for the second up to
    :data:`SCORE_CACHE` elements per block of rows. Blocks of keys that the causal rule hides
    from every row of the block (and no finite ``mask_fill`` replaces) contribute nothing and
    are skipped.

    What belongs to the whole problem (|V|, the prefix sums, the float32 operands, the
    outputs) is made once. The batch and heads are then taken in chunks of at most
    :data:`STREAM_CHUNK` score elements per block, so that the element-wise passes run in
    cache, on work buffers allocated once; each chunk's results are written into the outputs
    in place. A batched matrix product multiplies head by head, so every head gets the same
    numbers whatever the chunk.

    ``float32_terms``: the magnitudes P|V| (``abs_value``), (P∘C)|V|, (P∘D)|V|, their row sums,
    the maxima of C and D and, under a boolean mask, Σ|v| are computed in float32 and corrected
    upward (:class:`_Float32Terms`, docs/tolerance.md §3.2.2; only where
    :func:`float32_terms_apply` allows) instead of in float64 (None: :data:`FLOAT32_TERMS`).
    The value O = PV is the same float64 product either way.
    """
    q_len, kv_len = problem.q_len, problem.kv_len
    row_index = np.arange(q_len) if rows is None else rows
    n_rows = len(row_index)
    batch = problem.score_shape[:-2]
    ev = problem.v.shape[-1]
    if float32_terms is None:
        float32_terms = FLOAT32_TERMS
    float32_terms = float32_terms and float32_terms_apply(problem)
    heads = max(1, STREAM_CHUNK // (min(block, n_rows) * min(block, kv_len)))
    chunks = _batch_chunks(batch, heads)
    chunk_size = math.prod(batch) if len(chunks) == 1 else heads
    # the whole problem's arrays, made once
    q_sel = _over_batch(problem.q if rows is None else problem.q[..., row_index, :], batch)
    absv = np.abs(problem.v)
    v_all = _over_batch(problem.v, batch)
    absv_all = _over_batch(absv, batch)
    out_shape = (*batch, n_rows, ev)
    row_shape = (*batch, n_rows, 1)
    value = np.zeros(out_shape)  # O = PV
    abs_value = np.zeros(out_shape)  # P|V|, when the float64 terms are taken
    score_w = np.zeros(out_shape)  # (P∘C)|V|
    shift_w = np.zeros(out_shape)  # (P∘D)|V|
    score_mean = np.zeros(row_shape)
    shift_mean = np.zeros(row_shape)
    score_max = np.zeros(row_shape)
    shift_max = np.zeros(row_shape)
    dead = np.zeros(row_shape, dtype=bool)
    weights = np.zeros((*batch, n_rows, kv_len)) if keep_weights else None
    scale_abs = abs(problem.scale)
    key_blocks = [slice(j, min(j + block, kv_len)) for j in range(0, kv_len, block)]
    # Σ_j |v_j| over visible keys: by prefix sums when only the causal rule can hide a key
    prefix = problem.additive is None and (problem.keep is None or problem.fill is not None)
    sum_abs_v = _visible_abs_v_sums(problem, absv, row_index) if prefix else np.zeros(out_shape)
    terms32: _Float32Terms | None = None
    if float32_terms:
        terms32 = _Float32Terms(problem, q_sel, absv, block, not prefix)
    else:
        absq = np.abs(q_sel)
        absk_t = np.swapaxes(_over_batch(np.abs(problem.k), batch), -1, -2)
    # work buffers of each thread, reused by every block (as contiguous views of its shape)
    size = chunk_size * min(block, n_rows) * block
    slabs = 0 if terms32 is None else terms32.slabs

    def hidden_block(block_rows: np.ndarray, keys: slice) -> bool:
        # the causal rule hides every key of the block from every row of it (-inf scores)
        offset = problem.causal_offset
        return (
            problem.fill is None
            and offset is not None
            and keys.start > int(block_rows.max()) + offset
        )

    parts = [problem if at == (Ellipsis,) else _batch_part(problem, at) for at in chunks]

    def run_rows(task: tuple[int, int], work: _Workspace) -> None:
        # one block of rows of one chunk of the batch and heads: its outputs are its own
        n, r0 = task
        at, part = chunks[n], parts[n]
        chunk = part.score_shape[:-2]
        n_chunk = math.prod(chunk)
        t_buf, e_buf, p_buf, c_buf, d_buf = work.t, work.e, work.p, work.c, work.d
        pos_buf = work.pos
        rs = slice(r0, min(r0 + block, n_rows))
        block_rows = row_index[rs]
        n_block = len(block_rows)
        qb = q_sel[at][..., rs, :]
        blocks = [keys for keys in key_blocks if not hidden_block(block_rows, keys)]
        cached = n_chunk * n_block * sum(k.stop - k.start for k in blocks) <= SCORE_CACHE
        single = len(blocks) == 1
        cache: list[_ScoreBlock] = []
        # pass 1: row maximum and normalizer by the online-softmax merge; dead rows
        m = np.full((*chunk, n_block, 1), -math.inf)
        ell = np.zeros_like(m)
        live = np.zeros(m.shape, dtype=bool)
        for keys in blocks:
            width = keys.stop - keys.start
            out = None if cached and not single else _buffer_view(t_buf, *chunk, n_block, width)
            sb = _score_block(part, qb, block_rows, keys, out)
            live |= sb.live
            m_new = np.maximum(m, np.max(sb.t, axis=-1, keepdims=True))
            shift = np.where(np.isneginf(m_new), 0.0, m_new)
            e = np.subtract(sb.t, shift, out=_buffer_view(e_buf, *chunk, n_block, width))
            p = np.exp(e, out=_buffer_view(p_buf, *chunk, n_block, width))
            ell = ell * np.exp(m - shift) + np.sum(p, axis=-1, keepdims=True)
            m = m_new
            if cached:
                cache.append(sb)
        dead_block = ~live
        shift = np.where(np.isneginf(m), 0.0, m)
        ell = np.where(dead_block, math.inf, ell)  # P = 0 on fully masked rows
        # pass 2: the weights and every term, block by block
        for i, keys in enumerate(blocks):
            width = keys.stop - keys.start
            if cached:
                sb = cache[i]
            else:
                t_out = _buffer_view(t_buf, *chunk, n_block, width)
                sb = _score_block(part, qb, block_rows, keys, t_out)
            e = _buffer_view(e_buf, *chunk, n_block, width)
            p = _buffer_view(p_buf, *chunk, n_block, width)
            if not single:  # with one block, pass 1 left T - m and exp(T - m) in the buffers
                np.subtract(sb.t, shift, out=e)
                np.exp(e, out=p)
            p /= ell  # P = exp(T - m) / ℓ
            pos = np.greater(p, 0.0, out=_buffer_view(pos_buf, *chunk, n_block, width))
            value[at][..., rs, :] += np.matmul(p, v_all[at][..., keys, :])
            if weights is not None:
                weights[at][..., rs, keys] = p
            if terms32 is not None:
                terms32.add(at, rs, sb, p, pos, e, work)
                continue
            c = _buffer_view(c_buf, *chunk, n_block, width)
            d = _buffer_view(d_buf, *chunk, n_block, width)
            np.subtract(m, sb.t, out=d)  # D = m - T >= 0 where P > 0
            np.matmul(absq[at][..., rs, :], absk_t[at][..., keys], out=c)
            c *= scale_abs
            if sb.additive is not None:
                c += np.where(np.isfinite(sb.additive), np.abs(sb.additive), 0.0)
            if problem.fill is not None and sb.hidden is not None:
                np.copyto(c, 0.0, where=sb.hidden)  # a replaced score is exact
            # the maxima over the keys with P > 0 (C, D >= 0 there: 0 where there are none)
            for top, x in ((score_max, c), (shift_max, d)):
                rows_top = top[at][..., rs, :]
                np.maximum(
                    rows_top,
                    np.max(x, axis=-1, keepdims=True, where=pos, initial=0.0),
                    out=rows_top,
                )
            c *= p  # P∘C (C is finite: 0 where P = 0)
            d *= p  # P∘D: NaN where P = 0 and D = inf (T = -inf) ...
            np.fmax(d, 0.0, out=d)  # ... to 0 (a dead row's P is 0 everywhere)
            abs_value[at][..., rs, :] += np.matmul(p, absv_all[at][..., keys, :])
            score_mean[at][..., rs, :] += np.sum(c, axis=-1, keepdims=True)
            shift_mean[at][..., rs, :] += np.sum(d, axis=-1, keepdims=True)
            score_w[at][..., rs, :] += np.matmul(c, absv_all[at][..., keys, :])
            shift_w[at][..., rs, :] += np.matmul(d, absv_all[at][..., keys, :])
            if not prefix:
                counted = np.ones(sb.t.shape[-2:])
                if problem.fill is None and sb.hidden is not None:
                    counted = counted * ~sb.hidden
                if sb.additive is not None:
                    counted = counted * ~np.isneginf(sb.additive)
                sum_abs_v[at][..., rs, :] += np.matmul(counted, absv_all[at][..., keys, :])
        dead[at][..., rs, :] = dead_block
        if terms32 is not None:
            terms32.finish(at, rs, dead_block)

    tasks = [(n, r0) for n in range(len(chunks)) for r0 in range(0, n_rows, block)]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        _run_blocks(tasks, run_rows, _stream_threads(len(tasks)), lambda: _Workspace(size, slabs))
        if problem.fully_masked_row == "nan" and dead.any():
            value = np.where(dead, math.nan, value)
        vmax = np.max(problem.v, axis=-2, keepdims=True)
        vmin = np.min(problem.v, axis=-2, keepdims=True)
        vrange = np.where(dead, 0.0, vmax - vmin)
        vabs = np.where(dead, 0.0, np.maximum(np.abs(vmax), np.abs(vmin)))
    terms: dict[str, FloatArray | float] = {
        "score_weighted": score_w,
        "score_mean": score_mean,
        "shift_weighted": shift_w,
        "shift_mean": shift_mean,
        "score_max": score_max,
        "shift_max": shift_max,
        "sum_abs_v": sum_abs_v,
        "v_range": vrange,
        "max_abs_v": vabs,
        "n_dot": float(problem.q.shape[-1]),
        "n_keys": float(kv_len),
        "row_length": float(ev),
        "softcap": 0.0 if problem.softcap is None else float(problem.softcap),
        "dead": dead.astype(np.float64),
    }
    if terms32 is not None:
        float32_values = dict(terms32.terms())
        abs_value = float32_values.pop("abs_value")
        terms.update(float32_values)
    return Reference(
        value=value,
        abs_value=abs_value,
        terms=terms,
        weights=weights,
        rows=None if rows is None else tuple(int(i) for i in row_index),
        full_shape=None if rows is None else (*batch, q_len, ev),
    )


def _batch_part(problem: AttentionProblem, at: tuple[Any, ...]) -> AttentionProblem:
    """The problem of one chunk of the batch and heads: ``at`` indexes the batch dims of the
    scores (integers, then a slice of the last), applied to every array broadcast to them."""
    batch = problem.score_shape[:-2]

    def part(a: np.ndarray | None) -> Any:
        if a is None:
            return None
        return _over_batch(a, batch)[at]

    heads = len(range(batch[-1])[at[-1]])
    return dataclasses.replace(
        problem,
        q=part(problem.q),
        k=part(problem.k),
        v=part(problem.v),
        keep=part(problem.keep),
        additive=part(problem.additive),
        score_shape=(heads, *problem.score_shape[-2:]),
    )


def _visible_abs_v_sums(
    problem: AttentionProblem, absv: FloatArray, rows: np.ndarray
) -> FloatArray:
    """Σ_j |v_j| over the keys visible to each query row when only the causal rule can hide a
    key (no additive mask; no boolean mask, or a finite fill that makes every key count):
    prefix sums of ``absv`` = |V| read at each row's last visible key. (..., len(rows), Ev)."""
    batch = problem.score_shape[:-2]
    if problem.causal_offset is None or problem.fill is not None:
        total = np.sum(absv, axis=-2, keepdims=True)
        return np.broadcast_to(total, (*batch, len(rows), absv.shape[-1])).copy()
    # prefix[..., j, :] = Σ_{j' <= j} |v_j'|, summed along a contiguous copy of the key axis
    # (the same additions in the same order, at half the time of a strided cumsum)
    by_column = np.ascontiguousarray(np.swapaxes(absv, -1, -2))
    prefix = np.swapaxes(np.cumsum(by_column, axis=-1, out=by_column), -1, -2)
    count = np.clip(rows + problem.causal_offset + 1, 0, problem.kv_len)  # keys 0..i+offset
    if len(rows) == problem.kv_len and np.array_equal(count, np.arange(1, problem.kv_len + 1)):
        sums = prefix  # every row i sees keys 0..i: the prefix sums themselves
    else:
        sums = prefix[..., np.maximum(count - 1, 0), :]
        if not count.all():
            sums = np.where((count > 0)[:, None], sums, 0.0)  # a row that sees no key
    shape = (*batch, len(rows), absv.shape[-1])
    return sums if sums.shape == shape else np.broadcast_to(sums, shape).copy()


# -- norms -------------------------------------------------------------------------------------


def layer_norm(
    x: Any,
    normalized_shape: int | Sequence[int],
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
    *,
    conventions: Conventions = CANONICAL,
) -> Reference:
    """y = (x - μ) / σ · w + b over the trailing ``normalized_shape`` dims.

    μ = mean(x); var = Σ(x - μ)² / n (``layer_norm_variance="biased"``) or / (n - 1)
    ("unbiased"); σ = sqrt(var + eps) (``layer_norm_eps="inside_sqrt"``) or sqrt(var) + eps
    ("added_to_std").

    ``abs_value`` = (|x - μ| + mean|x|) / σ · |w| + |b|. Terms: ``inv_sigma`` = 1/σ,
    ``mean_abs`` = mean|x|, ``mean_abs_dev`` = mean|x - μ|, ``var`` (the estimator in use),
    ``sd`` = sqrt(var), ``abs_centered`` = |x - μ|, ``abs_weight`` = |w| (1 when absent),
    ``abs_bias`` = |b| (0), ``n``, ``eps``, ``eps_inside`` (1.0 or 0.0), ``abs_mean`` = |μ|,
    ``mean_square`` = mean(x²), ``one_pass`` (1.0 when
    ``layer_norm_variance_algorithm="one_pass"`` is declared: the bound of that algorithm),
    ``divisor`` (n, or n - 1 for the unbiased variance).
    """
    conventions = _check_conventions(conventions)
    xa = _as_float_array(x, "layer_norm: x")
    n_axes = _normalized_axes(xa, normalized_shape, "layer_norm")
    shape = tuple(xa.shape[xa.ndim - n_axes :])
    w = _check_param(weight, "weight", shape, "layer_norm")
    b = _check_param(bias, "bias", shape, "layer_norm")
    e = _check_eps(eps, "layer_norm")
    n = math.prod(shape)
    unbiased = conventions.layer_norm_variance == "unbiased"
    if unbiased and n < 2:
        raise ValueError("layer_norm: the unbiased variance needs at least 2 elements")
    inside = conventions.layer_norm_eps == "inside_sqrt"
    axes = tuple(range(-n_axes, 0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        y = kernels.layer_norm(
            xa, n_axes, w, b, e, unbiased=unbiased, eps_inside_sqrt=inside, xp=np
        )
        mu = np.mean(xa, axis=axes, keepdims=True)
        dev = np.abs(xa - mu)
        var = np.sum(dev * dev, axis=axes, keepdims=True) / (n - 1 if unbiased else n)
        sd = np.sqrt(var)
        sigma = np.sqrt(var + e) if inside else sd + e
        inv = 1.0 / sigma
        mean_abs = np.mean(np.abs(xa), axis=axes, keepdims=True)
        aw = np.ones(shape) if w is None else np.abs(w)
        ab = np.zeros(shape) if b is None else np.abs(b)
        absref = (dev + mean_abs) * inv * aw + ab
    terms: dict[str, FloatArray | float] = {
        "inv_sigma": inv,
        "mean_abs": mean_abs,
        "mean_abs_dev": np.mean(dev, axis=axes, keepdims=True),
        "var": var,
        "sd": sd,
        "abs_centered": dev,
        "abs_weight": aw,
        "abs_bias": ab,
        "n": float(n),
        "row_length": float(n),
        "eps": e,
        "eps_inside": 1.0 if inside else 0.0,
        "abs_mean": np.abs(mu),
        "mean_square": np.mean(xa * xa, axis=axes, keepdims=True),
        "one_pass": 1.0 if conventions.layer_norm_variance_algorithm == "one_pass" else 0.0,
        "divisor": float(n - 1 if unbiased else n),
    }
    return Reference(value=np.asarray(y, dtype=np.float64), abs_value=absref, terms=terms)


def rms_norm_eps(eps: float | None, dtype: str, conventions: Conventions = CANONICAL) -> float:
    """The eps RMSNorm uses: the given one, or for None a machine epsilon 2u.

    For None: 2u of ``dtype`` (``rms_norm_default_eps="dtype"``), or of its math type
    ("opmath": float32 for float16/bfloat16 inputs, as ``F.rms_norm`` on torch 2.13), or the
    number the convention declares (a library's default eps).
    """
    if eps is None:
        dt = canonical_dtype(dtype)
        declared = getattr(conventions.for_dtype(dt), "rms_norm_default_eps", "dtype")
        if not isinstance(declared, str):
            return float(declared)
        if declared == "opmath" and dt in (
            "float16",
            "bfloat16",
        ):
            dt = "float32"
        return 2.0 * unit_roundoff(dt)
    return _check_eps(eps, "rms_norm")


def rms_norm(
    x: Any,
    normalized_shape: int | Sequence[int],
    weight: Any = None,
    eps: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
) -> Reference:
    """y = x / r · w' over the trailing ``normalized_shape`` dims.

    r = sqrt(mean(x²) + eps) (``rms_norm_eps="inside_sqrt"``) or sqrt(mean(x²)) + eps
    ("added_to_rms"); w' = w (``rms_norm_weight="w"``) or 1 + w ("one_plus_w"; 1 when no
    weight is given, as w' = w). ``eps=None`` is the machine epsilon 2u of ``dtype``, or of
    float32 for float16/bfloat16 under ``rms_norm_default_eps="opmath"`` (:func:`rms_norm_eps`).

    ``abs_value`` = |x| / r · |w'|. Terms: ``inv_rms`` = 1/r, ``ms`` = mean(x²), ``abs_x``,
    ``abs_weight`` = |w'|, ``n``, ``eps``, ``eps_inside`` (1.0 or 0.0), ``one_plus_w``.
    """
    conventions = _check_conventions(conventions)
    xa = _as_float_array(x, "rms_norm: x")
    n_axes = _normalized_axes(xa, normalized_shape, "rms_norm")
    shape = tuple(xa.shape[xa.ndim - n_axes :])
    w = _check_param(weight, "weight", shape, "rms_norm")
    e = rms_norm_eps(eps, dtype, conventions)
    inside = conventions.rms_norm_eps == "inside_sqrt"
    one_plus = conventions.rms_norm_weight == "one_plus_w"
    n = math.prod(shape)
    axes = tuple(range(-n_axes, 0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        y = kernels.rms_norm(
            xa, n_axes, w, e, eps_inside_sqrt=inside, one_plus_weight=one_plus, xp=np
        )
        ms = np.sum(xa * xa, axis=axes, keepdims=True) / n
        r = np.sqrt(ms + e) if inside else np.sqrt(ms) + e
        inv = 1.0 / r
        aw = np.ones(shape) if w is None else np.abs(1.0 + w) if one_plus else np.abs(w)
        absref = np.abs(xa) * inv * aw
    terms: dict[str, FloatArray | float] = {
        "inv_rms": inv,
        "ms": ms,
        "abs_x": np.abs(xa),
        "abs_weight": aw,
        "n": float(n),
        "row_length": float(n),
        "eps": e,
        "eps_inside": 1.0 if inside else 0.0,
        "one_plus_w": 1.0 if (one_plus and w is not None) else 0.0,
    }
    return Reference(value=np.asarray(y, dtype=np.float64), abs_value=absref, terms=terms)


# -- dispatch ----------------------------------------------------------------------------------

_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "softmax": ("x", "dim"),
    "attention": ("q", "k", "v", "attn_mask", "is_causal", "scale", "enable_gqa", "softcap"),
    "layer_norm": ("x", "normalized_shape", "weight", "bias", "eps"),
    "rms_norm": ("x", "normalized_shape", "weight", "eps"),
}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "softmax": ("x",),
    "attention": ("q", "k", "v"),
    "layer_norm": ("x", "normalized_shape"),
    "rms_norm": ("x", "normalized_shape"),
}


def check_arguments(
    component: str,
    args: Mapping[str, Any],
    arguments: Mapping[str, tuple[str, ...]],
    required: Mapping[str, tuple[str, ...]],
    family: str,
) -> None:
    """Check ``args`` of ``component`` against a family's tables: ``arguments[component]`` the
    names it takes, ``required[component]`` those it needs.

    A component outside the tables raises the registry's error for an unknown name, else
    ``ValueError("{component} is not one of {family}")``; ``args`` not a mapping raises
    ``TypeError``; an unknown or a missing argument ``ValueError``.
    """
    if component not in arguments:
        components.get(component)  # the message for an unknown name
        raise ValueError(f"{component} is not one of {family}")
    if not isinstance(args, Mapping):
        raise TypeError(f"args must be a mapping, got {type(args).__name__}")
    unknown = sorted(set(args) - set(arguments[component]))
    if unknown:
        raise ValueError(f"{component}: unknown argument(s) {', '.join(unknown)}")
    missing = [a for a in required[component] if a not in args]
    if missing:
        raise ValueError(f"{component}: missing argument(s) {', '.join(missing)}")


def check_args(component: str, args: Mapping[str, Any]) -> None:
    """Raise ValueError for an unknown kernel (:data:`COMPONENTS`), a missing or an unknown
    argument (:func:`check_arguments`)."""
    check_arguments(component, args, _ARGUMENTS, _REQUIRED, f"the kernels {', '.join(COMPONENTS)}")


def compute_component(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    semantics: Mapping[str, str] | None = None,
    rows: Any = None,
) -> Reference:
    """The reference of one of the kernels (:data:`COMPONENTS`); the registry's protocol.

    The arguments are checked here; the record's ``"reference"`` hook computes the value.
    ``rows``: the query rows to compute, for the blocks whose hook takes them (attention:
    :func:`attention_reference`); ``ValueError`` for the others.
    """
    check_args(component, args)
    dtype = canonical_dtype(dtype)
    reference: Callable[..., Reference] = components.get(component).hook("reference")
    if rows is None:
        return reference(args, conventions=conventions, dtype=dtype)
    if "rows" not in inspect.signature(reference).parameters:
        raise ValueError(
            f"{component}: its reference computes every row; rows= is for attention and the norms"
        )
    return reference(args, conventions=conventions, dtype=dtype, rows=rows)


# -- the kernel records' "reference" hooks: one component call -> its reference ----------------


def softmax_reference(
    args: Mapping[str, Any], *, conventions: Conventions, dtype: str
) -> Reference:
    """:func:`softmax` of ``args`` (``x``, optional ``dim``); ``dtype`` does not change it."""
    return softmax(args["x"], args.get("dim", -1), conventions=conventions)


#: above this many score elements (B·H·Lq·Lk; 16,384² for one head) the registry's reference of
#: attention judges sampled rows (:func:`sampled_rows`) instead of every row
SAMPLING_THRESHOLD = 1 << 28


def attention_reference(
    args: Mapping[str, Any], *, conventions: Conventions, dtype: str, rows: Any = None
) -> Reference:
    """:func:`attention` of ``args``; ``dtype`` does not change it.

    ``rows``: None (every row; sampled rows above :data:`SAMPLING_THRESHOLD` score elements),
    ``"sampled"`` (the rows :func:`sampled_rows` chooses) or query indices (as
    :func:`attention`'s ``rows``).
    """
    problem = attention_problem(**dict(args), conventions=conventions)
    if rows is None and math.prod(problem.score_shape) > SAMPLING_THRESHOLD:
        rows = "sampled"
    if isinstance(rows, str):
        if rows != "sampled":
            raise ValueError(f"attention: rows must be query indices or 'sampled', got {rows!r}")
        rows = sampled_rows(problem)
    return _attention_of(problem, rows, None)


def sampled_rows(problem: AttentionProblem) -> np.ndarray:
    """The query rows the oracle judges on a long input (:func:`~transpec.oracle.kernels.rows.
    judged_rows`: tile boundaries, first and last rows, the causal frontier, the mask's edges,
    random rows), drawn from a generator seeded by the bytes of q, k, v and the mask: the same
    input always gets the same rows."""
    from transpec.oracle.kernels.rows import judged_rows

    crc = 0
    for arr in (problem.q, problem.k, problem.v, problem.keep, problem.additive):
        if arr is not None:
            crc = zlib.crc32(np.ascontiguousarray(arr).tobytes(), crc)
    hidden: np.ndarray | None = None
    if problem.keep is not None:
        hidden = ~problem.keep if problem.fill is None else None
    if problem.additive is not None:
        neg = np.isneginf(problem.additive)
        hidden = neg if hidden is None else np.broadcast_arrays(hidden, neg)[0] | neg
    return judged_rows(
        problem.q_len,
        problem.kv_len,
        causal_offset=problem.causal_offset,
        key_mask=hidden,
        rng=np.random.default_rng(crc),
    )


#: above this many input elements the registry's reference of a norm judges sampled rows
#: (:func:`sampled_norm_rows`); its terms hold several arrays of the input's size
NORM_SAMPLING_THRESHOLD = 1 << 25


def sampled_norm_rows(x: np.ndarray, n_axes: int) -> np.ndarray:
    """The rows (of the leading dims flattened) the oracle judges on a long norm input: those
    :func:`~transpec.oracle.kernels.rows.judged_rows` chooses for as many rows (tile
    boundaries, first and last rows, random rows), drawn from a generator seeded by the bytes
    of ``x``: the same input always gets the same rows."""
    from transpec.oracle.kernels.rows import judged_rows

    n_rows = math.prod(x.shape[: x.ndim - n_axes])
    crc = zlib.crc32(np.ascontiguousarray(x).tobytes())
    return judged_rows(max(n_rows, 1), 1, rng=np.random.default_rng(crc))


def _norm_rows(
    block: Callable[..., Reference], args: Mapping[str, Any], rows: Any, **options: Any
) -> Reference:
    """``block`` (:func:`layer_norm`, :func:`rms_norm`) on the rows ``rows`` of ``args["x"]``
    (None: every row, sampled above :data:`NORM_SAMPLING_THRESHOLD` elements; ``"sampled"``;
    or indices of the leading dims flattened): rows are independent, so each is exactly the
    corresponding row of the whole reference."""
    x = _as_float_array(args["x"], f"{block.__name__}: x")
    if rows is None:
        if x.size <= NORM_SAMPLING_THRESHOLD:
            return block(**dict(args), **options)
        rows = "sampled"
    n_axes = _normalized_axes(x, args["normalized_shape"], block.__name__)
    n_rows = math.prod(x.shape[: x.ndim - n_axes])
    if isinstance(rows, str):
        if rows != "sampled":
            raise ValueError(
                f"{block.__name__}: rows must be row indices or 'sampled', got {rows!r}"
            )
        index = sampled_norm_rows(x, n_axes)
    else:
        index = query_rows(rows, n_rows, block.__name__)
    trailing = x.shape[x.ndim - n_axes :]
    part = block(**{**dict(args), "x": x.reshape(-1, *trailing)[index]}, **options)
    return dataclasses.replace(
        part,
        rows=tuple(int(i) for i in index),
        full_shape=tuple(x.shape),
        row_layout="flat",
    )


def layer_norm_reference(
    args: Mapping[str, Any], *, conventions: Conventions, dtype: str, rows: Any = None
) -> Reference:
    """:func:`layer_norm` of ``args``; ``dtype`` does not change it. ``rows``: None (every
    row; sampled above :data:`NORM_SAMPLING_THRESHOLD` elements), ``"sampled"`` or indices of
    the rows (the leading dims flattened)."""
    return _norm_rows(layer_norm, args, rows, conventions=conventions)


def rms_norm_reference(
    args: Mapping[str, Any], *, conventions: Conventions, dtype: str, rows: Any = None
) -> Reference:
    """:func:`rms_norm` of ``args`` in ``dtype`` (whose epsilon is eps=None's value); ``rows``
    as :func:`layer_norm_reference`'s."""
    return _norm_rows(rms_norm, args, rows, conventions=conventions, dtype=dtype)
