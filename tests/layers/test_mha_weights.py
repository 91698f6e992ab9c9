"""``multi_head_attention_weights``: the weights ``nn.MultiheadAttention`` returns with
``need_weights=True`` (averaged over heads or per head). torch and the NumPy layers are accepted in
their dtypes; weights taken from head 0 instead of the average, or computed before masking, are
rejected; ``fast_slow_agreement`` does not apply (``need_weights=True`` has one path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.adapters.numpy.layers import NumpyLayers
from transpec.oracle.catalogue import select
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.layers import strategies as sl
from transpec.oracle.layers.reference import multi_head_attention as reference_mha

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

MHAW = "multi_head_attention_weights"
TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16")


class HeadZero(NumpyAdapter):
    """Returns head 0's weights where the average over the heads is asked for."""

    name = "head-zero"
    dtypes = ("float64",)

    def multi_head_attention_weights(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("average_attn_weights", True):
            return NumpyLayers.multi_head_attention_weights(self, *args, **kwargs)
        kwargs["average_attn_weights"] = False
        return NumpyLayers.multi_head_attention_weights(self, *args, **kwargs)[:, 0]


class BeforeMasking(NumpyAdapter):
    """Returns the softmax of the scores without the masks."""

    name = "before-masking"
    dtypes = ("float64",)

    def multi_head_attention_weights(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["key_padding_mask"] = None
        kwargs["attn_mask"] = None
        return NumpyLayers.multi_head_attention_weights(self, *args, **kwargs)


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_numpy_weights_match_reference(average: bool, batch_first: bool) -> None:
    rng = np.random.default_rng(3)
    e, heads = 6, 3
    params = sl.mha_params(rng, e)
    shape = (2, 4, e) if batch_first else (4, 2, e)
    q, k = rng.standard_normal(shape), rng.standard_normal(shape)
    kpm = np.array([[False, True, False, False], [False, False, False, True]])
    ours = NumpyAdapter().multi_head_attention_weights(
        q,
        k,
        k,
        params,
        heads,
        key_padding_mask=kpm,
        batch_first=batch_first,
        average_attn_weights=average,
    )
    _, ref = reference_mha(
        q,
        k,
        k,
        params,
        heads,
        key_padding_mask=kpm,
        batch_first=batch_first,
        average_attn_weights=average,
    )
    assert ours.shape == ((2, 4, 4) if average else (2, heads, 4, 4))
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_fast_slow_agreement_not_registered() -> None:
    names = {p.name for p in select(MHAW)}
    assert "fast_slow_agreement" not in names
    assert {"equivalence", "shape_dtype", "rows_sum_to_one"} <= names


def test_head_zero_rejected(run_property: Callable[..., float]) -> None:
    (prop,) = select(MHAW, "equivalence")
    with pytest.raises(PropertyViolation):
        run_property(prop, HeadZero(), "float64", 30)


def test_before_masking_rejected(run_property: Callable[..., float]) -> None:
    (prop,) = select(MHAW, "equivalence")
    with pytest.raises(PropertyViolation):
        run_property(prop, BeforeMasking(), "float64", 30)


@pytest.mark.parametrize("dtype", NumpyAdapter.dtypes)
@pytest.mark.parametrize("name", ["equivalence", "shape_dtype", "rows_sum_to_one"])
def test_numpy_accepted(name: str, dtype: str, run_property: Callable[..., float]) -> None:
    (prop,) = select(MHAW, name)
    assert run_property(prop, NumpyAdapter(), dtype, 15) <= 1.0


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("name", ["equivalence", "shape_dtype", "rows_sum_to_one"])
def test_torch_accepted(name: str, dtype: str, run_property: Callable[..., float]) -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    (prop,) = select(MHAW, name)
    assert run_property(prop, TorchAdapter(), dtype, 15) <= 1.0


def test_torch_fully_padded_rows_nan() -> None:
    torch = pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    rng = np.random.default_rng(4)
    params = {k: torch.from_numpy(v) for k, v in sl.mha_params(rng, 4).items()}
    x = torch.from_numpy(rng.standard_normal((2, 3, 4)))
    kpm = torch.tensor([[True, True, True], [False, True, False]])
    w = TorchAdapter().multi_head_attention_weights(x, x, x, params, 2, key_padding_mask=kpm)
    assert torch.isnan(w[0]).all() and not torch.isnan(w[1]).any()
