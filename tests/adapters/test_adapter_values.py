"""Each built-in adapter's components give the right values on small cases.

The expected values are computed here, row by row in float64, straight from the formulas (no
oracle code), on exactly the inputs the adapter received (rounded to the dtype under test).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Adapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.dtypes import unit_roundoff

# relative tolerance (of max |expected| or of the row's scale) per dtype: a few units of the
# working precision times the short reductions used here
RTOL = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3, "bfloat16": 1.6e-2}


def _adapters() -> list[Any]:
    params: list[Any] = [pytest.param("numpy", id="numpy")]
    for name in ("torch", "torch-math", "torch-flash"):
        params.append(pytest.param(name, id=name))
    return params


def _make(name: str) -> Adapter:
    if name == "numpy":
        return NumpyAdapter()
    pytest.importorskip("torch")
    from transpec.adapters.registry import load_adapter

    return load_adapter(name)


def _cases(adapter: Adapter, component: str) -> list[str]:
    return [d for d in adapter.dtypes] if adapter.provides(component) else []


def _send(adapter: Adapter, dtype: str, args: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """(native args, the float64 values the adapter received)."""
    native, seen = {}, {}
    for key, value in args.items():
        if isinstance(value, np.ndarray):
            native[key] = adapter.to_native(value, dtype, "cpu")
            seen[key] = value if value.dtype == np.bool_ else adapter.from_native(native[key])[0]
        else:
            native[key] = seen[key] = value
    return native, seen


def _receive(adapter: Adapter, dtype: str, out: Any) -> np.ndarray:
    assert adapter.is_native(out)
    values, out_dtype = adapter.from_native(out)
    assert out_dtype == dtype
    return values


# -- plain float64 formulas ---------------------------------------------------------------------


def plain_softmax_rows(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis, one row at a time."""
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        e = [math.exp(t - max(row)) for t in row]
        out[idx] = [t / math.fsum(e) for t in e]
    return out


def plain_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    keep: np.ndarray,
    add: np.ndarray | None,
    scale: float,
) -> np.ndarray:
    """O[b,h,i] = Σ_j p_j v[b,g(h),j], p = softmax over the kept keys of scale·q·k + add;
    a row with no kept key is zero; g(h) = h // (Hq / Hkv)."""
    B, Hq, Lq, _ = q.shape
    Hkv, Lk, Ev = k.shape[1], k.shape[2], v.shape[3]
    keep = np.broadcast_to(keep, (B, Hq, Lq, Lk))
    bias = np.zeros((B, Hq, Lq, Lk)) if add is None else np.broadcast_to(add, (B, Hq, Lq, Lk))
    out = np.zeros((B, Hq, Lq, Ev))
    for b, h, i in np.ndindex(B, Hq, Lq):
        g = h // (Hq // Hkv)
        scores = {
            j: scale * math.fsum(q[b, h, i] * k[b, g, j]) + bias[b, h, i, j]
            for j in range(Lk)
            if keep[b, h, i, j] and bias[b, h, i, j] != -math.inf
        }
        if not scores:
            continue
        m = max(scores.values())
        w = {j: math.exp(s - m) for j, s in scores.items()}
        total = math.fsum(w.values())
        for j, wj in w.items():
            out[b, h, i] += (wj / total) * v[b, g, j]
    return out


def plain_layer_norm(x: np.ndarray, n_axes: int, w: Any, b: Any, eps: float) -> np.ndarray:
    rows = x.reshape(-1, math.prod(x.shape[x.ndim - n_axes :]))
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        mu = math.fsum(row) / row.size
        var = math.fsum((t - mu) ** 2 for t in row) / row.size
        out[r] = (row - mu) / math.sqrt(var + eps)
    y = out.reshape(x.shape)
    return y * (1 if w is None else w) + (0 if b is None else b)


def plain_rms_norm(x: np.ndarray, n_axes: int, w: Any, eps: float) -> np.ndarray:
    rows = x.reshape(-1, math.prod(x.shape[x.ndim - n_axes :]))
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        out[r] = row / math.sqrt(math.fsum(t * t for t in row) / row.size + eps)
    return out.reshape(x.shape) * (1 if w is None else w)


def _close(actual: np.ndarray, expected: np.ndarray, dtype: str, scale: float) -> None:
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= RTOL[dtype] * scale, f"max error {err:.3e} > {RTOL[dtype]:.1e} * {scale:.3g}"


def test_the_plain_formulas_reject_wrong_values() -> None:
    """The checks below can fail: a 1/d scale, an unbiased variance, a tiled GQA are caught."""
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((1, 4, 3, 8)), rng.standard_normal((1, 2, 5, 8)), None
    v = rng.standard_normal((1, 2, 5, 8))
    keep = np.ones((3, 5), dtype=bool)
    right = plain_attention(q, k, v, keep, None, 1 / math.sqrt(8))
    with pytest.raises(AssertionError):
        _close(plain_attention(q, k, v, keep, None, 1 / 8), right, "float16", 1.0)
    tiled = NumpyAdapter().scaled_dot_product_attention(
        q, np.tile(k, (1, 2, 1, 1)), np.tile(v, (1, 2, 1, 1))
    )
    with pytest.raises(AssertionError):
        _close(tiled, right, "float16", 1.0)
    x = rng.standard_normal((2, 6))
    unbiased = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + 1e-5)
    with pytest.raises(AssertionError):
        _close(unbiased, plain_layer_norm(x, 1, None, None, 1e-5), "float32", 1.0)


# -- the adapters -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _adapters())
def test_softmax_values(name: str) -> None:
    adapter = _make(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7)) * 4
    for dtype in _cases(adapter, "softmax"):
        for dim in (-1, 1, 0):
            native, seen = _send(adapter, dtype, {"x": x, "dim": dim})
            out = _receive(adapter, dtype, adapter.softmax(**native))
            expected = np.moveaxis(plain_softmax_rows(np.moveaxis(seen["x"], dim, -1)), -1, dim)
            _close(out, expected, dtype, 1.0)


ATTENTION_CASES = {
    "plain": {},
    "causal Lq<Lk": {"is_causal": True},
    "causal Lq>Lk": {"is_causal": True, "Lq": 7, "Lk": 4},
    "bool mask with empty row": {"mask": "bool"},
    "additive mask with -inf row": {"mask": "additive"},
    "gqa": {"Hq": 4, "Hkv": 2, "enable_gqa": True},
    "negative scale": {"scale": -0.35},
    "Ev != E": {"Ev": 3},
    "decode Lq=1": {"Lq": 1, "Lk": 9},
}


@pytest.mark.parametrize("name", _adapters())
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_values(name: str, case: str) -> None:
    adapter = _make(name)
    spec = ATTENTION_CASES[case]
    rng = np.random.default_rng(1)
    Hq, Hkv = spec.get("Hq", 2), spec.get("Hkv", 2)
    Lq, Lk, E, Ev = spec.get("Lq", 3), spec.get("Lk", 6), 8, spec.get("Ev", 8)
    q = rng.standard_normal((2, Hq, Lq, E))
    k = rng.standard_normal((2, Hkv, Lk, E))
    v = rng.standard_normal((2, Hkv, Lk, Ev))
    keep = np.ones((Lq, Lk), dtype=bool)
    mask: np.ndarray | None = None
    add: np.ndarray | None = None
    if spec.get("mask") == "bool":
        mask = rng.random((2, 1, Lq, Lk)) < 0.6
        mask[0, 0, 1] = False
        keep = mask
    elif spec.get("mask") == "additive":
        mask = np.where(rng.random((Lq, Lk)) < 0.6, rng.standard_normal((Lq, Lk)), -np.inf)
        mask[1] = -np.inf
    if spec.get("is_causal"):
        keep = keep & np.tril(np.ones((Lq, Lk), dtype=bool))
    args = {
        "q": q,
        "k": k,
        "v": v,
        "attn_mask": mask,
        "is_causal": spec.get("is_causal", False),
        "scale": spec.get("scale"),
        "enable_gqa": spec.get("enable_gqa", False),
    }
    supports = getattr(adapter, "supports", None)
    for dtype in _cases(adapter, "attention"):
        if supports is not None and supports("attention", args, dtype=dtype, device="cpu"):
            continue
        native, seen = _send(adapter, dtype, args)
        out = _receive(adapter, dtype, adapter.scaled_dot_product_attention(**native))
        if isinstance(seen["attn_mask"], np.ndarray) and seen["attn_mask"].dtype != np.bool_:
            add = seen["attn_mask"]
        scale = spec.get("scale", 1 / math.sqrt(E))
        expected = plain_attention(seen["q"], seen["k"], seen["v"], keep, add, scale)
        _close(out, expected, dtype, float(np.max(np.abs(seen["v"]))))


@pytest.mark.parametrize("name", _adapters())
def test_layer_norm_values(name: str) -> None:
    adapter = _make(name)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 6)) * 3 + 1
    w, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    for dtype in _cases(adapter, "layer_norm"):
        for shape, weight, bias in [((6,), None, None), ((4, 6), w, b), ((6,), w[0], None)]:
            args = {"x": x, "normalized_shape": shape, "weight": weight, "bias": bias, "eps": 1e-3}
            native, seen = _send(adapter, dtype, args)
            out = _receive(adapter, dtype, adapter.layer_norm(**native))
            expected = plain_layer_norm(seen["x"], len(shape), seen["weight"], seen["bias"], 1e-3)
            _close(out, expected, dtype, float(np.max(np.abs(expected))))


@pytest.mark.parametrize("name", _adapters())
def test_rms_norm_values(name: str) -> None:
    adapter = _make(name)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 6)) * 0.5
    w = rng.standard_normal((4, 6))
    for dtype in _cases(adapter, "rms_norm"):
        for shape, weight in [((6,), None), ((4, 6), w), ((6,), w[1])]:
            args = {"x": x, "normalized_shape": shape, "weight": weight, "eps": 1e-4}
            native, seen = _send(adapter, dtype, args)
            out = _receive(adapter, dtype, adapter.rms_norm(**native))
            expected = plain_rms_norm(seen["x"], len(shape), seen["weight"], 1e-4)
            _close(out, expected, dtype, float(np.max(np.abs(expected))))


def test_numpy_rms_norm_default_eps_is_the_input_dtypes_epsilon() -> None:
    """Canonical ``rms_norm_default_eps="dtype"``: eps=None is finfo(input dtype).eps."""
    adapter = NumpyAdapter()
    assert adapter.conventions.rms_norm_default_eps == "dtype"
    x = np.full((1, 8), 1e-2)  # mean(x²) = 1e-4, comparable to float16's eps 9.8e-4
    for dtype in adapter.dtypes:
        native, seen = _send(adapter, dtype, {"x": x})
        out = _receive(adapter, dtype, adapter.rms_norm(native["x"], (8,)))
        eps = 2.0 * unit_roundoff(dtype)
        expected = plain_rms_norm(seen["x"], 1, None, eps)
        _close(out, expected, dtype, 1.0)
    # float32's eps would give 0.99999 instead of 0.30 in float16: the check tells them apart
    native, seen = _send(adapter, "float16", {"x": x})
    wrong = plain_rms_norm(seen["x"], 1, None, float(np.finfo(np.float32).eps))
    with pytest.raises(AssertionError):
        _close(
            _receive(adapter, "float16", adapter.rms_norm(native["x"], (8,))), wrong, "float16", 1
        )


def test_numpy_adapter_declarations() -> None:
    adapter = NumpyAdapter()
    assert adapter.components()[:4] == ("softmax", "attention", "layer_norm", "rms_norm")
    assert adapter.conventions.differences() == {}
    assert adapter.precision("attention", "float16").accumulate == "float32"
    assert adapter.precision("attention", "float16").store == "float32"
    assert adapter.precision("softmax", "float64").store == "float64"
    assert "NumPy" in adapter.describe()


def test_numpy_float16_is_float32_math_rounded_once() -> None:
    """The declared (float32, float32) for float16: bit-identical to float32 math rounded once."""
    adapter = NumpyAdapter()
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 2, 16, 8)).astype(np.float16) for _ in range(3))
    out = adapter.scaled_dot_product_attention(q, k, v)
    assert out.dtype == np.float16
    again = adapter.scaled_dot_product_attention(
        q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)
    )
    assert np.array_equal(out, again.astype(np.float16))


def test_numpy_adapter_is_independent_of_the_oracle() -> None:
    """A second opinion: the NumPy adapter shares no code with the oracle's reference."""
    import inspect

    import transpec.adapters.numpy.adapter as module

    source = inspect.getsource(module)
    for name in ("reference", "_kernels", "highprec", "emulate"):
        assert f"transpec.oracle.{name}" not in source
