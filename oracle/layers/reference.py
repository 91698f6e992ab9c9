"""float64 references of the transformer's layer blocks, with PyTorch's module semantics.

Every function here is a plain, vectorized NumPy computation in float64 over any batch size,
built on the kernels of :mod:`transpec.oracle.kernels._kernels` (``attention``, ``layer_norm``), so
the layer references share their arithmetic with the component references. Where PyTorch has a
module, the semantics are that module's, in eval mode (dropout = 0):

==================================  ===================================================
reference                           PyTorch counterpart
==================================  ===================================================
:func:`embedding`                   ``F.embedding`` (``nn.Embedding``), optional sqrt(d)
:func:`sinusoidal_positional_encoding`  "Attention Is All You Need" §3.5 (no module)
:func:`learned_positional_encoding` ``nn.Embedding`` over positions
:func:`rotary_embedding`            RoPE (GPT-NeoX half-split, GPT-J interleaved pairs)
:func:`alibi_slopes`, :func:`alibi_bias`   ALiBi (Press et al. 2022)
:func:`multi_head_attention`        ``nn.MultiheadAttention.forward``
:func:`feed_forward`                ``linear2(activation(linear1(x)))``
:func:`residual_layer_norm`         the sublayer connection, post-LN and pre-LN
:func:`transformer_encoder_layer`   ``nn.TransformerEncoderLayer.forward``
:func:`transformer_decoder_layer`   ``nn.TransformerDecoderLayer.forward``
==================================  ===================================================

Parameters travel as a mapping from the torch module's ``state_dict`` keys to arrays
(``"self_attn.in_proj_weight"``, ``"linear1.bias"``, ...), so one parameter set can be loaded into
the torch module with ``load_state_dict`` and given to the reference unchanged. A bias key that is
absent means the module was built with ``bias=False``.

Masks follow ``nn.MultiheadAttention``: a boolean ``attn_mask`` or ``key_padding_mask`` is True
where attention is *not* allowed; a float mask is added to the scaled scores. A query row whose
every key is masked has no defined softmax; ``fully_masked_row`` says what the reference returns
for it: ``"nan"`` (the 0/0 of the softmax: ``nn.MultiheadAttention`` with ``need_weights=True``
and every fast path) or ``"zero"`` (the attention output of that row is 0 before the output
projection: the ``need_weights=False`` slow path, which calls ``scaled_dot_product_attention``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from transpec.oracle.engine.dtypes import FloatArray
from transpec.oracle.kernels import _kernels

Params = Mapping[str, Any]
Activation = Literal["relu", "gelu", "gelu_tanh"]
FullyMaskedRow = Literal["nan", "zero"]
Pairing = Literal["half", "interleaved"]
SinusoidLayout = Literal["interleaved", "concatenated"]
SinusoidFrequencies = Literal["paper", "tensor2tensor"]

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "gelu_tanh")

_MHA_KEYS = (
    "in_proj_weight",
    "in_proj_bias",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "bias_k",
    "bias_v",
    "out_proj.weight",
    "out_proj.bias",
)


# -- small helpers --------------------------------------------------------------------------


def _f64(name: str, value: Any) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float array, got {type(value).__name__}") from exc
    return arr


def _param(params: Params, key: str, shape: tuple[int, ...] | None = None) -> FloatArray:
    if key not in params:
        raise ValueError(f"missing parameter {key!r}")
    arr = _f64(key, params[key])
    if shape is not None and arr.shape != shape:
        raise ValueError(f"parameter {key!r} has shape {arr.shape}, expected {shape}")
    return arr


def _optional(params: Params, key: str, shape: tuple[int, ...]) -> FloatArray | None:
    if key not in params or params[key] is None:
        return None
    return _param(params, key, shape)


def sub_params(params: Params, prefix: str) -> dict[str, Any]:
    """The entries of ``params`` under ``prefix`` (``"self_attn."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def feed_forward_params(params: Params) -> dict[str, Any]:
    """The feed-forward entries of a layer's ``params`` (``linear1.*``, ``linear2.*``), keys
    kept."""
    return {k: v for k, v in params.items() if k.startswith("linear")}


def _check_keys(params: Params, allowed: set[str], what: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s): {', '.join(unknown)}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


# -- activations and linear maps ------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def relu(x: npt.ArrayLike) -> FloatArray:
    """relu(x) = max(x, 0) (``F.relu``)."""
    arr = _f64("x", x)
    return np.where(arr > 0, arr, 0.0)


def gelu(x: npt.ArrayLike, approximate: Literal["none", "tanh"] = "none") -> FloatArray:
    r"""GELU as ``F.gelu``.

    ``approximate="none"``: :math:`x\,\Phi(x) = \tfrac12 x\,(1 + \operatorname{erf}(x/\sqrt2))`;
    ``approximate="tanh"``:
    :math:`\tfrac12 x\,(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3)))`.
    """
    _check_choice("approximate", approximate, ("none", "tanh"))
    arr = _f64("x", x)
    if approximate == "tanh":
        return 0.5 * arr * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (arr + 0.044715 * arr**3)))
    return 0.5 * arr * (1.0 + _erf(arr / math.sqrt(2.0)))


def activation(name: str) -> Callable[[FloatArray], FloatArray]:
    """The activation named ``"relu"``, ``"gelu"`` (exact, erf) or ``"gelu_tanh"``."""
    _check_choice("activation", name, ACTIVATIONS)
    if name == "relu":
        return relu
    if name == "gelu":
        return gelu
    return lambda x: gelu(x, "tanh")


def linear(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None
) -> FloatArray:
    """y = x W^T + b over the last axis (``F.linear``): W is (out, in), b is (out,)."""
    xa, w = _f64("x", x), _f64("weight", weight)
    if w.ndim != 2 or xa.shape[-1:] != w.shape[1:]:
        raise ValueError(f"linear: x {xa.shape} does not match weight {w.shape}")
    y = np.matmul(xa, w.T)
    if bias is not None:
        y = y + _f64("bias", bias)
    return np.asarray(y, dtype=np.float64)


# -- token embedding and positional encodings -----------------------------------------------


def embedding(
    indices: npt.ArrayLike,
    weight: npt.ArrayLike,
    *,
    padding_idx: int | None = None,
    scale: bool = False,
) -> FloatArray:
    r"""Token embedding: :math:`y[\ldots] = W[\text{indices}[\ldots]]`, times
    :math:`\sqrt{d_\text{model}}` when ``scale`` ("Attention Is All You Need" §3.4).

    As ``F.embedding``: ``weight`` is (num_embeddings, d_model), ``indices`` any integer array,
    output ``indices.shape + (d_model,)``. ``padding_idx`` changes only gradients in PyTorch (the
    forward reads row ``padding_idx`` as it is); it is validated here and otherwise unused.
    """
    w = _f64("weight", weight)
    if w.ndim != 2:
        raise ValueError(f"embedding weight must be 2-D (num_embeddings, d_model), got {w.shape}")
    idx = np.asarray(indices)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
    n = w.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"embedding index out of range [0, {n}): {idx.min()}..{idx.max()}")
    if padding_idx is not None and not -n <= padding_idx < n:
        raise ValueError(f"padding_idx {padding_idx} out of range for {n} embeddings")
    out = w[idx]
    if scale:
        out = out * math.sqrt(w.shape[1])
    return np.asarray(out, dtype=np.float64)


def sinusoid_frequencies(
    d_model: int, *, base: float = 10000.0, frequencies: SinusoidFrequencies = "paper"
) -> FloatArray:
    r"""The angular frequencies :math:`\omega_i` of the sinusoidal encoding, ``i < ceil(d/2)``.

    ``"paper"``: :math:`\omega_i = \text{base}^{-2i/d}` ("Attention Is All You Need" §3.5).
    ``"tensor2tensor"``: :math:`\omega_i = \text{base}^{-i/(d/2 - 1)}` for ``i < d/2``
    (``get_timing_signal_1d`` with min_timescale 1, max_timescale = base), so the last frequency
    is exactly 1/base.
    """
    if int(d_model) != d_model or d_model < 1:
        raise ValueError(f"d_model must be a positive integer, got {d_model!r}")
    if not base > 0:
        raise ValueError(f"base must be positive, got {base!r}")
    _check_choice("frequencies", frequencies, ("paper", "tensor2tensor"))
    if frequencies == "paper":
        i = np.arange((d_model + 1) // 2, dtype=np.float64)
        return np.asarray(float(base) ** (-2.0 * i / d_model), dtype=np.float64)
    half = d_model // 2
    if half < 2 or d_model % 2:
        raise ValueError("tensor2tensor frequencies need an even d_model >= 4")
    i = np.arange(half, dtype=np.float64)
    return np.asarray(np.exp(-i * math.log(float(base)) / (half - 1)), dtype=np.float64)


def sinusoidal_positional_encoding(
    length: int,
    d_model: int,
    *,
    base: float = 10000.0,
    offset: int = 0,
    layout: SinusoidLayout = "interleaved",
    frequencies: SinusoidFrequencies = "paper",
) -> FloatArray:
    r"""The fixed sinusoidal encoding, shape (length, d_model), positions ``offset + 0..length-1``.

    ``layout="interleaved"`` (canonical, the paper): :math:`PE[p, 2i] = \sin(p\,\omega_i)`,
    :math:`PE[p, 2i+1] = \cos(p\,\omega_i)`; an odd ``d_model`` ends with a sine column.
    ``layout="concatenated"`` (tensor2tensor, fairseq): :math:`PE[p, i] = \sin(p\,\omega_i)`,
    :math:`PE[p, d/2 + i] = \cos(p\,\omega_i)` (even ``d_model``). :math:`\omega_i` from
    :func:`sinusoid_frequencies`.
    """
    if int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if int(offset) != offset or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
    _check_choice("layout", layout, ("interleaved", "concatenated"))
    omega = sinusoid_frequencies(d_model, base=base, frequencies=frequencies)
    if layout == "concatenated" and d_model % 2:
        raise ValueError("the concatenated layout needs an even d_model")
    pos = np.arange(offset, offset + length, dtype=np.float64)[:, None]
    angle = pos * omega[None, :]  # (length, ceil(d/2))
    out = np.empty((int(length), int(d_model)), dtype=np.float64)
    if layout == "interleaved":
        out[:, 0::2] = np.sin(angle)
        out[:, 1::2] = np.cos(angle[:, : d_model // 2])
    else:
        out[:, : d_model // 2] = np.sin(angle)
        out[:, d_model // 2 :] = np.cos(angle)
    return out


def learned_positional_encoding(
    weight: npt.ArrayLike, length: int, *, offset: int = 0
) -> FloatArray:
    """Learned absolute positions: rows ``offset .. offset+length-1`` of ``weight``
    (max_positions, d_model), i.e. ``nn.Embedding`` applied to the positions."""
    w = _f64("weight", weight)
    if w.ndim != 2:
        raise ValueError(f"positional weight must be 2-D (max_positions, d_model), got {w.shape}")
    if offset < 0 or length < 0 or offset + length > w.shape[0]:
        raise ValueError(
            f"positions {offset}..{offset + length - 1} exceed the {w.shape[0]} learned positions"
        )
    return embedding(np.arange(offset, offset + length), w)


def rope_frequencies(dim: int, *, base: float = 10000.0) -> FloatArray:
    r""":math:`\theta_i = \text{base}^{-2i/\text{dim}}`, ``i < dim/2`` (RoFormer eq. 15)."""
    if int(dim) != dim or dim < 2 or dim % 2:
        raise ValueError(f"the rotary dimension must be a positive even integer, got {dim!r}")
    if not base > 0:
        raise ValueError(f"base must be positive, got {base!r}")
    i = np.arange(dim // 2, dtype=np.float64)
    return np.asarray(float(base) ** (-2.0 * i / dim), dtype=np.float64)


def rotary_embedding(
    x: npt.ArrayLike,
    *,
    offset: int = 0,
    positions: npt.ArrayLike | None = None,
    base: float = 10000.0,
    pairing: Pairing = "half",
    rotary_dim: int | None = None,
) -> FloatArray:
    r"""Rotary position embedding of ``x`` (..., L, D): rotate coordinate pairs by
    :math:`p\,\theta_i`, :math:`\theta_i = \text{base}^{-2i/r}`, r = ``rotary_dim`` (default D).

    Pair i is (x[i], x[i + r/2]) for ``pairing="half"`` (GPT-NeoX, Llama in HF ``rotate_half``)
    and (x[2i], x[2i+1]) for ``pairing="interleaved"`` (GPT-J, RoFormer, Meta Llama's complex
    form); each pair (a, b) becomes :math:`(a\cos\phi - b\sin\phi,\; a\sin\phi + b\cos\phi)`,
    :math:`\phi = p\,\theta_i`. Coordinates from r on pass through unchanged (partial rotary).
    Positions are ``offset + arange(L)`` (``offset`` = number of cached tokens in KV-cache decode)
    unless ``positions`` (length L, broadcast over the leading axes) is given.
    """
    xa = _f64("x", x)
    if xa.ndim < 2:
        raise ValueError(f"rotary_embedding needs x of shape (..., L, D), got {xa.shape}")
    _check_choice("pairing", pairing, ("half", "interleaved"))
    length, d = xa.shape[-2], xa.shape[-1]
    r = d if rotary_dim is None else int(rotary_dim)
    if r > d:
        raise ValueError(f"rotary_dim {r} exceeds the head dimension {d}")
    theta = rope_frequencies(r, base=base)
    if positions is None:
        pos = np.arange(offset, offset + length, dtype=np.float64)
    else:
        pos = _f64("positions", positions)
        if pos.shape[-1:] != (length,):
            raise ValueError(f"positions must have length {length} on its last axis")
    phi = pos[..., :, None] * theta  # (..., L, r/2)
    c, s = np.cos(phi), np.sin(phi)
    out = xa.copy()
    if pairing == "half":
        a, b = xa[..., : r // 2], xa[..., r // 2 : r]
        out[..., : r // 2] = a * c - b * s
        out[..., r // 2 : r] = a * s + b * c
    else:
        a, b = xa[..., 0:r:2], xa[..., 1:r:2]
        out[..., 0:r:2] = a * c - b * s
        out[..., 1:r:2] = a * s + b * c
    return out


def alibi_slopes(n_heads: int) -> FloatArray:
    r"""ALiBi head slopes (Press, Smith & Lewis 2022, and their reference code).

    For n a power of 2: :math:`m_h = 2^{-8h/n}`, h = 1..n. Otherwise, with
    :math:`N = 2^{\lfloor\log_2 n\rfloor}`: the N slopes for N heads, followed by the first
    n - N of the odd-indexed slopes for 2N heads (every other slope :math:`2^{-4(2j-1)/N}`,
    j = 1, 2, ...).
    """
    if int(n_heads) != n_heads or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")

    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    n = int(n_heads)
    closest = 1 << (n.bit_length() - 1)  # 2^floor(log2 n), exactly
    slopes = power_of_2(closest)
    if closest != n:
        slopes += power_of_2(2 * closest)[0::2][: n - closest]
    return np.asarray(slopes, dtype=np.float64)


def alibi_bias(
    n_heads: int, query_length: int, key_length: int, *, symmetric: bool = False
) -> FloatArray:
    r"""The ALiBi additive bias, shape (n_heads, Lq, Lk): :math:`B[h, i, j] = -m_h\,(p_i - j)`.

    Query i sits at position :math:`p_i = i + L_k - L_q` (the last Lq positions, as in KV-cache
    decode; :math:`p_i = i` when Lq = Lk). The paper uses it with the causal mask, which hides
    j > p_i. ``symmetric=True`` gives :math:`-m_h\,|p_i - j|` (bidirectional encoders).
    Implementations that add :math:`m_h\,j` instead (BLOOM) differ by :math:`-m_h p_i` per row,
    which the softmax cancels.
    """
    for name, v in (("query_length", query_length), ("key_length", key_length)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if query_length > key_length:
        raise ValueError("ALiBi with KV-cache alignment needs query_length <= key_length")
    m = alibi_slopes(n_heads)
    p = np.arange(query_length, dtype=np.float64) + (key_length - query_length)
    dist = p[:, None] - np.arange(key_length, dtype=np.float64)[None, :]
    if symmetric:
        dist = np.abs(dist)
    return np.asarray(-m[:, None, None] * dist[None], dtype=np.float64)


# -- masks ----------------------------------------------------------------------------------


def square_subsequent_mask(size: int) -> FloatArray:
    """``nn.Transformer.generate_square_subsequent_mask``: 0 on and below the diagonal,
    -inf above (query i may not attend to keys j > i)."""
    if int(size) != size or size < 0:
        raise ValueError(f"size must be a non-negative integer, got {size!r}")
    return np.triu(np.full((size, size), -np.inf), 1)


def _additive(mask: Any, name: str) -> FloatArray | None:
    """A mask in nn.MultiheadAttention polarity -> additive float (bool True -> -inf)."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return np.where(arr, -np.inf, 0.0)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be boolean or floating point, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


# -- multi-head attention -------------------------------------------------------------------


def split_heads(x: FloatArray, num_heads: int) -> FloatArray:
    """(B, L, E) -> (B, H, L, E/H); head h takes columns h*Dh:(h+1)*Dh."""
    b, length, e = x.shape
    return x.reshape(b, length, num_heads, e // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: FloatArray) -> FloatArray:
    """(B, H, L, Dh) -> (B, L, H*Dh): the concatenation of the heads along the features."""
    b, h, length, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, length, h * dh)


def multi_head_attention(
    query: npt.ArrayLike,
    key: npt.ArrayLike,
    value: npt.ArrayLike,
    params: Params,
    num_heads: int,
    *,
    key_padding_mask: npt.ArrayLike | None = None,
    need_weights: bool = True,
    attn_mask: npt.ArrayLike | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    batch_first: bool = False,
    add_zero_attn: bool = False,
    fully_masked_row: FullyMaskedRow = "nan",
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> tuple[FloatArray, FloatArray | None]:
    r"""``nn.MultiheadAttention.forward`` in eval mode.

    .. math::
        Q = X_q W_q^T + b_q,\quad K = X_k W_k^T + b_k,\quad V = X_v W_v^T + b_v,\\
        O_h = \operatorname{softmax}\!\big(Q_h K_h^T / \sqrt{D_h} + M\big) V_h,\quad
        Y = [O_1 \cdots O_H]\, W_o^T + b_o

    with :math:`Q_h` the columns :math:`hD_h:(h+1)D_h` of Q, :math:`D_h = E/H`, and M the sum of
    ``attn_mask`` and ``key_padding_mask`` made additive (bool True -> -inf).

    ``params`` (state_dict keys of the module): ``in_proj_weight`` (3E, E) with rows [0:E] for Q,
    [E:2E] for K, [2E:3E] for V -- or ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim),
    ``v_proj_weight`` (E, vdim) when kdim/vdim differ from E; ``in_proj_bias`` (3E,);
    ``out_proj.weight`` (E, E), ``out_proj.bias`` (E,); ``bias_k``, ``bias_v`` (1, 1, E) for
    ``add_bias_kv`` (appended to the projected keys/values as one more key). Absent biases mean
    ``bias=False``. ``add_zero_attn`` appends a zero key and value per head.

    Shapes: query (L, B, E) or (B, L, E) with ``batch_first`` or (L, E) unbatched; key and value
    (S, B, kdim/vdim) likewise; ``key_padding_mask`` (B, S) or (S,); ``attn_mask`` (L, S) or
    (B*H, L, S) (index b*H + h). Returns (output like query, weights or None); weights are
    (B, L, S) averaged over heads or (B, H, L, S) per head (no batch axis when unbatched).

    ``is_causal`` is PyTorch's hint that ``attn_mask`` is the causal mask: it needs ``attn_mask``
    and must not contradict it (ValueError otherwise); the mask is what is applied.
    ``fully_masked_row``: see the module docstring. ``mask_fill``: a finite value that replaces
    the scores a *boolean* mask hides (Flax, Equinox: ``finfo(dtype).min``), so a query whose
    every key a boolean mask hides has uniform weights and outputs mean(V) through the output
    projection; float masks stay additive (their -inf a hard mask). None: -inf.
    ``mask_fill_mode="add"``: the fill is *added* to the scores a boolean mask hides (once per
    key, whichever masks hide it), as Hugging Face's 0 / ``finfo(dtype).min`` masks are.
    """
    _check_choice("mask_fill_mode", mask_fill_mode, ("replace", "add"))
    _check_choice("fully_masked_row", fully_masked_row, ("nan", "zero"))
    if mask_fill is not None and not math.isfinite(float(mask_fill)):
        raise ValueError(f"mask_fill must be finite or None, got {mask_fill!r}")
    if int(num_heads) != num_heads or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    _check_keys(params, set(_MHA_KEYS), "MultiheadAttention")
    q_in, k_in, v_in = _f64("query", query), _f64("key", key), _f64("value", value)
    batched = q_in.ndim == 3
    if q_in.ndim not in (2, 3) or k_in.ndim != q_in.ndim or v_in.ndim != q_in.ndim:
        raise ValueError(
            f"query, key, value must all be 3-D (batched) or 2-D (unbatched), got "
            f"{q_in.shape}, {k_in.shape}, {v_in.shape}"
        )
    if not batched:
        q_in, k_in, v_in = q_in[None], k_in[None], v_in[None]
    elif not batch_first:
        q_in, k_in, v_in = (a.transpose(1, 0, 2) for a in (q_in, k_in, v_in))
    # now (B, L, E), (B, S, kdim), (B, S, vdim)
    bsz, tgt_len, e = q_in.shape
    if k_in.shape[:2] != v_in.shape[:2] or k_in.shape[0] != bsz:
        raise ValueError(f"key {k_in.shape} and value {v_in.shape} do not match query")
    src_len = k_in.shape[1]
    h = int(num_heads)
    if e % h:
        raise ValueError(f"embed_dim {e} is not divisible by num_heads {h}")
    dh = e // h

    b_in = _optional(params, "in_proj_bias", (3 * e,))
    b_q, b_k, b_v = (
        (None, None, None) if b_in is None else (b_in[:e], b_in[e : 2 * e], b_in[2 * e :])
    )
    if "in_proj_weight" in params and params["in_proj_weight"] is not None:
        w_in = _param(params, "in_proj_weight", (3 * e, e))
        if k_in.shape[-1] != e or v_in.shape[-1] != e:
            raise ValueError("in_proj_weight needs key and value of width embed_dim")
        w_q, w_k, w_v = w_in[:e], w_in[e : 2 * e], w_in[2 * e :]
    else:
        w_q = _param(params, "q_proj_weight", (e, e))
        w_k = _param(params, "k_proj_weight", (e, k_in.shape[-1]))
        w_v = _param(params, "v_proj_weight", (e, v_in.shape[-1]))
    q = linear(q_in, w_q, b_q)  # (B, L, E)
    k = linear(k_in, w_k, b_k)  # (B, S, E)
    v = linear(v_in, w_v, b_v)  # (B, S, E)

    if is_causal:
        if attn_mask is None:
            raise ValueError("is_causal=True needs attn_mask (as nn.MultiheadAttention)")
        causal = square_subsequent_mask(tgt_len) if tgt_len == src_len else None
        given = _additive(attn_mask, "attn_mask")
        if causal is None or given is None or given.shape[-2:] != causal.shape:
            raise ValueError("is_causal=True but attn_mask is not the square causal mask")
        if not np.array_equal(given, np.broadcast_to(causal, given.shape)):
            raise ValueError("is_causal=True but attn_mask is not the causal mask")

    mask = _additive(attn_mask, "attn_mask")
    if mask is not None:
        if mask.shape == (tgt_len, src_len):
            mask = mask[None, None]  # (1, 1, L, S)
        elif mask.shape == (bsz * h, tgt_len, src_len):
            mask = mask.reshape(bsz, h, tgt_len, src_len)
        else:
            raise ValueError(
                f"attn_mask has shape {mask.shape}; expected {(tgt_len, src_len)} or "
                f"{(bsz * h, tgt_len, src_len)}"
            )
    kpm = _additive(key_padding_mask, "key_padding_mask")
    if kpm is not None:
        if not batched:
            kpm = kpm[None]
        if kpm.shape != (bsz, src_len):
            raise ValueError(f"key_padding_mask has shape {kpm.shape}, expected {(bsz, src_len)}")
        kpm = kpm[:, None, None, :]  # (B, 1, 1, S)

    bias_k = _optional(params, "bias_k", (1, 1, e))
    bias_v = _optional(params, "bias_v", (1, 1, e))
    if (bias_k is None) != (bias_v is None):
        raise ValueError("bias_k and bias_v must be given together")
    extra = int(bias_k is not None) + int(add_zero_attn)

    qh, kh, vh = split_heads(q, h), split_heads(k, h), split_heads(v, h)  # (B, H, *, Dh)
    if bias_k is not None and bias_v is not None:
        kh = np.concatenate([kh, np.broadcast_to(bias_k.reshape(1, h, 1, dh), (bsz, h, 1, dh))], 2)
        vh = np.concatenate([vh, np.broadcast_to(bias_v.reshape(1, h, 1, dh), (bsz, h, 1, dh))], 2)
    if add_zero_attn:
        kh = np.concatenate([kh, np.zeros((bsz, h, 1, dh))], 2)
        vh = np.concatenate([vh, np.zeros((bsz, h, 1, dh))], 2)

    bias = np.zeros((1, 1, 1, src_len + extra))
    if mask is not None:
        bias = bias + np.pad(mask, [(0, 0)] * 3 + [(0, extra)])
    if kpm is not None:
        bias = bias + np.pad(kpm, [(0, 0)] * 3 + [(0, extra)])
    filled = _filled(attn_mask, key_padding_mask, bsz, h, tgt_len, src_len, batched, extra)
    if mask_fill is not None and filled is not None:
        fill = float(mask_fill)
        out, p = _filled_attention(qh, kh, vh, bias, filled, fill, added=mask_fill_mode == "add")
    else:
        with np.errstate(invalid="ignore"):  # 0/0 on fully masked rows: the "nan" convention
            out, p = _kernels.attention(qh, kh, vh, bias, 1.0 / math.sqrt(dh))  # (B,H,L,Dh)
    p = np.broadcast_to(p, (bsz, h, tgt_len, src_len + extra))
    if fully_masked_row == "zero":
        dead = np.all(np.isneginf(np.broadcast_to(bias, p.shape)), axis=-1, keepdims=True)
        out = np.where(dead, 0.0, out)
        p = np.where(dead, 0.0, p)

    y = linear(
        merge_heads(out),
        _param(params, "out_proj.weight", (e, e)),
        _optional(params, "out_proj.bias", (e,)),
    )  # (B, L, E)
    weights: FloatArray | None = None
    if need_weights:
        weights = np.asarray(p.mean(axis=1) if average_attn_weights else p, dtype=np.float64)
        if not batched:
            weights = weights[0]
    if not batched:
        y = y[0]
    elif not batch_first:
        y = y.transpose(1, 0, 2)
    return np.ascontiguousarray(y), weights


def _filled(
    attn_mask: Any,
    key_padding_mask: Any,
    bsz: int,
    h: int,
    tgt_len: int,
    src_len: int,
    batched: bool,
    extra: int,
) -> np.ndarray | None:
    """(B, H, L, S + extra) True where a *boolean* mask hides the key (None without one)."""
    out = np.zeros((bsz, h, tgt_len, src_len + extra), dtype=bool)
    found = False
    if attn_mask is not None and np.asarray(attn_mask).dtype == np.bool_:
        am = np.asarray(attn_mask)
        am = am[None, None] if am.ndim == 2 else am.reshape(bsz, h, tgt_len, src_len)
        out[..., :src_len] |= am
        found = True
    if key_padding_mask is not None and np.asarray(key_padding_mask).dtype == np.bool_:
        kpm = np.asarray(key_padding_mask)
        kpm = kpm[None] if not batched else kpm
        out[..., :src_len] |= kpm[:, None, None, :]
        found = True
    return out if found and out.any() else None


def _filled_attention(
    qh: FloatArray,
    kh: FloatArray,
    vh: FloatArray,
    bias: FloatArray,
    filled: Any,
    fill: float,
    *,
    added: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """softmax(S) V with S = Q Kᵀ/√D_h + (the float part of) the bias, and S = ``fill`` where a
    boolean mask hides the key (``added``: S + ``fill`` there); a row with no finite score is
    0/0 = NaN."""
    scores = np.matmul(qh, np.swapaxes(kh, -1, -2)) / math.sqrt(qh.shape[-1])
    with np.errstate(invalid="ignore"):
        float_part = scores + np.where(filled, 0.0, bias)
        s = (
            float_part + np.where(filled, fill, 0.0)
            if added
            else np.where(filled, fill, float_part)
        )
        m = np.max(s, axis=-1, keepdims=True)
        e = np.exp(s - m)
        p = e / np.sum(e, axis=-1, keepdims=True)
    return np.matmul(p, vh), p


def masked_self_attention(
    x: npt.ArrayLike,
    params: Params,
    num_heads: int,
    *,
    key_padding_mask: npt.ArrayLike | None = None,
    batch_first: bool = False,
    fully_masked_row: FullyMaskedRow = "nan",
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> FloatArray:
    """Decoder self-attention: :func:`multi_head_attention` of x with itself under the causal
    mask (:func:`square_subsequent_mask`): output position i reads only positions j <= i."""
    xa = _f64("x", x)
    length = xa.shape[-2] if (xa.ndim == 2 or batch_first) else xa.shape[0]
    out, _ = multi_head_attention(
        xa,
        xa,
        xa,
        params,
        num_heads,
        key_padding_mask=key_padding_mask,
        need_weights=False,
        attn_mask=square_subsequent_mask(length),
        batch_first=batch_first,
        fully_masked_row=fully_masked_row,
        mask_fill=mask_fill,
        mask_fill_mode=mask_fill_mode,
    )
    return out


def cross_attention(
    target: npt.ArrayLike,
    memory: npt.ArrayLike,
    params: Params,
    num_heads: int,
    *,
    memory_key_padding_mask: npt.ArrayLike | None = None,
    memory_mask: npt.ArrayLike | None = None,
    batch_first: bool = False,
    fully_masked_row: FullyMaskedRow = "nan",
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> FloatArray:
    """Encoder-decoder attention: queries from ``target``, keys and values from ``memory`` (the
    encoder output), source padding hidden by ``memory_key_padding_mask`` (True = padding)."""
    out, _ = multi_head_attention(
        target,
        memory,
        memory,
        params,
        num_heads,
        key_padding_mask=memory_key_padding_mask,
        need_weights=False,
        attn_mask=memory_mask,
        batch_first=batch_first,
        fully_masked_row=fully_masked_row,
        mask_fill=mask_fill,
        mask_fill_mode=mask_fill_mode,
    )
    return out


# -- feed-forward, residual + norm, layers --------------------------------------------------


def feed_forward(x: npt.ArrayLike, params: Params, *, activation_name: str = "relu") -> FloatArray:
    r"""Position-wise feed-forward: :math:`\mathrm{FFN}(x) = \sigma(x W_1^T + b_1) W_2^T + b_2`.

    ``params``: ``linear1.weight`` (F, E), ``linear1.bias`` (F,), ``linear2.weight`` (E, F),
    ``linear2.bias`` (E,); biases optional. σ from :func:`activation`.
    """
    xa = _f64("x", x)
    w1 = _param(params, "linear1.weight")
    w2 = _param(params, "linear2.weight")
    if w1.ndim != 2 or w2.shape != (w1.shape[1], w1.shape[0]):
        raise ValueError(f"linear1.weight {w1.shape} and linear2.weight {w2.shape} do not chain")
    b1 = _optional(params, "linear1.bias", (w1.shape[0],))
    b2 = _optional(params, "linear2.bias", (w2.shape[0],))
    return linear(activation(activation_name)(linear(xa, w1, b1)), w2, b2)


def layer_norm(x: FloatArray, params: Params, eps: float) -> FloatArray:
    """``nn.LayerNorm(E)`` with ``params`` ``weight`` (E,), ``bias`` (E,) (bias optional)."""
    e = x.shape[-1]
    w = _param(params, "weight", (e,))
    b = _optional(params, "bias", (e,))
    return np.asarray(_kernels.layer_norm(x, 1, w, b, float(eps)), dtype=np.float64)


def residual_layer_norm(
    x: npt.ArrayLike,
    sublayer: Callable[[FloatArray], FloatArray],
    norm_params: Params,
    *,
    eps: float = 1e-5,
    norm_first: bool = False,
) -> FloatArray:
    r"""The sublayer connection with LayerNorm.

    post-LN (``norm_first=False``, "Attention Is All You Need"): :math:`\mathrm{LN}(x + f(x))`;
    pre-LN (``norm_first=True``, Xiong et al. 2020): :math:`x + f(\mathrm{LN}(x))`.
    ``norm_params``: ``weight`` and ``bias`` of the LayerNorm.
    """
    xa = _f64("x", x)
    if norm_first:
        return xa + sublayer(layer_norm(xa, norm_params, eps))
    return layer_norm(xa + sublayer(xa), norm_params, eps)


def _layer_keys(blocks: tuple[str, ...], norms: tuple[str, ...]) -> set[str]:
    keys = {f"{b}.{k}" for b in blocks for k in _MHA_KEYS}
    keys |= {f"linear{i}.{k}" for i in (1, 2) for k in ("weight", "bias")}
    keys |= {f"{n}.{k}" for n in norms for k in ("weight", "bias")}
    return keys


def _seq_first(x: FloatArray, batch_first: bool) -> FloatArray:
    """(L, B, E) or (B, L, E) or (L, E) -> (B, L, E)."""
    if x.ndim == 2:
        return x[None]
    if x.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D input, got shape {x.shape}")
    return x if batch_first else x.transpose(1, 0, 2)


def _restore(y: FloatArray, like: FloatArray, batch_first: bool) -> FloatArray:
    if like.ndim == 2:
        return y[0]
    return y if batch_first else np.ascontiguousarray(y.transpose(1, 0, 2))


def _batched_mask(mask: Any, unbatched: bool) -> Any:
    if mask is None or not unbatched:
        return mask
    return np.asarray(mask)[None]


def _attention_sublayer(
    params: Params,
    nhead: int,
    *,
    memory: FloatArray | None = None,
    key_padding_mask: Any,
    attn_mask: Any,
    is_causal: bool,
    fully_masked_row: FullyMaskedRow,
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> Callable[[FloatArray], FloatArray]:
    """The attention sublayer of an encoder/decoder layer as a function of its input y
    (B, L, E): self-attention on y, or cross-attention of y on ``memory``, with
    ``need_weights=False`` as the layers call it."""

    def sublayer(y: FloatArray) -> FloatArray:
        kv = y if memory is None else memory
        out, _ = multi_head_attention(
            y,
            kv,
            kv,
            params,
            nhead,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            attn_mask=attn_mask,
            is_causal=is_causal,
            batch_first=True,
            fully_masked_row=fully_masked_row,
            mask_fill=mask_fill,
            mask_fill_mode=mask_fill_mode,
        )
        return out

    return sublayer


def _feed_forward_sublayer(
    params: Params, activation_name: str
) -> Callable[[FloatArray], FloatArray]:
    """The feed-forward sublayer of an encoder/decoder layer as a function of its input."""
    ff = feed_forward_params(params)

    def ffn(y: FloatArray) -> FloatArray:
        return feed_forward(y, ff, activation_name=activation_name)

    return ffn


def transformer_encoder_layer(
    src: npt.ArrayLike,
    params: Params,
    nhead: int,
    *,
    src_mask: npt.ArrayLike | None = None,
    src_key_padding_mask: npt.ArrayLike | None = None,
    is_causal: bool = False,
    norm_first: bool = False,
    activation_name: str = "relu",
    batch_first: bool = False,
    layer_norm_eps: float = 1e-5,
    fully_masked_row: FullyMaskedRow = "zero",
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> FloatArray:
    r"""``nn.TransformerEncoderLayer.forward`` in eval mode.

    post-LN: :math:`x \leftarrow \mathrm{LN}_1(x + \mathrm{SA}(x))`,
    :math:`x \leftarrow \mathrm{LN}_2(x + \mathrm{FFN}(x))`; pre-LN (``norm_first``):
    :math:`x \leftarrow x + \mathrm{SA}(\mathrm{LN}_1(x))`,
    :math:`x \leftarrow x + \mathrm{FFN}(\mathrm{LN}_2(x))`. SA is
    :func:`multi_head_attention` with ``src_mask``/``src_key_padding_mask``, FFN is
    :func:`feed_forward`. ``params`` are the state_dict of the layer (``self_attn.*``,
    ``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``).

    ``fully_masked_row`` defaults to ``"zero"``, what the layer's slow path (``need_weights=False``
    attention) gives; its fast path (eval, no grad, batch_first) gives ``"nan"``.
    """
    _check_keys(params, _layer_keys(("self_attn",), ("norm1", "norm2")), "encoder layer")
    x_in = _f64("src", src)
    unbatched = x_in.ndim == 2
    x = _seq_first(x_in, batch_first)
    sa = sub_params(params, "self_attn.")

    self_attention = _attention_sublayer(
        sa,
        nhead,
        key_padding_mask=_batched_mask(src_key_padding_mask, unbatched),
        attn_mask=src_mask,
        is_causal=is_causal,
        fully_masked_row=fully_masked_row,
        mask_fill=mask_fill,
        mask_fill_mode=mask_fill_mode,
    )

    ffn = _feed_forward_sublayer(params, activation_name)

    eps = layer_norm_eps
    x = residual_layer_norm(
        x, self_attention, sub_params(params, "norm1."), eps=eps, norm_first=norm_first
    )
    x = residual_layer_norm(x, ffn, sub_params(params, "norm2."), eps=eps, norm_first=norm_first)
    return _restore(x, x_in, batch_first)


def transformer_decoder_layer(
    tgt: npt.ArrayLike,
    memory: npt.ArrayLike,
    params: Params,
    nhead: int,
    *,
    tgt_mask: npt.ArrayLike | None = None,
    memory_mask: npt.ArrayLike | None = None,
    tgt_key_padding_mask: npt.ArrayLike | None = None,
    memory_key_padding_mask: npt.ArrayLike | None = None,
    tgt_is_causal: bool = False,
    memory_is_causal: bool = False,
    norm_first: bool = False,
    activation_name: str = "relu",
    batch_first: bool = False,
    layer_norm_eps: float = 1e-5,
    fully_masked_row: FullyMaskedRow = "zero",
    mask_fill: float | None = None,
    mask_fill_mode: str = "replace",
) -> FloatArray:
    r"""``nn.TransformerDecoderLayer.forward`` in eval mode.

    post-LN: :math:`x \leftarrow \mathrm{LN}_1(x + \mathrm{SA}(x))`,
    :math:`x \leftarrow \mathrm{LN}_2(x + \mathrm{CA}(x, m))`,
    :math:`x \leftarrow \mathrm{LN}_3(x + \mathrm{FFN}(x))`; pre-LN applies each LN to the
    sublayer's input instead (:func:`residual_layer_norm`). SA is self-attention under
    ``tgt_mask`` (the causal mask for a decoder) and ``tgt_key_padding_mask``; CA is
    cross-attention with queries from x and keys/values from ``memory`` under ``memory_mask``
    and ``memory_key_padding_mask``. ``params``: the layer's state_dict (``self_attn.*``,
    ``multihead_attn.*``, ``linear1/2.*``, ``norm1/2/3.*``). Its slow path calls attention
    with ``need_weights=False``, hence ``fully_masked_row="zero"``; under ``torch.no_grad()``
    with boolean target masks its self-attention takes ``nn.MultiheadAttention``'s fast path,
    which gives NaN on a fully padded target row instead (declare ``"nan"`` for that path).
    """
    _check_keys(
        params,
        _layer_keys(("self_attn", "multihead_attn"), ("norm1", "norm2", "norm3")),
        "decoder layer",
    )
    x_in = _f64("tgt", tgt)
    m_in = _f64("memory", memory)
    if m_in.ndim != x_in.ndim:
        raise ValueError(f"tgt {x_in.shape} and memory {m_in.shape} must have the same rank")
    unbatched = x_in.ndim == 2
    x = _seq_first(x_in, batch_first)
    mem = _seq_first(m_in, batch_first)
    sa = sub_params(params, "self_attn.")
    ca = sub_params(params, "multihead_attn.")

    self_attention = _attention_sublayer(
        sa,
        nhead,
        key_padding_mask=_batched_mask(tgt_key_padding_mask, unbatched),
        attn_mask=tgt_mask,
        is_causal=tgt_is_causal,
        fully_masked_row=fully_masked_row,
        mask_fill=mask_fill,
        mask_fill_mode=mask_fill_mode,
    )

    cross = _attention_sublayer(
        ca,
        nhead,
        memory=mem,
        key_padding_mask=_batched_mask(memory_key_padding_mask, unbatched),
        attn_mask=memory_mask,
        is_causal=memory_is_causal,
        fully_masked_row=fully_masked_row,
        mask_fill=mask_fill,
        mask_fill_mode=mask_fill_mode,
    )

    ffn = _feed_forward_sublayer(params, activation_name)

    eps = layer_norm_eps
    x = residual_layer_norm(
        x, self_attention, sub_params(params, "norm1."), eps=eps, norm_first=norm_first
    )
    x = residual_layer_norm(x, cross, sub_params(params, "norm2."), eps=eps, norm_first=norm_first)
    x = residual_layer_norm(x, ffn, sub_params(params, "norm3."), eps=eps, norm_first=norm_first)
    return _restore(x, x_in, batch_first)
