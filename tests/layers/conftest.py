"""The layer tests' budgets: layers draw more varied arguments than the kernels, so their
acceptance and rejection runs take a few more examples than the defaults of ``accepts`` and
``rejects`` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from transpec.adapters.base import Adapter


@pytest.fixture
def layer_accepts(accepts: Callable[..., float]) -> Callable[..., float]:
    def run(component: str, name: str, adapter: Adapter, dtype: str, examples: int = 10) -> float:
        return accepts(component, name, adapter, dtype, examples)

    return run


@pytest.fixture
def layer_rejects(rejects: Callable[..., BaseException]) -> Callable[..., BaseException]:
    def run(
        component: str, name: str, adapter: Adapter, dtype: str, examples: int = 30
    ) -> BaseException:
        return rejects(component, name, adapter, dtype, examples)

    return run
