"""Hypothesis profiles: ci is a fixed-seed regression gate, thorough hunts, CI=true pins both."""

from __future__ import annotations

import pytest

from transpec.oracle.engine.profiles import (
    CI_MAX_EXAMPLES,
    DATABASE_DIR,
    THOROUGH_MAX_EXAMPLES,
    case_seed,
    hypothesis_settings,
    resolve,
)


def test_ci_profile_is_derandomized_without_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    ci = resolve("ci")
    assert (ci.seed, ci.max_examples, ci.database) == (0, CI_MAX_EXAMPLES, None)
    settings = hypothesis_settings(ci)
    assert settings.database is None and settings.deadline is None
    # the same case gets the same seed on every run; different cases get different seeds
    assert case_seed(ci, "attention", "causality") == case_seed(
        resolve("ci"), "attention", "causality"
    )
    assert case_seed(ci, "attention", "causality") != case_seed(ci, "attention", "gqa")


def test_thorough_profile_is_randomized_with_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    seeds = {resolve("thorough").seed for _ in range(4)}
    assert len(seeds) > 1
    thorough = resolve("thorough", seed=7)
    assert (thorough.seed, thorough.max_examples) == (7, THOROUGH_MAX_EXAMPLES)
    assert thorough.database == DATABASE_DIR
    assert hypothesis_settings(thorough).database is not None


def test_ci_environment_pins_the_seed_and_drops_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    thorough = resolve("thorough")
    assert (thorough.seed, thorough.database) == (0, None)
    assert resolve("thorough", max_examples=5).max_examples == 5
    monkeypatch.setenv("CI", "false")
    assert resolve("thorough").database == DATABASE_DIR


@pytest.mark.parametrize(
    "kwargs", [{"name": "quick"}, {"max_examples": 0}, {"seed": -1}, {"max_examples": True}]
)
def test_invalid_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        resolve(**kwargs)  # type: ignore[arg-type]
