"""softcap in the attention signature: passed only when a property draws it, to a method that
takes it; judged against the reference (softcap before the mask); a method that cannot receive
it (no such parameter, no ``**kwargs``) has ``attention.softcap`` skipped by the run's plan with
the reason, before anything is drawn (the runner and the corpus's replays alike), and one that
ignores it fails."""

from __future__ import annotations

from typing import Any

import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import plan, run


class IgnoresSoftcap(NumpyAdapter):
    name = "ignores-softcap"

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> Any:
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


class WithoutSoftcap(NumpyAdapter):
    name = "without-softcap"

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


def _softcap(adapter: Any) -> Any:
    return run(
        adapter,
        components=["attention"],
        properties=["softcap", "equivalence"],
        dtypes=["float64", "float32"],
        failures_dir=None,
        seed=2,
    )


def test_numpy_softcap_passes() -> None:
    result = _softcap(NumpyAdapter())
    assert result.exit_code == 0, [v.report for v in result.failures]


def test_ignored_softcap_fails() -> None:
    result = _softcap(IgnoresSoftcap())
    failed = {v.property for v in result.failures}
    assert failed == {"softcap"}


def test_method_without_softcap_is_skipped_and_judged_on_the_rest() -> None:
    result = _softcap(WithoutSoftcap())
    status = {(v.property, v.status) for v in result.verdicts}
    assert status == {("softcap", "skipped"), ("equivalence", "passed")}
    skipped = [v for v in result.verdicts if v.status == "skipped"]
    assert {v.message for v in skipped} == {
        "without-softcap's attention method takes no softcap argument, which every example of "
        "this property passes"
    }
    # skipped by the plan, before anything is drawn: no example, none discarded
    assert all(v.examples == 0 and v.discarded == 0 for v in skipped)


class KeywordsOnly(WithoutSoftcap):
    """A method that takes ``**kwargs`` can receive a softcap: it is not skipped statically."""

    name = "keywords"

    def scaled_dot_product_attention(self, q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        kwargs.pop("softcap", None)  # ignored: the property must fail it
        return super().scaled_dot_product_attention(q, k, v, **kwargs)


def test_the_plan_skips_only_a_method_that_cannot_receive_softcap() -> None:
    (without,) = plan(
        WithoutSoftcap(), components=["attention"], properties=["softcap"], dtypes=["float32"]
    )
    assert without.skip is not None and "takes no softcap argument" in without.skip
    for adapter in (NumpyAdapter(), IgnoresSoftcap(), KeywordsOnly()):
        (case,) = plan(
            adapter, components=["attention"], properties=["softcap"], dtypes=["float32"]
        )
        assert case.skip is None, adapter.name
    result = _softcap(KeywordsOnly())
    assert {v.property for v in result.failures} == {"softcap"}  # received, ignored: killed


def test_the_corpus_replay_skips_it_as_the_run_does() -> None:
    """``corpus.judge.first_kill`` plans like the runner: a torch entry, whose method has no
    softcap, gets the same skip and draws nothing (it used to end in Unsatisfiable)."""
    pytest.importorskip("torch")
    import corpus
    from corpus.judge import first_kill

    kill = first_kill(
        corpus.entry("attention_scale_sqrt_e_plus1").make(), "attention", "softcap", "float32"
    )
    assert (kill.status, kill.examples) == ("skipped", 0)
    assert "takes no softcap argument" in kill.message


class RefusesSoftcap(IgnoresSoftcap):
    """Takes the parameter but refuses every softcap in ``supports()`` (a library whose kernel
    cannot cap): only drawing finds that out."""

    name = "refuses-softcap"

    def supports(self, component: str, args: Any, **_: Any) -> str | None:
        return "no softcap kernel" if args.get("softcap") is not None else None


def test_every_example_refused_by_supports_is_a_skip_in_the_corpus_replay_too() -> None:
    pytest.importorskip("torch")
    from corpus.judge import first_kill

    kill = first_kill(RefusesSoftcap(), "attention", "softcap", "float32", max_examples=5)
    assert kill.status == "skipped" and kill.examples > 0
    assert kill.message == "the adapter rejects every example drawn: no softcap kernel"
    (verdict,) = run(
        RefusesSoftcap(),
        components=["attention"],
        properties=["softcap"],
        dtypes=["float32"],
        failures_dir=None,
    ).verdicts
    assert (verdict.status, verdict.message) == ("skipped", kill.message)
