r"""The backward pass of the layers: the chain rule through the layer's own composition.

A layer (``multi_head_attention``, ``feed_forward``, ``encoder_layer``, ``decoder_layer``) is a
composition of linear maps, activations, attention heads, LayerNorms and residual additions
(:mod:`transpec.oracle.layers.tolerance` runs it forward). :class:`Chain` runs the same
composition on :class:`Node` s that remember their inputs, then walks it backwards: each step
applies its vector-Jacobian product -- the kernels' proved VJPs for attention and LayerNorm
(:mod:`transpec.oracle.gradients.reference`), the textbook ones for the rest --

==============  ============================================================================
step            VJP (ȳ the cotangent of the step's output)
==============  ============================================================================
linear          :math:`\bar x = \bar y W,\ \bar W = \textstyle\sum_{rows} \bar y^\top x,\
                \bar b = \sum_{rows} \bar y`
activation      :math:`\bar x = \phi'(x)\,\bar y` (relu: 1 where x > 0; GELU: Φ(x) + x φ(x),
                or the tanh form's derivative)
attention       the kernel's q̄, k̄, v̄ (docs/gradients.md §3) per head
LayerNorm       the kernel's x̄, w̄, b̄ (§4)
add, reshape    ȳ to both summands; the inverse reshape
==============  ============================================================================

and a node used twice (the residual input, self-attention's one input for query, key and
value) sums its cotangents. The result is the float64 gradient with respect to every array
input and every parameter in ``params`` (keyed by its ``state_dict`` name).

Each node also carries two first-order bounds: ``err``, the forward error of its value (the
forward tracker's, docs/tolerance.md "Composite layers"), and, in the backward walk, ``derr``,
the error of its cotangent. Every step adds (docs/gradients.md §8):

* its own rounding at exact inputs and an exact cotangent (attention, LayerNorm: the kernels'
  rules divided by the safety factor; linear: γ of the reduction; activation: the derivative's
  evaluation);
* the cotangent's error carried through the absolute value of the VJP (it is linear in ȳ);
* the forward error of its inputs carried through the VJP's own dependence on them (W̄ reads x,
  ȳ W does not; φ'(x) moves by |φ''|·δx; attention's P moves by the forward's score error,
  LayerNorm's ŷ and 1/σ by the LayerNorm Jacobian), with the cotangent's error added to |ȳ| so
  that the cross terms are covered;
* the rounding of every stored intermediate gradient (``u_store``) and of a sum of two
  cotangents.

The bound of a gradient is ``c·(derr + u_out·|grad|) + c·floor``, as for the kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype
from transpec.oracle.engine.error_model import SAFETY, Units, gamma
from transpec.oracle.gradients import reference as gref
from transpec.oracle.kernels.reference import Reference
from transpec.oracle.layers import reference as rl
from transpec.oracle.layers import tolerance as lt
from transpec.spec.conventions import CANONICAL, Conventions


def gradient_names(component: str) -> tuple[str, ...]:
    """Every gradient a layer can have (its record's ``gradients``): its array inputs, then
    the ``state_dict`` keys of its parameters (a key absent from a call's ``params`` has no
    gradient in that call)."""
    from transpec.oracle import components

    return components.get(component).gradients


def input_names(component: str) -> tuple[str, ...]:
    """The array inputs among a layer's gradients."""
    from transpec.oracle import components

    arrays = {a.name for a in components.get(component).arguments if a.kind == "array"}
    return tuple(n for n in gradient_names(component) if n in arrays)


@dataclass(eq=False)
class Node:
    """One value of the composition: ``value`` (float64), ``err`` (its forward error bound),
    the step that made it (``back``: cotangent, its error -> contributions to the inputs) and,
    in the backward walk, the summed cotangent ``grad`` and its error ``derr``."""

    value: FloatArray
    err: FloatArray
    inputs: tuple[Node, ...] = ()
    back: Callable[[FloatArray, FloatArray], list[tuple[FloatArray, FloatArray]]] | None = None
    grad: FloatArray | None = field(default=None, repr=False)
    derr: FloatArray | None = field(default=None, repr=False)
    uses: int = 0


def _nz(x: FloatArray) -> FloatArray:
    return np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


class Chain:
    """The layer's composition on :class:`Node` s (module docstring). ``fwd``/``bwd``: the
    forward and backward units (None: values only, every bound 0)."""

    def __init__(self, fwd: Units | None, bwd: Units | None, dtype: str) -> None:
        self.t = lt._Tracker(fwd)
        self.fwd, self.bwd, self.dtype = fwd, bwd, dtype
        self.tape: list[Node] = []

    # -- building -------------------------------------------------------------------------

    def leaf(self, value: Any) -> Node:
        v = np.asarray(value, dtype=np.float64)
        return self._push(Node(v, np.zeros_like(v)))

    def _push(self, node: Node) -> Node:
        for parent in node.inputs:
            parent.uses += 1
        self.tape.append(node)
        return node

    def _g(self, n: int) -> float:
        return 0.0 if self.bwd is None else gamma(int(n), self.bwd.acc)

    def _u(self, name: str) -> float:
        return 0.0 if self.bwd is None else float(getattr(self.bwd, name))

    def reshape(
        self, x: Node, forward: Callable[[Any], Any], inverse: Callable[[Any], Any]
    ) -> Node:
        """An exact rearrangement (heads split or merged, batch first): the inverse carries
        the cotangent and its bound back."""

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            return [(inverse(g), inverse(dg))]

        return self._push(Node(forward(x.value), forward(x.err), (x,), back))

    def rows(self, w: Node, start: int, stop: int) -> Node:
        """Rows start:stop of a parameter (the q, k, v blocks of ``in_proj_weight``)."""

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            full, dfull = np.zeros_like(w.value), np.zeros_like(w.value)
            full[start:stop], dfull[start:stop] = g, dg
            return [(full, dfull)]

        return self._push(Node(w.value[start:stop], w.err[start:stop], (w,), back))

    def linear(self, x: Node, w: Node, b: Node | None) -> Node:
        y, dy = self.t.linear(x.value, x.err, w.value, None if b is None else b.value)
        m = w.value.shape[0]

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            aw, ag = np.abs(w.value), np.abs(g)
            g2, dg2 = g.reshape(-1, m), dg.reshape(-1, m)
            x2, dx2 = x.value.reshape(g2.shape[0], -1), x.err.reshape(g2.shape[0], -1)
            rows = g2.shape[0]
            gx = np.matmul(g, w.value)
            dgx = np.matmul(dg, aw) + self._g(m) * np.matmul(ag, aw) + m * self._u("eta_acc")
            gw = np.matmul(g2.T, x2)
            ag2 = np.abs(g2) + dg2
            dgw = (
                np.matmul(dg2.T, np.abs(x2))
                + np.matmul(ag2.T, dx2)
                + self._g(rows) * np.matmul(np.abs(g2).T, np.abs(x2))
                + rows * self._u("eta_acc")
            )
            out = [(gx, dgx), (gw, dgw)]
            if b is not None:
                out.append(
                    (
                        np.sum(g2, axis=0),
                        np.sum(dg2, axis=0) + self._g(rows) * np.sum(np.abs(g2), axis=0),
                    )
                )
            return out

        return self._push(Node(y, dy, (x, w) if b is None else (x, w, b), back))

    def add(self, a: Node, b: Node) -> Node:
        y, dy = self.t.add(a.value, a.err, b.value, b.err)

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            return [(g, dg), (g, dg)]

        return self._push(Node(y, dy, (a, b), back))

    def activation(self, x: Node, name: str) -> Node:
        y, dy = self.t.activation(x.value, x.err, name)
        xv, dx = x.value, x.err

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            if name == "relu":
                gx = np.where(xv > 0, g, 0.0)
                # where |x| <= δx the implementation's x may lie on the other side of 0
                unsure = np.abs(xv) <= dx
                return [(gx, np.where(xv > -dx, dg, 0.0) + np.where(unsure, np.abs(g), 0.0))]
            slope = _activation_slope(xv, name)
            ag = np.abs(g) + dg
            own = (self._u("fn") + 4 * self._u("acc")) * (_gelu_slope_scale(xv) * np.abs(g))
            dgx = np.abs(slope) * dg + lt._GELU_CURVATURE * dx * ag + own
            return [(slope * g, dgx)]

        return self._push(Node(y, dy, (x,), back))

    def silu(self, x: Node) -> Node:
        """silu(x) = x σ(x) (SwiGLU's gate); forward bound as ``oracle/swiglu.py``'s."""
        from transpec.oracle import swiglu

        xv, dx = x.value, x.err
        y = swiglu.silu(xv)
        slope = swiglu.silu_slope(xv)  # |silu'|
        dy = np.zeros_like(y)
        if self.fwd is not None:
            un = self.fwd
            dy = (
                slope * dx
                + 0.5 * swiglu.SILU_CURVATURE * dx * dx
                + (un.fn + 3.0 * un.acc) * np.abs(xv)
                + un.store * np.abs(y)
                + un.eta_acc
                + un.eta_store
            )

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            e = np.exp(-np.abs(xv))
            sigma = np.where(xv >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            exact = sigma * (1.0 + xv * (1.0 - sigma))
            ag = np.abs(g) + dg
            own = (self._u("fn") + 4 * self._u("acc")) * (1.0 + np.abs(xv)) * np.abs(g)
            return [(exact * g, slope * dg + swiglu.SILU_CURVATURE * dx * ag + own)]

        return self._push(Node(y, dy, (x,), back))

    def multiply(self, a: Node, b: Node) -> Node:
        """The elementwise product (SwiGLU's gating): ā = ȳ ∘ b, b̄ = ȳ ∘ a."""
        y = a.value * b.value
        dy = np.zeros_like(y)
        if self.fwd is not None:
            un = self.fwd
            dy = (
                np.abs(a.value) * b.err
                + np.abs(b.value) * a.err
                + a.err * b.err
                + (un.acc + un.store) * np.abs(y)
                + un.eta_acc
                + un.eta_store
            )

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            ag = np.abs(g) + dg
            acc = self._u("acc")
            ga, gb = g * b.value, g * a.value
            return [
                (ga, dg * np.abs(b.value) + ag * b.err + acc * np.abs(ga)),
                (gb, dg * np.abs(a.value) + ag * a.err + acc * np.abs(gb)),
            ]

        return self._push(Node(y, dy, (a, b), back))

    def layer_norm(self, x: Node, w: Node, b: Node, eps: float) -> Node:
        norm = {"weight": w.value, "bias": b.value}
        y, dy = self.t.layer_norm(x.value, x.err, norm, eps)
        xv, dx = x.value, x.err

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            args = {
                "x": xv,
                "normalized_shape": (xv.shape[-1],),
                "weight": w.value,
                "bias": b.value,
                "eps": float(eps),
            }
            ref = gref.layer_norm_gradient(args, g, conventions=CANONICAL, dtype=self.dtype)
            grads = {k: np.asarray(r.value, dtype=np.float64) for k, r in ref.grads.items()}
            if self.fwd is None or self.bwd is None:
                zero = {k: np.zeros_like(v) for k, v in grads.items()}
                return [(grads[k], zero[k]) for k in ("x", "weight", "bias")]
            own = _own_bounds("layer_norm", ref, self.fwd, self.bwd)
            lead = tuple(range(xv.ndim - 1))
            mu = np.mean(xv, axis=-1, keepdims=True)
            sigma = np.sqrt(np.mean((xv - mu) ** 2, axis=-1, keepdims=True) + float(eps))
            yhat = (xv - mu) / sigma
            ay = np.abs(yhat)
            aw = np.abs(w.value)
            # the cotangent's error through |x̄'s VJP| (linear in ĝ = ȳ ∘ w)
            dgh = aw * dg

            def jac(d: FloatArray) -> FloatArray:
                """|LayerNorm's Jacobian|ᵀ applied to d (ŷ's response, per unit weight)."""
                return (
                    d
                    + np.mean(d, axis=-1, keepdims=True)
                    + ay * np.mean(ay * d, axis=-1, keepdims=True)
                ) / sigma

            from_dg = jac(dgh)
            # the input's forward error δx: ŷ moves by dŷ = J δx (|dŷ| <= e), 1/σ by ρ (relative),
            # and x̄ = J ĝ by -x̄ dσ/σ - (dŷ mean(ŷĝ) + ŷ mean(ĝ dŷ))/σ, where
            # mean(ĝ dŷ) = mean(ĝ J δx) = mean(x̄ δx) (J is symmetric); the cotangent's error
            # |w|δȳ enters the cross terms
            e = jac(dx)
            rho = np.mean(ay * dx, axis=-1, keepdims=True) / sigma
            xbar = np.abs(_nz(grads["x"]))
            along = np.abs(np.mean(_nz(g) * w.value * yhat, axis=-1, keepdims=True)) + np.mean(
                dgh * ay, axis=-1, keepdims=True
            )
            across = np.mean(xbar * dx + dgh * e, axis=-1, keepdims=True)
            from_dx = rho * (xbar + from_dg) + (e * along + ay * across) / sigma
            dxbar = own["x"] + from_dg + from_dx
            ag = np.abs(g) + dg
            dwbar = own["weight"] + np.sum(dg * ay + ag * e, axis=lead)
            dbbar = own["bias"] + np.sum(dg, axis=lead)
            return [(grads["x"], dxbar), (grads["weight"], dwbar), (grads["bias"], dbbar)]

        return self._push(Node(y, dy, (x, w, b), back))

    def attention(self, q: Node, k: Node, v: Node, mask: FloatArray | None, fmr: str) -> Node:
        """Heads (B, H, L, Dh): O = softmax(Q Kᵀ/√Dh + M) V (M additive, -inf masked)."""
        o, do = self.t.attention(q.value, q.err, k.value, k.err, v.value, v.err, mask, fmr)
        scale = 1.0 / math.sqrt(q.value.shape[-1])

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            args = {"q": q.value, "k": k.value, "v": v.value, "attn_mask": mask, "scale": scale}
            conv = Conventions(fully_masked_row="nan" if fmr == "nan" else "zero")
            with np.errstate(invalid="ignore", over="ignore"):
                ref = gref.attention_gradient(args, g, conventions=conv, dtype=self.dtype)
            grads = [np.asarray(ref.grads[n].value, dtype=np.float64) for n in ("q", "k", "v")]
            if self.fwd is None or self.bwd is None:
                return [(gr, np.zeros_like(gr)) for gr in grads]
            own = _own_bounds("attention", ref, self.fwd, self.bwd)
            with np.errstate(invalid="ignore", over="ignore"):
                bounds = _attention_propagation(
                    ref.context["p"], q, k, v, _nz(g), dg, scale, self.t
                )
            return [
                (gr, _nz(own[n]) + bounds[n]) for gr, n in zip(grads, ("q", "k", "v"), strict=True)
            ]

        return self._push(Node(o, do, (q, k, v), back))

    def attention_weights(self, q: Node, k: Node, mask: FloatArray | None, fmr: str) -> Node:
        """Heads (B, H, L, Dh): P = softmax(Q Kᵀ/√Dh + M), the weights themselves (the output of
        ``multi_head_attention_weights``). Backward (the proved softmax VJP and the score
        products): D = rowsum(P ∘ P̄), S̄ = P ∘ (P̄ − D), Q̄ = α S̄ K, K̄ = α S̄ᵀ Q. Bound
        (docs/gradients.md §9): the weights' error e (the forward tracker's, own rounding and
        the propagated error of Q and K, under the worse of the forward and backward units)
        carried through D and S̄ as in the softmax rule (§2), then through the products as in
        the attention rule (§3), with the cotangent's error and Q's and K's forward error."""
        w, dw = self.t.weights(q.value, q.err, k.value, k.err, mask, fmr)
        scale = 1.0 / math.sqrt(q.value.shape[-1])
        e_w = dw
        if self.fwd is not None and self.bwd is not None:
            from transpec.oracle.gradients.tolerance import worse

            _, e_w = lt._Tracker(worse(self.fwd, self.bwd)).weights(
                q.value, q.err, k.value, k.err, mask, fmr
            )

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            qv, kv = q.value, k.value
            tr = np.swapaxes
            with np.errstate(invalid="ignore", over="ignore"):
                d = np.sum(w * g, axis=-1, keepdims=True)
                ds = w * (g - d)
                gq = scale * np.matmul(ds, kv)
                gk = scale * np.matmul(tr(ds, -1, -2), qv)
            if self.fwd is None or self.bwd is None:
                return [(gq, np.zeros_like(gq)), (gk, np.zeros_like(gk))]
            bwd = self.bwd
            p, e = _nz(w), _nz(e_w)
            ag, agp = np.abs(_nz(g)), np.abs(_nz(g)) + dg
            lq, lk = p.shape[-2], p.shape[-1]
            a = np.sum(p * agp, axis=-1, keepdims=True)  # bounds |D| (with the cotangent's error)
            err_d = np.sum(e * agp + p * dg, axis=-1, keepdims=True) + (
                self._g(lk) + bwd.acc
            ) * np.sum(p * ag, axis=-1, keepdims=True)
            err_s = e * (agp + a) + p * (dg + err_d + 2.0 * bwd.acc * (ag + a))
            big_s = p * (ag + a)  # bounds |S̄|
            floor_s = (bwd.eta_acc + bwd.eta_store) * (1.0 + ag + a)
            aq, ak = np.abs(_nz(qv)), np.abs(_nz(kv))
            rnd_q = self._g(lk) + 2.0 * bwd.acc + bwd.store
            rnd_k = self._g(lq) + 2.0 * bwd.acc + bwd.store
            reach = big_s + err_s
            dgq = scale * (
                np.matmul(err_s + floor_s, ak)
                + rnd_q * np.matmul(big_s, ak)
                + np.matmul(reach, k.err)
            )
            dgk = scale * (
                np.matmul(tr(err_s + floor_s, -1, -2), aq)
                + rnd_k * np.matmul(tr(big_s, -1, -2), aq)
                + np.matmul(tr(reach, -1, -2), q.err)
            )
            return [(gq, dgq), (gk, dgk)]

        return self._push(Node(w, dw, (q, k), back))

    def mean_heads(self, x: Node) -> Node:
        """The mean over the heads (axis 1, as ``average_attn_weights``): each head's cotangent
        is ȳ/H (the division rounds once)."""
        heads = x.value.shape[1]
        y = np.mean(x.value, axis=1)
        dy = np.mean(x.err, axis=1)
        if self.fwd is not None:
            dy = dy + (gamma(heads, self.fwd.acc) + self.fwd.acc + self.fwd.store) * np.abs(_nz(y))

        def back(g: FloatArray, dg: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
            share = np.repeat(g[:, None] / heads, heads, axis=1)
            err = (dg + self._u("acc") * np.abs(_nz(g))) / heads
            return [(share, np.repeat(err[:, None], heads, axis=1))]

        return self._push(Node(y, dy, (x,), back))

    # -- the backward walk ------------------------------------------------------------------

    def backward(self, out: Node, g: FloatArray) -> None:
        """Every node's summed cotangent and its error bound, for the cotangent ``g`` of
        ``out``."""
        out.grad, out.derr = np.asarray(g, dtype=np.float64), np.zeros_like(g)
        store = self._u("store")
        for node in reversed(self.tape):
            if node.grad is None or node.back is None:
                continue
            assert node.derr is not None
            with np.errstate(invalid="ignore", over="ignore"):
                parts = node.back(node.grad, node.derr)
            for parent, (gp, dgp) in zip(node.inputs, parts, strict=True):
                gp = np.asarray(gp, dtype=np.float64)
                if parent.grad is None:
                    parent.grad, parent.derr = gp, dgp + store * np.abs(_nz(gp))
                else:  # a second use: the two cotangents are added and the sum stored
                    assert parent.derr is not None
                    parent.grad = parent.grad + gp
                    parent.derr = parent.derr + dgp + store * np.abs(_nz(parent.grad))


def _activation_slope(x: FloatArray, name: str) -> FloatArray:
    """φ'(x) of GELU (exact: Φ(x) + x·φ(x); tanh form: its derivative)."""
    if name == "gelu_tanh":
        a = math.sqrt(2.0 / math.pi)
        t = np.tanh(a * (x + 0.044715 * x**3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * a * (1.0 + 3 * 0.044715 * x * x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + rl._erf(x / math.sqrt(2.0)))
    return cdf + x * pdf


def _gelu_slope_scale(x: FloatArray) -> FloatArray:
    """The magnitude of φ''s terms, Φ(x) + |x|·φ(x) + 1 (the tanh form's are no larger): the
    scale its evaluation's rounding is relative to."""
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return 1.0 + np.abs(x) * pdf + 0.5 * (1.0 + np.abs(x))


def _own_bounds(
    component: str, ref: gref.GradientReference, fwd: Units, bwd: Units
) -> dict[str, FloatArray]:
    """A kernel's gradient bounds at exact inputs and cotangent (its rule), without the
    safety factor, which the layer applies once."""
    from transpec.oracle import components

    rule = components.get(component).hook("vjp_rule")
    rules = rule(ref, fwd, bwd)
    out = {}
    for name, (bound, _, _) in rules.items():
        value = ref.grads[name].value
        out[name] = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.shape(value)) / SAFETY
    return out


def _attention_propagation(
    p: FloatArray,
    q: Node,
    k: Node,
    v: Node,
    g: FloatArray,
    dg: FloatArray,
    scale: float,
    t: lt._Tracker,
) -> dict[str, FloatArray]:
    """The error of q̄, k̄, v̄ from the cotangent's error ``dg`` and the forward error of Q, K,
    V (docs/gradients.md §8, "Attention, step by step"): P moves by E_P = P(δs + s̄)·amp (the
    forward's score error δs, as the forward tracker) and still sums to 1, O by
    E_P|V| + (P + E_P)δV; c = dP − D = Ō_i·(V_j − O_i) moves by the cotangent's error through
    the spread |V_j − O_i|, by δV, and by Σ_k E_P,ik |c_ik| through D; dS = P ∘ c by
    E_P|c| + (P + E_P)δc; dQ = α dS K (rows of dS sum to 0, so K may be centred on the row's
    mean key), dK = α dSᵀ Q and dV = Pᵀ Ō each carry the errors of what they read."""
    p = np.nan_to_num(p, nan=0.0)
    qv, kv, vv = _nz(q.value), _nz(k.value), _nz(v.value)
    dq, dk, dv = q.err, k.err, v.err
    aq, ak, av = np.abs(qv), np.abs(kv), np.abs(vv)
    tr = np.swapaxes
    ds_fwd = scale * (
        np.matmul(dq, tr(ak, -1, -2))
        + np.matmul(aq, tr(dk, -1, -2))
        + np.matmul(dq, tr(dk, -1, -2))
    )
    ds_fwd = np.where(p > 0, ds_fwd, 0.0)
    sbar = np.sum(p * ds_fwd, axis=-1, keepdims=True)
    amp = lt._exp_amplification(2.0 * np.max(ds_fwd, axis=-1, keepdims=True)) if p.size else 1.0
    e_p = p * (ds_fwd + sbar) * amp
    o = np.matmul(p, vv)
    ag = np.abs(g) + dg
    dp = np.matmul(g, tr(vv, -1, -2))
    d = np.sum(g * o, axis=-1, keepdims=True)
    c = dp - d  # dS = P ∘ c, c_ij = Ō_i·(V_j − O_i)
    dsc = p * c
    # O' − O = ΔP V + (P + ΔP) ΔV
    err_o = np.matmul(e_p, av) + np.matmul(p + e_p, dv)
    # c' − c, exactly: ΔŌ_i·(V'_j − O'_i) + Ō_i·ΔV_j − Σ_k P'_ik Ō_i·ΔV_k − Σ_k ΔP_ik c_ik
    # (D' = Σ_k P'_ik dP'_ik and Σ_k ΔP_ik = 0: P' sums to 1 like P)
    spread = np.abs(vv[..., None, :, :] - o[..., :, None, :])  # |V_j − O_i|, (..., L, S, Dh)
    from_dg = np.einsum("...le,...lse->...ls", dg, spread) + np.matmul(dg, tr(dv, -1, -2))
    from_dg = from_dg + np.sum(dg * err_o, axis=-1, keepdims=True)
    from_dv = np.matmul(np.abs(g), tr(dv, -1, -2))
    err_c = (
        from_dg
        + from_dv
        + np.sum((p + e_p) * from_dv, axis=-1, keepdims=True)
        + np.sum(e_p * np.abs(c), axis=-1, keepdims=True)
    )
    # dS' − dS = ΔP c' + P Δc
    err_ds = e_p * np.abs(c) + (p + e_p) * err_c
    ads = np.abs(dsc) + err_ds
    # rows of dS and of dS' sum to 0, so ΔQ̄_i = α Σ_j ΔdS_ij (K_j − K̂_i) for any K̂_i: K̂_i = 0,
    # or the row's mean key Σ_j P_ij K_j, whichever bounds it lower
    centred = np.abs(kv[..., None, :, :] - np.matmul(p, kv)[..., :, None, :])
    bq = scale * (
        np.minimum(np.matmul(err_ds, ak), np.einsum("...ls,...lse->...le", err_ds, centred))
        + np.matmul(ads, dk)
    )
    bk = scale * (np.matmul(tr(err_ds, -1, -2), aq) + np.matmul(tr(ads, -1, -2), dq))
    bv = np.matmul(tr(p, -1, -2), dg) + np.matmul(tr(e_p, -1, -2), ag)
    return {"q": bq, "k": bk, "v": bv}


# -- the layers ------------------------------------------------------------------------------


def _mha(
    c: Chain,
    xq: Node,
    xk: Node,
    xv: Node,
    params: Mapping[str, Node],
    prefix: str,
    num_heads: int,
    mask: FloatArray | None,
    fmr: str,
    *,
    weights_only: bool = False,
    average_heads: bool = True,
) -> Node:
    """nn.MultiheadAttention on batch-first (B, L, E) nodes; ``params`` keyed with ``prefix``.
    ``weights_only``: its attention weights instead (``need_weights=True``; V is not
    projected), averaged over the heads with ``average_heads``."""
    e = xq.value.shape[-1]
    h = int(num_heads)
    if h < 1 or e % h:
        raise ValueError(f"embed_dim {e} is not divisible by num_heads {num_heads}")
    for extra in ("bias_k", "bias_v"):
        if params.get(prefix + extra) is not None:
            raise ValueError(f"the layer backward does not take {extra}")
    if prefix + "in_proj_weight" in params:
        w_in = params[prefix + "in_proj_weight"]
        ws = [c.rows(w_in, i * e, (i + 1) * e) for i in range(3)]
    else:
        ws = [params[f"{prefix}{n}_proj_weight"] for n in "qkv"]
    b_in = params.get(prefix + "in_proj_bias")
    heads = []
    for i, x in enumerate((xq, xk, xv)[:2] if weights_only else (xq, xk, xv)):
        b = None if b_in is None else c.rows(b_in, i * e, (i + 1) * e)
        y = c.linear(x, ws[i], b)
        heads.append(
            c.reshape(
                y,
                lambda a: rl.split_heads(a, h),
                rl.merge_heads,
            )
        )
    if weights_only:  # the weights of every head (B, H, L, S), or their mean over the heads
        w = c.attention_weights(heads[0], heads[1], mask, fmr)
        return c.mean_heads(w) if average_heads else w
    o = c.attention(heads[0], heads[1], heads[2], mask, fmr)
    merged = c.reshape(o, rl.merge_heads, lambda a: rl.split_heads(a, h))
    return c.linear(
        merged, params[prefix + "out_proj.weight"], params.get(prefix + "out_proj.bias")
    )


def _ffn(c: Chain, x: Node, params: Mapping[str, Node], activation: str) -> Node:
    hidden = c.linear(x, params["linear1.weight"], params.get("linear1.bias"))
    return c.linear(
        c.activation(hidden, activation), params["linear2.weight"], params.get("linear2.bias")
    )


def _sublayer(
    c: Chain,
    x: Node,
    f: Callable[[Node], Node],
    params: Mapping[str, Node],
    norm: str,
    eps: float,
    norm_first: bool,
) -> Node:
    w, b = params[f"{norm}.weight"], params[f"{norm}.bias"]
    if norm_first:
        return c.add(x, f(c.layer_norm(x, w, b, eps)))
    return c.layer_norm(c.add(x, f(x)), w, b, eps)


def _batch_first(c: Chain, x: Node, batch_first: bool) -> Node:
    if x.value.ndim != 3:
        raise ValueError(f"expected a 3-D input (B, L, E) or (L, B, E), got shape {x.value.shape}")
    if batch_first:
        return x
    swap = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))  # noqa: E731
    return c.reshape(x, swap, swap)


def _build(
    c: Chain, component: str, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[Node, dict[str, Node]]:
    """The layer's output node and its leaves (inputs and parameters) by gradient name."""
    from transpec.oracle.gradients.properties import FINITE_FILL_UNDERIVED

    if sem.get("mask_fill", "none") != "none" and component in FINITE_FILL_UNDERIVED:
        raise ValueError("the layer backward is derived for masked scores of -inf only")
    raw = args["params"]
    params = {k: c.leaf(v) for k, v in raw.items() if v is not None}
    leaves: dict[str, Node] = {}
    bf = bool(args.get("batch_first", True))
    if component == "feed_forward":
        leaves["x"] = c.leaf(args["x"])
        out = _ffn(c, leaves["x"], params, sem["activation"])
        return out, {**leaves, **params}
    if component == "swiglu_feed_forward":
        leaves["x"] = c.leaf(args["x"])
        x = leaves["x"]
        gate = c.silu(c.linear(x, params["w1.weight"], None))
        out = c.linear(
            c.multiply(gate, c.linear(x, params["w3.weight"], None)), params["w2.weight"], None
        )
        return out, {**leaves, **params}
    if component in ("multi_head_attention", "multi_head_attention_weights"):
        for name in ("query", "key", "value"):
            leaves[name] = c.leaf(args[name])
        q, k, v = (_batch_first(c, leaves[n], bf) for n in ("query", "key", "value"))
        mask = lt._combined_mask(
            args.get("attn_mask"),
            args.get("key_padding_mask"),
            q.value.shape[0],
            q.value.shape[1],
            k.value.shape[1],
        )
        fmr = sem["fully_masked_row"]
        if component == "multi_head_attention_weights":
            # the weights are batch first whatever batch_first says (as torch returns them)
            average = bool(args.get("average_attn_weights", True))
            out = _mha(
                c,
                q,
                k,
                v,
                params,
                "",
                args["num_heads"],
                mask,
                fmr,
                weights_only=True,
                average_heads=average,
            )
            return out, {**leaves, **params}
        out = _mha(c, q, k, v, params, "", args["num_heads"], mask, fmr)
        return _batch_first(c, out, bf), {**leaves, **params}
    eps = float(args.get("layer_norm_eps", 1e-5))
    nf = bool(args.get("norm_first", False))
    heads = int(args["nhead"])
    act = sem["activation"]
    if component == "encoder_layer":
        leaves["src"] = c.leaf(args["src"])
        x = _batch_first(c, leaves["src"], bf)
        b, length = x.value.shape[:2]
        src_mask = args.get("src_mask")
        if (
            sem["float_attn_mask"] == "nonzero_is_masked"
            and src_mask is not None
            and np.asarray(src_mask).dtype != np.bool_
        ):
            src_mask = np.asarray(src_mask) != 0
        mask = lt._combined_mask(src_mask, args.get("src_key_padding_mask"), b, length, length)
        fmr = sem["fully_masked_row"]
        y = _sublayer(
            c,
            x,
            lambda n: _mha(c, n, n, n, params, "self_attn.", heads, mask, fmr),
            params,
            "norm1",
            eps,
            nf,
        )
        y = _sublayer(c, y, lambda n: _ffn(c, n, params, act), params, "norm2", eps, nf)
        return _batch_first(c, y, bf), {**leaves, **params}
    if component == "decoder_layer":
        leaves["tgt"], leaves["memory"] = c.leaf(args["tgt"]), c.leaf(args["memory"])
        x = _batch_first(c, leaves["tgt"], bf)
        mem = _batch_first(c, leaves["memory"], bf)
        b, lt_, ls = x.value.shape[0], x.value.shape[1], mem.value.shape[1]
        self_mask = lt._combined_mask(
            args.get("tgt_mask"), args.get("tgt_key_padding_mask"), b, lt_, lt_
        )
        cross_mask = lt._combined_mask(
            args.get("memory_mask"), args.get("memory_key_padding_mask"), b, lt_, ls
        )
        fmr, cfmr = sem["fully_masked_row"], sem["cross_fully_masked_row"]
        y = _sublayer(
            c,
            x,
            lambda n: _mha(c, n, n, n, params, "self_attn.", heads, self_mask, fmr),
            params,
            "norm1",
            eps,
            nf,
        )
        y = _sublayer(
            c,
            y,
            lambda n: _mha(c, n, mem, mem, params, "multihead_attn.", heads, cross_mask, cfmr),
            params,
            "norm2",
            eps,
            nf,
        )
        y = _sublayer(c, y, lambda n: _ffn(c, n, params, act), params, "norm3", eps, nf)
        return _batch_first(c, y, bf), {**leaves, **params}
    raise ValueError(f"{component} has no layer backward")


def run(
    component: str,
    args: Mapping[str, Any],
    grad_output: Any,
    sem: Mapping[str, str],
    fwd: Units | None,
    bwd: Units | None,
    dtype: str,
) -> tuple[FloatArray, dict[str, tuple[FloatArray, FloatArray]]]:
    """(the output, {gradient name: (gradient, its first-order error bound)}) of one layer
    backward under the units ``fwd``/``bwd`` (None: the bounds are 0)."""
    c = Chain(fwd, bwd, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        out, leaves = _build(c, component, args, sem)
        g = np.asarray(grad_output, dtype=np.float64)
        if g.shape != out.value.shape:
            raise ValueError(
                f"{component}: grad_output has shape {list(g.shape)}, expected the output's "
                f"{list(out.value.shape)}"
            )
        c.backward(out, g)
    grads = {}
    for name, node in leaves.items():
        if node.grad is None:
            grads[name] = (np.zeros_like(node.value), np.zeros_like(node.value))
        else:
            assert node.derr is not None
            grads[name] = (node.grad, node.derr)
    return out.value, grads


def layer_gradient(component: str) -> Callable[..., gref.GradientReference]:
    """The ``"vjp_reference"`` hook of layer ``component``."""

    def compute(
        args: Mapping[str, Any],
        grad_output: Any,
        *,
        conventions: Conventions = CANONICAL,
        dtype: str = "float64",
        semantics: Mapping[str, str] | None = None,
    ) -> gref.GradientReference:
        sem = lt._semantics(component, args, conventions, semantics)
        value, grads = run(component, args, grad_output, sem, None, None, canonical_dtype(dtype))
        refs = {
            name: Reference(g, np.abs(np.nan_to_num(g)))
            for name, (g, _) in grads.items()
            if name in gradient_names(component)
        }
        forward = Reference(value, np.abs(np.nan_to_num(value)))
        context = {
            "args": dict(args),
            "sem": sem,
            "dtype": canonical_dtype(dtype),
            "grad_output": np.asarray(grad_output, dtype=np.float64),
        }
        return gref.GradientReference(component, refs, forward, context)

    return compute


def layer_rules(
    ref: gref.GradientReference, fwd: Units, bwd: Units
) -> dict[str, tuple[FloatArray, dict[str, FloatArray], str]]:
    """The ``"vjp_rule"`` hook of the layers: the chain run again with the units, each
    gradient's bound ``c·(derr + u_out·|grad|) + c·(floor)`` (module docstring)."""
    ctx = ref.context
    _, grads = run(ref.component, ctx["args"], _grad_of(ref), ctx["sem"], fwd, bwd, ctx["dtype"])
    out = {}
    for name in ref.grads:
        g, derr = grads[name]
        internal = np.nan_to_num(derr, nan=np.inf)
        bound = SAFETY * (internal + bwd.out * np.abs(np.nan_to_num(g))) + SAFETY * (
            bwd.eta_out + bwd.eta_acc + bwd.eta_store
        )
        out[name] = (
            bound,
            {"propagated": internal},
            f"{ref.component} backward: the chain rule through the layer, each step's rounding "
            "and the propagated forward and cotangent errors (docs/gradients.md §8)",
        )
    return out


def _grad_of(ref: gref.GradientReference) -> FloatArray:
    g = ref.context.get("grad_output")
    if g is None:
        raise ValueError("layer gradient reference without its cotangent")
    return np.asarray(g, dtype=np.float64)


#: the ``"vjp_reference"`` hooks of the layer records
multi_head_attention_gradient = layer_gradient("multi_head_attention")
multi_head_attention_weights_gradient = layer_gradient("multi_head_attention_weights")
feed_forward_gradient = layer_gradient("feed_forward")
swiglu_feed_forward_gradient = layer_gradient("swiglu_feed_forward")
encoder_layer_gradient = layer_gradient("encoder_layer")
decoder_layer_gradient = layer_gradient("decoder_layer")
