"""The one way the tests run a property: under Hypothesis, derandomized, against an adapter.

Fixtures (available to every test):

* ``run_property(prop, adapter, dtype, examples, *, shrink=False, on_example=None)`` -> the
  worst error-to-tolerance ratio seen; a failure propagates;
* ``accepts(component, name, adapter, dtype, examples=8)`` -> the worst ratio (<= 1);
* ``rejects(component, name, adapter, dtype, examples=25)`` -> the failure the property raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from transpec.adapters.base import Adapter
from transpec.oracle.catalogue import select
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.engine.property import Property

Example = Callable[[Harness, dict[str, Any]], None]


def run_property(
    prop: Property,
    adapter: Adapter,
    dtype: str,
    examples: int,
    *,
    shrink: bool = False,
    on_example: Example | None = None,
) -> float:
    """The worst ratio over ``examples`` derandomized examples; failures propagate.

    ``on_example(harness, args)`` replaces the plain check (to classify examples)."""
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
    def test(args: dict[str, Any]) -> None:
        if on_example is not None:
            on_example(harness, args)
            return
        ratio = prop.check(harness, args)
        assert ratio <= 1.0, f"{prop.id}: a check returned ratio {ratio} > 1 without raising"
        worst[0] = max(worst[0], ratio)

    test()
    return worst[0]


def rejection(prop: Property, adapter: Adapter, dtype: str, examples: int) -> BaseException:
    """The failure ``prop`` raises on ``adapter`` (the test fails if it raises none)."""
    with pytest.raises((PropertyViolation, ImplementationFailure)) as info:
        run_property(prop, adapter, dtype, examples)
    return info.value


@pytest.fixture(name="run_property")
def run_property_fixture() -> Callable[..., float]:
    return run_property


@pytest.fixture
def accepts() -> Callable[..., float]:
    """accepts(component, name, adapter, dtype, examples=8) -> worst ratio (<= 1)."""

    def run(component: str, name: str, adapter: Adapter, dtype: str, examples: int = 8) -> float:
        (prop,) = select(component, name)
        return run_property(prop, adapter, dtype, examples)

    return run


@pytest.fixture
def rejects() -> Callable[..., BaseException]:
    """rejects(component, name, adapter, dtype, examples=25) -> the failure it raised."""

    def run(
        component: str, name: str, adapter: Adapter, dtype: str, examples: int = 25
    ) -> BaseException:
        (prop,) = select(component, name)
        return rejection(prop, adapter, dtype, examples)

    return run
