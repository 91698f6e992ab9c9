r"""The exact gradient of a layer's SymPy definition, for checking the float64 layer backward.

The layers are defined exactly in :mod:`transpec.spec.layers` (``nn.MultiheadAttention``,
the feed-forward blocks, ``nn.TransformerEncoderLayer``/``DecoderLayer``, one sequence). At tiny
sizes (E = 2..4, H = 1..2, L = 1..3) :func:`layer_gradients` builds the loss
:math:`L = \sum g \circ f(\text{inputs}, \text{params})` of such a definition over one symbol
per input and parameter entry, and differentiates it by the chain rule over SymPy's own
expression graph (reverse mode: every node's exact partial derivatives --

==============  =====================================================================
node            partial derivative with respect to each argument
==============  =====================================================================
Add             1
Mul             the product of the other factors
Pow b^e         e b^(e−1); b^e ln b (a non-constant exponent)
exp a           exp a
erf a           2/√π exp(−a²)
tanh a          1 − tanh² a
Max             1 for the largest argument, 0 for the others (relu)
==============  =====================================================================

-- each applied once per node, the adjoints summed over a node's uses). The values are
evaluated at ``digits`` significant digits with mpmath at the exact binary inputs (a float64
number is a rational), so the result is the exact derivative of the definition to about
``digits`` digits, independent of the float64 reference's code
(:mod:`transpec.oracle.gradients.layers`), which it judges within the reference's own float64
bound (tests/gradients/test_layer_gradient_exact.py). The expression graph is walked once in
topological order, so its size -- not the size of the expanded expression -- sets the cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

import mpmath
import numpy as np
import sympy as sp

#: the working precision of the evaluation (significant decimal digits)
DIGITS = 50


def _constant(node: sp.Basic) -> Any:
    """An exact SymPy number (rational, integer, π, e, a Float) as an mpmath number."""
    if isinstance(node, sp.Rational):
        return mpmath.mpf(int(node.p)) / int(node.q)
    if node is sp.S.Infinity or node is sp.S.NegativeInfinity:
        return mpmath.mpf("inf") if node is sp.S.Infinity else mpmath.mpf("-inf")
    return mpmath.mpf(str(sp.N(node, mpmath.mp.dps + 5)))


def _order(root: sp.Basic) -> list[sp.Basic]:
    """Every node of the graph under ``root`` once, each after its arguments (post-order)."""
    seen: set[sp.Basic] = set()
    order: list[sp.Basic] = []
    stack: list[tuple[sp.Basic, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        for arg in node.args:
            if arg not in seen:
                stack.append((arg, False))
    return order


def _evaluate(node: sp.Basic, args: list[Any]) -> Any:
    """The value of ``node`` from the values of its arguments."""
    if isinstance(node, sp.Add):
        return mpmath.fsum(args)
    if isinstance(node, sp.Mul):
        return mpmath.fprod(args)
    if isinstance(node, sp.Pow):
        return args[0] ** args[1]
    if isinstance(node, sp.exp):
        return mpmath.exp(args[0])
    if isinstance(node, sp.erf):
        return mpmath.erf(args[0])
    if isinstance(node, sp.tanh):
        return mpmath.tanh(args[0])
    if isinstance(node, sp.Max):
        return max(args)
    raise TypeError(f"no exact derivative rule for {type(node).__name__}")


def _partials(node: sp.Basic, args: list[Any], value: Any) -> list[Any]:
    """∂node/∂(each argument) at the arguments' values (module docstring)."""
    if isinstance(node, sp.Add):
        return [mpmath.mpf(1)] * len(args)
    if isinstance(node, sp.Mul):
        return [mpmath.fprod(args[:i] + args[i + 1 :]) for i in range(len(args))]
    if isinstance(node, sp.Pow):
        base, exponent = args
        d_base = exponent * base ** (exponent - 1)
        if node.args[1].is_number:
            return [d_base, mpmath.mpf(0)]
        return [d_base, value * mpmath.log(base)]
    if isinstance(node, sp.exp):
        return [value]
    if isinstance(node, sp.erf):
        return [2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-(args[0] ** 2))]
    if isinstance(node, sp.tanh):
        return [1 - value**2]
    if isinstance(node, sp.Max):
        top = max(range(len(args)), key=lambda i: args[i])
        if sum(1 for a in args if a == args[top]) > 1:
            raise ValueError("Max is not differentiable at a tie (relu at exactly 0)")
        return [mpmath.mpf(1 if i == top else 0) for i in range(len(args))]
    raise TypeError(f"no exact derivative rule for {type(node).__name__}")


def gradient(
    loss: sp.Expr, values: Mapping[sp.Symbol, Any], digits: int = DIGITS
) -> dict[sp.Symbol, Any]:
    """∂loss/∂s at ``values`` for every symbol s of ``values`` (mpmath numbers at ``digits``
    digits; 0 for a symbol the loss does not contain)."""
    with mpmath.workdps(digits):
        order = _order(loss)
        value: dict[sp.Basic, Any] = {}
        varies: dict[sp.Basic, bool] = {}  # the node depends on a symbol
        for node in order:
            if isinstance(node, sp.Symbol):
                value[node], varies[node] = mpmath.mpf(values[node]), True
            elif not node.args:
                value[node], varies[node] = _constant(node), False
            else:
                varies[node] = any(varies[a] for a in node.args)
                if varies[node]:
                    value[node] = _evaluate(node, [value[a] for a in node.args])
                else:
                    value[node] = _constant(node)
        adjoint: dict[sp.Basic, Any] = {order[-1]: mpmath.mpf(1)}
        for node in reversed(order):
            bar = adjoint.get(node)
            if bar is None or not node.args or not varies[node]:
                continue
            parts = _partials(node, [value[a] for a in node.args], value[node])
            for arg, part in zip(node.args, parts, strict=True):
                if varies[arg]:
                    adjoint[arg] = adjoint.get(arg, 0) + bar * part
        return {s: adjoint.get(s, mpmath.mpf(0)) for s in values}


def symbols(name: str, shape: tuple[int, ...]) -> sp.Matrix:
    """A matrix of fresh real symbols ``name[i]`` of ``shape`` (a vector as one row)."""
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    flat = sp.symbols(f"{_clean(name)}_0:{rows * cols}", real=True)
    return sp.Matrix(rows, cols, flat)


def _clean(name: str) -> str:
    return name.replace(".", "_")


def to_array(grads: Mapping[sp.Symbol, Any], matrix: sp.Matrix, shape: tuple[int, ...]) -> Any:
    """The float64 array of the gradients of ``matrix``'s symbols, in ``shape``."""
    return np.array([float(grads[s]) for s in matrix], dtype=np.float64).reshape(shape)


def _additive(attn_mask: Any, key_padding_mask: Any, lq: int, lk: int) -> sp.Matrix | None:
    """The spec's additive mask (0 / −∞ / finite) of one sequence from
    ``nn.MultiheadAttention``-polarity masks (bool True = masked; floats added), batch 1."""
    if attn_mask is None and key_padding_mask is None:
        return None
    total = np.zeros((lq, lk))
    for mask in (attn_mask, key_padding_mask):
        if mask is None:
            continue
        m = np.asarray(mask)  # (Lq, Lk), or (1, Lk) for the key padding of batch 1
        total = total + (np.where(m, -np.inf, 0.0) if m.dtype == np.bool_ else m)
    return sp.Matrix(
        lq, lk, lambda i, j: -sp.oo if np.isneginf(total[i, j]) else sp.Rational(float(total[i, j]))
    )


def _relu(value: sp.Expr) -> sp.Expr:
    """The spec's relu, ``Max(value, 0)``, built without SymPy's canonical ordering of the two
    arguments: that ordering counts the nodes of the argument's whole expression tree, which
    grows exponentially with a layer's depth (its graph does not)."""
    node = sp.Expr.__new__(sp.Max, value, sp.S.Zero)
    node._argset = frozenset((value, sp.S.Zero))
    return node


@contextlib.contextmanager
def _building() -> Iterator[None]:
    """SymPy builds the definition unevaluated (no term collection, no canonical ordering:
    the graph stays the definition's own), with :func:`_relu` for ``"relu"``."""
    from transpec.spec import layers as sl

    with sp.evaluate(False), mock.patch.dict(sl.ACTIVATIONS, {"relu": _relu}):
        yield


def layer_loss(
    component: str, args: Mapping[str, Any], grad_output: Any
) -> tuple[sp.Expr, dict[str, tuple[sp.Matrix, tuple[int, ...]]], dict[sp.Symbol, float]]:
    """(the loss Σ g ∘ f of layer ``component``'s SymPy definition over one symbol per input
    and parameter entry, {gradient name: (its symbols, its shape)}, {symbol: its float64
    value}) for reference arguments of batch 1, batch first (the inputs (1, L, E))."""
    leaves: dict[str, tuple[sp.Matrix, tuple[int, ...]]] = {}
    values: dict[sp.Symbol, float] = {}

    def leaf(name: str, value: Any, drop_batch: bool = False) -> sp.Matrix:
        arr = np.asarray(value, dtype=np.float64)
        shape = arr.shape
        flat = arr[0] if drop_batch else arr
        m = symbols(name, flat.shape)
        leaves[name] = (m, shape)
        values.update(zip(m, flat.ravel().tolist(), strict=True))
        return m

    for key in ("x", "query", "src", "tgt"):
        shape: tuple[int, ...] = np.shape(args[key]) if key in args else ()
        if len(shape) == 3 and (shape[0] != 1 or not args.get("batch_first", True)):
            raise ValueError("the exact layer gradient takes batch 1, batch first")
    params = {k: leaf(k, v) for k, v in args["params"].items() if v is not None}
    g = np.asarray(grad_output, dtype=np.float64)
    with _building():
        y = _definition(component, args, params, leaf)
    flat_g = g.reshape(y.shape)
    with sp.evaluate(False):
        loss = sp.Add(
            *(
                sp.Rational(float(flat_g[i, j])) * y[i, j]
                for i in range(y.rows)
                for j in range(y.cols)
            )
        )
    return loss, leaves, values


def _definition(
    component: str, args: Mapping[str, Any], params: Mapping[str, sp.Matrix], leaf: Any
) -> sp.Matrix:
    """The output of layer ``component``'s SymPy definition (:mod:`transpec.spec.layers`) on
    the symbols ``leaf(name, value, drop_batch)`` makes for its inputs."""
    from transpec.spec import layers as sl

    if component == "feed_forward":
        x = leaf("x", args["x"], drop_batch=np.ndim(args["x"]) == 3)
        y = sl.feed_forward(x, params, str(args.get("activation", "relu")))
    elif component == "swiglu_feed_forward":
        x = leaf("x", args["x"], drop_batch=np.ndim(args["x"]) == 3)
        y = sl.swiglu_feed_forward(x, params)
    elif component == "multi_head_attention":
        q, k, v = (leaf(n, args[n], drop_batch=True) for n in ("query", "key", "value"))
        mask = _additive(args.get("attn_mask"), args.get("key_padding_mask"), q.rows, k.rows)
        y = sl.multi_head_attention(q, k, v, params, int(args["num_heads"]), mask=mask)
    elif component == "multi_head_attention_weights":
        q, k = (leaf(n, args[n], drop_batch=True) for n in ("query", "key"))
        mask = _additive(args.get("attn_mask"), args.get("key_padding_mask"), q.rows, k.rows)
        heads = _weights(q, k, params, int(args["num_heads"]), mask)
        if bool(args.get("average_attn_weights", True)):
            y = sum(heads[1:], heads[0]) / len(heads)
        else:  # (H, L, S) as rows h·L + i
            y = sp.Matrix.vstack(*heads)
    elif component == "encoder_layer":
        x = leaf("src", args["src"], drop_batch=True)
        mask = _additive(args.get("src_mask"), args.get("src_key_padding_mask"), x.rows, x.rows)
        y = sl.encoder_layer(
            x,
            params,
            int(args["nhead"]),
            mask=mask,
            norm_first=bool(args.get("norm_first", False)),
            activation=str(args.get("activation", "relu")),
            eps=sp.Rational(float(args.get("layer_norm_eps", 1e-5))),
        )
    elif component == "decoder_layer":
        x = leaf("tgt", args["tgt"], drop_batch=True)
        mem = leaf("memory", args["memory"], drop_batch=True)
        y = sl.decoder_layer(
            x,
            mem,
            params,
            int(args["nhead"]),
            tgt_mask=_additive(
                args.get("tgt_mask"), args.get("tgt_key_padding_mask"), x.rows, x.rows
            ),
            memory_mask=_additive(
                args.get("memory_mask"), args.get("memory_key_padding_mask"), x.rows, mem.rows
            ),
            norm_first=bool(args.get("norm_first", False)),
            activation=str(args.get("activation", "relu")),
            eps=sp.Rational(float(args.get("layer_norm_eps", 1e-5))),
        )
    else:
        raise ValueError(f"{component} has no exact layer gradient")
    return y


def _weights(
    xq: sp.Matrix, xk: sp.Matrix, params: Mapping[str, sp.Matrix], heads: int, mask: Any
) -> list[sp.Matrix]:
    """The attention weights of every head of ``nn.MultiheadAttention`` (``need_weights=True``)
    in the terms of :func:`transpec.spec.layers.multi_head_attention`:
    P_h = softmax(α Q_h K_hᵀ + M), Q = X_q W_qᵀ + b_q, K = X_k W_kᵀ + b_k, α = D_h^(−1/2)."""
    from transpec.spec import layers as sl

    e = xq.cols
    dh = e // heads
    if "in_proj_weight" in params:
        w = params["in_proj_weight"]
        w_q, w_k = w[:e, :], w[e : 2 * e, :]
    else:
        w_q, w_k = params["q_proj_weight"], params["k_proj_weight"]
    bias = params.get("in_proj_bias")
    q = sl.linear(xq, w_q, None if bias is None else bias[:, :e])
    k = sl.linear(xk, w_k, None if bias is None else bias[:, e : 2 * e])
    alpha = sp.Integer(1) / sp.sqrt(dh)
    out = []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        s = alpha * q[:, cols] * k[:, cols].T
        out.append(sl.softmax_rows(s if mask is None else s + mask))
    return out


def layer_gradients(
    component: str, args: Mapping[str, Any], grad_output: Any, digits: int = DIGITS
) -> dict[str, np.ndarray]:
    """The exact gradient of layer ``component``'s SymPy definition with respect to every
    input and parameter of ``args`` (batch 1, batch first), rounded to float64 once, keyed by
    gradient name as the reference keys them."""
    from transpec.oracle import components

    loss, leaves, values = layer_loss(component, args, grad_output)
    grads = gradient(loss, values, digits)
    wanted = components.get(component).gradients
    return {
        name: to_array(grads, m, shape) for name, (m, shape) in leaves.items() if name in wanted
    }
