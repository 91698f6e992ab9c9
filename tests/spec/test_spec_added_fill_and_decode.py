"""The added fill (``mask_fill_mode="add"``) and the decode causal rule
(``causal_alignment="top_left_decode_all"``) in the exact SymPy evaluation, the generated
kernel and the oracle's float64 reference: all three agree, and each differs from the
convention it refines where it should (negative controls)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import transpec.oracle.kernels._kernels as kernels
from transpec.oracle.kernels.reference import attention
from transpec.spec.blocks import attention_exact
from transpec.spec.conventions import Conventions

ADDED = Conventions(mask_fill=-3.0, mask_fill_mode="add")
DECODE = Conventions(causal_alignment="top_left_decode_all")


def _inputs(lq: int, lk: int, seed: int) -> tuple[np.ndarray, ...]:
    r = np.random.default_rng(seed)
    q, k, v = (r.normal(size=(1, 2, n, 3)) for n in (lq, lk, lk))
    keep = r.random((lq, lk)) < 0.6
    keep[0, :] = False  # a fully masked query row
    return q, k, v, keep


def _three(conventions: Conventions, *args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, k, v, mask, causal = args
    exact, _ = attention_exact(q, k, v, mask, causal, conventions=conventions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        generated, _ = kernels.sdpa(q, k, v, mask, causal, conventions=conventions)
    reference = attention(q, k, v, mask, causal, conventions=conventions).value
    return exact, generated, np.asarray(reference)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 3), (3, 2)], ids=["Lq<Lk", "Lq>Lk"])
def test_added_fill_agrees_everywhere(shape: tuple[int, int], causal: bool) -> None:
    q, k, v, keep = _inputs(*shape, seed=shape[0] * 10 + causal)
    exact, generated, reference = _three(ADDED, q, k, v, keep, causal)
    np.testing.assert_allclose(generated, exact, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(reference, exact, rtol=1e-13, atol=1e-13)
    # the fully masked row: softmax of the scores plus the fill, i.e. of the scores themselves
    # (not causal: every key; causal: the keys the rule leaves), not the uniform mean of V
    replaced, _, _ = _three(ADDED.replace(mask_fill_mode="replace"), q, k, v, keep, causal)
    assert not np.allclose(exact[..., 0, :], replaced[..., 0, :])
    if not causal:
        plain, _ = attention_exact(q, k, v)
        np.testing.assert_allclose(exact[..., 0, :], plain[..., 0, :], rtol=1e-13)


@pytest.mark.parametrize("lk", [1, 2, 5])
def test_decode_rule_one_query_sees_every_key(lk: int) -> None:
    q, k, v, _ = _inputs(1, lk, seed=lk)
    exact, generated, reference = _three(DECODE, q, k, v, None, True)
    unmasked, _ = attention_exact(q, k, v)
    for got in (exact, generated, reference):
        np.testing.assert_allclose(got, unmasked, rtol=1e-13, atol=1e-13)
    top_left, _ = attention_exact(q, k, v, None, True)
    assert lk == 1 or not np.allclose(exact, top_left)


@pytest.mark.parametrize("shape", [(2, 5), (4, 3)])
def test_decode_rule_is_top_left_for_longer_queries(shape: tuple[int, int]) -> None:
    q, k, v, _ = _inputs(*shape, seed=sum(shape))
    exact, generated, reference = _three(DECODE, q, k, v, None, True)
    top_left, _ = attention_exact(q, k, v, None, True)
    for got in (exact, generated, reference):
        np.testing.assert_allclose(got, top_left, rtol=1e-13, atol=1e-13)


def test_added_fill_needs_a_finite_fill() -> None:
    with pytest.raises(ValueError, match="needs a finite mask_fill"):
        Conventions(mask_fill_mode="add")
    with pytest.raises(ValueError, match="not one of"):
        Conventions(mask_fill=-1.0, mask_fill_mode="plus")  # type: ignore[arg-type]
