"""The built-in ``jax`` adapter's declarations hold on jax.nn as installed: its half-precision
softmax (element-wise math in the input dtype, the sum in float32) passes under the element-wise
knob it declares, and fails when declared as float32 math."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

from transpec.adapters.base import Precision
from transpec.runs import run


def _softmax_verdicts(adapter: object, dtypes: list[str]) -> dict[str, str]:
    result = run(
        adapter,  # type: ignore[arg-type]
        components=["softmax"],
        properties=["equivalence", "error_statistic"],
        dtypes=dtypes,
        failures_dir=None,
    )
    return {v.name: v.status for v in result.verdicts}


@pytest.mark.slow
def test_jax_softmax_in_half_precision_passes_under_its_declaration() -> None:
    from transpec.adapters.jax.adapter import JaxAdapter

    adapter = JaxAdapter()
    assert adapter.precision("softmax", "bfloat16") == Precision(
        "float32", "bfloat16", elementwise="bfloat16"
    )
    verdicts = _softmax_verdicts(adapter, ["float16", "bfloat16"])
    assert len(verdicts) == 4 and set(verdicts.values()) == {"passed"}, verdicts


@pytest.mark.slow
def test_jax_softmax_declared_as_float32_math_fails() -> None:
    from transpec.adapters.jax.adapter import JaxAdapter

    class Float32Math(JaxAdapter):
        def precision(self, component: str, dtype: str) -> Precision:
            return Precision("float32", "float32")

    verdicts = _softmax_verdicts(Float32Math(), ["bfloat16"])
    assert "failed" in verdicts.values(), verdicts
