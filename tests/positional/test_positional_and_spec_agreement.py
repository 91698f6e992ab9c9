"""Positional encodings against hand-computed values, the exact SymPy definitions against the
float64 references, and RoPE's relative-position law numerically."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import sympy as sp

from transpec.oracle.layers import reference as rl
from transpec.spec import layers as sl
from transpec.spec import positional as sp_pos

DIGITS = 40
#: the attention scale 1/sqrt(D_h) as a 40-digit Float, so exact evaluation stays numeric
SCALE_DH2 = (1 / sp.sqrt(2)).evalf(DIGITS)


def _exact(a: np.ndarray) -> sp.Matrix:
    arr = np.atleast_2d(np.asarray(a, dtype=np.float64))
    return sp.Matrix(arr.tolist()).applyfunc(lambda v: sp.Float(v, DIGITS))


def _num(m: sp.Matrix) -> np.ndarray:
    return np.array(m.evalf(DIGITS).tolist(), dtype=np.float64)


# -- sinusoidal -----------------------------------------------------------------------------


def test_sinusoidal_hand_values() -> None:
    pe = rl.sinusoidal_positional_encoding(3, 4)
    # d = 4: omega_0 = 1, omega_1 = 10000^(-2/4) = 1/100
    expected = [
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
        [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
    ]
    np.testing.assert_allclose(pe, expected, rtol=0, atol=1e-15)
    cat = rl.sinusoidal_positional_encoding(3, 4, layout="concatenated")
    np.testing.assert_allclose(cat, np.asarray(expected)[:, [0, 2, 1, 3]], rtol=0, atol=1e-15)
    # offset continues the sequence, odd d ends with a sine column
    np.testing.assert_array_equal(rl.sinusoidal_positional_encoding(2, 4, offset=1), pe[1:])
    odd = rl.sinusoidal_positional_encoding(2, 5)
    assert odd[1, 4] == pytest.approx(math.sin(10000 ** (-4 / 5)), abs=1e-16)


def test_sinusoidal_tensor2tensor_frequencies() -> None:
    w = rl.sinusoid_frequencies(8, frequencies="tensor2tensor")
    # min timescale 1, max timescale 10000: the last frequency is exactly 1/base
    np.testing.assert_allclose(w, [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4], rtol=1e-15)


@pytest.mark.parametrize("layout", ["interleaved", "concatenated"])
def test_sinusoidal_reference_equals_spec(layout: Any) -> None:
    d, length = 6, 5
    omegas = [sp_pos.sinusoid_frequency(i, d) for i in range(d // 2)]
    exact = sp.Matrix.hstack(
        *[sp_pos.sinusoidal_encoding(p, omegas, layout=layout) for p in range(length)]
    ).T
    ref = rl.sinusoidal_positional_encoding(length, d, layout=layout)
    np.testing.assert_allclose(ref, _num(exact), rtol=0, atol=1e-15)


def test_sinusoidal_shift_map_numerically() -> None:
    d, k = 8, 3
    pe = rl.sinusoidal_positional_encoding(12, d)
    omegas = [sp_pos.sinusoid_frequency(i, d) for i in range(d // 2)]
    m_k = _num(sp_pos.sinusoid_shift_map(k, omegas))
    np.testing.assert_allclose(pe[k:], pe[:-k] @ m_k.T, rtol=0, atol=1e-14)


# -- learned --------------------------------------------------------------------------------


def test_learned_positions_are_rows() -> None:
    w = np.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(rl.learned_positional_encoding(w, 2, offset=3), w[3:5])
    with pytest.raises(ValueError, match="exceed"):
        rl.learned_positional_encoding(w, 4, offset=3)


# -- RoPE -----------------------------------------------------------------------------------


def test_rope_hand_values() -> None:
    x = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # positions 0 and 1
    half = rl.rotary_embedding(x)
    inter = rl.rotary_embedding(x, pairing="interleaved")
    # theta = (1, 1/100); position 0 is the identity; at position 1 the pair of x[0] turns by 1
    np.testing.assert_array_equal(half[0], x[0])
    np.testing.assert_allclose(half[1], [math.cos(1), 0, math.sin(1), 0], atol=1e-16)
    np.testing.assert_allclose(inter[1], [math.cos(1), math.sin(1), 0, 0], atol=1e-16)
    y = np.array([[0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        rl.rotary_embedding(y, offset=2), [[0, -math.sin(0.02), 0, math.cos(0.02)]], atol=1e-16
    )
    np.testing.assert_allclose(
        rl.rotary_embedding(y, offset=2, pairing="interleaved"),
        [[0, 0, -math.sin(0.02), math.cos(0.02)]],
        atol=1e-16,
    )


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_reference_equals_spec(pairing: Any) -> None:
    rng = np.random.default_rng(0)
    d, length, offset = 6, 4, 7
    x = rng.standard_normal((length, d))
    thetas = [sp_pos.rope_frequency(i, d) for i in range(d // 2)]
    exact = sp_pos.rope(_exact(x), list(range(offset, offset + length)), thetas, pairing=pairing)
    ref = rl.rotary_embedding(x, offset=offset, pairing=pairing)
    np.testing.assert_allclose(ref, _num(exact), rtol=0, atol=1e-14)


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_score_depends_only_on_relative_position(pairing: Any) -> None:
    rng = np.random.default_rng(1)
    d = 16
    q, k = rng.standard_normal(d), rng.standard_normal(d)

    def score(m: int, n: int) -> float:
        rq = rl.rotary_embedding(q[None], positions=[m], pairing=pairing)[0]
        rk = rl.rotary_embedding(k[None], positions=[n], pairing=pairing)[0]
        return float(rq @ rk)

    for m, n in ((0, 3), (5, 2), (17, 17)):
        for t in (1, 10, 1000):
            assert score(m + t, n + t) == pytest.approx(score(m, n), rel=1e-12, abs=1e-12)
    # a different relative position gives a different score (the check can fail)
    assert abs(score(0, 3) - score(0, 4)) > 1e-3
    # mixing the pairings between q and k breaks the law
    bad = (
        rl.rotary_embedding(q[None], positions=[11], pairing=pairing)[0]
        @ rl.rotary_embedding(
            k[None], positions=[14], pairing="interleaved" if pairing == "half" else "half"
        )[0]
    )
    assert abs(bad - score(0, 3)) > 1e-3


def test_rope_partial_rotary_and_batch() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 8))
    out = rl.rotary_embedding(x, rotary_dim=4, offset=1)
    np.testing.assert_array_equal(out[..., 4:], x[..., 4:])
    np.testing.assert_allclose(out[..., :4], rl.rotary_embedding(x[..., :4], offset=1), atol=0)
    # rotations preserve the norm of every rotated pair
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-14)
    with pytest.raises(ValueError, match="even"):
        rl.rotary_embedding(x[..., :5])


# -- ALiBi ----------------------------------------------------------------------------------


def _paper_slopes(n: int) -> list[float]:
    """A transcription of the ALiBi authors' get_slopes."""

    def get_slopes_power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest) + _paper_slopes(2 * closest)[0::2][: n - closest]


def test_alibi_slopes_hand_values() -> None:
    np.testing.assert_array_equal(rl.alibi_slopes(8), [2.0**-h for h in range(1, 9)])
    np.testing.assert_array_equal(rl.alibi_slopes(4), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8])
    # 6 heads: the 4 slopes of 4 heads, then slopes 1 and 3 of 8 heads
    np.testing.assert_array_equal(rl.alibi_slopes(6), [0.25, 2**-4, 2**-6, 2**-8, 0.5, 0.125])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 32, 40, 64, 96])
def test_alibi_slopes_equal_paper_code_and_spec(n: int) -> None:
    ref = rl.alibi_slopes(n)
    np.testing.assert_allclose(ref, _paper_slopes(n), rtol=4e-15)
    exact = [float(s.evalf(30)) for s in sp_pos.alibi_slopes(n)]
    np.testing.assert_allclose(ref, exact, rtol=1e-15)


def test_alibi_bias_hand_values_and_spec() -> None:
    bias = rl.alibi_bias(2, 3, 3)  # slopes 2^-4, 2^-8
    np.testing.assert_array_equal(bias[0], -np.array([[0, -1, -2], [1, 0, -1], [2, 1, 0]]) / 16.0)
    decode = rl.alibi_bias(2, 1, 4)  # one query at position 3 (KV cache)
    np.testing.assert_array_equal(decode[1], [[-3 / 256, -2 / 256, -1 / 256, 0.0]])
    np.testing.assert_array_equal(rl.alibi_bias(2, 3, 3, symmetric=True)[0], -np.abs(bias[0]))
    exact = sp_pos.alibi_bias(3, 2, 5)
    for h in range(3):
        np.testing.assert_allclose(rl.alibi_bias(3, 2, 5)[h], _num(exact[h]), rtol=1e-15)


def test_alibi_row_shift_is_invisible_to_softmax() -> None:
    """BLOOM adds m_h * j; the reference -m_h (p_i - j): the same attention weights."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((4, 5, 5))
    m = rl.alibi_slopes(4)
    bloom = m[:, None, None] * np.arange(5.0)[None, None, :]
    causal = rl.square_subsequent_mask(5)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    a = softmax(s + rl.alibi_bias(4, 5, 5) + causal)
    b = softmax(s + bloom + causal)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)


# -- the layer definitions against the references -------------------------------------------


def _random_params(
    rng: np.random.Generator, e: int, f: int, blocks: tuple[str, ...], norms: int
) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    for b in blocks:
        params[f"{b}.in_proj_weight"] = rng.standard_normal((3 * e, e)) * 0.5
        params[f"{b}.in_proj_bias"] = rng.standard_normal(3 * e) * 0.5
        params[f"{b}.out_proj.weight"] = rng.standard_normal((e, e)) * 0.5
        params[f"{b}.out_proj.bias"] = rng.standard_normal(e) * 0.5
    params["linear1.weight"] = rng.standard_normal((f, e)) * 0.5
    params["linear1.bias"] = rng.standard_normal(f) * 0.5
    params["linear2.weight"] = rng.standard_normal((e, f)) * 0.5
    params["linear2.bias"] = rng.standard_normal(e) * 0.5
    for i in range(1, norms + 1):
        params[f"norm{i}.weight"] = 1 + rng.standard_normal(e) * 0.3
        params[f"norm{i}.bias"] = rng.standard_normal(e) * 0.3
    return params


def _exact_params(params: dict[str, np.ndarray]) -> dict[str, sp.Matrix]:
    return {k: _exact(v) for k, v in params.items()}


def test_mha_reference_equals_spec() -> None:
    rng = np.random.default_rng(4)
    e, h, lq, ls = 4, 2, 3, 4
    params = {
        k.split(".", 1)[1]: v
        for k, v in _random_params(rng, e, 2, ("a",), 0).items()
        if k.startswith("a.")
    }
    xq, xkv = rng.standard_normal((lq, e)), rng.standard_normal((ls, e))
    mask = np.zeros((lq, ls))
    mask[0, 2:] = -np.inf
    exact = sl.multi_head_attention(
        _exact(xq),
        _exact(xkv),
        _exact(xkv),
        _exact_params(params),
        h,
        mask=sp.Matrix(lq, ls, lambda i, j: -sp.oo if mask[i, j] else 0),
    )
    ref, _ = rl.multi_head_attention(xq, xkv, xkv, params, h, attn_mask=mask)
    np.testing.assert_allclose(ref, _num(exact), rtol=0, atol=1e-13)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
def test_encoder_layer_reference_equals_spec(norm_first: bool, act: str) -> None:
    rng = np.random.default_rng(5)
    e, f, length = 4, 6, 3
    params = _random_params(rng, e, f, ("self_attn",), 2)
    x = rng.standard_normal((length, e))
    exact = sl.encoder_layer(
        _exact(x), _exact_params(params), 2, norm_first=norm_first, activation=act, scale=SCALE_DH2
    )
    ref = rl.transformer_encoder_layer(
        x[:, None], params, 2, norm_first=norm_first, activation_name=act
    )[:, 0]
    np.testing.assert_allclose(ref, _num(exact), rtol=0, atol=1e-13)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_reference_equals_spec(norm_first: bool) -> None:
    rng = np.random.default_rng(6)
    e, f, lt, ls = 4, 5, 3, 2
    params = _random_params(rng, e, f, ("self_attn", "multihead_attn"), 3)
    tgt, mem = rng.standard_normal((lt, e)), rng.standard_normal((ls, e))
    exact = sl.decoder_layer(
        _exact(tgt),
        _exact(mem),
        _exact_params(params),
        2,
        tgt_mask=sl.causal_mask(lt),
        norm_first=norm_first,
        activation="gelu",
        scale=SCALE_DH2,
    )
    ref = rl.transformer_decoder_layer(
        tgt,
        mem,
        params,
        2,
        tgt_mask=rl.square_subsequent_mask(lt),
        norm_first=norm_first,
        activation_name="gelu",
        batch_first=True,
    )
    np.testing.assert_allclose(ref, _num(exact), rtol=0, atol=1e-13)


def test_embedding_reference_equals_spec() -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 4))
    ids = [3, 0, 3, 4]
    exact = sl.embedding(ids, _exact(w), scale=True)
    np.testing.assert_allclose(rl.embedding(np.array(ids), w, scale=True), _num(exact), atol=1e-15)


def test_spec_definition_detects_a_wrong_reference() -> None:
    """The agreement check can fail: a post-LN definition does not match the pre-LN reference."""
    rng = np.random.default_rng(8)
    params = _random_params(rng, 4, 6, ("self_attn",), 2)
    x = rng.standard_normal((3, 4))
    exact = _num(
        sl.encoder_layer(_exact(x), _exact_params(params), 2, norm_first=False, scale=SCALE_DH2)
    )
    ref = rl.transformer_encoder_layer(x[:, None], params, 2, norm_first=True)[:, 0]
    assert np.max(np.abs(ref - exact)) > 1e-3


def _neox_rope(x: np.ndarray, offset: int, base: float = 10000.0) -> np.ndarray:
    """A transcription of GPT-NeoX / HF Llama: x * cos + rotate_half(x) * sin, with the
    frequencies repeated as cat(freqs, freqs)."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2) / d)
    t = np.arange(offset, offset + x.shape[-2])
    freqs = np.outer(t, inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotate_half = np.concatenate([-x2, x1], axis=-1)
    return x * np.cos(emb) + rotate_half * np.sin(emb)


def _gptj_rope(x: np.ndarray, offset: int, base: float = 10000.0) -> np.ndarray:
    """A transcription of GPT-J: rotate_every_two with sin/cos repeated pairwise."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2) / d)
    t = np.arange(offset, offset + x.shape[-2])
    freqs = np.outer(t, inv_freq)
    sin, cos = np.repeat(np.sin(freqs), 2, axis=-1), np.repeat(np.cos(freqs), 2, axis=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    rotate_every_two = np.stack([-x2, x1], axis=-1).reshape(x.shape)
    return x * cos + rotate_every_two * sin


def test_rope_pairings_match_the_libraries_that_name_them() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 7, 8))
    for offset in (0, 5):
        np.testing.assert_allclose(
            rl.rotary_embedding(x, offset=offset, pairing="half"),
            _neox_rope(x, offset),
            rtol=0,
            atol=1e-14,
        )
        np.testing.assert_allclose(
            rl.rotary_embedding(x, offset=offset, pairing="interleaved"),
            _gptj_rope(x, offset),
            rtol=0,
            atol=1e-14,
        )
    # the two pairings differ, so swapping them cannot pass
    assert np.max(np.abs(_neox_rope(x, 1) - _gptj_rope(x, 1))) > 1e-2


def test_sinusoidal_layouts_match_the_code_that_names_them() -> None:
    length, d = 9, 10
    # the PyTorch tutorial's PositionalEncoding (interleaved, the paper's frequencies)
    position = np.arange(length)[:, None]
    div_term = np.exp(np.arange(0, d, 2) * (-math.log(10000.0) / d))
    tutorial = np.zeros((length, d))
    tutorial[:, 0::2] = np.sin(position * div_term)
    tutorial[:, 1::2] = np.cos(position * div_term)
    np.testing.assert_allclose(rl.sinusoidal_positional_encoding(length, d), tutorial, atol=1e-14)
    # tensor2tensor's get_timing_signal_1d (concatenated, its own frequency set)
    num_timescales = d // 2
    increment = math.log(10000.0 / 1.0) / (num_timescales - 1)
    inv_timescales = np.exp(np.arange(num_timescales) * -increment)
    scaled_time = position * inv_timescales[None, :]
    t2t = np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1)
    ours = rl.sinusoidal_positional_encoding(
        length, d, layout="concatenated", frequencies="tensor2tensor"
    )
    np.testing.assert_allclose(ours, t2t, atol=1e-14)
    # and the layouts really differ
    assert np.max(np.abs(tutorial - t2t)) > 0.1
