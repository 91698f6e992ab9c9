r"""float64 references of the embedding and positional components, with their error terms.

The values come from :mod:`transpec.oracle.layers.reference` (``embedding``,
``sinusoidal_positional_encoding``, ``rotary_embedding``, ``alibi_bias``) under the declared
conventions; this module adds what the tolerance model of
:mod:`transpec.oracle.positional.tolerance` needs (``Reference.terms``):

==================================  ===============================================================
component                           ``abs_value`` and ``terms``
==================================  ===============================================================
``embedding``                       :math:`|y|`; ``scaled`` (1.0 when multiplied by
                                    :math:`\sqrt{d}`), ``d_model``
``sinusoidal_positional_encoding``  :math:`|PE|`; ``angle`` :math:`|p\,\omega_i|` and ``log_freq``
                                    :math:`|\ln\omega_i|` per element
``rotary_embedding``                :math:`|a||\cos\phi| + |b||\sin\phi|` (the 2-term dot product
                                    of each output coordinate); ``pair_abs`` :math:`|a| + |b|`,
                                    ``angle`` :math:`|\phi|`, ``log_freq`` :math:`|\ln\theta_i|`
                                    per element (0 / 0 / 0 for pass-through coordinates)
``alibi_bias``                      :math:`|B|`; ``log_slope`` :math:`|\ln m_h|` and ``head``
                                    (h = 1..H) per element
==================================  ===============================================================

Component arguments are those of the adapter methods (:mod:`transpec.adapters.torch.positional`);
``dtype`` (the dtype under test) is accepted and does not change the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transpec.oracle import components
from transpec.oracle.kernels.reference import Reference, check_arguments
from transpec.oracle.layers import reference as rl
from transpec.spec.conventions import CANONICAL, Conventions

#: the positional components (the registry's family "positional")
COMPONENTS: tuple[str, ...] = components.names("positional")

_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "embedding": ("input", "weight", "scale_by_sqrt_d"),
    "sinusoidal_positional_encoding": ("length", "d_model", "offset", "dtype"),
    "rotary_embedding": ("x", "positions", "offset", "base"),
    "alibi_bias": ("num_heads", "query_length", "key_length", "dtype"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "embedding": ("input", "weight"),
    "sinusoidal_positional_encoding": ("length", "d_model"),
    "rotary_embedding": ("x",),
    "alibi_bias": ("num_heads", "query_length", "key_length"),
}


def _int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def embedding(
    input: Any,
    weight: Any,
    scale_by_sqrt_d: bool = False,
    *,
    conventions: Conventions = CANONICAL,
) -> Reference:
    r""":math:`y = W[\text{input}]`, times :math:`\sqrt{d}` if ``scale_by_sqrt_d``
    (``F.embedding``)."""
    value = rl.embedding(np.asarray(input), weight, scale=bool(scale_by_sqrt_d))
    d = int(np.shape(weight)[-1])
    return Reference(
        value=value,
        abs_value=np.abs(value),
        terms={"scaled": 1.0 if scale_by_sqrt_d else 0.0, "d_model": float(d)},
    )


def _columns(d: int, layout: str) -> np.ndarray:
    """The frequency index of every column of the sinusoidal table."""
    j = np.arange(d)
    return j // 2 if layout == "interleaved" else j % (d // 2)


def sinusoidal_positional_encoding(
    length: int,
    d_model: int,
    offset: int = 0,
    dtype: str | None = None,
    *,
    conventions: Conventions = CANONICAL,
) -> Reference:
    r"""The (length, d_model) table of positions ``offset .. offset + length - 1`` (base 10000)
    under ``conventions.sinusoidal_layout`` and ``conventions.sinusoidal_frequencies``."""
    length, d_model = _int("length", length), _int("d_model", d_model, minimum=1)
    offset = _int("offset", offset)
    layout = conventions.sinusoidal_layout
    freqs = conventions.sinusoidal_frequencies
    value = rl.sinusoidal_positional_encoding(
        length, d_model, offset=offset, layout=layout, frequencies=freqs
    )
    omega = rl.sinusoid_frequencies(d_model, frequencies=freqs)
    col = _columns(d_model, layout)
    pos = np.arange(offset, offset + length, dtype=np.float64)[:, None]
    angle = np.abs(pos * omega[col][None, :])
    log_freq = np.broadcast_to(np.abs(np.log(omega[col]))[None, :], value.shape)
    return Reference(
        value=value,
        abs_value=np.abs(value),
        terms={"angle": angle, "log_freq": np.array(log_freq)},
    )


def rope_pairs(d: int, pairing: str) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) coordinate of each rotated pair i < d/2: (i, i + d/2) for
    ``"half_split"``, (2i, 2i + 1) for ``"interleaved"``."""
    i = np.arange(d // 2)
    if pairing == "half_split":
        return i, i + d // 2
    if pairing == "interleaved":
        return 2 * i, 2 * i + 1
    raise ValueError(f"unknown rope_pairing {pairing!r}")


def rotary_embedding(
    x: Any,
    positions: Any = None,
    offset: int = 0,
    base: float = 10000.0,
    *,
    conventions: Conventions = CANONICAL,
) -> Reference:
    r"""RoPE of ``x`` (..., L, D): pair i rotated by :math:`p\,\theta_i`,
    :math:`\theta_i = \text{base}^{-2i/D}`, positions ``offset + arange(L)`` or ``positions``
    (length L; then ``offset`` must be 0), pairs per ``conventions.rope_pairing``."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim < 2 or xa.shape[-1] % 2:
        raise ValueError(f"rotary_embedding needs x (..., L, D) with D even, got {xa.shape}")
    offset = _int("offset", offset)
    if positions is not None and offset:
        raise ValueError("rotary_embedding takes positions or an offset, not both")
    pairing = conventions.rope_pairing
    value = rl.rotary_embedding(
        xa,
        offset=offset,
        positions=None if positions is None else np.asarray(positions),
        base=float(base),
        pairing="half" if pairing == "half_split" else "interleaved",
    )
    length, d = xa.shape[-2], xa.shape[-1]
    theta = rl.rope_frequencies(d, base=float(base))
    pos = (
        np.arange(offset, offset + length, dtype=np.float64)
        if positions is None
        else np.asarray(positions, dtype=np.float64)
    )
    phi = pos[..., :, None] * theta  # (..., L, D/2)
    c, s = np.abs(np.cos(phi)), np.abs(np.sin(phi))
    first, second = rope_pairs(d, pairing)
    a, b = np.abs(xa[..., first]), np.abs(xa[..., second])
    shape = np.broadcast_shapes(xa.shape, (*phi.shape[:-1], d))
    abs_value = np.zeros(shape)
    pair_abs = np.zeros(shape)
    angle = np.zeros(shape)
    log_freq = np.zeros(shape)
    # out[first] = a cos - b sin, out[second] = a sin + b cos
    abs_value[..., first] = a * c + b * s
    abs_value[..., second] = a * s + b * c
    for idx in (first, second):
        pair_abs[..., idx] = a + b
        angle[..., idx] = np.abs(phi)
        log_freq[..., idx] = np.abs(np.log(theta))
    return Reference(
        value=np.broadcast_to(value, shape).copy(),
        abs_value=abs_value,
        terms={"pair_abs": pair_abs, "angle": angle, "log_freq": log_freq},
    )


def alibi_bias(
    num_heads: int,
    query_length: int,
    key_length: int,
    dtype: str | None = None,
    *,
    conventions: Conventions = CANONICAL,
) -> Reference:
    r"""The (H, Lq, Lk) ALiBi bias :math:`-m_h (p_i - j)`, :math:`p_i = i + L_k - L_q`, slopes
    :math:`m_h` of Press et al. (the interpolation rule for H not a power of 2)."""
    h = _int("num_heads", num_heads, minimum=1)
    lq, lk = _int("query_length", query_length), _int("key_length", key_length)
    value = rl.alibi_bias(h, lq, lk)
    slopes = rl.alibi_slopes(h)
    shape = value.shape
    return Reference(
        value=value,
        abs_value=np.abs(value),
        terms={
            "log_slope": np.broadcast_to(np.abs(np.log(slopes))[:, None, None], shape).copy(),
            "head": np.broadcast_to(np.arange(1.0, h + 1)[:, None, None], shape).copy(),
        },
    )


def check_args(component: str, args: Mapping[str, Any]) -> None:
    """Raise ValueError for an unknown positional component (:data:`COMPONENTS`), a missing or
    an unknown argument (:func:`~transpec.oracle.kernels.reference.check_arguments`)."""
    check_arguments(component, args, _ARGUMENTS, _REQUIRED, ", ".join(COMPONENTS))


def compute_component(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    semantics: Mapping[str, str] | None = None,
) -> Reference:
    """The reference of one of :data:`COMPONENTS` on ``args`` under ``conventions`` (the
    registry's protocol: ``dtype`` and ``semantics`` change nothing here)."""
    check_args(component, args)
    functions = {
        "embedding": embedding,
        "sinusoidal_positional_encoding": sinusoidal_positional_encoding,
        "rotary_embedding": rotary_embedding,
        "alibi_bias": alibi_bias,
    }
    return functions[component](**dict(args), conventions=conventions)  # type: ignore[operator]
