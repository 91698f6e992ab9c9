"""The float64 reference against the 40-digit one: the oracle must know its own error.

Unit-scale inputs: |ref64 - refHP| <= 1e-13 · absref for every block (absref is the
componentwise absolute-value reference, the scale the rounding errors are made of).
Hard regimes (logits of ±1e4, rows of very different scale, fully masked rows, variance near
eps, |mean| >> std): the float64 bound of the tolerance model itself must hold,
|ref64 - refHP| <= tolerance(component, ref64, "float64", Precision(float64, float64)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle.kernels import highprec
from transpec.oracle.kernels import reference as ref_mod
from transpec.oracle.kernels.tolerance import tolerance
from transpec.oracle.reference import compute
from transpec.spec.conventions import CANONICAL, Conventions

P64 = Precision("float64", "float64")


def _case(name: str, rng: np.random.Generator) -> tuple[str, dict[str, Any], Conventions]:
    """Named inputs; unit-scale cases start with 'unit'."""
    n = rng.standard_normal
    if name == "unit softmax":
        return "softmax", {"x": n((3, 40)), "dim": -1}, CANONICAL
    if name == "unit attention":
        args = {"q": n((2, 4, 7, 8)), "k": n((2, 2, 9, 8)), "v": n((2, 2, 9, 5))}
        return "attention", {**args, "enable_gqa": True, "is_causal": True}, CANONICAL
    if name == "unit attention softcap mask":
        args = {"q": n((1, 2, 6, 8)), "k": n((1, 2, 9, 8)), "v": n((1, 2, 9, 8))}
        mask = n((6, 9))
        return "attention", {**args, "attn_mask": mask, "softcap": 2.0, "scale": -0.7}, CANONICAL
    if name == "unit layer_norm":
        args = {"x": n((3, 40)), "normalized_shape": 40, "weight": n(40), "bias": n(40)}
        return "layer_norm", {**args, "eps": 1e-5}, CANONICAL
    if name == "unit layer_norm unbiased added_to_std":
        conv = Conventions(layer_norm_variance="unbiased", layer_norm_eps="added_to_std")
        return "layer_norm", {"x": n((3, 5, 8)), "normalized_shape": (5, 8)}, conv
    if name == "unit rms_norm":
        return "rms_norm", {"x": n((3, 40)), "normalized_shape": 40, "weight": n(40)}, CANONICAL
    if name == "unit rms_norm gemma added":
        conv = Conventions(rms_norm_weight="one_plus_w", rms_norm_eps="added_to_rms")
        args = {"x": n((3, 40)), "normalized_shape": 40, "weight": n(40), "eps": 1e-6}
        return "rms_norm", args, conv
    if name == "hard softmax logits 1e4":
        return "softmax", {"x": n((4, 40)) * 1e4, "dim": -1}, CANONICAL
    if name == "hard softmax mixed rows":
        x = n((4, 40)) * np.array([[1e-8], [1.0], [30.0], [3e3]])
        return "softmax", {"x": x, "dim": -1}, CANONICAL
    if name == "hard attention logits 1e4":
        args = {"q": n((1, 2, 6, 8)) * 100, "k": n((1, 2, 9, 8)) * 100, "v": n((1, 2, 9, 4))}
        return "attention", {**args, "scale": 1.0}, CANONICAL
    if name == "hard attention moderate logits":
        args = {"q": n((1, 2, 6, 16)) * 4, "k": n((1, 2, 30, 16)) * 4, "v": n((1, 2, 30, 4))}
        return "attention", args, CANONICAL
    if name == "hard attention fully masked rows":
        mask = rng.random((1, 1, 6, 9)) < 0.5
        mask[..., 2, :] = False
        args = {"q": n((1, 2, 6, 8)), "k": n((1, 2, 9, 8)), "v": n((1, 2, 9, 4))}
        return "attention", {**args, "attn_mask": mask}, Conventions(fully_masked_row="nan")
    if name == "hard attention additive -inf mask":
        bias = n((6, 9)) * 3
        bias[rng.random((6, 9)) < 0.4] = -np.inf
        bias[4] = -np.inf
        args = {"q": n((1, 2, 6, 8)) * 3, "k": n((1, 2, 9, 8)) * 3, "v": n((1, 2, 9, 4))}
        return "attention", {**args, "attn_mask": bias, "softcap": 5.0}, CANONICAL
    if name == "hard attention finite fill, GQA tile, bottom-right causal":
        conv = Conventions(mask_fill=-1e4, gqa_mapping="tile", causal_alignment="bottom_right")
        args = {"q": n((1, 4, 9, 8)) * 5, "k": n((1, 2, 6, 8)) * 5, "v": n((1, 2, 6, 4))}
        return "attention", {**args, "is_causal": True, "enable_gqa": True}, conv
    if name == "hard attention rows of different scale":
        q = n((1, 1, 5, 8)) * np.array([1e-6, 1e-2, 1.0, 10.0, 40.0])[:, None]
        return "attention", {"q": q, "k": n((1, 1, 9, 8)), "v": n((1, 1, 9, 4))}, CANONICAL
    if name == "hard layer_norm variance near eps":
        x = n((4, 32)) * np.sqrt(1e-5) * np.array([[0.1], [1.0], [3.0], [0.0]])
        return "layer_norm", {"x": x, "normalized_shape": 32, "eps": 1e-5}, CANONICAL
    if name == "hard layer_norm mean >> std":
        x = n((4, 32)) * 1e-3 + np.array([[1e3], [-1e4], [1e2], [5.0]])
        return "layer_norm", {"x": x, "normalized_shape": 32, "eps": 1e-12}, CANONICAL
    if name == "hard rms_norm tiny and huge rows":
        x = n((3, 32)) * np.array([[1e-4], [1.0], [1e150]])
        return "rms_norm", {"x": x, "normalized_shape": 32, "eps": 1e-6}, CANONICAL
    raise AssertionError(name)


UNIT = [
    "unit softmax",
    "unit attention",
    "unit attention softcap mask",
    "unit layer_norm",
    "unit layer_norm unbiased added_to_std",
    "unit rms_norm",
    "unit rms_norm gemma added",
]
HARD = [
    "hard softmax logits 1e4",
    "hard softmax mixed rows",
    "hard attention logits 1e4",
    "hard attention moderate logits",
    "hard attention fully masked rows",
    "hard attention additive -inf mask",
    "hard attention finite fill, GQA tile, bottom-right causal",
    "hard attention rows of different scale",
    "hard layer_norm variance near eps",
    "hard layer_norm mean >> std",
    "hard rms_norm tiny and huge rows",
]


def _both(name: str, seed: int) -> tuple[str, ref_mod.Reference, np.ndarray]:
    component, args, conv = _case(name, np.random.default_rng(seed))
    ref = compute(component, args, conventions=conv)
    hp = highprec.compute(component, args, conventions=conv, digits=40)
    np.testing.assert_array_equal(np.isnan(ref.value), np.isnan(hp))
    return component, ref, hp


@pytest.mark.parametrize("name", UNIT)
@pytest.mark.parametrize("seed", [0, 1])
def test_unit_scale_agrees_to_1e13_relative(name: str, seed: int) -> None:
    _, ref, hp = _both(name, seed)
    ok = ~np.isnan(hp)
    rel = np.abs(ref.value - hp)[ok] / ref.abs_value[ok]
    assert rel.max() <= 1e-13, f"{name}: worst relative error {rel.max():.3g}"


@pytest.mark.parametrize("name", HARD + UNIT)
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_reference_within_its_own_float64_bound(name: str, seed: int) -> None:
    component, ref, hp = _both(name, seed)
    tol = tolerance(component, ref, "float64", P64)
    ok = ~np.isnan(hp)
    err = np.abs(ref.value - hp)[ok]
    bound = np.broadcast_to(tol.bound, ref.value.shape)[ok]
    assert (err <= bound).all(), f"{name}: max err/bound {np.max(err / bound):.3g}"


def test_known_wrong_float64_result_exceeds_the_bound() -> None:
    # the float64 bound is tight enough to see a one-part-in-1e12 change of the scale
    component, args, conv = _case("unit attention", np.random.default_rng(0))
    hp = highprec.compute(component, args, conventions=conv)
    wrong = compute(component, {**args, "scale": (1 + 1e-12) / np.sqrt(8)}, conventions=conv)
    ref = compute(component, args, conventions=conv)
    bound = tolerance(component, ref, "float64", P64).bound
    assert (np.abs(wrong.value - hp) > bound).any()


def test_highprec_namespace_handles_neginf_and_digits() -> None:
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    out = highprec.compute("softmax", {"x": x}, conventions=CANONICAL)
    np.testing.assert_allclose(out[0], [1 / (1 + np.e), 0.0, np.e / (1 + np.e)], rtol=1e-16)
    assert np.isnan(out[1]).all()
    with pytest.raises(ValueError, match="digits"):
        highprec.compute("softmax", {"x": x}, conventions=CANONICAL, digits=20)
    vals = highprec.xp.exp(highprec.to_mp(np.array([0.0, 1.0])))
    assert str(vals[1])[:12] == "2.7182818284"
