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

#: The blocks :func:`render` knows, in order: the kernels, then the layer and positional blocks
#: (definitions of :mod:`transpec.spec.layers` and :mod:`transpec.spec.positional`).
BLOCKS: tuple[str, ...] = (
    "softmax",
    "logsumexp",
    "attention",
    "masking",
    "layer_norm",
    "rms_norm",
    "embedding",
    "sinusoidal_positional_encoding",
    "rotary_embedding",
    "alibi_bias",
    "multi_head_attention",
    "masked_self_attention",
    "cross_attention",
    "feed_forward",
    "encoder_layer",
    "decoder_layer",
    "swiglu_feed_forward",
)

#: blocks defined in spec/layers.py and spec/positional.py: their numeric code is the float64
#: reference of transpec.oracle.layers.reference (shown instead of a generated kernel)
_LAYER_BLOCKS: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding",),
    "sinusoidal_positional_encoding": (
        "sinusoid_frequencies",
        "sinusoidal_positional_encoding",
        "learned_positional_encoding",
    ),
    "rotary_embedding": ("rope_frequencies", "rotary_embedding"),
    "alibi_bias": ("alibi_slopes", "alibi_bias"),
    "multi_head_attention": ("multi_head_attention",),
    "masked_self_attention": ("square_subsequent_mask", "masked_self_attention"),
    "cross_attention": ("cross_attention",),
    "feed_forward": ("linear", "gelu", "feed_forward"),
    "encoder_layer": ("residual_layer_norm", "transformer_encoder_layer"),
    "decoder_layer": ("transformer_decoder_layer",),
    "swiglu_feed_forward": (
        "transpec.oracle.swiglu:silu",
        "transpec.oracle.swiglu:swiglu_feed_forward",
    ),
}

_TITLES = {
    "softmax": "Softmax",
    "logsumexp": "Log-sum-exp",
    "attention": "Scaled dot-product attention",
    "masking": "Attention masking",
    "layer_norm": "LayerNorm",
    "rms_norm": "RMSNorm",
    "embedding": "Token embedding",
    "sinusoidal_positional_encoding": "Sinusoidal positional encoding",
    "rotary_embedding": "Rotary position embedding (RoPE)",
    "alibi_bias": "ALiBi attention bias",
    "multi_head_attention": "Multi-head attention",
    "masked_self_attention": "Masked (causal) self-attention",
    "cross_attention": "Cross-attention (encoder-decoder attention)",
    "feed_forward": "Position-wise feed-forward",
    "encoder_layer": "Transformer encoder layer",
    "decoder_layer": "Transformer decoder layer",
    "swiglu_feed_forward": "SwiGLU feed-forward",
}

_PROOF_BLOCKS = {
    "softmax": ("softmax",),
    "logsumexp": ("logsumexp",),
    "attention": ("attention", "masking"),
    "masking": ("masking",),
    "layer_norm": ("layer_norm",),
    "rms_norm": ("rms_norm",),
    "embedding": (),
    "sinusoidal_positional_encoding": ("sinusoidal_positional_encoding",),
    "rotary_embedding": ("rotary_embedding",),
    "alibi_bias": (),
    "multi_head_attention": ("multi_head_attention",),
    "masked_self_attention": ("masked_self_attention",),
    "cross_attention": ("cross_attention",),
    "feed_forward": (),
    # a layer's identities are those of its attention sublayers
    "encoder_layer": ("multi_head_attention",),
    "decoder_layer": ("masked_self_attention", "cross_attention"),
    "swiglu_feed_forward": ("swiglu_feed_forward",),
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


def _layer_definitions(block: str) -> tuple[list[tuple[str, str]], list[_Variant]]:
    """(caption, LaTeX) pairs and variants of a layer or positional block, printed from the
    SymPy definitions of :mod:`transpec.spec.layers` and :mod:`transpec.spec.positional`
    (general formulas over matrix symbols, and the definitions evaluated at small sizes)."""
    import sympy as sp

    from transpec.spec import layers as SL  # noqa: N812
    from transpec.spec import positional as SP  # noqa: N812
    from transpec.spec.nodes import RowSoftmax

    tex = sp.latex
    i, j = sp.symbols("i j", integer=True, nonnegative=True)
    d, n_heads = sp.symbols("d H", integer=True, positive=True)
    p, k = sp.symbols("p k", integer=True)
    base = sp.Symbol("b", positive=True)
    L, S, E, Dh = sp.symbols("L S E D_h", integer=True, positive=True)
    defs: list[tuple[str, str]] = []
    variants: list[_Variant] = []

    mask_variants = [
        _Variant(
            "boolean masks",
            "True = not allowed",
            True,
            r"M_{ij} = -\infty \text{ where the mask is True, else } 0",
            "nn.MultiheadAttention's signature (the opposite of SDPA's keep-mask)",
        ),
        _Variant(
            "fully_masked_row",
            "nan",
            False,
            r"M_{i\cdot} \equiv -\infty \Rightarrow O_{h,i\cdot} = 0/0 = \mathrm{NaN}",
            "need_weights=True and the fast paths",
        ),
        _Variant(
            "fully_masked_row",
            "zero",
            False,
            r"M_{i\cdot} \equiv -\infty \Rightarrow O_{h,i\cdot} = 0",
            "need_weights=False slow path (it calls SDPA); the output projection still adds b_o",
        ),
    ]

    def mha_formulas(xq: str, xkv: str) -> list[tuple[str, str]]:
        Xq, Xkv = sp.MatrixSymbol(xq, L, E), sp.MatrixSymbol(xkv, S, E)
        Wq, Wk, Wv, Wo = (sp.MatrixSymbol(f"W_{c}", E, E) for c in "qkvo")
        bq, bk, bv = (sp.MatrixSymbol(f"b_{c}", 1, E) for c in "qkv")
        Qh, Kh, Vh = (sp.MatrixSymbol(f"{c}_h", n, Dh) for c, n in (("Q", L), ("K", S), ("V", S)))
        M = sp.MatrixSymbol("M", L, S)
        alpha = sp.Symbol("alpha", positive=True)
        return [
            (
                "Projections (rows are positions; the biases broadcast over rows)",
                rf"Q = {tex(Xq * Wq.T)} + {tex(bq)},\quad K = {tex(Xkv * Wk.T)} + {tex(bk)},"
                rf"\quad V = {tex(Xkv * Wv.T)} + {tex(bv)}",
            ),
            (
                "Head h reads the columns $hD_h{:}(h+1)D_h$ of Q, K, V "
                "(proved: `mha_split_heads`), $D_h = E/H$, $\\alpha = D_h^{-1/2}$",
                f"O_h = {tex(RowSoftmax(sp.MatAdd(alpha * Qh * Kh.T, M)) * Vh)}",
            ),
            (
                "Output projection (proved: `mha_concat_project`)",
                rf"Y = [O_1 \cdots O_H]\,{tex(Wo.T)} + b_o = "
                rf"\sum_h O_h\,W_o[:, hD_h{{:}}(h+1)D_h]^\top + b_o",
            ),
        ]

    if block == "embedding":
        w = sp.MatrixSymbol("W", 4, 3).as_explicit()
        defs = [
            (
                "Definition: row $t$ of the output is row $\\mathrm{ids}_t$ of $W$ "
                "($V \\times d$), times $\\sqrt{d}$ when scaled",
                rf"y_{{t,j}} = {tex(sp.Indexed('W', sp.Symbol('ids_t'), j))}\cdot s,\quad "
                rf"s \in \{{1, {tex(sp.sqrt(d))}\}}",
            ),
            (
                "`transpec.spec.layers.embedding([2, 0, 2], W, scale=True)` at V = 4, d = 3",
                tex(SL.embedding([2, 0, 2], w, scale=True)),
            ),
        ]
        variants = [
            _Variant("scale_by_sqrt_d", "False", True, "s = 1", "F.embedding, nn.Embedding"),
            _Variant(
                "scale_by_sqrt_d",
                "True",
                False,
                f"s = {tex(sp.sqrt(d))}",
                "an argument, not a convention: 'Attention Is All You Need' §3.4",
            ),
        ]
    elif block == "sinusoidal_positional_encoding":
        w0, w1 = sp.symbols("omega_0 omega_1", positive=True)
        defs = [
            ("Frequencies", rf"\omega_i = {tex(base ** (-2 * i / d))},\quad b = 10000"),
            (
                "`sinusoidal_encoding(p, [omega_0, omega_1])` (d = 4, interleaved)",
                f"PE(p) = {tex(SP.sinusoidal_encoding(p, [w0, w1]))}",
            ),
            (
                "The shift map (proved: `sinusoidal_shift_is_rotation`): "
                "$PE(p + k) = M_k\\,PE(p)$ with",
                f"M_k = {tex(SP.sinusoid_shift_map(k, [w0, w1]))}",
            ),
            (
                "Learned positions: rows offset..offset+L-1 of a table (the embedding block)",
                r"PE(p) = W_{p,:}",
            ),
        ]
        variants = [
            _Variant(
                "sinusoidal_layout",
                "interleaved",
                True,
                tex(SP.sinusoidal_encoding(p, [w0, w1], layout="interleaved").T),
                "the paper, the PyTorch tutorial",
            ),
            _Variant(
                "sinusoidal_layout",
                "concatenated",
                False,
                tex(SP.sinusoidal_encoding(p, [w0, w1], layout="concatenated").T),
                "tensor2tensor, fairseq",
            ),
            _Variant(
                "sinusoidal_frequencies", "paper", True, rf"\omega_i = {tex(base ** (-2 * i / d))}"
            ),
            _Variant(
                "sinusoidal_frequencies",
                "tensor2tensor",
                False,
                rf"\omega_i = {tex(base ** (-i / (d / 2 - 1)))}",
                "get_timing_signal_1d: the last frequency is exactly 1/b",
            ),
        ]
    elif block == "rotary_embedding":
        th = list(sp.symbols("theta_0 theta_1", positive=True))
        xs = sp.Matrix(sp.symbols("x_0:4", real=True))
        defs = [
            ("Frequencies", rf"\theta_i = {tex(base ** (-2 * i / d))},\quad b = 10000"),
            ("A pair rotated by $\\phi$", f"R(\\phi) = {tex(SP.rotation(sp.Symbol('phi')))}"),
            (
                "`rope_matrix(p, [theta_0, theta_1])` applied to x (d = 4, half-split); "
                "positions $p = o + t$ with a KV-cache offset $o$",
                f"R_p\\,x = {tex(SP.rope_matrix(p, th) * xs)}",
            ),
        ]
        variants = [
            _Variant(
                "rope_pairing",
                "half_split",
                True,
                f"R_p = {tex(SP.rope_matrix(p, th, pairing='half'))}",
                "GPT-NeoX, Hugging Face rotate_half",
            ),
            _Variant(
                "rope_pairing",
                "interleaved",
                False,
                f"R_p = {tex(SP.rope_matrix(p, th, pairing='interleaved'))}",
                "GPT-J rotate_every_two, RoFormer, Meta Llama's complex form",
            ),
        ]
    elif block == "alibi_bias":
        h = sp.Symbol("h", integer=True, positive=True)
        lq, lk = sp.symbols("L_q L_k", integer=True, positive=True)
        bias = SP.alibi_bias(3, 2, 3)
        defs = [
            (
                "Bias of head h, query i (at position $p_i = i + L_k - L_q$), key j",
                rf"B_{{h,i,j}} = -m_h\,(i + {tex(lk - lq)} - j)",
            ),
            ("Slopes for H a power of 2", rf"m_h = {tex(sp.Integer(2) ** (-8 * h / n_heads))}"),
            ("`alibi_slopes(8)`", tex(sp.Matrix([SP.alibi_slopes(8)]))),
            (
                "`alibi_slopes(6)`: the 4 slopes of H = 4, then every other slope of H = 8",
                tex(sp.Matrix([SP.alibi_slopes(6)])),
            ),
            (
                "`alibi_bias(3, 2, 3)` (H = 3, Lq = 2, Lk = 3), head by head",
                r",\ ".join(tex(m) for m in bias),
            ),
        ]
        jj = sp.Symbol("j", integer=True, nonnegative=True)
        pi, mh = sp.Symbol("p_i", integer=True), sp.Symbol("m_h", positive=True)
        variants = [
            _Variant(
                "bias form",
                "distance",
                True,
                f"B_{{h,i,j}} = {tex(-mh * (pi - jj))}",
                "Press et al.; the alibi_bias component",
            ),
            _Variant(
                "bias form",
                "key position",
                False,
                f"B_{{h,i,j}} = {tex(mh * jj)}",
                "BLOOM: differs by -m_h p_i per query row, which the softmax cancels",
            ),
            _Variant(
                "bias form",
                "symmetric",
                False,
                f"B_{{h,i,j}} = {tex(-mh * sp.Abs(pi - jj))}",
                "bidirectional encoders",
            ),
        ]
    elif block == "multi_head_attention":
        variants = mask_variants
        defs = mha_formulas("X_q", "X_{kv}")
        defs.append(
            (
                "Self-attention: $X_q = X_{kv} = X$; $M$ the additive mask (0 / $-\\infty$)",
                "M_{ij} \\in \\{0, -\\infty\\}",
            )
        )
    elif block == "masked_self_attention":
        variants = mask_variants
        defs = mha_formulas("X", "X")
        defs.append(
            (
                "The causal mask (`transpec.spec.layers.causal_mask(4)`): query i sees keys "
                "$j \\le i$",
                f"M = {tex(SL.causal_mask(4))}",
            )
        )
    elif block == "cross_attention":
        variants = mask_variants
        defs = mha_formulas("T", "M_{enc}")
        defs.append(
            (
                "Queries from the target T, keys and values from the encoder output; the "
                "memory padding mask hides padded source positions",
                r"M_{ij} = -\infty \text{ where source position } j \text{ is padding}",
            )
        )
    elif block == "feed_forward":
        X = sp.MatrixSymbol("X", L, E)
        W1, W2 = (
            sp.MatrixSymbol("W_1", sp.Symbol("F"), E),
            sp.MatrixSymbol("W_2", E, sp.Symbol("F")),
        )
        xv = sp.Symbol("x", real=True)
        defs = [
            (
                "Definition (row-wise), $\\sigma$ applied elementwise",
                rf"\mathrm{{FFN}}(X) = \sigma({tex(X * W1.T)} + b_1)\,{tex(W2.T)} + b_2",
            ),
        ]
        for name, fn in SL.ACTIVATIONS.items():
            variants.append(
                _Variant("activation", name, name == "relu", rf"\sigma(x) = {tex(fn(xv))}")
            )
    elif block in ("encoder_layer", "decoder_layer"):
        x = sp.Symbol("x")
        post = [r"x \leftarrow \mathrm{LN}_1(x + \mathrm{SA}(x))"]
        pre = [r"x \leftarrow x + \mathrm{SA}(\mathrm{LN}_1(x))"]
        if block == "decoder_layer":
            post.append(r"x \leftarrow \mathrm{LN}_2(x + \mathrm{CA}(x, m))")
            pre.append(r"x \leftarrow x + \mathrm{CA}(\mathrm{LN}_2(x), m)")
        last = "3" if block == "decoder_layer" else "2"
        post.append(rf"x \leftarrow \mathrm{{LN}}_{last}(x + \mathrm{{FFN}}(x))")
        pre.append(rf"x \leftarrow x + \mathrm{{FFN}}(\mathrm{{LN}}_{last}(x))")
        xr = sp.MatrixSymbol("x", 1, 3).as_explicit()
        ln = SL.layer_norm(xr, [1, 1, 1], None, sp.Symbol("epsilon", positive=True))
        sa = "SA: masked self-attention (`tgt_mask`), CA: cross-attention to the memory m"
        defs = [
            (
                "Sublayers: SA the multi-head self-attention block, FFN the feed-forward block"
                + (f"; {sa}" if block == "decoder_layer" else ""),
                r",\quad ".join(post),
            ),
            (
                "LN: `transpec.spec.layers.layer_norm` (biased variance, eps inside the root), "
                "here its first entry for a row of 3",
                f"\\mathrm{{LN}}(x)_0 = {tex(ln[0, 0])}",
            ),
        ]
        variants = [
            _Variant(
                "norm_first",
                "False",
                True,
                r",\quad ".join(post),
                "post-LN, 'Attention Is All You Need', nn.Transformer*Layer default",
            ),
            _Variant("norm_first", "True", False, r",\quad ".join(pre), "pre-LN (Xiong et al.)"),
        ]
        del x
    elif block == "swiglu_feed_forward":
        X, hid = sp.MatrixSymbol("X", L, E), sp.Symbol("F")
        W1, W3 = sp.MatrixSymbol("W_1", hid, E), sp.MatrixSymbol("W_3", hid, E)
        W2 = sp.MatrixSymbol("W_2", E, hid)
        zv = sp.Symbol("z", real=True)
        xr = sp.MatrixSymbol("x", 1, 2).as_explicit()
        small = {
            "w1.weight": sp.MatrixSymbol("A", 1, 2).as_explicit(),
            "w3.weight": sp.MatrixSymbol("U", 1, 2).as_explicit(),
            "w2.weight": sp.MatrixSymbol("D", 2, 1).as_explicit(),
        }
        defs = [
            (
                "Definition (row-wise, rows are tokens), bias-free; silu elementwise, "
                "$\\odot$ the elementwise product; $W_1$ the gate (`w1.weight`), $W_3$ the up "
                "projection (`w3.weight`), $W_2$ the down projection (`w2.weight`)",
                rf"\mathrm{{SwiGLU}}(X) = \left(\operatorname{{silu}}({tex(X * W1.T)}) \odot "
                rf"{tex(X * W3.T)}\right) {tex(W2.T)}",
            ),
            (
                "silu (`transpec.spec.layers.silu`)",
                rf"\operatorname{{silu}}(z) = {tex(SL.silu(zv))}",
            ),
            (
                "`transpec.spec.layers.swiglu_feed_forward` on one token of d = 2, hidden = 1",
                tex(SL.swiglu_feed_forward(xr, small)),
            ),
        ]
    return defs, variants


def _catalogue() -> tuple[Any, ...]:
    """Every proof: the kernel identities, the layer and positional ones, the backward ones."""
    from transpec.spec.backward import BACKWARD_PROOFS
    from transpec.spec.layers import catalogue
    from transpec.spec.proofs import PROOFS

    return tuple(PROOFS) + tuple(catalogue()) + BACKWARD_PROOFS


@functools.cache
def _results(name: str) -> tuple[Any, Any]:
    """(proof result, negative control result) of a proof, run once per process."""
    pr = next(p for p in _catalogue() if p.name == name)
    return pr.prove(), pr.negative_control()


def _reference_source(name: str) -> str:
    """The source of a float64 reference function: ``name`` in
    transpec.oracle.layers.reference, or ``"module:function"``."""
    import importlib
    import inspect

    module, _, attr = name.rpartition(":")
    source = importlib.import_module(module or "transpec.oracle.layers.reference")
    return inspect.getsource(getattr(source, attr))


def render(block: str, fmt: str = "markdown") -> str:
    """The derivation of ``block`` (one of :data:`BLOCKS`) as Markdown or as a LaTeX body."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; known blocks: {', '.join(BLOCKS)}")
    if fmt not in ("markdown", "latex"):
        raise ValueError(f"unknown format {fmt!r}; use 'markdown' or 'latex'")
    from transpec.spec import blocks as B  # noqa: N812
    from transpec.spec.codegen import function_source

    w = _Writer(fmt)
    w.heading(f"{_TITLES[block]} ({block})", 1)
    layer = block in _LAYER_BLOCKS
    defs, variants = _layer_definitions(block) if layer else _definitions(block)
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
    if layer:
        first = _LAYER_BLOCKS[block][0]
        module = first.rpartition(":")[0] or "transpec.oracle.layers.reference"
        w.heading(f"Kernel: the float64 reference ({module})", 2)
        for name in _LAYER_BLOCKS[block]:
            w.code(_reference_source(name))
    else:
        w.heading("Kernel (generated from the definition)", 2)
        for name in _KERNELS[block]:
            w.code(function_source(B.kernel(name)))
    w.heading("Proved identities", 2)
    proofs = [pr for pr in _catalogue() if pr.block in _PROOF_BLOCKS[block]]
    if not proofs:
        w.text("None in the proof catalogue: the block is checked numerically only.")
    _render_proofs(w, proofs)
    if block in _BACKWARD:
        from transpec.spec.backward import backward_proofs

        w.heading("Backward (vector-Jacobian product)", 2)
        w.text(
            "The gradients of the loss $L = \\sum g \\circ f$ for a cotangent $g$, derived with "
            "`sympy.diff` from the definition above; the float64 backward reference "
            "(transpec.oracle.gradients.vjp) computes these closed forms:"
        )
        w.code(_reference_source(f"transpec.oracle.gradients.vjp:{_BACKWARD[block]}"))
        _render_proofs(w, backward_proofs(block))
    return w.render()


#: the kernel blocks with a backward pass: their VJP function in transpec.oracle.gradients.vjp
_BACKWARD = {
    "softmax": "softmax_vjp",
    "attention": "attention_vjp",
    "layer_norm": "layer_norm_vjp",
    "rms_norm": "rms_norm_vjp",
}


def _render_proofs(w: _Writer, proofs: Any) -> None:
    """Each proof: its statement, its checked steps and its negative control's verdict."""
    for pr in proofs:
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
