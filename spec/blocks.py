r"""The building blocks, defined once in SymPy.

Every numeric kernel of :mod:`transpec.oracle.kernels._kernels` is a :class:`Kernel` here: a short
program of assignments whose right-hand sides are SymPy matrix expressions built from the nodes
of :mod:`transpec.spec.nodes`. The same program is

* printed as array code by :mod:`transpec.spec.codegen` (the kernels file is generated),
* run with exact SymPy numbers by :func:`evaluate` (the exact semantics at small sizes),
* printed as LaTeX by :mod:`transpec.spec.derive`.

Only shape bookkeeping (which axes a norm reduces over, the kv head of each query head, the
causal index arithmetic, the default scale) is written as plain code lines (:class:`Code`); it
has no value semantics to verify and the exact evaluator does it in plain Python.

The conventions of :mod:`transpec.spec.conventions` enter as node arguments: fixed flags for
the block constructors (:func:`attention_definition`, :func:`layer_norm_definition`, ...), and
runtime keyword flags of the generated kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixExpr

from transpec.spec.conventions import CANONICAL, Conventions
from transpec.spec.nodes import (
    ApplyKeep,
    CausalKeep,
    LayerNormRows,
    RMSNormRows,
    RowAdd,
    RowLogSumExp,
    RowMul,
    RowSoftmax,
    Softcap,
)

__all__ = [
    "KERNELS",
    "Assign",
    "Code",
    "If",
    "Kernel",
    "Return",
    "attention_definition",
    "attention_exact",
    "evaluate",
    "kernel",
    "latex",
    "layer_norm_definition",
    "layer_norm_exact",
    "logsumexp_definition",
    "rms_norm_definition",
    "rms_norm_exact",
    "softmax_definition",
    "softmax_exact",
    "to_exact",
]

# ---------------------------------------------------------------------------------------------
# Symbols. Dimensions: rows, N (row length, printed "n"), Lq, Lk, E (query/key width), Ev.
rows = sp.Symbol("rows", integer=True, positive=True)
N = sp.Symbol("n", integer=True, positive=True)
Lq = sp.Symbol("L_q", integer=True, positive=True)
Lk = sp.Symbol("L_k", integer=True, positive=True)
E = sp.Symbol("E", integer=True, positive=True)
Ev = sp.Symbol("E_v", integer=True, positive=True)

x = sp.MatrixSymbol("x", rows, N)
weight = sp.MatrixSymbol("weight", 1, N)
shift = sp.MatrixSymbol("bias", 1, N)  # the LayerNorm bias (named like the kernel argument)
y = sp.MatrixSymbol("y", rows, N)

q = sp.MatrixSymbol("q", Lq, E)
k = sp.MatrixSymbol("k", Lk, E)
v = sp.MatrixSymbol("v", Lk, Ev)
s = sp.MatrixSymbol("s", Lq, Lk)
p = sp.MatrixSymbol("p", Lq, Lk)
bias = sp.MatrixSymbol("bias", Lq, Lk)  # additive attention bias
keep = sp.MatrixSymbol("keep", Lq, Lk)  # boolean keep-mask
causal = sp.MatrixSymbol("causal", Lq, Lk)

scale = sp.Symbol("scale", real=True)
softcap = sp.Symbol("softcap", positive=True)
eps = sp.Symbol("eps", nonnegative=True)
fill = sp.Symbol("fill", real=True)
lq_code, lk_code = sp.Symbol("lq", integer=True), sp.Symbol("lk", integer=True)

unbiased = sp.Symbol("unbiased")
eps_inside_sqrt = sp.Symbol("eps_inside_sqrt")
one_plus_weight = sp.Symbol("one_plus_weight")
bottom_right = sp.Symbol("bottom_right")

#: How the symbols read in LaTeX.
LATEX_NAMES: dict[Any, str] = {
    x: "X",
    weight: r"\gamma",
    shift: r"\beta",
    y: "Y",
    q: "Q",
    k: "K",
    v: "V",
    s: "S",
    p: "P",
    bias: "B",
    keep: "M",
    causal: "C",
    scale: r"\alpha",
    softcap: "c",
    eps: r"\epsilon",
    fill: "f",
}


def latex(expr: Any) -> str:
    """LaTeX of a definition, with the symbols of :data:`LATEX_NAMES`."""
    return str(sp.latex(expr, symbol_names=LATEX_NAMES))


# The expressions every program is made of.
SCORES = scale * q * k.T
CAPPED = Softcap(s, softcap)
BIASED = sp.MatAdd(s, bias)
PROBS = RowSoftmax(s)
OUTPUT = p * v


# ---------------------------------------------------------------------------------------------
# Programs.
@dataclass(frozen=True)
class Assign:
    """``target = expr`` (``expr`` a SymPy expression of earlier targets and parameters)."""

    target: str
    expr: Any


@dataclass(frozen=True)
class If:
    """Run ``body`` when ``param`` is given (``test="given"``: not None) or true
    (``test="true"``), else ``orelse``."""

    param: str
    body: tuple[Any, ...]
    orelse: tuple[Any, ...] = ()
    test: str = "given"

    def code(self) -> str:
        return f"{self.param} is not None" if self.test == "given" else self.param

    def holds(self, env: Mapping[str, Any]) -> bool:
        value = env[self.param]
        return value is not None if self.test == "given" else bool(value)


@dataclass(frozen=True)
class Code:
    """Shape bookkeeping as plain code lines; ``exact`` does the same in the exact evaluator
    (None when the exact evaluator receives the result as an input)."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Return:
    exprs: tuple[Any, ...]


@dataclass(frozen=True)
class Kernel:
    """One generated function: its fixed signature, its docstring and its program."""

    name: str
    signature: str
    returns: str
    doc: str
    body: tuple[Any, ...]
    definition: Any  # the matrix expression the docstring shows
    row_axis: str = "-1"
    flags: tuple[str, ...] = ()


_SOFTMAX = Kernel(
    name="softmax",
    signature="x: Array, *, xp: Any = np",
    returns="Array",
    doc=(
        "Row softmax over the last axis: softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m).\n\n"
        "m is the row maximum (0 for a row that is entirely -inf), so every exponent is <= 0;\n"
        "the shift cancels exactly. A row that is entirely -inf gives NaN (0/0); policies for\n"
        "such rows live in the reference."
    ),
    body=(Return((RowSoftmax(x),)),),
    definition=RowSoftmax(x),
)

_LOGSUMEXP = Kernel(
    name="logsumexp",
    signature="x: Array, *, xp: Any = np",
    returns="Array",
    doc=(
        "log sum_j exp(x_j) = m + log sum_j exp(x_j - m) over the last axis, which it drops.\n\n"
        "m is the row maximum (0 for an all -inf row, whose result is -inf)."
    ),
    body=(Return((RowLogSumExp(x),)),),
    definition=RowLogSumExp(x),
)

_SCORES_BODY: tuple[Any, ...] = (
    Assign("s", SCORES),
    If("softcap", (Assign("s", CAPPED),)),
)

_ATTENTION_SCORES = Kernel(
    name="attention_scores",
    signature="q: Array, k: Array, scale: float, softcap: float | None, *, xp: Any = np",
    returns="Array",
    doc=(
        "S = scale * Q K^T, then softcap * tanh(S / softcap) when a softcap is given.\n\n"
        "Shapes: q (..., Lq, E), k (..., Lk, E) -> (..., Lq, Lk)."
    ),
    body=(*_SCORES_BODY, Return((s,))),
    definition=Softcap(SCORES, softcap),
)

_ATTENTION = Kernel(
    name="attention",
    signature=(
        "q: Array, k: Array, v: Array, bias: Array | None, scale: float, "
        "softcap: float | None = None, *, xp: Any = np"
    ),
    returns="tuple[Array, Array]",
    doc=(
        "O = softmax(S + B) V with S from :func:`attention_scores`; returns (O, P).\n\n"
        "``bias`` broadcasts to the score shape (..., Lq, Lk) and holds 0 / -inf (or finite\n"
        "values). Shapes: q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev) -> (..., Lq, Ev).\n"
        "A row whose biased scores are all -inf gives NaN (see :func:`softmax`)."
    ),
    body=(
        *_SCORES_BODY,
        If("bias", (Assign("s", BIASED),)),
        Assign("p", PROBS),
        Return((OUTPUT, p)),
    ),
    definition=RowSoftmax(sp.MatAdd(Softcap(SCORES, softcap), bias)) * v,
)

_NORM_AXES = Code(
    (
        "axes = tuple(range(-n_axes, 0))",
        "n = 1",
        "for a in axes:",
        "    n *= x.shape[a]",
    )
)

_LAYER_NORM = Kernel(
    name="layer_norm",
    signature=(
        "x: Array, n_axes: int, weight: Array | None, bias: Array | None, eps: float, *, "
        "unbiased: bool = False, eps_inside_sqrt: bool = True, xp: Any = np"
    ),
    returns="Array",
    doc=(
        "y = (x - mu) / sqrt(var + eps) * w + b over the trailing ``n_axes`` axes.\n\n"
        "mu and var are the mean and the variance over those axes (n elements); ``unbiased``\n"
        "divides the sum of squares by n - 1 instead of n; ``eps_inside_sqrt=False`` computes\n"
        "(x - mu) / (sqrt(var) + eps). The mean is subtracted before squaring (two passes)."
    ),
    body=(
        _NORM_AXES,
        Assign("y", LayerNormRows(x, eps, unbiased, eps_inside_sqrt)),
        If("weight", (Assign("y", RowMul(y, weight)),)),
        If("bias", (Assign("y", RowAdd(y, shift)),)),
        Return((y,)),
    ),
    definition=RowAdd(RowMul(LayerNormRows(x, eps, unbiased, eps_inside_sqrt), weight), shift),
    row_axis="axes",
    flags=("unbiased", "eps_inside_sqrt"),
)

_RMS_NORM = Kernel(
    name="rms_norm",
    signature=(
        "x: Array, n_axes: int, weight: Array | None, eps: float, *, "
        "eps_inside_sqrt: bool = True, one_plus_weight: bool = False, xp: Any = np"
    ),
    returns="Array",
    doc=(
        "y = x / sqrt(mean(x^2) + eps) * w over the trailing ``n_axes`` axes.\n\n"
        "``eps_inside_sqrt=False`` computes x / (sqrt(mean(x^2)) + eps); ``one_plus_weight``\n"
        "multiplies by (1 + w) (Gemma) instead of w."
    ),
    body=(
        _NORM_AXES,
        Assign("y", RMSNormRows(x, eps, eps_inside_sqrt)),
        If("weight", (Assign("y", RowMul(y, weight, one_plus_weight)),)),
        Return((y,)),
    ),
    definition=RowMul(RMSNormRows(x, eps, eps_inside_sqrt), weight, one_plus_weight),
    row_axis="axes",
    flags=("eps_inside_sqrt", "one_plus_weight"),
)

_SDPA = Kernel(
    name="sdpa",
    signature=(
        "q: Array, k: Array, v: Array, attn_mask: Array | None = None, "
        "is_causal: bool = False, scale: float | None = None, softcap: float | None = None, "
        "*, conventions: Conventions = CANONICAL, xp: Any = np"
    ),
    returns="tuple[Array, Array]",
    doc=(
        "Scaled dot-product attention with every convention of :class:`Conventions`.\n\n"
        "Returns (O, P). q (..., Hq, Lq, E), k (..., Hkv, Lk, E), v (..., Hkv, Lk, Ev); Hq a\n"
        "multiple of Hkv (query head h reads kv head h // (Hq / Hkv), or h % Hkv under\n"
        "``gqa_mapping='tile'``). scale None means 1 / sqrt(E). The softcap applies to the\n"
        "scaled scores, before the mask. A boolean ``attn_mask`` keeps True (or ignores True\n"
        "under ``bool_mask='ignore'``); a float mask is added. Masked scores (boolean or\n"
        "causal, top-left or bottom-right aligned) are -inf, or replaced by ``mask_fill`` (or\n"
        "it is added to them, ``mask_fill_mode='add'``).\n"
        "A query row whose scores are all -inf outputs 0 (``fully_masked_row='zero'``) or NaN."
    ),
    body=(
        Code(
            (
                "lq, lk = q.shape[-2], k.shape[-2]",
                "if scale is None:",
                "    scale = 1.0 / math.sqrt(q.shape[-1])",
                "if q.ndim >= 3 and k.ndim >= 3 and q.shape[-3] != k.shape[-3]:",
                "    heads = kv_heads(q.shape[-3], k.shape[-3], conventions.gqa_mapping)",
                "    k = k[..., heads, :, :]",
                "    v = v[..., heads, :, :]",
                "keep = None",
                "bias = None",
                "if attn_mask is not None and attn_mask.dtype == bool:",
                '    keep = attn_mask if conventions.bool_mask == "keep" else ~attn_mask',
                "elif attn_mask is not None:",
                "    bias = attn_mask",
            )
        ),
        If(
            "is_causal",
            (
                Code(("bottom_right = conventions.causal_offset(lq, lk) != 0",)),
                Assign("causal", CausalKeep(lq_code, lk_code, bottom_right)),
                Code(("keep = causal if keep is None else keep & causal",)),
            ),
            test="true",
        ),
        Code(
            (
                "# an added fill (mask_fill_mode='add'): the masked keys' fill joins the additive",
                "# mask and no key is hidden",
                'if conventions.mask_fill is not None and conventions.mask_fill_mode == "add":',
                "    if keep is not None:",
                "        added = np.where(keep, 0.0, float(conventions.mask_fill))",
                "        bias = added if bias is None else added + bias",
                "    keep = None",
            )
        ),
        Code(('fill = float("-inf") if conventions.mask_fill is None else conventions.mask_fill',)),
        *_SCORES_BODY,
        If("keep", (Assign("s", ApplyKeep(s, keep, fill)),)),
        If("bias", (Assign("s", BIASED),)),
        Code(
            (
                "# rows with no key to attend to: 0 or NaN per the convention, never 0/0",
                "dead = xp.isneginf(xp.max(s, axis=-1, keepdims=True))",
                "s = xp.where(dead, 0.0, s)",
            )
        ),
        Assign("p", PROBS),
        Code(
            (
                'dead_value = 0.0 if conventions.fully_masked_row == "zero" else float("nan")',
                "p = xp.where(dead, dead_value, p)",
            )
        ),
        Return((OUTPUT, p)),
    ),
    definition=RowSoftmax(sp.MatAdd(ApplyKeep(Softcap(SCORES, softcap), keep, fill), bias)) * v,
)

_KV_HEADS = Kernel(
    name="kv_heads",
    signature='hq: int, hkv: int, mapping: str = "interleave"',
    returns="np.ndarray",
    doc=(
        "The kv head each query head reads: h // (hq // hkv) ('interleave', repeat_interleave)\n"
        "or h % hkv ('tile')."
    ),
    body=(
        Code(
            (
                "if hkv <= 0 or hq % hkv != 0:",
                "    raise ValueError("
                'f"query heads ({hq}) must be a multiple of kv heads ({hkv})")',
                'if mapping == "interleave":',
                "    return np.arange(hq) // (hq // hkv)",
                'if mapping == "tile":',
                "    return np.arange(hq) % hkv",
                "raise ValueError(f\"gqa mapping {mapping!r} is not 'interleave' or 'tile'\")",
            )
        ),
    ),
    definition=None,
)

#: The kernels of :mod:`transpec.oracle.kernels._kernels`, in file order.
KERNELS: tuple[Kernel, ...] = (
    _SOFTMAX,
    _LOGSUMEXP,
    _ATTENTION_SCORES,
    _ATTENTION,
    _LAYER_NORM,
    _RMS_NORM,
    _KV_HEADS,
    _SDPA,
)


def kernel(name: str) -> Kernel:
    for kern in KERNELS:
        if kern.name == name:
            return kern
    raise ValueError(f"unknown kernel {name!r}; known: {', '.join(k.name for k in KERNELS)}")


def kv_head(h: int, hq: int, hkv: int, mapping: str) -> int:
    """The kv head query head ``h`` reads (the spec of :func:`kv_heads`)."""
    if hkv <= 0 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of kv heads ({hkv})")
    return h // (hq // hkv) if mapping == "interleave" else h % hkv


# ---------------------------------------------------------------------------------------------
# Exact evaluation.
def to_exact(value: Any) -> Any:
    """float / array of floats -> exact SymPy number / ImmutableMatrix (binary value kept exactly;
    +-inf -> +-oo, NaN -> nan); bools -> 1 / 0 (a keep-mask is a 0/1 matrix)."""
    if value is None:
        return None
    if isinstance(value, (sp.Basic, sp.MatrixBase)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return sp.Integer(1) if value else sp.Integer(0)
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        if math.isnan(f):
            return sp.nan
        if math.isinf(f):
            return sp.oo if f > 0 else -sp.oo
        return sp.Rational(f)
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"exact evaluation takes 2-D (matrix) inputs, got shape {arr.shape}")
    return sp.ImmutableMatrix(arr.shape[0], arr.shape[1], [to_exact(a) for a in arr.ravel()])


def _settle(entry: Any, digits: int) -> Any:
    """Rationals and infinities stay exact; transcendental values become ``digits``-digit
    Floats (so later steps do not drag ever larger symbolic trees along)."""
    if entry.is_Rational or entry in (sp.oo, -sp.oo, sp.nan, sp.zoo):
        return entry
    return entry.evalf(digits)


def _explicit(value: Any, digits: int = 50) -> Any:
    if isinstance(value, MatrixExpr) and not isinstance(value, sp.MatrixBase):
        value = value.doit()  # explicit products of explicit matrices (no Sum objects)
    if isinstance(value, MatrixExpr) and not isinstance(value, sp.MatrixBase):
        value = value.as_explicit()
    if isinstance(value, sp.MatrixBase):
        return sp.ImmutableMatrix(value.applyfunc(lambda e: _settle(e, digits)))
    return value


def _substitute(expr: Any, env: Mapping[str, Any]) -> Any:
    rules: dict[Any, Any] = {}
    for atom in expr.atoms(sp.MatrixSymbol):
        if str(atom.name) in env:
            rules[atom] = env[str(atom.name)]
    for sym in expr.atoms(sp.Symbol):
        if str(sym.name) in env and sym not in rules:
            value = env[str(sym.name)]
            rules[sym] = sp.true if value is True else sp.false if value is False else value
    return expr.xreplace(rules)


def _run(body: Sequence[Any], env: dict[str, Any], digits: int) -> tuple[Any, ...] | None:
    for step in body:
        if isinstance(step, Assign):
            env[step.target] = _explicit(_substitute(step.expr, env), digits)
        elif isinstance(step, If):
            out = _run(step.body if step.holds(env) else step.orelse, env, digits)
            if out is not None:
                return out
        elif isinstance(step, Return):
            return tuple(_explicit(_substitute(e, env), digits) for e in step.exprs)
        elif isinstance(step, Code):
            continue  # shape bookkeeping: the exact inputs are 2-D already
        else:  # pragma: no cover - programs are built in this module
            raise TypeError(f"unknown program step {step!r}")
    return None


def evaluate(name: str, digits: int = 50, **inputs: Any) -> tuple[np.ndarray, ...]:
    """Run kernel ``name`` with exact SymPy numbers on 2-D inputs; entries evaluated to
    ``digits`` digits and returned as float64 arrays.

    ``inputs`` are the kernel's arguments by name (``n_axes`` and ``xp`` are not needed: a norm
    normalizes each row of the 2-D ``x``; ``weight`` and ``bias`` of a norm are rows of length
    N). Float inputs are taken at their exact binary value.
    """
    kern = kernel(name)
    if kern.name in ("sdpa", "kv_heads"):
        raise ValueError(f"{name} is evaluated by attention_exact")
    defaults = {"eps_inside_sqrt": True}
    flags = {f: bool(inputs.pop(f, defaults.get(f, False))) for f in kern.flags}
    env: dict[str, Any] = {key: to_exact(val) for key, val in inputs.items()}
    env.setdefault("softcap", None)
    env.setdefault("bias", None)
    env.setdefault("weight", None)
    env.update(flags)
    out = _run(kern.body, env, digits)
    assert out is not None
    return tuple(_to_float(o, digits) for o in out)


def _to_float(value: Any, digits: int) -> np.ndarray:
    def one(e: Any) -> float:
        if e is sp.nan:
            return math.nan
        return float(sp.N(e, digits))

    n_rows, n_cols = value.shape
    return np.array([[one(value[i, j]) for j in range(n_cols)] for i in range(n_rows)])


def _rows(x: np.ndarray, n_axes: int) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x, dtype=float)
    if not 0 <= n_axes <= x.ndim:
        raise ValueError(f"cannot normalize over {n_axes} trailing axes of a {x.ndim}-D array")
    width = int(np.prod(x.shape[x.ndim - n_axes :]))
    return x.reshape(-1, width), x.shape


def softmax_exact(x: np.ndarray, dim: int = -1, *, digits: int = 50) -> np.ndarray:
    """Exact row softmax of an n-D array along ``dim`` (an all -inf row gives NaN)."""
    moved = np.moveaxis(np.asarray(x, dtype=float), dim, -1)
    rows, shape = _rows(moved, 1)
    (p,) = evaluate("softmax", digits, x=rows)
    return np.moveaxis(p.reshape(shape), -1, dim)


def layer_norm_exact(
    x_: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight_: np.ndarray | None = None,
    bias_: np.ndarray | None = None,
    eps_: float = 1e-5,
    *,
    conventions: Conventions = CANONICAL,
    digits: int = 50,
) -> np.ndarray:
    """Exact LayerNorm over the trailing ``normalized_shape`` dims, under ``conventions``."""
    dims = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    rows, shape = _rows(x_, len(dims))
    if tuple(shape[len(shape) - len(dims) :]) != dims:
        raise ValueError(f"normalized_shape {dims} does not end the input shape {shape}")
    (y_,) = evaluate(
        "layer_norm",
        digits,
        x=rows,
        weight=None if weight_ is None else np.ravel(weight_),
        bias=None if bias_ is None else np.ravel(bias_),
        eps=eps_,
        unbiased=conventions.layer_norm_variance == "unbiased",
        eps_inside_sqrt=conventions.layer_norm_eps == "inside_sqrt",
    )
    return y_.reshape(shape)


def rms_norm_exact(
    x_: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight_: np.ndarray | None = None,
    eps_: float = 1e-6,
    *,
    conventions: Conventions = CANONICAL,
    digits: int = 50,
) -> np.ndarray:
    """Exact RMSNorm over the trailing ``normalized_shape`` dims, under ``conventions``."""
    dims = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    rows, shape = _rows(x_, len(dims))
    if tuple(shape[len(shape) - len(dims) :]) != dims:
        raise ValueError(f"normalized_shape {dims} does not end the input shape {shape}")
    (y_,) = evaluate(
        "rms_norm",
        digits,
        x=rows,
        weight=None if weight_ is None else np.ravel(weight_),
        eps=eps_,
        eps_inside_sqrt=conventions.rms_norm_eps == "inside_sqrt",
        one_plus_weight=conventions.rms_norm_weight == "one_plus_w",
    )
    return y_.reshape(shape)


def attention_exact(
    q_: np.ndarray,
    k_: np.ndarray,
    v_: np.ndarray,
    attn_mask: np.ndarray | None = None,
    is_causal: bool = False,
    scale_: float | None = None,
    softcap_: float | None = None,
    *,
    conventions: Conventions = CANONICAL,
    digits: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact attention of (..., Hq, Lq, E) inputs, head by head, under ``conventions``.

    Each head evaluates :func:`attention_definition` with exact numbers: S = scale Q K^T,
    softcap, the keep-mask (boolean mask per ``bool_mask`` and the causal mask per
    ``causal_alignment``) applied with fill -inf or ``mask_fill``, the additive mask, the row
    softmax, P V; a row of -inf scores gives 0 or NaN per ``fully_masked_row``.
    """
    q_, k_, v_ = np.asarray(q_), np.asarray(k_), np.asarray(v_)
    lead = q_.shape[:-2]
    lq, lk = q_.shape[-2], k_.shape[-2]
    hq = q_.shape[-3] if q_.ndim >= 3 else 1
    hkv = k_.shape[-3] if k_.ndim >= 3 else 1
    if scale_ is None:
        scale_ = 1.0 / math.sqrt(q_.shape[-1])
    out = np.empty((*lead, lq, v_.shape[-1]))
    probs = np.empty((*lead, lq, lk))
    mask = None if attn_mask is None else np.broadcast_to(attn_mask, (*lead, lq, lk))
    definition = attention_definition(conventions, capped=softcap_ is not None)
    fill_value = -sp.oo if conventions.mask_fill is None else to_exact(conventions.mask_fill)
    for index in np.ndindex(*lead):
        h = index[-1] if q_.ndim >= 3 else 0
        kv_index = (
            (*index[:-1], kv_head(h, hq, hkv, conventions.gqa_mapping)) if q_.ndim >= 3 else index
        )
        keep_m = sp.ones(lq, lk)
        bias_m = sp.zeros(lq, lk)
        if mask is not None and mask.dtype == bool:
            m = mask[index] if conventions.bool_mask == "keep" else ~mask[index]
            keep_m = to_exact(m)
        elif mask is not None:
            bias_m = to_exact(mask[index])
        if is_causal:
            causal_m = CausalKeep(lq, lk, conventions.causal_offset(lq, lk) != 0)
            keep_m = sp.ImmutableMatrix(
                lq,
                lk,
                [
                    keep_m[i, j] if causal_m._entry(i, j) is sp.true else 0
                    for i in range(lq)
                    for j in range(lk)
                ],
            )
        if conventions.mask_fill is not None and conventions.mask_fill_mode == "add":
            # the fill is added to the masked scores: an additive mask, every key kept
            bias_m = bias_m + (sp.ones(lq, lk) - keep_m) * fill_value
            keep_m = sp.ones(lq, lk)
        env = {
            "q": to_exact(q_[index]),
            "k": to_exact(k_[kv_index]),
            "v": to_exact(v_[kv_index]),
            "scale": to_exact(scale_),
            "softcap": to_exact(softcap_) if softcap_ is not None else None,
            "keep": sp.ImmutableMatrix(keep_m),
            "bias": sp.ImmutableMatrix(bias_m),
            "fill": fill_value,
        }
        scores = _explicit(_substitute(_scores_of(definition), env), digits)
        weights = _explicit(RowSoftmax(scores), digits)
        for i in range(lq):
            if all(scores[i, j] == -sp.oo for j in range(lk)):
                row = sp.zeros(1, lk) if conventions.fully_masked_row == "zero" else None
                for j in range(lk):
                    weights = weights.as_mutable()
                    weights[i, j] = row[0, j] if row is not None else sp.nan
                weights = sp.ImmutableMatrix(weights)
        out[index] = _to_float(weights * env["v"], digits)
        probs[index] = _to_float(weights, digits)
    return out, probs


def _scores_of(expr: Any) -> Any:
    """The argument of the row softmax in ``softmax(scores) V``."""
    softmax_node = next(a for a in expr.args if isinstance(a, RowSoftmax))
    return softmax_node.arg


# ---------------------------------------------------------------------------------------------
# Block definitions under a declared set of conventions (for LaTeX and for exact evaluation).
def softmax_definition() -> Any:
    """P = softmax(X), row-wise."""
    return RowSoftmax(x)


def logsumexp_definition() -> Any:
    """l = logsumexp(X), row-wise (a column)."""
    return RowLogSumExp(x)


def attention_definition(
    conventions: Conventions = CANONICAL,
    *,
    masked: bool = True,
    biased: bool = True,
    capped: bool = True,
) -> Any:
    r"""O = softmax(mask_{K, f}(softcap_c(scale Q K^T)) + B) V under ``conventions``.

    K is the keep-mask (the boolean mask read per ``bool_mask``, and the causal mask
    :class:`~transpec.spec.nodes.CausalKeep` per ``causal_alignment``), f the fill (-inf or
    ``mask_fill``), B the additive mask.
    """
    scores: Any = SCORES
    if capped:
        scores = Softcap(scores, softcap)
    if masked:
        f = -sp.oo if conventions.mask_fill is None else to_exact(conventions.mask_fill)
        scores = ApplyKeep(scores, keep, f)
    if biased:
        scores = sp.MatAdd(scores, bias)
    return RowSoftmax(scores) * v


def layer_norm_definition(conventions: Conventions = CANONICAL, *, affine: bool = True) -> Any:
    """Y = LN_eps(X) * w + b under ``conventions`` (variance estimator, where eps goes)."""
    core = LayerNormRows(
        x,
        eps,
        conventions.layer_norm_variance == "unbiased",
        conventions.layer_norm_eps == "inside_sqrt",
    )
    return RowAdd(RowMul(core, weight), shift) if affine else core


def rms_norm_definition(conventions: Conventions = CANONICAL, *, affine: bool = True) -> Any:
    """Y = RMS_eps(X) * w (or * (1 + w)) under ``conventions``."""
    core = RMSNormRows(x, eps, conventions.rms_norm_eps == "inside_sqrt")
    return RowMul(core, weight, conventions.rms_norm_weight == "one_plus_w") if affine else core
