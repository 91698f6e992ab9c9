"""Properties follow the adapter's declared conventions: a declared variant conforms, the same
behaviour undeclared (or another behaviour declared) fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.spec.conventions import Conventions

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


class BottomRight(NumpyAdapter):
    """Causal mask anchored bottom-right (FlashAttention >= 2.1, KV-cache decode)."""

    name = "bottom-right"
    conventions = Conventions(causal_alignment="bottom_right")

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        if is_causal:
            lq, lk = q.shape[-2], k.shape[-2]
            attn_mask = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)
        return super().scaled_dot_product_attention(q, k, v, attn_mask, False, scale, enable_gqa)


class TopLeftDeclaredBottomRight(NumpyAdapter):
    name = "top-left-declared-bottom-right"
    conventions = Conventions(causal_alignment="bottom_right")


class NaNRows(NumpyAdapter):
    """A naive softmax: fully masked rows are NaN (nn.MultiheadAttention)."""

    name = "nan-rows"
    conventions = Conventions(fully_masked_row="nan")

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        out = super().scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa)
        keep = np.ones((*out.shape[:-1], k.shape[-2]), dtype=bool)
        if attn_mask is not None:
            keep = keep & (attn_mask if attn_mask.dtype == np.bool_ else ~np.isneginf(attn_mask))
        if is_causal:
            keep = keep & np.tril(np.ones(keep.shape[-2:], dtype=bool))
        return np.where(keep.any(axis=-1, keepdims=True), out, np.nan).astype(out.dtype)


class ZeroRowsDeclaredNaN(NumpyAdapter):
    name = "zero-rows-declared-nan"
    conventions = Conventions(fully_masked_row="nan")


class FiniteFill(NumpyAdapter):
    """Masked scores replaced by -1e9 (the Annotated Transformer): a fully masked row is
    uniform, its output the mean of V."""

    name = "fill-1e9"
    conventions = Conventions(mask_fill=-1e9)

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
        if attn_mask is not None and attn_mask.dtype == np.bool_:
            s = np.where(attn_mask, s, s.dtype.type(-1e9))
        elif attn_mask is not None:
            s = s + attn_mask
        if is_causal:
            s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, s.dtype.type(-1e9))
        m = s.max(axis=-1, keepdims=True)
        p = np.exp(s - np.where(np.isneginf(m), 0, m))
        total = p.sum(axis=-1, keepdims=True)
        return ((p / np.where(total == 0, 1, total)) @ v).astype(q.dtype)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_declared_bottom_right_causality_conforms(dtype: str, accepts: Any) -> None:
    assert accepts("attention", "causality", BottomRight(), dtype, examples=10) <= 1.0
    assert accepts("attention", "equivalence", BottomRight(), dtype, examples=6) <= 1.0


def test_top_left_declared_bottom_right_fails_causality(rejects: Any) -> None:
    rejects("attention", "causality", TopLeftDeclaredBottomRight(), "float32")


def test_declared_nan_rows_conform(accepts: Any) -> None:
    assert accepts("attention", "fully_masked_rows", NaNRows(), "float32", examples=10) <= 1.0


def test_zero_rows_declared_nan_fail(rejects: Any) -> None:
    rejects("attention", "fully_masked_rows", ZeroRowsDeclaredNaN(), "float32")


def test_undeclared_finite_fill_fails_and_declared_conforms(accepts: Any, rejects: Any) -> None:
    assert accepts("attention", "fully_masked_rows", FiniteFill(), "float64", examples=10) <= 1
    assert accepts("attention", "causality", FiniteFill(), "float64", examples=6) <= 1

    class Undeclared(FiniteFill):
        conventions = Conventions()

    rejects("attention", "fully_masked_rows", Undeclared(), "float64")


class MildFill(FiniteFill):
    """A fill of -2: masked keys keep a visible weight, as declared."""

    name = "fill-2"
    conventions = Conventions(mask_fill=-2.0)

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        if attn_mask is not None and attn_mask.dtype == np.bool_:
            s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (
                q @ np.swapaxes(np.repeat(k, q.shape[1] // k.shape[1], axis=1), -1, -2)
            )
            attn_mask = np.where(attn_mask, 0.0, -2.0 - s).astype(q.dtype)  # score -> -2
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


def test_convex_hull_counts_keys_a_finite_fill_leaves_weighted(accepts: Any) -> None:
    assert accepts("attention", "convex_hull", MildFill(), "float64", examples=15) <= 1.0
