"""The embedding and positional components in plain NumPy, written from the formulas
(:mod:`transpec.adapters.torch.positional` states them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from transpec.adapters.numpy.work import work_dtype
from transpec.oracle.engine.dtypes import numpy_dtype


class NumpyPositionalMixin:
    """The embedding and positional components in NumPy, written independently of the oracle:
    float64 and float32 in their own dtype, float16 and bfloat16 in float32 rounded once at the end
    (the adapter's declared precision)."""

    def embedding(self, input: Any, weight: Any, scale_by_sqrt_d: bool = False) -> Any:
        """``weight[input]``, times sqrt(d) (in the working precision) when asked."""
        rows = weight[np.asarray(input)]
        if not scale_by_sqrt_d:
            return rows
        work = work_dtype(weight.dtype)
        factor = np.sqrt(work.type(weight.shape[-1]))
        return (rows.astype(work) * factor).astype(weight.dtype)

    def sinusoidal_positional_encoding(
        self, length: int, d_model: int, offset: int = 0, dtype: str = "float32"
    ) -> Any:
        """sin/cos of p·10000^(-2i/d), interleaved, in the working precision."""
        target = numpy_dtype(dtype)
        work = work_dtype(target)
        i = np.arange((d_model + 1) // 2).astype(work)
        omega = work.type(10000.0) ** (-(work.type(2) * i) / work.type(d_model))
        angle = np.arange(offset, offset + length).astype(work)[:, None] * omega[None, :]
        table = np.empty((length, d_model), dtype=work)
        table[:, 0::2] = np.sin(angle)
        table[:, 1::2] = np.cos(angle[:, : d_model // 2])
        return table.astype(target)

    def rotary_embedding(
        self, x: Any, positions: Any = None, offset: int = 0, base: float = 10000.0
    ) -> Any:
        """Half-split RoPE: (x[i], x[i + D/2]) rotated by p·base^(-2i/D)."""
        length, dim = x.shape[-2], x.shape[-1]
        work = work_dtype(x.dtype)
        half = dim // 2
        theta = work.type(base) ** (-np.arange(0, dim, 2).astype(work) / work.type(dim))
        pos = np.arange(offset, offset + length) if positions is None else np.asarray(positions)
        phi = pos.astype(work)[:, None] * theta[None, :]  # (L, D/2)
        c, s = np.cos(phi), np.sin(phi)
        xw = x.astype(work)
        a, b = xw[..., :half], xw[..., half:]
        out = np.concatenate((a * c - b * s, a * s + b * c), axis=-1)
        return out.astype(x.dtype)

    def alibi_bias(
        self, num_heads: int, query_length: int, key_length: int, dtype: str = "float32"
    ) -> Any:
        """-m_h (p_i - j), m_h = 2^(-8h/H) (or the interpolation rule), in the working dtype."""
        target = numpy_dtype(dtype)
        work = work_dtype(target)
        closest = 1 << (int(num_heads).bit_length() - 1)
        h = np.arange(1, closest + 1).astype(work)
        slopes = work.type(2) ** (work.type(-8) * h / work.type(closest))
        if closest != num_heads:
            extra = np.arange(1, 2 * (num_heads - closest), 2).astype(work)
            slopes = np.concatenate(
                (slopes, work.type(2) ** (work.type(-8) * extra / work.type(2 * closest)))
            )
        p = np.arange(query_length) + (key_length - query_length)
        distance = (p[:, None] - np.arange(key_length)[None, :]).astype(work)  # (Lq, Lk)
        return (-slopes[:, None, None] * distance[None]).astype(target)
