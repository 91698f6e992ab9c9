"""The pieces every strategy is built from: argument dicts, eager validation, lengths, arrays.

Strategies are functions of the dtype under test with keyword-only options validated eagerly
(:func:`checked_dtype`, :func:`positive_int`, :func:`selection`, :func:`tristate`); shapes and
regimes are drawn by Hypothesis, array values by a NumPy generator seeded by a drawn integer
(:func:`seeded_rng`), so examples stay cheap and still shrink.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.oracle.engine.dtypes import canonical_dtype

#: the arguments of one component call, keyed by the adapter method's parameters (float64 or
#: bool arrays, integer index arrays, plain Python values, a dict of parameter arrays)
Args = dict[str, Any]

#: lengths that are not multiples of 8, 64 or 128, or sit just next to one
SPECIAL_LENGTHS: tuple[int, ...] = (1, 2, 7, 8, 9, 15, 17, 31, 33, 63, 64, 65)
#: occasional longer lengths (odd, so tiled kernels hit ragged tiles)
LONG_LENGTHS: tuple[int, ...] = (97, 113, 129, 257, 300)


# -- validation ------------------------------------------------------------------------------


def checked_dtype(dtype: str) -> str:
    """The canonical name of ``dtype``; ``TypeError`` when it is not a string."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a dtype name, got {type(dtype).__name__}")
    return canonical_dtype(dtype)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` when it is an int (not a bool) >= ``minimum``; ``TypeError``/``ValueError``
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def selection(name: str, values: Sequence[str] | str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``values`` (one name or several) as a tuple; ``ValueError`` when it is empty or names
    anything outside ``allowed``."""
    if isinstance(values, str):
        values = (values,)
    chosen = tuple(values)
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise ValueError(
            f"{name} must be a non-empty selection of {', '.join(allowed)}; got {chosen!r}"
        )
    return chosen


def tristate(name: str, value: Any) -> st.SearchStrategy[bool]:
    """A strategy for a flag: both values when ``value`` is None, else just ``value``."""
    if value is None:
        return st.booleans()
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None (both), got {value!r}")
    return st.just(value)


def lengths(
    *, min_value: int = 1, max_value: int = 64, long: Sequence[int] = LONG_LENGTHS
) -> st.SearchStrategy[int]:
    """A sequence length: mostly in [min_value, max_value] (favouring :data:`SPECIAL_LENGTHS`),
    about one draw in eight from ``long`` (pass ``long=()`` to stay short).

    The same options give the same strategy object: strategies that draw their lengths inside
    a draw (a length bounded by another drawn size) call this once per example, and building a
    strategy costs far more than drawing from it."""
    positive_int("min_value", min_value)
    positive_int("max_value", max_value, minimum=min_value)
    return _lengths(min_value, max_value, tuple(int(n) for n in long if int(n) >= min_value))


@functools.cache
def _lengths(min_value: int, max_value: int, long: tuple[int, ...]) -> st.SearchStrategy[int]:
    special = [n for n in SPECIAL_LENGTHS if min_value <= n <= max_value]
    short = st.integers(min_value, max_value)
    if special:
        short = st.one_of(short, st.sampled_from(special))
    if not long:
        return short

    @st.composite
    def draw_length(draw: st.DrawFn) -> int:
        if draw(st.integers(0, 7)) == 7:
            return draw(st.sampled_from(long))
        return draw(short)

    return draw_length()


def seeded_rng(seed: int) -> np.random.Generator:
    """The NumPy generator the strategies draw arrays from, seeded by a drawn integer."""
    return np.random.default_rng(seed)


def scaled_rows(rng: np.random.Generator, shape: tuple[int, ...], log2_spread: float) -> np.ndarray:
    """Standard normal values whose rows (last axis) are scaled by 2^U(-spread, spread)."""
    x = rng.standard_normal(shape)
    if log2_spread > 0 and len(shape) >= 1:
        exponents = rng.uniform(-log2_spread, log2_spread, size=(*shape[:-1], 1))
        x = x * np.exp2(np.round(exponents))
    return x
