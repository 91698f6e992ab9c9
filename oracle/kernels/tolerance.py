"""The per-element tolerance: a first-order rounding-error bound for each building block.

For an implementation that computes a block in floating point with sums and dot products in the
*accumulation* precision (unit roundoff u_acc), intermediates rounded to the *storage* precision
(u_store) and the output rounded to the dtype under test (u_out), the bound on every element is

    |out - ref| <= c · (u_out·|ref| + ε_internal(element)) + floor

where ε_internal is derived block by block from the standard model fl(a op b) = (a op b)(1 + δ),
|δ| <= u (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2.2), the bound
γ_n = n·u / (1 - n·u) on a sum or dot product of n terms in any order (Higham §3.1, Lemma 3.1
and (3.4)-(3.5)), and the sensitivity of softmax to errors in its arguments (Blanchard, Higham &
Higham, "Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41,
2021, §3). The floor accounts for underflow (Higham §2.1: fl(x) = x(1 + δ) + η, |η| <= half the
subnormal spacing).

The primitives of that model (γ_n, η, the unit roundoffs of a call, ``SAFETY``,
``ELEMENTARY_ULPS``) are those of :mod:`transpec.oracle.engine.error_model`, shared with the
positional and layer rules. Every constant names the section of ``docs/tolerance.md`` that derives
it. The reference (:mod:`transpec.oracle.kernels.reference`) supplies the magnitudes the bound is
made of (``Reference.terms``); this module only combines them with the unit roundoffs of the
declared :class:`~transpec.adapters.base.Precision`.

Overflow: where the reference exceeds the largest finite number of the output dtype (fp16:
65504) by more than the bound, ±inf of the reference's sign is *required*; where it is within the
bound of that threshold, ±inf is *allowed*. :func:`transpec.oracle.engine.compare.compare` applies
both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transpec.oracle.engine.dtypes import FORMATS, FloatArray, canonical_dtype, ulp
from transpec.oracle.engine.error_model import SAFETY, Units, gamma, term, units
from transpec.oracle.kernels.reference import Reference

if TYPE_CHECKING:
    from transpec.adapters.base import Precision

#: the argument of exp() in the nonlinear amplification factor is clipped here (e^50 ≈ 5e21
#: makes any first-order term larger than the caps, which then decide). docs/tolerance.md §3.2.
AMPLIFICATION_CLIP = 50.0


@dataclass(frozen=True)
class Tolerance:
    """A per-element absolute bound on |actual - reference| and how it was derived.

    ``bound``: broadcastable to the reference value. ``derivation``: the formula with the numbers
    of this call (unit roundoffs, reduction lengths, c). ``parts``: named contributions (absolute,
    before the factor c), so :meth:`describe_at` can say which term dominates an element.
    ``may_overflow`` / ``must_overflow``: boolean arrays where ±inf (sign of the reference) is
    allowed / required because the reference exceeds the largest finite value of ``dtype``.
    """

    bound: FloatArray
    derivation: str
    parts: Mapping[str, FloatArray] = field(default_factory=dict)
    may_overflow: np.ndarray | None = None
    must_overflow: np.ndarray | None = None
    dtype: str = "float64"

    def describe_at(self, index: tuple[int, ...]) -> str:
        """The derivation with the value of each part at one element."""
        bound = np.broadcast_to(self.bound, self._shape())
        pieces = []
        for name, arr in self.parts.items():
            val = float(np.broadcast_to(arr, self._shape())[index])
            pieces.append(f"{name}={val:.3g}")
        detail = f"; at this element bound={float(bound[index]):.3e}"
        if pieces:
            detail += " from " + ", ".join(pieces)
        return self.derivation + detail

    def _shape(self) -> tuple[int, ...]:
        shapes = [np.shape(self.bound)] + [np.shape(a) for a in self.parts.values()]
        return tuple(np.broadcast_shapes(*shapes))


def _amplify(first_order_rel: FloatArray) -> FloatArray:
    """expm1(x)/x ≥ 1: turns a first-order relative bound x into the exact e^x - 1 form."""
    x = np.minimum(np.asarray(first_order_rel, dtype=np.float64), AMPLIFICATION_CLIP)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 1e-8, np.expm1(x) / np.where(x > 0, x, 1.0), 1.0)


def _elem_floor(un: Units) -> float:
    """η of the element-wise precision where it is coarser than the accumulation's (an
    exponential or a product that underflows there; docs/tolerance.md §2.7), else 0: the
    accumulation's η already counts it."""
    return un.eta_elem if un.to_elem > 0.0 else 0.0


# -- the blocks --------------------------------------------------------------------------------


def softmax_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    p = np.nan_to_num(ref.value, nan=0.0)
    shift = np.asarray(term(ref, "shift"))
    n = float(term(ref, "n"))
    g = gamma(n, un.acc)
    # docs §3.1: p̃_i/p_i - 1 <= e^{a_i + Ā} - 1, a_j = u_elem|x_j - m| + u_fn + u_store,
    # Ā = log Σ_j p_j e^{a_j} (>= Σ p_j a_j), then γ_n for the sum, the sum's rounding to the
    # element-wise precision (§2.7) and u_elem for the division.
    a = un.elem * shift + un.fn + un.store
    with np.errstate(over="ignore", invalid="ignore"):
        abar_lin = np.asarray(term(ref, "mean_shift")) * un.elem + un.fn + un.store
        rel = a + abar_lin + g + un.to_elem + un.elem
    internal = p * rel * _amplify(rel)
    output = un.out * np.abs(p)
    floor = np.full(p.shape, un.eta_out + un.eta_acc + un.eta_store + _elem_floor(un))
    bound = np.minimum(SAFETY * (internal + output), 1.0) + SAFETY * floor
    derivation = (
        f"softmax: c·(p·(u_elem·|x_i−m| + Σ_j p_j u_elem|x_j−m| + 2u_fn + 2u_store + γ_n "
        f"+ u_to_elem + u_elem)·amplification + u_out·p) + c·η, capped at 1; c={SAFETY:g}, "
        f"n={int(n)}, u_acc={un.acc:.3g}, u_elem={un.elem:.3g}, u_to_elem={un.to_elem:.3g}, "
        f"u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g}, γ_n={g:.3g} "
        "(docs/tolerance.md §3.1, §2.7)"
    )
    return bound, {"internal": internal, "output": output, "floor": floor}, derivation


def attention_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    o = np.nan_to_num(ref.value, nan=0.0)
    a_ref = ref.abs_value
    e = float(term(ref, "n_dot"))
    lk = float(term(ref, "n_keys"))
    softcap = float(term(ref, "softcap"))
    g_dot = gamma(e, un.acc)
    g_keys = gamma(lk, un.acc)
    cap_note = " + u_fn + 2u_elem" if softcap > 0 else ""
    # docs §3.2: score error δs_ij <= eps_s · C_ij
    eps_s = g_dot + 2.0 * un.store + un.elem
    if softcap > 0:
        eps_s += un.fn + 2.0 * un.elem
    sw = np.asarray(term(ref, "score_weighted"))
    sm = np.asarray(term(ref, "score_mean"))
    hw = np.asarray(term(ref, "shift_weighted"))
    hm = np.asarray(term(ref, "shift_mean"))
    const = 2.0 * un.fn + 2.0 * un.store + 2.0 * g_keys + un.to_elem + un.elem
    # the same operations as eps_s·(sw + sm·A), u·(hw + hm·A), const·A, in place
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.multiply(sm, a_ref)
        scores += sw
        scores *= eps_s
        shifts = np.multiply(hm, a_ref)
        shifts += hw
        shifts *= un.elem
        rounding = const * a_ref
        worst_rel = (
            2.0
            * (
                eps_s * np.asarray(term(ref, "score_max"))
                + un.elem * np.asarray(term(ref, "shift_max"))
            )
            + const
        )
        amp = _amplify(worst_rel)
        internal = np.add(scores, shifts)
        internal += rounding
        internal *= amp
    output = np.abs(o, out=o)
    output *= un.out
    vrange = np.asarray(term(ref, "v_range"))
    vabs = np.asarray(term(ref, "max_abs_v"))
    cap = vrange + (2.0 * g_keys + 2.0 * un.store + un.to_elem + un.elem) * vabs
    cap += un.out * vabs
    floor = (un.eta_store + un.eta_acc + _elem_floor(un)) * np.asarray(term(ref, "sum_abs_v"))
    floor += un.eta_out
    floor += lk * un.eta_acc
    # min(c·(internal + output), c·cap) + c·floor; at magnitudes near float64's largest the
    # uncapped sum overflows to inf, and the cap (the spread of V) is then the bound
    bound = internal
    with np.errstate(over="ignore"):
        bound += output
        bound *= SAFETY
    np.minimum(bound, SAFETY * cap, out=bound)
    bound += SAFETY * floor
    derivation = (
        "attention: c·((ε_s·((P∘C)|V| + Σ_j P_ij C_ij·P|V|) + u_elem·((P∘D)|V| + "
        "Σ_j P_ij D_ij·P|V|) + (2u_fn + 2u_store + 2γ_Lk + u_to_elem + u_elem)·P|V|)"
        "·amplification + u_out·|O|), capped at c·(range of V + ...), + c·η; "
        "C_ij = |scale|·|q_i|·|k_j| "
        f"(+|mask|), D_ij = |s_ij − m_i|; ε_s = γ_E + 2u_store + u_elem{cap_note}"
        f" = {eps_s:.3g}; c={SAFETY:g}, E={int(e)}, Lk={int(lk)}, γ_E={g_dot:.3g}, "
        f"γ_Lk={g_keys:.3g}, u_acc={un.acc:.3g}, u_elem={un.elem:.3g}, "
        f"u_to_elem={un.to_elem:.3g}, u_store={un.store:.3g}, u_out={un.out:.3g}, "
        f"u_fn={un.fn:.3g} (docs/tolerance.md §3.2, §2.7)"
    )
    parts = {
        "scores": scores,
        "shifts": shifts,
        "rounding": rounding,
        "output": output,
        "cap": cap,
        "floor": floor,
    }
    return bound, parts, derivation


def layer_norm_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    y = np.nan_to_num(ref.value, nan=0.0)
    n = float(term(ref, "n"))
    mean_abs = np.asarray(term(ref, "mean_abs"))
    mad = np.asarray(term(ref, "mean_abs_dev"))
    var = np.asarray(term(ref, "var"))
    sd = np.asarray(term(ref, "sd"))
    eps = float(term(ref, "eps"))
    inside = float(term(ref, "eps_inside")) > 0
    inv = np.asarray(term(ref, "inv_sigma"))
    dev = np.asarray(term(ref, "abs_centered"))
    aw = np.asarray(term(ref, "abs_weight"))
    ab = np.asarray(term(ref, "abs_bias"))
    g_n = gamma(n, un.acc)
    g_var = gamma(n + 2, un.acc)
    one_pass = float(ref.terms.get("one_pass", 0.0)) > 0
    div = float(ref.terms.get("divisor", n))  # var = Σ(x - μ)²/div, div = n or n - 1
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d_mu = (g_n + un.to_elem) * mean_abs  # docs §3.3 (mean), §2.7 (μ in u_elem)
        if one_pass:  # docs §3.3 (one-pass variance): E[x²] - μ² cancels
            d_var = (n / div) * (
                g_var * np.asarray(term(ref, "mean_square"))
                + 2.0 * np.asarray(term(ref, "abs_mean")) * d_mu
                + d_mu * d_mu
                + un.acc * np.asarray(term(ref, "abs_mean")) ** 2
            ) + un.acc * var
        else:  # docs §3.3 (variance); §2.7: differences rounded to u_elem before squared
            d_var = (g_var + 2.0 * un.to_elem) * var + 2.0 * d_mu * mad + d_mu * d_mu
        if inside:
            sigma = np.sqrt(var + eps)
            d_sigma = d_var / (np.sqrt(var + eps + d_var) + sigma)
            d_sigma = d_sigma + (un.fn + un.acc + un.to_elem) * sigma
        else:
            sigma = sd + eps
            d_sigma = d_var / (np.sqrt(var + d_var) + sd) + un.fn * sd
            d_sigma = d_sigma + (un.acc + un.to_elem) * sigma
        rel_sigma = d_sigma * inv
        rel_inv = np.where(rel_sigma < 0.5, rel_sigma / (1.0 - rel_sigma), np.inf)
        if one_pass:
            # docs §3.3 (one-pass): the computed variance may fall to 0 (clamped), so σ̂ only
            # stays above its eps floor: 1/σ̂ <= 1/max(σ - δσ, floor), no cap on ŷ
            sigma_floor = math.sqrt(eps) if inside else eps
            sigma_min = np.maximum(sigma - d_sigma, sigma_floor)
            rel_inv = np.where(rel_sigma < 0.5, rel_inv, sigma / sigma_min - 1.0)
        yhat = dev * inv
        internal = aw * (
            d_mu * inv * (1.0 + rel_inv) + un.elem * yhat + yhat * (rel_inv + un.elem + un.store)
        ) + un.elem * (2.0 * aw * yhat + ab)
        cap = aw * 2.0 * math.sqrt(n) * (1.0 + un.store) + ab * un.elem
        if one_pass:
            cap = np.full(np.shape(internal), np.inf)
    output = un.out * np.abs(y)
    floor = un.eta_out + (un.eta_store + un.eta_acc + _elem_floor(un)) * (1.0 + aw)
    bound = np.minimum(SAFETY * (internal + output), SAFETY * (cap + output)) + SAFETY * floor
    derivation = (
        "layer_norm: c·(|w|·(δμ/σ·(1+ρ) + u_elem|ŷ| + |ŷ|·(ρ + u_elem + u_store)) "
        "+ u_elem·(2|wŷ| + |b|) + u_out·|y|) + c·η, capped at c·2√n·|w|; ŷ = (x−μ)/σ, "
        "δμ = (γ_n + u_to_elem)·mean|x|, δvar = (γ_{n+2} + 2u_to_elem)·var + 2δμ·mean|x−μ| "
        "+ δμ² (one-pass: n/div·(γ_{n+2}·mean(x²) + 2|μ|δμ + δμ² + u_acc·μ²) + u_acc·var), "
        f"{'σ = √(var+eps)' if inside else 'σ = √var + eps'}, ρ = relative error of 1/σ; "
        f"c={SAFETY:g}, n={int(n)}, eps={eps:.3g}, γ_n={g_n:.3g}, u_acc={un.acc:.3g}, "
        f"u_elem={un.elem:.3g}, u_to_elem={un.to_elem:.3g}, "
        f"u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g} "
        "(docs/tolerance.md §3.3, §2.7)"
    )
    parts = {"internal": internal, "output": output, "rel_inv_sigma": rel_inv, "floor": floor}
    return bound, parts, derivation


def rms_norm_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    y = np.nan_to_num(ref.value, nan=0.0)
    n = float(term(ref, "n"))
    ms = np.asarray(term(ref, "ms"))
    eps = float(term(ref, "eps"))
    inside = float(term(ref, "eps_inside")) > 0
    one_plus = float(term(ref, "one_plus_w")) > 0
    inv = np.asarray(term(ref, "inv_rms"))
    ax = np.asarray(term(ref, "abs_x"))
    aw = np.asarray(term(ref, "abs_weight"))
    g = gamma(n + 1, un.acc)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # docs §3.4: all terms positive, relative error γ_{n+1}; §2.7: squares in u_elem
        d_ms = (g + un.to_elem) * ms
        if inside:
            r = np.sqrt(ms + eps)
            d_r = d_ms / (np.sqrt(ms + eps + d_ms) + r) + (un.fn + un.acc + un.to_elem) * r
        else:
            rms = np.sqrt(ms)
            r = rms + eps
            d_r = d_ms / (np.sqrt(ms + d_ms) + rms) + un.fn * rms + (un.acc + un.to_elem) * r
        rel_r = d_r * inv
        rel_inv = np.where(rel_r < 0.5, rel_r / (1.0 - rel_r), np.inf)
        yabs = ax * inv * aw
        weight_rounding = un.elem * (2.0 if one_plus else 1.0)
        internal = yabs * (rel_inv + un.elem + un.store + weight_rounding)
        cap = aw * 2.0 * math.sqrt(n) * (1.0 + un.store)
    output = un.out * np.abs(y)
    floor = un.eta_out + (un.eta_store + un.eta_acc + _elem_floor(un)) * (1.0 + aw)
    bound = np.minimum(SAFETY * (internal + output), SAFETY * (cap + output)) + SAFETY * floor
    derivation = (
        "rms_norm: c·(|x|/r·|w'|·(ρ + 2u_elem + u_store"
        f"{' + u_elem' if one_plus else ''}) + u_out·|y|) + c·η, capped at c·2√n·|w'|; "
        f"δms = (γ_(n+1) + u_to_elem)·ms, {'r = √(ms+eps)' if inside else 'r = √ms + eps'}, "
        f"ρ = relative error of 1/r; c={SAFETY:g}, n={int(n)}, eps={eps:.3g}, γ={g:.3g}, "
        f"u_acc={un.acc:.3g}, u_elem={un.elem:.3g}, u_to_elem={un.to_elem:.3g}, "
        f"u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g} "
        "(docs/tolerance.md §3.4, §2.7)"
    )
    parts = {"internal": internal, "output": output, "rel_inv_rms": rel_inv, "floor": floor}
    return bound, parts, derivation


def overflow_threshold(dtype: str) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype``: max + ulp(max)/2."""
    fmt = FORMATS[canonical_dtype(dtype)]
    return fmt.max_value + float(ulp(fmt.max_value, fmt.name)) / 2.0


def tolerance(component: str, reference: Reference, dtype: str, precision: Precision) -> Tolerance:
    """The per-element bound for ``component`` computed in ``dtype`` under ``precision``.

    ``reference`` must be the :class:`Reference` of that component on the inputs the
    implementation received. See the module docstring and docs/tolerance.md.
    """
    from transpec.oracle import components

    try:
        rule = components.get(component).hook("rule")  # unknown names: the registry's message
    except LookupError:
        raise ValueError(
            f"{component} has no rule here; its registry record names its tolerance"
        ) from None
    if not isinstance(reference, Reference):
        raise TypeError(f"reference must be a Reference, got {type(reference).__name__}")
    dtype = canonical_dtype(dtype)
    un = units(dtype, precision, elementwise=True)
    bound, parts, derivation = rule(reference, un)
    value = reference.value
    bound = np.asarray(bound, dtype=np.float64)
    nan = np.isnan(bound)
    if nan.any():
        bound = np.where(nan, np.inf, bound)
    shared = not bound.flags.owndata or any(bound is part for part in parts.values())
    if bound.shape != value.shape or shared:
        bound = np.array(np.broadcast_to(bound, value.shape))  # an array of its own
    thr = overflow_threshold(dtype)
    may = must = None
    with np.errstate(invalid="ignore", over="ignore"):
        # no element can reach the threshold (and none is ±inf or NaN) unless this fails
        if not float(np.max(np.abs(value), initial=0.0)) + float(np.max(bound)) < thr:
            mag = np.abs(value)
            may = (mag + bound >= thr) | np.isinf(value)
            must = (mag - bound >= thr) | np.isinf(value)
    return Tolerance(
        bound=bound,
        derivation=derivation,
        parts=parts,
        may_overflow=may if may is not None and may.any() else None,
        must_overflow=must if must is not None and must.any() else None,
        dtype=dtype,
    )
