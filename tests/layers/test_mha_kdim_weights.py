"""``multi_head_attention`` with key/value widths (kdim, vdim) other than embed_dim: the
strategy draws such inputs with nn.MultiheadAttention's separate ``q_proj_weight``,
``k_proj_weight`` and ``v_proj_weight``; torch (both paths) and the NumPy layers are accepted in
every dtype, and an implementation projecting K with the Q weight is rejected."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.adapters.numpy.layers import NumpyLayers
from transpec.oracle.catalogue import select
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.engine.property import Property
from transpec.oracle.layers import strategies as sl
from transpec.oracle.layers.reference import multi_head_attention as reference_mha

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

DTYPES = ("float64", "float32", "float16", "bfloat16")
MHA = "multi_head_attention"


def _separate(args: dict[str, Any]) -> bool:
    return "q_proj_weight" in args["params"]


def _kdim_only(prop: Property) -> Property:
    """``prop`` on inputs whose key/value widths differ from embed_dim."""
    base = prop.inputs
    return dataclasses.replace(prop, inputs=lambda dtype: base(dtype).filter(_separate))


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(sl.layer_inputs(MHA, "float64"))
def test_strategy_draws_kdim_vdim_params(args: dict[str, Any]) -> None:
    params = args["params"]
    e = np.shape(args["query"])[-1]
    kdim, vdim = np.shape(args["key"])[-1], np.shape(args["value"])[-1]
    if _separate(args):
        assert (kdim, vdim) != (e, e) and "in_proj_weight" not in params
        assert params["q_proj_weight"].shape == (e, e)
        assert params["k_proj_weight"].shape == (e, kdim)
        assert params["v_proj_weight"].shape == (e, vdim)
        assert params["in_proj_bias"].shape == (3 * e,)
    else:
        assert (kdim, vdim) == (e, e) and params["in_proj_weight"].shape == (3 * e, e)


def test_strategy_sometimes_draws_kdim_vdim() -> None:
    seen: list[bool] = []

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(sl.layer_inputs(MHA, "float64", self_attention=False))
    def collect(args: dict[str, Any]) -> None:
        seen.append(_separate(args))

    collect()
    assert any(seen) and not all(seen)


def test_torch_state_dict_keys_match() -> None:
    torch = pytest.importorskip("torch")
    m = torch.nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    rng = np.random.default_rng(0)
    assert set(m.state_dict()) == set(sl.mha_params_kv(rng, 8, 3, 5))


class KWithQWeight(NumpyAdapter):
    """Projects K with the Q weight where the widths allow, as if kdim were embed_dim."""

    name = "k-with-q-weight"
    dtypes = ("float64",)

    def _mha(self, q_in: Any, kv_in: Any, v_in: Any, params: Any, heads: int, mask: Any) -> Any:
        if params.get("q_proj_weight") is not None and kv_in.shape[-1] == q_in.shape[-1]:
            params = {**params, "k_proj_weight": params["q_proj_weight"]}
        return NumpyLayers._mha(self, q_in, kv_in, v_in, params, heads, mask)


def test_numpy_mha_matches_reference_kdim_vdim() -> None:
    rng = np.random.default_rng(1)
    e, kdim, vdim, heads = 6, 4, 7, 3
    params = sl.mha_params_kv(rng, e, kdim, vdim)
    q = rng.standard_normal((2, 5, e))
    k = rng.standard_normal((2, 3, kdim))
    v = rng.standard_normal((2, 3, vdim))
    ours = NumpyAdapter().multi_head_attention(q, k, v, params, heads)
    ref, _ = reference_mha(q, k, v, params, heads, batch_first=True)
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_k_projected_with_q_weight_rejected(run_property: Callable[..., float]) -> None:
    (prop,) = select(MHA, "equivalence")

    def keep(args: dict[str, Any]) -> bool:
        return _separate(args) and np.shape(args["key"])[-1] == np.shape(args["query"])[-1]

    base = prop.inputs
    wrong = dataclasses.replace(prop, inputs=lambda dtype: base(dtype).filter(keep))
    with pytest.raises((PropertyViolation, ImplementationFailure)):
        run_property(wrong, KWithQWeight(), "float64", 20)
    assert run_property(wrong, NumpyAdapter(), "float64", 10) <= 1.0


@pytest.mark.parametrize("dtype", NumpyAdapter.dtypes)
def test_numpy_kdim_vdim_accepted(dtype: str, run_property: Callable[..., float]) -> None:
    (prop,) = select(MHA, "equivalence")
    assert run_property(_kdim_only(prop), NumpyAdapter(), dtype, 8) <= 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["torch", "torch-slow"])
@pytest.mark.parametrize("name", ["equivalence", "head_independence"])
def test_torch_kdim_vdim_accepted(
    path: str, name: str, dtype: str, run_property: Callable[..., float]
) -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter, TorchSlowAdapter

    adapter = TorchAdapter() if path == "torch" else TorchSlowAdapter()
    (prop,) = select(MHA, name)
    assert run_property(_kdim_only(prop), adapter, dtype, 8) <= 1.0
