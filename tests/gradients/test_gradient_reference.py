"""The float64 backward reference against 40 digits and against the exact SymPy derivative.

* 40 digits: the same VJP formulas over mpmath (``compute_highprec``) on unit-scale and hard
  inputs, every convention variant; the float64 reference must be within the float64 bound of
  the gradient tolerance model itself (the oracle knows its own error).
* exact: at tiny sizes the loss L = Σ g ∘ f(inputs) is built from the block's SymPy definition
  (:mod:`transpec.spec.nodes`), differentiated symbolically, and evaluated at the same binary
  inputs; the reference must agree to 1e-12 of the gradient scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sympy as sp

from transpec.adapters.base import Precision
from transpec.oracle.gradients import reference as gref
from transpec.oracle.gradients.tolerance import tolerances
from transpec.spec.conventions import CANONICAL, Conventions
from transpec.spec.nodes import LayerNormRows, RMSNormRows, RowSoftmax

P64 = Precision("float64", "float64")


def _case(name: str, rng: np.random.Generator) -> tuple[str, dict[str, Any], Conventions]:
    n = rng.standard_normal
    if name == "softmax":
        return "softmax", {"x": n((3, 20)), "dim": 0}, CANONICAL
    if name == "softmax logits 1e3 and -inf":
        x = n((4, 20)) * 1e3
        x[:, 3] = -np.inf
        return "softmax", {"x": x, "dim": -1}, CANONICAL
    if name == "attention gqa causal":
        args = {"q": n((2, 4, 5, 6)), "k": n((2, 2, 7, 6)), "v": n((2, 2, 7, 3))}
        return "attention", {**args, "enable_gqa": True, "is_causal": True}, CANONICAL
    if name == "attention softcap additive mask, negative scale":
        args = {"q": n((1, 2, 5, 6)), "k": n((1, 2, 7, 6)), "v": n((1, 2, 7, 6))}
        mask = n((5, 7))
        mask[1, 2] = -np.inf
        return "attention", {**args, "attn_mask": mask, "softcap": 2.0, "scale": -0.7}, CANONICAL
    if name == "attention fully masked rows, tiled gqa, bottom-right":
        args = {"q": n((1, 4, 6, 4)), "k": n((1, 2, 3, 4)), "v": n((1, 2, 3, 2))}
        keep = rng.random((1, 4, 6, 3)) < 0.6
        keep[0, 1, 2, :] = False
        conv = Conventions(gqa_mapping="tile", causal_alignment="bottom_right")
        return "attention", {**args, "attn_mask": keep, "enable_gqa": True}, conv
    if name == "attention broadcast float mask, finite fill":
        args = {"q": n((2, 2, 4, 4)), "k": n((2, 2, 5, 4)), "v": n((2, 2, 5, 4))}
        conv = Conventions(mask_fill=-1e4)
        return "attention", {**args, "attn_mask": n((1, 1, 4, 5)), "is_causal": True}, conv
    if name == "layer_norm":
        args = {"x": n((3, 30)) + 5, "normalized_shape": 30, "weight": n(30), "bias": n(30)}
        return "layer_norm", {**args, "eps": 1e-5}, CANONICAL
    if name == "layer_norm unbiased added_to_std, 2-D shape":
        conv = Conventions(layer_norm_variance="unbiased", layer_norm_eps="added_to_std")
        return "layer_norm", {"x": n((3, 4, 5)), "normalized_shape": (4, 5), "eps": 1e-3}, conv
    if name == "rms_norm":
        return "rms_norm", {"x": n((3, 30)), "normalized_shape": 30, "weight": n(30)}, CANONICAL
    if name == "rms_norm gemma added_to_rms, tiny rows":
        conv = Conventions(rms_norm_weight="one_plus_w", rms_norm_eps="added_to_rms")
        x = n((3, 30)) * np.array([[1e-3], [1.0], [1e3]])
        return "rms_norm", {"x": x, "normalized_shape": 30, "weight": n(30), "eps": 1e-6}, conv
    raise ValueError(name)


CASES = [
    "softmax",
    "softmax logits 1e3 and -inf",
    "attention gqa causal",
    "attention softcap additive mask, negative scale",
    "attention fully masked rows, tiled gqa, bottom-right",
    "attention broadcast float mask, finite fill",
    "layer_norm",
    "layer_norm unbiased added_to_std, 2-D shape",
    "rms_norm",
    "rms_norm gemma added_to_rms, tiny rows",
]


@pytest.mark.parametrize("name", CASES)
def test_float64_backward_within_its_own_bound_of_40_digits(name: str) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    component, args, conventions = _case(name, rng)
    g = _grad_output(component, args, conventions, rng)
    ref = gref.compute(component, args, g, conventions=conventions)
    high = gref.compute_highprec(component, args, g, conventions=conventions)
    assert set(high) == set(ref.grads)
    bounds = tolerances(ref, "float64", P64, P64)
    for key, grad in ref.grads.items():
        value = grad.value
        assert np.array_equal(np.isnan(value), np.isnan(high[key])), key
        finite = np.isfinite(value)
        err = np.abs(value - high[key])[finite]
        assert np.all(err <= np.broadcast_to(bounds[key].bound, value.shape)[finite]), (
            key,
            float(np.max(err / np.broadcast_to(bounds[key].bound, value.shape)[finite])),
        )


def _grad_output(
    component: str, args: dict[str, Any], conventions: Conventions, rng: np.random.Generator
) -> np.ndarray:
    from transpec.oracle import components

    shape = components.get(component).compute_reference(args, conventions=conventions).value.shape
    return rng.standard_normal(shape)


def test_fully_masked_rows_follow_the_declared_convention() -> None:
    rng = np.random.default_rng(3)
    n = rng.standard_normal
    keep = np.ones((1, 1, 3, 4), dtype=bool)
    keep[0, 0, 1, :] = False
    args = {"q": n((1, 1, 3, 2)), "k": n((1, 1, 4, 2)), "v": n((1, 1, 4, 2)), "attn_mask": keep}
    g = n((1, 1, 3, 2))
    zero = gref.compute("attention", args, g)
    assert np.all(zero.grads["q"].value[0, 0, 1] == 0.0)
    g_other = g.copy()
    g_other[0, 0, 1] = 1e3  # the dead row's cotangent reaches nothing
    other = gref.compute("attention", args, g_other)
    for key in ("q", "k", "v"):
        assert np.array_equal(zero.grads[key].value, other.grads[key].value)
    nan = gref.compute("attention", args, g, conventions=Conventions(fully_masked_row="nan"))
    assert np.all(np.isnan(nan.grads["q"].value[0, 0, 1]))
    assert not np.isnan(nan.grads["q"].value[0, 0, 0]).any()
    assert np.all(np.isnan(nan.grads["k"].value)) and np.all(np.isnan(nan.grads["v"].value))


# -- the exact derivative of the SymPy definition ------------------------------------------------


def _exact_grad(loss: Any, symbols: sp.Matrix, values: np.ndarray) -> np.ndarray:
    subs = {s: sp.Rational(float(v)) for s, v in zip(symbols, values.ravel(), strict=True)}
    out = [float(sp.N(sp.diff(loss, s).xreplace(subs), 30)) for s in symbols]
    return np.array(out).reshape(values.shape)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    scale = float(np.max(np.abs(b))) or 1.0
    assert np.max(np.abs(a - b)) <= 1e-12 * scale, (a, b)


def test_softmax_backward_is_the_derivative_of_the_definition() -> None:
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    X = sp.Matrix(2, 3, sp.symbols("x0:6", real=True))
    P = RowSoftmax(sp.ImmutableMatrix(X)).as_explicit()
    loss = sum(sp.Rational(float(g.flat[i])) * P[i] for i in range(6))
    ref = gref.compute("softmax", {"x": x}, g)
    _close(ref.grads["x"].value, _exact_grad(loss, X, x))


@pytest.mark.parametrize(("scale", "masked"), [(0.5, False), (-1.25, True)])
def test_attention_backward_is_the_derivative_of_the_definition(scale: float, masked: bool) -> None:
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((2, 2)), rng.standard_normal((3, 2)), rng.standard_normal((3, 1))
    mask = rng.standard_normal((2, 3))
    g = rng.standard_normal((2, 1))
    Q = sp.Matrix(2, 2, sp.symbols("q0:4", real=True))
    K = sp.Matrix(3, 2, sp.symbols("k0:6", real=True))
    V = sp.Matrix(3, 1, sp.symbols("v0:3", real=True))
    A = sp.Matrix(2, 3, sp.symbols("a0:6", real=True))
    scores = sp.Rational(scale) * Q * K.T + (A if masked else sp.zeros(2, 3))
    O = (RowSoftmax(sp.ImmutableMatrix(scores)).as_explicit() * V).as_explicit()
    loss = sum(sp.Rational(float(g.flat[i])) * O[i] for i in range(2))
    args: dict[str, Any] = {"q": q, "k": k, "v": v, "scale": scale}
    if masked:
        args["attn_mask"] = mask
    ref = gref.compute("attention", args, g)
    values = {"q": (Q, q), "k": (K, k), "v": (V, v), "attn_mask": (A, mask)}
    if not masked:
        del values["attn_mask"]
    assert set(ref.grads) == set(values)
    _check_each(ref, loss, values)


def _check_each(
    ref: gref.GradientReference, loss: Any, values: dict[str, tuple[Any, np.ndarray]]
) -> None:
    """Every gradient of ``ref`` against ∂loss/∂(its symbols) at the values, the other inputs
    fixed at theirs."""
    for key, grad in ref.grads.items():
        sym, val = values[key]
        fixed = {
            s: sp.Rational(float(v))
            for other, (osym, oval) in values.items()
            if other != key
            for s, v in zip(osym, np.ravel(oval), strict=True)
        }
        exact = _exact_grad(loss.xreplace(fixed), sym, np.atleast_2d(val)).reshape(np.shape(val))
        _close(grad.value, exact)


@pytest.mark.parametrize("centered", [True, False])
def test_norm_backward_is_the_derivative_of_the_definition(centered: bool) -> None:
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal(3)
    g = rng.standard_normal((2, 3))
    eps = 0.25
    X = sp.Matrix(2, 3, sp.symbols("x0:6", real=True))
    W = sp.Matrix(1, 3, sp.symbols("w0:3", real=True))
    B = sp.Matrix(1, 3, sp.symbols("b0:3", real=True))
    node = (
        LayerNormRows(sp.ImmutableMatrix(X), sp.Rational(eps), False, True)
        if centered
        else RMSNormRows(sp.ImmutableMatrix(X), sp.Rational(eps), True)
    )
    Y = node.as_explicit()
    out = [Y[r, c] * W[0, c] + (B[0, c] if centered else 0) for r in range(2) for c in range(3)]
    loss = sum(sp.Rational(float(g.flat[i])) * out[i] for i in range(6))
    args: dict[str, Any] = {"x": x, "normalized_shape": 3, "weight": w, "eps": eps}
    if centered:
        args["bias"] = b
    ref = gref.compute("layer_norm" if centered else "rms_norm", args, g)
    values = {"x": (X, x), "weight": (W, w), "bias": (B, b)}
    if not centered:
        del values["bias"]
    _check_each(ref, loss, values)


def test_numpy_softcap_backward_matches_the_reference() -> None:
    """The NumPy adapter's attention backward with a softcap (S̄ = T̄ ∘ (1 − tanh²(S/c)), the
    additive mask's gradient T̄) agrees with the reference's, float64, negative scale included:
    ready for the softcap argument of the attention signature."""
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.oracle.gradients import reference as gref
    from transpec.spec.conventions import CANONICAL

    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) * 3 for _ in range(3))
    mask = rng.standard_normal((5, 5))
    g = rng.standard_normal((2, 3, 5, 4))
    for scale, cap in ((None, 2.0), (-0.7, 0.5)):
        got = NumpyAdapter().scaled_dot_product_attention_vjp(
            g, q, k, v, attn_mask=mask, scale=scale, softcap=cap
        )
        args = {"q": q, "k": k, "v": v, "attn_mask": mask, "scale": scale, "softcap": cap}
        ref = gref.attention_gradient(args, g, conventions=CANONICAL, dtype="float64")
        for name in ("q", "k", "v", "attn_mask"):
            expected = ref.grads[name].value
            assert np.allclose(got[name], expected, rtol=1e-10, atol=1e-12), name
        plain = NumpyAdapter().scaled_dot_product_attention_vjp(g, q, k, v, attn_mask=mask)
        assert not np.allclose(plain["q"], got["q"])  # the softcap changes the gradient


def test_numpy_rms_norm_backward_default_eps_in_bfloat16() -> None:
    """eps=None is finfo(x.dtype).eps in bfloat16 too (np.finfo does not know ml_dtypes'
    bfloat16; the calibration found the backward raising there)."""
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.oracle.gradients import reference as gref
    from transpec.spec.conventions import CANONICAL

    adapter = NumpyAdapter()
    rng = np.random.default_rng(3)
    x64, g64 = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    x = adapter.to_native(x64, "bfloat16", "cpu")
    g = adapter.to_native(g64, "bfloat16", "cpu")
    got = adapter.rms_norm_vjp(g, x, 8)["x"]
    sent = adapter.from_native(x)[0]
    ref = gref.compute(
        "rms_norm",
        {"x": sent, "normalized_shape": 8, "eps": 2.0**-7},
        adapter.from_native(g)[0],
        conventions=CANONICAL,
    )
    assert np.allclose(np.asarray(got, dtype=np.float64), ref.grads["x"].value, rtol=0.05)
