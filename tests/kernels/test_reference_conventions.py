"""The float64 reference: hand-computed tiny cases, every convention variant, argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transpec.oracle.kernels import reference as ref_mod
from transpec.oracle.reference import compute
from transpec.spec.conventions import CANONICAL, Conventions

RNG = np.random.default_rng(1234)


def _qkv(lq: int = 3, lk: int = 4, e: int = 2, ev: int = 2, hq: int = 1, hkv: int = 1):
    q = RNG.standard_normal((1, hq, lq, e))
    k = RNG.standard_normal((1, hkv, lk, e))
    v = RNG.standard_normal((1, hkv, lk, ev))
    return q, k, v


def _naive(q, k, v, keep, scale):
    """Attention by the formula, one query at a time (independent of the kernels)."""
    out = np.zeros((*q.shape[:-1], v.shape[-1]))
    for idx in np.ndindex(*q.shape[:-1]):
        *lead, _i = idx
        s = np.array([scale * q[idx] @ k[(*lead, j)] for j in range(k.shape[-2])])
        mask = keep[idx] if keep is not None else np.ones(k.shape[-2], bool)
        if not mask.any():
            continue
        w = np.where(mask, np.exp(s - s[mask].max()), 0.0)
        out[idx] = (w / w.sum()) @ v[tuple(lead)]
    return out


def test_softmax_hand_computed() -> None:
    ref = ref_mod.softmax(np.array([0.0, math.log(3.0)]))
    np.testing.assert_allclose(ref.value, [0.25, 0.75], rtol=1e-15)
    ref = ref_mod.softmax(np.array([[1.0, 1.0], [2.0, 0.0]]), dim=0)
    np.testing.assert_allclose(ref.value[:, 0], [1 / (1 + math.e), math.e / (1 + math.e)])
    np.testing.assert_allclose(ref.value[:, 1], [math.e / (1 + math.e), 1 / (1 + math.e)])


def test_softmax_all_neginf_row_is_nan_and_large_logits_are_finite() -> None:
    ref = ref_mod.softmax(np.array([[-np.inf, -np.inf], [1e308, -1e308]]))
    assert np.isnan(ref.value[0]).all()
    np.testing.assert_array_equal(ref.value[1], [1.0, 0.0])


def test_attention_hand_computed_two_keys() -> None:
    # q.k = [0, 2] with scale 1/sqrt(2)*sqrt(2) -> weights softmax([0, 2])
    q = np.array([[[[1.0, 1.0]]]])
    k = np.array([[[[0.0, 0.0], [1.0, 1.0]]]])
    v = np.array([[[[1.0], [3.0]]]])
    ref = ref_mod.attention(q, k, v, scale=1.0)
    w = 1 / (1 + math.exp(-2.0))
    np.testing.assert_allclose(ref.value[..., 0], [[[1 * (1 - w) + 3 * w]]], rtol=1e-15)
    np.testing.assert_allclose(ref.abs_value, ref.value)  # V > 0: P|V| = PV


def test_attention_default_and_negative_scale() -> None:
    q, k, v = _qkv(e=4)
    np.testing.assert_allclose(
        ref_mod.attention(q, k, v).value, _naive(q, k, v, None, 0.5), rtol=1e-13, atol=1e-15
    )
    neg = ref_mod.attention(q, k, v, scale=-0.5).value
    np.testing.assert_allclose(neg, _naive(q, k, v, None, -0.5), rtol=1e-13, atol=1e-15)
    assert not np.allclose(neg, ref_mod.attention(q, k, v).value)


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize(("lq", "lk"), [(3, 5), (5, 3), (4, 4)])
def test_causal_alignment(alignment: str, lq: int, lk: int) -> None:
    q, k, v = _qkv(lq=lq, lk=lk)
    conv = Conventions(causal_alignment=alignment)  # type: ignore[arg-type]
    offset = 0 if alignment == "top_left" else lk - lq
    keep = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + offset
    ref = ref_mod.attention(q, k, v, is_causal=True, conventions=conv)
    expected = _naive(q, k, v, np.broadcast_to(keep, (1, 1, lq, lk)), 1 / math.sqrt(2))
    np.testing.assert_allclose(ref.value, expected, rtol=1e-13, atol=1e-15)
    dead = ~keep.any(axis=1)
    # bottom-right with Lq > Lk leaves the first queries without a key: zero rows
    assert dead.any() == (alignment == "bottom_right" and lq > lk)
    assert (ref.value[0, 0, dead] == 0).all()


def test_bool_mask_polarity_and_fully_masked_row_policies() -> None:
    q, k, v = _qkv()
    mask = np.array([[True, False, True, False], [False] * 4, [True] * 4])
    keep = ref_mod.attention(q, k, v, attn_mask=mask)
    ignore = ref_mod.attention(
        q, k, v, attn_mask=~mask, conventions=Conventions(bool_mask="ignore")
    )
    np.testing.assert_array_equal(keep.value, ignore.value)
    np.testing.assert_allclose(keep.value, _naive(q, k, v, mask[None, None], 1 / math.sqrt(2)))
    assert (keep.value[0, 0, 1] == 0).all() and keep.weights is not None
    assert (keep.weights[0, 0, 1] == 0).all()
    nan = ref_mod.attention(
        q, k, v, attn_mask=mask, conventions=Conventions(fully_masked_row="nan")
    )
    assert np.isnan(nan.value[0, 0, 1]).all() and not np.isnan(nan.value[0, 0, [0, 2]]).any()
    fill = ref_mod.attention(q, k, v, attn_mask=mask, conventions=Conventions(mask_fill=-1e9))
    np.testing.assert_allclose(fill.value[0, 0, 1], v[0, 0].mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(fill.value[0, 0, [0, 2]], keep.value[0, 0, [0, 2]], rtol=1e-14)


def test_float_mask_is_added_and_neginf_masks() -> None:
    q, k, v = _qkv()
    bias = RNG.standard_normal((3, 4))
    bias[2] = -np.inf
    ref = ref_mod.attention(q, k, v, attn_mask=bias)
    s = np.einsum("...qe,...ke->...qk", q, k) / math.sqrt(2) + bias
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    np.testing.assert_allclose(ref.value[0, 0, :2], (p @ v)[0, 0, :2], rtol=1e-13)
    assert (ref.value[0, 0, 2] == 0).all()


def test_mask_and_causal_both_apply() -> None:
    q, k, v = _qkv(lq=4, lk=4)
    mask = np.ones((4, 4), bool)
    mask[:, 0] = False
    both = ref_mod.attention(q, k, v, attn_mask=mask, is_causal=True)
    keep = mask & np.tri(4, dtype=bool)
    np.testing.assert_allclose(both.value, _naive(q, k, v, keep[None, None], 1 / math.sqrt(2)))
    assert (both.value[0, 0, 0] == 0).all()  # query 0 sees only key 0, which the mask removes


@pytest.mark.parametrize("mapping", ["interleave", "tile"])
def test_gqa_head_maps(mapping: str) -> None:
    q, k, v = _qkv(hq=6, hkv=2)
    ref = ref_mod.attention(
        q,
        k,
        v,
        enable_gqa=True,
        conventions=Conventions(gqa_mapping=mapping),  # type: ignore[arg-type]
    )
    for h in range(6):
        kv = h // 3 if mapping == "interleave" else h % 2
        expected = ref_mod.attention(q[:, h : h + 1], k[:, kv : kv + 1], v[:, kv : kv + 1]).value
        np.testing.assert_allclose(ref.value[:, h : h + 1], expected, rtol=1e-14)
    with pytest.raises(ValueError, match="enable_gqa"):
        ref_mod.attention(q, k, v)
    with pytest.raises(ValueError, match="multiple"):
        ref_mod.attention(q[:, :5], k, v, enable_gqa=True)


def test_softcap_bounds_scores() -> None:
    q, k, v = _qkv()
    q = q * 100
    capped = ref_mod.attention(q, k, v, softcap=1.0, scale=1.0)
    s = 1.0 * np.tanh(np.einsum("...qe,...ke->...qk", q, k))
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(capped.value, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-13)


def test_layer_norm_variants_hand_computed() -> None:
    x = np.array([1.0, 2.0, 3.0, 6.0])  # mean 3, biased var 3.5, unbiased 14/3
    d = x - 3.0
    ref = ref_mod.layer_norm(x, 4, eps=0.5)
    np.testing.assert_allclose(ref.value, d / 2.0, rtol=1e-15)
    unb = ref_mod.layer_norm(x, 4, eps=0.0, conventions=Conventions(layer_norm_variance="unbiased"))
    np.testing.assert_allclose(unb.value, d / math.sqrt(14 / 3), rtol=1e-15)
    std = ref_mod.layer_norm(x, 4, eps=0.25, conventions=Conventions(layer_norm_eps="added_to_std"))
    np.testing.assert_allclose(std.value, d / (math.sqrt(3.5) + 0.25), rtol=1e-15)
    w, b = np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.0, 1.0, 0.0, -1.0])
    wb = ref_mod.layer_norm(x, (4,), w, b, eps=0.5)
    np.testing.assert_allclose(wb.value, d / 2.0 * w + b, rtol=1e-15)
    # abs reference: (|x - mu| + mean|x|) / sigma * |w| + |b|
    np.testing.assert_allclose(wb.abs_value, (np.abs(d) + 3.0) / 2.0 * np.abs(w) + np.abs(b))


def test_layer_norm_multi_dim_shape() -> None:
    x = RNG.standard_normal((3, 4, 5))
    ref = ref_mod.layer_norm(x, (4, 5), eps=0.0)
    flat = ref_mod.layer_norm(x.reshape(3, 20), 20, eps=0.0)
    np.testing.assert_allclose(ref.value.reshape(3, 20), flat.value, rtol=1e-14)


def test_rms_norm_variants_and_default_eps() -> None:
    x = np.array([3.0, 4.0])  # mean square 12.5
    np.testing.assert_allclose(ref_mod.rms_norm(x, 2, eps=0.0).value, x / math.sqrt(12.5))
    added = ref_mod.rms_norm(x, 2, eps=0.5, conventions=Conventions(rms_norm_eps="added_to_rms"))
    np.testing.assert_allclose(added.value, x / (math.sqrt(12.5) + 0.5))
    w = np.array([0.5, -1.0])
    gemma = ref_mod.rms_norm(
        x, 2, w, eps=0.0, conventions=Conventions(rms_norm_weight="one_plus_w")
    )
    np.testing.assert_allclose(gemma.value, x / math.sqrt(12.5) * (1 + w))
    assert ref_mod.rms_norm(x, 2, dtype="float16").terms["eps"] == 2.0**-10
    assert ref_mod.rms_norm(x, 2, dtype="bfloat16").terms["eps"] == 2.0**-7
    opmath = Conventions(rms_norm_default_eps="opmath")
    assert ref_mod.rms_norm(x, 2, dtype="bfloat16", conventions=opmath).terms["eps"] == 2.0**-23
    assert ref_mod.rms_norm(x, 2, dtype="float64", conventions=opmath).terms["eps"] == 2.0**-52


def test_compute_dispatch_matches_functions() -> None:
    x = RNG.standard_normal((2, 6))
    a = compute("rms_norm", {"x": x, "normalized_shape": 6, "eps": None}, dtype="float32")
    np.testing.assert_array_equal(a.value, ref_mod.rms_norm(x, 6, dtype="float32").value)
    assert compute("softmax", {"x": x, "dim": 0}, conventions=CANONICAL).value.shape == (
        2,
        6,
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: compute("gelu", {}), "unknown component"),
        (lambda: compute("softmax", {"y": 1}), "unknown argument"),
        (lambda: compute("attention", {"q": np.ones((2, 2))}), "missing"),
        (lambda: ref_mod.softmax(np.ones(3), dim=1), "out of range"),
        (lambda: ref_mod.attention(np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4))), "head dims"),
        (
            lambda: ref_mod.attention(
                np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), scale=np.inf
            ),
            "finite",
        ),
        (
            lambda: ref_mod.attention(
                np.ones((2, 2)), np.ones((3, 2)), np.ones((3, 2)), attn_mask=np.ones((2, 2), bool)
            ),
            "broadcast",
        ),
        (
            lambda: ref_mod.attention(
                np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), softcap=0.0
            ),
            "softcap",
        ),
        (lambda: ref_mod.layer_norm(np.ones((2, 3)), 4), "normalized_shape"),
        (lambda: ref_mod.layer_norm(np.ones((2, 3)), 3, weight=np.ones(2)), "weight"),
        (lambda: ref_mod.layer_norm(np.ones((2, 3)), 3, eps=-1.0), "eps"),
        (lambda: ref_mod.rms_norm(np.ones((2, 3)), 3, dtype="int8"), "dtype"),
    ],
)
def test_bad_arguments_raise_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        ref_mod.softmax("abc")
    with pytest.raises(TypeError):
        ref_mod.attention(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), is_causal="yes")
    with pytest.raises(TypeError):
        ref_mod.softmax(np.ones(3), conventions={"bool_mask": "keep"})  # type: ignore[arg-type]
