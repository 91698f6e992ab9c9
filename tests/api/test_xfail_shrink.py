"""A verdict the known-failures file lists is not shrunk: it fails on the first failing example
found (fewer calls, the same failure), while the same failure unlisted is shrunk as ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from transpec.runs import run
from transpec.xfails import KnownFailures

CLI = Path(__file__).resolve().parent.parent / "cli"


def test_a_listed_failure_is_not_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(CLI))
    from cli_fixtures import WrongScaleAttention

    options = {
        "components": ["attention"],
        "properties": ["equivalence"],
        "dtypes": ["float64"],
        "failures_dir": None,
    }
    (shrunk,) = run(WrongScaleAttention(), **options).verdicts
    known = KnownFailures.parse("attention.equivalence[float64-cpu]  # the wrong scale\n")
    (listed,) = run(WrongScaleAttention(), xfails=known, **options).verdicts
    assert shrunk.status == "failed" and listed.status == "xfailed"
    assert listed.failure_kind == shrunk.failure_kind == "violation"
    assert 1 <= listed.examples < shrunk.examples
    other = KnownFailures.parse("attention.causality[float64-cpu]  # another verdict\n")
    (unlisted,) = run(WrongScaleAttention(), xfails=other, **options).verdicts
    assert (unlisted.status, unlisted.examples) == ("failed", shrunk.examples)
