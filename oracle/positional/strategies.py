"""Hypothesis strategies for the embedding and positional components, reaching their regimes.

Like :mod:`transpec.oracle.kernels.strategies`: each strategy is a function of the dtype under test
with keyword-only, eagerly validated options whose defaults generate everything supported; arrays
come from a NumPy generator seeded by a drawn integer (cheap examples that still shrink).

Regimes:

* embedding -- index arrays of 0 to 3 dims with repeated ids, vocabularies of 1 to 1000 rows,
  widths that are not multiples of 8, rows of very different scale, with and without the
  :math:`\\sqrt{d}` scaling;
* sinusoidal encoding -- lengths not multiples of 8, widths from 4 to 512, offsets 0, small,
  and far (up to 16384: the rounding of the angle p·ω grows with p);
* RoPE -- 0 to 2 leading dims, head dims 2 to 128, bases 100 to 10^6, positions from an offset
  (KV-cache decode, L = 1 included) or an explicit integer array (not necessarily contiguous);
* ALiBi -- head counts that are and are not powers of 2 (3, 5, 6, 12, 20, ...), Lq = 1 (decode),
  Lq = Lk and Lq < Lk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.oracle.engine.strategy import (
    checked_dtype,
    lengths,
    scaled_rows,
    seeded_rng,
    selection,
    tristate,
)

#: row-scale spread (log2) of float inputs per dtype: wide, and never near the overflow of the
#: dtype once multiplied by sqrt(d) <= 23
_SPREAD: dict[str, float] = {"float64": 12.0, "float32": 12.0, "float16": 6.0, "bfloat16": 12.0}

#: far positions: powers of two and their neighbours, where caches and tiles end
FAR_OFFSETS: tuple[int, ...] = (255, 256, 1023, 2047, 2048, 4095, 8191, 16384)

POSITION_MODES: tuple[str, ...] = ("offset", "positions")


def _offsets(max_offset: int) -> st.SearchStrategy[int]:
    far = [o for o in FAR_OFFSETS if o <= max_offset]
    choices = [st.just(0), st.integers(0, min(64, max_offset)), st.integers(0, max_offset)]
    if far:
        choices.append(st.sampled_from(far))
    return st.one_of(*choices)


def _max_offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_offset must be a non-negative int, got {value!r}")
    return value


def embedding_inputs(
    dtype: str, *, scale_by_sqrt_d: bool | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """``{"input", "weight", "scale_by_sqrt_d"}``: int64 ids of 0-3 dims into a (V, d) table."""
    dt = checked_dtype(dtype)
    scale = tristate("scale_by_sqrt_d", scale_by_sqrt_d)

    @st.composite
    def draw(d: st.DrawFn) -> dict[str, Any]:
        vocab = d(st.one_of(st.integers(1, 64), st.sampled_from((1, 2, 1000))))
        width = d(lengths(max_value=64, long=(97, 128, 300)))
        shape = tuple(d(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
        rng = seeded_rng(d(st.integers(0, 2**32 - 1)))
        ids = rng.integers(0, vocab, size=shape, dtype=np.int64)
        weight = scaled_rows(rng, (vocab, width), _SPREAD[dt])
        return {"input": ids, "weight": weight, "scale_by_sqrt_d": d(scale)}

    return draw()


def sinusoidal_inputs(
    dtype: str, *, min_length: int = 1, max_offset: int = 16384, min_offset: int = 0
) -> st.SearchStrategy[dict[str, Any]]:
    """``{"length", "d_model", "offset", "dtype"}``: an even d_model >= 4 (every layout and
    frequency set is defined there), offsets in [min_offset, max_offset]."""
    dt = checked_dtype(dtype)
    top = _max_offset(max_offset)
    if not 0 <= min_offset <= top:
        raise ValueError(f"min_offset must be in [0, max_offset], got {min_offset!r}")
    length = lengths(min_value=min_length, max_value=64, long=(97, 129))
    width = st.one_of(st.integers(2, 48).map(lambda h: 2 * h), st.sampled_from((64, 128, 512)))
    offset = _offsets(top).filter(lambda o: o >= min_offset)
    if min_offset > 0:
        offset = st.one_of(offset, st.integers(min_offset, top))
    return st.fixed_dictionaries(
        {"length": length, "d_model": width, "offset": offset, "dtype": st.just(dt)}
    )


def rotary_inputs(
    dtype: str,
    *,
    position_modes: tuple[str, ...] | str = POSITION_MODES,
    max_offset: int = 16384,
    min_offset: int = 0,
    min_length: int = 1,
) -> st.SearchStrategy[dict[str, Any]]:
    """``{"x", "positions", "offset", "base"}``: x (*lead, L, D) with 0-2 leading dims, D even;
    positions either from ``offset`` (``positions=None``) or an explicit int64 array."""
    dt = checked_dtype(dtype)
    modes = selection("position_modes", position_modes, POSITION_MODES)
    top = _max_offset(max_offset)
    if not 0 <= min_offset <= top:
        raise ValueError(f"min_offset must be in [0, max_offset], got {min_offset!r}")
    offsets = _offsets(top).map(lambda o: max(o, min_offset))
    heads = st.one_of(st.sampled_from((2, 8, 64, 128)), st.integers(1, 40).map(lambda h: 2 * h))

    @st.composite
    def draw(d: st.DrawFn) -> dict[str, Any]:
        lead = tuple(d(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
        length = d(lengths(min_value=min_length, max_value=33, long=(97,)))
        head = d(heads)
        base = d(st.sampled_from((10000.0, 500000.0, 1000000.0, 100.0)))
        rng = seeded_rng(d(st.integers(0, 2**32 - 1)))
        x = scaled_rows(rng, (*lead, length, head), _SPREAD[dt])
        mode = d(st.sampled_from(modes))
        offset = d(offsets)
        if mode == "offset":
            return {"x": x, "positions": None, "offset": offset, "base": base}
        # explicit positions: sorted draws (gaps, repeats) from [offset, offset + 4L]
        positions = np.sort(rng.integers(offset, offset + 4 * length + 1, size=length))
        return {"x": x, "positions": positions.astype(np.int64), "offset": 0, "base": base}

    return draw()


def alibi_inputs(dtype: str) -> st.SearchStrategy[dict[str, Any]]:
    """``{"num_heads", "query_length", "key_length", "dtype"}``, Lq <= Lk."""
    dt = checked_dtype(dtype)

    @st.composite
    def draw(d: st.DrawFn) -> dict[str, Any]:
        heads = d(
            st.one_of(st.sampled_from((1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 32)), st.integers(1, 40))
        )
        key_length = d(lengths(max_value=64, long=(97, 300)))
        query_length = d(st.one_of(st.just(1), st.just(key_length), st.integers(1, key_length)))
        return {
            "num_heads": heads,
            "query_length": query_length,
            "key_length": key_length,
            "dtype": dt,
        }

    return draw()


def inputs(component: str, dtype: str, **options: Any) -> st.SearchStrategy[dict[str, Any]]:
    """The default strategy of one of the positional components (the registry's protocol)."""
    table: dict[str, Any] = {
        "embedding": embedding_inputs,
        "sinusoidal_positional_encoding": sinusoidal_inputs,
        "rotary_embedding": rotary_inputs,
        "alibi_bias": alibi_inputs,
    }
    if component not in table:
        raise ValueError(f"{component} is not one of the positional components {', '.join(table)}")
    return table[component](dtype, **options)
