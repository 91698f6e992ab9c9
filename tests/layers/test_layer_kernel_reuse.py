"""The layers' bound pass takes back the kernel references of the reference pass.

:func:`~transpec.oracle.layers.tolerance.layer_reference` keeps the attention and layer-norm
references its forward pass computed (with their inputs); :func:`tolerance` walks the same pass
and takes each back where its inputs are the same bit for bit. The bound must be the same, bit
for bit, as when every kernel reference is computed again, on every layer, mask kind, fill and
dtype; a kept reference whose inputs differ must not be used.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transpec.adapters.base import Precision
from transpec.oracle.layers import tolerance as lt
from transpec.oracle.layers.strategies import layer_inputs
from transpec.spec.conventions import Conventions

_SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
_CONVENTIONS = {
    "canonical": Conventions(),
    "finfo_min fill": Conventions(mask_fill="finfo_min"),
    "added fill": Conventions(mask_fill="finfo_min", mask_fill_mode="add"),
}


def _same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _bounds(component: str, args: Any, conventions: Conventions, dtype: str) -> tuple[Any, ...]:
    ref = lt.layer_reference(component, args, conventions=conventions, dtype=dtype)
    if component != "feed_forward":  # the one layer without attention or a norm
        assert ref.kernel_references, "the reference pass keeps its kernel references"
    precision = Precision(accumulate="float32" if dtype != "float64" else dtype, store=dtype)
    kept = lt.tolerance(component, ref, dtype, precision)
    fresh = lt.tolerance(
        component, dataclasses.replace(ref, kernel_references=()), dtype, precision
    )
    return ref, kept, fresh, precision


@pytest.mark.parametrize("conventions", list(_CONVENTIONS), ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("component", lt.LAYER_COMPONENTS)
def test_bound_is_the_same_with_kept_kernel_references(
    component: str, dtype: str, conventions: str
) -> None:
    conv = _CONVENTIONS[conventions].for_dtype(dtype)

    @_SETTINGS
    @given(args=layer_inputs(component, dtype))
    def check(args: Any) -> None:
        try:
            _, kept, fresh, _ = _bounds(component, args, conv, dtype)
        except ValueError as exc:  # a fill the layer reference cannot combine with a mask
            assert "mask_fill" in str(exc)
            return
        assert _same_bits(kept.bound, fresh.bound)
        assert _same_bits(kept.parts["first_order"], fresh.parts["first_order"])
        assert kept.derivation == fresh.derivation

    check()


@given(data=st.data())
@_SETTINGS
def test_kept_reference_of_other_inputs_is_not_used(data: st.DataObject) -> None:
    """References kept for other arguments (another draw) are recomputed, not taken: the
    bound is that of a fresh pass; and a wrong kept reference on the same inputs would show
    (the negative control: the reuse is real)."""
    component = "encoder_layer"
    first = data.draw(layer_inputs(component, "float32"))
    second = data.draw(layer_inputs(component, "float32"))
    ref, _, fresh, precision = _bounds(component, second, Conventions(), "float32")
    other = lt.layer_reference(component, first, dtype="float32")
    mixed = dataclasses.replace(ref, kernel_references=other.kernel_references)
    assert _same_bits(lt.tolerance(component, mixed, "float32", precision).bound, fresh.bound)

    # the same inputs with doctored kernel references: taken back, so the bound moves
    doctored = tuple(
        (inputs, dataclasses.replace(kernel, value=_doctored(kernel.value)))
        for inputs, kernel in ref.kernel_references
    )
    wrong = dataclasses.replace(ref, kernel_references=doctored)
    moved = lt.tolerance(component, wrong, "float32", precision).bound
    assert not _same_bits(moved, fresh.bound)


def _doctored(value: Any) -> np.ndarray:
    return np.asarray(value) * 2.0 + 1.0
