"""An adapter's ``supports()`` discards examples: counted apart from the examples run, and a
property whose every example is discarded is skipped with the adapter's reason (not an error)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import run


class RejectsEverySoftmax(NumpyAdapter):
    dtypes = ("float32",)

    def supports(
        self, component: str, args: Mapping[str, Any], *, dtype: Any = None, device: Any = None
    ) -> str | None:
        return "this kernel takes no input at all" if component == "softmax" else None


class RejectsLongRows(NumpyAdapter):
    dtypes = ("float32",)

    def supports(
        self, component: str, args: Mapping[str, Any], *, dtype: Any = None, device: Any = None
    ) -> str | None:
        if component == "softmax" and args["x"].shape[args["dim"]] > 8:
            return "rows longer than 8"
        return None


def test_a_property_with_every_example_rejected_is_skipped_with_the_reason() -> None:
    result = run(
        RejectsEverySoftmax(),
        components=["softmax"],
        properties=["equivalence"],
        max_examples=5,
        failures_dir=None,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "skipped", verdict.message
    assert verdict.message == (
        "the adapter rejects every example drawn: this kernel takes no input at all"
    )
    assert verdict.examples == 0 and verdict.discarded > 0


def test_discarded_examples_are_counted_apart() -> None:
    result = run(
        RejectsLongRows(),
        components=["softmax"],
        properties=["equivalence"],
        max_examples=20,
        failures_dir=None,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "passed"
    assert verdict.discarded > 0 and verdict.examples > 0
    assert f"({verdict.discarded} discarded" in verdict.message
    assert verdict.to_dict()["discarded"] == verdict.discarded
