"""Helpers for the layer conformance tests: run one layer property under Hypothesis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from transpec.adapters.base import Adapter
from transpec.oracle.harness import Harness
from transpec.oracle.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.properties import Property, select


def run_layer_property(
    prop: Property,
    adapter: Adapter,
    dtype: str,
    examples: int,
    on_example: Callable[[Harness, dict[str, Any]], None] | None = None,
) -> float:
    """The worst ratio over ``examples`` derandomized examples (no shrinking); failures
    propagate. ``on_example`` replaces the plain check (to classify examples)."""
    reason = prop.applies(adapter, dtype)
    assert reason is None, f"{prop.id} does not apply to {adapter.name} {dtype}: {reason}"
    harness = Harness(adapter, dtype)
    worst = [0.0]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(prop.inputs(dtype))
    def test(args: dict[str, Any]) -> None:
        if on_example is not None:
            on_example(harness, args)
            return
        ratio = prop.check(harness, args)
        assert ratio <= 1.0, f"{prop.id}: ratio {ratio} > 1 without raising"
        worst[0] = max(worst[0], ratio)

    test()
    return worst[0]


@pytest.fixture
def layer_accepts() -> Callable[..., float]:
    def run(component: str, name: str, adapter: Adapter, dtype: str, examples: int = 10) -> float:
        (prop,) = select(component, name)
        return run_layer_property(prop, adapter, dtype, examples)

    return run


@pytest.fixture
def layer_rejects() -> Callable[..., BaseException]:
    def run(
        component: str, name: str, adapter: Adapter, dtype: str, examples: int = 30
    ) -> BaseException:
        (prop,) = select(component, name)
        with pytest.raises((PropertyViolation, ImplementationFailure)) as info:
            run_layer_property(prop, adapter, dtype, examples)
        return info.value

    return run


@pytest.fixture
def layer_runner() -> Callable[..., float]:
    """run_layer_property(prop, adapter, dtype, examples, on_example=None)."""
    return run_layer_property
