r"""Token embedding and positional encodings in torch, as a mixin of the torch adapter.

:class:`TorchPositionalMixin` is inherited by :class:`transpec.adapters.torch.adapter.TorchAdapter`
(its NumPy counterpart is :mod:`transpec.adapters.numpy.positional`). The component methods and
their semantics (what an adapter of yours implements):

``embedding(input, weight, scale_by_sqrt_d=False)``
    :math:`y[\ldots, :] = W[\text{input}[\ldots], :]`, times :math:`\sqrt{d}` when
    ``scale_by_sqrt_d`` ("Attention Is All You Need" §3.4). ``input``: an integer array of any
    shape, ``weight``: (num_embeddings, d); returns ``input.shape + (d,)`` (``F.embedding``).
``sinusoidal_positional_encoding(length, d_model, offset=0, dtype="float32")``
    The (length, d_model) table of positions :math:`p = \text{offset} + 0..\text{length}-1`:
    :math:`PE[p, 2i] = \sin(p\,\omega_i)`, :math:`PE[p, 2i+1] = \cos(p\,\omega_i)`,
    :math:`\omega_i = 10000^{-2i/d}` (the declared ``sinusoidal_layout`` /
    ``sinusoidal_frequencies`` when they differ). ``dtype`` names the dtype to return.
``rotary_embedding(x, positions=None, offset=0, base=10000.0)``
    RoPE of ``x`` (..., L, D), D even: coordinate pair i rotated by :math:`p\,\theta_i`,
    :math:`\theta_i = \text{base}^{-2i/D}`, :math:`(a, b) \mapsto (a\cos\phi - b\sin\phi,\;
    a\sin\phi + b\cos\phi)`; pairs (i, i + D/2) (``rope_pairing="half_split"``, GPT-NeoX,
    ``rotate_half``) or (2i, 2i+1) (``"interleaved"``, GPT-J). Positions: ``positions`` (an
    integer array of length L) or ``offset + arange(L)`` (``offset``: tokens already in the KV
    cache).
``alibi_bias(num_heads, query_length, key_length, dtype="float32")``
    The (H, Lq, Lk) bias :math:`-m_h\,(p_i - j)` with :math:`p_i = i + L_k - L_q` (queries are
    the last Lq positions) and the slopes of Press et al.: :math:`m_h = 2^{-8h/H}` for H a power
    of 2, otherwise those of the nearest lower power of 2 N followed by every other slope of 2N.

Both implementations are written from the papers and the code people copy (the PyTorch
tutorial's ``PositionalEncoding``, Hugging Face's ``rotate_half``, the ALiBi authors'
``get_slopes``); neither calls the oracle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transpec.adapters.base import Precision
from transpec.oracle import components
from transpec.oracle.engine.dtypes import canonical_dtype

#: the components this module provides
POSITIONAL_COMPONENTS: tuple[str, ...] = components.names("positional")


def alibi_slopes(n: int) -> list[float]:
    """The ALiBi authors' ``get_slopes`` (Python floats): a geometric sequence starting at
    2^(-8/n) for n a power of 2, the interpolation rule otherwise."""

    def power_of_2(m: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(m) - 3)))
        return [start * start**i for i in range(m)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n - closest]


class TorchPositionalMixin:
    """The embedding and positional components in torch, the way people write them.

    Precision (see :meth:`positional_precision`): float64 in float64; otherwise the angles,
    frequencies and slopes in float32; RoPE rounds cos/sin and the products to the input
    dtype (``cos.to(x.dtype)``, as Hugging Face), so it declares (float32, input dtype).
    """

    def index_to_native(self, array: np.ndarray, device: str) -> Any:
        """An integer NumPy array -> an int64 tensor on ``device``."""
        import torch

        return torch.from_numpy(np.array(array, dtype=np.int64, order="C")).to(device)

    def positional_precision(self, component: str, dtype: str) -> Precision | None:
        """The declared precision of a positional component, None for other components."""
        if component not in POSITIONAL_COMPONENTS:
            return None
        dtype = canonical_dtype(dtype)
        if dtype in ("float64", "float32"):
            return Precision(accumulate=dtype, store=dtype)
        store = dtype if component in ("rotary_embedding", "embedding") else "float32"
        return Precision(accumulate="float32", store=store)

    @staticmethod
    def _work(dtype: Any) -> Any:
        import torch

        return torch.float64 if dtype == torch.float64 else torch.float32

    @staticmethod
    def _dtype(name: str) -> Any:
        import torch

        return getattr(torch, canonical_dtype(name))

    def embedding(self, input: Any, weight: Any, scale_by_sqrt_d: bool = False) -> Any:
        """``F.embedding(input, weight)``, times ``math.sqrt(d)`` when asked."""
        import torch.nn.functional as F  # noqa: N812

        out = F.embedding(input, weight)
        return out * math.sqrt(weight.shape[-1]) if scale_by_sqrt_d else out

    def sinusoidal_positional_encoding(
        self, length: int, d_model: int, offset: int = 0, dtype: str = "float32"
    ) -> Any:
        """The PyTorch tutorial's ``PositionalEncoding`` table (interleaved, base 10000)."""
        import torch

        target = self._dtype(dtype)
        work = self._work(target)
        position = torch.arange(offset, offset + length, dtype=work).unsqueeze(1)  # (L, 1)
        div_term = torch.exp(
            torch.arange(0, d_model, 2, dtype=work) * (-math.log(10000.0) / d_model)
        )  # (ceil(d/2),)
        pe = torch.zeros(length, d_model, dtype=work)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        return pe.to(target)

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        """GPT-NeoX / Hugging Face Llama RoPE: ``x * cos + rotate_half(x) * sin``."""
        import torch

        length, dim = x.shape[-2], x.shape[-1]
        work = self._work(x.dtype)
        steps = torch.arange(0, dim, 2, dtype=torch.int64, device=x.device).to(work)
        inv_freq = 1.0 / (base ** (steps / dim))  # (D/2,)
        if positions is None:
            pos = torch.arange(offset, offset + length, dtype=work, device=x.device)
        else:
            pos = positions.to(device=x.device, dtype=work)
        freqs = torch.outer(pos, inv_freq)  # (L, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, D)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
        rotated = torch.cat((-x2, x1), dim=-1)  # rotate_half
        return x * cos + rotated * sin

    def alibi_bias(
        self, num_heads: int, query_length: int, key_length: int, dtype: str = "float32"
    ) -> Any:
        """``get_slopes`` times the signed distance j - p_i, in float32 (float64 for float64)."""
        import torch

        target = self._dtype(dtype)
        work = self._work(target)
        slopes = torch.tensor(alibi_slopes(num_heads), dtype=work)  # (H,)
        query_pos = torch.arange(query_length) + (key_length - query_length)  # (Lq,)
        distance = torch.arange(key_length)[None, :] - query_pos[:, None]  # (Lq, Lk): j - p_i
        return (slopes[:, None, None] * distance.to(work)).to(target)
