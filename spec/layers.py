r"""The transformer's layer blocks, defined exactly in SymPy, and the proofs of their identities.

Definitions (exact semantics over explicit SymPy matrices at small concrete sizes; one sequence,
no batch axis; rows are positions, columns features, as ``batch_first`` inputs of PyTorch):

* :func:`linear` -- :math:`XW^T + b`;
* :func:`embedding` -- :math:`W[\text{ids}]`, optionally :math:`\cdot\sqrt{d}`;
* :func:`softmax_rows` -- :math:`P_{ij} = e^{S_{ij}} / \sum_k e^{S_{ik}}` (no max
  subtraction: exact semantics); a score of :math:`-\infty` contributes :math:`e^{-\infty} = 0`;
* :func:`multi_head_attention` -- ``nn.MultiheadAttention``:
  :math:`Y = [O_1 \cdots O_H] W_o^T + b_o`,
  :math:`O_h = \operatorname{softmax}(\alpha\, Q_h K_h^T + M) V_h`, :math:`Q_h` the columns
  :math:`hD_h:(h+1)D_h` of :math:`Q = X_q W_q^T + b_q` (likewise K, V), :math:`\alpha = D_h^{-1/2}`;
* :func:`silu` -- :math:`z\,\sigma(z) = z / (1 + e^{-z})`, and :func:`swiglu_feed_forward` --
  LLaMA's bias-free :math:`(\operatorname{silu}(XW_1^T) \odot XW_3^T)\,W_2^T`;
* :func:`feed_forward`, :func:`layer_norm`, :func:`residual` (post-LN / pre-LN),
  :func:`encoder_layer`, :func:`decoder_layer` -- ``nn.TransformerEncoderLayer`` /
  ``nn.TransformerDecoderLayer`` (eval), parameters named as their ``state_dict`` keys.

The float64 references of :mod:`transpec.oracle.layers.reference` are checked against these
definitions at tiny sizes (tests/layers).

Proofs (:data:`LAYER_PROOFS`; the positional ones live in :mod:`transpec.spec.positional`, and
:func:`catalogue` lists both). They are :class:`transpec.spec.proofs.Proof` objects with the
same result and step records, so they list together with :data:`transpec.spec.proofs.PROOFS`;
each decides its claims with a decision procedure, never a heuristic:

* :func:`decide_polynomial` -- exact polynomial algebra over generic symbolic matrices
  (``expand``, the canonical polynomial form, compared with 0);
* :func:`decide_exponential` -- softmax identities: every :math:`e^{s}` becomes a positive
  symbol keyed by the exact canonical polynomial form of :math:`s` (:class:`ExpAtoms`), so two
  exponentials are the same symbol exactly when their exponents are the same polynomial; the
  claim becomes an identity of rational functions in independent positive symbols, decided by
  cross-multiplying and expanding (a proof for all positive values covers the exponentials);
* no ``simplify``, no ``Expr.equals``, no sampling.

Each proof has negative controls: deliberately broken variants the same procedure rejects.
Run ``python -m transpec.spec.layers`` to print every proof with its time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.matrices.dense import MutableDenseMatrix as Matrix

from transpec.spec.proofs import Claim, Proof, ProofResult, Step

__all__ = [
    "LAYER_PROOFS",
    "DecidedProof",
    "ExpAtoms",
    "catalogue",
    "causal_mask",
    "decide_exponential",
    "decide_polynomial",
    "decided_proof",
    "decoder_layer",
    "embedding",
    "encoder_layer",
    "feed_forward",
    "layer_norm",
    "linear",
    "multi_head_attention",
    "permutation_matrix",
    "rational_residual",
    "residual",
    "run_all",
    "sigmoid",
    "silu",
    "softmax_rows",
    "swiglu_feed_forward",
    "symbol_matrix",
]

ExpFn = Callable[[sp.Expr], sp.Expr]


# ---------------------------------------------------------------------------------------------
# Decision procedures. Each takes one claim (lhs, rhs: expressions or matrices of the same
# shape) and decides it exactly; each returns (holds, first non-zero residual or 0).

Decider = Callable[[Any, Any], tuple[bool, sp.Expr]]


def _pairs(lhs: Any, rhs: Any) -> list[tuple[sp.Expr, sp.Expr]]:
    if isinstance(lhs, sp.MatrixBase) or isinstance(rhs, sp.MatrixBase):
        if lhs.shape != rhs.shape:
            raise ValueError(f"shapes differ: {lhs.shape} vs {rhs.shape}")
        return list(zip(lhs, rhs, strict=True))
    return [(sp.sympify(lhs), sp.sympify(rhs))]


def decide_polynomial(lhs: Any, rhs: Any) -> tuple[bool, sp.Expr]:
    """Entrywise ``expand(lhs - rhs)``, the canonical form of a polynomial: the claim holds iff
    every entry expands to 0. Refuses entries that are not polynomials."""
    for a, b in _pairs(lhs, rhs):
        d = sp.expand(a - b)
        if not d.is_polynomial(*d.free_symbols):
            raise ValueError(f"not a polynomial: {_short(d)}")
        if d != 0:
            return False, d
    return True, sp.Integer(0)


def rational_residual(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """``expand(N_a D_b - N_b D_a)`` with a = N_a/D_a, b = N_b/D_b (``together``): 0 iff a = b
    as rational functions (the literal 0 when a - b already is). Refuses anything that is not a
    rational function of its symbols, so a transcendental identity never passes by accident."""
    for side in (a, b):
        if not side.is_rational_function(*side.free_symbols):
            raise ValueError(f"not a rational function: {_short(side)}")
    if a - b == 0:  # identical expressions after SymPy's automatic canonical ordering
        return sp.Integer(0)
    na, da = sp.fraction(sp.together(a))
    nb, db = sp.fraction(sp.together(b))
    if sp.expand(da) == 0 or sp.expand(db) == 0:
        raise ValueError("a denominator is identically 0")
    return sp.expand(na * db - nb * da)


class ExpAtoms:
    r""":math:`e^{s}` -> a positive symbol keyed by ``expand(s)``; :math:`e^{-\infty} = 0`.

    Two exponentials become the same symbol exactly when their exponents are the same
    polynomial (``expand`` is canonical on polynomials); exponents must be polynomials. A claim
    proved for all positive values of the symbols holds for the actual exponentials.
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

    def substitute(self, expr: sp.Expr) -> sp.Expr:
        """Every ``exp(s)`` in ``expr`` replaced by its atom."""
        return expr.replace(lambda e: isinstance(e, sp.exp), lambda e: self(e.args[0]))


def decide_exponential(lhs: Any, rhs: Any) -> tuple[bool, sp.Expr]:
    """Softmax identities: every ``exp(s)`` on both sides becomes its :class:`ExpAtoms`
    symbol (one table for the claim), then :func:`rational_residual` entrywise."""
    atoms = ExpAtoms()
    for a, b in _pairs(lhs, rhs):
        r = rational_residual(atoms.substitute(a), atoms.substitute(b))
        if r != 0:
            return False, r
    return True, sp.Integer(0)


def _short(expr: Any, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class DecidedProof(Proof):
    """A proof of the catalogue of :mod:`transpec.spec.proofs` whose claims are decided by
    ``decider`` (:func:`decide_polynomial`, :func:`decide_exponential`, or the circle reduction
    of :mod:`transpec.spec.positional`) instead of :func:`transpec.spec.proofs.decide`.

    ``steps()`` builds the claims of the identity and ``broken()`` those of the first negative
    control; ``controls`` names every negative control and ``build(control)`` builds any of
    them. Results are the shared :class:`~transpec.spec.proofs.ProofResult` and
    :class:`~transpec.spec.proofs.Step`; a step's ``latex`` is the claim's label (the claims
    are matrices too large to print).
    """

    decider: Decider = decide_polynomial
    build: Callable[[str | None], Sequence[Claim]] = field(default=lambda control: (), repr=False)
    controls: tuple[str, ...] = ()
    method: str = ""

    def _decide(self, title: str, control: str | None) -> ProofResult:
        """Build the claims (timed too) and decide them in order."""
        start = time.perf_counter()
        done = []
        for claim in self.build(control):
            t0 = time.perf_counter()
            holds, _ = self.decider(claim.lhs, claim.rhs)
            done.append(Step(claim.label, claim.why, holds, time.perf_counter() - t0))
            if not holds:
                break  # one failed claim decides the proof; the rest would only cost time
        proved = bool(done) and all(st.holds for st in done)
        return ProofResult(title, proved, tuple(done), time.perf_counter() - start)

    def prove(self) -> ProofResult:
        """Decide every claim of the identity; proved when all hold."""
        return self._decide(self.name, None)

    def negative_control(self) -> ProofResult:
        """Decide the first broken variant (:attr:`control`); it must come back rejected."""
        return self.run_control(self.control)

    def run_control(self, control: str) -> ProofResult:
        """Decide the broken variant ``control``; a sound procedure rejects it."""
        if control not in self.controls:
            raise ValueError(
                f"proof {self.name!r} has no control {control!r}; known: {', '.join(self.controls)}"
            )
        return self._decide(f"{self.name} (negative control: {control})", control)


def decided_proof(
    name: str,
    block: str,
    statement: str,
    method: str,
    decider: Decider,
    build: Callable[[str | None], Sequence[Claim]],
    controls: tuple[str, ...],
) -> DecidedProof:
    """A :class:`DecidedProof` with ``steps``/``broken`` wired to ``build``."""
    if not controls:
        raise ValueError(f"proof {name!r} needs at least one negative control")
    return DecidedProof(
        name=name,
        block=block,
        statement=statement,
        steps=lambda: build(None),
        broken=lambda: build(controls[0]),
        control=controls[0],
        decider=decider,
        build=build,
        controls=controls,
        method=method,
    )


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


def sigmoid(value: sp.Expr, exp: ExpFn = sp.exp) -> sp.Expr:
    r""":math:`\sigma(z) = 1 / (1 + e^{-z})`."""
    return 1 / (1 + exp(-value))


def silu(value: sp.Expr, exp: ExpFn = sp.exp) -> sp.Expr:
    r""":math:`\operatorname{silu}(z) = z\,\sigma(z) = z / (1 + e^{-z})` (``F.silu``, the
    swish of LLaMA's gate)."""
    return value * sigmoid(value, exp)


def swiglu_feed_forward(x: Matrix, params: Mapping[str, Any], exp: ExpFn = sp.exp) -> Matrix:
    r"""LLaMA's SwiGLU FFN, bias-free, rows of ``x`` the tokens:

    .. math:: \mathrm{SwiGLU}(X) = \big(\operatorname{silu}(X W_1^\top) \odot X W_3^\top\big)
              W_2^\top

    with ``params`` ``"w1.weight"`` (hidden x d, the gate), ``"w3.weight"`` (hidden x d, the up
    projection), ``"w2.weight"`` (d x hidden, the down projection); silu elementwise, ⊙ the
    elementwise product."""
    gate = linear(x, Matrix(params["w1.weight"])).applyfunc(lambda z: silu(z, exp))
    up = linear(x, Matrix(params["w3.weight"]))
    return linear(gate.multiply_elementwise(up), Matrix(params["w2.weight"]))


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


def _mha_params(e: int, *, biases: bool = True) -> dict[str, Matrix]:
    """Generic symbolic MHA parameters (fused in_proj), named as the state_dict."""
    params = {
        "in_proj_weight": symbol_matrix("W", 3 * e, e),
        "out_proj.weight": symbol_matrix("Wo", e, e),
    }
    if biases:
        params["in_proj_bias"] = symbol_matrix("b", 1, 3 * e)
        params["out_proj.bias"] = symbol_matrix("bo", 1, e)
    return params


_PERMUTATIONS_3 = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _perm_latex(perm: Sequence[int]) -> str:
    return r"\pi = (" + ",".join(str(v) for v in perm) + ")"


def _concat_project_claims(control: str | None) -> list[Claim]:
    L, H, dh = 2, 3, 2
    e = H * dh
    heads = [symbol_matrix(f"O{h}", L, dh) for h in range(H)]
    w_o = symbol_matrix("Wo", e, e)
    pairing = list(range(H)) if control is None else [(h + 1) % H for h in range(H)]
    rhs = sp.zeros(L, e)
    for h in range(H):
        g = pairing[h]
        rhs += heads[h] * w_o[:, g * dh : (g + 1) * dh].T
    return [
        Claim(
            Matrix.hstack(*heads) * w_o.T,
            rhs,
            f"generic O_h ({L}x{dh}), H={H}, W_o ({e}x{e}); expand, entrywise",
            r"[O_1 \cdots O_H]\,W_o^\top = \sum_h O_h\,W_o[:, hD_h{:}(h+1)D_h]^\top",
        )
    ]


def _split_heads_claims(control: str | None) -> list[Claim]:
    L, H, dh = 2, 2, 2
    e = H * dh
    x = symbol_matrix("X", L, e)
    w = symbol_matrix("W", e, e)
    b = symbol_matrix("b", 1, e)
    full = linear(x, w, b)
    claims = []
    for h in range(H):
        block = slice(h * dh, (h + 1) * dh)
        if control == "columns of W instead of rows":
            per_head = linear(x, w[:, block].T, b[:, block])
        else:
            per_head = linear(x, w[block, :], b[:, block])
        claims.append(
            Claim(
                full[:, block],
                per_head,
                f"generic X ({L}x{e}), W, b; head {h}; expand, entrywise",
                rf"(XW^\top + b)[:, B_{h}] = X\,W[B_{h}, :]^\top + b[B_{h}]",
            )
        )
    return claims


def _self_attention_claims(control: str | None) -> list[Claim]:
    L, e, H = 3, 2, 2
    x = symbol_matrix("x", L, e)
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    pe = symbol_matrix("pe", L, e) if control == "with a positional encoding" else sp.zeros(L, e)
    mask = causal_mask(L) if control == "with the causal mask" else None

    def f(inp: Matrix) -> Matrix:
        y = inp + pe
        return multi_head_attention(y, y, y, params, H, mask=mask, scale=alpha)

    base = f(x)
    claims = []
    for perm in _PERMUTATIONS_3:
        p = permutation_matrix(perm)
        claims.append(
            Claim(
                f(p * x),
                p * base,
                f"L={L}, E={e}, H={H}, generic in_proj, out_proj, biases, scale; "
                "exp atoms, cross-multiplied",
                r"f(PX) = P f(X),\ " + _perm_latex(perm),
            )
        )
    return claims


def _causal_claims(control: str | None) -> list[Claim]:
    L, e, H = 3, 2, 2
    x = symbol_matrix("x", L, e)
    y = symbol_matrix("y", L, e)  # the replacement future tokens
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    allowed = 1 if control == "mask lets each query see one future key" else 0
    mask = causal_mask(L, allowed_future=allowed)

    def f(inp: Matrix) -> Matrix:
        return multi_head_attention(inp, inp, inp, params, H, mask=mask, scale=alpha)

    base = f(x)
    claims = []
    for i in range(L - 1):
        changed = Matrix.vstack(x[: i + 1, :], y[i + 1 :, :])
        claims.append(
            Claim(
                f(changed)[i, :],
                base[i, :],
                f"L={L}, E={e}, H={H}, mask -inf for j > i + {allowed}; rows after {i} "
                "replaced by fresh symbols; exp atoms, cross-multiplied",
                rf"f(X')_{{{i}}} = f(X)_{{{i}}},\ X'_{{j}} = Y_{{j}}\ (j > {i})",
            )
        )
    return claims


def _cross_attention_claims(control: str | None) -> list[Claim]:
    lt, s, e, H = 2, 3, 2, 2
    t = symbol_matrix("t", lt, e)
    m = symbol_matrix("m", s, e)
    params = _mha_params(e)
    alpha = sp.Symbol("alpha", positive=True)
    pe = symbol_matrix("pe", s, e) if control == "memory with a positional encoding" else None
    kpm = None
    if control == "key padding mask not permuted with the memory":
        kpm = Matrix([[0, -sp.oo, 0]] * lt)

    def f(mem: Matrix) -> Matrix:
        if pe is not None:
            mem = mem + pe
        return multi_head_attention(t, mem, mem, params, H, mask=kpm, scale=alpha)

    base = f(m)
    claims = []
    for perm in _PERMUTATIONS_3:
        claims.append(
            Claim(
                f(permutation_matrix(perm) * m),
                base,
                f"Lt={lt}, S={s}, E={e}, H={H}, generic parameters; exp atoms, cross-multiplied",
                r"f(T, PM) = f(T, M),\ " + _perm_latex(perm),
            )
        )
    return claims


def _swiglu_params(d: int, hidden: int, tag: str = "") -> dict[str, Matrix]:
    """Generic symbolic SwiGLU weights, named as the state_dict."""
    return {
        "w1.weight": symbol_matrix(f"A{tag}", hidden, d),
        "w2.weight": symbol_matrix(f"D{tag}", d, hidden),
        "w3.weight": symbol_matrix(f"U{tag}", hidden, d),
    }


def _swiglu_variant(control: str | None) -> Callable[[Matrix, Mapping[str, Any]], Matrix]:
    """The SwiGLU definition, or a deliberately broken variant of it (a negative control)."""
    if control == "gate and up projections swapped":
        return lambda x, p: swiglu_feed_forward(
            x, {**p, "w1.weight": p["w3.weight"], "w3.weight": p["w1.weight"]}
        )
    if control == "silu applied after the gating product":

        def after(x: Matrix, p: Mapping[str, Any]) -> Matrix:
            prod = linear(x, Matrix(p["w1.weight"])).multiply_elementwise(
                linear(x, Matrix(p["w3.weight"]))
            )
            return linear(prod.applyfunc(silu), Matrix(p["w2.weight"]))

        return after
    return swiglu_feed_forward


def _swiglu_linearity_claims(control: str | None) -> list[Claim]:
    L, d, hidden = 2, 2, 2
    x = symbol_matrix("x", L, d)
    p = _swiglu_params(d, hidden)
    other = _swiglu_params(d, hidden, "p")
    a, b = sp.symbols("alpha beta", real=True)
    f = _swiglu_variant(control)
    claims = []
    for key, name in (("w3.weight", "W_3"), ("w2.weight", "W_2")):
        mixed = {**p, key: a * p[key] + b * other[key]}
        claims.append(
            Claim(
                f(x, mixed),
                a * f(x, p) + b * f(x, {**p, key: other[key]}),
                f"L={L}, d={d}, hidden={hidden}, generic x, W_1, W_2, W_3, {name}', α, β; "
                "exp atoms, cross-multiplied",
                rf"f(X; \alpha {name} + \beta {name}') = \alpha f(X; {name}) + "
                rf"\beta f(X; {name}')",
            )
        )
    return claims


def _swiglu_permutation_claims(control: str | None) -> list[Claim]:
    L, d, hidden = 3, 2, 2
    x = symbol_matrix("x", L, d)
    p = _swiglu_params(d, hidden)
    pe = symbol_matrix("pe", L, d) if control == "with a positional encoding" else sp.zeros(L, d)

    def f(inp: Matrix) -> Matrix:
        return swiglu_feed_forward(inp + pe, p)

    base = f(x)
    claims = []
    for perm in _PERMUTATIONS_3:
        q = permutation_matrix(perm)
        claims.append(
            Claim(
                f(q * x),
                q * base,
                f"L={L}, d={d}, hidden={hidden}, generic x, W_1, W_2, W_3; exp atoms, "
                "cross-multiplied",
                r"f(PX) = P f(X),\ " + _perm_latex(perm),
            )
        )
    return claims


def _swiglu_hidden_permutation_claims(control: str | None) -> list[Claim]:
    L, d, hidden = 2, 2, 3
    x = symbol_matrix("x", L, d)
    p = _swiglu_params(d, hidden)
    claims = []
    for perm in _PERMUTATIONS_3[1:]:
        q = permutation_matrix(perm)
        moved = {
            "w1.weight": q * p["w1.weight"],
            "w3.weight": p["w3.weight"]
            if control == "gate rows permuted, up rows not"
            else (q * p["w3.weight"]),
            "w2.weight": p["w2.weight"] * q.T,
        }
        claims.append(
            Claim(
                swiglu_feed_forward(x, moved),
                swiglu_feed_forward(x, p),
                f"L={L}, d={d}, hidden={hidden}, generic x, W_1, W_2, W_3; exp atoms, "
                "cross-multiplied",
                r"f(X; PW_1, W_2P^\top, PW_3) = f(X; W_1, W_2, W_3),\ " + _perm_latex(perm),
            )
        )
    return claims


LAYER_PROOFS: tuple[DecidedProof, ...] = (
    decided_proof(
        "mha_concat_project",
        "multi_head_attention",
        r"[O_1 \cdots O_H]\,W_o^\top = \sum_{h=1}^{H} O_h\,W_o[:, hD_h{:}(h+1)D_h]^\top",
        "exact polynomial algebra on generic symbolic matrices",
        decide_polynomial,
        _concat_project_claims,
        ("heads paired with the wrong column blocks",),
    ),
    decided_proof(
        "mha_split_heads",
        "multi_head_attention",
        r"(XW^\top + b)[:, hD_h{:}(h+1)D_h] = X\,W[hD_h{:}(h+1)D_h, :]^\top + b[hD_h{:}(h+1)D_h]",
        "exact polynomial algebra on generic symbolic matrices",
        decide_polynomial,
        _split_heads_claims,
        ("columns of W instead of rows",),
    ),
    decided_proof(
        "self_attention_permutation_equivariance",
        "multi_head_attention",
        r"\operatorname{MHA}(PX, PX, PX) = P\,\operatorname{MHA}(X, X, X)"
        r"\ \text{for every permutation } P \text{ (no positional encoding)}",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _self_attention_claims,
        ("with a positional encoding", "with the causal mask"),
    ),
    decided_proof(
        "masked_self_attention_causality",
        "masked_self_attention",
        r"\text{causal mask: } \operatorname{MHA}(X, X, X)_i "
        r"\text{ does not depend on } X_j,\ j > i",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _causal_claims,
        ("mask lets each query see one future key",),
    ),
    decided_proof(
        "cross_attention_memory_permutation_invariance",
        "cross_attention",
        r"\operatorname{MHA}(T, PM, PM) = \operatorname{MHA}(T, M, M)"
        r"\ \text{for every permutation } P \text{ of the encoder positions}",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _cross_attention_claims,
        ("memory with a positional encoding", "key padding mask not permuted with the memory"),
    ),
    decided_proof(
        "swiglu_linear_in_up_and_down",
        "swiglu_feed_forward",
        r"f(X; \alpha W + \beta W') = \alpha f(X; W) + \beta f(X; W')"
        r"\ \text{for } W = W_3 \text{ (up) and } W = W_2 \text{ (down)}",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _swiglu_linearity_claims,
        ("gate and up projections swapped", "silu applied after the gating product"),
    ),
    decided_proof(
        "swiglu_token_permutation_equivariance",
        "swiglu_feed_forward",
        r"\mathrm{SwiGLU}(PX) = P\,\mathrm{SwiGLU}(X)\ \text{for every permutation } P"
        r"\text{ of the tokens}",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _swiglu_permutation_claims,
        ("with a positional encoding",),
    ),
    decided_proof(
        "swiglu_hidden_unit_permutation_invariance",
        "swiglu_feed_forward",
        r"f(X; PW_1, W_2P^\top, PW_3) = f(X; W_1, W_2, W_3)\ \text{for every permutation } P"
        r"\text{ of the hidden units}",
        "exp atoms keyed by exact exponents, rational-function identity",
        decide_exponential,
        _swiglu_hidden_permutation_claims,
        ("gate rows permuted, up rows not",),
    ),
)


def catalogue() -> tuple[DecidedProof, ...]:
    """Every layer and positional proof (list them after :data:`transpec.spec.proofs.PROOFS`)."""
    from transpec.spec.positional import POSITIONAL_PROOFS

    return LAYER_PROOFS + POSITIONAL_PROOFS


def run_all(*, controls: bool = True) -> list[tuple[DecidedProof, ProofResult, list[ProofResult]]]:
    """(proof, its result, the results of its negative controls) for the whole catalogue."""
    out = []
    for pr in catalogue():
        negatives = [pr.run_control(c) for c in pr.controls] if controls else []
        out.append((pr, pr.prove(), negatives))
    return out


def main() -> int:
    """Print every layer/positional proof with its time and its negative controls' verdicts."""
    ok = True
    for pr, res, negs in run_all():
        ok &= res.proved and all(n.rejected for n in negs)
        controls = ", ".join(
            f"{c}: {'rejected' if n.rejected else 'ACCEPTED'} {n.seconds:.2f} s"
            for c, n in zip(pr.controls, negs, strict=True)
        )
        verdict = "proved" if res.proved else "NOT PROVED"
        print(f"{pr.name:46s} {verdict:10s} {res.seconds:7.2f} s   controls: {controls}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
