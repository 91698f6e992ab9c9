r"""The backward pass of every kernel, derived from its SymPy definition and proved.

Each identity differentiates the loss :math:`L = \sum g \circ f(\cdot)` built from the block's
definition (:mod:`transpec.spec.nodes`: ``RowSoftmax``, ``LayerNormRows``, ``RMSNormRows``,
``ApplyKeep``, ``Softcap``) with ``sympy.diff`` and checks the closed form the oracle's backward
reference (:mod:`transpec.oracle.gradients.vjp`) computes, with the decision procedure of
:mod:`transpec.spec.proofs` (:func:`~transpec.spec.proofs.decide`): softmax for every row length
N (symbolic sums) and entry by entry at N = 3; attention, LayerNorm and RMSNorm entry by entry at
small sizes, with symbolic scale, eps, softcap, mask entries and cotangent. The gradient
identities that follow from the proved invariances (row sums 0, orthogonality to x, causal and
masked-key zeros, GQA group sums) are proved the same way. Every proof has a negative control: a
wrong backward (a missing term, the wrong transpose, no group sum, ...) that the same procedure
rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from transpec.spec.nodes import ApplyKeep, CausalKeep, LayerNormRows, RMSNormRows, RowSoftmax
from transpec.spec.proofs import Claim, Proof, _softmax_entry

__all__ = ["BACKWARD_PROOFS", "backward_proofs"]

N = sp.Symbol("N", integer=True, positive=True)
i, j, k = sp.symbols("i j k", integer=True, nonnegative=True)
xs = sp.IndexedBase("x", real=True)
gs = sp.IndexedBase("g", real=True)
alpha = sp.Symbol("alpha", real=True)
cap = sp.Symbol("c", positive=True)
eps = sp.Symbol("epsilon", positive=True)


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda r, c: sp.Symbol(f"{name}_{r}{c}", real=True))


def _grad(loss: Any, m: sp.Matrix) -> sp.Matrix:
    return m.applyfunc(lambda e: sp.diff(loss, e))


def _entrywise(lhs: sp.Matrix, rhs: sp.Matrix, name: str, why: str) -> list[Claim]:
    return [
        Claim(lhs[r, c], rhs[r, c], why, f"{name}_{{{r}{c}}}")
        for r in range(lhs.rows)
        for c in range(lhs.cols)
    ]


def _loss(g: sp.Matrix, out: sp.Matrix) -> Any:
    return sum(g[t] * out[t] for t in range(len(out)))


# -- softmax ------------------------------------------------------------------------------------


def _softmax_vjp_steps(broken: bool = False) -> list[Claim]:
    p_i, p_j = _softmax_entry(i), _softmax_entry(j)
    loss = sp.Sum(gs[i] * p_i, (i, 0, N - 1))
    d = sp.Sum(gs[k] * _softmax_entry(k), (k, 0, N - 1))
    want = p_j * (gs[j] - (0 if broken else d))
    claims = [Claim(sp.diff(loss, xs[j]), want, "p_j (g_j - <g, p>), for every N", r"\bar x_j")]
    n = 3
    x = _matrix("x", 1, n)
    g = _matrix("g", 1, n)
    p = RowSoftmax(sp.ImmutableMatrix(x)).as_explicit()
    dot = sum(g[t] * p[t] for t in range(n))
    closed = sp.Matrix(1, n, lambda _, t: p[t] * (g[t] - (0 if broken else dot)))
    claims += _entrywise(_grad(_loss(g, p), x), closed, r"\bar x", "N = 3")
    return claims


def _softmax_row_sum_steps(broken: bool = False) -> list[Claim]:
    p_j = _softmax_entry(j)
    d = sp.Sum(gs[k] * _softmax_entry(k), (k, 0, N - 1))
    vjp = p_j * (gs[j] - (0 if broken else d))
    return [
        Claim(sp.Sum(vjp, (j, 0, N - 1)), 0, "shift invariance: for every N", r"\sum_j \bar x_j")
    ]


# -- attention ----------------------------------------------------------------------------------

LQ, LK, E, EV = 2, 3, 1, 1


def _attention_parts(*, softcap: bool = False, keep: sp.Matrix | None = None) -> dict[str, Any]:
    q, kk, v = _matrix("q", LQ, E), _matrix("k", LK, E), _matrix("v", LK, EV)
    a, g = _matrix("a", LQ, LK), _matrix("g", LQ, EV)
    s = alpha * q * kk.T
    capped = s.applyfunc(lambda e: cap * sp.tanh(e / cap)) if softcap else s
    t = capped + a
    if keep is not None:
        t = ApplyKeep(sp.ImmutableMatrix(t), sp.ImmutableMatrix(keep), -sp.oo).as_explicit()
    p = RowSoftmax(sp.ImmutableMatrix(t)).as_explicit()
    o = p * v
    return {"q": q, "k": kk, "v": v, "a": a, "g": g, "s": s, "p": p, "o": o, "loss": _loss(g, o)}


def _flash_ds(parts: dict[str, Any], broken: bool = False) -> sp.Matrix:
    """dT = P ∘ (dP − D), dP = Ō Vᵀ, D = rowsum(Ō ∘ O)."""
    p, g, v, o = parts["p"], parts["g"], parts["v"], parts["o"]
    dp = g * v.T
    d = [0 if broken else sum(g[r, c] * o[r, c] for c in range(EV)) for r in range(LQ)]
    return sp.Matrix(LQ, LK, lambda r, c: p[r, c] * (dp[r, c] - d[r]))


def _attention_vjp_steps(broken: bool = False) -> list[Claim]:
    parts = _attention_parts()
    loss, p, g = parts["loss"], parts["p"], parts["g"]
    ds = _flash_ds(parts, broken)
    d_rows = [sum(g[r, c] * parts["o"][r, c] for c in range(EV)) for r in range(LQ)]
    dp = g * parts["v"].T
    claims = [
        Claim(
            d_rows[r],
            sum(p[r, c] * dp[r, c] for c in range(LK)),
            "D_i = rowsum(dO∘O) = Σ_j P_ij dP_ij",
            f"D_{r}",
        )
        for r in range(LQ)
    ]
    claims += _entrywise(_grad(loss, parts["v"]), p.T * g, r"\bar V", "dV = Pᵀ dO")
    claims += _entrywise(
        _grad(loss, parts["a"]), ds, r"\bar A", "dT = P∘(dP − D): the additive mask's gradient"
    )
    claims += _entrywise(_grad(loss, parts["q"]), alpha * ds * parts["k"], r"\bar Q", "α dS K")
    claims += _entrywise(_grad(loss, parts["k"]), alpha * ds.T * parts["q"], r"\bar K", "α dSᵀ Q")
    return claims


def _attention_dk_transpose_steps(broken: bool = False) -> list[Claim]:
    """dK from dSᵀ (not from Pᵀ, not dS)."""
    parts = _attention_parts()
    ds = _flash_ds(parts)
    wrong = (parts["p"].T * parts["g"]).applyfunc(lambda e: alpha * e)  # P in place of dS
    want = wrong if broken else alpha * ds.T * parts["q"]
    return _entrywise(_grad(parts["loss"], parts["k"]), want, r"\bar K", "α dSᵀ Q")


def _softcap_steps(broken: bool = False) -> list[Claim]:
    parts = _attention_parts(softcap=True)
    ds = _flash_ds(parts)
    th = parts["s"].applyfunc(lambda e: sp.tanh(e / cap))
    factor = th.applyfunc(lambda t: 1 if broken else 1 - t**2)
    ds_raw = sp.Matrix(LQ, LK, lambda r, c: ds[r, c] * factor[r, c])
    claims = _entrywise(
        _grad(parts["loss"], parts["a"]),
        ds,
        r"\bar A",
        "the mask is added after the cap: its gradient is dT",
    )
    claims += _entrywise(
        _grad(parts["loss"], parts["q"]),
        alpha * ds_raw * parts["k"],
        r"\bar Q",
        "α (dT ∘ (1 − tanh²(S/c))) K",
    )
    return claims


def _gqa_steps(broken: bool = False) -> list[Claim]:
    """Two query heads reading one kv head: dK, dV are the sums of the heads' gradients."""
    q0, q1 = _matrix("q", LQ, E), _matrix("r", LQ, E)
    kk, v = _matrix("k", LK, E), _matrix("v", LK, EV)
    g0, g1 = _matrix("g", LQ, EV), _matrix("h", LQ, EV)
    heads = []
    for q, g in ((q0, g0), (q1, g1)):
        p = RowSoftmax(sp.ImmutableMatrix(alpha * q * kk.T)).as_explicit()
        o = p * v
        parts = {"p": p, "g": g, "v": v, "o": o}
        heads.append((p, _flash_ds(parts), q, g))
    loss = sum(_loss(g, p * v) for p, _, _, g in heads)
    used = heads[:1] if broken else heads
    dk = sum((alpha * ds.T * q for _, ds, q, _ in used), sp.zeros(LK, E))
    dv = sum((p.T * g for p, _, _, g in used), sp.zeros(LK, EV))
    claims = _entrywise(_grad(loss, v), dv, r"\bar V", "Σ over the group of P_hᵀ dO_h")
    if broken:  # the value gradients alone reject it (the key ones would take ~40 s)
        return claims
    return claims + _entrywise(_grad(loss, kk), dk, r"\bar K", "Σ over the group of α dS_hᵀ Q_h")


def _masked_keys_steps(broken: bool = False) -> list[Claim]:
    keep = sp.Matrix([[1, 0, 1], [1, 0, 0]])  # key 1 masked for every query
    parts = _attention_parts(keep=keep if not broken else sp.ones(LQ, LK))
    claims = []
    for name in ("k", "v"):
        grad = _grad(parts["loss"], parts[name])
        claims += [
            Claim(grad[1, c], 0, "a key no query sees", rf"\bar {name.upper()}_{{1{c}}}")
            for c in range(grad.cols)
        ]
    grad_a = _grad(parts["loss"], parts["a"])
    claims += [
        Claim(grad_a[r, c], 0, "a masked entry of the additive mask", rf"\bar A_{{{r}{c}}}")
        for r in range(LQ)
        for c in range(LK)
        if keep[r, c] == 0
    ]
    return claims


def _causal_steps(broken: bool = False) -> list[Claim]:
    """∂L/∂k_j and ∂L/∂v_j equal those of the loss over queries i >= j only (top-left)."""
    mask = CausalKeep(3, 3, False)
    keep = sp.Matrix(3, 3, lambda r, c: 1 if broken else int(mask._entry(r, c) is sp.true))
    q, kk, v = _matrix("q", 3, 1), _matrix("k", 3, 1), _matrix("v", 3, 1)
    g = _matrix("g", 3, 1)
    t = ApplyKeep(sp.ImmutableMatrix(alpha * q * kk.T), sp.ImmutableMatrix(keep), -sp.oo)
    o = RowSoftmax(t).as_explicit() * v
    claims = []
    for col in range(3):
        later = sum(g[r] * o[r] for r in range(col, 3))
        for name, m in (("k", kk), ("v", v)):
            claims.append(
                Claim(
                    sp.diff(_loss(g, o), m[col]),
                    sp.diff(later, m[col]),
                    f"queries before {col} contribute nothing",
                    rf"\bar {name}_{col}",
                )
            )
    return claims


# -- norms --------------------------------------------------------------------------------------

NN = 3


def _norm_parts(centered: bool, e: Any) -> dict[str, Any]:
    x, w, b, g = (_matrix(n, 1, NN) for n in ("x", "w", "b", "g"))
    node = (
        LayerNormRows(sp.ImmutableMatrix(x), e, False, True)
        if centered
        else RMSNormRows(sp.ImmutableMatrix(x), e, True)
    )
    yhat = node.as_explicit()
    y = sp.Matrix(1, NN, lambda _, c: yhat[c] * w[c] + (b[c] if centered else 0))
    denom = node.denominator(0)
    return {"x": x, "w": w, "b": b, "g": g, "yhat": yhat, "denom": denom, "loss": _loss(g, y)}


def _norm_dx(
    parts: dict[str, Any], centered: bool, *, mean: bool = True, projection: bool = True
) -> sp.Matrix:
    g, w, yhat, denom = parts["g"], parts["w"], parts["yhat"], parts["denom"]
    gh = [g[c] * w[c] for c in range(NN)]
    m1 = sum(gh) / NN if centered and mean else 0
    m2 = sum(gh[c] * yhat[c] for c in range(NN)) / NN if projection else 0
    return sp.Matrix(1, NN, lambda _, c: (gh[c] - m1 - yhat[c] * m2) / denom)


def _norm_vjp_steps(centered: bool, broken: bool = False) -> list[Claim]:
    parts = _norm_parts(centered, eps)
    dx = _norm_dx(
        parts, centered, mean=not (broken and centered), projection=not (broken and not centered)
    )
    claims = _entrywise(_grad(parts["loss"], parts["x"]), dx, r"\bar x", "N = 3, every eps")
    dw = sp.Matrix(1, NN, lambda _, c: parts["g"][c] * parts["yhat"][c])
    claims += _entrywise(_grad(parts["loss"], parts["w"]), dw, r"\bar w", "g ∘ ŷ")
    if centered:
        claims += _entrywise(_grad(parts["loss"], parts["b"]), parts["g"], r"\bar b", "g")
    return claims


def _norm_invariance_steps(centered: bool, broken: bool = False) -> list[Claim]:
    parts = _norm_parts(centered, 0 if not broken else eps)
    dx = _norm_dx(parts, centered)
    x = parts["x"]
    claims = []
    if centered:
        claims.append(Claim(sum(dx), 0, "shift invariance: Σ ŷ = 0", r"\sum_j \bar x_j"))
    claims.append(
        Claim(
            sum(dx[c] * x[c] for c in range(NN)),
            0,
            "scale invariance at eps = 0",
            r"\sum_j x_j \bar x_j",
        )
    )
    if broken and centered:
        return claims[1:]
    return claims


def _make(
    name: str, block: str, statement: str, build: Callable[..., Sequence[Claim]], control: str
) -> Proof:
    return Proof(
        name=name,
        block=block,
        statement=statement,
        steps=lambda: build(),
        broken=lambda: build(broken=True),
        control=control,
    )


#: The backward catalogue, in order; ``block`` is ``<kernel>_backward``.
BACKWARD_PROOFS: tuple[Proof, ...] = (
    _make(
        "softmax_vjp",
        "softmax_backward",
        r"\bar x = \nabla_x \textstyle\sum_i g_i \operatorname{softmax}(x)_i"
        r" = p \circ (g - \langle g, p \rangle) \quad \text{for every } N",
        _softmax_vjp_steps,
        "the ⟨g, p⟩ term missing: p ∘ g",
    ),
    _make(
        "softmax_vjp_row_sum",
        "softmax_backward",
        r"\sum_j \bar x_j = 0 \quad \text{(shift invariance), for every } N",
        _softmax_row_sum_steps,
        "the ⟨g, p⟩ term missing",
    ),
    _make(
        "attention_vjp",
        "attention_backward",
        r"\bar V = P^\top \bar O,\ \bar T = P \circ (\bar O V^\top - D),\ D_i = "
        r"\textstyle\sum_e \bar O_{ie} O_{ie},\ \bar A = \bar T,\ \bar Q = \alpha \bar T K,\ "
        r"\bar K = \alpha \bar T^\top Q \quad (L_q, L_k, E, E_v) = (2, 3, 1, 1)",
        _attention_vjp_steps,
        "D left out of dS (dS = P ∘ dP)",
    ),
    _make(
        "attention_vjp_dk_transpose",
        "attention_backward",
        r"\bar K = \alpha\, \bar S^\top Q \ne \alpha P^\top \bar O",
        _attention_dk_transpose_steps,
        "dK from Pᵀ dO instead of dSᵀ Q",
    ),
    _make(
        "attention_vjp_softcap",
        "attention_backward",
        r"S' = c \tanh(S / c):\ \bar A = \bar T,\ \bar Q = \alpha\,(\bar T \circ (1 - "
        r"\tanh^2(S / c)))\, K",
        _softcap_steps,
        "the softcap factor 1 − tanh² left out",
    ),
    _make(
        "attention_vjp_gqa_group_sum",
        "attention_backward",
        r"\bar K = \textstyle\sum_{h \in \text{group}} \alpha \bar S_h^\top Q_h,\ "
        r"\bar V = \sum_{h \in \text{group}} P_h^\top \bar O_h",
        _gqa_steps,
        "the first head of the group only, not the sum",
    ),
    _make(
        "attention_vjp_masked_keys_zero",
        "attention_backward",
        r"M_{\cdot j} = 0 \Rightarrow \bar K_j = \bar V_j = 0;\ M_{ij} = 0 \Rightarrow "
        r"\bar A_{ij} = 0",
        _masked_keys_steps,
        "the same claims without the mask",
    ),
    _make(
        "attention_vjp_causal",
        "attention_backward",
        r"\text{causal: } \bar K_j = \nabla_{K_j} \textstyle\sum_{i \ge j} \bar O_i \cdot O_i,\ "
        r"\bar V_j \text{ likewise} \quad (L_q = L_k = 3)",
        _causal_steps,
        "the same claims without the causal mask",
    ),
    _make(
        "layer_norm_vjp",
        "layer_norm_backward",
        r"\bar x = \tfrac{1}{\sigma}\big(\hat g - \overline{\hat g} - \hat y\,"
        r"\overline{\hat g \hat y}\big),\ \hat g = g \circ \gamma,\ \bar\gamma = g \circ \hat y,"
        r"\ \bar\beta = g \quad (N = 3, \text{every } \epsilon)",
        lambda broken=False: _norm_vjp_steps(True, broken),
        "dx without the −mean(ĝ) term",
    ),
    _make(
        "layer_norm_vjp_invariances",
        "layer_norm_backward",
        r"\textstyle\sum_j \bar x_j = 0,\ \epsilon = 0:\ \sum_j x_j \bar x_j = 0",
        lambda broken=False: _norm_invariance_steps(True, broken),
        "orthogonality claimed at eps > 0",
    ),
    _make(
        "rms_norm_vjp",
        "rms_norm_backward",
        r"\bar x = \tfrac{1}{r}\big(\hat g - \hat y\,\overline{\hat g \hat y}\big),\ "
        r"\bar\gamma = g \circ \hat y \quad (N = 3, \text{every } \epsilon)",
        lambda broken=False: _norm_vjp_steps(False, broken),
        "dx without the projection term",
    ),
    _make(
        "rms_norm_vjp_orthogonality",
        "rms_norm_backward",
        r"\epsilon = 0:\ \textstyle\sum_j x_j \bar x_j = 0",
        lambda broken=False: _norm_invariance_steps(False, broken),
        "orthogonality claimed at eps > 0",
    ),
)


def backward_proofs(block: str) -> tuple[Proof, ...]:
    """The backward proofs of kernel ``block`` (``"softmax"``, ``"attention"``, ...)."""
    return tuple(p for p in BACKWARD_PROOFS if p.block == f"{block}_backward")


def main() -> int:
    """Print every backward proof with its time and its negative control's verdict."""
    ok = True
    for pr in BACKWARD_PROOFS:
        res, neg = pr.prove(), pr.negative_control()
        ok &= res.proved and neg.rejected
        print(
            f"{pr.name:32s} {'proved' if res.proved else 'NOT PROVED':10s} {res.seconds:7.3f} s"
            f"   control {'rejected' if neg.rejected else 'ACCEPTED'} {neg.seconds:7.3f} s"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
