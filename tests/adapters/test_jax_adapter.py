"""The jax built-in adapter: its declarations, and jax.nn.softmax passing under them where it
fails without the flushed-subnormals declaration (docs/findings.md)."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

from transpec.adapters.registry import load_adapter
from transpec.runs import run
from transpec.spec.conventions import CANONICAL


@pytest.mark.slow
def test_softmax_passes_declared_and_fails_undeclared() -> None:
    adapter = load_adapter("jax")
    assert adapter.conventions.flush_subnormals == ("float64", "float32")
    assert adapter.components() == ("softmax", "attention")
    options = {
        "components": ["softmax"],
        "properties": ["equivalence", "large_logits"],
        "dtypes": ["float32"],
        "max_examples": 8,
        "failures_dir": None,
    }
    assert run(adapter, **options).exit_code == 0
    adapter.conventions = CANONICAL
    assert run(adapter, **options).exit_code == 1
