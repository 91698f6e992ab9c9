r"""Token embedding, sinusoidal encoding, RoPE and ALiBi: textbook torch code, wrong variants,
right ones.

.. math::

    y = W[\text{input}]\ (\times \sqrt{d}), \qquad
    PE[p, 2i] = \sin(p\,\omega_i), \quad PE[p, 2i+1] = \cos(p\,\omega_i), \quad
    \omega_i = 10000^{-2i/d}

for positions :math:`p = \text{offset} + 0..L-1`, and RoPE of ``x`` (..., L, D) rotating the
half-split pairs :math:`(x_i, x_{i+D/2})` by :math:`p\,\theta_i`,
:math:`\theta_i = \text{base}^{-2i/D}`: :math:`(a, b) \mapsto (a\cos\phi - b\sin\phi,\;
a\sin\phi + b\cos\phi)`, positions ``positions`` or ``offset + arange(L)``; the ALiBi bias
:math:`m_h\,(j - p_i)`, :math:`p_i = i + L_k - L_q`, with the slopes of the authors'
``get_slopes`` (:mod:`transpec.adapters.torch.positional`). The bases compute in the compute dtype
(float32 for float16/bfloat16) and round once at the end, one method per step (``lookup``,
``factor``, ``frequencies``, ``place``, ``positions``, ``pairs``, ``slopes``, ``distance``,
...), so each chaff overrides exactly its defect.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from transpec.spec.conventions import Conventions

from ._registry import ALL_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype

F = torch.nn.functional


def _target(name: str) -> torch.dtype:
    from transpec.oracle.engine.dtypes import canonical_dtype

    return getattr(torch, canonical_dtype(name))


class SinusoidalBase(CorpusAdapter):
    """The table from the frequencies 10000^(-2i/d) as a power, interleaved sin/cos."""

    component = "sinusoidal_positional_encoding"

    def frequencies(self, d_model: int, work: torch.dtype) -> torch.Tensor:
        """ω_i = 10000^(-2i/d), i = 0..d/2-1."""
        i = torch.arange(d_model // 2, dtype=work)
        return torch.pow(torch.tensor(10000.0, dtype=work), -(2.0 * i) / d_model)

    def angles(self, length: int, offset: int, omega: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(offset, offset + length, dtype=omega.dtype)
        return pos[:, None] * omega[None, :]

    def place(self, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        """Interleaved: PE[:, 2i] = sin, PE[:, 2i+1] = cos."""
        return torch.stack((sin, cos), dim=-1).reshape(sin.shape[0], -1)

    def sinusoidal_positional_encoding(
        self, length: int, d_model: int, offset: int = 0, dtype: str = "float32"
    ) -> Any:
        target = _target(dtype)
        work = compute_dtype(target)
        phi = self.angles(int(length), int(offset), self.frequencies(int(d_model), work))
        return self.place(torch.sin(phi), torch.cos(phi)).to(target)


class RopeBase(CorpusAdapter):
    """Half-split RoPE with explicit cos/sin on (first half, second half) pairs."""

    component = "rotary_embedding"

    def positions(self, positions: Any, offset: int, length: int, work: torch.dtype) -> Any:
        if positions is None:
            return torch.arange(offset, offset + length, dtype=work)
        return positions.to(work)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs (a_i, b_i) = (x_i, x_{i+D/2})."""
        half = x.shape[-1] // 2
        return x[..., :half], x[..., half:]

    def join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat((a, b), dim=-1)

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        work = compute_dtype(x.dtype)
        length, dim = x.shape[-2], x.shape[-1]
        steps = torch.arange(0, dim, 2, dtype=work)
        theta = 1.0 / (float(base) ** (steps / dim))
        phi = self.positions(positions, int(offset), length, work)[:, None] * theta[None, :]
        a, b = self.split(x.to(work))
        c, s = torch.cos(phi), torch.sin(phi)
        return self.join(a * c - b * s, a * s + b * c).to(x.dtype)


class EmbeddingBase(CorpusAdapter):
    """Row lookup by advanced indexing, then the √d scale in the compute dtype."""

    component = "embedding"

    def lookup(self, input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """W[input]: input.shape + (d,)."""
        return weight[input]

    def factor(self, weight: torch.Tensor) -> float:
        """√d, d the width of a row ("Attention Is All You Need" §3.4)."""
        return math.sqrt(weight.shape[-1])

    def embedding(self, input: Any, weight: Any, scale_by_sqrt_d: bool = False) -> Any:
        rows = self.lookup(input, weight)
        if not scale_by_sqrt_d:
            return rows
        return (rows.to(compute_dtype(weight.dtype)) * self.factor(weight)).to(weight.dtype)


def get_slopes(n: int) -> list[float]:
    """The ALiBi authors' ``get_slopes`` (Press et al., ``attention_with_linear_biases``)."""

    def get_slopes_power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (
        get_slopes_power_of_2(closest_power_of_2)
        + get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
    )


class AlibiBase(CorpusAdapter):
    """``get_slopes`` times the relative distance j - p_i, in the compute dtype."""

    component = "alibi_bias"

    def slopes(self, num_heads: int, work: torch.dtype) -> torch.Tensor:
        """m_h of Press et al. (the interpolation rule when H is not a power of 2)."""
        return torch.tensor(get_slopes(num_heads), dtype=work)

    def query_positions(self, query_length: int, key_length: int) -> torch.Tensor:
        """p_i = i + Lk - Lq: the queries are the last Lq of the Lk positions (KV cache)."""
        return torch.arange(query_length) + (key_length - query_length)

    def distance(self, query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
        """(Lq, Lk) signed distance j - p_i: <= 0 for the keys a causal query sees."""
        return torch.arange(key_length)[None, :] - query_positions[:, None]

    def alibi_bias(
        self, num_heads: int, query_length: int, key_length: int, dtype: str = "float32"
    ) -> Any:
        target = _target(dtype)
        work = compute_dtype(target)
        m = self.slopes(int(num_heads), work)
        p = self.query_positions(int(query_length), int(key_length))
        dist = self.distance(p, int(key_length)).to(work)
        return (m[:, None, None] * dist[None]).to(target)


class RopeInterleavedPairs(RopeBase):
    """Pairs (x_{2i}, x_{2i+1}) (GPT-J), the base of the pairing chaff and its declared wheat."""

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., 0::2], x[..., 1::2]

    def join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack((a, b), dim=-1).flatten(-2)


class SinusoidalConcatenated(SinusoidalBase):
    """[sin | cos] halves (tensor2tensor), the base of the layout wheat."""

    def place(self, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        return torch.cat((sin, cos), dim=-1)


# -- chaffs ------------------------------------------------------------------------------------


@chaff(
    "sinusoidal_positional_encoding",
    visible=ALL_DTYPES,
    why="ω_i = 10000^(-i/d): every frequency but ω_0 is larger (10000^(i/d) times), so any "
    "row p >= 1 differs by O(1)",
)
class SinusoidalExponentIOverD(SinusoidalBase):
    """Frequencies 10000^(-i/d) instead of 10000^(-2i/d)."""

    def frequencies(self, d_model: int, work: torch.dtype) -> torch.Tensor:
        i = torch.arange(d_model // 2, dtype=work)
        return torch.pow(torch.tensor(10000.0, dtype=work), -i / d_model)


@chaff(
    "rotary_embedding",
    visible=ALL_DTYPES,
    why="for D >= 4 the rotated pairs are different coordinates: O(1) differences at any "
    "position p >= 1 (D = 2 pairs coincide; D >= 4 is drawn in every dtype)",
)
class RopeInterleavedUndeclared(RopeInterleavedPairs):
    """Interleaved pairs (2i, 2i+1) where half-split is declared."""


@chaff(
    "rotary_embedding",
    visible=ALL_DTYPES,
    why="every angle off by θ_i (θ_0 = 1 rad): O(1) differences whenever positions come "
    "from the offset",
)
class RopeOffsetOffByOne(RopeBase):
    """Positions offset + 1 .. offset + L when none are given."""

    def positions(self, positions: Any, offset: int, length: int, work: torch.dtype) -> Any:
        if positions is None:
            return torch.arange(offset + 1, offset + length + 1, dtype=work)
        return positions.to(work)


@chaff(
    "sinusoidal_positional_encoding",
    visible=ALL_DTYPES,
    why="for d >= 4 columns 1..d-2 hold other frequencies or the other function (row 0 "
    "alone: [0..0 | 1..1] against [0, 1, 0, 1, ...]): O(1) differences",
)
class SinusoidalConcatenatedUndeclared(SinusoidalConcatenated):
    """[sin | cos] halves where the interleaved layout is declared."""


@chaff(
    "embedding",
    visible=ALL_DTYPES,
    why="with scale_by_sqrt_d and d >= 2 (drawn in every dtype) every value is √d >= 1.41 "
    "times too large",
)
class EmbeddingScaleByD(EmbeddingBase):
    """Rows scaled by d instead of √d."""

    def factor(self, weight: torch.Tensor) -> float:
        return float(weight.shape[-1])


@chaff(
    "embedding",
    visible=ALL_DTYPES,
    why="with scale_by_sqrt_d every value is off by √(V/d): O(1) whenever the vocabulary "
    "size V and the width d differ (V = 1000 against d <= 300 is drawn in every dtype)",
)
class EmbeddingScaleByVocab(EmbeddingBase):
    """Rows scaled by √V, V = weight.shape[0] the vocabulary size, instead of √d."""

    def factor(self, weight: torch.Tensor) -> float:
        return math.sqrt(weight.shape[0])


@chaff(
    "alibi_bias",
    visible=ALL_DTYPES,
    why="for H not a power of 2 (3, 5, 6, 12, 20, ... drawn in every dtype) the slopes "
    "differ by O(1) factors (H = 3: 2^(-8/3), 2^(-16/3), 2^-8 against 2^-4, 2^-8, 2^-2), "
    "seen wherever the distance is nonzero (L_k >= 2)",
)
class AlibiGeometricSlopes(AlibiBase):
    """Slopes 2^(-8h/H), h = 1..H, for every H: the power-of-2 formula used for all head counts."""

    def slopes(self, num_heads: int, work: torch.dtype) -> torch.Tensor:
        h = torch.arange(1, num_heads + 1, dtype=work)
        return torch.pow(torch.tensor(2.0, dtype=work), -8.0 * h / num_heads)


@chaff(
    "alibi_bias",
    visible=ALL_DTYPES,
    why="every bias has the wrong sign (+m_h·(p_i - j)): O(1) wherever the distance is "
    "nonzero (L_k >= 2, drawn in every dtype)",
)
class AlibiDistanceSignFlipped(AlibiBase):
    """Distance p_i - j instead of j - p_i: far keys are favoured instead of penalized."""

    def distance(self, query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
        return query_positions[:, None] - torch.arange(key_length)[None, :]


@chaff(
    "alibi_bias",
    visible=ALL_DTYPES,
    why="when L_q < L_k (decode, L_q = 1, drawn in every dtype) every row is shifted by "
    "m_h·(L_k - L_q): the query's own key gets a nonzero bias",
)
class AlibiQueriesFromZero(AlibiBase):
    """Query positions 0..Lq-1 instead of the last Lq positions: ignores the KV cache."""

    def query_positions(self, query_length: int, key_length: int) -> torch.Tensor:
        return torch.arange(query_length)


# -- wheats ------------------------------------------------------------------------------------


@wheat("sinusoidal_positional_encoding")
class SinusoidalExpLog(SinusoidalBase):
    """Frequencies as exp(-2i·ln(10000)/d) (the PyTorch tutorial's div_term)."""

    def frequencies(self, d_model: int, work: torch.dtype) -> torch.Tensor:
        return torch.exp(torch.arange(0, d_model, 2, dtype=work) * (-math.log(10000.0) / d_model))


@wheat("sinusoidal_positional_encoding")
class SinusoidalConcatenatedDeclared(SinusoidalConcatenated):
    """[sin | cos] halves, declared as sinusoidal_layout="concatenated"."""

    conventions = Conventions(sinusoidal_layout="concatenated")


@wheat("rotary_embedding")
class RopeComplex(RopeBase):
    """Half-split RoPE as complex multiplication (a + ib)·e^{iφ} (float64 complex inside)."""

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        work = compute_dtype(x.dtype)
        length, dim = x.shape[-2], x.shape[-1]
        steps = torch.arange(0, dim, 2, dtype=work)
        theta = 1.0 / (float(base) ** (steps / dim))
        phi = self.positions(positions, int(offset), length, work)[:, None] * theta[None, :]
        a, b = self.split(x.to(torch.float64))
        z = torch.complex(a, b) * torch.polar(torch.ones_like(phi), phi).to(torch.complex128)
        return self.join(z.real, z.imag).to(x.dtype)


@wheat("rotary_embedding")
class RopeInterleavedDeclared(RopeInterleavedPairs):
    """Interleaved pairs (2i, 2i+1), declared as rope_pairing="interleaved"."""

    conventions = Conventions(rope_pairing="interleaved")


@wheat("embedding")
class EmbeddingOneHotMatmul(EmbeddingBase):
    """Lookup as a one-hot matrix times the table, in the compute dtype (exact: one term)."""

    def lookup(self, input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        work = compute_dtype(weight.dtype)
        hot = F.one_hot(input, weight.shape[0]).to(work)
        return (hot @ weight.to(work)).to(weight.dtype)


@wheat("embedding")
class EmbeddingTableScaledFirst(EmbeddingBase):
    """The whole table scaled by √d first (the scale folded into the weights), then
    index_select on the flattened ids."""

    def embedding(self, input: Any, weight: Any, scale_by_sqrt_d: bool = False) -> Any:
        table = weight
        if scale_by_sqrt_d:
            table = (weight.to(compute_dtype(weight.dtype)) * self.factor(weight)).to(weight.dtype)
        rows = torch.index_select(table, 0, input.reshape(-1))
        return rows.reshape(*input.shape, weight.shape[-1])


@wheat("alibi_bias")
class AlibiSlopesAsPowers(AlibiBase):
    """Slopes as BLOOM's ``build_alibi_tensor`` computes them: torch.pow(base, 1..N) for the
    nearest power of 2 N, then the odd powers of the base of 2N for the remaining heads."""

    def slopes(self, num_heads: int, work: torch.dtype) -> torch.Tensor:
        closest = 2 ** math.floor(math.log2(num_heads))
        base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=work)
        powers = torch.arange(1, 1 + closest, dtype=torch.int32)
        slopes = torch.pow(base, powers)
        if closest != num_heads:
            extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=work)
            remaining = min(closest, num_heads - closest)
            extra_powers = torch.arange(1, 1 + 2 * remaining, 2, dtype=torch.int32)
            slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
        return slopes
