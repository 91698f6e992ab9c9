"""The torch adapters: conversion, and declarations that match what torch really does.

Each declared convention and precision of :class:`TorchAdapter` is re-observed here, so that a
torch release that changes behaviour fails this file instead of silently mis-declaring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.oracle.engine.dtypes import round_to

torch = pytest.importorskip("torch")

from transpec.adapters.torch.adapter import (  # noqa: E402
    TorchAdapter,
    TorchCuDNNAdapter,
    TorchEfficientAdapter,
    TorchFlashAdapter,
    TorchMathAdapter,
)

DTYPES = ("float64", "float32", "float16", "bfloat16")
SDPA = (TorchAdapter, TorchMathAdapter, TorchFlashAdapter)
CUDA = torch.cuda.is_available()


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000) * np.exp(rng.uniform(-40, 40, 4000))
    special = [np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 5e-324, 65504.0, 65520.0, 1 + 2**-9]
    # float64 values halfway between bfloat16 neighbours, and just off halfway
    ties = [1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-30, 1 + 2**-8 - 2**-30]
    return np.concatenate([x, special, ties, -np.array(ties)])


# -- conversion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_native_rounds_exactly_like_round_to(dtype: str) -> None:
    adapter = TorchAdapter()
    x = _values()
    with np.errstate(over="ignore"):
        expected = round_to(x, dtype)
    native = adapter.to_native(x, dtype, "cpu")
    assert isinstance(native, torch.Tensor) and adapter.is_native(native)
    assert native.dtype == getattr(torch, dtype) and native.device.type == "cpu"
    back, name = adapter.from_native(native)
    assert name == dtype and back.dtype == np.float64 and back.shape == x.shape
    assert np.array_equal(back, expected)
    assert np.array_equal(np.signbit(back), np.signbit(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_keeps_nan_positions_and_shape(dtype: str) -> None:
    adapter = TorchAdapter()
    x = np.array([[np.nan, 1.0, -2.5], [3.0, np.nan, 0.1]])
    back, _ = adapter.from_native(adapter.to_native(x, dtype, "cpu"))
    assert back.shape == (2, 3)
    assert np.array_equal(np.isnan(back), np.isnan(x))
    assert np.array_equal(back, round_to(x, dtype), equal_nan=True)


def test_bool_arrays_stay_bool_and_from_native_rejects_other_things() -> None:
    adapter = TorchAdapter()
    mask = np.array([[True, False], [False, True]])
    native = adapter.to_native(mask, "bfloat16", "cpu")
    assert native.dtype == torch.bool and native.tolist() == mask.tolist()
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        adapter.from_native(np.zeros(3))
    assert not adapter.is_native(np.zeros(3))
    with pytest.raises(ValueError, match="unknown dtype"):
        adapter.from_native(torch.zeros(2, dtype=torch.int64))


def test_describe_and_devices() -> None:
    adapter = TorchAdapter()
    assert torch.__version__ in adapter.describe()
    assert "cpu" in adapter.describe()
    assert adapter.available_devices() == (("cpu", "cuda") if CUDA else ("cpu",))
    assert adapter.components()[:4] == ("softmax", "attention", "layer_norm", "rms_norm")
    for cls in (TorchMathAdapter, TorchFlashAdapter):
        assert cls().components() == ("attention",)
        assert cls().available_devices()[0] == "cpu"
    adapter.synchronize("cpu")


@pytest.mark.skipif(CUDA, reason="checks the report of a machine without CUDA")
@pytest.mark.parametrize("cls", [TorchEfficientAdapter, TorchCuDNNAdapter])
def test_cuda_only_backends_report_no_device_without_cuda(cls: type) -> None:
    adapter = cls()
    assert adapter.available_devices() == ()
    assert adapter.devices == ("cuda",)
    assert "no device available" in adapter.describe()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.cuda
@pytest.mark.parametrize("cls", [TorchEfficientAdapter, TorchCuDNNAdapter])
def test_cuda_only_backends_run_on_cuda(cls: type) -> None:  # pragma: no cover - no CUDA in CI
    adapter = cls()
    assert adapter.available_devices() == ("cuda",)
    q = adapter.to_native(
        np.random.default_rng(0).standard_normal((1, 2, 8, 64)), "float16", "cuda"
    )
    out = adapter.scaled_dot_product_attention(q, q, q)
    adapter.synchronize("cuda")
    assert adapter.from_native(out)[0].shape == (1, 2, 8, 64)


# -- conventions, observed ----------------------------------------------------------------------


def _qkv(dtype: Any, Lq: int = 3, Lk: int = 5, Hq: int = 2, Hkv: int = 2, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, Hq, Lq, 8, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(1, Hkv, Lk, 8, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(1, Hkv, Lk, 8, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


def _explicit(q: Any, k: Any, v: Any, keep: Any) -> Any:
    """float64 attention with an explicit keep-mask; rows with no key are 0."""
    q, k, v = q.double(), k.double(), v.double()
    s = (q @ k.mT) / q.shape[-1] ** 0.5
    s = s.masked_fill(~keep, -torch.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


@pytest.mark.parametrize("cls", SDPA)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_row_is_zero_as_declared(cls: type, dtype: str) -> None:
    adapter = cls()
    assert adapter.conventions.fully_masked_row == "zero"
    q, k, v = _qkv(getattr(torch, dtype))
    keep = torch.ones(3, 5, dtype=torch.bool)
    keep[1] = False
    additive = torch.zeros(3, 5, dtype=q.dtype)
    additive[1] = -torch.inf
    for mask in (keep, additive):
        out = adapter.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))  # not NaN, not mean(V)
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("cls", SDPA)
@pytest.mark.parametrize(("Lq", "Lk"), [(3, 6), (6, 3)])
def test_is_causal_is_top_left_as_declared(cls: type, Lq: int, Lk: int) -> None:
    adapter = cls()
    assert adapter.conventions.causal_alignment == "top_left"
    q, k, v = _qkv(torch.float64, Lq, Lk)
    out = adapter.scaled_dot_product_attention(q, k, v, is_causal=True)
    ones = torch.ones(Lq, Lk, dtype=torch.bool)
    top_left = _explicit(q, k, v, ones.tril())
    bottom_right = _explicit(q, k, v, ones.tril(Lk - Lq))
    assert torch.allclose(out, top_left, rtol=0, atol=1e-12)
    assert not torch.allclose(out, bottom_right, rtol=0, atol=1e-3)  # the check tells them apart


@pytest.mark.parametrize("cls", SDPA)
def test_bool_mask_true_means_attend_and_gqa_interleaves(cls: type) -> None:
    adapter = cls()
    assert adapter.conventions.bool_mask == "keep"
    assert adapter.conventions.gqa_mapping == "interleave"
    q, k, v = _qkv(torch.float64, Hq=4, Hkv=2)
    keep = torch.tensor([[1, 0, 1, 1, 0]] * 3, dtype=torch.bool)
    out = adapter.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    k_rep, v_rep = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    assert torch.allclose(out, _explicit(q, k_rep, v_rep, keep), rtol=0, atol=1e-12)
    assert not torch.allclose(out, _explicit(q, k_rep, v_rep, ~keep), rtol=0, atol=1e-3)
    tiled = _explicit(q, k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1), keep)
    assert not torch.allclose(out, tiled, rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_default_eps_is_the_math_types_epsilon_as_declared(dtype: str) -> None:
    adapter = TorchAdapter()
    assert adapter.conventions.rms_norm_default_eps == "opmath"
    x64 = np.full((1, 8), 1e-4)
    x = adapter.to_native(x64, dtype, "cpu")
    got = adapter.from_native(adapter.rms_norm(x, (8,)))[0][0, 0]
    xv = adapter.from_native(x)[0][0, 0]
    math_eps = float(np.finfo(np.float64 if dtype == "float64" else np.float32).eps)
    own_eps = float(torch.finfo(getattr(torch, dtype)).eps)
    declared = xv / np.sqrt(xv * xv + math_eps)
    assert abs(got - declared) <= 2 * float(round_to(2.0**-8, "float64")) * declared
    if dtype in ("float16", "bfloat16"):  # the dtype's own eps would give a very different value
        assert abs(got - xv / np.sqrt(xv * xv + own_eps)) > 0.5 * declared


def test_attn_mask_with_is_causal_is_mask_and_top_left_on_flash() -> None:
    q, k, v = _qkv(torch.float64, 6, 4)
    keep = torch.tensor([[1, 0, 1, 1]] * 6, dtype=torch.bool)
    out = TorchFlashAdapter().scaled_dot_product_attention(q, k, v, attn_mask=keep, is_causal=True)
    assert torch.allclose(
        out, _explicit(q, k, v, keep & torch.ones(6, 4).bool().tril()), atol=1e-12
    )


# -- restrictions: supports() names exactly what raises ------------------------------------------


def _args(q_shape: tuple, v_dim: int, mask: Any, causal: bool) -> dict[str, Any]:
    q = np.zeros(q_shape)
    v = np.zeros((*q_shape[:-1], v_dim))
    return {"q": q, "k": q, "v": v, "attn_mask": mask, "is_causal": causal, "scale": None}


RESTRICTION_CASES = {
    "4-D, mask and causal": _args((1, 2, 3, 4), 4, np.ones((3, 3), bool), True),
    "3-D, mask and causal": _args((2, 3, 4), 4, np.ones((3, 3), bool), True),
    "4-D, Ev != E, mask and causal": _args((1, 2, 3, 4), 6, np.ones((3, 3), bool), True),
    "3-D input": _args((2, 3, 4), 4, None, False),
    "Ev != E": _args((1, 2, 3, 4), 6, None, False),
    "1-D mask": _args((1, 2, 3, 4), 4, np.ones(3, bool), False),
    "3-D mask": _args((1, 2, 3, 4), 4, np.ones((2, 3, 3), bool), False),
    "4-D mask": _args((1, 2, 3, 4), 4, np.ones((1, 2, 3, 3), bool), False),
    "plain": _args((1, 2, 3, 4), 4, None, False),
}


@pytest.mark.parametrize("cls", SDPA)
@pytest.mark.parametrize("case", list(RESTRICTION_CASES))
def test_supports_predicts_exactly_which_calls_raise(cls: type, case: str) -> None:
    adapter = cls()
    args = RESTRICTION_CASES[case]
    reason = adapter.supports("attention", args, dtype="float32", device="cpu")
    native = {
        key: adapter.to_native(value, "float32", "cpu") if isinstance(value, np.ndarray) else value
        for key, value in args.items()
    }
    try:
        adapter.scaled_dot_product_attention(**native)
        raised = None
    except Exception as exc:  # RuntimeError, IndexError: whatever torch raises
        raised = str(exc)
    assert (reason is None) == (raised is None), f"supports: {reason!r}; torch: {raised!r}"


def test_supports_has_no_opinion_on_other_components() -> None:
    assert TorchAdapter().supports("softmax", {"x": np.zeros(3), "dim": 0}) is None


# -- precision, observed ------------------------------------------------------------------------


def _float32_math(q: Any, k: Any, v: Any) -> Any:
    f = torch.float32
    p = torch.softmax((q.to(f) @ k.to(f).mT) / q.shape[-1] ** 0.5, -1)
    return (p @ v.to(f)).to(q.dtype)


def _exp_stored(q: Any, k: Any, v: Any) -> Any:
    """float32 scores; exp(s - max) rounded to the input dtype before P·V; float32 normalizer."""
    f = torch.float32
    s = (q.to(f) @ k.to(f).mT) / q.shape[-1] ** 0.5
    e = torch.exp(s - s.amax(-1, keepdim=True))
    return ((e.to(q.dtype).to(f) @ v.to(f)) / e.sum(-1, keepdim=True)).to(q.dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_declarations_match_the_kernels(dtype: str) -> None:
    """math: float32 throughout (store float32); flash/default: exp rounded to dtype."""
    q, k, v = _qkv(getattr(torch, dtype), 48, 48, seed=3)
    math_out = TorchMathAdapter().scaled_dot_product_attention(q, k, v)
    flash_out = TorchFlashAdapter().scaled_dot_product_attention(q, k, v)
    default_out = TorchAdapter().scaled_dot_product_attention(q, k, v)
    f32, stored = _float32_math(q, k, v), _exp_stored(q, k, v)
    assert (math_out == f32).double().mean() > 0.99
    margin = 0.2 if dtype == "bfloat16" else 0.0  # float16's finer rounding shows less
    assert (flash_out == stored).double().mean() > (flash_out == f32).double().mean() + margin
    assert torch.equal(default_out, flash_out)
    assert TorchMathAdapter().precision("attention", dtype).store == "float32"
    assert TorchFlashAdapter().precision("attention", dtype).store == dtype
    assert TorchAdapter().precision("attention", dtype).store == dtype
    for component in ("softmax", "layer_norm", "rms_norm"):
        declared = TorchAdapter().precision(component, dtype)
        assert (declared.accumulate, declared.store) == ("float32", "float32")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_norms_and_softmax_are_float32_math_rounded_once(dtype: str) -> None:
    adapter = TorchAdapter()
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(16, 129, generator=g, dtype=torch.float64) * 3 + 1).to(getattr(torch, dtype))
    w = torch.randn(129, generator=g, dtype=torch.float64).to(x.dtype)
    b = torch.randn(129, generator=g, dtype=torch.float64).to(x.dtype)
    f = torch.float32
    F = torch.nn.functional
    assert torch.equal(adapter.softmax(x, -1), torch.softmax(x.to(f), -1).to(x.dtype))
    xf = x.to(f)
    rms = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.to(f)).to(x.dtype)
    assert torch.equal(adapter.rms_norm(x, (129,), w, 1e-6), rms)
    ln = F.layer_norm(xf, (129,), w.to(f), b.to(f), 1e-5).to(x.dtype)
    assert (adapter.layer_norm(x, (129,), w, b, 1e-5) == ln).double().mean() > 0.99
    # rounding the normalized value before the weight (store = dtype) is observably different
    y = F.rms_norm(xf, (129,), None, 1e-6).to(x.dtype) * w
    assert not torch.equal(adapter.rms_norm(x, (129,), w, 1e-6), y)


def test_flash_is_causal_with_a_negative_scale_is_the_defect_documented() -> None:
    """The table's one defect row: the CPU flash kernel breaks on is_causal with scale < 0,
    while the same causal mask given explicitly is right. If torch fixes it, update the table."""
    q, k, v = _qkv(torch.float64, 4, 6)
    keep = torch.ones(4, 6, dtype=torch.bool).tril()
    flash = TorchFlashAdapter()
    explicit = flash.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=-0.3)
    expected = TorchMathAdapter().scaled_dot_product_attention(q, k, v, is_causal=True, scale=-0.3)
    assert torch.allclose(explicit, expected, rtol=0, atol=1e-12)
    broken = flash.scaled_dot_product_attention(q, k, v, is_causal=True, scale=-0.3)
    assert not torch.allclose(broken, expected, rtol=0, atol=1e-3)


def test_to_native_gives_contiguous_tensors_for_any_numpy_layout() -> None:
    """Fancy indexing can leave a unit last-dim stride != 1, which the flash kernel refuses."""
    adapter = TorchFlashAdapter()
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 2, 1, 1)), rng.standard_normal((1, 2, 2, 1))
    permuted = k[..., [1, 0], :]
    assert not permuted.flags["C_CONTIGUOUS"]
    for array in (permuted, np.asfortranarray(rng.standard_normal((3, 4))), permuted > 0):
        assert adapter.to_native(array, "float32", "cpu").is_contiguous()
    native = {n: adapter.to_native(a, "float32", "cpu") for n, a in (("q", q), ("k", permuted))}
    out = adapter.scaled_dot_product_attention(native["q"], native["k"], native["k"])
    assert tuple(out.shape) == (1, 2, 1, 1)
