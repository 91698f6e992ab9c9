"""The float64 layer references against PyTorch's own modules (CPU, float64).

Every torch module is built in float64, given random parameters (biases included, so that a
missing bias or a swapped block shows), put in eval mode, and compared to the reference on the
very same state_dict. Paths: nn.MultiheadAttention's slow path with and without weights and its
fast path (eval, no grad, self-attention, batch_first, even head count);
nn.TransformerEncoderLayer's slow path and fast path; nn.TransformerDecoderLayer.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from transpec.oracle.layers import reference as rl

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

TOL = 1e-12


def _randomize(module: Any, seed: int) -> Any:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module.eval()


def _state(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _t(a: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(a))


def _close(actual: np.ndarray, expected: Any, tol: float = TOL) -> None:
    exp = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert actual.shape == exp.shape, (actual.shape, exp.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(exp))
    finite = ~np.isnan(exp)
    if not finite.any():
        return
    err = float(np.max(np.abs(actual[finite] - exp[finite])))
    assert err <= tol * max(1.0, float(np.max(np.abs(exp[finite])))), err


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


class _PathCounter:
    """Counts calls of a private torch fast-path kernel (``torch._native_multi_head_attention``,
    ``torch._transformer_encoder_layer_fwd``), so a test can assert which path torch took."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        original = getattr(torch, name)

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counting)


# -- activations, linear, embedding ---------------------------------------------------------


def test_activations_equal_torch() -> None:
    x = np.concatenate([np.linspace(-8, 8, 401), [-1e-8, 0.0, 1e-8, 30.0, -30.0]])
    _close(rl.relu(x), F.relu(_t(x)))
    _close(rl.gelu(x), F.gelu(_t(x)))
    _close(rl.gelu(x, "tanh"), F.gelu(_t(x), approximate="tanh"))
    # the two GELUs really differ, so a swap cannot pass
    assert np.max(np.abs(rl.gelu(x) - rl.gelu(x, "tanh"))) > 1e-4


def test_embedding_equals_f_embedding() -> None:
    r = _rng(1)
    w = r.standard_normal((11, 6))
    idx = r.integers(0, 11, size=(3, 5))
    _close(rl.embedding(idx, w), F.embedding(_t(idx), _t(w)))
    _close(rl.embedding(idx, w, padding_idx=0), F.embedding(_t(idx), _t(w), padding_idx=0))
    _close(rl.embedding(idx, w, scale=True), F.embedding(_t(idx), _t(w)) * math.sqrt(6))


def test_embedding_rejects_bad_input() -> None:
    w = np.zeros((4, 2))
    with pytest.raises(ValueError, match="out of range"):
        rl.embedding(np.array([4]), w)
    with pytest.raises(TypeError, match="integers"):
        rl.embedding(np.array([0.0]), w)


# -- nn.MultiheadAttention ------------------------------------------------------------------


def _mha(e: int, h: int, *, batch_first: bool, seed: int, **kw: Any) -> Any:
    m = nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=torch.float64, **kw)
    return _randomize(m, seed)


def _inputs(r: np.random.Generator, b: int, length: int, e: int, batch_first: bool) -> np.ndarray:
    x = r.standard_normal((b, length, e))
    return x if batch_first else x.transpose(1, 0, 2).copy()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("average", [True, False])
def test_mha_slow_path_self_and_cross(batch_first: bool, need_weights: bool, average: bool) -> None:
    r = _rng(2)
    e, h, b, lq, ls = 8, 2, 3, 4, 5
    m = _mha(e, h, batch_first=batch_first, seed=3)
    q = _inputs(r, b, lq, e, batch_first)
    kv = _inputs(r, b, ls, e, batch_first)
    kpm = np.zeros((b, ls), dtype=bool)
    kpm[0, -2:] = True
    am = r.random((lq, ls)) < 0.3
    am[:, 0] = False  # every row keeps a key
    for key, mask, pad in ((q, None, None), (kv, am, kpm)):
        t_out, t_w = m(
            _t(q),
            _t(key),
            _t(key),
            key_padding_mask=None if pad is None else _t(pad),
            attn_mask=None if mask is None else _t(mask),
            need_weights=need_weights,
            average_attn_weights=average,
        )
        out, w = rl.multi_head_attention(
            q,
            key,
            key,
            _state(m),
            h,
            key_padding_mask=pad,
            attn_mask=mask,
            need_weights=need_weights,
            average_attn_weights=average,
            batch_first=batch_first,
        )
        _close(out, t_out)
        if need_weights:
            assert w is not None
            _close(w, t_w)
        else:
            assert w is None and t_w is None


def test_mha_float_masks_and_3d_mask() -> None:
    r = _rng(4)
    e, h, b, length = 6, 3, 2, 4
    m = _mha(e, h, batch_first=False, seed=5)
    x = _inputs(r, b, length, e, False)
    am3 = r.standard_normal((b * h, length, length))
    kpm = np.where(r.random((b, length)) < 0.3, -np.inf, r.standard_normal((b, length)))
    kpm[:, 0] = 0.0
    t_out, t_w = m(_t(x), _t(x), _t(x), attn_mask=_t(am3), key_padding_mask=_t(kpm))
    out, w = rl.multi_head_attention(x, x, x, _state(m), h, attn_mask=am3, key_padding_mask=kpm)
    _close(out, t_out)
    assert w is not None
    _close(w, t_w)


def test_mha_separate_projections_kdim_vdim() -> None:
    r = _rng(6)
    e, h, b, lq, ls = 8, 4, 2, 3, 5
    m = _mha(e, h, batch_first=True, seed=7, kdim=5, vdim=3)
    assert "q_proj_weight" in m.state_dict() and "in_proj_weight" not in m.state_dict()
    q = r.standard_normal((b, lq, e))
    k = r.standard_normal((b, ls, 5))
    v = r.standard_normal((b, ls, 3))
    t_out, t_w = m(_t(q), _t(k), _t(v), average_attn_weights=False)
    out, w = rl.multi_head_attention(
        q, k, v, _state(m), h, batch_first=True, average_attn_weights=False
    )
    _close(out, t_out)
    assert w is not None
    _close(w, t_w)


@pytest.mark.parametrize(
    ("add_bias_kv", "add_zero_attn", "bias"),
    [
        (True, False, True),
        (False, True, True),
        (True, True, False),
    ],
)
def test_mha_bias_kv_zero_attn_no_bias(add_bias_kv: bool, add_zero_attn: bool, bias: bool) -> None:
    r = _rng(8)
    e, h, b, length = 6, 2, 2, 4
    m = _mha(
        e,
        h,
        batch_first=False,
        seed=9,
        add_bias_kv=add_bias_kv,
        add_zero_attn=add_zero_attn,
        bias=bias,
    )
    x = _inputs(r, b, length, e, False)
    kpm = np.zeros((b, length), dtype=bool)
    kpm[1, 1:] = True
    am = np.triu(np.ones((length, length), dtype=bool), 1)
    t_out, t_w = m(_t(x), _t(x), _t(x), key_padding_mask=_t(kpm), attn_mask=_t(am))
    out, w = rl.multi_head_attention(
        x, x, x, _state(m), h, key_padding_mask=kpm, attn_mask=am, add_zero_attn=add_zero_attn
    )
    _close(out, t_out)
    assert w is not None
    _close(w, t_w)


def test_mha_unbatched_and_causal_hint() -> None:
    r = _rng(10)
    e, h, length = 4, 2, 5
    m = _mha(e, h, batch_first=True, seed=11)
    x = r.standard_normal((length, e))
    causal = rl.square_subsequent_mask(length)
    for nw in (True, False):
        t_out, _ = m(_t(x), _t(x), _t(x), attn_mask=_t(causal), is_causal=True, need_weights=nw)
        out, _ = rl.multi_head_attention(
            x, x, x, _state(m), h, attn_mask=causal, is_causal=True, need_weights=nw
        )
        _close(out, t_out)
    kpm = np.array([False, False, True, False, True])
    t_out, t_w = m(_t(x), _t(x), _t(x), key_padding_mask=_t(kpm))
    out, w = rl.multi_head_attention(x, x, x, _state(m), h, key_padding_mask=kpm)
    _close(out, t_out)
    assert w is not None
    _close(w, t_w)
    with pytest.raises(ValueError, match="needs attn_mask"):
        rl.multi_head_attention(x, x, x, _state(m), h, is_causal=True)
    with pytest.raises(ValueError, match="not the causal mask"):
        rl.multi_head_attention(x, x, x, _state(m), h, attn_mask=causal.T, is_causal=True)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fast_path(need_weights: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _PathCounter(monkeypatch, "_native_multi_head_attention")
    r = _rng(12)
    e, h, b, length = 8, 4, 3, 5
    m = _mha(e, h, batch_first=True, seed=13)
    x = _t(r.standard_normal((b, length, e)))
    kpm = np.zeros((b, length), dtype=bool)
    kpm[0, 3:] = True
    kpm[2, :1] = True
    with torch.no_grad():
        t_out, t_w = m(x, x, x, key_padding_mask=_t(kpm), need_weights=need_weights)
    assert fast.calls == 1
    out, w = rl.multi_head_attention(
        x.numpy(),
        x.numpy(),
        x.numpy(),
        _state(m),
        h,
        key_padding_mask=kpm,
        need_weights=need_weights,
        batch_first=True,
    )
    _close(out, t_out)
    if need_weights:
        assert w is not None
        _close(w, t_w)


def test_mha_wrong_block_order_is_detected() -> None:
    """A reference that took K from rows [0:E] (instead of [E:2E]) must not match torch."""
    r = _rng(14)
    e, h = 4, 2
    m = _mha(e, h, batch_first=True, seed=15)
    q, kv = r.standard_normal((1, 3, e)), r.standard_normal((1, 4, e))
    state = _state(m)
    swapped = dict(state)
    w = state["in_proj_weight"]
    swapped["in_proj_weight"] = np.concatenate([w[e : 2 * e], w[:e], w[2 * e :]])
    t_out, _ = m(_t(q), _t(kv), _t(kv))
    bad, _ = rl.multi_head_attention(q, kv, kv, swapped, h, batch_first=True)
    assert np.max(np.abs(bad - t_out.detach().numpy())) > 1e-3


# -- fully masked rows: torch's own paths disagree ------------------------------------------


def _fully_padded_case() -> tuple[Any, np.ndarray, np.ndarray]:
    """The minimal case: E=2, H=2 (the fast path needs an even head count), one batch, one
    query, its only key padded."""
    m = _mha(2, 2, batch_first=True, seed=16)
    x = np.array([[[0.5, -1.0]]])
    kpm = np.array([[True]])
    return m, x, kpm


def test_mha_fully_padded_row_paths_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.MultiheadAttention on a query whose every key is padded: the slow path with
    need_weights=True and the fast path return NaN; the slow path with need_weights=False
    (scaled_dot_product_attention) returns the output projection of a zero row, out_proj.bias.
    The reference gives either, by ``fully_masked_row``."""
    m, x, kpm = _fully_padded_case()
    state = _state(m)
    counter = _PathCounter(monkeypatch, "_native_multi_head_attention")
    xt, pad = _t(x), _t(kpm)
    slow_w, _ = m(xt, xt, xt, key_padding_mask=pad, need_weights=True)
    slow_nw, _ = m(xt, xt, xt, key_padding_mask=pad, need_weights=False)
    assert counter.calls == 0  # grad enabled, parameters require grad: slow path
    with torch.no_grad():
        fast, _ = m(xt, xt, xt, key_padding_mask=pad, need_weights=False)
    assert counter.calls == 1
    assert torch.isnan(slow_w).all() and torch.isnan(fast).all()
    assert torch.equal(slow_nw[0, 0], m.out_proj.bias.detach())
    nan_ref, w = rl.multi_head_attention(x, x, x, state, 2, key_padding_mask=kpm, batch_first=True)
    zero_ref, _ = rl.multi_head_attention(
        x, x, x, state, 2, key_padding_mask=kpm, batch_first=True, fully_masked_row="zero"
    )
    _close(nan_ref, slow_w)
    _close(nan_ref, fast)
    _close(zero_ref, slow_nw)
    assert w is not None and np.isnan(w).all()


# -- encoder and decoder layers -------------------------------------------------------------


def _encoder(norm_first: bool, act: Any, batch_first: bool, seed: int, **kw: Any) -> Any:
    m = nn.TransformerEncoderLayer(
        8,
        2,
        16,
        dropout=0.0,
        activation=act,
        batch_first=batch_first,
        norm_first=norm_first,
        dtype=torch.float64,
        **kw,
    )
    return _randomize(m, seed)


@pytest.mark.parametrize(
    ("norm_first", "act", "batch_first"),
    list(itertools.product([False, True], ["relu", "gelu"], [True, False])),
)
def test_encoder_layer_slow_and_fast(
    norm_first: bool, act: str, batch_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _PathCounter(monkeypatch, "_transformer_encoder_layer_fwd")
    r = _rng(20)
    b, length = 3, 5
    m = _encoder(norm_first, act, batch_first, seed=21)
    x = _inputs(r, b, length, 8, batch_first)
    kpm = np.zeros((b, length), dtype=bool)
    kpm[1, 3:] = True
    causal = rl.square_subsequent_mask(length)
    state = _state(m)
    for mask, pad in ((None, None), (None, kpm), (np.isinf(causal), kpm)):
        kw = {
            "src_mask": None if mask is None else _t(mask),
            "src_key_padding_mask": None if pad is None else _t(pad),
        }
        ref = rl.transformer_encoder_layer(
            x,
            state,
            2,
            src_mask=mask,
            src_key_padding_mask=pad,
            norm_first=norm_first,
            activation_name=act,
            batch_first=batch_first,
        )
        before = fast.calls
        _close(ref, m(_t(x), **kw))  # slow path (grad enabled, parameters require grad)
        assert fast.calls == before
        with torch.no_grad():  # the fast path when batch_first
            _close(ref, m(_t(x), **kw))
        assert fast.calls == before + int(batch_first)


def test_encoder_layer_causal_float_mask_unbatched_and_no_bias() -> None:
    r = _rng(22)
    length = 4
    m = _encoder(True, "gelu", False, seed=23, bias=False)
    assert not any(k.endswith("bias") for k in m.state_dict())
    x = r.standard_normal((length, 8))
    causal = rl.square_subsequent_mask(length)
    ref = rl.transformer_encoder_layer(
        x, _state(m), 2, src_mask=causal, is_causal=True, norm_first=True, activation_name="gelu"
    )
    _close(ref, m(_t(x), src_mask=_t(causal), is_causal=True))


def _decoder(norm_first: bool, act: str, batch_first: bool, seed: int) -> Any:
    m = nn.TransformerDecoderLayer(
        8,
        4,
        12,
        dropout=0.0,
        activation=act,
        batch_first=batch_first,
        norm_first=norm_first,
        dtype=torch.float64,
    )
    return _randomize(m, seed)


@pytest.mark.parametrize(
    ("norm_first", "act", "batch_first"),
    list(itertools.product([False, True], ["relu", "gelu"], [True, False])),
)
def test_decoder_layer(norm_first: bool, act: str, batch_first: bool) -> None:
    r = _rng(30)
    b, lt, ls = 2, 4, 6
    m = _decoder(norm_first, act, batch_first, seed=31)
    tgt = _inputs(r, b, lt, 8, batch_first)
    mem = _inputs(r, b, ls, 8, batch_first)
    tmask = rl.square_subsequent_mask(lt)
    tpad = np.zeros((b, lt), dtype=bool)
    tpad[0, -1] = True
    mpad = np.zeros((b, ls), dtype=bool)
    mpad[1, 2:] = True
    ref = rl.transformer_decoder_layer(
        tgt,
        mem,
        _state(m),
        4,
        tgt_mask=tmask,
        tgt_key_padding_mask=np.where(tpad, -np.inf, 0.0),
        memory_key_padding_mask=np.where(mpad, -np.inf, 0.0),
        tgt_is_causal=True,
        norm_first=norm_first,
        activation_name=act,
        batch_first=batch_first,
    )
    out = m(
        _t(tgt),
        _t(mem),
        tgt_mask=_t(tmask),
        tgt_key_padding_mask=_t(np.where(tpad, -np.inf, 0.0)),
        memory_key_padding_mask=_t(np.where(mpad, -np.inf, 0.0)),
        tgt_is_causal=True,
    )
    _close(ref, out)
    with torch.no_grad():
        _close(
            ref,
            m(
                _t(tgt),
                _t(mem),
                tgt_mask=_t(tmask),
                tgt_key_padding_mask=_t(np.where(tpad, -np.inf, 0.0)),
                memory_key_padding_mask=_t(np.where(mpad, -np.inf, 0.0)),
            ),
        )


def test_decoder_layer_bool_masks_and_memory_mask() -> None:
    r = _rng(32)
    b, lt, ls = 3, 3, 5
    m = _decoder(False, "relu", True, seed=33)
    tgt, mem = r.standard_normal((b, lt, 8)), r.standard_normal((b, ls, 8))
    mmask = r.random((lt, ls)) < 0.4
    mmask[:, 0] = False
    mpad = np.zeros((b, ls), dtype=bool)
    mpad[2, 3:] = True
    tmask = np.triu(np.ones((lt, lt), dtype=bool), 1)
    ref = rl.transformer_decoder_layer(
        tgt,
        mem,
        _state(m),
        4,
        tgt_mask=tmask,
        memory_mask=mmask,
        memory_key_padding_mask=mpad,
        batch_first=True,
    )
    out = m(
        _t(tgt),
        _t(mem),
        tgt_mask=_t(tmask),
        memory_mask=_t(mmask),
        memory_key_padding_mask=_t(mpad),
    )
    _close(ref, out)


def test_layer_rejects_unknown_parameter() -> None:
    m = _encoder(False, "relu", True, seed=40)
    state = _state(m)
    state["self_attn.in_proj_wieght"] = state.pop("self_attn.in_proj_weight")
    with pytest.raises(ValueError, match="unknown encoder layer parameter"):
        rl.transformer_encoder_layer(np.zeros((1, 2, 8)), state, 2, batch_first=True)


def test_encoder_layer_fast_path_ignores_gelu_tanh(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.TransformerEncoderLayer(activation=nn.GELU(approximate="tanh")): the slow path applies
    the tanh approximation, the fast path (eval, no grad, batch_first) the exact erf GELU, since
    the layer only records "is a GELU" (activation_relu_or_gelu = 2) for the fast kernel. The two
    paths of one module differ by ~1e-4; each equals the reference of what it computes."""
    fast = _PathCounter(monkeypatch, "_transformer_encoder_layer_fwd")
    x = _rng(50).standard_normal((1, 2, 8))
    m = _encoder(False, nn.GELU(approximate="tanh"), True, seed=51)
    assert m.activation_relu_or_gelu == 2  # recorded for any nn.GELU instance
    state = _state(m)
    slow = m(_t(x)).detach().numpy()
    with torch.no_grad():
        fast_out = m(_t(x)).numpy()
    assert fast.calls == 1
    tanh_ref = rl.transformer_encoder_layer(
        x, state, 2, activation_name="gelu_tanh", batch_first=True
    )
    erf_ref = rl.transformer_encoder_layer(x, state, 2, activation_name="gelu", batch_first=True)
    _close(tanh_ref, slow)
    _close(erf_ref, fast_out)
    assert np.max(np.abs(slow - fast_out)) > 1e-6


def test_encoder_layer_fully_padded_sequence_paths_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch entry whose every position is padded: the encoder layer's fast path returns NaN,
    its slow path (need_weights=False attention) a finite row. The reference gives either."""
    fast = _PathCounter(monkeypatch, "_transformer_encoder_layer_fwd")
    m = _encoder(False, "relu", True, seed=52)
    x = _rng(53).standard_normal((1, 1, 8))
    kpm = np.array([[True]])
    state = _state(m)
    slow = m(_t(x), src_key_padding_mask=_t(kpm))
    with torch.no_grad():
        fast_out = m(_t(x), src_key_padding_mask=_t(kpm))
    assert fast.calls == 1
    assert torch.isfinite(slow).all() and torch.isnan(fast_out).all()
    kw: dict[str, Any] = {"src_key_padding_mask": kpm, "batch_first": True}
    _close(rl.transformer_encoder_layer(x, state, 2, **kw), slow)
    _close(rl.transformer_encoder_layer(x, state, 2, fully_masked_row="nan", **kw), fast_out)


@pytest.mark.parametrize("average", [True, False])
def test_mha_fast_path_with_merged_masks(average: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path merges attn_mask and key_padding_mask itself (merge_masks)."""
    fast = _PathCounter(monkeypatch, "_native_multi_head_attention")
    r = _rng(60)
    e, h, b, length = 8, 2, 2, 4
    m = _mha(e, h, batch_first=True, seed=61)
    x = _t(r.standard_normal((b, length, e)))
    am = np.triu(np.ones((length, length), dtype=bool), 1)
    kpm = np.zeros((b, length), dtype=bool)
    kpm[1, 2] = True
    with torch.no_grad():
        t_out, t_w = m(
            x, x, x, attn_mask=_t(am), key_padding_mask=_t(kpm), average_attn_weights=average
        )
    assert fast.calls == 1
    out, w = rl.multi_head_attention(
        x.numpy(),
        x.numpy(),
        x.numpy(),
        _state(m),
        h,
        attn_mask=am,
        key_padding_mask=kpm,
        average_attn_weights=average,
        batch_first=True,
    )
    _close(out, t_out)
    assert w is not None
    _close(w, t_w)


def test_masked_self_attention_and_cross_attention_wrappers() -> None:
    r = _rng(62)
    e, h, b, lt, ls = 6, 3, 2, 4, 5
    m = _mha(e, h, batch_first=False, seed=63)
    tgt = _inputs(r, b, lt, e, False)
    mem = _inputs(r, b, ls, e, False)
    causal = _t(rl.square_subsequent_mask(lt))
    t_self, _ = m(_t(tgt), _t(tgt), _t(tgt), attn_mask=causal, need_weights=False)
    _close(rl.masked_self_attention(tgt, _state(m), h), t_self)
    mpad = np.zeros((b, ls), dtype=bool)
    mpad[0, 3:] = True
    t_cross, _ = m(_t(tgt), _t(mem), _t(mem), key_padding_mask=_t(mpad), need_weights=False)
    _close(rl.cross_attention(tgt, mem, _state(m), h, memory_key_padding_mask=mpad), t_cross)


def test_encoder_layer_unbatched_with_padding() -> None:
    r = _rng(64)
    m = _encoder(False, "relu", True, seed=65)
    x = r.standard_normal((5, 8))
    kpm = np.array([False, False, False, True, True])
    out = m(_t(x), src_key_padding_mask=_t(kpm))
    _close(rl.transformer_encoder_layer(x, _state(m), 2, src_key_padding_mask=kpm), out)


def test_decoder_layer_output_is_causal_in_the_target() -> None:
    """Changing target tokens after position i leaves outputs 0..i unchanged under the causal
    mask, and changes them without it (so the check can fail)."""
    r = _rng(66)
    m = _decoder(True, "gelu", True, seed=67)
    state = _state(m)
    tgt, mem = r.standard_normal((2, 5, 8)), r.standard_normal((2, 3, 8))
    changed = tgt.copy()
    changed[:, 3:] = r.standard_normal((2, 2, 8))
    kw = {"batch_first": True, "activation_name": "gelu", "norm_first": True}
    causal = rl.square_subsequent_mask(5)
    a = rl.transformer_decoder_layer(tgt, mem, state, 4, tgt_mask=causal, **kw)
    c = rl.transformer_decoder_layer(changed, mem, state, 4, tgt_mask=causal, **kw)
    np.testing.assert_array_equal(a[:, :3], c[:, :3])
    assert np.max(np.abs(a[:, 3:] - c[:, 3:])) > 1e-3
    a = rl.transformer_decoder_layer(tgt, mem, state, 4, **kw)
    c = rl.transformer_decoder_layer(changed, mem, state, 4, **kw)
    assert np.max(np.abs(a[:, :3] - c[:, :3])) > 1e-3


def test_reference_rejects_bad_input() -> None:
    m = _mha(4, 2, batch_first=True, seed=68)
    state = _state(m)
    x = np.zeros((1, 3, 4))
    with pytest.raises(ValueError, match="not divisible"):
        rl.multi_head_attention(x, x, x, state, 3, batch_first=True)
    with pytest.raises(ValueError, match="attn_mask has shape"):
        rl.multi_head_attention(x, x, x, state, 2, attn_mask=np.zeros((2, 3)), batch_first=True)
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        rl.multi_head_attention(
            x, x, x, state, 2, key_padding_mask=np.zeros((1, 2), bool), batch_first=True
        )
    with pytest.raises(ValueError, match=r"missing parameter 'out_proj\.weight'"):
        rl.multi_head_attention(
            x, x, x, {"in_proj_weight": state["in_proj_weight"]}, 2, batch_first=True
        )
    with pytest.raises(ValueError, match="unknown MultiheadAttention parameter"):
        rl.multi_head_attention(x, x, x, {**state, "extra": 1}, 2, batch_first=True)
    with pytest.raises(ValueError, match="activation="):
        rl.activation("swish")
    with pytest.raises(ValueError, match="fully_masked_row="):
        rl.multi_head_attention(x, x, x, state, 2, fully_masked_row="mean")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="boolean or floating"):
        rl.multi_head_attention(
            x, x, x, state, 2, attn_mask=np.zeros((3, 3), dtype=np.int64), batch_first=True
        )
