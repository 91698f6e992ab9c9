"""The per-element tolerance of every gradient: the forward's rounding-error analysis, carried
through the vector-Jacobian product (docs/gradients.md derives every term).

An implementation's backward pass works on its own forward quantities (the weights P of softmax
and attention, ŷ and 1/σ of the norms), stored by its forward pass or recomputed; each carries
the forward's error, bounded by the forward rules of :mod:`transpec.oracle.kernels.tolerance`.
The bound of a gradient is then, to first order,

    |ḡrad − ḡrad_ref| <= c · (propagated forward error + the backward's own rounding
                             + u_out·|ḡrad|) + c · floor

with the same primitives (γ_n, η, u_fn, SAFETY = c) as the forward
(:mod:`transpec.oracle.engine.error_model`). Both the forward's and the backward's declared
precisions enter: the weights' error uses the worse of the two (a recomputing backward rounds like
its own precision, a storing one like its forward), the backward's sums and products use the
backward precision (:meth:`~transpec.adapters.base.Adapter.backward_precision`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype
from transpec.oracle.engine.error_model import SAFETY, Units, gamma, units
from transpec.oracle.gradients.reference import GradientReference
from transpec.oracle.gradients.vjp import reduce_to
from transpec.oracle.kernels import tolerance as ktol
from transpec.oracle.kernels.tolerance import Tolerance, overflow_threshold

Rule = tuple[FloatArray, dict[str, FloatArray], str]


def worse(a: Units, b: Units) -> Units:
    """The larger unit roundoff and floor of two declarations, field by field."""
    values = {
        f.name: max(getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(Units)
        if f.name not in ("dtype", "precision")
    }
    return Units(dtype=a.dtype, precision=a.precision, **values)


def _finish(value: FloatArray, internal: FloatArray, floor: FloatArray, un: Units) -> FloatArray:
    output = un.out * np.abs(np.nan_to_num(value))
    return SAFETY * (internal + output) + SAFETY * (floor + un.eta_out)


# -- softmax -----------------------------------------------------------------------------------


def softmax_rules(ref: GradientReference, fwd: Units, bwd: Units) -> dict[str, Rule]:
    """docs/gradients.md §2: x̄_j = p_j(g_j − D), D = Σ_k g_k p_k.

    |δp_j| <= e_j (the forward rule's internal bound, + u_out·p_j + η_out for a stored p);
    |δD| <= Σ_k |g_k| e_k + (γ_n + u_acc)·Σ_k |g_k| p_k;
    |δx̄_j| <= e_j·(|g_j| + A) + p_j·(|δD| + 2u_acc·(|g_j| + A)),  A = Σ_k |g_k| p_k."""
    ctx = ref.context
    dim = int(ctx["dim"])
    un_p = worse(fwd, bwd)
    _, parts, _ = ktol.softmax_rule(ref.forward, un_p)
    p = np.nan_to_num(ctx["p"])
    # a stored p_k is rounded to the output dtype: u_out·p_k, and at most its underflow floor
    # where it falls among the subnormals (or to 0), for every p_k > 0
    e = (
        np.moveaxis(np.asarray(parts["internal"]), dim, -1)
        + un_p.out * p
        + np.where(p > 0, un_p.eta_out, 0.0)
    )
    abs_g, gp = ctx["abs_g"], ctx["gp"]
    n = float(p.shape[-1])
    with np.errstate(over="ignore", invalid="ignore"):
        d_err = np.sum(abs_g * e, axis=-1, keepdims=True) + (gamma(n, bwd.acc) + bwd.acc) * gp
        internal = e * (abs_g + gp) + p * (d_err + 2.0 * bwd.acc * (abs_g + gp))
        floor = (bwd.eta_acc + bwd.eta_store) * (1.0 + abs_g + gp)
    value = ref.grads["x"].value
    internal = np.moveaxis(internal, -1, dim)
    bound = _finish(value, internal, np.moveaxis(floor, -1, dim), bwd)
    derivation = (
        "softmax x̄ = p∘(g − ⟨g,p⟩): c·(e_j(|g_j| + A) + p_j(Σ_k|g_k|e_k + (γ_n + u_acc)A "
        "+ 2u_acc(|g_j| + A)) + u_out|x̄|) + c·η; e = the forward's bound on p, A = Σ|g|p; "
        f"c={SAFETY:g}, n={int(n)}, u_acc={bwd.acc:.3g}, u_store={un_p.store:.3g}, "
        f"u_out={bwd.out:.3g} (docs/gradients.md §2)"
    )
    return {"x": (bound, {"internal": internal}, derivation)}


# -- attention ---------------------------------------------------------------------------------


def attention_rules(ref: GradientReference, fwd: Units, bwd: Units) -> dict[str, Rule]:
    """docs/gradients.md §3: the weights' error e = ε_P ∘ P from the forward analysis, carried
    through D = rowsum(Ō ∘ O), dT = P ∘ (dP − D), the softcap factor and the three products."""
    ctx = ref.context
    un = worse(fwd, bwd)
    p = ctx["p"]
    c, shift = ctx["c"], ctx["shift"]
    abs_q, abs_k, abs_v, abs_g = ctx["abs_q"], ctx["abs_k"], ctx["abs_v"], ctx["abs_g"]
    lq, lk = p.shape[-2], p.shape[-1]
    e_dim, ev_dim = abs_q.shape[-1], abs_v.shape[-1]
    softcap = ctx["softcap"]
    alpha = abs(float(ctx["scale"]))
    g_e, g_ev = gamma(e_dim, un.acc), gamma(ev_dim, bwd.acc)
    g_lk, g_lq = gamma(lk, un.acc), gamma(lq, bwd.acc)
    eps_s = g_e + 2.0 * un.store + un.acc + (un.fn + 2.0 * un.acc if softcap else 0.0)
    const = 2.0 * un.fn + 2.0 * un.store + 2.0 * g_lk + un.acc
    with np.errstate(over="ignore", invalid="ignore"):
        c_bar = np.sum(p * c, axis=-1, keepdims=True)
        s_bar = np.sum(p * shift, axis=-1, keepdims=True)
        worst = 2.0 * (
            eps_s * np.max(np.where(p > 0, c, 0.0), axis=-1, keepdims=True)
            + un.acc * np.max(shift, axis=-1, keepdims=True)
        )
        amp = ktol._amplify(worst + const)
        # e: the absolute error of the weights (forward analysis, docs/tolerance.md §3.2),
        # plus one rounding of P where it is stored
        e = p * ((eps_s * (c + c_bar) + un.acc * (shift + s_bar) + const) * amp + un.store)
        pv = np.matmul(p, abs_v)
        ev = np.matmul(e, abs_v)
        big_g = np.matmul(abs_g, np.swapaxes(abs_v, -1, -2))  # bounds |dP|
        h = np.sum(abs_g * pv, axis=-1, keepdims=True)  # bounds |D|
        d_err = np.sum(
            abs_g * (ev + (g_lk + g_ev + 2.0 * bwd.acc + fwd.out) * pv), axis=-1, keepdims=True
        )
        scale_t = p * (big_g + h)  # bounds |dT|
        err_t = e * (big_g + h) + p * ((g_ev + 3.0 * bwd.acc + bwd.store) * (big_g + h) + d_err)
        floor_t = (bwd.eta_acc + bwd.eta_store) * (1.0 + big_g + h)
        if ctx["fill"] is not None:
            err_t = np.where(ctx["visible"], err_t, 0.0)
            scale_t = np.where(ctx["visible"], scale_t, 0.0)
        if softcap:
            th = ctx["tanh"]
            tp = 1.0 - th * th
            err_s = err_t * tp + scale_t * tp * (
                un.fn + 3.0 * bwd.acc + 2.0 * np.abs(th) * eps_s * c / softcap
            )
            scale_s = scale_t * tp
        else:
            err_s, scale_s = err_t, scale_t
        sum_k = np.sum(abs_k, axis=-2, keepdims=True)
        sum_q = np.sum(abs_q, axis=-2, keepdims=True)
        sum_g = np.sum(abs_g, axis=-2, keepdims=True)
        rnd_q = g_lk + 2.0 * bwd.acc + bwd.store
        rnd_k = g_lq + 2.0 * bwd.acc + bwd.store
        dq_int = alpha * (np.matmul(err_s, abs_k) + rnd_q * np.matmul(scale_s, abs_k))
        dq_floor = alpha * np.matmul(floor_t, abs_k) + alpha * bwd.eta_store * sum_k
        dk_abs = alpha * np.matmul(np.swapaxes(scale_s, -1, -2), abs_q)
        dk_int = alpha * np.matmul(np.swapaxes(err_s, -1, -2), abs_q) + rnd_k * dk_abs
        dk_floor = (
            alpha * np.matmul(np.swapaxes(floor_t, -1, -2), abs_q) + alpha * bwd.eta_store * sum_q
        )
        dv_abs = np.matmul(np.swapaxes(p, -1, -2), abs_g)
        dv_int = np.matmul(np.swapaxes(e, -1, -2), abs_g) + (g_lq + bwd.store) * dv_abs
        dv_floor = (bwd.eta_acc + bwd.eta_store) * sum_g + np.zeros_like(dv_abs)
    kv = ctx["kv"]
    groups = p.shape[-3] // max(1, ref.grads["k"].value.shape[-3]) if p.ndim >= 3 else 1
    g_group = gamma(groups, bwd.acc)
    rules: dict[str, Rule] = {}
    common = (
        f"c={SAFETY:g}, E={e_dim}, Ev={ev_dim}, Lq={lq}, Lk={lk}, ε_s={eps_s:.3g}, "
        f"u_acc={bwd.acc:.3g}, u_store={un.store:.3g}, u_out={bwd.out:.3g} (docs/gradients.md §3)"
    )
    shapes = {"q": ctx["q_shape"]}
    dq = ref.grads["q"].value
    internal = reduce_to(dq_int, shapes["q"])
    rules["q"] = (
        _finish(dq, internal, reduce_to(dq_floor, shapes["q"]), bwd),
        {"internal": internal},
        "attention q̄ = α dS K: c·(|α|(E_S|K| + (γ_Lk + 2u_acc + u_store)|dS||K|) + u_out|q̄|) "
        "+ c·η; E_S the bound on dS = P∘(dP − D) from the weights' error e = ε_P∘P, "
        "|dP| <= |Ō||V|ᵀ, |D| <= Σ|Ō|∘P|V|; " + common,
    )
    for name, inner, abs_part, floor in (
        ("k", dk_int, dk_abs, dk_floor),
        ("v", dv_int, dv_abs, dv_floor),
    ):
        value = ref.grads[name].value
        internal = kv(inner + g_group * abs_part, value.shape)
        what = "k̄ = α dSᵀ Q" if name == "k" else "v̄ = Pᵀ Ō"
        rules[name] = (
            _finish(value, internal, kv(floor, value.shape), bwd),
            {"internal": internal},
            f"attention {what}, summed over each kv head's query heads (γ_G, G={groups}): "
            "c·(propagated weight error + (γ_Lq + 2u_acc + u_store)·|terms| + u_out|·|) + c·η; "
            + common,
        )
    if "attn_mask" in ref.grads:
        value = ref.grads["attn_mask"].value
        shape = ctx["mask_shape"]
        internal = reduce_to(err_t, shape)
        n_sum = max(1, int(np.prod(scale_t.shape)) // max(1, int(np.prod(shape))))
        internal = internal + gamma(n_sum, bwd.acc) * reduce_to(scale_t, shape)
        rules["attn_mask"] = (
            _finish(value, internal, reduce_to(floor_t, shape), bwd),
            {"internal": internal},
            "attention Ā = P∘(dP − D) on visible keys (0 on masked ones), summed over "
            "broadcast dims: c·(E_T + u_out|Ā|) + c·η; " + common,
        )
    return rules


# -- norms -------------------------------------------------------------------------------------


def _norm_rules(
    ref: GradientReference, fwd: Units, bwd: Units, *, centered: bool
) -> dict[str, Rule]:
    """docs/gradients.md §4: x̄ = (ĝ − [m1] − κ ŷ m2)/σ with ŷ and 1/σ carrying the forward's
    error (ρ the relative error of 1/σ, from the forward rule); w̄, b̄ sums over the rows."""
    ctx = ref.context
    un = worse(fwd, bwd)
    fref = ref.forward
    rule = ktol.layer_norm_rule if centered else ktol.rms_norm_rule
    _, parts, _ = rule(fref, un)
    # the statistics a backward reads (μ, 1/σ) may be stored in the storage precision
    # (torch on CPU saves them in the input dtype): one more rounding of each
    rho = np.asarray(parts["rel_inv_sigma" if centered else "rel_inv_rms"]) + un.store
    inv = np.asarray(fref.terms["inv_sigma" if centered else "inv_rms"])
    n = float(fref.terms["n"])
    n_axes = int(ctx["n_axes"])
    axes = tuple(range(-n_axes, 0))
    abs_g, yh = ctx["abs_g"], ctx["abs_yhat"]
    aw = np.asarray(fref.terms["abs_weight"])
    kappa, d = ctx["kappa"], float(ctx["divisor"])
    g_n = gamma(n + 1, bwd.acc)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if centered:
            d_mu = (gamma(n, un.acc) + un.store) * np.asarray(fref.terms["mean_abs"])
            e_y = d_mu * inv * (1.0 + rho) + yh * (rho + un.acc + un.store)
        else:
            e_y = yh * (rho + un.acc + un.store)
        gh = abs_g * aw
        m1a = np.sum(gh, axis=axes, keepdims=True) / n if centered else 0.0
        m2a = np.sum(gh * yh, axis=axes, keepdims=True) / d
        m2e = np.sum(gh * e_y, axis=axes, keepdims=True) / d
        d_m1 = (g_n + bwd.acc) * m1a
        d_m2 = m2e + (g_n + 2.0 * bwd.acc) * m2a
        kappa_err = 0.0 if np.all(np.asarray(kappa) == 1.0) else 2.0 * rho
        scale_i = gh + m1a + kappa * yh * m2a
        d_inner = (
            bwd.acc * gh
            + d_m1
            + kappa * (e_y * m2a + yh * d_m2 + kappa_err * yh * m2a)
            + 2.0 * bwd.acc * scale_i
        )
        internal_x = inv * (rho * scale_i + d_inner + bwd.acc * scale_i)
        floor_x = (bwd.eta_acc + bwd.eta_store) * (1.0 + inv * scale_i)
    name = "layer_norm" if centered else "rms_norm"
    rules: dict[str, Rule] = {
        "x": (
            _finish(ref.grads["x"].value, internal_x, floor_x, bwd),
            {"internal": internal_x, "rho": rho * np.ones_like(internal_x)},
            f"{name} x̄ = (ĝ{' − mean ĝ' if centered else ''} − κŷ·Σĝŷ/d)/σ: "
            "c·(1/σ·(ρ·I + δinner) + u_out|x̄|) + c·η; I = |ĝ| + mean|ĝ| + κ|ŷ|m2, "
            "δŷ from the forward (δμ/σ(1+ρ) + |ŷ|(ρ + u_acc + u_store)), δμ = (γ_n + u_store)·"
            "mean|x|, ρ the forward's relative error of 1/σ + u_store (stored statistics); "
            f" c={SAFETY:g}, n={int(n)}, u_acc={bwd.acc:.3g}, "
            f"u_store={un.store:.3g}, u_out={bwd.out:.3g} (docs/gradients.md §4)",
        )
    }
    lead = tuple(range(abs_g.ndim - n_axes))
    rows = float(ctx["rows"])
    g_m = gamma(rows, bwd.acc)
    if "weight" in ref.grads:
        with np.errstate(over="ignore", invalid="ignore"):
            e_y_b = np.broadcast_to(e_y, abs_g.shape)
            internal = np.sum(abs_g * e_y_b, axis=lead) + (g_m + bwd.acc) * np.sum(
                abs_g * yh, axis=lead
            )
            floor = (bwd.eta_acc + bwd.eta_store) * rows
        rules["weight"] = (
            _finish(ref.grads["weight"].value, internal, np.asarray(floor), bwd),
            {"internal": internal},
            f"{name} w̄ = Σ_rows g∘ŷ: c·(Σ|g|δŷ + (γ_M + u_acc)Σ|g||ŷ| + u_out|w̄|) + c·η; "
            f"M={int(rows)} rows (docs/gradients.md §4)",
        )
    if "bias" in ref.grads:
        internal = g_m * np.sum(abs_g, axis=lead)
        rules["bias"] = (
            _finish(ref.grads["bias"].value, internal, np.asarray(bwd.eta_acc * rows), bwd),
            {"internal": internal},
            f"{name} b̄ = Σ_rows g: c·(γ_M Σ|g| + u_out|b̄|) + c·η; M={int(rows)} rows "
            "(docs/gradients.md §4)",
        )
    return rules


def layer_norm_rules(ref: GradientReference, fwd: Units, bwd: Units) -> dict[str, Rule]:
    return _norm_rules(ref, fwd, bwd, centered=True)


def rms_norm_rules(ref: GradientReference, fwd: Units, bwd: Units) -> dict[str, Rule]:
    return _norm_rules(ref, fwd, bwd, centered=False)


# -- the entry point ---------------------------------------------------------------------------


def tolerances(
    ref: GradientReference, dtype: str, forward: Any, backward: Any
) -> dict[str, Tolerance]:
    """The :class:`Tolerance` of every gradient of ``ref`` in ``dtype``, under the declared
    ``forward`` and ``backward`` :class:`~transpec.adapters.base.Precision`; the rule is the
    component record's ``"vjp_rule"`` hook."""
    from transpec.oracle import components

    dtype = canonical_dtype(dtype)
    rule = components.get(ref.component).hook("vjp_rule")
    rules: Mapping[str, Rule] = rule(ref, units(dtype, forward), units(dtype, backward))
    thr = overflow_threshold(dtype)
    out: dict[str, Tolerance] = {}
    for name, (bound, parts, derivation) in rules.items():
        value = ref.grads[name].value
        bound = np.broadcast_to(np.where(np.isnan(bound), np.inf, bound), value.shape)
        with np.errstate(invalid="ignore", over="ignore"):
            mag = np.abs(value)
            may = (mag + bound >= thr) | np.isinf(value)
            must = (mag - bound >= thr) | np.isinf(value)
        out[name] = Tolerance(
            bound=np.array(bound),
            derivation=derivation,
            parts=parts,
            may_overflow=may if may.any() else None,
            must_overflow=must if must.any() else None,
            dtype=dtype,
        )
    return out
