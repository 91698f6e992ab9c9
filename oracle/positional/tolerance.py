r"""Tolerance rules of the embedding and positional components (docs/tolerance.md §7).

Each rule has the signature of the rules of :mod:`transpec.oracle.kernels.tolerance`
(``(reference, units) -> (bound, parts, derivation)``) and is the ``"rule"`` hook of its
component's record, which :func:`transpec.oracle.kernels.tolerance.tolerance` calls. Symbols:
u_acc, u_store, u_out the unit roundoffs of the declared accumulation and storage precision and of
the output dtype, u_fn the error of an elementary function (``ELEMENTARY_ULPS`` ulps of the
accumulation precision), η half the subnormal spacing, c = ``SAFETY``.

* **embedding** -- a lookup copies the rounded weight row: the bound is 0 (bitwise equality).
  With the :math:`\sqrt{d}` scaling, :math:`\sqrt{d}` is computed (u_fn), possibly rounded to the
  storage precision (u_store) and multiplied (u_acc), then rounded to the output (u_out):
  :math:`c\,(u_{fn} + u_{store} + u_{acc} + u_{out})\,|y| + c\,\eta`.
* **angles** -- :math:`\phi = p\,\omega`, :math:`\omega = e^{-\ell}` with
  :math:`\ell = |\ln\omega| = (2i/d)\ln b`: forming :math:`\ell` costs about 2 roundings, its
  exponential turns the absolute error :math:`2u\ell` into a relative one plus u_fn, the product
  with p one more rounding (``1/(b^x)`` or ``b^{-x}`` forms cost the same up to one rounding):
  :math:`\delta\phi \le |\phi|\,(3u_{acc}(\ell + 1) + u_{fn})`. The rounding of the angle grows
  with the position: at p = 4096 in float32 it is ~1e-3 rad, a real error of every float32
  implementation, not slack.
* **sinusoidal_positional_encoding** -- :math:`|\sin(\tilde\phi) - \sin\phi| \le \delta\phi`
  (the derivative is at most 1), the function's own error u_fn, the stored table u_store and the
  output u_out: :math:`c\,(\delta\phi + (u_{fn} + u_{store} + u_{out})|PE|) + c\,\eta`.
* **rotary_embedding** -- each output coordinate is a 2-term dot product
  :math:`a\cos\phi \mp b\sin\phi`: cos/sin with error u_fn and stored (u_store), each product
  rounded (u_store), the sum :math:`\gamma_2(u_{acc})`, the output u_out, and the angle error
  moving the result by at most :math:`(|a| + |b|)\,\delta\phi`:
  :math:`c\,((u_{fn} + 2u_{store} + \gamma_2)(|a||c| + |b||s|) + (|a|+|b|)\,\delta\phi
  + u_{out}|y|) + c\,\eta`.
* **alibi_bias** -- :math:`-m_h (p_i - j)`, the distance an exact integer, the slope
  :math:`m_h = 2^{-8h/n}` from a power (relative error :math:`u_{acc}|\ln m_h| + u_{fn}`) or a
  running product of h factors (:math:`h\,u_{acc}`); both are covered by
  :math:`u_{acc}(|\ln m_h| + h + 2) + u_{fn}`, then u_store and u_out on the product.
"""

from __future__ import annotations

import numpy as np

from transpec.oracle.engine.dtypes import FloatArray
from transpec.oracle.engine.error_model import SAFETY, Units, gamma, term
from transpec.oracle.kernels.reference import Reference

#: roundings in forming an angle p·ω from ℓ = |ln ω| (per unit of ℓ + 1): docs §7.2
ANGLE_ROUNDINGS = 3.0


def angle_error(ref: Reference, un: Units) -> FloatArray:
    """δφ = |φ|·(3·u_acc·(ℓ + 1) + u_fn), ℓ = |ln ω| (docs/tolerance.md §7.2)."""
    angle = np.asarray(term(ref, "angle"), dtype=np.float64)
    ell = np.asarray(term(ref, "log_freq"), dtype=np.float64)
    return angle * (ANGLE_ROUNDINGS * un.acc * (ell + 1.0) + un.fn)


def embedding_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    c = SAFETY
    y = np.abs(ref.value)
    if float(term(ref, "scaled")) == 0.0:
        zero = np.zeros(y.shape)
        return (
            zero,
            {"internal": zero},
            "embedding: an exact copy of the rounded weight rows (bound 0, bitwise equality; "
            "docs/tolerance.md §7.1)",
        )
    internal = (un.fn + un.store + un.acc) * y
    output = un.out * y
    floor = np.full(y.shape, un.eta_out + un.eta_store)
    bound = c * (internal + output) + c * floor
    derivation = (
        "embedding·√d: c·((u_fn + u_store + u_acc + u_out)·|y|) + c·η; "
        f"c={c:g}, d={int(float(term(ref, 'd_model')))}, u_acc={un.acc:.3g}, "
        f"u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g} (docs/tolerance.md §7.1)"
    )
    return bound, {"internal": internal, "output": output, "floor": floor}, derivation


def sinusoidal_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    c = SAFETY
    pe = np.abs(ref.value)
    d_phi = angle_error(ref, un)
    function = (un.fn + un.store) * pe
    output = un.out * pe
    floor = np.full(pe.shape, un.eta_out + un.eta_store + un.eta_acc)
    bound = c * (d_phi + function + output) + c * floor
    worst = float(np.max(np.asarray(term(ref, "angle")))) if pe.size else 0.0
    derivation = (
        "sinusoidal_positional_encoding: c·(δφ + (u_fn + u_store + u_out)·|PE|) + c·η, "
        "δφ = |pω|·(3u_acc(|ln ω| + 1) + u_fn); "
        f"c={c:g}, max|pω|={worst:.4g}, u_acc={un.acc:.3g}, u_store={un.store:.3g}, "
        f"u_out={un.out:.3g}, u_fn={un.fn:.3g} (docs/tolerance.md §7.2)"
    )
    return bound, {"angle": d_phi, "function": function, "output": output}, derivation


def rotary_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    c = SAFETY
    y = np.abs(np.nan_to_num(ref.value, nan=0.0))
    g2 = gamma(2, un.acc)
    d_phi = angle_error(ref, un)
    pair = np.asarray(term(ref, "pair_abs"), dtype=np.float64)
    products = (un.fn + 2.0 * un.store + g2) * np.asarray(ref.abs_value)
    angle = pair * d_phi
    output = un.out * y
    floor = np.full(y.shape, un.eta_out + 2.0 * (un.eta_store + un.eta_acc))
    bound = c * (products + angle + output) + c * floor
    worst = float(np.max(np.asarray(term(ref, "angle")))) if y.size else 0.0
    derivation = (
        "rotary_embedding: c·((u_fn + 2u_store + γ_2)·(|a||cos φ| + |b||sin φ|) "
        "+ (|a| + |b|)·δφ + u_out·|y|) + c·η, δφ = |φ|·(3u_acc(|ln θ| + 1) + u_fn); "
        f"c={c:g}, max|φ|={worst:.4g}, γ_2={g2:.3g}, u_acc={un.acc:.3g}, "
        f"u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g} (docs/tolerance.md §7.3)"
    )
    return bound, {"products": products, "angle": angle, "output": output}, derivation


def alibi_rule(ref: Reference, un: Units) -> tuple[FloatArray, dict[str, FloatArray], str]:
    c = SAFETY
    b = np.abs(ref.value)
    log_slope = np.asarray(term(ref, "log_slope"), dtype=np.float64)
    head = np.asarray(term(ref, "head"), dtype=np.float64)
    slope = (un.acc * (log_slope + head + 2.0) + un.fn) * b
    stored = un.store * b
    output = un.out * b
    floor = np.full(b.shape, un.eta_out + un.eta_store)
    bound = c * (slope + stored + output) + c * floor
    derivation = (
        "alibi_bias: c·((u_acc(|ln m_h| + h + 2) + u_fn + u_store + u_out)·|B|) + c·η; "
        f"c={c:g}, u_acc={un.acc:.3g}, u_store={un.store:.3g}, u_out={un.out:.3g}, "
        f"u_fn={un.fn:.3g} (docs/tolerance.md §7.4)"
    )
    return bound, {"slope": slope, "stored": stored, "output": output}, derivation
