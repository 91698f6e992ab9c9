r"""Attention masks, causal alignment, fully masked rows and GQA: wrong variants and right ones.

The canonical semantics (``transpec.spec.conventions``): a boolean mask is True where a key is
attended; an additive mask is added to the scaled scores; ``is_causal`` keeps key j for query i
when j <= i (top-left corner, also when Lq != Lk); masked scores are -inf, and a query whose
every key is masked outputs 0; GQA query head h reads kv head h // (Hq / Hkv).

The wheats here are the chaffs' own code with the convention *declared*: transpec must then
accept exactly what it rejected when the same behaviour went undeclared.
"""

from __future__ import annotations

import torch

from transpec.spec.conventions import Conventions

from ._registry import ALL_DTYPES, chaff, wheat
from .attention import NEG_INF, AttentionBase

# ---------------------------------------------------------------------------------------------
# causal masks
# ---------------------------------------------------------------------------------------------


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="query 0 loses its only key (its row becomes fully masked) and every query its own key",
)
class CausalExcludesDiagonal(AttentionBase):
    """Causal mask off by one: query i sees keys j < i (diagonal masked)."""

    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        return torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=-1)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="query i also sees key i + 1 (a leak of the next token) whenever Lk > 1",
)
class CausalSeesNextKey(AttentionBase):
    """Causal mask off by one: query i sees keys j <= i + 1."""

    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        return torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=1)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="the mask is upper triangular: queries see the future instead of the past (Lk > 1)",
)
class CausalUpperTriangle(AttentionBase):
    """Causal mask transposed: triu instead of tril, query i sees keys j >= i."""

    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        return torch.ones(lq, lk, dtype=torch.bool).triu()


@chaff("attention", visible=ALL_DTYPES, why="every query sees every key when is_causal (Lk > 1)")
class CausalIgnored(AttentionBase):
    """``is_causal`` ignored."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        return super().apply_masks(s, attn_mask, False)


class _BottomRight(AttentionBase):
    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        return torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=lk - lq)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only when Lq != Lk: the mask is anchored to the other corner (Lq = Lk is identical)",
)
class CausalBottomRightUndeclared(_BottomRight):
    """Bottom-right causal alignment (query i sees j <= i + Lk - Lq), canonical declared."""


@wheat("attention")
class CausalBottomRightDeclared(_BottomRight):
    """Bottom-right causal alignment, declared causal_alignment="bottom_right"."""

    conventions = Conventions(causal_alignment="bottom_right")


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="the causal mask is built for a square Lk x Lk and its last Lq rows kept (a KV-cache "
    "slice): bottom-right when Lq < Lk, and an error when Lq > Lk",
)
class CausalSquareSliced(AttentionBase):
    """Causal mask built as tril(Lk, Lk)[-Lq:]: a decode-style slice that shifts the corner."""

    def causal_keep(self, lq: int, lk: int) -> torch.Tensor:
        full = torch.ones(lk, lk, dtype=torch.bool).tril()
        return full[lk - lq :] if lq <= lk else full[:lq]


# ---------------------------------------------------------------------------------------------
# boolean and additive masks
# ---------------------------------------------------------------------------------------------


class _InvertedBool(AttentionBase):
    def bool_keep(self, mask: torch.Tensor) -> torch.Tensor:
        return ~mask


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="True masks a key instead of keeping it: visible whenever a boolean mask is drawn",
)
class BoolMaskInverted(_InvertedBool):
    """Boolean mask polarity inverted (True = masked out, nn.MultiheadAttention style)."""


@wheat("attention")
class BoolMaskInvertedDeclared(_InvertedBool):
    """Boolean mask True = masked out, declared bool_mask="ignore"."""

    conventions = Conventions(bool_mask="ignore")


@chaff("attention", visible=ALL_DTYPES, why="visible whenever a mask that masks something is drawn")
class MaskIgnored(AttentionBase):
    """``attn_mask`` ignored."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        return super().apply_masks(s, None, is_causal)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="masked weights are zeroed after the softmax without renormalizing: rows with a "
    "masked and an unmasked key sum to < 1",
)
class BoolMaskAfterSoftmax(AttentionBase):
    """Boolean mask applied after the softmax (weights zeroed, not renormalized)."""

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
        self._late_mask = (
            attn_mask if attn_mask is not None and attn_mask.dtype == torch.bool else None
        )
        early = None if self._late_mask is not None else attn_mask
        return super().scaled_dot_product_attention(q, k, v, early, is_causal, scale, enable_gqa)

    def weights(self, s: torch.Tensor) -> torch.Tensor:
        p = super().weights(s)
        if self._late_mask is not None:
            p = p.masked_fill(~self._late_mask, 0.0)
        return p

    _late_mask: torch.Tensor | None = None


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="an additive mask read as 'keep where non-zero': its 0 (attend) entries get masked; "
    "visible whenever a float mask is drawn",
)
class FloatMaskAsKeepMask(AttentionBase):
    """Additive float mask treated like a 0/1 keep mask: masked_fill(mask == 0, -inf)."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            s = s.masked_fill(attn_mask == 0, NEG_INF)
            attn_mask = None
        return super().apply_masks(s, attn_mask, is_causal)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="finite biases of an additive mask are dropped, only its -inf entries kept: visible "
    "whenever a float mask with finite non-zero entries is drawn",
)
class FloatMaskOnlyNegInf(AttentionBase):
    """Additive mask reduced to a boolean (isneginf): finite biases (ALiBi, padding) dropped."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = ~torch.isneginf(attn_mask)
        return super().apply_masks(s, attn_mask, is_causal)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="a per-head mask (dim -3 > 1) is replaced by its first head's mask",
)
class MaskFirstHeadOnly(AttentionBase):
    """Per-head masks broadcast from head 0: attn_mask[..., :1, :, :]."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dim() >= 3:
            attn_mask = attn_mask[..., :1, :, :]
        return super().apply_masks(s, attn_mask, is_causal)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="a per-batch mask (dim 0 > 1) is replaced by the first batch's mask",
)
class MaskFirstBatchOnly(AttentionBase):
    """Per-batch masks broadcast from batch 0: attn_mask[:1]."""

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dim() >= 4:
            attn_mask = attn_mask[:1]
        return super().apply_masks(s, attn_mask, is_causal)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="a key-padding mask (one row, broadcast over queries) is also applied to the query "
    "rows: outputs of padded query positions are zeroed; visible when Lq == Lk and a "
    "padding-shaped mask is drawn",
)
class PaddingZeroesQueries(AttentionBase):
    """Key-padding mask also zeroes the outputs of padded *query* positions (Lq == Lk)."""

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
        o = super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa)
        lq, lk = q.shape[-2], k.shape[-2]
        if attn_mask is None or attn_mask.dim() < 2 or attn_mask.shape[-2] != 1 or lq != lk:
            return o
        keep = attn_mask if attn_mask.dtype == torch.bool else ~torch.isneginf(attn_mask)
        return o.masked_fill(~keep.transpose(-1, -2), 0.0)  # (..., Lk, 1) over the query rows


# ---------------------------------------------------------------------------------------------
# fully masked rows
# ---------------------------------------------------------------------------------------------


class _FiniteFill(AttentionBase):
    """Masked scores (boolean or causal) *replaced* by a finite fill; an additive mask is
    added as it is (its -inf entries stay -inf)."""

    fill = -1e9

    def apply_masks(
        self, s: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            s = s + attn_mask
        if is_causal:
            s = s.masked_fill(~self.causal_keep(s.shape[-2], s.shape[-1]), self.fill)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, self.fill)
        return s


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only on fully masked rows, which then average V instead of giving 0 (a fill of -1e9 "
    "underflows exp like -inf on every other row)",
)
class FiniteMaskFillUndeclared(_FiniteFill):
    """Masked scores filled with -1e9 instead of -inf, canonical declared."""


@wheat("attention")
class FiniteMaskFillDeclared(_FiniteFill):
    """Masked scores filled with -1e9, declared mask_fill=-1e9."""

    conventions = Conventions(mask_fill=-1e9)


class _NaNRows(AttentionBase):
    def weights(self, s: torch.Tensor) -> torch.Tensor:
        m = s.amax(dim=-1, keepdim=True)
        e = torch.exp(s - m)  # a row of -inf: -inf - -inf = NaN
        return e / e.sum(dim=-1, keepdim=True)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only on fully masked rows: 0/0 = NaN instead of a zero output",
)
class FullyMaskedRowNan(_NaNRows):
    """Naive softmax: a fully masked row gives NaN, canonical (zero) declared."""


@wheat("attention")
class FullyMaskedRowNanDeclared(_NaNRows):
    """Naive softmax giving NaN on fully masked rows, declared fully_masked_row="nan"."""

    conventions = Conventions(fully_masked_row="nan")


# ---------------------------------------------------------------------------------------------
# grouped-query attention
# ---------------------------------------------------------------------------------------------


class _TiledGQA(AttentionBase):
    def expand_kv(
        self, k: torch.Tensor, v: torch.Tensor, hq: int, enable_gqa: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hkv = k.shape[-3]
        if hq == hkv:
            return k, v
        g = hq // hkv
        reps = (1,) * (k.dim() - 3) + (g, 1, 1)
        return k.repeat(*reps), v.repeat(*reps)


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="only with GQA groups > 1 and Hkv > 1: query head h reads kv head h % Hkv",
)
class GQATiledUndeclared(_TiledGQA):
    """GQA by tiling the kv heads (k.repeat), canonical repeat_interleave declared."""


@wheat("attention")
class GQATiledDeclared(_TiledGQA):
    """GQA by tiling the kv heads, declared gqa_mapping="tile"."""

    conventions = Conventions(gqa_mapping="tile")


@chaff(
    "attention",
    visible=ALL_DTYPES,
    why="query head h reads kv head h // Hkv instead of h // (Hq/Hkv): wrong heads (or an index "
    "error) whenever the group size differs from Hkv",
)
class GQAGroupSizeConfused(AttentionBase):
    """GQA head map h // Hkv (number of kv heads) instead of h // g (group size)."""

    def expand_kv(
        self, k: torch.Tensor, v: torch.Tensor, hq: int, enable_gqa: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hkv = k.shape[-3]
        if hq == hkv:
            return k, v
        index = torch.arange(hq) // hkv
        return k.index_select(-3, index), v.index_select(-3, index)
