"""Every known bug is killed, every correct implementation passes.

The corpus (``benchmarks/corpus``) holds wrong implementations ("chaffs", one defect each) and
right ones computed another way or with a declared convention ("wheats"). With the runner's
``ci`` profile:

* each chaff must fail at least one property of its component in every dtype where its defect
  is visible at all (properties are run one at a time and the test stops at the first kill);
* each wheat must pass every property of its component in every dtype.

A surviving chaff is a gap in the strategies or the tolerances, never a reason to weaken the
corpus: ``python benchmarks/kill_matrix.py --only NAME`` shows which property sees what.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


import corpus
from corpus.judge import first_kill, first_kill_among, properties_of, verdict

#: tried first: the properties that kill most chaffs soonest (the kill matrix); the others follow
#: in the runner's order
PREFERRED = ("equivalence", "error_statistic", "fully_masked_rows", "large_logits", "gqa")

#: (chaff, dtype) pairs where the defect is visible but the ci examples do not reach it: gaps of
#: the strategies, reported to their owners. Strict: a fixed gap turns into a failing XPASS,
#: and the entry must then be removed here.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


#: (wheat, dtype) pairs that transpec wrongly flags: false alarms of the tolerance model,
#: reported to its owners (strict, as above)
KNOWN_FALSE_ALARMS: dict[tuple[str, str], str] = {}


def _order(component: str) -> list[str]:
    props = list(properties_of(component))
    return [p for p in PREFERRED if p in props] + [p for p in props if p not in PREFERRED]


def _chaff_param(name: str, dtype: str) -> object:
    gap = KNOWN_GAPS.get((name, dtype))
    marks = [pytest.mark.xfail(strict=True, reason=f"strategy gap: {gap}")] if gap else []
    return pytest.param(name, dtype, id=f"{name}-{dtype}", marks=marks)


CHAFF_CASES = [_chaff_param(e.name, d) for e in corpus.CHAFFS for d in e.visible]


def _wheat_param(name: str, dtype: str) -> object:
    alarm = KNOWN_FALSE_ALARMS.get((name, dtype))
    marks = [pytest.mark.xfail(strict=True, reason=f"false alarm: {alarm}")] if alarm else []
    return pytest.param(name, dtype, id=f"{name}-{dtype}", marks=marks)


WHEAT_CASES = [_wheat_param(e.name, d) for e in corpus.WHEATS for d in corpus.ALL_DTYPES]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), CHAFF_CASES)
def test_chaff_is_killed(name: str, dtype: str) -> None:
    """The runner's ci examples, replayed property by property without shrinking, until one
    fails (``corpus.judge.first_kill``: the same seeds and strategies as the runner)."""
    entry = corpus.entry(name)
    order = _order(entry.component)
    if (name, dtype) in KNOWN_GAPS:  # a known survivor: only where a fix of its gap would show
        order = [p for p in order if p in PREFERRED]
    killed, seen = first_kill_among(entry.make, entry.component, order, dtype)
    if killed:
        return
    pytest.fail(
        f"chaff {name} survives in {dtype} ({entry.description}); its defect is visible "
        f"there because {entry.why}.\n" + "\n".join(seen)
    )


@pytest.mark.parametrize(
    ("name", "prop", "dtype"),
    [
        ("attention_scale_sqrt_e_plus1", "equivalence", "bfloat16"),
        ("causal_bottom_right_undeclared", "causality", "float32"),
        ("layer_norm_unbiased_variance", "small_variance", "float16"),
        ("rms_norm_one_plus_weight_undeclared", "equivalence", "float64"),
        ("softmax_dim_ignored", "equivalence", "float32"),
    ],
)
def test_runner_agrees_with_replay(name: str, prop: str, dtype: str) -> None:
    """The runner itself (with shrinking) fails where the replay kills."""
    entry = corpus.entry(name)
    assert first_kill(entry.make(), entry.component, prop, dtype).status == "killed"
    v = verdict(entry.make(), entry.component, prop, dtype)
    assert v.status == "failed", v.message


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), WHEAT_CASES)
def test_wheat_passes(name: str, dtype: str) -> None:
    from transpec.runs import run

    entry = corpus.entry(name)
    result = run(
        entry.make(),
        components=[entry.component],
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


def test_corpus_size_and_shape() -> None:
    """At least 40 one-defect chaffs and 8 wheats, each a one-component torch adapter."""
    assert len(corpus.CHAFFS) >= 40
    assert len(corpus.WHEATS) >= 8
    names = [e.name for e in corpus.ENTRIES]
    assert len(names) == len(set(names))
    for e in corpus.ENTRIES:
        adapter = e.make()
        assert adapter.components() == (e.component,), e.name
        assert adapter.name == e.name
        assert e.description and "\n" not in e.description
        assert set(adapter.dtypes) == set(corpus.ALL_DTYPES)
        if e.is_chaff:
            assert e.visible and e.why, e.name
            assert set(e.visible) <= set(corpus.ALL_DTYPES)
        else:
            assert not e.visible


def test_each_component_has_chaffs_and_wheats() -> None:
    for component in ("softmax", "attention", "layer_norm", "rms_norm"):
        assert corpus.select(component, "chaff", backward=False), component
        assert corpus.select(component, "wheat", backward=False), component


def test_declared_wheats_differ_from_their_undeclared_chaffs() -> None:
    """A convention wheat must be the same code as its chaff, with only the declaration added:
    otherwise 'declared conforms' would be tested on another implementation."""
    pairs = [
        ("bool_mask_inverted", "bool_mask_inverted_declared", "bool_mask"),
        ("fully_masked_row_nan", "fully_masked_row_nan_declared", "fully_masked_row"),
        ("causal_bottom_right_undeclared", "causal_bottom_right_declared", "causal_alignment"),
        ("finite_mask_fill_undeclared", "finite_mask_fill_declared", "mask_fill"),
        ("gqa_tiled_undeclared", "gqa_tiled_declared", "gqa_mapping"),
        ("layer_norm_unbiased_variance", "layer_norm_unbiased_declared", "layer_norm_variance"),
        ("layer_norm_eps_added_to_std", "layer_norm_eps_added_to_std_declared", "layer_norm_eps"),
        (
            "rms_norm_one_plus_weight_undeclared",
            "rms_norm_one_plus_weight_declared",
            "rms_norm_weight",
        ),
        (
            "rms_norm_eps_added_to_rms_undeclared",
            "rms_norm_eps_added_to_rms_declared",
            "rms_norm_eps",
        ),
    ]
    for chaff_name, wheat_name, field in pairs:
        c, w = corpus.entry(chaff_name), corpus.entry(wheat_name)
        assert c.is_chaff and not w.is_chaff
        assert c.adapter.__mro__[1] is w.adapter.__mro__[1], (chaff_name, wheat_name)
        assert c.make().conventions.differences() == {}
        assert set(w.make().conventions.differences()) == {field}


def test_a_failure_the_baseline_shares_is_not_a_kill() -> None:
    """An example counts as a kill only where the correct baseline passes it: judged against a
    baseline with the same defect, no example kills (so a chaff cannot be "killed" through a
    finding of torch's that it inherits)."""
    entry = corpus.entry("softmax_dim_ignored")
    alone = first_kill(entry.make(), entry.component, "equivalence", "float32", baseline=None)
    assert alone.status == "killed"
    shared = first_kill(
        entry.make(), entry.component, "equivalence", "float32", baseline=entry.make()
    )
    assert shared.status == "survived"
    assert "fail on the baseline too, not counted" in shared.message
