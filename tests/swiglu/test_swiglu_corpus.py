"""The SwiGLU corpus: every chaff is killed in every dtype where its defect is visible, every
wheat passes every property in every dtype, and every property kills a known chaff."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("torch")

import corpus

from transpec.oracle.catalogue import select
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation

Runner = Callable[..., float]
COMPONENT = "swiglu_feed_forward"
PROPERTIES = {p.name: p for p in select(COMPONENT) if not p.backward}
#: the forward corpus: a backward chaff computes the right forward and is judged elsewhere
#: (tests/quality/test_corpus_backward.py)
CHAFFS = corpus.select(COMPONENT, "chaff", backward=False)
WHEATS = corpus.select(COMPONENT, "wheat", backward=False)

#: each property, and the chaff that shows it can fail (killed in every dtype listed)
KILLS: dict[str, str] = {
    "equivalence": "swiglu_gate_up_swapped",
    "shape_dtype": "swiglu_compute_dtype_returned",
    "token_permutation_equivariance": "swiglu_tokens_reshaped",
    "up_projection_homogeneity": "swiglu_silu_after_product",
}


def _killed(run_property: Runner, name: str, prop: str, dtype: str, examples: int = 15) -> bool:
    try:
        run_property(PROPERTIES[prop], corpus.entry(name).make(), dtype, examples)
    except (PropertyViolation, ImplementationFailure):
        return True
    return False


def test_the_corpus_has_swiglu_chaffs_and_wheats() -> None:
    assert len(CHAFFS) >= 1 and len(WHEATS) >= 1
    assert set(KILLS.values()) <= {e.name for e in CHAFFS}
    assert set(KILLS) == set(PROPERTIES)
    for e in CHAFFS + WHEATS:
        assert e.make().components() == (COMPONENT,)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [pytest.param(e.name, d, id=f"{e.name}-{d}") for e in CHAFFS for d in e.visible],
)
def test_chaff_is_killed(name: str, dtype: str, run_property: Runner) -> None:
    order = ["equivalence", *(p for p in PROPERTIES if p != "equivalence")]
    assert any(_killed(run_property, name, prop, dtype) for prop in order), (
        f"{name} survives in {dtype}"
    )


@pytest.mark.parametrize("prop", sorted(KILLS))
def test_every_property_kills_a_known_chaff(prop: str, run_property: Runner) -> None:
    entry = corpus.entry(KILLS[prop])
    for dtype in entry.visible:
        assert _killed(run_property, entry.name, prop, dtype), (
            f"{prop} misses {entry.name} in {dtype}"
        )


@pytest.mark.parametrize(
    ("name", "dtype"),
    [pytest.param(e.name, d, id=f"{e.name}-{d}") for e in WHEATS for d in corpus.ALL_DTYPES],
)
def test_wheat_passes_every_property(name: str, dtype: str, run_property: Runner) -> None:
    for prop in PROPERTIES.values():
        assert run_property(prop, corpus.entry(name).make(), dtype, 20) <= 1.0
