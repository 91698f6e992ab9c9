r"""Derivations: each block's definition, its conventions and its proved identities, rendered.

``render(block, fmt)`` returns Markdown (``$$`` display math) or a LaTeX body (for a ``.tex``
document). Everything mathematical in the output is printed from SymPy objects: the definitions
of :mod:`transpec.spec.blocks`, the element semantics of the nodes of :mod:`transpec.spec.nodes`
(at a symbolic row length, so the sums are :math:`\sum_{k=0}^{N-1}`), the generated kernel code,
and the steps of :mod:`transpec.spec.proofs` exactly as the decision procedure checked them
(the proofs are run while rendering; a step that failed would be shown as failed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOCKS", "render"]

#: The blocks :func:`render` knows, in order.
BLOCKS: tuple[str, ...] = ("softmax", "logsumexp", "attention", "masking", "layer_norm", "rms_norm")

_TITLES = {
    "softmax": "Softmax",
    "logsumexp": "Log-sum-exp",
    "attention": "Scaled dot-product attention",
    "masking": "Attention masking",
    "layer_norm": "LayerNorm",
    "rms_norm": "RMSNorm",
}

_PROOF_BLOCKS = {
    "softmax": ("softmax",),
    "logsumexp": ("logsumexp",),
    "attention": ("attention", "masking"),
    "masking": ("masking",),
    "layer_norm": ("layer_norm",),
    "rms_norm": ("rms_norm",),
}

_KERNELS = {
    "softmax": ("softmax",),
    "logsumexp": ("logsumexp",),
    "attention": ("attention_scores", "attention"),
    "masking": ("sdpa",),
    "layer_norm": ("layer_norm",),
    "rms_norm": ("rms_norm",),
}


@dataclass(frozen=True)
class _Variant:
    field: str
    value: str
    canonical: bool
    formula: str  # LaTeX
    note: str = ""


class _Writer:
    """Markdown or LaTeX, one method per kind of element."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.out: list[str] = []

    def heading(self, text: str, level: int) -> None:
        if self.fmt == "markdown":
            self.out += ["#" * level + " " + text, ""]
        else:
            cmd = {1: "section", 2: "subsection", 3: "subsubsection"}[level]
            self.out += [rf"\{cmd}*{{{_tex_text(text)}}}", ""]

    def text(self, text: str) -> None:
        self.out += [text if self.fmt == "markdown" else _tex_text(text), ""]

    def math(self, latex: str) -> None:
        if self.fmt == "markdown":
            self.out += ["$$", latex, "$$", ""]
        else:
            self.out += [r"\[", latex, r"\]", ""]

    def code(self, code: str) -> None:
        if self.fmt == "markdown":
            self.out += ["```python", code.rstrip(), "```", ""]
        else:
            self.out += [r"\begin{verbatim}", code.rstrip(), r"\end{verbatim}", ""]

    def render(self) -> str:
        return "\n".join(self.out).rstrip() + "\n"


def _tex_text(text: str) -> str:
    """Plain text for LaTeX: escape the specials, keep inline $...$ math and `code`."""
    out, in_math = [], False
    for part in text.split("$"):
        if in_math:
            out.append(f"${part}$")
        else:
            for ch, rep in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&")):
                part = part.replace(ch, rep)
            for ch in "#{}":
                part = part.replace(ch, "\\" + ch)
            pieces = part.split("`")
            part = "".join(
                rf"\texttt{{{p}}}" if n % 2 else p.replace("**", "") for n, p in enumerate(pieces)
            )
            out.append(part)
        in_math = not in_math
    return "".join(out)


def _definitions(block: str) -> tuple[list[tuple[str, str]], list[_Variant]]:
    """(caption, LaTeX) pairs of the definition and the convention variants of ``block``."""
    import sympy as sp

    from transpec.spec import blocks as B  # noqa: N812
    from transpec.spec.conventions import CANONICAL
    from transpec.spec.nodes import (
        ApplyKeep,
        CausalKeep,
        LayerNormRows,
        RMSNormRows,
        RowLogSumExp,
        RowSoftmax,
        Softcap,
    )

    i, j = sp.symbols("i j", integer=True, nonnegative=True)
    X = B.x
    tex = B.latex

    def entry(lhs: str, node: Any) -> str:
        return f"{lhs} = {tex(node._entry(i, j))}"

    defs: list[tuple[str, str]] = []
    variants: list[_Variant] = []
    if block == "softmax":
        defs = [
            ("Definition (row-wise)", f"P = {tex(B.softmax_definition())}"),
            ("Element semantics, row length $N$", entry("P_{ij}", RowSoftmax(X))),
            (
                "Stable evaluation (the generated kernel): the shift cancels exactly",
                r"P_{ij} = \frac{e^{X_{ij} - m_i}}{\sum_{k=0}^{N-1} e^{X_{ik} - m_i}},\quad "
                r"m_i = \max_k X_{ik}\ (0 \text{ if the row is } -\infty)",
            ),
        ]
    elif block == "logsumexp":
        defs = [
            ("Definition (row-wise, a column)", f"\\ell = {tex(B.logsumexp_definition())}"),
            ("Element semantics", entry(r"\ell_{i}", RowLogSumExp(X))),
            (
                "Stable evaluation (the generated kernel)",
                r"\ell_i = m_i + \log \sum_{k=0}^{N-1} e^{X_{ik} - m_i},\quad m_i = \max_k X_{ik}",
            ),
        ]
    elif block == "attention":
        scores = B.SCORES
        defs = [
            ("Definition, one head", f"O = {tex(B.attention_definition(CANONICAL))}"),
            ("Scores", f"S = {tex(scores)}"),
            (
                "Soft-capping, element-wise",
                entry(r"\operatorname{softcap}_c(S)_{ij}", Softcap(B.s, B.softcap)),
            ),
            ("Weights", entry("P_{ij}", RowSoftmax(B.s))),
            ("Output", f"O = {tex(B.p * B.v)}"),
        ]
        variants = [
            _Variant("scale", "None", True, r"\alpha = 1 / \sqrt{E}", "E: the query/key width"),
            _Variant("scale", "given", False, r"\alpha \in \mathbb{R}", "negative allowed"),
            _Variant(
                "softcap",
                "c",
                True,
                entry(r"S'_{ij}", Softcap(B.s, B.softcap)),
                "applied before the mask",
            ),
            _Variant(
                "gqa_mapping",
                "interleave",
                True,
                r"h \mapsto \lfloor h / (H_q / H_{kv}) \rfloor",
                "repeat_interleave",
            ),
            _Variant("gqa_mapping", "tile", False, r"h \mapsto h \bmod H_{kv}", "old ONNX"),
            _Variant(
                "fully_masked_row",
                "zero",
                True,
                r"S_{ik} = -\infty\ \forall k \Rightarrow O_{i\cdot} = 0",
            ),
            _Variant(
                "fully_masked_row",
                "nan",
                False,
                r"S_{ik} = -\infty\ \forall k \Rightarrow O_{i\cdot} = 0/0 = \mathrm{NaN}",
            ),
        ]
    elif block == "masking":
        keep_node = ApplyKeep(B.s, B.keep, -sp.oo)
        defs = [
            (
                "Masked scores (keep-mask $M$, fill $f$), then the additive mask $B$",
                f"S' = {tex(sp.MatAdd(ApplyKeep(B.s, B.keep, B.fill), B.bias))}",
            ),
            ("Element semantics", entry("S'_{ij}", ApplyKeep(B.s, B.keep, B.fill))),
            (
                "Canonical fill: equivalent to adding a 0 / $-\\infty$ bias",
                entry("S'_{ij}", keep_node),
            ),
        ]
        lq, lk = B.Lq, B.Lk
        variants = [
            _Variant("bool_mask", "keep", True, r"M = A", "True = attend (SDPA, JAX, ONNX)"),
            _Variant("bool_mask", "ignore", False, r"M = \lnot A", "True = masked out"),
            _Variant("mask_fill", "None", True, r"f = -\infty"),
            _Variant("mask_fill", "finite", False, r"f \in \mathbb{R}", "replaces the score"),
            _Variant(
                "causal_alignment",
                "top_left",
                True,
                f"C_{{ij}} = {tex(CausalKeep(lq, lk, False)._entry(i, j))}",
            ),
            _Variant(
                "causal_alignment",
                "bottom_right",
                False,
                f"C_{{ij}} = {tex(CausalKeep(lq, lk, True)._entry(i, j))}",
                "FlashAttention >= 2.1, KV-cache decode",
            ),
        ]
    elif block == "layer_norm":
        defs = [
            (
                "Definition over the trailing normalized dims (a row of $N$ elements)",
                f"Y = {tex(B.layer_norm_definition(CANONICAL))}",
            ),
            (
                "Element semantics (canonical)",
                entry("Y_{ij}", B.layer_norm_definition(CANONICAL, affine=False)),
            ),
        ]
        for var in ("biased", "unbiased"):
            for place in ("inside_sqrt", "added_to_std"):
                node = LayerNormRows(X, B.eps, var == "unbiased", place == "inside_sqrt")
                variants.append(
                    _Variant(
                        "layer_norm_variance / layer_norm_eps",
                        f"{var} / {place}",
                        var == "biased" and place == "inside_sqrt",
                        entry("Y_{ij}", node),
                        "" if var == "biased" else "torch.std, Annotated Transformer",
                    )
                )
    elif block == "rms_norm":
        defs = [
            (
                "Definition over the trailing normalized dims",
                f"Y = {tex(B.rms_norm_definition(CANONICAL))}",
            ),
            (
                "Element semantics (canonical)",
                entry("Y_{ij}", B.rms_norm_definition(CANONICAL, affine=False)),
            ),
        ]
        for place in ("inside_sqrt", "added_to_rms"):
            node = RMSNormRows(X, B.eps, place == "inside_sqrt")
            variants.append(
                _Variant("rms_norm_eps", place, place == "inside_sqrt", entry("Y_{ij}", node))
            )
        variants += [
            _Variant("rms_norm_weight", "w", True, r"Y \odot \gamma"),
            _Variant("rms_norm_weight", "one_plus_w", False, r"Y \odot (1 + \gamma)", "Gemma"),
        ]
    return defs, variants


@functools.cache
def _results(name: str) -> tuple[Any, Any]:
    """(proof result, negative control result) of a proof, run once per process."""
    from transpec.spec.proofs import proof

    pr = proof(name)
    return pr.prove(), pr.negative_control()


def render(block: str, fmt: str = "markdown") -> str:
    """The derivation of ``block`` (one of :data:`BLOCKS`) as Markdown or as a LaTeX body."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; known blocks: {', '.join(BLOCKS)}")
    if fmt not in ("markdown", "latex"):
        raise ValueError(f"unknown format {fmt!r}; use 'markdown' or 'latex'")
    from transpec.spec import blocks as B  # noqa: N812
    from transpec.spec.codegen import function_source
    from transpec.spec.proofs import PROOFS

    w = _Writer(fmt)
    w.heading(f"{_TITLES[block]} ({block})", 1)
    defs, variants = _definitions(block)
    w.heading("Definition", 2)
    for caption, latex in defs:
        w.text(caption + ":")
        w.math(latex)
    w.heading("Conventions", 2)
    if not variants:
        w.text("None: every library agrees on this block's semantics.")
    for var in variants:
        tag = " (canonical)" if var.canonical else ""
        note = f" — {var.note}" if var.note else ""
        w.text(f"`{var.field}` = `{var.value}`{tag}{note}:")
        w.math(var.formula)
    w.heading("Kernel (generated from the definition)", 2)
    for name in _KERNELS[block]:
        w.code(function_source(B.kernel(name)))
    w.heading("Proved identities", 2)
    for pr in PROOFS:
        if pr.block not in _PROOF_BLOCKS[block]:
            continue
        res, neg = _results(pr.name)
        verdict = "proved" if res.proved else "NOT PROVED"
        w.heading(f"{pr.name}: {verdict} in {res.seconds:.3f} s", 3)
        w.math(pr.statement)
        for n, step in enumerate(res.steps, 1):
            mark = "decided" if step.holds else "FAILED"
            why = f" ({step.why})" if step.why else ""
            w.text(f"Step {n}{why}, {mark}:")
            w.math(step.latex)
        control = "rejected" if neg.rejected else "ACCEPTED (the procedure is broken)"
        w.text(f"Negative control, {pr.control}: {control} by the same procedure.")
    return w.render()


def main(argv: list[str] | None = None) -> int:
    """``python -m transpec.spec.derive [BLOCK ...] [--format latex]``: print derivations
    (every block when none is named)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m transpec.spec.derive")
    parser.add_argument("blocks", nargs="*", help=f"any of {', '.join(BLOCKS)} (default: all)")
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    args = parser.parse_args(argv)
    try:
        texts = [render(block, args.format) for block in args.blocks or BLOCKS]
    except ValueError as err:
        parser.error(str(err))
    print("\n".join(texts), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
