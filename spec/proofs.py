r"""The catalogue of identities the specification rests on, each proved by a decision procedure.

The procedure (:func:`decide`) turns an identity between expressions of the definitions into a
rational-function identity and decides that:

1. every :math:`e^{t}` becomes an opaque positive function :math:`\varepsilon(t)`, split along
   sums in the exponent, :math:`e^{a + n b} = \varepsilon(a)\,\varepsilon(b)^n` for integer
   :math:`n` (the exponential law, the only fact used about exp);
2. every finite sum :math:`\sum_{j=a}^{b} f_j` over a *symbolic* range is normalized by
   linearity (terms split, factors free of :math:`j` pulled out, :math:`\sum_{j=a}^{b} c =
   (b - a + 1)\,c`, the index renamed canonically, and
   :math:`\sum_k \delta_{jk} f_k = f_j` for an index :math:`j` of the range, the premise of
   every statement about an entry :math:`j`) and then replaced by an opaque atom, so a
   statement proved this way holds for every length :math:`N`;
3. :math:`\log` of a product of positive factors splits, and :math:`\log \varepsilon(t) = t`;
4. a square root :math:`\sqrt{w}` has its radicand factored (which pulls out positive factors:
   :math:`\sqrt{a^2 w} = a\sqrt{w}` for :math:`a > 0`) and becomes an atom :math:`r` with
   :math:`r^2 = w`; any other function application becomes an opaque atom;
5. the difference of the two sides is brought to one fraction (``together``), its numerator
   expanded, reduced modulo the relations :math:`r^2 = w`, and every coefficient must
   ``cancel`` to exactly 0.

Each rewrite is an identity, so "decided equal" is a proof; nothing here samples values or calls
``simplify`` or ``Expr.equals``. Every proof also has a *negative control*: a deliberately broken
variant of the same statement that the same procedure must reject.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement

from transpec.spec.nodes import ApplyKeep, CausalKeep, LayerNormRows, RMSNormRows, RowSoftmax

__all__ = [
    "PROOFS",
    "Claim",
    "Proof",
    "ProofResult",
    "Step",
    "decide",
    "proof",
]


# ---------------------------------------------------------------------------------------------
# The decision procedure.
class _Exp(sp.Function):
    """An opaque stand-in for exp: positive, and nothing else is known about it."""

    is_positive = True
    is_real = True
    is_finite = True


_INDEX = sp.Symbol("iota", integer=True)


def _split_exp(expr: Any) -> Any:
    def one(arg: Any) -> Any:
        out = sp.Integer(1)
        for term in sp.Add.make_args(sp.expand(arg)):
            coeff, rest = term.as_coeff_Mul()
            if coeff.is_Integer and rest != 1:
                out *= _Exp(rest) ** coeff
            elif rest == 1:
                out *= sp.exp(coeff)  # a numeric exponent: exact constant
            else:
                out *= _Exp(term)
        return out

    return expr.replace(lambda e: isinstance(e, sp.exp), lambda e: one(e.args[0]))


def _linear_sum(s: sp.Sum) -> Any:
    if len(s.limits) != 1:
        raise ValueError("the decision procedure takes single-index sums")
    j, a, b = s.limits[0]
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(s.function)):
        free: list[Any] = []
        bound: list[Any] = []
        for f in sp.Mul.make_args(term):
            (bound if j in f.free_symbols else free).append(f)
        delta = next(
            (
                f
                for f in bound
                if isinstance(f, sp.KroneckerDelta) and any(j not in g.free_symbols for g in f.args)
            ),
            None,
        )
        if delta is not None:  # sifting: sum_j delta(t, j) f_j = f_t, t an index of the range
            target = next(g for g in delta.args if j not in g.free_symbols)
            rest = sp.Mul(*[f for f in bound if f is not delta]).xreplace({j: target})
            out += sp.Mul(*free) * rest
        elif not bound:
            out += sp.Mul(*free) * (b - a + 1)
        else:
            if sp.Mul(*bound).has(sp.Sum):  # renaming could capture an inner index
                raise ValueError("nested sums that depend on the outer index are not decided")
            summand = sp.Mul(*bound).xreplace({j: _INDEX})
            out += sp.Mul(*free) * sp.Sum(summand, (_INDEX, a, b))
    return out


def _bottom_up(expr: Any, rule: Callable[[Any], Any]) -> Any:
    if not isinstance(expr, sp.Basic) or expr.is_Atom:
        return expr
    args = [_bottom_up(a, rule) for a in expr.args]
    if any(x is not y for x, y in zip(args, expr.args, strict=True)):
        expr = expr.func(*args)
    return rule(expr)


class _Atoms:
    """Opaque atoms with a stable numbering within one decision."""

    def __init__(self) -> None:
        self.table: dict[Any, sp.Symbol] = {}
        self.relations: list[tuple[sp.Symbol, Any]] = []

    def atom(self, key: Any, positive: bool, prefix: str) -> sp.Symbol:
        if key not in self.table:
            name = f"{prefix}{len(self.table)}"
            self.table[key] = sp.Symbol(name, positive=True) if positive else sp.Symbol(name)
        return self.table[key]


def _normalize(expr: Any, atoms: _Atoms) -> Any:
    expr = sp.sympify(expr)
    expr = _split_exp(expr)
    expr = _bottom_up(expr, lambda e: _linear_sum(e) if isinstance(e, sp.Sum) else e)
    expr = _bottom_up(
        expr,
        lambda e: atoms.atom(e, bool(e.function.is_positive), "S") if isinstance(e, sp.Sum) else e,
    )
    expr = sp.expand_log(expr, force=False)
    expr = expr.replace(
        lambda e: isinstance(e, sp.log) and isinstance(e.args[0], _Exp),
        lambda e: e.args[0].args[0],
    )
    expr = expr.replace(lambda e: isinstance(e, _Exp), lambda e: atoms.atom(e, True, "E"))

    def radical(e: Any) -> Any:
        base, exponent = e.args
        new_base = sp.factor(sp.together(base))
        if new_base != base:
            return new_base**exponent
        twice = 2 * exponent
        key = ("sqrt", base)
        known = key in atoms.table
        r = atoms.atom(key, bool(base.is_positive), "R")
        if not known:
            atoms.relations.append((r, base))
        return r**twice

    for _ in range(3):  # factoring may expose a further radical
        expr = expr.replace(
            lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2 and not e.base.is_Number,
            radical,
        )
    expr = expr.replace(
        lambda e: isinstance(e, sp.Function) and not isinstance(e, sp.Piecewise),
        lambda e: atoms.atom(e, bool(e.is_positive), "F"),
    )
    return expr


def decide(lhs: Any, rhs: Any) -> bool:
    """True when ``lhs = rhs`` is decided to be an identity (see the module docstring)."""
    atoms = _Atoms()
    diff = _normalize(sp.sympify(lhs) - sp.sympify(rhs), atoms)
    if diff.has(sp.nan, sp.zoo):
        return False
    num, _ = sp.fraction(sp.together(diff))
    num = sp.expand(num)
    relations = atoms.relations
    radicals = [r for r, _ in relations]
    if not radicals:
        return bool(sp.cancel(num) == 0)
    poly = sp.Poly(num, *radicals)
    groups: dict[tuple[int, ...], Any] = {}
    for monomial, coeff in poly.terms():
        factor = sp.Integer(1)
        for (_, w), e in zip(relations, monomial, strict=True):
            factor *= w ** (e // 2)
        parity = tuple(e % 2 for e in monomial)
        groups[parity] = groups.get(parity, 0) + coeff * factor
    return all(sp.cancel(sp.together(c)) == 0 for c in groups.values())


# ---------------------------------------------------------------------------------------------
# Proof objects.
@dataclass(frozen=True)
class Claim:
    """One equation of a proof: ``lhs = rhs``, with what justifies it in words."""

    lhs: Any
    rhs: Any
    why: str = ""
    label: str = ""  # LaTeX name of the left side (e.g. P_{01}), shown before it

    def latex(self) -> str:
        lhs, rhs = sp.latex(self.lhs), sp.latex(self.rhs)
        parts = [self.label] if self.label else []
        parts += [lhs] if lhs != rhs or not self.label else []
        return " = ".join([*parts, rhs])


@dataclass(frozen=True)
class Step:
    """A checked equation: its LaTeX, its justification, and whether the procedure decided it."""

    latex: str
    why: str
    holds: bool
    seconds: float


@dataclass(frozen=True)
class ProofResult:
    name: str
    proved: bool
    steps: tuple[Step, ...]
    seconds: float

    @property
    def rejected(self) -> bool:
        return not self.proved


@dataclass(frozen=True)
class Proof:
    """A named identity of a block: ``statement`` (LaTeX), the checked ``steps`` and a
    ``broken`` variant (the negative control) that the same procedure must reject."""

    name: str
    block: str
    statement: str
    steps: Callable[[], Sequence[Claim]]
    broken: Callable[[], Sequence[Claim]]
    control: str

    @staticmethod
    def _check(name: str, claims: Sequence[Claim]) -> ProofResult:
        start = time.perf_counter()
        done = []
        for claim in claims:
            t0 = time.perf_counter()
            holds = decide(claim.lhs, claim.rhs)
            done.append(Step(claim.latex(), claim.why, holds, time.perf_counter() - t0))
        proved = bool(done) and all(s.holds for s in done)
        return ProofResult(name, proved, tuple(done), time.perf_counter() - start)

    def prove(self) -> ProofResult:
        """Check every step with :func:`decide`; proved when all hold."""
        return self._check(self.name, self.steps())

    def negative_control(self) -> ProofResult:
        """Check the broken variant; it must come back rejected (``proved`` False)."""
        return self._check(f"{self.name} (negative control)", self.broken())


# ---------------------------------------------------------------------------------------------
# Shared symbols and helpers.
N = sp.Symbol("N", integer=True, positive=True)
i, j = sp.symbols("i j", integer=True, nonnegative=True)
xs = sp.IndexedBase("x", real=True)
vs = sp.IndexedBase("v", real=True)
c, m, m0, m1, ma, mb = sp.symbols("c m m_{t-1} m_t m_a m_b", real=True)
a = sp.Symbol("a", positive=True)
b = sp.Symbol("b", real=True)
eps = sp.Symbol("epsilon", positive=True)
alpha = sp.Symbol("alpha", real=True)


def _row(n: Any) -> sp.MatrixSymbol:
    return sp.MatrixSymbol("x", 1, n)


def _as_vector(expr: Any, transform: Callable[[Any], Any] = lambda t: t) -> Any:
    """x[0, j] (a 1 x N row of the definitions) -> transform(x_j), for readable statements."""
    return expr.replace(
        lambda e: isinstance(e, MatrixElement) and str(e.parent.name) == "x",
        lambda e: transform(xs[e.j]),
    )


def _softmax_entry(index: Any, n: Any = N, transform: Callable[[Any], Any] = lambda t: t) -> Any:
    return _as_vector(RowSoftmax(_row(n))._entry(0, index), transform)


def _exp_sum(lo: Any, hi: Any, shift: Any = 0, weight: Any = 1) -> Any:
    return sp.Sum(sp.exp(xs[j] - shift) * weight, (j, lo, hi))


# ---------------------------------------------------------------------------------------------
# softmax
def _softmax_sum_steps(broken: bool = False) -> list[Claim]:
    p = _softmax_entry(j)
    if broken:  # a denominator that misses the last element
        p = sp.exp(xs[j]) / sp.Sum(sp.exp(xs[i]), (i, 0, N - 2))
    total = sp.Sum(p, (j, 0, N - 1))
    den = sp.Sum(sp.exp(xs[i]), (i, 0, N - 1))
    if broken:
        return [Claim(total, 1, "the rows sum to 1")]
    return [
        Claim(total, sp.Sum(sp.exp(xs[j]), (j, 0, N - 1)) / den, "the denominator is free of j"),
        Claim(sp.Sum(sp.exp(xs[j]), (j, 0, N - 1)) / den, 1, "the same sum, index renamed"),
        Claim(total, 1, "hence the rows sum to 1, for every N"),
    ]


def _shift_steps(broken: bool = False) -> list[Claim]:
    shifted = _softmax_entry(i, transform=lambda t: 2 * t if broken else t + c)
    plain = _softmax_entry(i)
    if broken:  # softmax is not invariant to scaling
        return [Claim(shifted, plain, "softmax(2x) = softmax(x)")]
    k = sp.Symbol("k", integer=True, nonnegative=True)
    return [
        Claim(sp.exp(xs[i] + c), sp.exp(c) * sp.exp(xs[i]), "the exponential law"),
        Claim(
            sp.Sum(sp.exp(xs[k] + c), (k, 0, N - 1)),
            sp.exp(c) * sp.Sum(sp.exp(xs[k]), (k, 0, N - 1)),
            "e^c is free of the index: it leaves the sum",
        ),
        Claim(shifted, plain, "e^c cancels, for every N and every real c"),
    ]


def _jacobian_steps(broken: bool = False) -> list[Claim]:
    claims: list[Claim] = []
    # every N: differentiate the definition; the sum's derivative sifts to e^{x_j}
    k = sp.Symbol("k", integer=True, nonnegative=True)
    total = sp.Sum(sp.exp(xs[k]), (k, 0, N - 1))
    p_i, p_j = _softmax_entry(i), _softmax_entry(j)
    delta = sp.KroneckerDelta(i, j)
    want_n = delta * p_i - (0 if broken else p_i * p_j)
    if not broken:
        claims.append(Claim(sp.diff(total, xs[j]), sp.exp(xs[j]), "the sum's derivative sifts"))
    claims.append(Claim(sp.diff(p_i, xs[j]), want_n, "diag(p) - p p^T, for every N"))
    n = 3
    xsym = sp.symbols(f"x_0:{n}", real=True)
    X = _row(n)
    p = [
        RowSoftmax(X)._entry(0, t).xreplace({X[0, u]: xsym[u] for u in range(n)}) for t in range(n)
    ]
    for r in range(n):
        for col in range(n):
            want = (p[r] if r == col else 0) - (0 if broken else p[r] * p[col])
            why = f"N = 3: entry ({r}, {col})"
            claims.append(Claim(sp.diff(p[r], xsym[col]), want, why))
    return claims


def _logsumexp_steps(broken: bool = False) -> list[Claim]:
    direct = sp.log(sp.Sum(sp.exp(xs[j]), (j, 0, N - 1)))
    stable = m + sp.log(sp.Sum(sp.exp(xs[j] + m if broken else xs[j] - m), (j, 0, N - 1)))
    if broken:
        return [Claim(stable, direct, "m + log sum e^(x_j + m) = log sum e^(x_j)")]
    return [
        Claim(
            sp.Sum(sp.exp(xs[j] - m), (j, 0, N - 1)),
            sp.exp(-m) * sp.Sum(sp.exp(xs[j]), (j, 0, N - 1)),
            "e^{-m} leaves the sum",
        ),
        Claim(stable, direct, "log e^{-m} = -m cancels the shift, for any real m and every N"),
    ]


# ---------------------------------------------------------------------------------------------
# streaming softmax
def _online_steps(broken: bool = False) -> list[Claim]:
    lo, hi, n0 = sp.symbols("s e n_0", integer=True, nonnegative=True)
    S_prev = sp.Sum(sp.exp(xs[j]), (j, 0, lo - 1))  # the keys seen so far
    A_prev = sp.Sum(sp.exp(xs[j]) * vs[j], (j, 0, lo - 1))
    l_prev = S_prev * sp.exp(-m0)  # invariant at step t-1
    acc_prev = A_prev * sp.exp(-m0)
    block_l = _exp_sum(lo, hi, m1)
    block_acc = _exp_sum(lo, hi, m1, vs[j])
    rescale = 1 if broken else sp.exp(m0 - m1)
    l_new = l_prev * rescale + block_l
    acc_new = acc_prev * sp.exp(m0 - m1) + block_acc
    S_new = sp.Sum(sp.exp(xs[j]), (j, 0, lo - 1)) + sp.Sum(sp.exp(xs[j]), (j, lo, hi))
    A_new = sp.Sum(sp.exp(xs[j]) * vs[j], (j, 0, lo - 1)) + sp.Sum(
        sp.exp(xs[j]) * vs[j], (j, lo, hi)
    )
    if broken:  # the running sum is not rescaled when the maximum moves
        return [Claim(l_new, S_new * sp.exp(-m1), "l_t without the factor e^{m_{t-1} - m_t}")]
    claims = [
        Claim(_exp_sum(0, n0, m1), sp.Sum(sp.exp(xs[j]), (j, 0, n0)) * sp.exp(-m1), "base case"),
        Claim(l_new, S_new * sp.exp(-m1), "l_t = l_{t-1} e^{m_{t-1}-m_t} + sum_block e^{x_j-m_t}"),
        Claim(acc_new, A_new * sp.exp(-m1), "acc_t likewise, with the values v_j"),
        Claim(acc_new / l_new, A_new / S_new, "acc_T / l_T is softmax(x) v for any maxima"),
    ]
    # and unrolled: three single-key steps, arbitrary running maxima m_1, m_2, m_3
    mm = sp.symbols("mu_1:4", real=True)
    x3, v3 = sp.symbols("x_1:4", real=True), sp.symbols("v_1:4", real=True)
    l_t, acc_t = sp.exp(x3[0] - mm[0]), sp.exp(x3[0] - mm[0]) * v3[0]
    for t in (1, 2):
        l_t = l_t * sp.exp(mm[t - 1] - mm[t]) + sp.exp(x3[t] - mm[t])
        acc_t = acc_t * sp.exp(mm[t - 1] - mm[t]) + sp.exp(x3[t] - mm[t]) * v3[t]
    w = [sp.exp(t) for t in x3]
    direct = sum(wi * vi for wi, vi in zip(w, v3, strict=True)) / sum(w)
    claims.append(Claim(acc_t / l_t, direct, "unrolled over three steps"))
    return claims


def _merge_steps(broken: bool = False) -> list[Claim]:
    lo, mid, hi = sp.symbols("s r e", integer=True, nonnegative=True)
    S_a, S_b = sp.Sum(sp.exp(xs[j]), (j, lo, mid)), sp.Sum(sp.exp(xs[j]), (j, mid + 1, hi))
    A_a = sp.Sum(sp.exp(xs[j]) * vs[j], (j, lo, mid))
    A_b = sp.Sum(sp.exp(xs[j]) * vs[j], (j, mid + 1, hi))
    l_a, l_b = S_a * sp.exp(-ma), S_b * sp.exp(-mb)
    acc_a, acc_b = A_a * sp.exp(-ma), A_b * sp.exp(-mb)
    l = l_a * sp.exp(ma - m) + l_b * (1 if broken else sp.exp(mb - m))
    acc = acc_a * sp.exp(ma - m) + acc_b * sp.exp(mb - m)
    if broken:
        return [Claim(l, (S_a + S_b) * sp.exp(-m), "merge without rescaling l_b")]
    return [
        Claim(l, (S_a + S_b) * sp.exp(-m), "l = l_a e^{m_a - m} + l_b e^{m_b - m}"),
        Claim(acc, (A_a + A_b) * sp.exp(-m), "acc likewise"),
        Claim(acc / l, (A_a + A_b) / (S_a + S_b), "the merged state is exact, for any m"),
    ]


# ---------------------------------------------------------------------------------------------
# masking
def _masked_steps(broken: bool = False) -> list[Claim]:
    n = 4
    s = sp.symbols("s_0:4", real=True)
    f = sp.Symbol("f", real=True)
    masked = (1, 3)
    keep = sp.ImmutableMatrix([[0 if t in masked else 1 for t in range(n)]])
    fill = f if broken else -sp.oo
    claims = []
    cap = sp.Symbol("c", positive=True)
    for label, scores in (
        ("", [s[t] for t in range(n)]),
        (" (softcap before the mask)", [cap * sp.tanh(s[t] / cap) for t in range(n)]),
    ):
        S = sp.ImmutableMatrix([scores])
        P = RowSoftmax(ApplyKeep(S, keep, fill)).as_explicit()
        kept_den = sum(sp.exp(scores[t]) for t in range(n) if t not in masked)
        for t in range(n):
            want = 0 if t in masked else sp.exp(scores[t]) / kept_den
            why = "masked key: weight exactly 0" if t in masked else "softmax over the kept keys"
            claims.append(Claim(P[0, t], want, why + label, f"P_{{0{t}}}"))
    if broken:  # a finite fill replaces the score: the weight is small, not zero
        return [cl for cl in claims if cl.rhs == 0][:1]
    return claims


def _causal_steps(bottom_right: bool, broken: bool = False) -> list[Claim]:
    claims = []
    scale = sp.Symbol("alpha", positive=True)
    for lq, lk in ((2, 3), (3, 2)):
        Q, K, V = (sp.MatrixSymbol(n_, r, 1) for n_, r in (("q", lq), ("k", lk), ("v", lk)))
        true_mask = CausalKeep(lq, lk, bottom_right)
        used = CausalKeep(lq, lk, not bottom_right) if broken else true_mask
        keep = sp.ImmutableMatrix(
            lq, lk, [int(used._entry(r, t) is sp.true) for r in range(lq) for t in range(lk)]
        )
        P = RowSoftmax(ApplyKeep(scale * Q * K.T, keep, -sp.oo)).as_explicit()
        O = (P * V).as_explicit()
        for r in range(lq):
            if all(keep[r, t] == 0 for t in range(lk)):  # fully masked row: output 0
                O = O.as_mutable()
                O[r, 0] = 0
            for t in range(lk):
                if true_mask._entry(r, t) is sp.true:
                    continue
                for var in (K[t, 0], V[t, 0]):
                    name = rf"\frac{{\partial o_{r}}}{{\partial {var.parent.name}_{t}}}"
                    why = f"Lq={lq}, Lk={lk}: key {t} is after query {r}"
                    claims.append(Claim(sp.diff(O[r, 0], var), 0, why, name))
    return claims


# ---------------------------------------------------------------------------------------------
# GQA
def _gqa_steps(broken: bool = False) -> list[Claim]:
    hq, hkv = 4, 2
    group = hq // hkv
    claims = []
    for mapping in ("interleave", "tile"):
        Ks = [sp.MatrixSymbol(f"K_{h}", 2, 1) for h in range(hkv)]
        Vs = [sp.MatrixSymbol(f"V_{h}", 2, 1) for h in range(hkv)]
        Qs = [sp.MatrixSymbol(f"Q_{h}", 1, 1) for h in range(hq)]
        # the layout a library builds: repeat_interleave (K0 K0 K1 K1) or tile (K0 K1 K0 K1)
        layout = (
            [h // group for h in range(hq)]
            if mapping == "interleave"
            else [h % hkv for h in range(hq)]
        )
        for h in range(hq):
            spec_kv = h // group if mapping == "interleave" else h % hkv
            if broken:  # the other mapping
                spec_kv = h % hkv if mapping == "interleave" else h // group
            ours = (RowSoftmax(Qs[h] * Ks[spec_kv].T) * Vs[spec_kv]).as_explicit()[0, 0]
            repeated = (RowSoftmax(Qs[h] * Ks[layout[h]].T) * Vs[layout[h]]).as_explicit()[0, 0]
            claims.append(Claim(ours, repeated, f"{mapping}: query head {h}"))
    return claims


# ---------------------------------------------------------------------------------------------
# norms
def _ln(transform: Callable[[Any], Any] = lambda t: t, unbiased: bool = False) -> Any:
    node = LayerNormRows(_row(N), 0, unbiased, True)
    return _as_vector(node._entry(0, j), transform)


def _rms(transform: Callable[[Any], Any] = lambda t: t, e: Any = 0) -> Any:
    return _as_vector(RMSNormRows(_row(N), e, True)._entry(0, j), transform)


def _ln_stats() -> tuple[Any, Any]:
    node = LayerNormRows(_row(N), 0, False, True)
    return _as_vector(node.mean(0)), _as_vector(node.variance(0))


def _ln_mean_steps(broken: bool = False) -> list[Claim]:
    y = _ln()
    if broken:  # scaled but not centred
        y = y + sp.Sum(xs[i], (i, 0, N - 1)) / N / RMSNormRows(_row(N), 0, True).denominator(0)
        return [Claim(sp.Sum(y, (j, 0, N - 1)) / N, 0, "mean of x / sigma")]
    mu, var = _ln_stats()
    centred = sp.Sum(xs[j] - mu, (j, 0, N - 1))
    total = sp.Sum(xs[j], (j, 0, N - 1))
    return [
        Claim(centred, total - N * mu, "linearity: the mean is free of j"),
        Claim(total - N * mu, 0, "the mean is (1/N) times the sum"),
        Claim(sp.Sum(y, (j, 0, N - 1)) / N, centred / (N * sp.sqrt(var)), "sigma is free of j"),
        Claim(sp.Sum(y, (j, 0, N - 1)) / N, 0, "mean of y at eps = 0, for every N"),
    ]


def _ln_var_steps(broken: bool = False) -> list[Claim]:
    y = _ln(unbiased=broken)
    if broken:
        return [Claim(sp.Sum(y**2, (j, 0, N - 1)) / N, 1, "with the unbiased variance")]
    mu, var = _ln_stats()
    return [
        Claim(sp.Sum((xs[j] - mu) ** 2, (j, 0, N - 1)), N * var, "the biased variance"),
        Claim(y**2, (xs[j] - mu) ** 2 / var, "sigma^2 = v at eps = 0"),
        Claim(sp.Sum(y**2, (j, 0, N - 1)) / N, 1, "biased variance, eps = 0, every N"),
    ]


def _ln_affine_steps(broken: bool = False) -> list[Claim]:
    scale = -a if broken else a
    claim = Claim(_ln(lambda t: scale * t + b), _ln(), "LN(a x + b) = LN(x), eps = 0, every N")
    if broken:
        return [claim]
    w = sp.Symbol("w", positive=True)
    return [Claim(sp.sqrt(a**2 * w), a * sp.sqrt(w), "the fact used: a > 0"), claim]


def _rms_unit_steps(broken: bool = False) -> list[Claim]:
    y = _rms(e=eps if broken else 0)
    if broken:
        return [Claim(sp.Sum(y**2, (j, 0, N - 1)) / N, 1, "with eps > 0")]
    ms = _as_vector(RMSNormRows(_row(N), 0, True).mean_square(0))
    return [
        Claim(sp.Sum(xs[j] ** 2, (j, 0, N - 1)), N * ms, "the mean square"),
        Claim(sp.Sum(y**2, (j, 0, N - 1)) / N, 1, "eps = 0, every N"),
    ]


def _rms_scale_steps(broken: bool = False) -> list[Claim]:
    scale = -a if broken else a
    claim = Claim(_rms(lambda t: scale * t), _rms(), "RMS(a x) = RMS(x), eps = 0, every N")
    if broken:
        return [claim]
    root = sp.sqrt(sp.Sum((a * xs[j]) ** 2, (j, 0, N - 1)) / N)
    return [
        Claim(root, a * sp.sqrt(sp.Sum(xs[j] ** 2, (j, 0, N - 1)) / N), "a > 0 leaves the root"),
        claim,
    ]


def _make(
    name: str, block: str, statement: str, build: Callable[..., list[Claim]], control: str
) -> Proof:
    return Proof(
        name=name,
        block=block,
        statement=statement,
        steps=lambda: build(),
        broken=lambda: build(broken=True),
        control=control,
    )


#: The catalogue, in order.
PROOFS: tuple[Proof, ...] = (
    _make(
        "softmax_rows_sum_to_one",
        "softmax",
        r"\sum_{j=0}^{N-1} \operatorname{softmax}(x)_j = 1 \quad \text{for every } N \ge 1",
        _softmax_sum_steps,
        "a denominator that misses the last element",
    ),
    _make(
        "softmax_shift_invariance",
        "softmax",
        r"\operatorname{softmax}(x + c\mathbf{1})_i = \operatorname{softmax}(x)_i"
        r" \quad \text{for every } N \text{ and real } c",
        _shift_steps,
        "scaling instead of shifting: softmax(2x) = softmax(x)",
    ),
    _make(
        "softmax_jacobian",
        "softmax",
        r"\frac{\partial p_i}{\partial x_j} = \delta_{ij} p_i - p_i p_j"
        r"\quad \text{for every } N \text{ (and entry by entry at } N = 3)",
        _jacobian_steps,
        "the Jacobian without the outer product: diag(p)",
    ),
    _make(
        "logsumexp_stable_shift",
        "logsumexp",
        r"m + \log \sum_j e^{x_j - m} = \log \sum_j e^{x_j}"
        r" \quad \text{for every real } m \text{ and every } N",
        _logsumexp_steps,
        "the shift with the wrong sign: m + log sum e^(x_j + m)",
    ),
    _make(
        "online_softmax_recurrence",
        "softmax",
        r"(m_t, \ell_t, a_t):\ \ell_t = \ell_{t-1} e^{m_{t-1} - m_t} + \sum_{j \in B_t}"
        r" e^{x_j - m_t},\ \frac{a_T}{\ell_T} = \frac{\sum_j e^{x_j} v_j}{\sum_j e^{x_j}}"
        r"\quad \text{for any running maxima}",
        _online_steps,
        "the running sum not rescaled when the maximum moves",
    ),
    _make(
        "online_softmax_merge",
        "softmax",
        r"\operatorname{merge}((m_a, \ell_a, a_a), (m_b, \ell_b, a_b)) "
        r"\text{ equals the state of the concatenated keys, for any } m",
        _merge_steps,
        "merging without rescaling the second state",
    ),
    _make(
        "masked_keys_zero_weight",
        "masking",
        r"M_{ij} = 0 \Rightarrow P_{ij} = 0 \text{ exactly, and the kept keys get the softmax"
        r" over the kept keys (with or without softcap)}",
        _masked_steps,
        "a finite fill (-1e9 style) instead of -inf",
    ),
    _make(
        "causal_top_left_no_future",
        "masking",
        r"j > i \Rightarrow \frac{\partial o_i}{\partial k_j} = "
        r"\frac{\partial o_i}{\partial v_j} = 0 \quad (L_q, L_k) \in \{(2,3), (3,2)\}",
        lambda broken=False: _causal_steps(False, broken),
        "the bottom-right mask checked against the top-left claim",
    ),
    _make(
        "causal_bottom_right_no_future",
        "masking",
        r"j > i + L_k - L_q \Rightarrow \frac{\partial o_i}{\partial k_j} = "
        r"\frac{\partial o_i}{\partial v_j} = 0 \quad (L_q, L_k) \in \{(2,3), (3,2)\}",
        lambda broken=False: _causal_steps(True, broken),
        "the top-left mask checked against the bottom-right claim",
    ),
    _make(
        "gqa_equals_repeated_kv",
        "attention",
        r"\operatorname{GQA}(Q, K, V)_h = \operatorname{attn}(Q_h, K'_h, V'_h),\ "
        r"K' = \operatorname{repeat\_interleave}(K) \text{ (or tile for the tiling map)}",
        _gqa_steps,
        "each head map checked against the other layout",
    ),
    _make(
        "layer_norm_zero_mean",
        "layer_norm",
        r"\epsilon = 0:\ \frac1N \sum_j \operatorname{LN}(x)_j = 0 \quad \text{for every } N",
        _ln_mean_steps,
        "x / sigma without centring",
    ),
    _make(
        "layer_norm_unit_variance",
        "layer_norm",
        r"\epsilon = 0:\ \frac1N \sum_j \operatorname{LN}(x)_j^2 = 1"
        r" \quad \text{(biased variance, every } N)",
        _ln_var_steps,
        "the unbiased variance gives (N-1)/N, not 1",
    ),
    _make(
        "layer_norm_affine_invariance",
        "layer_norm",
        r"\epsilon = 0,\ a > 0:\ \operatorname{LN}(a x + b) = \operatorname{LN}(x)",
        _ln_affine_steps,
        "a < 0 flips the sign",
    ),
    _make(
        "rms_norm_unit_rms",
        "rms_norm",
        r"\epsilon = 0:\ \frac1N \sum_j \operatorname{RMS}(x)_j^2 = 1 \quad \text{for every } N",
        _rms_unit_steps,
        "eps > 0",
    ),
    _make(
        "rms_norm_scale_invariance",
        "rms_norm",
        r"\epsilon = 0,\ a > 0:\ \operatorname{RMS}(a x) = \operatorname{RMS}(x)",
        _rms_scale_steps,
        "a < 0 flips the sign",
    ),
)


def proof(name: str) -> Proof:
    for pr in PROOFS:
        if pr.name == name:
            return pr
    raise ValueError(f"unknown proof {name!r}; known: {', '.join(p.name for p in PROOFS)}")


def main() -> int:
    """Print every proof with its time and its negative control's verdict."""
    ok = True
    for pr in PROOFS:
        res, neg = pr.prove(), pr.negative_control()
        ok &= res.proved and neg.rejected
        print(
            f"{pr.name:34s} {'proved' if res.proved else 'NOT PROVED':10s} {res.seconds:7.3f} s"
            f"   control {'rejected' if neg.rejected else 'ACCEPTED'} {neg.seconds:7.3f} s"
            f"   ({len(res.steps)} steps)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
