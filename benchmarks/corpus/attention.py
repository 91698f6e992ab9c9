r"""Scaled dot-product attention: a textbook implementation, its wrong variants, and right ones.

The canonical block (``transpec.spec``):

.. math::

    O = \operatorname{softmax}(s \, Q K^\top + B) \, V, \qquad s = 1/\sqrt{E} \text{ by default},

with ``B`` the additive form of the masks (0 where a key is attended, -inf where it is not; a
boolean mask is True where attended; ``is_causal`` keeps key j for query i when j <= i), GQA
query head h reading kv head h // (Hq / Hkv), and a row whose every key is masked giving 0.

:class:`AttentionBase` computes this step by step; every step is a method, so each chaff
overrides exactly the step that carries its defect and nothing else. Shapes:
q (B, Hq, Lq, E), k (B, Hkv, Lk, E), v (B, Hkv, Lk, Ev) -> (B, Hq, Lq, Ev).
"""

from __future__ import annotations

import math

import torch

from ._registry import ALL_DTYPES, HALF_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype, sequential_matmul

NEG_INF = float("-inf")


class AttentionBase(CorpusAdapter):
    """Textbook attention in the compute dtype, one method per step (see the module docstring)."""

    component = "attention"
    #: dtype of the call in progress (the chaffs that round in it read it)
    io_dtype: torch.dtype = torch.float32

    def scaled_dot_product_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        out_dtype = q.dtype
        ct = compute_dtype(out_dtype)
        self.io_dtype = out_dtype
        q, k, v = q.to(ct), k.to(ct), v.to(ct)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(ct)
        k, v = self.expand_kv(k, v, q.shape[-3], enable_gqa)
        s = self.scores(q, k, self.resolve_scale(q, k, v, scale), attn_mask)  # (B, H, Lq, Lk)
        s = self.apply_masks(s, attn_mask, is_causal)
        o = self.attend(s, v)  # (B, H, Lq, Ev)
        return o.to(out_dtype)

    # -- the steps ----------------------------------------------------------------------------

    def expand_kv(
        self, k: torch.Tensor, v: torch.Tensor, hq: int, enable_gqa: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GQA: kv head j serves query heads j*g .. j*g + g - 1 (``repeat_interleave``)."""
        hkv = k.shape[-3]
        if hq == hkv:
            return k, v
        if not enable_gqa or hq % hkv:
            raise ValueError(f"{hq} query heads cannot share {hkv} kv heads")
        g = hq // hkv
        return k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3)

    def default_scale(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 / math.sqrt(q.shape[-1])

    def resolve_scale(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None
    ) -> float:
        return self.default_scale(q, k, v) if scale is None else float(scale)

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """s * Q K^T."""
        return torch.matmul(q, k.transpose(-1, -2)) * scale

    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        """Top-left causal mask: query i keeps key j when j <= i."""
        return torch.ones(lq, lk, dtype=torch.bool).tril()

    def bool_keep(self, mask: torch.Tensor) -> torch.Tensor:
        """A boolean mask is True where a key is attended."""
        return mask

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if is_causal:
            s = s.masked_fill(~self.causal_keep(s.shape[-2], s.shape[-1]), NEG_INF)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                s = s.masked_fill(~self.bool_keep(attn_mask), NEG_INF)
            else:
                s = s + attn_mask
        return s

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        """Row softmax with max subtraction; a row of -inf gives zero weights."""
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp(s - m)
        denom = e.sum(dim=-1, keepdim=True)
        return torch.where(denom > 0, e / denom, torch.zeros_like(e))

    def attend(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weights(s), v)


# ---------------------------------------------------------------------------------------------
# wheats: correct, computed another way
# ---------------------------------------------------------------------------------------------


@wheat("attention")
class AttentionTextbook(AttentionBase):
    """Textbook softmax(s·QKᵀ + B)·V in the compute dtype (float32 for float16/bfloat16)."""


class _OnlineSoftmax(AttentionBase):
    """FlashAttention's online softmax over key blocks of ``block`` keys."""

    block = 16
    rescale_accumulator = True

    def attend(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        lk = s.shape[-1]
        m = torch.full((*s.shape[:-1], 1), NEG_INF, dtype=s.dtype)  # running max
        l = torch.zeros_like(m)  # running sum of exp(s - m)
        acc = torch.zeros((*s.shape[:-1], v.shape[-1]), dtype=s.dtype)  # running P·V
        for j0 in range(0, lk, self.block):
            sj = s[..., j0 : j0 + self.block]
            m_new = torch.maximum(m, sj.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m - m_safe)  # exp(-inf) = 0 on the first block
            pj = torch.exp(sj - m_safe)
            l = alpha * l + pj.sum(dim=-1, keepdim=True)
            pv = torch.matmul(pj, v[..., j0 : j0 + self.block, :])
            acc = (alpha * acc if self.rescale_accumulator else acc) + pv
            m = m_new
        return torch.where(l > 0, acc / l, torch.zeros_like(acc))


@wheat("attention")
class AttentionOnlineBlock5(_OnlineSoftmax):
    """Online (FlashAttention) softmax over key blocks of 5, rescaling the accumulator."""

    block = 5


@wheat("attention")
class AttentionOnlineBlock32(_OnlineSoftmax):
    """Online (FlashAttention) softmax over key blocks of 32, rescaling the accumulator."""

    block = 32


@wheat("attention")
class AttentionOnlineBlock128(_OnlineSoftmax):
    """Online (FlashAttention) softmax over key blocks of 128, rescaling the accumulator."""

    block = 128


@wheat("attention")
class AttentionLogSumExp(AttentionBase):
    """Weights as exp((s - m) - log Σ exp(s - m)), the shifted log-sum-exp form."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        shifted = s - m
        total = torch.exp(shifted).sum(dim=-1, keepdim=True)
        live = total > 0
        lse = torch.log(torch.where(live, total, torch.ones_like(total)))
        return torch.where(live, torch.exp(shifted - lse), torch.zeros_like(s))


@wheat("attention")
class AttentionFloat64Internals(AttentionBase):
    """Everything in float64, rounded once to the input dtype at the end."""

    def scaled_dot_product_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.double()
        o = super().scaled_dot_product_attention(
            q.double(), k.double(), v.double(), attn_mask, is_causal, scale, enable_gqa
        )
        return o.to(q.dtype)


@wheat("attention")
class AttentionBlockedMatmul(AttentionBase):
    """QKᵀ summed over head-dim blocks of 8 and P·V over key blocks of 24 (split-K matmuls)."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        e = q.shape[-1]
        s = torch.zeros((*q.shape[:-1], k.shape[-2]), dtype=q.dtype)
        for i in range(0, e, 8):
            s = s + torch.matmul(q[..., i : i + 8], k[..., i : i + 8].transpose(-1, -2))
        return s * scale

    def attend(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.weights(s)
        o = torch.zeros((*p.shape[:-1], v.shape[-1]), dtype=p.dtype)
        for j in range(0, p.shape[-1], 24):
            o = o + torch.matmul(p[..., j : j + 24], v[..., j : j + 24, :])
        return o


@wheat("attention")
class AttentionScaledQuery(AttentionBase):
    """Scale folded into the query before the product: (s·Q)Kᵀ, as many fused kernels do."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.matmul(q * scale, k.transpose(-1, -2))


# ---------------------------------------------------------------------------------------------
# chaffs: the scale
# ---------------------------------------------------------------------------------------------


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="logits shrink by sqrt(E) (4x at E=16): a different softmax in every dtype, E >= 2",
)
class AttentionScaleInvD(AttentionBase):
    """Default scale 1/E instead of 1/sqrt(E)."""

    def default_scale(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 / q.shape[-1]


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="scale 1/sqrt(Lk) vs 1/sqrt(E): any Lk != E changes every logit by sqrt(E/Lk)",
)
class AttentionScaleInvSqrtLk(AttentionBase):
    """Default scale 1/sqrt(Lk) (sequence length) instead of 1/sqrt(E) (head dim)."""

    def default_scale(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 / math.sqrt(k.shape[-2])


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="1/sqrt(E+1) shifts logits by 1/(2E) (0.8% at E=64; 6% at E=8): visible in fp64/fp32/"
    "fp16 elementwise; in bf16 through the RMS statistic and small E",
)
class AttentionScaleSqrtEPlus1(AttentionBase):
    """Default scale 1/sqrt(E + 1) (an off-by-one head dim)."""

    def default_scale(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 / math.sqrt(q.shape[-1] + 1)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only when a custom scale other than 1/sqrt(E) is passed; then every logit is off",
)
class AttentionScaleIgnored(AttentionBase):
    """The ``scale`` argument is ignored: always 1/sqrt(E)."""

    def resolve_scale(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None
    ) -> float:
        return self.default_scale(q, k, v)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="scale applied to q and to k gives s² (1/E by default): a different softmax",
)
class AttentionScaleTwice(AttentionBase):
    """Scale multiplied into both q and k, so the logits carry s² instead of s."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.matmul(q * scale, (k * scale).transpose(-1, -2))


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="sqrt(s) on q and k is right for s > 0 but NaN for a negative custom scale",
)
class AttentionScaleSqrtSplit(AttentionBase):
    """sqrt(scale) applied to q and to k: NaN for a negative scale."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        r = math.sqrt(scale) if scale >= 0 else float("nan")  # math.sqrt raises; torch gives NaN
        return torch.matmul(q * r, (k * r).transpose(-1, -2))


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only when Ev != E (value head dim differs): logits off by sqrt(E/Ev)",
)
class AttentionScaleFromValueDim(AttentionBase):
    """Default scale from the value head dim 1/sqrt(Ev) instead of 1/sqrt(E)."""

    def default_scale(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 / math.sqrt(v.shape[-1])


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="a finite additive mask gets multiplied by the scale (and -inf by a negative scale "
    "becomes +inf): visible whenever a float mask with finite non-zero entries is drawn",
)
class AttentionMaskBeforeScale(AttentionBase):
    """Additive mask added to QKᵀ before scaling: s·(QKᵀ + B) instead of s·QKᵀ + B."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        raw = torch.matmul(q, k.transpose(-1, -2))
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raw = raw + attn_mask
        return raw * scale

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = None  # already added, before the scale
        return super().apply_masks(s, attn_mask, is_causal)


# ---------------------------------------------------------------------------------------------
# chaffs: the softmax inside attention
# ---------------------------------------------------------------------------------------------


@chaff("attention", visible=ALL_DTYPES, why="normalizes columns instead of rows: Lq > 1 differs")
class AttentionSoftmaxOverQueries(AttentionBase):
    """Softmax over the query axis (dim=-2) instead of the key axis."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        return super().weights(s.transpose(-1, -2)).transpose(-1, -2)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="exp overflows for logits > 88.7 in the float32 math (fp32, fp16, bf16 inputs; fp16 "
    "inputs reach such logits easily) and past 709 in fp64 -> inf/inf = NaN",
)
class AttentionNoMaxSubtraction(AttentionBase):
    """Softmax without subtracting the row maximum: exp overflows at large logits."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        e = torch.exp(s)
        denom = e.sum(dim=-1, keepdim=True)
        return torch.where(denom > 0, e / denom, torch.zeros_like(e))


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="exp2 without the log2(e) factor is a softmax at temperature 1/ln 2 (logits x 0.69)",
)
class AttentionExp2WithoutLog2e(AttentionBase):
    """exp2(s - m) in place of exp(s - m), forgetting to multiply the logits by log2(e)."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp2(s - m)
        denom = e.sum(dim=-1, keepdim=True)
        return torch.where(denom > 0, e / denom, torch.zeros_like(e))


@chaff(
    "attention",
    visible=("float64", "float32"),
    why="+1e-6 in a denominator >= 1 is a relative error <= 1e-6: far above fp64's bound, "
    "~17u in fp32 (statistic), below fp16/bf16 rounding",
)
class AttentionDenominatorEps(AttentionBase):
    """Softmax denominator padded with 1e-6 'to avoid division by zero'."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp(s - m)
        return e / (e.sum(dim=-1, keepdim=True) + 1e-6)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="10% of the weights zeroed and the rest scaled by 1/0.9: visible whenever Lk*Lq > 1",
)
class AttentionDropoutLeftOn(AttentionBase):
    """Attention dropout (p = 0.1) left on at inference (a fixed seed, so it is repeatable)."""

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        p = super().weights(s)
        g = torch.Generator().manual_seed(0)
        keep = torch.rand(p.shape, generator=g) >= 0.1
        return p * keep / 0.9


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only when Lk > 16 and a later key block raises the running max: earlier blocks then "
    "keep weights exp(s - m_old) against a sum in exp(s - m_new)",
)
class AttentionOnlineNoRescale(_OnlineSoftmax):
    """Online softmax (blocks of 16) that rescales the running sum but not the accumulator."""

    block = 16
    rescale_accumulator = False


# ---------------------------------------------------------------------------------------------
# chaffs: precision
# ---------------------------------------------------------------------------------------------


@chaff(
    "attention",
    visible=HALF_DTYPES,
    why="an fp16/bf16 running sum over Lk keys errs ~sqrt(Lk)·u against the declared float32 "
    "accumulation (statistic for Lk >= ~16); in fp32/fp64 it is the declared precision",
)
class AttentionLowPrecisionPV(AttentionBase):
    """P·V accumulated in the input dtype (float16/bfloat16) while float32 is declared."""

    def attend(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sequential_matmul(self.weights(s), v, self.io_dtype).to(s.dtype)


@chaff(
    "attention",
    visible=HALF_DTYPES,
    why="fp16/bf16 dot products of length E put an absolute error ~sqrt(E)·u·|q||k| into the "
    "logits; the weights inherit it relative to P (statistic; large logits elementwise)",
)
class AttentionLowPrecisionScores(AttentionBase):
    """QKᵀ accumulated in the input dtype (float16/bfloat16) while float32 is declared."""

    def scores(
        self, q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return sequential_matmul(q, k.transpose(-1, -2), self.io_dtype).to(q.dtype) * scale


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="keys and values swapped: a shape error when Ev != E, different logits otherwise",
)
class AttentionKVSwapped(AttentionBase):
    """K and V swapped: scores from Q·Vᵀ and output P·K."""

    def scaled_dot_product_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        return super().scaled_dot_product_attention(
            q, v, k, attn_mask, is_causal, scale, enable_gqa
        )
