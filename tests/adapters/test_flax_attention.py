"""Flax NNX ``MultiHeadAttention`` behind the ``jax`` adapter's ``multi_head_attention``: the
weights land in Flax's per-head kernels exactly (every layout, kdim, masks), the mask fill it
takes from ``jax.nn.dot_product_attention`` is the declared one (needed, and the
``finfo(dtype).min`` of Flax's other path would be wrong), what it cannot take is refused with
the reason, and the shipped known failures make its gate pass."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")

from transpec.oracle.layers import reference as rl
from transpec.oracle.layers.strategies import mha_params, mha_params_kv
from transpec.runs import run


@pytest.fixture(scope="module")
def adapter() -> Any:
    from transpec.adapters.jax.adapter import JaxAdapter

    return JaxAdapter()


def _call(adapter: Any, dtype: str, args: dict[str, Any]) -> np.ndarray:
    """``adapter.multi_head_attention`` on float64/bool NumPy ``args`` converted to ``dtype``,
    back as float64."""
    native: dict[str, Any] = {}
    for name, value in args.items():
        if name == "params":
            native[name] = {
                k: adapter.to_native(np.asarray(v), dtype, "cpu") for k, v in value.items()
            }
        elif isinstance(value, np.ndarray):
            native[name] = adapter.to_native(value, dtype, "cpu")
        else:
            native[name] = value
    return adapter.from_native(adapter.multi_head_attention(**native))[0]


def _reference(args: dict[str, Any], conventions: Any) -> np.ndarray:
    value, _ = rl.multi_head_attention(
        need_weights=False,
        fully_masked_row=conventions.fully_masked_row,
        mask_fill=conventions.mask_fill,
        mask_fill_mode=conventions.mask_fill_mode,
        **args,
    )
    return value


def _case(layout: str, kv: str, mask: str) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    heads, e, batch, lq = 2, 6, 3, 4
    lk = lq if kv == "self" else 5
    width = e if kv != "kdim" else 4
    q = rng.standard_normal((batch, lq, e))
    k = q if kv == "self" else rng.standard_normal((batch, lk, width))
    v = q if kv == "self" else rng.standard_normal((batch, lk, width))
    params = mha_params(rng, e) if width == e else mha_params_kv(rng, e, width, width)
    kpm = attn = None
    if mask == "padding":
        kpm = np.zeros((batch, lk), dtype=bool)
        kpm[1, -2:] = True
        kpm[2] = True  # a fully padded sequence: the finite fill gives mean(V)
    elif mask == "per_head":
        attn = rng.random((batch * heads, lq, lk)) < 0.3
        attn[..., 0] = False
    elif mask == "causal":
        attn = np.triu(np.ones((lq, lk), dtype=bool), 1)
    args: dict[str, Any] = {"query": q, "key": k, "value": v, "params": params}
    if layout == "unbatched":
        args.update(query=q[0], key=k[0], value=v[0])
        kpm = None if kpm is None else kpm[0]
        attn = None if attn is None or attn.ndim == 3 else attn
    elif layout == "seq_first":
        args.update(
            {n: np.ascontiguousarray(args[n].swapaxes(0, 1)) for n in ("query", "key", "value")}
        )
    return {
        **args,
        "num_heads": heads,
        "key_padding_mask": kpm,
        "attn_mask": attn,
        "is_causal": mask == "causal",
        "batch_first": layout == "batch_first",
    }


@pytest.mark.parametrize(
    ("layout", "kv", "mask"),
    [
        ("batch_first", "self", "padding"),
        ("seq_first", "cross", "per_head"),
        ("unbatched", "kdim", "none"),
        ("batch_first", "self", "causal"),
    ],
)
def test_weights_layouts_and_masks_reach_flax_as_torch_means_them(
    adapter: Any, layout: str, kv: str, mask: str
) -> None:
    """float32 Flax against the float64 reference of nn.MultiheadAttention's semantics under
    the adapter's conventions: a kernel transposed the wrong way, a head split in the wrong
    order or a mask of the wrong polarity is off by O(1), far beyond float32's 1e-5."""
    args = _case(layout, kv, mask)
    got = _call(adapter, "float32", args)
    expected = _reference(args, adapter.conventions)
    assert got.shape == expected.shape
    assert np.all(np.isfinite(expected))
    assert np.max(np.abs(got - expected)) < 1e-5


def test_a_fully_padded_sequence_needs_the_finite_fill(adapter: Any) -> None:
    """A sequence whose every key is padded: Flax returns the projected mean of V (the finite
    fill); the canonical -inf fill gives NaN, or zero rows with fully_masked_row="zero"."""
    args = _case("batch_first", "self", "padding")
    got = _call(adapter, "float32", args)[2]
    declared = adapter.conventions
    assert np.max(np.abs(got - _reference(args, declared)[2])) < 1e-5
    canonical = declared.replace(mask_fill=None)
    assert np.isnan(_reference(args, canonical)[2]).all()
    zero_rows = _reference(args, canonical.replace(fully_masked_row="zero"))[2]
    assert np.max(np.abs(got - zero_rows)) > 1e-2


@pytest.mark.parametrize(("dtype", "x"), [("float16", 300.0), ("float32", 1.75 * 2.0**63)])
def test_the_mask_fill_is_jax_nns_not_finfo_min(adapter: Any, dtype: str, x: float) -> None:
    """With dropout_rate=0 Flax calls jax.nn.dot_product_attention, whose fill is
    -0.7·finfo(float32).max in every dtype; Flax's own weights path (finfo(dtype).min) is not
    taken. One query, a visible key with score -x² and a masked key with score 0: in float16
    -x² = -90000 lies below finfo(float16).min, in float32 -2.6e38 between the two fills, so
    the two declarations give different keys and only the declared one matches Flax."""
    one = np.ones((1, 1))
    args: dict[str, Any] = {
        "query": np.array([[[x]]]),
        "key": np.array([[[-x], [0.0]]]),
        "value": np.array([[[-x], [0.0]]]),
        "params": {"in_proj_weight": np.ones((3, 1)), "out_proj.weight": one},
        "num_heads": 1,
        "key_padding_mask": np.array([[False, True]]),
        "attn_mask": None,
        "is_causal": False,
        "batch_first": True,
    }
    got = _call(adapter, dtype, args)
    declared = adapter.conventions.for_dtype(dtype)
    assert np.array_equal(got, _reference(args, declared))
    finfo_min = adapter.conventions.replace(mask_fill="finfo_min").for_dtype(dtype)
    assert not np.array_equal(got, _reference(args, finfo_min))


def test_what_flax_cannot_take_is_refused_with_the_reason(adapter: Any) -> None:
    args = _case("batch_first", "cross", "none")
    assert adapter.supports("multi_head_attention", args) is None
    additive = {**args, "attn_mask": np.zeros((4, 5))}
    assert "boolean mask" in (adapter.supports("multi_head_attention", additive) or "")
    rng = np.random.default_rng(0)
    widths = {
        **args,
        "key": rng.standard_normal((3, 5, 4)),
        "value": rng.standard_normal((3, 5, 3)),
    }
    assert "in_kv_features" in (adapter.supports("multi_head_attention", widths) or "")
    params = {k: v for k, v in args["params"].items() if k != "out_proj.bias"}
    assert "use_bias" in (
        adapter.supports("multi_head_attention", {**args, "params": params}) or ""
    )


def test_without_biases_flax_is_built_with_use_bias_false(adapter: Any) -> None:
    args = _case("batch_first", "self", "none")
    args["params"] = {k: v for k, v in args["params"].items() if "bias" not in k}
    got = _call(adapter, "float32", args)
    assert np.max(np.abs(got - _reference(args, adapter.conventions))) < 1e-5


# -- the weights path: ``flax-weights`` (sow_weights=True) ---------------------------------------


@pytest.fixture(scope="module")
def weights_adapter() -> Any:
    from transpec.adapters.registry import load_adapter

    return load_adapter("flax-weights")


def _weights(adapter: Any, dtype: str, args: dict[str, Any]) -> np.ndarray:
    native: dict[str, Any] = {}
    for name, value in args.items():
        if name == "params":
            native[name] = {
                k: adapter.to_native(np.asarray(v), dtype, "cpu") for k, v in value.items()
            }
        elif isinstance(value, np.ndarray):
            native[name] = adapter.to_native(value, dtype, "cpu")
        else:
            native[name] = value
    out = adapter.multi_head_attention_weights(**native, average_attn_weights=False)
    return adapter.from_native(out)[0]


@pytest.mark.parametrize(("layout", "mask"), [("seq_first", "per_head"), ("unbatched", "padding")])
def test_the_sown_weights_are_the_per_head_weights(
    weights_adapter: Any, layout: str, mask: str
) -> None:
    """float64: the weights path computes in float64 (jax.nn.softmax), unlike the default
    path's float32 logits; the sown (B, H, Lq, Lk) weights equal the reference's per-head
    weights to float64 rounding."""
    args = _case(layout, "cross", mask)
    declared = weights_adapter.conventions.for_dtype("float64")
    _, expected = rl.multi_head_attention(
        need_weights=True, average_attn_weights=False, mask_fill=declared.mask_fill, **args
    )
    got = _weights(weights_adapter, "float64", args)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-14


@pytest.mark.parametrize(("dtype", "x"), [("float32", 1.75 * 2.0**63), ("float64", 1e100)])
def test_the_weights_path_fills_with_finfo_min(weights_adapter: Any, dtype: str, x: float) -> None:
    """The mirror of the default path's test: a visible score -x² between finfo(dtype).min and
    jax.nn's -0.7·finfo(float32).max beats the masked key only under the declared finfo_min."""
    args: dict[str, Any] = {
        "query": np.array([[[x]]]),
        "key": np.array([[[-x], [0.0]]]),
        "value": np.array([[[-x], [0.0]]]),
        "params": {"in_proj_weight": np.ones((3, 1)), "out_proj.weight": np.ones((1, 1))},
        "num_heads": 1,
        "key_padding_mask": np.array([[False, True]]),
        "attn_mask": None,
        "is_causal": False,
        "batch_first": True,
    }
    got = _call(weights_adapter, dtype, args)
    declared = weights_adapter.conventions.for_dtype(dtype)
    assert np.array_equal(got, _reference(args, declared)) and float(got.ravel()[0]) == -x
    from transpec.adapters.jax.adapter import MASK_FILL

    jax_fill = declared.replace(mask_fill=MASK_FILL)
    assert not np.array_equal(got, _reference(args, jax_fill))


def test_an_average_over_heads_is_refused(weights_adapter: Any) -> None:
    args = {**_case("batch_first", "self", "none"), "average_attn_weights": True}
    reason = weights_adapter.supports("multi_head_attention_weights", args)
    assert reason is not None and "per-head" in reason
    args["average_attn_weights"] = False
    assert weights_adapter.supports("multi_head_attention_weights", args) is None


@pytest.mark.slow
def test_the_sown_weights_pass_in_bfloat16_under_their_declarations(weights_adapter: Any) -> None:
    """End to end through a run: the weights path's element-wise bfloat16 (scaled q, softmax)
    is declared, and its weights pass equivalence."""
    from transpec.adapters.base import Precision

    assert weights_adapter.precision("multi_head_attention_weights", "bfloat16") == Precision(
        "float32", "bfloat16", elementwise="bfloat16"
    )
    result = run(
        weights_adapter,
        components=["multi_head_attention_weights"],
        properties=["equivalence"],
        dtypes=["bfloat16"],
        max_examples=4,
        failures_dir=None,
        isolation="none",
    )
    statuses = {v.name: v.status for v in result.verdicts}
    assert statuses == {"multi_head_attention_weights.equivalence[bfloat16-cpu]": "passed"}


def test_without_flax_the_weights_adapter_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['flax'] = None  # as if flax were not installed\n"
        "from transpec.adapters import AdapterLoadError, load_adapter\n"
        "try:\n"
        "    load_adapter('flax-weights')\n"
        "except AdapterLoadError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the flax-weights adapter needs Flax: pip install 'transpec[jax]'"
    )
