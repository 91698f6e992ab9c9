"""Sums of nonnegative products computed in float32, corrected upward into rigorous bounds.

The magnitudes of the attention bound (docs/tolerance.md §3.2: |scale|·|Q||K|ᵀ, P|V|,
(P∘C)|V|, (P∘D)|V|, Σ_j P_ij C_ij, ...) are sums of nonnegative products. Such a sum computed in
float32, in *any* order, cannot fall far below the exact one: with unit roundoff u = 2⁻²⁴, every
rounding of a nonnegative number x gives fl(x) ≥ (1 − u)·x − τ, τ = 2⁻¹²⁶ the smallest normal
number (the absolute loss of one rounding below it, whether the arithmetic underflows gradually
or flushes to zero). Along any path of k roundings the relative losses multiply to
(1 − u)^k ≥ 1 − k·u, and the absolute losses add up (a later rounding only shrinks them). So a
computed sum Ŝ of exact value S, with k roundings on its deepest path and absolute losses adding
to at most L, satisfies

    S ≤ (Ŝ + L) / (1 − k·u)

(docs/tolerance.md §3.2.2 counts k and L for each term). The operands are first scaled by exact
powers of two so that each is at most 1 (no float32 overflow: a sum of n products stays below n),
and the result is scaled back by the inverse power of two with :func:`numpy.ldexp` (exact unless
the float64 result itself under- or overflows). The matrix product must be a sum of products (as
BLAS's float32 product is; an algorithm with subtractions, such as Strassen's, would not be).
"""

from __future__ import annotations

import numpy as np

from transpec.oracle.engine.dtypes import FloatArray

#: float32's unit roundoff: the relative loss of one rounding to nearest
U32 = 2.0**-24
#: float32's smallest normal number: the absolute loss of one rounding below it (flushed or not)
TINY32 = 2.0**-126
#: roundings counted on top of a term's own: one covers every float64 rounding of combining the
#: blocks and of the correction itself (each 2⁻⁵³, fewer than 2²⁹ of them), two more make the
#: corrected term exceed the same term computed in float64, whose own rounding is below 2u
SPARE_ROUNDINGS = 3


def exponents(magnitude: FloatArray) -> np.ndarray:
    """The integer e with magnitude·2⁻ᵉ in [0.5, 1) (0 where the magnitude is 0), element-wise;
    ``magnitude`` must be finite and nonnegative."""
    return np.frexp(magnitude)[1]


def scaled_float32(magnitude: FloatArray, exponent: np.ndarray) -> np.ndarray:
    """magnitude·2⁻ᵉ (at most 1, computed in float64: exact but where it falls below float64's
    normal range, as ``ldexp``) rounded to float32; one pass, as a product with the float64
    power of two 2⁻ᵉ where that is a normal number (the same result as ``ldexp``)."""
    out = np.empty(np.broadcast_shapes(np.shape(magnitude), np.shape(exponent)), np.float32)
    if np.size(exponent) and int(np.max(exponent)) <= 1000 and int(np.min(exponent)) >= -1000:
        np.multiply(magnitude, np.ldexp(1.0, -exponent), out=out, casting="same_kind")
    else:
        np.copyto(out, np.ldexp(magnitude, -exponent), casting="same_kind")
    return out


def upward_factor(roundings: int) -> float:
    """1/(1 − (roundings + :data:`SPARE_ROUNDINGS`)·u): the exact sum is at most the computed one
    (plus its absolute losses) times this factor."""
    k = roundings + SPARE_ROUNDINGS
    if k * U32 >= 0.5:
        raise ValueError(f"too many float32 roundings ({roundings}) for an upward bound")
    return 1.0 / (1.0 - k * U32)


def looseness(roundings: int) -> float:
    """How much larger than the exact sum a corrected one can be, relatively, apart from the
    absolute losses: a computed sum is at most (1 + u)^k times the exact one, so the corrected
    sum is at most (1 + u)^k · :func:`upward_factor` (k) ≤ 1 + 2(k + spare)·u + O(u²)."""
    k = roundings + SPARE_ROUNDINGS
    return (1.0 + U32) ** k * upward_factor(roundings) - 1.0


#: a sum in the scaled units, plus its absolute losses, lies in [2⁻¹²⁷, 2⁴⁰] (or is 0): scaled
#: by 2^r for r in this range it stays a normal float64 number, so the scaling is exact
_EXACT_ROW_EXPONENTS = (-880, 960)


def scale_back(
    up: FloatArray, factor: float, row_exponent: np.ndarray | int, col_exponent: np.ndarray | int
) -> FloatArray:
    """up · factor · 2^(row_exponent + col_exponent), as float64, in place where it can be:
    ``up`` (..., rows, cols) with values 0 or in [2⁻¹²⁷, 2⁴⁰], ``factor`` in [0.5, 2),
    ``row_exponent`` (..., rows, 1) and ``col_exponent`` (..., 1, cols) integers (or 0).

    Equal, bit for bit, to ``numpy.ldexp(up * factor, row_exponent + col_exponent)``: when every
    row exponent keeps up·factor·2^r a normal number and every column exponent is one of a
    float64 power of two, the product is taken as two multiplications by the per-row factor
    factor·2^r and the per-column 2^c (a power of two scales a rounded product exactly, and the
    last multiplication rounds the exact result once, as ``ldexp`` does) without the exponent
    array of the whole shape; otherwise by ``ldexp``."""
    rows = np.asarray(row_exponent)
    cols = np.asarray(col_exponent)
    low, high = _EXACT_ROW_EXPONENTS
    if (
        rows.size
        and int(rows.min()) >= low
        and int(rows.max()) <= high
        and (cols.size == 0 or (int(cols.min()) >= -1074 and int(cols.max()) <= 1023))
    ):
        up *= np.ldexp(factor, rows)
        if cols.ndim or int(cols) != 0:
            up *= np.ldexp(1.0, cols)
        return up
    up *= factor
    return np.ldexp(up, rows + cols)
