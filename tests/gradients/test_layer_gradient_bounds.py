"""The propagated terms of the layer backward's attention and LayerNorm steps
(docs/gradients.md §8) bound what they claim to: the change of the exact gradients when the
step's inputs move within their forward error bounds and the cotangent within its error bound.

Each draw moves every input element to a random corner of its error box (|δ| = its bound, random
sign), and the exact float64 VJP at the moved inputs must differ from the one at the exact
inputs by no more than the step's propagated bound. The units are float64's, so the step's own
rounding terms are ~1e-16 of the gradients, far below the 1e-7 relative boxes moved through:
what is checked is the propagation. A negative control drops one of the derived terms and must
be caught by the same check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from transpec.oracle.engine.error_model import units
from transpec.oracle.gradients import layers
from transpec.oracle.gradients import reference as gref
from transpec.spec.conventions import CANONICAL, Conventions


class _Precision:
    accumulate = "float64"
    store = "float64"


UNITS = units("float64", _Precision())
REL = 1e-7


def _corner(rng: np.random.Generator, value: np.ndarray, err: np.ndarray) -> np.ndarray:
    return value + rng.choice([-1.0, 1.0], size=value.shape) * err


def _attention_case(rng: np.random.Generator) -> dict[str, Any]:
    b, h, lq, lk, dh = 2, 2, int(rng.integers(1, 6)), int(rng.integers(1, 7)), 4
    scale = 2.0 ** rng.uniform(-1, 1)
    shift = rng.standard_normal(dh) * 2.0  # values sharing a common part: |V_j − O_i| < |V_j|
    q = rng.standard_normal((b, h, lq, dh)) * scale
    k = rng.standard_normal((b, h, lk, dh)) * scale + rng.standard_normal(dh)
    v = rng.standard_normal((b, h, lk, dh)) + shift
    g = rng.standard_normal((b, h, lq, dh))
    return {"q": q, "k": k, "v": v, "g": g}


def _attention_grads(q: Any, k: Any, v: Any, g: Any) -> dict[str, np.ndarray]:
    args = {"q": q, "k": k, "v": v, "attn_mask": None, "scale": 1.0 / math.sqrt(q.shape[-1])}
    ref = gref.attention_gradient(
        args, g, conventions=Conventions(fully_masked_row="zero"), dtype="float64"
    )
    return {n: np.asarray(ref.grads[n].value) for n in ("q", "k", "v")}


def _attention_bounds(case: dict[str, Any], errs: dict[str, np.ndarray]) -> dict[str, Any]:
    chain = layers.Chain(UNITS, UNITS, "float64")
    nodes = []
    for name in ("q", "k", "v"):
        node = chain.leaf(case[name])
        node.err = errs[name]
        nodes.append(node)
    out = chain.attention(nodes[0], nodes[1], nodes[2], None, "zero")
    assert out.back is not None
    parts = out.back(case["g"], errs["g"])
    return {n: bound for n, (_, bound) in zip(("q", "k", "v"), parts, strict=True)}


def _errs(rng: np.random.Generator, case: dict[str, Any]) -> dict[str, np.ndarray]:
    return {n: REL * np.abs(x).max() * rng.uniform(0.2, 1.0, size=x.shape) for n, x in case.items()}


def _worst_attention_excess(seed: int, draws: int = 40) -> float:
    rng = np.random.default_rng(seed)
    case = _attention_case(rng)
    errs = _errs(rng, case)
    bounds = _attention_bounds(case, errs)
    exact = _attention_grads(case["q"], case["k"], case["v"], case["g"])
    worst = 0.0
    for _ in range(draws):
        moved = {n: _corner(rng, case[n], errs[n]) for n in case}
        got = _attention_grads(moved["q"], moved["k"], moved["v"], moved["g"])
        for n in ("q", "k", "v"):
            diff = np.abs(got[n] - exact[n])
            worst = max(worst, float(np.max(diff / np.maximum(bounds[n], 1e-300))))
    return worst


@pytest.mark.parametrize("seed", range(6))
def test_attention_step_bounds_the_moved_gradients(seed: int) -> None:
    assert _worst_attention_excess(seed) <= 1.0


def test_attention_bound_that_ignores_the_inputs_forward_error_fails() -> None:
    """Negative control: the propagation told that Q, K and V are exact (only the cotangent's
    error carried) fails the same check on some draw."""
    original = layers._attention_propagation

    def without_weights(p: Any, q: Any, k: Any, v: Any, g: Any, dg: Any, *rest: Any) -> Any:
        still = [layers.Node(n.value, n.err * 0.0) for n in (q, k, v)]
        return original(p, *still, g, dg, *rest)

    layers._attention_propagation = without_weights  # type: ignore[assignment]
    try:
        assert max(_worst_attention_excess(seed) for seed in range(6)) > 1.0
    finally:
        layers._attention_propagation = original


def _layer_norm_grads(x: Any, w: Any, b: Any, g: Any) -> np.ndarray:
    args = {"x": x, "normalized_shape": (x.shape[-1],), "weight": w, "bias": b, "eps": 1e-5}
    ref = gref.layer_norm_gradient(args, g, conventions=CANONICAL, dtype="float64")
    return np.asarray(ref.grads["x"].value)


def _worst_layer_norm_excess(seed: int, draws: int = 40, claimed: float = 1.0) -> float:
    """The worst |x̄(moved) − x̄|/bound, the bound told an input error of ``claimed``·δx."""
    rng = np.random.default_rng(seed)
    rows, n = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    x = rng.standard_normal((rows, n)) * 2.0 ** rng.uniform(-2, 2) + rng.standard_normal()
    w, b = rng.standard_normal(n), rng.standard_normal(n)
    g = rng.standard_normal((rows, n))
    dx = REL * np.abs(x).max() * rng.uniform(0.2, 1.0, size=x.shape)
    dg = REL * np.abs(g).max() * rng.uniform(0.2, 1.0, size=g.shape)
    chain = layers.Chain(UNITS, UNITS, "float64")
    node = chain.leaf(x)
    node.err = claimed * dx
    out = chain.layer_norm(node, chain.leaf(w), chain.leaf(b), 1e-5)
    assert out.back is not None
    bound = out.back(g, dg)[0][1]
    exact = _layer_norm_grads(x, w, b, g)
    worst = 0.0
    for _ in range(draws):
        got = _layer_norm_grads(_corner(rng, x, dx), w, b, _corner(rng, g, dg))
        worst = max(worst, float(np.max(np.abs(got - exact) / np.maximum(bound, 1e-300))))
    return worst


@pytest.mark.parametrize("seed", range(6))
def test_layer_norm_step_bounds_the_moved_gradient(seed: int) -> None:
    assert _worst_layer_norm_excess(seed) <= 1.0


def test_layer_norm_bound_that_ignores_the_inputs_forward_error_fails() -> None:
    """Negative control: the LayerNorm step told that its input is exact fails the check."""
    assert max(_worst_layer_norm_excess(seed, claimed=0.0) for seed in range(6)) > 1.0
