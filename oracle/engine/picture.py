"""What a failure looks like: the error-to-tolerance map over the output and the mask applied.

A numeric failure is judged element by element (:mod:`transpec.oracle.engine.compare`); a
person sees the pattern faster than the numbers: a diagonal band of red next to the causal
frontier, a column where a padded key leaked, one row gone wrong. This module keeps what that
picture needs, small and plain (lists of floats), for the reports (``transpec check --html``):

* :class:`Evidence` -- captured when a comparison fails (:meth:`Harness.assert_equivalent`,
  :func:`~transpec.oracle.engine.harness.assert_related`): *references* to the arrays already
  at hand (output, reference, per-element bound) and to the arguments the implementation was
  sent. Nothing is computed then: Hypothesis raises many failures while it shrinks, and only
  the one it reports (the shrunk counterexample) becomes a :class:`Picture`
  (:meth:`Evidence.picture`, called by the run once per failed verdict).
* :class:`Picture` -- the 2-D slice of the output that holds the worst element (rows × the
  last axis: query × feature for attention, row × feature for the norms, row × key for
  softmax; for a 3-D or 4-D output the batch/head slice of the worst element), as the ratio
  r = |got − ref| / tolerance per element (r ≤ 1 passes; ``inf`` where a NaN/±inf differs
  from the reference or the tolerance is 0 and the error is not), max-pooled to at most
  :data:`MAX_CELLS` × :data:`MAX_CELLS` (a pooled cell shows its worst element); and, for the
  attention blocks, the mask that was applied on the same slice: the fraction of the keys of
  each (pooled) cell that its query could see, by the causal rule, the boolean mask and the
  additive mask (−inf) together, under the conventions the call was judged by.
* a gradient's picture (:func:`gradient_view`) is the same map over the gradient compared:
  dQ query × feature beside the mask, dK and dV key × feature beside the mask transposed (the
  queries that saw each key), a parameter's gradient as its own matrix or row, with no mask;
* :class:`StatisticEvidence` / :class:`Distribution` -- a failed ``error_statistic`` has no
  per-element bound to map: its picture is the distribution of |error| / absref of the
  implementation beside that of a correct kernel emulated at the declared precision, with the
  two RMS values and the allowed one, which is what the statistic compares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transpec.spec.conventions import Conventions

#: the most rows and columns a map keeps; larger outputs are max-pooled down to it
MAX_CELLS = 128


@dataclass(frozen=True)
class Picture:
    """The error map and the mask of one failure, small enough for a report.

    ``ratio``: rows of |got − ref| / tolerance (``inf`` unbounded, ``nan`` where nothing was
    compared: both non-finite alike); ``shape``: the whole output's shape; ``slice``: the index
    of the leading axes the map shows (``()`` for a 2-D output); ``axes``: the names of the
    map's rows and columns; ``pool``: the (rows, columns) each cell pools (``(1, 1)``: every
    element its own cell); ``rows``: the query rows judged, when only some were
    (``None``: all); ``worst``: the worst element's cell in the map.

    ``plane``/``mask_plane``: the (rows, columns) of the map and of the mask before pooling.

    ``mask``: rows of the fraction of keys visible per cell (1 all visible, 0 all hidden), or
    ``None`` when the component takes no mask; ``mask_pool`` its pooling, ``mask_axes`` its
    axes, ``mask_note`` what made it (causal rule and alignment, boolean, additive); ``note``:
    where the map comes from (a relation between calls rather than one call's reference).
    """

    ratio: list[list[float]]
    shape: tuple[int, ...]
    slice: tuple[int, ...]
    axes: tuple[str, str]
    pool: tuple[int, int]
    worst: tuple[int, int] | None = None
    rows: tuple[int, ...] | None = None
    mask: list[list[float]] | None = None
    mask_pool: tuple[int, int] = (1, 1)
    mask_axes: tuple[str, str] = ("query", "key")
    mask_note: str = ""
    note: str = ""
    #: the (rows, columns) of the slice before pooling, and of the mask's
    plane: tuple[int, int] = (0, 0)
    mask_plane: tuple[int, int] = (0, 0)
    #: rows of the fraction of keys per cell that are visible but carry a finite negative
    #: additive term (a finite fill such as finfo.min added, an ALiBi-like bias), or None
    mask_bias: list[list[float]] | None = None
    #: what the map is drawn over: the output, or the gradient of an argument (``"the
    #: gradient of k"``)
    of: str = "the output"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ratios in 3 significant digits and visible fractions in 3 decimals (a
        picture needs no more; 128 × 128 cells stay ~150 kB of JSON), non-finite ratios as the
        strings ``"inf"``/``"nan"``."""
        return {
            "kind": "map",
            "of": self.of,
            "ratio": [[_json(x) for x in row] for row in self.ratio],
            "shape": list(self.shape),
            "slice": list(self.slice),
            "axes": list(self.axes),
            "pool": list(self.pool),
            "worst": None if self.worst is None else list(self.worst),
            "rows": None if self.rows is None else list(self.rows),
            "mask": None if self.mask is None else [[round(x, 3) for x in r] for r in self.mask],
            "mask_pool": list(self.mask_pool),
            "mask_axes": list(self.mask_axes),
            "mask_note": self.mask_note,
            "note": self.note,
            "plane": list(self.plane),
            "mask_plane": list(self.mask_plane),
            "mask_bias": None
            if self.mask_bias is None
            else [[round(x, 3) for x in r] for r in self.mask_bias],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Picture:
        """Inverse of :meth:`to_dict` (a JSON report read back)."""
        return cls(
            ratio=[[float(x) for x in row] for row in data["ratio"]],
            shape=tuple(data["shape"]),
            slice=tuple(data["slice"]),
            axes=(str(data["axes"][0]), str(data["axes"][1])),
            pool=(int(data["pool"][0]), int(data["pool"][1])),
            worst=None if data.get("worst") is None else _pair(data["worst"]),
            rows=None if data.get("rows") is None else tuple(data["rows"]),
            mask=data.get("mask"),
            mask_pool=_pair(data.get("mask_pool", (1, 1))),
            mask_axes=(
                str(data.get("mask_axes", ("query", "key"))[0]),
                str(data.get("mask_axes", ("query", "key"))[1]),
            ),
            mask_note=str(data.get("mask_note", "")),
            note=str(data.get("note", "")),
            plane=_pair(data.get("plane", (0, 0))),
            mask_plane=_pair(data.get("mask_plane", (0, 0))),
            mask_bias=data.get("mask_bias"),
            of=str(data.get("of", "the output")),
        )


def _pair(values: Sequence[Any]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def _json(x: float) -> float | str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.3g}")


@dataclass(frozen=True)
class Evidence:
    """What a failed comparison had at hand, kept by reference until a report wants it.

    ``actual``, ``expected``, ``bound``: the compared arrays (one shape; ``bound`` may
    broadcast); ``index``: the worst element; ``args``: the arguments as the implementation was
    sent them (``None`` for a relation: the run supplies the counterexample's);
    ``conventions``: those the call was judged under; ``rows``: the judged query rows of a
    sampled attention output; ``note``: said under the map; ``gradient``: the argument (or
    parameter) whose gradient was compared, None for an output (:func:`gradient_view` says how
    its map and mask are drawn).
    """

    actual: np.ndarray
    expected: np.ndarray
    bound: Any
    index: tuple[int, ...]
    args: Mapping[str, Any] | None = None
    conventions: Conventions | None = None
    rows: Sequence[int] | None = None
    note: str = ""
    gradient: str | None = None

    def picture(
        self,
        *,
        args: Mapping[str, Any] | None = None,
        conventions: Conventions | None = None,
    ) -> Picture:
        """The :class:`Picture` of this failure; ``args``/``conventions`` stand in for those
        the evidence lacks (a relation's: the counterexample's arguments, as drawn)."""
        call_args = self.args if self.args is not None else args
        conv = self.conventions if self.conventions is not None else conventions
        act = np.asarray(self.actual, dtype=np.float64)
        ref = np.asarray(self.expected, dtype=np.float64)
        bound = np.broadcast_to(np.asarray(self.bound, dtype=np.float64), ref.shape)
        view = gradient_view(self.gradient, call_args, ref.ndim)
        seq_first = bool(
            call_args is not None
            and call_args.get("batch_first") is False
            and ref.ndim == 3
            and (self.gradient is None or self.gradient in call_args)  # not a parameter
        )
        # the slice first: the ratio of one (rows, columns) plane, not of the whole output
        (act_plane, lead), (ref_plane, _), (bound_plane, _) = (
            _plane(x, self.index, seq_first=seq_first) for x in (act, ref, bound)
        )
        plane = ratio_map(act_plane, ref_plane, bound_plane)
        pooled, pool = max_pool(plane)
        worst = _cell(self.index, seq_first, pool)
        mask = mask_note = None
        mask_pool, mask_plane = (1, 1), (0, 0)
        mask_bias: list[list[float]] | None = None
        if call_args is not None and conv is not None and view.mask != "none":
            try:
                found = visible_keys(
                    call_args,
                    conv,
                    lead,
                    rows=self.rows,
                    queries=int(plane.shape[0]) if view.mask == "rows" else _queries(call_args),
                )
                if found is not None and view.mask == "transposed":
                    found = _transposed(found, call_args)
            except Exception:  # a picture is a convenience; it must never hide the failure
                found = None
            if found is not None:
                mask_plane = (int(found.visible.shape[0]), int(found.visible.shape[1]))
                pooled_mask, mask_pool = mean_pool(found.visible)
                mask, mask_note = pooled_mask.tolist(), found.note
                if found.biased is not None and found.biased.any():
                    mask_bias = mean_pool(found.biased)[0].tolist()
        note = self.note
        if self.args is None and mask is not None:
            note = (note + "; " if note else "") + "mask: that of the example as drawn"
        return Picture(
            ratio=pooled.tolist(),
            shape=tuple(int(n) for n in ref.shape),
            slice=tuple(int(i) for i in lead),
            axes=("sequence", "feature") if seq_first else view.axes or _axes(ref.ndim, call_args),
            pool=pool,
            worst=worst,
            rows=None if self.rows is None else tuple(int(r) for r in self.rows),
            mask=mask,
            mask_pool=mask_pool,
            mask_axes=view.mask_axes,
            mask_note=mask_note or "",
            note=note,
            plane=(int(plane.shape[0]), int(plane.shape[1])),
            mask_plane=mask_plane,
            mask_bias=mask_bias,
            of="the output" if self.gradient is None else f"the gradient of {self.gradient}",
        )


@dataclass(frozen=True)
class GradientView:
    """How the map of a gradient is drawn: ``axes`` of its (rows, columns) (None: those of an
    output of its shape); ``mask``: ``"rows"`` when its rows are the queries (the mask drawn as
    for the output), ``"transposed"`` when they are the keys (the mask drawn key × query: which
    queries saw each key), ``"none"`` when it has no query or key axis (a parameter);
    ``mask_axes``: the mask's (rows, columns)."""

    axes: tuple[str, str] | None
    mask: str = "rows"
    mask_axes: tuple[str, str] = ("query", "key")


#: the arguments whose gradient has one row per query (attention's q, a layer's query input)
#: or one row per key, and the name of its last axis
_QUERY_ROWS = {"q": "feature", "query": "feature", "tgt": "feature", "src": "feature"}
_KEY_ROWS = {"k": "feature", "v": "feature", "key": "feature", "value": "feature"}


def gradient_view(name: str | None, args: Mapping[str, Any] | None, ndim: int) -> GradientView:
    """The :class:`GradientView` of the gradient of ``name`` (None: an output, drawn as such).

    dQ has the rows of the output (query × feature) and the same mask; dK and dV have one row
    per key (key × feature), so the mask beside them is transposed; a float mask's gradient is
    query × key like the mask itself; the gradient of ``x`` (softmax, the norms, a feed-forward
    layer) is row × last axis; a parameter's gradient (a layer's ``state_dict`` entry) is its
    own matrix, with no mask."""
    if name is None:
        return GradientView(None)
    layer = args is not None and ("query" in args or "src" in args or "tgt" in args)
    if name in _QUERY_ROWS and (name == "q" or layer):
        return GradientView(("query", _QUERY_ROWS[name]))
    if name in _KEY_ROWS and (name in ("k", "v") or layer):
        return GradientView(("key", _KEY_ROWS[name]), "transposed", ("key", "query"))
    if name == "attn_mask":
        return GradientView(("query", "key"))
    if name == "x":
        return GradientView(("", "element") if ndim <= 1 else ("row", "last axis"), "none")
    if name == "memory":  # a decoder's memory: the keys of its cross-attention, unmasked here
        return GradientView(("memory", "feature"), "none")
    # a parameter of a layer: (out, in) for a weight, one row for a bias
    return GradientView((f"{name} row", "column") if ndim > 1 else ("", "element"), "none")


def _queries(args: Mapping[str, Any]) -> int | None:
    """The number of queries of an attention's or a layer's arguments (None: not found)."""
    if "q" in args:
        return int(np.shape(args["q"])[-2])
    for name in ("query", "tgt", "src"):
        value = args.get(name)
        shape: tuple[int, ...] = () if value is None else tuple(np.shape(value))
        if len(shape) == 3:
            return int(shape[1] if args.get("batch_first", False) else shape[0])
        if len(shape) == 2:
            return int(shape[0])
    return None


def _transposed(view: MaskView, args: Mapping[str, Any]) -> MaskView | None:
    """``view`` (query × key) as key × query, for a gradient with one row per key; None under
    grouped-query attention (a kv head is shared by several query heads, whose masks may
    differ)."""
    q, k = args.get("q"), args.get("k")
    if q is not None and k is not None and np.ndim(q) >= 3 and np.ndim(k) >= 3:  # noqa: SIM102
        if np.shape(q)[-3] != np.shape(k)[-3]:
            return None
    visible = np.asarray(view.visible)
    biased = None if view.biased is None else np.asarray(view.biased).T
    return MaskView(visible.T, biased, view.note + "; transposed: the queries that saw each key")


def ratio_map(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """|actual − expected| / bound per element: ``inf`` where the error is nonzero and the
    bound is 0, or where NaN/±inf positions differ; ``nan`` where both are the same non-finite
    value (nothing compared); the same rule as :func:`~transpec.oracle.engine.compare.error_ratios`
    on the finite elements."""
    from transpec.oracle.engine.compare import error_ratios

    a_fin, e_fin = np.isfinite(actual), np.isfinite(expected)
    finite = a_fin & e_fin
    _, ratio, _ = error_ratios(actual, expected, bound, finite)
    ratio = np.array(ratio, dtype=np.float64)
    same_nonfinite = ~finite & (
        (np.isnan(actual) & np.isnan(expected)) | (np.isinf(actual) & (actual == expected))
    )
    ratio[~finite] = np.inf
    ratio[same_nonfinite] = np.nan
    return ratio


def _plane(
    ratio: np.ndarray, index: Sequence[int], *, seq_first: bool = False
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2-D slice of ``ratio`` holding the element ``index`` and the index of its leading
    axes; a 0-D or 1-D output is one row. ``seq_first``: a (L, B, E) layer output, shown as
    sequence × feature of the worst element's batch."""
    if ratio.ndim == 0:
        return ratio.reshape(1, 1), ()
    if ratio.ndim == 1:
        return ratio.reshape(1, -1), ()
    if seq_first:
        b = int(index[1]) if len(index) == 3 else 0
        return ratio[:, b, :], (b,)
    lead = (
        tuple(int(i) for i in index[:-2]) if len(index) == ratio.ndim else (0,) * (ratio.ndim - 2)
    )
    return ratio[lead], lead


def _cell(index: Sequence[int], seq_first: bool, pool: tuple[int, int]) -> tuple[int, int]:
    """The map cell (pooled) of the element ``index`` (see :func:`_plane`)."""
    if len(index) == 0:
        r, c = 0, 0
    elif len(index) == 1:
        r, c = 0, int(index[0])
    elif seq_first:
        r, c = int(index[0]), int(index[2])
    else:
        r, c = int(index[-2]), int(index[-1])
    return r // pool[0], c // pool[1]


def _axes(ndim: int, args: Mapping[str, Any] | None) -> tuple[str, str]:
    if args is not None and "q" in args:
        return ("query", "feature")
    if args is not None and ("query" in args or "tgt" in args or "src" in args):
        return ("query", "last axis")
    if ndim <= 1:
        return ("", "element")
    return ("row", "last axis")


def _blocks(n: int, limit: int = MAX_CELLS) -> int:
    return max(1, -(-n // limit))


def max_pool(plane: np.ndarray, limit: int = MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """``plane`` max-pooled to at most ``limit`` × ``limit`` cells (NaN ignored unless a cell
    holds nothing else), and the block size (rows, columns)."""
    br, bc = _blocks(plane.shape[0], limit), _blocks(plane.shape[1], limit)
    if (br, bc) == (1, 1):
        return np.array(plane, dtype=np.float64), (1, 1)
    padded = _padded(plane, br, bc, np.nan)
    blocks = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc)
    with np.errstate(invalid="ignore"):
        filled = np.where(np.isnan(blocks), -np.inf, blocks).max(axis=(1, 3))
    return np.where(np.isneginf(filled), np.nan, filled), (br, bc)


def mean_pool(plane: np.ndarray, limit: int = MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """``plane`` (values in [0, 1]) averaged over blocks to at most ``limit`` × ``limit``
    cells (a partial block at the edge averages what it holds)."""
    plane = np.asarray(plane)
    br, bc = _blocks(plane.shape[0], limit), _blocks(plane.shape[1], limit)
    if (br, bc) == (1, 1):
        return plane.astype(np.float64), (1, 1)
    exact = np.uint8 if plane.dtype == np.bool_ else np.float32  # a mask: counted as bytes
    padded = _padded(plane, br, bc, 0, dtype=exact)
    blocks = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc)
    sums = blocks.sum(axis=(1, 3), dtype=np.float64)

    def counts(n: int, block: int) -> np.ndarray:
        full = np.full(-(-n // block), block, dtype=np.float64)
        full[-1] = n - block * (len(full) - 1)
        return full

    sizes = np.outer(counts(plane.shape[0], br), counts(plane.shape[1], bc))
    return sums.astype(np.float64) / sizes, (br, bc)


def _padded(
    plane: np.ndarray, br: int, bc: int, fill: float, dtype: Any = np.float64
) -> np.ndarray:
    rows, cols = -(-plane.shape[0] // br) * br, -(-plane.shape[1] // bc) * bc
    out = np.full((rows, cols), fill, dtype=dtype)
    out[: plane.shape[0], : plane.shape[1]] = plane
    return out


# -- the mask applied ---------------------------------------------------------------------------


def visible_keys(
    args: Mapping[str, Any],
    conventions: Conventions,
    lead: tuple[int, ...],
    *,
    rows: Sequence[int] | None = None,
    queries: int | None = None,
) -> MaskView | None:
    """The keys each query could see (:class:`MaskView`) on the slice ``lead`` of the output,
    or ``None`` when ``args`` hold no attention mask at all.

    The attention kernel's arguments (``q``, ``k``, ``attn_mask``, ``is_causal``) are resolved
    by :func:`~transpec.oracle.kernels.reference.attention_problem` under ``conventions`` (the
    mask polarity, causal alignment): exactly the keys its reference hid. A layer's masks
    (``nn.MultiheadAttention``'s meaning: a boolean True hides, a float is added) are combined
    per batch: the first of ``attn_mask``/``src_mask``/``tgt_mask``/``memory_mask`` that is
    given with its key padding mask (a padding mask alone is drawn for ``queries`` rows).
    """
    if "q" in args and "k" in args:
        return _attention_visible(args, conventions, lead, rows)
    return _layer_visible(args, lead, queries)


@dataclass(frozen=True)
class MaskView:
    """The mask applied on one (query × key) slice: ``visible`` True where the query could
    see the key (causal rule, boolean mask, −inf); ``biased`` True where a visible key's score
    had a finite negative term added (None: no additive mask); ``note``: what made it."""

    visible: np.ndarray
    biased: np.ndarray | None
    note: str


def _attention_visible(
    args: Mapping[str, Any],
    conventions: Conventions,
    lead: tuple[int, ...],
    rows: Sequence[int] | None,
) -> MaskView | None:
    from transpec.oracle.kernels.reference import attention_problem

    mask = args.get("attn_mask")
    mask_shape = [] if mask is None else list(np.shape(mask))
    causal = bool(args.get("is_causal", False))
    if mask is None and not causal:
        return None
    problem = attention_problem(
        args["q"],
        args["k"],
        args["v"],
        mask,
        causal,
        None,
        bool(args.get("enable_gqa", False)),
        None,
        conventions=conventions,
    )
    query_rows = np.arange(problem.q_len) if rows is None else np.asarray(rows, dtype=np.int64)
    visible = np.broadcast_to(
        problem.visible(query_rows, slice(None)),
        (*problem.score_shape[:-2], len(query_rows), problem.kv_len),
    )
    plane = visible[_lead_index(visible.ndim, lead)]  # a view: pooled without a float copy
    biased = None
    if problem.additive is not None:
        add = problem.additive
        if add.shape[-2] != 1:
            add = add[..., query_rows, :]
        add = np.broadcast_to(add, visible.shape)[_lead_index(visible.ndim, lead)]
        plane = plane & ~np.isneginf(add)
        biased = plane & np.isfinite(add) & (add < 0)
    parts = []
    if causal:
        offset = problem.causal_offset or 0
        frontier = "j <= i" + (f" + {offset}" if offset > 0 else f" - {-offset}" if offset else "")
        parts.append(f"causal, {conventions.causal_alignment} (query i sees key j iff {frontier})")
    if problem.keep is not None:
        parts.append(f"boolean attn_mask {mask_shape} (bool_mask={conventions.bool_mask})")
    if problem.additive is not None:
        parts.append(f"additive attn_mask {mask_shape} (-inf hides a key)")
        if biased is not None and biased.any():
            parts.append("amber: a finite negative term added")
    if problem.fill is not None:
        parts.append(f"hidden scores filled with {problem.fill:g}")
    return MaskView(plane, biased, "; ".join(parts))


def _lead_index(ndim: int, lead: tuple[int, ...]) -> tuple[int, ...]:
    """``lead`` (the output's leading index) fitted to an array of ``ndim`` dims whose last two
    are query × key: the trailing entries of ``lead`` (batch and head), 0 for missing ones."""
    want = ndim - 2
    if len(lead) >= want:
        return tuple(lead[len(lead) - want :])
    return (0,) * (want - len(lead)) + tuple(lead)


#: a layer's self-attention masks: (the attention mask, its key padding mask)
_LAYER_MASKS = (
    ("attn_mask", "key_padding_mask"),
    ("src_mask", "src_key_padding_mask"),
    ("tgt_mask", "tgt_key_padding_mask"),
    ("memory_mask", "memory_key_padding_mask"),
)


def _hidden(mask: Any) -> np.ndarray:
    """True where a layer mask hides (boolean True, or a float −inf)."""
    m = np.asarray(mask)
    return m if m.dtype == np.bool_ else np.isneginf(m.astype(np.float64))


def _biased(mask: Any) -> np.ndarray:
    """True where a layer's float mask adds a finite negative term (a boolean mask: nowhere)."""
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        return np.zeros(m.shape, dtype=bool)
    m = m.astype(np.float64)
    return np.isfinite(m) & (m < 0)


def _layer_visible(
    args: Mapping[str, Any], lead: tuple[int, ...], queries: int | None = None
) -> MaskView | None:
    for attn_name, padding_name in _LAYER_MASKS:
        attn, padding = args.get(attn_name), args.get(padding_name)
        causal = bool(args.get("is_causal", False))
        if attn is None and padding is None:
            continue
        batch = int(lead[0]) if lead else 0
        parts: list[str] = []
        hidden: np.ndarray | None = None
        biased: np.ndarray | None = None
        if attn is not None:
            h, b = _hidden(attn), _biased(attn)
            if h.ndim == 3:  # (B·heads, L, S): the first head of the batch
                heads = max(1, h.shape[0] // max(1, _batch_size(args)))
                at = min(batch * heads, h.shape[0] - 1)
                h, b = h[at], b[at]
                parts.append(f"{attn_name} {list(np.shape(attn))} (head 0 of batch {batch})")
            else:
                parts.append(f"{attn_name} {list(np.shape(attn))}")
            hidden, biased = h, b
        if padding is not None:
            p, pb = _hidden(padding), _biased(padding)
            if p.ndim == 2:
                at = min(batch, p.shape[0] - 1)
                p, pb = p[at], pb[at]
            parts.append(f"{padding_name} {list(np.shape(padding))}")
            hidden = p[None, :] if hidden is None else hidden | p[None, :]
            biased = pb[None, :] if biased is None else biased | pb[None, :]
        assert hidden is not None and biased is not None
        if hidden.shape[0] == 1 and queries:
            hidden = np.broadcast_to(hidden, (queries, hidden.shape[1]))
            biased = np.broadcast_to(biased, (queries, biased.shape[1]))
        if causal:
            parts.append("is_causal")
        note = "; ".join(parts) + " (True or -inf hides a key)"
        if (biased & ~hidden).any():
            note += "; amber: a finite negative term added"
        return MaskView(~hidden, biased & ~hidden, note)
    return None


def _batch_size(args: Mapping[str, Any]) -> int:
    for name in ("query", "x", "src", "tgt"):
        value = args.get(name)
        if isinstance(value, np.ndarray) and value.ndim == 3:
            return int(value.shape[0] if args.get("batch_first", False) else value.shape[1])
    return 1


# -- the error statistic ------------------------------------------------------------------------

#: the bins of a decade in the error statistic's histograms, and the decades shown at most
BINS_PER_DECADE = 5
MAX_DECADES = 8


@dataclass(frozen=True)
class Distribution:
    """The picture of a failed ``error_statistic``: where the implementation's relative errors
    lie against those of a correct kernel emulated at the declared precision.

    The statistic has no per-element tolerance: it fails when the RMS of |error| / absref over
    the example exceeds ``threshold`` × that of the emulated kernel on the same inputs, i.e.
    when the *typical* error is too large while every element may be within its worst-case
    bound. What explains that fastest is the two distributions side by side: a histogram of
    log10(|error| / absref) for each, with the two RMS values and the allowed RMS marked (a
    whole distribution shifted right is a systematic defect, a tail of a few rows a local one).

    ``edges``: the log10 bin edges (the first bin also counts everything below it);
    ``implementation``/``emulated``: the count of elements per bin; ``exact``: elements with no
    error at all (not on a log axis), per side; ``rms``, ``emulated_rms``, ``allowed_rms`` (=
    ``threshold`` × ``emulated_rms``); ``elements``: the elements compared; ``note``: the
    precision the kernel was emulated at.
    """

    edges: list[float]
    implementation: list[int]
    emulated: list[int]
    exact: tuple[int, int]
    rms: float
    emulated_rms: float
    allowed_rms: float
    threshold: float
    elements: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "distribution",
            "edges": [round(e, 4) for e in self.edges],
            "implementation": list(self.implementation),
            "emulated": list(self.emulated),
            "exact": list(self.exact),
            "rms": self.rms,
            "emulated_rms": self.emulated_rms,
            "allowed_rms": self.allowed_rms,
            "threshold": self.threshold,
            "elements": self.elements,
            "note": self.note,
        }


@dataclass(frozen=True)
class StatisticEvidence:
    """What a failed ``error_statistic`` had at hand (references only): the relative errors
    |error| / max(absref, floor) of the implementation and of the emulated correct kernel (flat,
    the same elements), the threshold, and the precision emulated (``note``)."""

    errors: np.ndarray
    emulated_errors: np.ndarray
    threshold: float
    note: str = ""

    def picture(self, **_context: Any) -> Distribution:
        """The :class:`Distribution` (the arguments a map's picture takes are not needed)."""
        impl = np.asarray(self.errors, dtype=np.float64).ravel()
        emu = np.asarray(self.emulated_errors, dtype=np.float64).ravel()
        positive = np.concatenate([impl[impl > 0], emu[emu > 0]])
        if positive.size:
            top = math.ceil(math.log10(float(positive.max())) * BINS_PER_DECADE) / BINS_PER_DECADE
            low = float(
                max(math.floor(math.log10(float(positive.min()))), math.floor(top) - MAX_DECADES)
            )
        else:
            top, low = 0.0, -1.0
        top = max(top, low + 1.0 / BINS_PER_DECADE)
        count = max(1, round((top - low) * BINS_PER_DECADE))
        edges = np.linspace(low, top, count + 1)

        def histogram(values: np.ndarray) -> list[int]:
            logs = np.log10(values[values > 0])
            clipped = np.clip(logs, edges[0], edges[-1])  # below the axis: in the first bin
            return [int(n) for n in np.histogram(clipped, bins=edges)[0]]

        rms_impl = float(np.sqrt(np.mean(np.square(impl)))) if impl.size else 0.0
        rms_emu = float(np.sqrt(np.mean(np.square(emu)))) if emu.size else 0.0
        return Distribution(
            edges=[float(e) for e in edges],
            implementation=histogram(impl),
            emulated=histogram(emu),
            exact=(int(np.sum(impl == 0)), int(np.sum(emu == 0))),
            rms=rms_impl,
            emulated_rms=rms_emu,
            allowed_rms=float(self.threshold) * rms_emu,
            threshold=float(self.threshold),
            elements=int(impl.size),
            note=self.note,
        )
