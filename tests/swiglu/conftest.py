"""Running the SwiGLU properties under Hypothesis against an adapter, without the runner."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from transpec.adapters.base import Adapter
from transpec.oracle import swiglu
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation

Runner = Callable[..., float]
PROPERTIES = {p.name: p for p in swiglu.properties()}


def run_property(name: str, adapter: Adapter, dtype: str, examples: int) -> float:
    """The worst ratio of property ``name`` over ``examples`` derandomized examples; a failure
    (PropertyViolation, ImplementationFailure) propagates."""
    prop = PROPERTIES[name]
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
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(prop.inputs(dtype))
    def test(args: dict) -> None:
        ratio = prop.check(harness, args)
        assert ratio <= 1.0, f"{prop.id}: ratio {ratio} > 1 without a raise"
        worst[0] = max(worst[0], ratio)

    test()
    return worst[0]


@pytest.fixture
def accepts() -> Runner:
    """accepts(name, adapter, dtype, examples=...) -> the worst ratio (<= 1)."""

    def run(name: str, adapter: Adapter, dtype: str, examples: int = 30) -> float:
        return run_property(name, adapter, dtype, examples)

    return run


@pytest.fixture
def rejects() -> Callable[..., BaseException]:
    """rejects(name, adapter, dtype, examples=...) -> the failure the property raised."""

    def run(name: str, adapter: Adapter, dtype: str, examples: int = 25) -> BaseException:
        with pytest.raises((PropertyViolation, ImplementationFailure)) as info:
            run_property(name, adapter, dtype, examples)
        return info.value

    return run
