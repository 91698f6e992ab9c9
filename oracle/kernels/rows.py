"""Which query rows of a long attention input the oracle judges.

Query rows of attention are independent: row i of the output depends on q_i and on every key
and value, never on another query. For an input too long to judge in full, the oracle therefore
computes the exact float64 reference of a chosen set of rows (streaming over keys,
:func:`transpec.oracle.kernels.reference.attention` with ``rows=``) while the implementation
runs on the whole input. The rows are those where long-context kernels go wrong:

* **tile boundaries** -- for every block size b in :data:`TILE_SIZES`, the rows m·b - 1, m·b and
  m·b + 1 (the last row of a tile, the first of the next, the one after). Rows around every
  multiple of the largest size are boundaries of every size at once and are all taken; every
  boundary of the smaller sizes is taken too while the selection stays within
  :data:`ROW_BUDGET`, otherwise their first and last :data:`EDGE_TILES` multiples (the ragged
  tail tile among them) and :data:`RANDOM_TILES` drawn ones;
* **the first and last rows** (0, 1, Lq - 2, Lq - 1);
* **the causal frontier** -- rows whose last visible key i + offset falls on a key tile
  boundary (the same multiples, on the key axis), the first row that sees any key and the
  first that sees every key;
* **padding edges** -- where the mask changes from one key to the next (a key-padding edge),
  the rows whose causal frontier meets that key and the rows of the same index (self-attention
  pads its queries too), and where the mask changes from one row to the next (at most
  :data:`EDGE_LIMIT` edges of each kind: the first, the last and drawn ones);
* :data:`RANDOM_ROWS` **random rows**.

The draws come from a generator seeded by the caller (the harness seeds it with the bytes of the
input): the same input always gets the same rows, and a saved case replays them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: the block sizes of common attention kernels (FlashAttention, SDPA CPU, Triton tutorials)
TILE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)
#: random rows added to every selection
RANDOM_ROWS = 64
#: first and last multiples of each tile size always taken when not every boundary is
EDGE_TILES = 3
#: drawn multiples of each smaller tile size when not every boundary is
RANDOM_TILES = 16
#: every boundary of every size is taken while their number (3 per multiple of each size,
#: counted once per size) stays within this many: up to 180,415 queries, 131,072 among them
#: (24,576 distinct rows there, judged in about a minute on two cores)
ROW_BUDGET = 1 << 16
#: at most this many mask edges of each kind (keys, rows) contribute rows
EDGE_LIMIT = 64


def _around(points: Iterable[int]) -> list[int]:
    return [p + d for p in points for d in (-1, 0, 1)]


def _multiples(n: int, b: int, rng: np.random.Generator, every: bool) -> list[int]:
    """Multiples of ``b`` in [b, n] (n itself when it is one): all, or the edges and draws."""
    mult = list(range(b, n + 1, b))
    if every or len(mult) <= 2 * EDGE_TILES + RANDOM_TILES:
        return mult
    inner = mult[EDGE_TILES:-EDGE_TILES]
    drawn = rng.choice(len(inner), size=RANDOM_TILES, replace=False)
    return mult[:EDGE_TILES] + mult[-EDGE_TILES:] + [inner[int(i)] for i in drawn]


def _edges(changes: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Indices i where ``changes[i - 1]`` is True (a change between i - 1 and i), at most
    :data:`EDGE_LIMIT` of them: the first, the last and drawn ones."""
    idx = np.flatnonzero(changes) + 1
    if len(idx) > EDGE_LIMIT:
        keep = EDGE_LIMIT // 4
        inner = idx[keep:-keep]
        drawn = rng.choice(len(inner), size=EDGE_LIMIT - 2 * keep, replace=False)
        idx = np.concatenate([idx[:keep], idx[-keep:], inner[drawn]])
    return [int(i) for i in idx]


def _mask_changes(mask: np.ndarray | None, axis: int) -> np.ndarray:
    """(L - 1,) True where the mask differs between consecutive positions along ``axis``
    (-1: keys, -2: queries), anywhere in the other dims."""
    if mask is None or mask.shape[axis] < 2:
        return np.zeros(0, dtype=bool)
    m = np.moveaxis(mask, axis, -1)
    diff = m[..., 1:] != m[..., :-1]
    return np.any(diff.reshape(-1, diff.shape[-1]), axis=0)


def judged_rows(
    q_len: int,
    kv_len: int,
    *,
    causal_offset: int | None = None,
    key_mask: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    tiles: Iterable[int] = TILE_SIZES,
    random_rows: int = RANDOM_ROWS,
    budget: int = ROW_BUDGET,
) -> np.ndarray:
    """The query rows to judge (sorted, unique, in [0, q_len)); see the module docstring.

    ``causal_offset``: key j is visible to query i iff j <= i + offset (None: no causal rule);
    ``key_mask``: a mask of the scores, (..., Lq or 1, Lk or 1), True where a key is hidden
    (its edges are found along both axes); ``rng``: the draws (a fixed seed when None).
    """
    if q_len < 1 or kv_len < 1:
        raise ValueError(f"judged_rows: lengths must be >= 1, got {q_len} and {kv_len}")
    rng = np.random.default_rng(0) if rng is None else rng
    sizes = sorted({int(b) for b in tiles if int(b) >= 1})
    largest = sizes[-1] if sizes else q_len
    every = sum(3 * (q_len // b) for b in sizes) <= budget
    rows: list[int] = [0, 1, q_len - 2, q_len - 1]
    for b in sizes:
        rows += _around(_multiples(q_len, b, rng, every or b == largest))
    if causal_offset is not None:
        frontier = [0, kv_len - 1]
        for b in sizes:
            frontier += _multiples(kv_len, b, rng, every or b == largest)
        rows += _around(j - causal_offset for j in frontier)
        rows += [-causal_offset, kv_len - 1 - causal_offset]
    if key_mask is not None:
        key_edges = _edges(_mask_changes(key_mask, -1), rng)
        rows += _around(key_edges)
        if causal_offset is not None:
            rows += _around(j - causal_offset for j in key_edges)
        rows += _around(_edges(_mask_changes(key_mask, -2), rng))
    if random_rows > 0:
        rows += [int(i) for i in rng.integers(0, q_len, size=random_rows)]
    arr = np.unique(np.asarray(rows, dtype=np.int64))
    return arr[(arr >= 0) & (arr < q_len)]


def compact(rows: Iterable[int]) -> str:
    """Sorted row indices as ranges: ``0-1,15-17,31-33``."""
    out: list[str] = []
    sorted_rows = sorted({int(r) for r in rows})
    start = prev = None
    for r in sorted_rows:
        if prev is not None and r == prev + 1:
            prev = r
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = r
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


# -- the rows of a reference that holds only some of them --------------------------------------

#: how a reference's judged rows sit in the whole output (``Reference.row_layout``):
#: ``"query"`` -- attention's query axis, -2 of the output (the leading dims kept whole);
#: ``"flat"`` -- a norm's rows, the output's leading dims flattened (the reference holds
#: (len(rows), *normalized dims))
ROW_LAYOUTS: tuple[str, ...] = ("query", "flat")


def judged_part(
    layout: str, rows: Iterable[int], output: np.ndarray, judged_shape: tuple[int, ...]
) -> np.ndarray:
    """The judged rows of a whole ``output``, in the order of ``rows``, shaped as the
    reference that judges them (``judged_shape``)."""
    index = list(rows)
    if layout == "query":
        return output[..., index, :]
    if layout == "flat":
        return output.reshape(-1, *judged_shape[1:])[index]
    raise ValueError(f"unknown row layout {layout!r}; expected one of {', '.join(ROW_LAYOUTS)}")


def whole_index(
    layout: str, rows: Sequence[int], index: tuple[int, ...], full_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The index in the whole output of ``index`` in the judged part."""
    if layout == "query":
        return (*index[:-2], int(rows[index[-2]]), index[-1])
    lead = full_shape[: len(full_shape) - (len(index) - 1)]
    return (*(int(i) for i in np.unravel_index(int(rows[index[0]]), lead)), *index[1:])


def row_count(layout: str, full_shape: tuple[int, ...], judged_shape: tuple[int, ...]) -> int:
    """How many rows the whole output has."""
    if layout == "query":
        return int(full_shape[-2])
    return int(np.prod(full_shape[: len(full_shape) - (len(judged_shape) - 1)], dtype=np.int64))


def row_name(layout: str) -> str:
    return "query rows" if layout == "query" else "rows"


def summary(layout: str, rows: Sequence[int], total: int, limit: int = 200) -> str:
    """``judged 1923 of 131072 query rows: 0-2,15-17,...`` (the list cut at ``limit``
    characters)."""
    text = compact(rows)
    if len(text) > limit:
        text = text[: text.rfind(",", 0, limit)] + ",..."
    return f"judged {len(rows)} of {total} {row_name(layout)}: {text}"
