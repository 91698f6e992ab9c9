"""The transformers built-in adapters: Hugging Face's attention functions, RMSNorm modules and
rotary embedding pass where the library is right; the declarations they rest on (an added
finite mask fill, the decode causal rule, Gemma's (1 + w) weight, softcap) are each needed and
a wrong one fails; the shipped known-failures files make the gates pass (docs/findings.md)."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from transpec.adapters.registry import load_adapter
from transpec.runs import run
from transpec.spec.conventions import Conventions


def _run(adapter: Any, component: str, properties: list[str], dtypes: list[str], **kw: Any) -> Any:
    return run(
        adapter,
        components=[component],
        properties=properties,
        dtypes=dtypes,
        failures_dir=None,
        seed=kw.pop("seed", 5),
        **kw,
    )


def _with(adapter: Any, conventions: Conventions, *args: Any, **kw: Any) -> Any:
    declared = adapter.conventions
    adapter.conventions = conventions
    try:
        return _run(adapter, *args, **kw)
    finally:
        adapter.conventions = declared


@pytest.fixture(scope="module")
def llama() -> Any:
    return load_adapter("transformers")


@pytest.fixture(scope="module")
def gemma() -> Any:
    return load_adapter("transformers-gemma")


def test_declarations(llama: Any, gemma: Any) -> None:
    assert llama.conventions.causal_alignment == "top_left_decode_all"
    assert gemma.conventions.mask_fill == "finfo_min"
    assert gemma.conventions.mask_fill_mode == "add"
    assert gemma.conventions.rms_norm_weight == "one_plus_w"
    assert "transformers 5." in llama.describe()
    assert "4-D" in llama.supports("attention", {"q": [[0.0]]})


def test_blocks_pass_in_float32_and_half(llama: Any, gemma: Any) -> None:
    for adapter, components in (
        (llama, ["attention", "rms_norm", "rotary_embedding"]),
        (gemma, ["attention", "rms_norm"]),
    ):
        result = run(
            adapter,
            components=components,
            properties=["equivalence", "softcap", "fully_masked_rows", "causality"],
            dtypes=["float32", "float16"],
            max_examples=10,
            failures_dir=None,
            seed=5,
        )
        assert result.exit_code == 0, [v.report for v in result.failures]


def test_added_fill_is_needed(gemma: Any) -> None:
    """Eager attention adds finfo(dtype).min: declared, a fully masked row passes; undeclared
    (-inf: a 0 row), it fails; declared as replacing (a uniform row), float16 fails, where the
    sum rounds to a multiple of 32 or overflows."""
    args = ("attention", ["fully_masked_rows"])
    assert _run(gemma, *args, ["float32", "float16"]).exit_code == 0
    canonical = Conventions(fully_masked_row="nan", rms_norm_weight="one_plus_w")
    assert _with(gemma, canonical, *args, ["float32"]).exit_code == 1
    replacing = gemma.conventions.replace(mask_fill_mode="replace")
    assert _with(gemma, replacing, *args, ["float16"]).exit_code == 1


def test_decode_rule_is_needed(llama: Any) -> None:
    """sdpa_attention_forward lets one query see every key: declared it passes; top-left (one
    query sees key 0) and bottom-right (Lq > 1 against a longer cache) both fail."""
    args = ("attention", ["equivalence", "causality"], ["float32"])
    assert _run(llama, *args, max_examples=30).exit_code == 0
    for alignment in ("top_left", "bottom_right"):
        wrong = llama.conventions.replace(causal_alignment=alignment)
        assert _with(llama, wrong, *args, max_examples=30).exit_code == 1, alignment


def test_gemma_weight_is_needed(gemma: Any) -> None:
    args = ("rms_norm", ["equivalence"], ["float32"])
    assert _run(gemma, *args).exit_code == 0
    assert _with(gemma, gemma.conventions.replace(rms_norm_weight="w"), *args).exit_code == 1


def test_bert_self_attention_is_multi_head_attention(llama: Any) -> None:
    """BertSelfAttention + BertSelfOutput.dense pass as nn.MultiheadAttention's output on self
    attention with boolean masks; anything else is rejected by design, never failed."""
    result = _run(llama, "multi_head_attention", ["equivalence"], ["float32", "bfloat16"])
    assert result.exit_code == 0, [v.report for v in result.failures]
    assert all(v.examples > 0 for v in result.verdicts)
    import numpy as np

    q = np.zeros((2, 3, 4))
    assert "one sequence" in llama.supports(
        "multi_head_attention", {"query": q, "key": q + 1, "value": q + 1}
    )


def test_softcap_is_passed_where_the_function_takes_it(llama: Any, gemma: Any) -> None:
    assert _run(gemma, "attention", ["softcap"], ["float32"]).exit_code == 0
    skipped = _run(llama, "attention", ["softcap"], ["float32"])
    assert [v.status for v in skipped.verdicts] == ["skipped"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["transformers", "transformers-gemma"])
def test_gate_passes_with_the_shipped_known_failures(name: str) -> None:
    from transpec.cli import main

    argv = ["check", name, "-q", "--isolation", "none", "--failures-dir", "/tmp"]
    assert main([*argv, "--xfails", f"{name}-5.24-cpu"]) == 0
