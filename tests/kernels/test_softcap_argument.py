"""softcap in the attention signature: passed only when a property draws it, to a method that
takes it; judged against the reference (softcap before the mask); a method without it is
skipped with the reason, and one that ignores it fails."""

from __future__ import annotations

from typing import Any

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import run


class IgnoresSoftcap(NumpyAdapter):
    name = "ignores-softcap"

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        softcap: float | None = None,
    ) -> Any:
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


class WithoutSoftcap(NumpyAdapter):
    name = "without-softcap"

    def scaled_dot_product_attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        attn_mask: Any = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Any:
        return super().scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal, scale, enable_gqa
        )


def _softcap(adapter: Any) -> Any:
    return run(
        adapter,
        components=["attention"],
        properties=["softcap", "equivalence"],
        dtypes=["float64", "float32"],
        failures_dir=None,
        seed=2,
    )


def test_numpy_softcap_passes() -> None:
    result = _softcap(NumpyAdapter())
    assert result.exit_code == 0, [v.report for v in result.failures]


def test_ignored_softcap_fails() -> None:
    result = _softcap(IgnoresSoftcap())
    failed = {v.property for v in result.failures}
    assert failed == {"softcap"}


def test_method_without_softcap_is_skipped_and_judged_on_the_rest() -> None:
    result = _softcap(WithoutSoftcap())
    status = {(v.property, v.status) for v in result.verdicts}
    assert status == {("softcap", "skipped"), ("equivalence", "passed")}
    assert all("takes no softcap" in v.message for v in result.verdicts if v.status == "skipped")
