"""The layer references follow a finite fill that is *added* (``mask_fill_mode="add"``), as
Hugging Face's 0 / ``finfo(dtype).min`` masks are: declared, such layers pass; undeclared (-inf)
or with a wrong fill (-30 for finfo.min: a fully masked row is then softmax(S), not uniform),
they fail; the module reference agrees with the reference the harness judges by."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle.engine.harness import Harness
from transpec.oracle.layers import reference as rl
from transpec.oracle.layers import tolerance as lt
from transpec.spec.conventions import Conventions

sys.path.insert(0, str(Path(__file__).parent))  # the replacing fill's fixtures, reused
from test_layer_mask_fill import FilledLayers, _mha_args

ADDED = Conventions(mask_fill="finfo_min", mask_fill_mode="add", fully_masked_row="nan")


class AddedFillLayers(FilledLayers):
    """The fill added in the input dtype: every intermediate, the scores plus the fill
    included, is stored in that dtype (declared)."""

    name = "added-fill-layers"
    added = True

    def precision(self, component: str, dtype: str) -> Precision:
        if dtype in ("float16", "bfloat16"):
            return Precision(accumulate="float32", store=dtype)
        return Precision(accumulate=dtype, store=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_declared_added_fill_passes(dtype: str) -> None:
    harness = Harness(AddedFillLayers(ADDED), dtype)
    call = harness.call("multi_head_attention", _mha_args(np.random.default_rng(0)))
    assert harness.assert_equivalent(call) <= 1.0


@pytest.mark.parametrize(
    ("conventions", "dtype"),
    [
        (Conventions(fully_masked_row="nan"), "float32"),
        (ADDED.replace(mask_fill=-30.0), "float64"),
    ],
    ids=["undeclared", "wrong-fill"],
)
def test_undeclared_or_wrong_added_fill_fails(conventions: Conventions, dtype: str) -> None:
    args = _mha_args(np.random.default_rng(0))
    args["query"] = args["query"] * 8.0  # scores spread over more than the float16 quantum 32
    harness = Harness(AddedFillLayers(conventions), dtype)
    call = harness.call("multi_head_attention", args)
    with pytest.raises(Exception, match="element"):
        harness.assert_equivalent(call)


@pytest.mark.parametrize("component", ["multi_head_attention", "encoder_layer", "decoder_layer"])
def test_declared_added_fill_passes_the_layer_properties(
    accepts: Callable[..., float], component: str
) -> None:
    assert accepts(component, "equivalence", AddedFillLayers(ADDED), "float32", examples=15) <= 1


def test_the_module_reference_adds_the_fill_too() -> None:
    """With a fill of -30 the added and the replaced fills differ visibly in float64: a fully
    masked row is softmax(S) (added) instead of uniform (replaced)."""
    args = _mha_args(np.random.default_rng(2))
    conventions = Conventions(mask_fill=-30.0, mask_fill_mode="add")
    judged = lt.layer_reference("multi_head_attention", args, conventions=conventions)
    kwargs: dict[str, Any] = {
        "key_padding_mask": args["key_padding_mask"],
        "attn_mask": args["attn_mask"],
        "batch_first": True,
        "mask_fill": -30.0,
    }
    inputs = (args["query"], args["key"], args["value"], args["params"], 2)
    out, weights = rl.multi_head_attention(*inputs, mask_fill_mode="add", **kwargs)
    np.testing.assert_allclose(out, judged.value, rtol=1e-12, atol=1e-12)
    replaced, uniform = rl.multi_head_attention(*inputs, **kwargs)
    assert weights is not None and uniform is not None
    np.testing.assert_allclose(uniform[1], 0.25, rtol=1e-15)
    assert not np.allclose(weights[1], 0.25)
    assert not np.allclose(out[1], replaced[1])
