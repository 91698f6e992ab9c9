r"""Softmax: a textbook implementation, its wrong variants, and right ones.

.. math::

    \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j,

along ``dim``. :class:`SoftmaxBase` moves ``dim`` last, computes in the compute dtype (float32
for float16/bfloat16) and moves it back; chaffs override one step.
"""

from __future__ import annotations

import torch

from ._registry import ALL_DTYPES, HALF_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype, sequential_sum


class SoftmaxBase(CorpusAdapter):
    """Textbook max-subtracted softmax along ``dim`` in the compute dtype."""

    component = "softmax"
    io_dtype: torch.dtype = torch.float32

    def softmax(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        self.io_dtype = x.dtype
        xc = x.to(compute_dtype(x.dtype)).movedim(self.axis(x, dim), -1)
        return self.last_axis(xc).movedim(-1, self.axis(x, dim)).to(x.dtype)

    def axis(self, x: torch.Tensor, dim: int) -> int:
        return dim

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        """softmax over the last axis."""
        m = x.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp(x - m)
        return e / self.row_sum(e)

    def row_sum(self, e: torch.Tensor) -> torch.Tensor:
        return e.sum(dim=-1, keepdim=True)


@wheat("softmax")
class SoftmaxTextbook(SoftmaxBase):
    """Textbook max-subtracted softmax in the compute dtype (float32 for float16/bfloat16)."""


@wheat("softmax")
class SoftmaxLogSumExp(SoftmaxBase):
    """exp((x - m) - log Σ exp(x - m)): the shifted log-sum-exp form (Blanchard et al. 2021)."""

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        m = x.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        shifted = x - m
        return torch.exp(shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True)))


@wheat("softmax")
class SoftmaxOnlineBlock8(SoftmaxBase):
    """Online normalizer (Milakov & Gimelshein 2018) over blocks of 8, then a second pass."""

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
        d = torch.zeros_like(m)
        for j in range(0, x.shape[-1], 8):
            xj = x[..., j : j + 8]
            m_new = torch.maximum(m, xj.amax(dim=-1, keepdim=True))
            safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            d = d * torch.exp(m - safe) + torch.exp(xj - safe).sum(dim=-1, keepdim=True)
            m = m_new
        safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        return torch.exp(x - safe) / d


@wheat("softmax")
class SoftmaxFloat64Internals(SoftmaxBase):
    """Textbook softmax in float64, rounded once to the input dtype."""

    def softmax(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return super().softmax(x.double(), dim).to(x.dtype)


@chaff(
    "softmax",
    visible=ALL_DTYPES,
    why="only when dim is not the last axis: normalizes the wrong axis",
)
class SoftmaxDimIgnored(SoftmaxBase):
    """``dim`` ignored: always the last axis."""

    def axis(self, x: torch.Tensor, dim: int) -> int:
        return -1


@chaff(
    "softmax",
    visible=ALL_DTYPES,
    why="exp overflows for x > 88.7 in the float32 math (fp32, fp16, bf16 inputs; fp16 holds "
    "such x) and past 709 in fp64: inf/inf = NaN",
)
class SoftmaxNoMaxSubtraction(SoftmaxBase):
    """exp(x) / sum exp(x) without subtracting the maximum."""

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x)
        return e / e.sum(dim=-1, keepdim=True)


@chaff(
    "softmax",
    visible=ALL_DTYPES,
    why="the row sums, without keepdim, broadcast along the wrong axis: wrong when the two "
    "trailing sizes are equal (> 1), a shape error when they differ and neither is 1",
)
class SoftmaxSumWithoutKeepdim(SoftmaxBase):
    """e / e.sum(-1) without keepdim (row sums broadcast across columns)."""

    def row_sum(self, e: torch.Tensor) -> torch.Tensor:
        return e.sum(dim=-1)


@chaff(
    "softmax",
    visible=ALL_DTYPES,
    why="exp2 without log2(e) is a softmax at temperature 1/ln 2: wrong unless the row is flat",
)
class SoftmaxExp2WithoutLog2e(SoftmaxBase):
    """exp2(x - m) in place of exp(x - m)."""

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        m = x.amax(dim=-1, keepdim=True)
        e = torch.exp2(x - m)
        return e / e.sum(dim=-1, keepdim=True)


@chaff(
    "softmax",
    visible=HALF_DTYPES,
    why="a float16/bfloat16 running sum of n exps errs ~sqrt(n)·u (up to n·u) against the "
    "declared float32 accumulation: visible on long rows (statistic); fp32/fp64 unaffected",
)
class SoftmaxLowPrecisionSum(SoftmaxBase):
    """Denominator accumulated in the input dtype (float16/bfloat16) while float32 is declared."""

    def row_sum(self, e: torch.Tensor) -> torch.Tensor:
        return sequential_sum(e, -1, self.io_dtype).to(e.dtype)


@chaff(
    "softmax",
    visible=("float64", "float32"),
    why="x - logsumexp(x) subtracts two numbers of size |x|: relative error ~u·|x| in every "
    "weight (5e-6 at |x| = 88 in fp32, 8e-14 at 700 in fp64), far above the shifted form's; in "
    "fp16/bf16 the float32 math keeps it below the output rounding",
)
class SoftmaxLogSumExpUnshifted(SoftmaxBase):
    """exp(x - logsumexp(x)): the log-sum-exp form without the shift (x - m) done first."""

    def last_axis(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x - torch.logsumexp(x, dim=-1, keepdim=True))
