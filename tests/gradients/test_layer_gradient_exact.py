"""The layers' float64 backward reference against the exact derivative of their SymPy definition.

At tiny sizes (E = 2..4, H = 1..2, L = 1..3) :func:`transpec.oracle.gradients.exact.layer_gradients`
differentiates the loss Σ g ∘ f of the layer's definition in :mod:`transpec.spec.layers` exactly
(SymPy's expression graph, evaluated at 50 digits at the same binary inputs). The float64
reference (:mod:`transpec.oracle.gradients.layers`, the kernels' proved VJPs composed) must be
within its own float64 bound -- the layer gradient tolerance of a float64 implementation -- of
it, element by element, for every input and every parameter; causal, padding, boolean and
additive masks, pre- and post-LN, every activation. A reference with one wrong step is rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest
import sympy as sp

from transpec.adapters.base import Precision
from transpec.oracle.gradients import exact
from transpec.oracle.gradients import layers as glayers
from transpec.oracle.gradients import reference as gref
from transpec.oracle.gradients.tolerance import tolerances
from transpec.oracle.layers import strategies as ls

P64 = Precision("float64", "float64")


def _causal(length: int) -> np.ndarray:
    return np.triu(np.ones((length, length), dtype=bool), 1)


def _padding(keys: int, padded: int) -> np.ndarray:
    """nn.MultiheadAttention's key_padding_mask of batch 1: the last ``padded`` keys hidden."""
    mask = np.zeros((1, keys), dtype=bool)
    mask[0, keys - padded :] = True
    return mask


def _mha(e: int, h: int, lq: int, lk: int, rng: np.random.Generator, **kw: Any) -> dict[str, Any]:
    n = rng.standard_normal
    kdim = kw.pop("kdim", None)
    params = ls.mha_params_kv(rng, e, kdim, kdim + 1) if kdim else ls.mha_params(rng, e)
    widths = (kdim, kdim + 1) if kdim else (e, e)
    query = n((1, lq, e))
    key, value = (query, query) if kw.pop("selfish", False) else (n((1, lk, w)) for w in widths)
    return {"query": query, "key": key, "value": value, "params": params, "num_heads": h, **kw}


def _layer_params(rng: np.random.Generator, e: int, f: int, decoder: bool) -> dict[str, Any]:
    params = {**ls.mha_params(rng, e, "self_attn."), **ls.ffn_params(rng, e, f)}
    if decoder:
        params.update(ls.mha_params(rng, e, "multihead_attn."))
    for i in (1, 2, 3) if decoder else (1, 2):
        params.update(ls.norm_params(rng, e, f"norm{i}"))
    return params


def _case(name: str, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    n = rng.standard_normal
    if name.startswith("feed_forward"):
        act = name.split()[-1]
        shape = (1, 3, 3) if act == "relu" else (2, 4)
        return "feed_forward", {
            "x": n(shape),
            "params": ls.ffn_params(rng, shape[-1], 3),
            "activation": act,
        }
    if name == "swiglu_feed_forward":
        w = {"w1.weight": n((3, 4)) * 0.5, "w2.weight": n((4, 3)) * 0.5, "w3.weight": n((3, 4))}
        return "swiglu_feed_forward", {"x": n((1, 2, 4)), "params": w}
    if name == "multi_head_attention self, causal, 2 heads":
        return "multi_head_attention", _mha(4, 2, 3, 3, rng, selfish=True, attn_mask=_causal(3))
    if name == "multi_head_attention cross, key padding":
        return "multi_head_attention", _mha(2, 1, 2, 3, rng, key_padding_mask=_padding(3, 1))
    if name == "multi_head_attention kdim/vdim, additive mask, one query":
        mask = n((1, 3))
        return "multi_head_attention", _mha(4, 2, 1, 3, rng, kdim=3, attn_mask=mask)
    if name == "multi_head_attention float causal mask":
        mask = np.where(_causal(3), -np.inf, 0.0)
        return "multi_head_attention", _mha(3, 1, 3, 3, rng, attn_mask=mask)
    if name.startswith("multi_head_attention_weights"):
        average = "averaged" in name
        args = _mha(4, 2, 3, 3, rng, attn_mask=None if average else _causal(3))
        if average:
            args["key_padding_mask"] = _padding(3, 1)
        return "multi_head_attention_weights", {**args, "average_attn_weights": average}
    if name.startswith("encoder_layer"):
        post = "post-LN" in name
        args = {
            "src": n((1, 3, 4)),
            "params": _layer_params(rng, 4, 3, decoder=False),
            "nhead": 2,
            "norm_first": not post,
            "activation": "relu" if post else "gelu",
            "src_mask": _causal(3) if post else None,
            "src_key_padding_mask": None if post else _padding(3, 1),
        }
        return "encoder_layer", args
    if name.startswith("decoder_layer"):
        post = "post-LN" in name
        args = {
            "tgt": n((1, 3, 4) if post else (1, 2, 2)),
            "memory": n((1, 2, 4) if post else (1, 3, 2)),
            "params": _layer_params(rng, 4 if post else 2, 3, decoder=True),
            "nhead": 2 if post else 1,
            "norm_first": not post,
            "activation": "gelu_tanh" if post else "relu",
            "tgt_mask": _causal(3 if post else 2),
            "memory_key_padding_mask": None if post else _padding(3, 1),
            "memory_mask": n((3, 2)) if post else None,
        }
        return "decoder_layer", args
    raise ValueError(name)


CASES = [
    "feed_forward relu",
    "feed_forward gelu",
    "feed_forward gelu_tanh",
    "swiglu_feed_forward",
    "multi_head_attention self, causal, 2 heads",
    "multi_head_attention cross, key padding",
    "multi_head_attention kdim/vdim, additive mask, one query",
    "multi_head_attention float causal mask",
    "multi_head_attention_weights averaged, key padding",
    "multi_head_attention_weights per head, causal",
    "encoder_layer post-LN, relu, causal",
    "encoder_layer pre-LN, gelu, key padding",
    "decoder_layer post-LN, gelu_tanh, causal, additive memory mask",
    "decoder_layer pre-LN, relu, causal, memory padding",
]


def _worst_ratio(component: str, args: dict[str, Any], g: np.ndarray) -> dict[str, float]:
    """{gradient: max |reference − exact| / its float64 bound}; asserts every gradient of the
    reference has an exact counterpart of its shape."""
    ref = gref.compute(component, args, g)
    bounds = tolerances(ref, "float64", P64, P64)
    truth = exact.layer_gradients(component, args, g)
    assert set(ref.grads) == set(truth)
    ratios = {}
    for name, grad in ref.grads.items():
        value = np.asarray(grad.value)
        assert value.shape == truth[name].shape, name
        bound = np.broadcast_to(bounds[name].bound, value.shape)
        ratios[name] = float(np.max(np.abs(value - truth[name]) / bound, initial=0.0))
    return ratios


def _draw(name: str) -> tuple[str, dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, name)))
    component, args = _case(name, rng)
    from transpec.oracle import components
    from transpec.spec.conventions import CANONICAL

    out = components.get(component).compute_reference(args, conventions=CANONICAL).value
    return component, args, rng.standard_normal(out.shape)


@pytest.mark.parametrize("name", CASES)
def test_float64_layer_backward_within_its_own_bound_of_the_exact_derivative(name: str) -> None:
    component, args, g = _draw(name)
    ratios = _worst_ratio(component, args, g)
    gradients = {n for n in glayers.gradient_names(component) if n in args or n in args["params"]}
    assert set(ratios) == gradients  # every input and every parameter judged
    assert max(ratios.values()) <= 1.0, ratios


def test_the_graph_derivative_is_sympy_diff() -> None:
    """The reverse-mode walk over SymPy's graph (every node rule of exact.py) agrees with
    ``sympy.diff`` on an expression using each rule, a shared subexpression and a constant
    subexpression; and a wrong value of one input changes it."""
    x, y, z = sp.symbols("x y z", real=True)
    shared = x * y + z
    loss = (
        sp.tanh(shared) * sp.exp(-shared)
        + sp.erf(x / sp.sqrt(2)) / y
        + sp.Max(shared, 0) * y**x
        + sp.sqrt(z * z + sp.Rational(1, 3))
    )
    values = {x: 0.75, y: 1.5, z: -0.25}
    got = exact.gradient(loss, values)
    point = {k: sp.Rational(v) for k, v in values.items()}
    with mpmath.workdps(exact.DIGITS):
        for s in (x, y, z):
            want = mpmath.mpf(str(sp.N(sp.diff(loss, s).subs(point), exact.DIGITS)))
            assert abs(got[s] - want) <= mpmath.mpf(10) ** -40 * (1 + abs(want))
    moved = exact.gradient(loss, {**values, x: 0.5})
    assert abs(float(moved[y] - got[y])) > 1e-3


# -- negative controls: a reference with one wrong step ------------------------------------------


def _residual_without_identity(original: Callable[..., Any]) -> Callable[..., Any]:
    """Chain.add whose backward gives the cotangent to its second summand only."""

    def add(self: glayers.Chain, a: glayers.Node, b: glayers.Node) -> glayers.Node:
        node = original(self, a, b)
        back = node.back
        assert back is not None

        def wrong(g: np.ndarray, dg: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            (_, da), second = back(g, dg)
            return [(np.zeros_like(g), da), second]

        node.back = wrong
        return node

    return add


def _value_projection_without_input_gradient(chain: type[glayers.Chain]) -> dict[str, Any]:
    """Chain.rows and Chain.linear such that the value projection of every attention
    (the rows 2E:3E of ``in_proj_weight``) passes no cotangent to its input: the decoder's
    memory then gets its key path only, self-attention's input its query and key paths."""
    value_blocks: set[int] = set()
    rows, linear = chain.rows, chain.linear

    def tagged_rows(self: glayers.Chain, w: glayers.Node, start: int, stop: int) -> glayers.Node:
        node = rows(self, w, start, stop)
        if start == 2 * (stop - start) and w.value.ndim == 2:
            value_blocks.add(id(node))
        return node

    def wrong_linear(
        self: glayers.Chain, x: glayers.Node, w: glayers.Node, b: glayers.Node | None
    ) -> glayers.Node:
        node = linear(self, x, w, b)
        back = node.back
        if id(w) in value_blocks and back is not None:

            def no_input(g: np.ndarray, dg: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
                parts = back(g, dg)
                return [(np.zeros_like(parts[0][0]), parts[0][1]), *parts[1:]]

            node.back = no_input
        return node

    return {"rows": tagged_rows, "linear": wrong_linear}


def _head_mean_not_divided(chain: type[glayers.Chain]) -> dict[str, Any]:
    """Chain.mean_heads whose backward gives every head ȳ instead of ȳ/H."""
    original = chain.mean_heads

    def mean_heads(self: glayers.Chain, x: glayers.Node) -> glayers.Node:
        node = original(self, x)
        back, heads = node.back, x.value.shape[1]
        assert back is not None
        node.back = lambda g, dg: [(part * heads, err) for part, err in back(g, dg)]
        return node

    return {"mean_heads": mean_heads}


def _identity_dropped(chain: type[glayers.Chain]) -> dict[str, Any]:
    return {"add": _residual_without_identity(chain.add)}


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("encoder_layer post-LN, relu, causal", _identity_dropped),
        ("decoder_layer pre-LN, relu, causal, memory padding", _identity_dropped),
        (
            "decoder_layer post-LN, gelu_tanh, causal, additive memory mask",
            _value_projection_without_input_gradient,
        ),
        ("multi_head_attention cross, key padding", _value_projection_without_input_gradient),
        ("multi_head_attention_weights averaged, key padding", _head_mean_not_divided),
    ],
)
def test_a_wrong_layer_reference_is_rejected(
    name: str, wrong: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    component, args, g = _draw(name)
    for step, replacement in wrong(glayers.Chain).items():
        monkeypatch.setattr(glayers.Chain, step, replacement)
    ratios = _worst_ratio(component, args, g)
    assert max(ratios.values()) > 1e3, ratios
