r"""The transformer's layer blocks, defined exactly in SymPy, and the proofs of their identities.

Definitions (exact semantics over explicit SymPy matrices at small concrete sizes; one sequence,
no batch axis; rows are positions, columns features, as ``batch_first`` inputs of PyTorch):

* :func:`linear` -- :math:`XW^T + b`;
* :func:`embedding` -- :math:`W[\text{ids}]`, optionally :math:`\cdot\sqrt{d}`;
* :func:`softmax_rows` -- :math:`P_{ij} = e^{S_{ij}} / \sum_k e^{S_{ik}}`, with a pluggable
  ``exp`` (SymPy's for the semantics, :class:`ExpAtoms` for the proofs); a score of
  :math:`-\infty` contributes :math:`e^{-\infty} = 0`;
* :func:`multi_head_attention` -- ``nn.MultiheadAttention``:
  :math:`Y = [O_1 \cdots O_H] W_o^T + b_o`,
  :math:`O_h = \operatorname{softmax}(\alpha\, Q_h K_h^T + M) V_h`, :math:`Q_h` the columns
  :math:`hD_h:(h+1)D_h` of :math:`Q = X_q W_q^T + b_q` (likewise K, V), :math:`\alpha = D_h^{-1/2}`;
* :func:`feed_forward`, :func:`layer_norm`, :func:`residual` (post-LN / pre-LN),
  :func:`encoder_layer`, :func:`decoder_layer` -- ``nn.TransformerEncoderLayer`` /
  ``nn.TransformerDecoderLayer`` (eval), parameters named as their ``state_dict`` keys.

The float64 references of :mod:`transpec.oracle.reference_layers` are checked against these
definitions at tiny sizes (tests/layers).

Proofs (:data:`LAYER_PROOFS`; the positional ones live in :mod:`transpec.spec.positional`, and
:func:`catalogue` lists both). Each proof is a decision procedure, never a heuristic:

* exact polynomial algebra over generic symbolic matrices (``expand`` to the canonical
  polynomial form, then compare with 0);
* softmax identities: every :math:`e^{s}` is replaced by a positive symbol keyed by the exact
  canonical polynomial form of :math:`s` (:class:`ExpAtoms`), so two exponentials are the same
  symbol exactly when their exponents are the same polynomial; the identity becomes an identity
  of rational functions in independent positive symbols, decided by ``cancel`` (a proof for all
  positive values covers the actual exponentials);
* no ``simplify``, no ``Expr.equals``, no sampling.

Each proof has negative controls: a deliberately broken variant that the same procedure rejects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.matrices.dense import MutableDenseMatrix as Matrix

__all__ = [
    "LAYER_PROOFS",
    "ExpAtoms",
    "Proof",
    "ProofResult",
    "Step",
    "catalogue",
    "decoder_layer",
    "embedding",
    "encoder_layer",
    "feed_forward",
    "layer_norm",
    "linear",
    "multi_head_attention",
    "residual",
    "run_all",
    "softmax_rows",
    "symbol_matrix",
]

ExpFn = Callable[[sp.Expr], sp.Expr]


# ---------------------------------------------------------------------------------------------
# Proof records


@dataclass(frozen=True)
class Step:
    """One step of a proof: what was done and what it gave (a short printed expression)."""

    description: str
    result: str = ""


@dataclass(frozen=True)
class ProofResult:
    """The outcome of running a decision procedure on one identity.

    ``proved`` is True when every residual reduced exactly to 0; ``residual`` is the first
    non-zero residual otherwise (printed), "0" when proved.
    """

    name: str
    statement: str
    proved: bool
    steps: tuple[Step, ...]
    residual: str
    seconds: float


@dataclass(frozen=True)
class Proof:
    """An identity, the procedure that decides it, and broken variants it must reject.

    ``check(control, steps)`` yields residuals (and appends what it does to ``steps``): the
    identity holds iff every residual is the exact zero; deciding stops at the first non-zero
    one. ``controls`` names the broken variants; ``check(name, steps)`` runs that variant.
    """

    name: str
    statement: str
    method: str
    check: Callable[[str | None, list[Step]], Iterator[sp.Expr]] = field(repr=False)
    controls: tuple[str, ...] = ()

    def run(self) -> ProofResult:
        """Decide the identity."""
        return _decide(self, None)

    def run_control(self, control: str) -> ProofResult:
        """Decide the broken variant ``control`` (a sound procedure reports it unproved)."""
        if control not in self.controls:
            raise ValueError(
                f"proof {self.name!r} has no control {control!r}; known: {', '.join(self.controls)}"
            )
        return _decide(self, control)


def _decide(proof: Proof, control: str | None) -> ProofResult:
    start = time.perf_counter()
    steps: list[Step] = []
    checked = 0
    nonzero: sp.Expr | None = None
    for residual in proof.check(control, steps):
        checked += 1
        if residual != 0:
            nonzero = residual
            break
    if nonzero is None:
        steps.append(Step(f"all {checked} residuals are exactly 0"))
    else:
        steps.append(Step(f"residual {checked} is not 0: rejected", _short(nonzero)))
    name = proof.name if control is None else f"{proof.name} [control: {control}]"
    return ProofResult(
        name=name,
        statement=proof.statement,
        proved=nonzero is None,
        steps=tuple(steps),
        residual="0" if nonzero is None else _short(nonzero),
        seconds=time.perf_counter() - start,
    )


def _short(expr: Any, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Decision helpers


def polynomial_residuals(lhs: Matrix, rhs: Matrix) -> Iterator[sp.Expr]:
    """Entrywise ``expand(lhs - rhs)``: the canonical polynomial form, 0 iff equal as
    polynomials. Refuses entries that are not polynomials; ``ValueError`` on shape mismatch."""
    if lhs.shape != rhs.shape:
        raise ValueError(f"shapes differ: {lhs.shape} vs {rhs.shape}")
    for a, b in zip(lhs, rhs, strict=True):
        d = sp.expand(a - b)
        if not d.is_polynomial(*d.free_symbols):
            raise ValueError(f"not a polynomial: {_short(d)}")
        yield d


def rational_residuals(lhs: Matrix, rhs: Matrix) -> Iterator[sp.Expr]:
    """Entrywise cross-multiplied difference: with a = N_a/D_a and b = N_b/D_b (``together``),
    the residual is ``expand(N_a D_b - N_b D_a)``, 0 iff a = b as rational functions. When
    ``a - b`` is already the literal 0 (identical expressions), that is the residual.

    Refuses entries that are not rational functions of their symbols (an ``exp`` left in, say),
    so a transcendental identity can never pass by accident.
    """
    if lhs.shape != rhs.shape:
        raise ValueError(f"shapes differ: {lhs.shape} vs {rhs.shape}")
    for a, b in zip(lhs, rhs, strict=True):
        for side in (a, b):
            if not side.is_rational_function(*side.free_symbols):
                raise ValueError(f"not a rational function: {_short(side)}")
        if a - b == 0:  # the same expression after SymPy's automatic canonical ordering
            yield sp.Integer(0)
            continue
        na, da = sp.fraction(sp.together(a))
        nb, db = sp.fraction(sp.together(b))
        if sp.expand(da) == 0 or sp.expand(db) == 0:
            raise ValueError("a denominator is identically 0")
        yield sp.expand(na * db - nb * da)


class ExpAtoms:
    r"""``exp`` for proofs: :math:`e^{s}` becomes a positive symbol keyed by ``expand(s)``.

    Two calls with exponents that are the same polynomial (after ``expand``) return the same
    symbol; :math:`e^{-\infty}` is 0. Exponents must be polynomials in their symbols (the
    scores of attention are), so the key is canonical.
    """

    def __init__(self, prefix: str = "e") -> None:
        self.prefix = prefix
        self.table: dict[sp.Expr, sp.Symbol] = {}

    def __call__(self, exponent: sp.Expr) -> sp.Expr:
        if exponent == -sp.oo:
            return sp.Integer(0)
        if exponent.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
            raise ValueError(f"exponent is not finite: {exponent}")
        key = sp.expand(exponent)
        if not key.is_polynomial(*key.free_symbols):
            raise ValueError(f"ExpAtoms needs polynomial exponents, got {_short(key)}")
        if key not in self.table:
            self.table[key] = sp.Symbol(f"{self.prefix}{len(self.table)}", positive=True)
        return self.table[key]


def symbol_matrix(name: str, rows: int, cols: int, **assumptions: Any) -> Matrix:
    """An explicit rows x cols matrix of fresh real symbols ``name_i_j``."""
    return Matrix(
        rows,
        cols,
        lambda i, j: sp.Symbol(f"{name}_{i}_{j}", real=True, **assumptions),
    )


def permutation_matrix(perm: Sequence[int]) -> Matrix:
    """P with (P X)[i] = X[perm[i]]."""
    n = len(perm)
    return Matrix(n, n, lambda i, j: 1 if perm[i] == j else 0)


# ---------------------------------------------------------------------------------------------
# Definitions


def linear(x: Matrix, weight: Matrix, bias: Matrix | None = None) -> Matrix:
    """X W^T + b (``F.linear``); ``bias`` a 1 x out row, added to every row."""
    y = x * weight.T
    if bias is not None:
        y = y + Matrix.vstack(*[bias] * y.rows) if y.rows else y
    return y


def embedding(ids: Sequence[int], weight: Matrix, *, scale: bool = False) -> Matrix:
    r"""Rows ``weight[ids[i]]``; times :math:`\sqrt{d}` when ``scale``."""
    out = Matrix.vstack(*[weight[i, :] for i in ids])
    return out * sp.sqrt(weight.cols) if scale else out


def softmax_rows(scores: Matrix, exp: ExpFn = sp.exp) -> Matrix:
    r"""Row softmax :math:`e^{S_{ij}} / \sum_k e^{S_{ik}}` (no max subtraction: exact
    semantics). A score of :math:`-\infty` contributes 0; a row of all :math:`-\infty` is 0/0 and
    raises ``ZeroDivisionError`` (the conventions decide such rows, see the reference)."""
    e = scores.applyfunc(exp)
    out = sp.zeros(*scores.shape)
    for i in range(scores.rows):
        total = sum(e[i, :])
        if total == 0:
            raise ZeroDivisionError(f"row {i} has every score -inf")
        for j in range(scores.cols):
            out[i, j] = e[i, j] / total
    return out


def _row(params: Mapping[str, Any], key: str) -> Matrix | None:
    value = params.get(key)
    if value is None:
        return None
    m = Matrix(value)
    return m.T if m.cols == 1 else m


def _bias_block(bias: Matrix | None, lo: int, hi: int) -> Matrix | None:
    return None if bias is None else bias[:, lo:hi]


def multi_head_attention(
    xq: Matrix,
    xk: Matrix,
    xv: Matrix,
    params: Mapping[str, Any],
    num_heads: int,
    *,
    mask: Matrix | None = None,
    scale: sp.Expr | None = None,
    exp: ExpFn = sp.exp,
) -> Matrix:
    r"""``nn.MultiheadAttention`` on one sequence (eval):

    .. math:: Y = [O_1 \cdots O_H]\,W_o^T + b_o,\qquad
              O_h = \operatorname{softmax}(\alpha\,Q_h K_h^T + M)\,V_h

    ``params``: ``in_proj_weight`` (3E x E; rows [0:E] Q, [E:2E] K, [2E:3E] V) or
    ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``; optional ``in_proj_bias`` (3E);
    ``out_proj.weight``; optional ``out_proj.bias``. ``mask`` is additive (0 / -oo), Lq x Lk.
    ``scale`` defaults to :math:`D_h^{-1/2}`.
    """
    e = xq.cols
    if e % num_heads:
        raise ValueError(f"embed_dim {e} is not divisible by num_heads {num_heads}")
    dh = e // num_heads
    if "in_proj_weight" in params:
        w = Matrix(params["in_proj_weight"])
        w_q, w_k, w_v = w[:e, :], w[e : 2 * e, :], w[2 * e :, :]
    else:
        w_q, w_k, w_v = (Matrix(params[f"{n}_proj_weight"]) for n in "qkv")
    b_in = _row(params, "in_proj_bias")
    q = linear(xq, w_q, _bias_block(b_in, 0, e))
    k = linear(xk, w_k, _bias_block(b_in, e, 2 * e))
    v = linear(xv, w_v, _bias_block(b_in, 2 * e, 3 * e))
    alpha = sp.Integer(1) / sp.sqrt(dh) if scale is None else scale
    heads = []
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        s = alpha * q[:, cols] * k[:, cols].T
        if mask is not None:
            s = s + mask
        heads.append(softmax_rows(s, exp) * v[:, cols])
    concat = Matrix.hstack(*heads)
    return linear(concat, Matrix(params["out_proj.weight"]), _row(params, "out_proj.bias"))


def causal_mask(size: int, *, allowed_future: int = 0) -> Matrix:
    """0 where key j <= i + allowed_future, -oo elsewhere (``allowed_future=0``: the causal
    mask of ``generate_square_subsequent_mask``)."""
    return Matrix(size, size, lambda i, j: 0 if j <= i + allowed_future else -sp.oo)


def relu(value: sp.Expr) -> sp.Expr:
    """max(x, 0)."""
    return sp.Max(value, 0)


def gelu(value: sp.Expr) -> sp.Expr:
    r""":math:`\tfrac12 x (1 + \operatorname{erf}(x/\sqrt2))`."""
    return value / 2 * (1 + sp.erf(value / sp.sqrt(2)))


def gelu_tanh(value: sp.Expr) -> sp.Expr:
    r""":math:`\tfrac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`."""
    c = sp.Rational(44715, 1000000)
    return value / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (value + c * value**3)))


#: nn.LayerNorm's default eps, 1e-5, as an exact rational.
DEFAULT_EPS = sp.Rational(1, 100000)

ACTIVATIONS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
}


def feed_forward(x: Matrix, params: Mapping[str, Any], activation: str = "relu") -> Matrix:
    r""":math:`\sigma(X W_1^T + b_1) W_2^T + b_2` with ``linear1.*``, ``linear2.*``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    hidden = linear(x, Matrix(params["linear1.weight"]), _row(params, "linear1.bias"))
    hidden = hidden.applyfunc(ACTIVATIONS[activation])
    return linear(hidden, Matrix(params["linear2.weight"]), _row(params, "linear2.bias"))


def layer_norm(x: Matrix, weight: Any, bias: Any, eps: sp.Expr) -> Matrix:
    r"""Row-wise :math:`(x - \mu)/\sqrt{\sigma^2 + \epsilon}\cdot\gamma + \beta`, biased
    variance (``nn.LayerNorm``)."""
    n = x.cols
    g = Matrix(weight).reshape(1, n)
    b = None if bias is None else Matrix(bias).reshape(1, n)
    out = sp.zeros(x.rows, n)
    for i in range(x.rows):
        mu = sum(x[i, :]) / n
        var = sum((x[i, j] - mu) ** 2 for j in range(n)) / n
        for j in range(n):
            out[i, j] = (x[i, j] - mu) / sp.sqrt(var + eps) * g[0, j] + (
                0 if b is None else b[0, j]
            )
    return out


def _sub(params: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def residual(
    x: Matrix,
    sublayer: Callable[[Matrix], Matrix],
    norm: Mapping[str, Any],
    eps: sp.Expr,
    *,
    norm_first: bool,
) -> Matrix:
    r"""post-LN :math:`\mathrm{LN}(x + f(x))` or pre-LN :math:`x + f(\mathrm{LN}(x))`."""
    if norm_first:
        return x + sublayer(layer_norm(x, norm["weight"], norm.get("bias"), eps))
    return layer_norm(x + sublayer(x), norm["weight"], norm.get("bias"), eps)


def encoder_layer(
    x: Matrix,
    params: Mapping[str, Any],
    nhead: int,
    *,
    mask: Matrix | None = None,
    norm_first: bool = False,
    activation: str = "relu",
    eps: sp.Expr = DEFAULT_EPS,
    scale: sp.Expr | None = None,
) -> Matrix:
    """``nn.TransformerEncoderLayer`` (eval) on one sequence: residual self-attention, then
    residual feed-forward, each with its LayerNorm (``norm1``, ``norm2``). ``scale`` is the
    attention scale (default :math:`D_h^{-1/2}`; a ``Float`` keeps a numeric evaluation
    numeric)."""
    sa = _sub(params, "self_attn.")

    def attend(y: Matrix) -> Matrix:
        return multi_head_attention(y, y, y, sa, nhead, mask=mask, scale=scale)

    def ffn(y: Matrix) -> Matrix:
        return feed_forward(y, params, activation)

    x = residual(x, attend, _sub(params, "norm1."), eps, norm_first=norm_first)
    return residual(x, ffn, _sub(params, "norm2."), eps, norm_first=norm_first)


def decoder_layer(
    x: Matrix,
    memory: Matrix,
    params: Mapping[str, Any],
    nhead: int,
    *,
    tgt_mask: Matrix | None = None,
    memory_mask: Matrix | None = None,
    norm_first: bool = False,
    activation: str = "relu",
    eps: sp.Expr = DEFAULT_EPS,
    scale: sp.Expr | None = None,
) -> Matrix:
    """``nn.TransformerDecoderLayer`` (eval) on one sequence: residual masked self-attention
    (``norm1``), residual cross-attention to ``memory`` (``norm2``), residual feed-forward
    (``norm3``). ``scale`` as in :func:`encoder_layer`."""
    sa, ca = _sub(params, "self_attn."), _sub(params, "multihead_attn.")

    def attend(y: Matrix) -> Matrix:
        return multi_head_attention(y, y, y, sa, nhead, mask=tgt_mask, scale=scale)

    def cross(y: Matrix) -> Matrix:
        return multi_head_attention(y, memory, memory, ca, nhead, mask=memory_mask, scale=scale)

    def ffn(y: Matrix) -> Matrix:
        return feed_forward(y, params, activation)

    x = residual(x, attend, _sub(params, "norm1."), eps, norm_first=norm_first)
    x = residual(x, cross, _sub(params, "norm2."), eps, norm_first=norm_first)
    return residual(x, ffn, _sub(params, "norm3."), eps, norm_first=norm_first)


# ---------------------------------------------------------------------------------------------
# Proofs


def _mha_params(e: int, *, biases: bool = True, prefix: str = "") -> dict[str, Matrix]:
    """Generic symbolic MHA parameters (fused in_proj), names as the state_dict."""
    params = {
        "in_proj_weight": symbol_matrix(f"{prefix}W", 3 * e, e),
        "out_proj.weight": symbol_matrix(f"{prefix}Wo", e, e),
    }
    if biases:
        params["in_proj_bias"] = symbol_matrix(f"{prefix}b", 1, 3 * e)
        params["out_proj.bias"] = symbol_matrix(f"{prefix}bo", 1, e)
    return params


def _concat_project(control: str | None, steps: list[Step]) -> Iterator[sp.Expr]:
    L, H, dh = 2, 3, 2
    e = H * dh
    heads = [symbol_matrix(f"O{h}", L, dh) for h in range(H)]
    w_o = symbol_matrix("Wo", e, e)
    pairing = list(range(H)) if control is None else [(h + 1) % H for h in range(H)]
    steps.append(Step(f"generic O_h ({L}x{dh}, H={H}) and W_o ({e}x{e}) as symbol matrices"))
    lhs = Matrix.hstack(*heads) * w_o.T
    rhs = sp.zeros(L, e)
    for h in range(H):
        g = pairing[h]
        rhs += heads[h] * w_o[:, g * dh : (g + 1) * dh].T
    steps.append(
        Step(
            "lhs = [O_1 ... O_H] W_o^T; rhs = sum_h O_h (W_o[:, block of head h])^T",
            "" if control is None else f"control: head h paired with block {pairing[h]}",
        )
    )
    steps.append(Step("residual: expand(lhs - rhs), entrywise"))
    yield from polynomial_residuals(lhs, rhs)


def _split_heads(control: str | None, steps: list[Step]) -> Iterator[sp.Expr]:
    L, H, dh = 2, 2, 2
    e = H * dh
    x = symbol_matrix("X", L, e)
    w = symbol_matrix("W", e, e)
    b = symbol_matrix("b", 1, e)
    steps.append(Step(f"generic X ({L}x{e}), W ({e}x{e}), b (1x{e}); H={H}, D_h={dh}"))
    steps.append(
        Step("residual: expand((X W^T + b)[:, block h] - (X W[block h, :]^T + b[block h]))")
    )
    full = linear(x, w, b)
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        if control == "columns of W instead of rows":
            per_head = linear(x, w[:, rows].T, b[:, rows])
        else:
            per_head = linear(x, w[rows, :], b[:, rows])
        yield from polynomial_residuals(full[:, rows], per_head)


_PERMUTATIONS_3 = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _self_attention_equivariance(control: str | None, steps: list[Step]) -> Iterator[sp.Expr]:
    L, e, H = 3, 2, 2
    x = symbol_matrix("x", L, e)
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    pe = symbol_matrix("pe", L, e) if control == "with a positional encoding" else sp.zeros(L, e)
    mask = causal_mask(L) if control == "with the causal mask" else None
    exp = ExpAtoms()
    steps.append(
        Step(
            f"f(X) = MHA(X + PE, X + PE, X + PE), L={L}, E={e}, H={H}, generic in_proj, "
            "out_proj, biases and scale alpha",
            "PE = 0" if control is None else f"control: {control}",
        )
    )
    steps.append(Step("exp(s) -> positive symbol keyed by expand(s) (ExpAtoms)"))
    steps.append(Step("residual: cross-multiplied f(P X) - P f(X), all 6 permutations P"))

    def f(inp: Matrix) -> Matrix:
        y = inp + pe
        return multi_head_attention(y, y, y, params, H, mask=mask, scale=alpha, exp=exp)

    base = f(x)
    for perm in _PERMUTATIONS_3:
        p = permutation_matrix(perm)
        yield from rational_residuals(f(p * x), p * base)


def _causal_independence(control: str | None, steps: list[Step]) -> Iterator[sp.Expr]:
    L, e, H = 3, 2, 2
    x = symbol_matrix("x", L, e)
    y = symbol_matrix("y", L, e)  # the replacement future tokens
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    allowed = 1 if control == "mask lets each query see one future key" else 0
    mask = causal_mask(L, allowed_future=allowed)
    exp = ExpAtoms()
    steps.append(
        Step(
            f"f(X) = MHA(X, X, X, mask), L={L}, E={e}, H={H}, generic parameters, mask 0 for "
            f"j <= i + {allowed} and -oo above (exp(-oo) = 0)"
        )
    )
    steps.append(Step("exp(s) -> positive symbol keyed by expand(s) (ExpAtoms)"))
    steps.append(Step("residual: cross-multiplied f(X')[i] - f(X)[i], X' = X with rows > i fresh"))

    def f(inp: Matrix) -> Matrix:
        return multi_head_attention(inp, inp, inp, params, H, mask=mask, scale=alpha, exp=exp)

    base = f(x)
    for i in range(L - 1):
        changed = Matrix.vstack(x[: i + 1, :], y[i + 1 :, :])
        yield from rational_residuals(f(changed)[i, :], base[i, :])


def _cross_attention_invariance(control: str | None, steps: list[Step]) -> Iterator[sp.Expr]:
    lt, s, e, H = 2, 3, 2, 2
    t = symbol_matrix("t", lt, e)
    m = symbol_matrix("m", s, e)
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    pe = symbol_matrix("pe", s, e) if control == "memory with a positional encoding" else None
    kpm = None
    if control == "key padding mask not permuted with the memory":
        kpm = Matrix([[0, -sp.oo, 0]] * lt)
    exp = ExpAtoms()
    steps.append(
        Step(
            f"f(M) = MHA(T, M, M), Lt={lt}, S={s}, E={e}, H={H}, generic parameters",
            "" if control is None else f"control: {control}",
        )
    )
    steps.append(Step("exp(s) -> positive symbol keyed by expand(s) (ExpAtoms)"))
    steps.append(Step("residual: cross-multiplied f(P M) - f(M), all 6 permutations P"))

    def f(mem: Matrix) -> Matrix:
        if pe is not None:
            mem = mem + pe
        return multi_head_attention(t, mem, mem, params, H, mask=kpm, scale=alpha, exp=exp)

    base = f(m)
    for perm in _PERMUTATIONS_3:
        yield from rational_residuals(f(permutation_matrix(perm) * m), base)


LAYER_PROOFS: tuple[Proof, ...] = (
    Proof(
        "mha_concat_project",
        "[O_1 ... O_H] W_o^T = sum_h O_h W_o[:, hD_h:(h+1)D_h]^T (concat-then-project equals "
        "the sum of per-head projections)",
        "exact polynomial algebra on generic symbolic matrices",
        _concat_project,
        ("heads paired with the wrong column blocks",),
    ),
    Proof(
        "mha_split_heads",
        "(X W^T + b)[:, hD_h:(h+1)D_h] = X W[hD_h:(h+1)D_h, :]^T + b[hD_h:(h+1)D_h] (head h "
        "projects with its row block of the projection)",
        "exact polynomial algebra on generic symbolic matrices",
        _split_heads,
        ("columns of W instead of rows",),
    ),
    Proof(
        "self_attention_permutation_equivariance",
        "MHA(PX, PX, PX) = P MHA(X, X, X) for every permutation P, without positional encoding",
        "exp atoms keyed by exact exponents, rational-function cancellation",
        _self_attention_equivariance,
        ("with a positional encoding", "with the causal mask"),
    ),
    Proof(
        "masked_self_attention_causality",
        "under the causal mask, output position i of self-attention does not depend on the "
        "tokens after i",
        "exp atoms keyed by exact exponents, rational-function cancellation",
        _causal_independence,
        ("mask lets each query see one future key",),
    ),
    Proof(
        "cross_attention_memory_permutation_invariance",
        "MHA(T, PM, PM) = MHA(T, M, M) for every permutation P of the encoder positions, "
        "with no mask or encoding that distinguishes them",
        "exp atoms keyed by exact exponents, rational-function cancellation",
        _cross_attention_invariance,
        (
            "memory with a positional encoding",
            "key padding mask not permuted with the memory",
        ),
    ),
)


def catalogue() -> tuple[Proof, ...]:
    """Every layer and positional proof."""
    from transpec.spec.positional import POSITIONAL_PROOFS

    return LAYER_PROOFS + POSITIONAL_PROOFS


def run_all(*, controls: bool = False) -> list[ProofResult]:
    """Run the catalogue (and, with ``controls``, every negative control)."""
    results = []
    for proof in catalogue():
        results.append(proof.run())
        if controls:
            results.extend(proof.run_control(c) for c in proof.controls)
    return results
