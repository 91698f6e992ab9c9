"""The cotangent: drawn with the component's arguments, like any input.

A gradient property's examples are the component's own strategy (every regime its forward
properties reach) plus ``grad_output``, an array of the output's shape: standard normal values
whose rows are scaled by 2^U(-3, 3), with, now and then, a row of zeros (a query or a slice whose
output the loss ignores) or a constant row (which the softmax and LayerNorm backward map to 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.oracle import components
from transpec.oracle.engine.strategy import scaled_rows, seeded_rng
from transpec.oracle.gradients.calls import GRAD_OUTPUT
from transpec.spec.conventions import CANONICAL

#: cotangent kinds: "normal" (rows of different scales), "sparse_rows" (some rows zero),
#: "constant_rows" (some rows constant)
COTANGENT_KINDS = ("normal", "sparse_rows", "constant_rows")


def output_shape(component: str, args: dict[str, Any]) -> tuple[int, ...]:
    """The shape of the component's output on ``args`` (from its float64 reference)."""
    with np.errstate(all="ignore"):
        ref = components.get(component).compute_reference(args, conventions=CANONICAL)
    return tuple(np.shape(ref.value))


def cotangent(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """A cotangent of ``shape`` of one of the :data:`COTANGENT_KINDS`."""
    g = scaled_rows(rng, shape, 3.0)
    if kind != "normal" and len(shape) >= 2:
        rows = rng.random(shape[:-1]) < 0.3
        fill = 0.0 if kind == "sparse_rows" else rng.standard_normal(shape[:-1])
        g = np.where(
            rows[..., None], np.asarray(fill)[..., None] if kind != "sparse_rows" else 0.0, g
        )
    return g


def with_cotangent(component: str, dtype: str, **options: Any) -> st.SearchStrategy[dict[str, Any]]:
    """The component's default strategy (``options`` passed on) with a drawn ``grad_output``."""
    base = components.get(component).inputs(dtype, **options)

    @st.composite
    def draw(d: st.DrawFn) -> dict[str, Any]:
        args = dict(d(base))
        kind = d(st.sampled_from(COTANGENT_KINDS))
        rng = seeded_rng(d(st.integers(0, 2**32 - 1)))
        args[GRAD_OUTPUT] = cotangent(rng, output_shape(component, args), kind)
        return args

    return draw()
