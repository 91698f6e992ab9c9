"""The backward corpus under the same rule as the forward one: every backward chaff is killed in
every dtype where its defect is visible, every backward wheat passes every backward property of
its component in every dtype (the runner's ``ci`` profile, gradients on).

A surviving chaff is a gap in the strategies or the gradient tolerances, never a reason to
weaken the corpus.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import corpus
from corpus.judge import first_kill_among

from transpec.oracle.catalogue import select

#: tried first: the properties that see most backward defects soonest
PREFERRED = (
    "grad_equivalence_q",
    "grad_equivalence_x",
    "grad_equivalence_k",
    "grad_equivalence_memory",
)


def _order(component: str) -> list[str]:
    names = [p.name for p in select(components=[component]) if p.backward]
    return [p for p in PREFERRED if p in names] + [p for p in names if p not in PREFERRED]


#: (chaff, dtype) pairs that survive the ci profile: gaps of the gradient tolerances, each
#: a strict expected failure (a tighter bound that kills it must remove it from here)
KNOWN_GAPS: dict[tuple[str, str], str] = {
    ("encoder_grad_residual_missing", "bfloat16"): (
        "the encoder layer's bfloat16 bound on src's gradient is about 0.6 of the gradient "
        "itself, so the missing ȳ is out of tolerance by 1.6x at most: none of the ci "
        "profile's 12 examples shows it (the 30th of 200 does)"
    ),
}


def _chaff_param(name: str, dtype: str) -> object:
    gap = KNOWN_GAPS.get((name, dtype))
    marks = [pytest.mark.xfail(strict=True, reason=f"tolerance gap: {gap}")] if gap else []
    return pytest.param(name, dtype, id=f"{name}-{dtype}", marks=marks)


CHAFF_CASES = [_chaff_param(e.name, d) for e in corpus.BACKWARD_CHAFFS for d in e.visible]
WHEAT_CASES = [
    pytest.param(e.name, d, id=f"{e.name}-{d}")
    for e in corpus.BACKWARD_WHEATS
    for d in corpus.ALL_DTYPES
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), CHAFF_CASES)
def test_backward_chaff_is_killed(name: str, dtype: str) -> None:
    entry = corpus.entry(name)
    killed, seen = first_kill_among(entry.make, entry.component, _order(entry.component), dtype)
    if killed:
        return
    pytest.fail(
        f"backward chaff {name} survives in {dtype} ({entry.description}); its defect is "
        f"visible there because {entry.why}.\n" + "\n".join(seen)
    )


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), WHEAT_CASES)
def test_backward_wheat_passes(name: str, dtype: str) -> None:
    from transpec.runs import run

    entry = corpus.entry(name)
    result = run(
        entry.make(),
        components=[entry.component],
        properties=_order(entry.component),
        dtypes=[dtype],
        devices=["cpu"],
        profile="ci",
        failures_dir=None,
    )
    bad = [v for v in result.verdicts if v.status in ("failed", "error")]
    assert not bad, f"wheat {name} ({entry.description}) flagged in {dtype}:\n" + "\n".join(
        f"{v.property}: {v.status}: {v.message}" for v in bad
    )
    assert any(v.status == "passed" for v in result.verdicts), "no property ran"


def test_backward_corpus_size_and_shape() -> None:
    """At least 20 backward chaffs and 8 backward wheats; every component with a backward oracle
    has a backward chaff, every kernel a backward wheat too."""
    from transpec.oracle import components

    assert len(corpus.BACKWARD_CHAFFS) >= 20
    assert len(corpus.BACKWARD_WHEATS) >= 8
    with_backward = [n for n in components.names() if components.get(n).gradients]
    assert {"softmax", "attention", "decoder_layer"} <= set(with_backward)
    for component in with_backward:
        assert any(e.component == component for e in corpus.BACKWARD_CHAFFS), component
    for component in ("softmax", "attention", "layer_norm", "rms_norm"):
        assert any(e.component == component for e in corpus.BACKWARD_WHEATS), component
    for e in corpus.BACKWARD_CHAFFS + corpus.BACKWARD_WHEATS:
        assert e.gradients and e.make().provides_gradients(e.component), e.name
        assert e not in corpus.CHAFFS and e not in corpus.WHEATS
