"""Strategies that draw a length inside a draw get one strategy object per set of options:
Hypothesis builds (and validates) every new strategy object, which costs far more than drawing
from one, and the same options must still draw the same lengths."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from transpec.oracle.engine.strategy import LONG_LENGTHS, lengths


def test_the_same_options_give_the_same_strategy() -> None:
    assert lengths(max_value=33, long=(97,)) is lengths(max_value=33, long=[97])
    assert lengths() is lengths(min_value=1, max_value=64, long=LONG_LENGTHS)
    assert lengths(max_value=33) is not lengths(max_value=34)
    assert lengths(min_value=2, long=(1, 97)) is lengths(min_value=2, long=(97,))


@settings(max_examples=50, database=None)
@given(st.data())
def test_a_shared_strategy_draws_within_its_options(data: st.DataObject) -> None:
    top = data.draw(st.integers(1, 40))
    n = data.draw(lengths(min_value=1, max_value=top, long=(97,)))
    assert 1 <= n <= top or n == 97
