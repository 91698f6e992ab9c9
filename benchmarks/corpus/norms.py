r"""LayerNorm and RMSNorm: textbook implementations, their wrong variants, and right ones.

Over the trailing dims named by ``normalized_shape`` (n elements):

.. math::

    \mathrm{LayerNorm}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \, w + b, \quad
    \mu = \tfrac1n \textstyle\sum x, \quad \sigma^2 = \tfrac1n \sum (x - \mu)^2
    \qquad
    \mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac1n \sum x^2 + \epsilon}} \, w

(biased variance, eps inside the square root; RMSNorm's ``eps=None`` is the machine epsilon of
the input dtype). The bases compute in the compute dtype (float32 for float16/bfloat16), one
method per step, so each chaff overrides exactly its defect.
"""

from __future__ import annotations

from typing import Any

import torch

from transpec.spec.conventions import Conventions

from ._registry import ALL_DTYPES, HALF_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype, normalized_dims, sequential_sum


def _flat_rows(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """x with the normalized dims flattened into one last axis."""
    return x.reshape((*x.shape[: x.dim() - len(dims)], -1))


class LayerNormBase(CorpusAdapter):
    """Textbook two-pass LayerNorm in the compute dtype."""

    component = "layer_norm"
    io_dtype: torch.dtype = torch.float32

    def layer_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Any,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        eps: float = 1e-5,
    ) -> torch.Tensor:
        self.io_dtype = x.dtype
        ct = compute_dtype(x.dtype)
        dims = self.dims(normalized_shape)
        xc = x.to(ct)
        mu, var = self.moments(xc, dims)
        y = (xc - mu) / self.denominator(var, self.epsilon(eps))
        y = self.affine(
            y,
            None if weight is None else weight.to(ct),
            None if bias is None else bias.to(ct),
        )
        return y.to(x.dtype)

    def dims(self, normalized_shape: Any) -> tuple[int, ...]:
        return normalized_dims(normalized_shape)

    def moments(self, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-pass mean and biased variance."""
        mu = x.mean(dim=dims, keepdim=True)
        d = x - mu
        return mu, (d * d).mean(dim=dims, keepdim=True)

    def epsilon(self, eps: float) -> float:
        return eps

    def denominator(self, var: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sqrt(var + eps)

    def affine(
        self, y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y


# -- LayerNorm wheats -------------------------------------------------------------------------


@wheat("layer_norm")
class LayerNormTwoPass(LayerNormBase):
    """Two-pass mean then variance of the deviations, in the compute dtype."""


@wheat("layer_norm")
class LayerNormWelford(LayerNormBase):
    """Chunked Welford/Chan: per-chunk (n, mean, M2) of 16 elements merged pairwise in order."""

    def moments(self, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = _flat_rows(x, dims)
        n_total = rows.shape[-1]
        count = 0
        mean = torch.zeros(rows.shape[:-1], dtype=x.dtype)
        m2 = torch.zeros_like(mean)
        for j in range(0, n_total, 16):
            chunk = rows[..., j : j + 16]
            nb = chunk.shape[-1]
            mean_b = chunk.mean(dim=-1)
            m2_b = ((chunk - mean_b.unsqueeze(-1)) ** 2).sum(dim=-1)
            total = count + nb
            delta = mean_b - mean
            mean = mean + delta * (nb / total)
            m2 = m2 + m2_b + delta * delta * (count * nb / total)
            count = total
        shape = x.shape[: x.dim() - len(dims)] + (1,) * len(dims)
        return mean.reshape(shape), (m2 / n_total).reshape(shape)


@wheat("layer_norm")
class LayerNormFloat64Internals(LayerNormBase):
    """Two-pass LayerNorm in float64, rounded once to the input dtype."""

    def layer_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Any,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        eps: float = 1e-5,
    ) -> torch.Tensor:
        w = None if weight is None else weight.double()
        b = None if bias is None else bias.double()
        return super().layer_norm(x.double(), normalized_shape, w, b, eps).to(x.dtype)


class _Unbiased(LayerNormBase):
    def moments(self, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        mu = x.mean(dim=dims, keepdim=True)
        d = x - mu
        n = 1
        for a in dims:
            n *= x.shape[a]
        return mu, (d * d).sum(dim=dims, keepdim=True) / (n - 1)


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="relative effect 1/(2n): above fp64/fp32/fp16 rounding for every n drawn, and in bf16 "
    "(u = 2^-8) for n <= ~32, which the strategies draw (invisible in bf16 for n >= 512)",
)
class LayerNormUnbiasedVariance(_Unbiased):
    """Unbiased variance (divide by n - 1, torch.std style), biased declared."""


@wheat("layer_norm")
class LayerNormUnbiasedDeclared(_Unbiased):
    """Unbiased variance, declared layer_norm_variance="unbiased"."""

    conventions = Conventions(layer_norm_variance="unbiased")


class _EpsOnStd(LayerNormBase):
    def denominator(self, var: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sqrt(var) + eps


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="sigma + eps vs sqrt(sigma² + eps) differ by ~eps/sigma: 1e-5 at sigma = 1 (fp64/fp32); "
    "in fp16/bf16 only when sigma² ≈ eps, a drawn regime",
)
class LayerNormEpsAddedToStd(_EpsOnStd):
    """eps added to the std, (x - μ)/(σ + eps) (Annotated Transformer), eps inside declared."""


@wheat("layer_norm")
class LayerNormEpsAddedToStdDeclared(_EpsOnStd):
    """eps added to the std, declared layer_norm_eps="added_to_std"."""

    conventions = Conventions(layer_norm_eps="added_to_std")


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="relative effect eps/(2σ²): 5e-6 at σ = 1 (fp64/fp32); fp16/bf16 when σ² ≈ eps; and "
    "0/0 on constant rows",
)
class LayerNormEpsDropped(LayerNormBase):
    """eps dropped: (x - μ)/sqrt(σ²)."""

    def epsilon(self, eps: float) -> float:
        return 0.0


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="only when an eps other than 1e-5 is passed: visible where eps/σ² is above rounding "
    "(fp64/fp32 at σ ~ 1; fp16/bf16 when σ² ≈ eps)",
)
class LayerNormEpsFixed(LayerNormBase):
    """The ``eps`` argument ignored: always 1e-5."""

    def epsilon(self, eps: float) -> float:
        return 1e-5


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="only with a normalized shape of two or more dims: statistics of each last-dim row",
)
class LayerNormLastDimOnly(LayerNormBase):
    """Statistics over the last dim only, whatever ``normalized_shape`` says."""

    def dims(self, normalized_shape: Any) -> tuple[int, ...]:
        return (-1,)


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="statistics over the whole tensor: visible whenever there is more than one row",
)
class LayerNormStatsOverEverything(LayerNormBase):
    """Mean and variance over the whole tensor (batch included) instead of each row."""

    def dims(self, normalized_shape: Any) -> tuple[int, ...]:
        return (-1,)

    def moments(self, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        every = tuple(range(x.dim()))
        mu = x.mean(dim=every, keepdim=True)
        d = x - mu
        return mu, (d * d).mean(dim=every, keepdim=True)


@chaff("layer_norm", visible=ALL_DTYPES, why="visible whenever a non-zero bias is passed")
class LayerNormBiasIgnored(LayerNormBase):
    """``bias`` ignored."""

    def affine(
        self, y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return super().affine(y, weight, None)


@chaff("layer_norm", visible=ALL_DTYPES, why="visible whenever a weight other than 1 is passed")
class LayerNormWeightIgnored(LayerNormBase):
    """``weight`` ignored."""

    def affine(
        self, y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return super().affine(y, None, bias)


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="y·b + w instead of y·w + b: visible whenever weight and bias are both passed",
)
class LayerNormWeightBiasSwapped(LayerNormBase):
    """Weight and bias swapped: y·b + w."""

    def affine(
        self, y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if weight is None or bias is None:
            return super().affine(y, weight, bias)
        return y * bias + weight


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="E[x²] - E[x]² cancels catastrophically at |μ| >> σ: relative error ~u·(μ/σ)² in σ² "
    "(0.06 in fp32 math at μ/σ = 1e3; 1e-8 in fp64 at 1e4), negative variances -> NaN",
)
class LayerNormNaiveVariance(LayerNormBase):
    """One-pass variance E[x²] - E[x]² in the compute dtype."""

    def moments(self, x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        mu = x.mean(dim=dims, keepdim=True)
        return mu, (x * x).mean(dim=dims, keepdim=True) - mu * mu


# -- RMSNorm ----------------------------------------------------------------------------------


class RMSNormBase(CorpusAdapter):
    """Textbook RMSNorm in the compute dtype."""

    component = "rms_norm"
    io_dtype: torch.dtype = torch.float32

    def rms_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Any,
        weight: torch.Tensor | None = None,
        eps: float | None = None,
    ) -> torch.Tensor:
        self.io_dtype = x.dtype
        ct = compute_dtype(x.dtype)
        dims = self.dims(normalized_shape)
        xc = x.to(ct)
        e = self.default_eps(x.dtype) if eps is None else float(eps)
        y = self.center(xc, dims) / self.denominator(self.mean_square(xc, dims), e)
        if weight is not None:
            y = self.apply_weight(y, weight.to(ct))
        return y.to(x.dtype)

    def dims(self, normalized_shape: Any) -> tuple[int, ...]:
        return normalized_dims(normalized_shape)

    def default_eps(self, dtype: torch.dtype) -> float:
        """eps=None: the machine epsilon (2u) of the input dtype."""
        return float(torch.finfo(dtype).eps)

    def center(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return x

    def mean_square(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return (x * x).mean(dim=dims, keepdim=True)

    def denominator(self, ms: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sqrt(ms + eps)

    def apply_weight(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return y * weight


@wheat("rms_norm")
class RMSNormTextbook(RMSNormBase):
    """x / sqrt(mean(x²) + eps) · w in the compute dtype."""


@wheat("rms_norm")
class RMSNormRsqrtBlocked(RMSNormBase):
    """Sum of squares over blocks of 32 (split reduction), then x · rsqrt(ms + eps)."""

    def mean_square(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        rows = _flat_rows(x, dims)
        total = torch.zeros(rows.shape[:-1], dtype=x.dtype)
        for j in range(0, rows.shape[-1], 32):
            block = rows[..., j : j + 32]
            total = total + (block * block).sum(dim=-1)
        shape = x.shape[: x.dim() - len(dims)] + (1,) * len(dims)
        return (total / rows.shape[-1]).reshape(shape)

    def denominator(self, ms: torch.Tensor, eps: float) -> torch.Tensor:
        return 1.0 / torch.rsqrt(ms + eps)


@wheat("rms_norm")
class RMSNormFloat64Internals(RMSNormBase):
    """RMSNorm in float64 (eps=None still the input dtype's epsilon), rounded once."""

    def rms_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Any,
        weight: torch.Tensor | None = None,
        eps: float | None = None,
    ) -> torch.Tensor:
        e = self.default_eps(x.dtype) if eps is None else eps
        w = None if weight is None else weight.double()
        return super().rms_norm(x.double(), normalized_shape, w, e).to(x.dtype)


class _OnePlusW(RMSNormBase):
    def apply_weight(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return y * (1.0 + weight)


@chaff("rms_norm", visible=ALL_DTYPES, why="y·(1 + w) vs y·w: visible whenever a weight is passed")
class RMSNormOnePlusWeightUndeclared(_OnePlusW):
    """Gemma's (1 + w) weight, canonical y·w declared."""


@wheat("rms_norm")
class RMSNormOnePlusWeightDeclared(_OnePlusW):
    """Gemma's (1 + w) weight, declared rms_norm_weight="one_plus_w"."""

    conventions = Conventions(rms_norm_weight="one_plus_w")


class _EpsOnRms(RMSNormBase):
    def denominator(self, ms: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sqrt(ms) + eps


@chaff(
    "rms_norm",
    visible=ALL_DTYPES,
    why="rms + eps vs sqrt(ms + eps) differ by ~eps/rms: fp64/fp32 at rms ~ 1 with eps 1e-6; "
    "fp16/bf16 when mean(x²) ≈ eps",
)
class RMSNormEpsAddedToRmsUndeclared(_EpsOnRms):
    """eps added to the rms, x/(rms + eps), eps inside the square root declared."""


@wheat("rms_norm")
class RMSNormEpsAddedToRmsDeclared(_EpsOnRms):
    """eps added to the rms, declared rms_norm_eps="added_to_rms"."""

    conventions = Conventions(rms_norm_eps="added_to_rms")


@chaff("rms_norm", visible=ALL_DTYPES, why="a LayerNorm without bias: wrong whenever mean(x) != 0")
class RMSNormSubtractsMean(RMSNormBase):
    """Mean subtracted before dividing by the rms."""

    def center(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return x - x.mean(dim=dims, keepdim=True)


@chaff(
    "rms_norm",
    visible=ALL_DTYPES,
    why="mean of squares over dim 0 (a 2-D habit) instead of the normalized dims: wrong for "
    "any input of two or more dims",
)
class RMSNormMeanOverFirstDim(RMSNormBase):
    """Mean of squares over dim 0 instead of the normalized trailing dims."""

    def mean_square(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return (x * x).mean(dim=0, keepdim=True)


@chaff(
    "rms_norm",
    visible=ALL_DTYPES,
    why="only with a normalized shape of two or more dims: each last-dim row scaled alone",
)
class RMSNormLastDimOnly(RMSNormBase):
    """Mean of squares over the last dim only, whatever ``normalized_shape`` says."""

    def dims(self, normalized_shape: Any) -> tuple[int, ...]:
        return (-1,)


@chaff("rms_norm", visible=ALL_DTYPES, why="x / mean(x²): wrong unless mean(x²) = 1")
class RMSNormMissingSqrt(RMSNormBase):
    """Divides by mean(x²) + eps, forgetting the square root."""

    def denominator(self, ms: torch.Tensor, eps: float) -> torch.Tensor:
        return ms + eps


@chaff(
    "rms_norm",
    visible=ALL_DTYPES,
    why="only for eps=None: 1e-6 vs 2.2e-16 (fp64), 1.2e-7 (fp32), 9.8e-4 (fp16), 7.8e-3 "
    "(bf16); relative effect ~Δeps/(2·mean(x²)), visible at mean(x²) ~ 1 in fp64/fp32 and at "
    "small mean(x²) in fp16/bf16",
)
class RMSNormDefaultEps1e6(RMSNormBase):
    """eps=None taken as 1e-6 instead of the dtype's machine epsilon."""

    def default_eps(self, dtype: torch.dtype) -> float:
        return 1e-6


@chaff("rms_norm", visible=ALL_DTYPES, why="visible whenever a weight other than 1 is passed")
class RMSNormWeightIgnored(RMSNormBase):
    """``weight`` ignored."""

    def apply_weight(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return y


@chaff(
    "rms_norm",
    visible=HALF_DTYPES,
    why="sum of squares in float16 overflows for |x| > 256 (x² > 65504) and both half types "
    "lose ~sqrt(n)·u on long rows, against the declared float32 accumulation",
)
class RMSNormLowPrecisionSquares(RMSNormBase):
    """Sum of squares accumulated in the input dtype (float16/bfloat16), float32 declared."""

    def mean_square(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        rows = _flat_rows(x * x, dims).to(self.io_dtype)
        total = sequential_sum(rows, -1, self.io_dtype).to(x.dtype)
        shape = x.shape[: x.dim() - len(dims)] + (1,) * len(dims)
        return (total / rows.shape[-1]).reshape(shape)
