"""Convention values per dtype, the ``finfo_min`` rule and the declared default eps.

Flax and Equinox fill masked scores with ``finfo(dtype).min``; a kernel that writes ``-1e9``
gets a finite fill in float32 and -inf in float16 (the constant overflows); libraries default
RMSNorm's eps to 1e-6, 1e-5 or 1e-7. Each needs-it implementation passes with its declaration,
fails without it, and fails under a wrong one; malformed declarations are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Adapter, Precision, validate_adapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.errors import AdapterDeclarationError
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.kernels import reference as ref_mod
from transpec.spec.conventions import Conventions, PerDtype, describe


def _attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attn_mask: np.ndarray | None,
    is_causal: bool,
    scale: float | None,
    fill: Any,
) -> np.ndarray:
    """Attention in float32 (float64 for float64 inputs) whose masked scores are ``fill`` (a
    number of the input dtype, possibly -inf); a row with no finite score (masked under a -inf
    fill, or additive -inf everywhere) is 0/0 = NaN."""
    work = np.float64 if q.dtype == np.float64 else np.float32
    qw, kw, vw = q.astype(work), k.astype(work), v.astype(work)
    s_val = 1.0 / np.sqrt(qw.shape[-1]) if scale is None else float(scale)
    scores = np.matmul(qw, np.swapaxes(kw, -1, -2)) * work(s_val)
    lq, lk = scores.shape[-2:]
    visible = np.ones(scores.shape, dtype=bool)
    if is_causal:
        visible &= np.tril(np.ones((lq, lk), dtype=bool))
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            visible &= attn_mask
        else:
            scores = scores + attn_mask.astype(work)
    scores = np.where(visible, scores, np.asarray(fill).astype(work))
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(scores, axis=-1, keepdims=True)
        p = np.exp(scores - m)
        p = p / np.sum(p, axis=-1, keepdims=True)
    return np.asarray(np.matmul(p, vw).astype(q.dtype))


class FillAttention(Adapter):
    """Attention with masked scores replaced by ``fill(dtype)``."""

    name = "fill-attention"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    supports_gqa = False

    def __init__(self, fill: Callable[[np.dtype], Any], conventions: Conventions) -> None:
        self._fill = fill
        self.conventions = conventions

    def precision(self, component: str, dtype: str) -> Precision:
        work = "float64" if dtype == "float64" else "float32"
        return Precision(work, work)

    def scaled_dot_product_attention(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        attn_mask: np.ndarray | None = None,
        is_causal: bool = False,
        scale: float | None = None,
    ) -> np.ndarray:
        with np.errstate(over="ignore"):
            fill = np.asarray(self._fill(q.dtype)).astype(q.dtype)
        return _attention(q, k, v, attn_mask, is_causal, scale, fill)


def finfo_min(dtype: np.dtype) -> Any:
    import ml_dtypes

    return ml_dtypes.finfo(dtype).min


def minus_1e9(dtype: np.dtype) -> Any:
    return -1e9  # -inf once cast to float16: a finite fill in float32/64 and bfloat16 only


FINFO = Conventions(mask_fill="finfo_min", fully_masked_row="nan")
PER_DTYPE_1E9 = Conventions(
    mask_fill={"float64": -1e9, "float32": -1e9, "bfloat16": -1e9, "float16": None},
    fully_masked_row="nan",
)


@pytest.mark.parametrize(
    ("fill", "conventions", "dtype"),
    [
        (finfo_min, FINFO, "float32"),
        (finfo_min, FINFO, "float16"),
        (finfo_min, FINFO, "bfloat16"),
        (minus_1e9, PER_DTYPE_1E9, "float32"),
        (minus_1e9, PER_DTYPE_1E9, "float16"),
    ],
)
@pytest.mark.parametrize("prop", ["fully_masked_rows", "equivalence"])
def test_declared_fill_passes(
    accepts: Callable[..., float],
    fill: Callable[[np.dtype], Any],
    conventions: Conventions,
    dtype: str,
    prop: str,
) -> None:
    assert accepts("attention", prop, FillAttention(fill, conventions), dtype, examples=12) <= 1


@pytest.mark.parametrize(
    ("fill", "conventions", "dtype"),
    [
        (finfo_min, Conventions(fully_masked_row="nan"), "float16"),  # undeclared: NaN rows
        (finfo_min, Conventions(mask_fill=None, fully_masked_row="nan"), "float32"),
        (minus_1e9, Conventions(mask_fill=-1e9), "float16"),  # one fill for every dtype
        (minus_1e9, Conventions(fully_masked_row="nan"), "float32"),
        (minus_1e9, PER_DTYPE_1E9.replace(fully_masked_row="zero"), "float16"),
    ],
)
def test_undeclared_or_wrong_fill_fails(
    rejects: Callable[..., BaseException],
    fill: Callable[[np.dtype], Any],
    conventions: Conventions,
    dtype: str,
) -> None:
    error = rejects("attention", "fully_masked_rows", FillAttention(fill, conventions), dtype, 12)
    assert "fully_masked_rows" in str(error)


def test_finfo_min_resolves_per_dtype() -> None:
    assert FINFO.for_dtype("float16").mask_fill == -65504.0
    assert FINFO.for_dtype("float32").mask_fill == float(np.finfo(np.float32).min)
    assert FINFO.for_dtype("bfloat16").mask_fill == -float.fromhex("0x1.fep127")
    assert FINFO.for_dtype("float64").mask_fill == float(np.finfo(np.float64).min)
    assert PER_DTYPE_1E9.for_dtype("float16").mask_fill is None
    assert Conventions().for_dtype("float16") == Conventions()


def test_a_per_dtype_value_survives_a_case_file_round_trip() -> None:
    conv = Conventions(mask_fill={"float16": -1e4, "float32": -1e9}, rms_norm_default_eps=1e-6)
    assert isinstance(conv.mask_fill, PerDtype)
    data = conv.to_dict()
    assert data["mask_fill"] == {"float16": -1e4, "float32": -1e9}
    assert type(data["mask_fill"]) is dict
    assert Conventions.from_dict(data) == conv
    assert hash(conv) == hash(Conventions.from_dict(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_fill": {"fp8": -1.0}}, "convention mask_fill: 'fp8' is not a dtype name"),
        ({"mask_fill": {"float16": float("inf")}}, "must be finite.*\\(for float16\\)"),
        ({"mask_fill": {}}, "needs at least one dtype"),
        ({"mask_fill": {"float16": {"float16": 1.0}}}, "cannot be nested"),
        ({"mask_fill": "finfo_max"}, "mask_fill='finfo_max' must be finite"),
        ({"bool_mask": {"float16": "drop"}}, "bool_mask='drop' is not one of"),
        ({"bool_mask": "finfo_min"}, "bool_mask='finfo_min' is not one of"),
        ({"rms_norm_default_eps": -1e-6}, "is not 'dtype', 'opmath' or a finite number > 0"),
        ({"rms_norm_default_eps": float("nan")}, "finite number > 0"),
        ({"rms_norm_default_eps": True}, "finite number > 0"),
        ({"rms_norm_default_eps": "1e-6"}, "finite number > 0"),
    ],
)
def test_malformed_values_are_refused_in_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Conventions(**changes)
    assert "\n" not in str(info.value)


def test_a_mapping_without_a_tested_dtype_is_refused_before_the_run() -> None:
    adapter = FillAttention(minus_1e9, Conventions(mask_fill={"float32": -1e9}))
    with pytest.raises(AdapterDeclarationError, match="mask_fill has no value for float64"):
        validate_adapter(adapter)
    adapter.dtypes = ("float32",)
    validate_adapter(adapter)


def test_list_conventions_shows_the_rules_and_mappings() -> None:
    from transpec.cli import _list_lines

    rows = {name: allowed for name, _, allowed in describe()}
    assert any("finfo_min" in str(a) for a in rows["mask_fill"])
    assert "a number > 0" in rows["rms_norm_default_eps"]
    text = "\n".join(_list_lines("conventions"))
    assert "finfo_min" in text and "per-dtype mapping" in text


# -- the default eps --------------------------------------------------------------------------


class RMSNormDefaultEps(NumpyAdapter):
    """RMSNorm whose eps=None means ``default`` (a library's default)."""

    name = "rms-norm-default-eps"

    def __init__(self, default: float, conventions: Conventions) -> None:
        self._default = default
        self.conventions = conventions

    def rms_norm(
        self, x: np.ndarray, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> np.ndarray:
        return super().rms_norm(x, normalized_shape, weight, self._default if eps is None else eps)


def test_default_eps_resolves() -> None:
    conv = Conventions(rms_norm_default_eps={"float32": 1e-6, "float16": 1e-5})
    assert ref_mod.rms_norm_eps(None, "float32", conv) == 1e-6
    assert ref_mod.rms_norm_eps(None, "float16", conv) == 1e-5
    assert ref_mod.rms_norm_eps(1e-3, "float16", conv) == 1e-3
    assert ref_mod.rms_norm_eps(None, "float32", Conventions()) == 2.0**-23


def _small_rows(dtype: str, eps: float | None) -> dict[str, Any]:
    """16 rows of 64 features with mean(x²) = 1e-6: eps = 1e-6, 1e-5 or 1e-7 changes y by
    ~30 %, ~70 % or ~5 %."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 64))
    x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) * 1e-3
    return {"x": x, "normalized_shape": (64,), "weight": None, "eps": eps}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_declared_default_eps_passes(dtype: str) -> None:
    adapter = RMSNormDefaultEps(1e-6, Conventions(rms_norm_default_eps=1e-6))
    adapter.dtypes = (dtype,)
    harness = Harness(adapter, dtype)
    for eps in (None, 1e-5):
        assert harness.assert_equivalent(harness.call("rms_norm", _small_rows(dtype, eps))) <= 1


@pytest.mark.parametrize(
    ("conventions", "dtype"),
    [
        (Conventions(), "float64"),  # undeclared: eps=None read as 2u = 2.2e-16
        (Conventions(rms_norm_default_eps="opmath"), "float16"),  # 2.4e-7 for float16
        (Conventions(rms_norm_default_eps=1e-5), "float32"),  # another library's default
        (Conventions(rms_norm_default_eps={"float32": 1e-6, "float16": 1e-7}), "float16"),
    ],
)
def test_undeclared_or_wrong_default_eps_fails(conventions: Conventions, dtype: str) -> None:
    harness = Harness(RMSNormDefaultEps(1e-6, conventions), dtype)
    with pytest.raises(PropertyViolation, match="out of tolerance"):
        harness.assert_equivalent(harness.call("rms_norm", _small_rows(dtype, None)))
