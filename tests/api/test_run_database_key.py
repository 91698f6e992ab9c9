"""The example database's key: Hypothesis derives it from the test's source (a digest of its
tokens, taken again for every case); a run without a database never uses it, so it is not
taken, and a run with one keeps Hypothesis's own key, so its failures are replayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import run


class ScaledSoftmax(NumpyAdapter):
    """A softmax 1 % too large: every example fails ``softmax.equivalence``."""

    name = "scaled-softmax"

    def softmax(self, x: Any, dim: int = -1) -> Any:
        return super().softmax(x, dim) * 1.01


def _run(adapter: NumpyAdapter, profile: str, folder: Path) -> Any:
    return run(
        adapter,
        components=["softmax"],
        properties=["equivalence"],
        dtypes=["float64"],
        profile=profile,
        max_examples=4,
        failures_dir=folder / "failures",
    )


def test_no_database_no_source_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypothesis.core

    def refused(_function: Any) -> bytes:
        raise AssertionError("the database key was derived without a database")

    monkeypatch.setattr(hypothesis.core, "function_digest", refused)
    monkeypatch.setenv("CI", "true")
    result = _run(ScaledSoftmax(), "ci", tmp_path)
    assert [v.status for v in result.verdicts] == ["failed"]


def test_a_database_keeps_the_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = _run(ScaledSoftmax(), "thorough", tmp_path)
    assert [v.status for v in result.verdicts] == ["failed"]
    saved = [p for p in (tmp_path / ".hypothesis" / "transpec").rglob("*") if p.is_file()]
    assert saved, "the failing example was not saved to the example database"
