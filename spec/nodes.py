r"""SymPy matrix-expression nodes of the building blocks, and the kernel printer.

Each node is one row-wise operation of a transformer block. It carries three meanings of itself:

* ``_entry(i, j)``: the exact element semantics, as a SymPy expression. At a concrete row length
  the row sums are explicit; at a symbolic length ``N`` they are ``Sum`` objects, which the
  proofs of :mod:`transpec.spec.proofs` reason about.
* ``_latex(printer)``: the notation of the derivations.
* ``_numpycode(printer)``: numerically stable array code for :class:`KernelPrinter`, written
  against a math namespace ``xp`` and broadcasting over any leading dimensions. Intermediate
  values are hoisted into named statements (:meth:`KernelPrinter.hoist`), so a row maximum is
  computed once and reused.

Convention switches (unbiased variance, where eps goes, ...) are node arguments: ``sympy.true``
/ ``sympy.false`` for one fixed variant, or a ``Symbol`` naming a runtime flag of the generated
kernel. The exact semantics then read ``Piecewise((a, flag), (b, True))`` and the code reads
``(a if flag else b)``.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixExpr
from sympy.printing.numpy import NumPyPrinter

__all__ = [
    "XP_FUNCTIONS",
    "ApplyKeep",
    "CausalKeep",
    "KernelPrinter",
    "LayerNormRows",
    "RMSNormRows",
    "RowAdd",
    "RowLogSumExp",
    "RowMul",
    "RowSoftmax",
    "Softcap",
    "flag_value",
]

#: The functions generated code may call on the math namespace ``xp``.
XP_FUNCTIONS = (
    "max",
    "sum",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "where",
    "isneginf",
    "matmul",
    "swapaxes",
)

Flag = sp.Basic  # sympy.true, sympy.false, or a Symbol naming a runtime flag


def _flag(value: Any) -> sp.Basic:
    if value is True or value is sp.true:
        return sp.true
    if value is False or value is sp.false:
        return sp.false
    if isinstance(value, sp.Symbol):
        return value
    raise TypeError(f"a convention flag must be a bool or a sympy Symbol, got {value!r}")


def flag_value(flag: sp.Basic) -> bool | None:
    """True / False for a fixed flag, None for a runtime (symbolic) one."""
    if flag is sp.true:
        return True
    if flag is sp.false:
        return False
    return None


def _choose(flag: sp.Basic, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """``a`` where the flag holds, else ``b`` (a Piecewise while the flag is symbolic)."""
    value = flag_value(flag)
    if value is True:
        return a
    if value is False:
        return b
    return sp.Piecewise((a, flag), (b, True))


def _row_sum(X: Any, i: Any, term: Any, name: str = "k") -> sp.Expr:
    """sum over k of term(X[i, k]) along a row: explicit at a concrete length, a Sum otherwise."""
    n = X.shape[1]
    if isinstance(n, (int, sp.Integer)):
        return sp.Add(*[term(X[i, k]) for k in range(int(n))])
    k = sp.Symbol(name, integer=True, nonnegative=True)
    return sp.Sum(term(X[i, k]), (k, 0, n - 1))


class _RowOp(MatrixExpr):
    """A matrix expression of the same shape as its first argument, defined row by row."""

    @property
    def arg(self) -> Any:
        return self.args[0]

    @property
    def shape(self) -> tuple[Any, Any]:
        return self.arg.shape


class RowSoftmax(_RowOp):
    r"""Row softmax: :math:`P_{ij} = e^{X_{ij}} / \sum_k e^{X_{ik}}`.

    Code: :math:`m_i = \max_k X_{ik}` (0 where the whole row is :math:`-\infty`), then
    :math:`e^{X_{ij} - m_i} / \sum_k e^{X_{ik} - m_i}`; the shift cancels exactly (proved in
    :mod:`transpec.spec.proofs`) and keeps every exponent <= 0. A row that is entirely
    :math:`-\infty` is 0/0 = NaN in both the exact semantics and the code.
    """

    def __new__(cls, arg: Any) -> RowSoftmax:
        return sp.Basic.__new__(cls, sp.sympify(arg))

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        X = self.arg
        return sp.exp(X[i, j]) / _row_sum(X, i, sp.exp)

    def _latex(self, printer: Any) -> str:
        return rf"\operatorname{{softmax}}\left({printer._print(self.arg)}\right)"

    def _numpycode(self, printer: KernelPrinter) -> str:
        x = printer.hoist(printer._print(self.arg), "s")
        m = printer.row_max(x)
        e = printer.hoist(f"xp.exp({x} - {m})", "e")
        return f"{e} / xp.sum({e}, axis={printer.row_axis}, keepdims=True)"


class RowLogSumExp(MatrixExpr):
    r"""Row log-sum-exp, a column: :math:`\ell_i = \log \sum_k e^{X_{ik}}`.

    Code: :math:`m_i + \log \sum_k e^{X_{ik} - m_i}` with the same stable :math:`m_i` as
    :class:`RowSoftmax` (an all :math:`-\infty` row gives :math:`-\infty`); the kernel drops the
    trailing axis of length 1.
    """

    def __new__(cls, arg: Any) -> RowLogSumExp:
        return sp.Basic.__new__(cls, sp.sympify(arg))

    @property
    def arg(self) -> Any:
        return self.args[0]

    @property
    def shape(self) -> tuple[Any, Any]:
        return (self.arg.shape[0], sp.Integer(1))

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        total = _row_sum(self.arg, i, sp.exp)
        return -sp.oo if total.is_zero else sp.log(total)  # log 0 = -inf for a dead row

    def _latex(self, printer: Any) -> str:
        return rf"\operatorname{{logsumexp}}\left({printer._print(self.arg)}\right)"

    def _numpycode(self, printer: KernelPrinter) -> str:
        x = printer.hoist(printer._print(self.arg), "x")
        m = printer.row_max(x)
        s = printer.hoist(
            f"xp.sum(xp.exp({x} - {m}), axis={printer.row_axis}, keepdims=True)", "total"
        )
        return f"({m} + xp.log({s}))[..., 0]"


class Softcap(_RowOp):
    r"""Logit soft-capping, element-wise: :math:`c \tanh(S_{ij} / c)`."""

    def __new__(cls, arg: Any, cap: Any) -> Softcap:
        return sp.Basic.__new__(cls, sp.sympify(arg), sp.sympify(cap))

    @property
    def cap(self) -> Any:
        return self.args[1]

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        return self.cap * sp.tanh(self.arg[i, j] / self.cap)

    def _latex(self, printer: Any) -> str:
        return (
            rf"\operatorname{{softcap}}_{{{printer._print(self.cap)}}}"
            rf"\left({printer._print(self.arg)}\right)"
        )

    def _numpycode(self, printer: KernelPrinter) -> str:
        c = printer._print(self.cap)
        return f"{c} * xp.tanh({printer.parens(self.arg)} / {c})"


class LayerNormRows(_RowOp):
    r"""Row LayerNorm without affine: :math:`(X_{ij} - \mu_i) / \sigma_i`.

    :math:`\mu_i = \frac1N \sum_k X_{ik}`, :math:`v_i = \frac1{N'} \sum_k (X_{ik} - \mu_i)^2`
    with :math:`N' = N` (biased, canonical) or :math:`N - 1` (``unbiased``), and
    :math:`\sigma_i = \sqrt{v_i + \epsilon}` (``eps_inside_sqrt``, canonical) or
    :math:`\sqrt{v_i} + \epsilon`. The code subtracts the mean before squaring (two passes).
    """

    def __new__(cls, arg: Any, eps: Any, unbiased: Any, eps_inside_sqrt: Any) -> LayerNormRows:
        return sp.Basic.__new__(
            cls, sp.sympify(arg), sp.sympify(eps), _flag(unbiased), _flag(eps_inside_sqrt)
        )

    @property
    def eps(self) -> Any:
        return self.args[1]

    @property
    def unbiased(self) -> sp.Basic:
        return self.args[2]

    @property
    def eps_inside_sqrt(self) -> sp.Basic:
        return self.args[3]

    def mean(self, i: Any) -> sp.Expr:
        n = self.arg.shape[1]
        return _row_sum(self.arg, i, lambda t: t) / n

    def variance(self, i: Any) -> sp.Expr:
        n = self.arg.shape[1]
        mu = self.mean(i)
        return _row_sum(self.arg, i, lambda t: (t - mu) ** 2, "l") / _choose(
            self.unbiased, n - 1, n
        )

    def denominator(self, i: Any) -> sp.Expr:
        var = self.variance(i)
        return _choose(self.eps_inside_sqrt, sp.sqrt(var + self.eps), sp.sqrt(var) + self.eps)

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        return (self.arg[i, j] - self.mean(i)) / self.denominator(i)

    def _latex(self, printer: Any) -> str:
        eps, arg = printer._print(self.eps), printer._print(self.arg)
        return rf"\operatorname{{LN}}_{{{eps}}}\left({arg}\right)"

    def _numpycode(self, printer: KernelPrinter) -> str:
        x = printer.hoist(printer._print(self.arg), "x")
        ax, n = printer.row_axis, printer._print(self.arg.shape[1])
        mu = printer.hoist(f"xp.sum({x}, axis={ax}, keepdims=True) / {n}", "mu")
        d = printer.hoist(f"{x} - {mu}", "d")
        ss = printer.hoist(f"xp.sum({d} * {d}, axis={ax}, keepdims=True)", "ss")
        dof = printer.choose(self.unbiased, f"{n} - 1", n)
        var = printer.hoist(f"{ss} / {dof}", "var")
        eps = printer._print(self.eps)
        denom = printer.hoist(
            printer.choose(
                self.eps_inside_sqrt,
                f"xp.sqrt({var} + {eps})",
                f"xp.sqrt({var}) + {eps}",
                bare=True,
            ),
            "denom",
        )
        return f"{d} / {denom}"


class RMSNormRows(_RowOp):
    r"""Row RMSNorm without weight: :math:`X_{ij} / r_i`.

    :math:`r_i = \sqrt{\frac1N \sum_k X_{ik}^2 + \epsilon}` (``eps_inside_sqrt``, canonical) or
    :math:`\sqrt{\frac1N \sum_k X_{ik}^2} + \epsilon` (eps added to the rms).
    """

    def __new__(cls, arg: Any, eps: Any, eps_inside_sqrt: Any) -> RMSNormRows:
        return sp.Basic.__new__(cls, sp.sympify(arg), sp.sympify(eps), _flag(eps_inside_sqrt))

    @property
    def eps(self) -> Any:
        return self.args[1]

    @property
    def eps_inside_sqrt(self) -> sp.Basic:
        return self.args[2]

    def mean_square(self, i: Any) -> sp.Expr:
        return _row_sum(self.arg, i, lambda t: t**2) / self.arg.shape[1]

    def denominator(self, i: Any) -> sp.Expr:
        ms = self.mean_square(i)
        return _choose(self.eps_inside_sqrt, sp.sqrt(ms + self.eps), sp.sqrt(ms) + self.eps)

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        return self.arg[i, j] / self.denominator(i)

    def _latex(self, printer: Any) -> str:
        eps, arg = printer._print(self.eps), printer._print(self.arg)
        return rf"\operatorname{{RMS}}_{{{eps}}}\left({arg}\right)"

    def _numpycode(self, printer: KernelPrinter) -> str:
        x = printer.hoist(printer._print(self.arg), "x")
        ax, n = printer.row_axis, printer._print(self.arg.shape[1])
        ms = printer.hoist(f"xp.sum({x} * {x}, axis={ax}, keepdims=True) / {n}", "ms")
        eps = printer._print(self.eps)
        denom = printer.hoist(
            printer.choose(
                self.eps_inside_sqrt,
                f"xp.sqrt({ms} + {eps})",
                f"xp.sqrt({ms}) + {eps}",
                bare=True,
            ),
            "denom",
        )
        return f"{x} / {denom}"


class RowMul(_RowOp):
    r"""Row-broadcast product :math:`Y_{ij} w_j` (or :math:`Y_{ij} (1 + w_j)` under
    ``one_plus``); ``w`` is a :math:`1 \times N` row, in code any shape that broadcasts."""

    def __new__(cls, arg: Any, weight: Any, one_plus: Any = False) -> RowMul:
        return sp.Basic.__new__(cls, sp.sympify(arg), sp.sympify(weight), _flag(one_plus))

    @property
    def weight(self) -> Any:
        return self.args[1]

    @property
    def one_plus(self) -> sp.Basic:
        return self.args[2]

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        w = self.weight[0, j]
        return self.arg[i, j] * _choose(self.one_plus, 1 + w, w)

    def _latex(self, printer: Any) -> str:
        w = printer._print(self.weight)
        value = flag_value(self.one_plus)
        factor = rf"\tilde{{{w}}}" if value is None else rf"(1 + {w})" if value else w
        return rf"{printer._print(self.arg)} \odot {factor}"

    def _numpycode(self, printer: KernelPrinter) -> str:
        w = printer._print(self.weight)
        factor = printer.choose(self.one_plus, f"1 + {w}", w)
        if not (factor.isidentifier() or factor.startswith("(")):
            factor = f"({factor})"
        return f"{printer.parens(self.arg)} * {factor}"


class RowAdd(_RowOp):
    r"""Row-broadcast sum :math:`Y_{ij} + b_j`; ``b`` is a :math:`1 \times N` row."""

    def __new__(cls, arg: Any, shift: Any) -> RowAdd:
        return sp.Basic.__new__(cls, sp.sympify(arg), sp.sympify(shift))

    @property
    def shift(self) -> Any:
        return self.args[1]

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        return self.arg[i, j] + self.shift[0, j]

    def _latex(self, printer: Any) -> str:
        return rf"{printer._print(self.arg)} + \mathbf{{1}} {printer._print(self.shift)}"

    def _numpycode(self, printer: KernelPrinter) -> str:
        return f"{printer._print(self.arg)} + {printer._print(self.shift)}"


class ApplyKeep(_RowOp):
    r"""Masking by a keep-mask: :math:`S_{ij}` where :math:`K_{ij}` holds, else the fill
    :math:`f` (:math:`-\infty` canonically, a finite number under ``mask_fill``).

    With :math:`f = -\infty` this equals adding a 0 / :math:`-\infty` bias; a finite fill
    *replaces* the score.
    """

    def __new__(cls, arg: Any, keep: Any, fill: Any) -> ApplyKeep:
        return sp.Basic.__new__(cls, sp.sympify(arg), sp.sympify(keep), sp.sympify(fill))

    @property
    def keep(self) -> Any:
        return self.args[1]

    @property
    def fill(self) -> Any:
        return self.args[2]

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Expr:
        keep = self.keep[i, j]
        if keep is sp.true or keep is True or keep == 1:
            return self.arg[i, j]
        if keep is sp.false or keep is False or keep == 0:
            return self.fill
        return sp.Piecewise((self.arg[i, j], sp.Eq(keep, 1)), (self.fill, True))

    def _latex(self, printer: Any) -> str:
        return (
            rf"\operatorname{{mask}}_{{{printer._print(self.keep)},\,{printer._print(self.fill)}}}"
            rf"\left({printer._print(self.arg)}\right)"
        )

    def _numpycode(self, printer: KernelPrinter) -> str:
        keep, fill = printer._print(self.keep), printer._print(self.fill)
        return f"xp.where({keep}, {printer._print(self.arg)}, {fill})"


class CausalKeep(MatrixExpr):
    r"""The causal keep-mask, :math:`K_{ij} = [\, j \le i + \delta \,]` with
    :math:`\delta = 0` (top-left alignment) or :math:`\delta = L_k - L_q` (bottom-right).

    Entries are ``sympy.true`` / ``sympy.false``; the code builds a bool array of shape
    (Lq, Lk) with NumPy index arithmetic (structure, not values: it is the same for every
    ``xp``).
    """

    def __new__(cls, lq: Any, lk: Any, bottom_right: Any) -> CausalKeep:
        return sp.Basic.__new__(cls, sp.sympify(lq), sp.sympify(lk), _flag(bottom_right))

    @property
    def shape(self) -> tuple[Any, Any]:
        return (self.args[0], self.args[1])

    @property
    def offset(self) -> sp.Expr:
        lq, lk, flag = self.args
        return _choose(flag, lk - lq, sp.Integer(0))

    def _entry(self, i: Any, j: Any, **kwargs: Any) -> sp.Basic:
        return sp.Le(j, i + self.offset)

    def _latex(self, printer: Any) -> str:
        return rf"\left[\, j \le i + {printer._print(self.offset)} \,\right]_{{ij}}"

    def _numpycode(self, printer: KernelPrinter) -> str:
        lq, lk = printer._print(self.args[0]), printer._print(self.args[1])
        off = printer.choose(self.args[2], f"{lk} - {lq}", "0", bare=True)
        if off == "0":
            return f"np.arange({lk})[None, :] <= np.arange({lq})[:, None]"
        off = printer.hoist(off, "offset")
        return f"np.arange({lk})[None, :] <= np.arange({lq})[:, None] + {off}"


class KernelPrinter(NumPyPrinter):
    """NumPy printer for shape-generic kernels over a math namespace ``xp``.

    Differences from SymPy's ``NumPyPrinter``: module functions print as ``xp.<name>`` and only
    the names in :data:`XP_FUNCTIONS` are allowed; a matrix product prints as ``xp.matmul`` and
    a transpose as ``xp.swapaxes(., -1, -2)`` (SymPy's default ``.dot`` / ``.T`` is wrong for
    batched arrays); nodes may hoist intermediate values into named statements
    (:meth:`hoist`), collected in :attr:`lines`.
    """

    printmethod = "_numpycode"

    def __init__(self, reserved: set[str] | None = None, row_axis: str = "-1") -> None:
        super().__init__({"fully_qualified_modules": True, "inline": True})
        self.lines: list[str] = []
        self.names: set[str] = set(reserved or ())
        self.row_axis = row_axis

    # -- statements -------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            name, k = f"{hint}{k}", k + 1
        self.names.add(name)
        return name

    def hoist(self, code: str, hint: str) -> str:
        """Bind ``code`` to a fresh name (unless it is a name already) and return the name."""
        if code.isidentifier():
            return code
        name = self.fresh(hint)
        self.lines.append(f"{name} = {code}")
        return name

    def row_max(self, x: str) -> str:
        """The stable row shift: the row maximum, 0 where the row is entirely -inf."""
        m = self.hoist(f"xp.max({x}, axis={self.row_axis}, keepdims=True)", "m")
        return self.hoist(f"xp.where(xp.isneginf({m}), 0.0, {m})", "shift")

    def choose(self, flag: sp.Basic, a: str, b: str, *, bare: bool = False) -> str:
        """Code for ``a`` if the flag holds else ``b`` (parenthesized unless ``bare``)."""
        value = flag_value(flag)
        if value is True:
            return a
        if value is False:
            return b
        code = f"{a} if {self._print(flag)} else {b}"
        return code if bare else f"({code})"

    def parens(self, expr: Any) -> str:
        code = self._print(expr)
        return code if code.isidentifier() or isinstance(expr, sp.MatMul) else f"({code})"

    # -- SymPy overrides --------------------------------------------------------------------
    def _module_format(self, fqn: str, register: bool = True) -> str:
        module, _, name = fqn.rpartition(".")
        if module not in ("numpy", "math") or name not in XP_FUNCTIONS:
            raise ValueError(f"generated code may not call {fqn}; allowed: xp.{XP_FUNCTIONS}")
        return f"xp.{name}"

    def _print_MatMul(self, expr: Any) -> str:  # noqa: N802
        coeff, matrices = expr.as_coeff_matrices()
        code = self._print(matrices[0])
        for m in matrices[1:]:
            code = f"xp.matmul({code}, {self._print(m)})"
        if coeff == 1:
            return code
        return f"{self.parenthesize(coeff, 50)} * {code}"

    def _print_Transpose(self, expr: Any) -> str:  # noqa: N802
        return f"xp.swapaxes({self._print(expr.arg)}, -1, -2)"

    def _print_MatAdd(self, expr: Any) -> str:  # noqa: N802
        return " + ".join(self._print(a) for a in expr.args)

    def _print_MatrixSymbol(self, expr: Any) -> str:  # noqa: N802
        return str(expr.name)
