"""Parameter dicts through the harness, and the layer references against reference_layers."""

from __future__ import annotations

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.dtypes import round_to
from transpec.oracle.engine.harness import Harness
from transpec.oracle.layers import reference as rl
from transpec.oracle.layers import strategies as sl
from transpec.oracle.layers.tolerance import layer_reference
from transpec.oracle.reference import compute


def _encoder_args(seed: int = 0, e: int = 8, heads: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    params = {
        **sl.mha_params(rng, e, "self_attn."),
        **sl.ffn_params(rng, e, 12),
        **sl.norm_params(rng, e, "norm1"),
        **sl.norm_params(rng, e, "norm2"),
    }
    pad = np.zeros((2, 5), dtype=bool)
    pad[1, 3:] = True
    return {
        "src": rng.standard_normal((2, 5, e)),
        "params": params,
        "nhead": heads,
        "norm_first": False,
        "activation": "gelu",
        "layer_norm_eps": 1e-5,
        "src_mask": None,
        "src_key_padding_mask": pad,
        "is_causal": False,
        "batch_first": True,
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_params_dict_is_rounded_like_any_input(dtype: str) -> None:
    args = _encoder_args()
    harness = Harness(NumpyAdapter(), dtype)
    native, sent = harness.round_inputs("encoder_layer", args)
    assert set(native["params"]) == set(args["params"])
    for key, value in args["params"].items():
        assert native["params"][key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(sent["params"][key], round_to(value, dtype))
    assert sent["src_key_padding_mask"].dtype == np.bool_
    call = harness.call("encoder_layer", args)
    # the reference was computed on the rounded parameters, not the drawn ones
    expected = rl.transformer_encoder_layer(
        sent["src"],
        sent["params"],
        2,
        src_key_padding_mask=sent["src_key_padding_mask"],
        activation_name="gelu",
        batch_first=True,
    )
    np.testing.assert_allclose(call.reference.value, expected, rtol=0, atol=1e-12)


def test_bad_params_rejected() -> None:
    harness = Harness(NumpyAdapter(), "float32")
    args = _encoder_args()
    with pytest.raises(TypeError, match="dict of arrays"):
        harness.round_inputs("encoder_layer", {**args, "params": [1.0]})
    with pytest.raises(TypeError, match="must be a float array"):
        harness.round_inputs(
            "encoder_layer", {**args, "params": {**args["params"], "norm1.weight": "w"}}
        )


def test_layer_references_equal_reference_layers() -> None:
    rng = np.random.default_rng(3)
    e, h = 6, 3
    tgt, mem = rng.standard_normal((4, 2, e)), rng.standard_normal((5, 2, e))
    params = {
        **sl.mha_params(rng, e, "self_attn."),
        **sl.mha_params(rng, e, "multihead_attn."),
        **sl.ffn_params(rng, e, 7),
        **sl.norm_params(rng, e, "norm1"),
        **sl.norm_params(rng, e, "norm2"),
        **sl.norm_params(rng, e, "norm3"),
    }
    mpad = np.zeros((2, 5), dtype=bool)
    mpad[0] = True  # a fully padded memory: zero attention rows under the zero convention
    causal = rl.square_subsequent_mask(4)
    args = {
        "tgt": tgt,
        "memory": mem,
        "params": params,
        "nhead": h,
        "norm_first": True,
        "activation": "gelu_tanh",
        "layer_norm_eps": 1e-6,
        "tgt_mask": causal,
        "memory_mask": None,
        "tgt_key_padding_mask": None,
        "memory_key_padding_mask": mpad,
        "tgt_is_causal": True,
        "batch_first": False,
    }
    ref = compute("decoder_layer", args, conventions=NumpyAdapter.conventions, dtype="float64")
    expected = rl.transformer_decoder_layer(
        tgt,
        mem,
        params,
        h,
        tgt_mask=causal,
        memory_key_padding_mask=mpad,
        tgt_is_causal=True,
        norm_first=True,
        activation_name="gelu_tanh",
        layer_norm_eps=1e-6,
    )
    np.testing.assert_allclose(ref.value, expected, rtol=0, atol=1e-12)
    mha = {
        "query": tgt,
        "key": mem,
        "value": mem,
        "params": sl.mha_params(rng, e),
        "num_heads": h,
        "key_padding_mask": mpad,
        "attn_mask": None,
        "is_causal": False,
        "batch_first": False,
    }
    for fmr in ("nan", "zero"):
        got = layer_reference("multi_head_attention", mha, semantics={"fully_masked_row": fmr})
        want, _ = rl.multi_head_attention(
            tgt, mem, mem, mha["params"], h, key_padding_mask=mpad, fully_masked_row=fmr
        )
        np.testing.assert_allclose(got.value, want, rtol=0, atol=1e-12)
        assert np.isnan(got.value).any() == (fmr == "nan")


def test_layer_reference_rejects_unknown_semantics() -> None:
    with pytest.raises(ValueError, match="unknown layer semantics"):
        layer_reference("encoder_layer", _encoder_args(), semantics={"colour": "red"})
    with pytest.raises(ValueError, match="unknown component"):
        layer_reference("transformer", _encoder_args())
