"""Fixtures for the property tests: run one property under Hypothesis against an adapter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from transpec.adapters.base import Adapter
from transpec.oracle.harness import Harness
from transpec.oracle.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.properties import Property, select

Runner = Callable[..., float]


def _run(prop: Property, adapter: Adapter, dtype: str, examples: int, shrink: bool) -> float:
    """The worst ratio over ``examples`` derandomized examples; failures propagate."""
    reason = prop.applies(adapter, dtype)
    assert reason is None, f"{prop.id} does not apply to {adapter.name} {dtype}: {reason}"
    harness = Harness(adapter, dtype)
    worst = [0.0]
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if shrink else ())

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(prop.inputs(dtype))
    def test(args: dict) -> None:
        ratio = prop.check(harness, args)
        assert ratio <= 1.0, f"{prop.id}: a check returned ratio {ratio} > 1 without raising"
        worst[0] = max(worst[0], ratio)

    test()
    return worst[0]


@pytest.fixture
def accepts() -> Runner:
    """accepts(component, name, adapter, dtype, examples=...) -> worst ratio (<= 1)."""

    def run(component: str, name: str, adapter: Adapter, dtype: str, examples: int = 8) -> float:
        (prop,) = select(component, name)
        return _run(prop, adapter, dtype, examples, shrink=False)

    return run


@pytest.fixture
def rejects() -> Callable[..., BaseException]:
    """rejects(component, name, adapter, dtype, examples=...) -> the failure it raised."""

    def run(
        component: str, name: str, adapter: Adapter, dtype: str, examples: int = 25
    ) -> BaseException:
        (prop,) = select(component, name)
        with pytest.raises((PropertyViolation, ImplementationFailure)) as info:
            _run(prop, adapter, dtype, examples, shrink=False)
        return info.value

    return run
