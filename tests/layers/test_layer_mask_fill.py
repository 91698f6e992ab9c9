"""The layer references follow a declared finite ``mask_fill``, as the attention reference does.

Flax's and Equinox's multi-head attention replace masked scores by a finite fill
(``finfo(dtype).min``): a query whose every key is masked gets uniform weights, so its output
is mean(V) through the output projection, not 0 or NaN. Declared (``mask_fill="finfo_min"``)
such a layer passes; undeclared it fails where a row is fully masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness
from transpec.oracle.layers import tolerance as lt
from transpec.spec.conventions import Conventions

FILL = np.nan  # marker of a boolean-masked score in the additive mask below


class FilledLayers(NumpyAdapter):
    """NumPy layers whose boolean-masked scores are replaced by finfo(work dtype).min."""

    name = "filled-layers"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    #: add the fill to the boolean-masked scores instead of replacing them
    added = False

    def __init__(self, conventions: Conventions) -> None:
        self.conventions = conventions

    @staticmethod
    def _mask(attn_mask: Any, kpm: Any, work: np.dtype) -> np.ndarray | None:
        def additive(mask: Any) -> np.ndarray | None:
            if mask is None:
                return None
            if mask.dtype == np.bool_:
                return np.where(mask, FILL, 0.0).astype(work)
            return np.asarray(mask).astype(work)

        a, k = additive(attn_mask), additive(kpm)
        if a is None and k is None:
            return None
        total = np.zeros((), dtype=work)
        if a is not None:
            total = total + a[None, None]
        if k is not None:
            total = total + k[:, None, None, :]
        return total

    def _mha(
        self,
        q_in: np.ndarray,
        kv_in: np.ndarray,
        v_in: np.ndarray,
        params: Mapping[str, Any],
        heads: int,
        mask: np.ndarray | None,
        weights: bool = False,
    ) -> np.ndarray:
        work = q_in.dtype
        b, lq, e = q_in.shape
        dh = e // heads
        if params.get("in_proj_weight") is not None:
            w_in = params["in_proj_weight"].astype(work)
            ws = [w_in[i * e : (i + 1) * e] for i in range(3)]
        else:  # kdim/vdim != embed_dim
            ws = [params[f"{n}_proj_weight"].astype(work) for n in "qkv"]
        bias = params.get("in_proj_bias")

        def project(x: np.ndarray, i: int) -> np.ndarray:
            y = x @ ws[i].T
            if bias is not None:
                y = y + bias[i * e : (i + 1) * e].astype(work)
            return y.reshape(x.shape[0], x.shape[1], heads, dh).transpose(0, 2, 1, 3)

        q, k, v = project(q_in, 0), project(kv_in, 1), project(v_in, 2)
        s = (q @ k.transpose(0, 1, 3, 2)) * work.type(1.0 / np.sqrt(dh))
        if mask is not None:
            fill = np.finfo(np.float32).min if work == np.float32 else np.finfo(work).min
            rest = np.where(np.isnan(mask), 0, mask)
            if self.added:
                s = s + rest + np.where(np.isnan(mask), work.type(fill), work.type(0))
            else:
                s = np.where(np.isnan(mask), work.type(fill), s + rest)
        m = s.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(s - m)
            p = p / p.sum(axis=-1, keepdims=True)  # a row of -inf (float masks): NaN
        if weights:
            return p
        o = (p @ v).transpose(0, 2, 1, 3).reshape(b, lq, e)
        out = o @ params["out_proj.weight"].astype(work).T
        ob = params.get("out_proj.bias")
        return out if ob is None else out + ob.astype(work)


DECLARED = Conventions(mask_fill="finfo_min", fully_masked_row="nan")


def _mha_args(rng: np.random.Generator, *, float_mask: bool = False) -> dict[str, Any]:
    """B = 2, L = 3, S = 4, E = 8, 2 heads; batch 1 has every key padded (a fully masked
    row for every query), query 0 of batch 0 sees only key 0."""
    e = 8
    params = {
        "in_proj_weight": rng.normal(size=(3 * e, e)) / np.sqrt(e),
        "in_proj_bias": rng.normal(size=3 * e) * 0.1,
        "out_proj.weight": rng.normal(size=(e, e)) / np.sqrt(e),
        "out_proj.bias": rng.normal(size=e) * 0.1,
    }
    kpm = np.zeros((2, 4), dtype=bool)
    kpm[1] = True
    attn = np.zeros((3, 4), dtype=bool)
    attn[0, 1:] = True
    return {
        "query": rng.normal(size=(2, 3, e)),
        "key": rng.normal(size=(2, 4, e)),
        "value": rng.normal(size=(2, 4, e)),
        "params": params,
        "num_heads": 2,
        "key_padding_mask": kpm,
        "attn_mask": np.where(attn, -0.5, 0.25) if float_mask else attn,
        "is_causal": False,
        "batch_first": True,
    }


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("float_mask", [False, True], ids=["bool-masks", "float-attn-mask"])
def test_declared_fill_gives_mean_v_through_the_projections(dtype: str, float_mask: bool) -> None:
    args = _mha_args(np.random.default_rng(0), float_mask=float_mask)
    harness = Harness(FilledLayers(DECLARED), dtype)
    call = harness.call("multi_head_attention", args)
    assert harness.assert_equivalent(call) <= 1.0
    # batch 1: every key padded, so each head's output is the mean of its value rows (on the
    # rounded inputs the implementation received)
    sent = call.sent
    w, bias = sent["params"]["in_proj_weight"], sent["params"]["in_proj_bias"]
    v = sent["value"][1] @ w[16:].T + bias[16:]
    out_w, out_b = sent["params"]["out_proj.weight"], sent["params"]["out_proj.bias"]
    expected = v.mean(axis=0) @ out_w.T + out_b
    ref = np.asarray(call.reference.value)
    np.testing.assert_allclose(ref[1], np.broadcast_to(expected, (3, 8)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "conventions",
    [Conventions(), Conventions(fully_masked_row="nan")],
    ids=["canonical", "nan-rows"],
)
def test_undeclared_fill_fails(conventions: Conventions) -> None:
    harness = Harness(FilledLayers(conventions), "float32")
    call = harness.call("multi_head_attention", _mha_args(np.random.default_rng(0)))
    with pytest.raises(Exception, match="element"):
        harness.assert_equivalent(call)


@pytest.mark.parametrize("component", ["multi_head_attention", "encoder_layer", "decoder_layer"])
def test_declared_fill_passes_the_layer_properties(
    accepts: Callable[..., float], component: str
) -> None:
    assert accepts(component, "equivalence", FilledLayers(DECLARED), "float32", examples=15) <= 1


def test_weights_under_the_fill_are_uniform_on_fully_masked_rows() -> None:
    args = _mha_args(np.random.default_rng(1))
    harness = Harness(FilledLayers(DECLARED), "float32")
    call = harness.call("multi_head_attention_weights", {**args, "average_attn_weights": True})
    assert harness.assert_equivalent(call) <= 1.0
    np.testing.assert_allclose(np.asarray(call.reference.value)[1], 0.25, rtol=1e-15)


def test_a_fill_near_the_scores_with_a_float_mask_is_refused() -> None:
    """A boolean-masked key beside a float mask counts as -inf in the reference: exact only
    where its weight exp(fill - row max) is 0 in float64, refused in one line otherwise."""
    args = _mha_args(np.random.default_rng(0), float_mask=True)
    args["key_padding_mask"][0, 3] = True  # a filled key in rows that have visible keys
    near = Conventions(mask_fill=-3.0)
    with pytest.raises(ValueError, match="within 745 of the scores") as info:
        lt.layer_reference("multi_head_attention", args, conventions=near)
    assert "\n" not in str(info.value)
    lt.layer_reference("multi_head_attention", args, conventions=Conventions(mask_fill=-1e9))


@pytest.mark.parametrize("float_mask", [False, True], ids=["bool-masks", "float-attn-mask"])
def test_the_module_reference_takes_the_fill_too(float_mask: bool) -> None:
    """oracle.layers.reference.multi_head_attention(mask_fill=...) agrees with the reference
    the harness judges by, and gives mean(V) rows."""
    from transpec.oracle.layers import reference as rl

    args = _mha_args(np.random.default_rng(2), float_mask=float_mask)
    fill = float(np.finfo(np.float32).min)
    judged = lt.layer_reference(
        "multi_head_attention", args, conventions=Conventions(mask_fill=fill)
    )
    out, weights = rl.multi_head_attention(
        args["query"],
        args["key"],
        args["value"],
        args["params"],
        2,
        key_padding_mask=args["key_padding_mask"],
        attn_mask=args["attn_mask"],
        batch_first=True,
        mask_fill=fill,
    )
    np.testing.assert_allclose(out, judged.value, rtol=1e-13, atol=1e-13)
    assert weights is not None
    np.testing.assert_allclose(weights[1], 0.25, rtol=1e-15)
    canonical, _ = rl.multi_head_attention(
        args["query"],
        args["key"],
        args["value"],
        args["params"],
        2,
        key_padding_mask=args["key_padding_mask"],
        attn_mask=args["attn_mask"],
        batch_first=True,
    )
    assert np.isnan(canonical[1]).all() and np.isfinite(out).all()
    with pytest.raises(ValueError, match="mask_fill must be finite"):
        rl.multi_head_attention(
            args["query"], args["key"], args["value"], args["params"], 2, mask_fill=float("-inf")
        )
