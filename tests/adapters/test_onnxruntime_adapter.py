"""The onnxruntime built-in adapter: its operators pass where ONNX Runtime is right, its
declarations are needed (scalar_attributes, per-component dtypes, rejected inputs), and the
shipped known-failures file makes the gate pass on the pinned version (docs/findings.md)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from transpec.adapters.registry import load_adapter
from transpec.runs import run
from transpec.spec.conventions import CANONICAL


@pytest.fixture(scope="module")
def ort_adapter():  # type: ignore[no-untyped-def]
    return load_adapter("onnxruntime")


def test_declarations(ort_adapter) -> None:  # type: ignore[no-untyped-def]
    assert ort_adapter.conventions == CANONICAL.replace(scalar_attributes="float32")
    assert ort_adapter.component_dtypes("softmax") == ("float64", "float32", "float16")
    assert "bfloat16" in ort_adapter.component_dtypes("layer_norm")
    assert ort_adapter.component_dtypes("rotary_embedding") == ("float32", "float16")
    assert "onnxruntime 1." in ort_adapter.describe() and "opset 23" in ort_adapter.describe()
    q = np.zeros((1, 1, 2, 4))
    assert "scale <= 0" in ort_adapter.supports(
        "attention", {"q": q, "scale": -1.0}, dtype="float32"
    )
    assert ort_adapter.supports("attention", {"q": q, "scale": -1.0}, dtype="float64") is None
    assert "4-D" in ort_adapter.supports("attention", {"q": q[0]}, dtype="float32")


def test_kernels_pass_and_sessions_are_cached(ort_adapter) -> None:  # type: ignore[no-untyped-def]
    options = {
        "components": ["softmax", "layer_norm", "rms_norm"],
        "properties": ["equivalence", "small_variance"],
        "max_examples": 8,
        "failures_dir": None,
        "seed": 3,
    }
    result = run(ort_adapter, **options)
    assert result.exit_code == 0, [v.report for v in result.failures]
    ran = [v for v in result.verdicts if v.status == "passed"]
    # 3 dtypes x (3 equivalence + 2 small_variance), and bfloat16 LayerNormalization's two
    assert len(ran) == 17
    sessions = len(ort_adapter._sessions)
    run(ort_adapter, **options)  # the same examples: every session comes from the cache
    assert len(ort_adapter._sessions) == sessions


def test_float32_attributes_are_needed(ort_adapter) -> None:  # type: ignore[no-untyped-def]
    """Judged with exact attributes, float64 LayerNorm with σ² near eps fails: ONNX rounds eps
    to float32."""
    ort_adapter.conventions = CANONICAL
    try:
        result = run(
            ort_adapter,
            components=["layer_norm"],
            properties=["small_variance"],
            dtypes=["float64"],
            failures_dir=None,
        )
    finally:
        ort_adapter.conventions = CANONICAL.replace(scalar_attributes="float32")
    assert result.exit_code == 1


@pytest.mark.slow
def test_attention_gate_passes_with_the_shipped_known_failures() -> None:
    from transpec.cli import main

    argv = ["check", "onnxruntime", "--component", "attention", "-q", "--failures-dir", "/tmp"]
    assert main([*argv, "--xfails", "onnxruntime-1.31-cpu"]) == 0


# -- bfloat16, declared per operator ------------------------------------------------------------

_BFLOAT16_OPS = {
    "softmax": ("Softmax", ["X"], {"axis": -1}),
    "layer_norm": ("LayerNormalization", ["X", "Scale"], {"axis": -1}),
    "rms_norm": ("RMSNormalization", ["X", "scale"], {"axis": -1}),
    "attention": ("Attention", ["Q", "K", "V"], {}),
    "rotary_embedding": ("RotaryEmbedding", ["X", "cos_cache", "sin_cache"], {}),
}


@pytest.mark.parametrize("component", sorted(_BFLOAT16_OPS))
def test_bfloat16_is_declared_where_the_cpu_provider_has_a_kernel(ort_adapter, component) -> None:  # type: ignore[no-untyped-def]
    """The declaration follows the provider: a bfloat16 session of each operator is made, and
    it is refused (NOT_IMPLEMENTED) exactly where bfloat16 is not declared."""
    op, names, attributes = _BFLOAT16_OPS[component]
    inputs = tuple((name, "bfloat16") for name in names)
    try:
        ort_adapter._session(op, inputs, "bfloat16", attributes)
        made = True
    except Exception as exc:
        assert "NOT_IMPLEMENTED" in str(exc), exc
        made = False
    assert made == ("bfloat16" in ort_adapter.component_dtypes(component))


def test_bfloat16_run_skips_the_operators_without_a_kernel(ort_adapter) -> None:  # type: ignore[no-untyped-def]
    """``transpec check onnxruntime --dtype bfloat16``: LayerNormalization runs, the operators
    without a bfloat16 kernel are skipped with the reason, and the run exits 0."""
    result = run(
        ort_adapter,
        properties=["equivalence"],
        dtypes=["bfloat16"],
        max_examples=6,
        failures_dir=None,
    )
    status = {v.name: (v.status, v.message) for v in result.verdicts}
    assert result.exit_code == 0, status
    assert status["layer_norm.equivalence[bfloat16-cpu]"][0] == "passed"
    for component in ("softmax", "rms_norm", "attention", "rotary_embedding"):
        kind, message = status[f"{component}.equivalence[bfloat16-cpu]"]
        assert kind == "skipped" and f"does not declare bfloat16 for {component}" in message


# -- RotaryEmbedding ----------------------------------------------------------------------------


def _rotary_verdicts(adapter, properties=("equivalence", "position_offset")) -> set[str]:  # type: ignore[no-untyped-def]
    result = run(
        adapter,
        components=["rotary_embedding"],
        properties=list(properties),
        max_examples=8,
        failures_dir=None,
    )
    return {v.status for v in result.verdicts}


def test_rotary_embedding_passes_in_float32_and_float16(ort_adapter) -> None:  # type: ignore[no-untyped-def]
    result = run(ort_adapter, components=["rotary_embedding"], max_examples=8, failures_dir=None)
    status = {v.name: v.status for v in result.verdicts}
    assert result.exit_code == 0, [v.report for v in result.failures]
    assert status["rotary_embedding.equivalence[float16-cpu]"] == "passed"
    assert status["rotary_embedding.equivalence[float64-cpu]"] == "skipped"  # no float64 kernel


def test_rotary_interleaved_attribute_is_the_interleaved_pairing() -> None:
    """``interleaved=1`` pairs (x_2i, x_2i+1): it passes declared ``rope_pairing="interleaved"``
    and fails under the canonical half split, as the default ``interleaved=0`` fails declared
    interleaved."""
    from transpec.adapters.onnxruntime.adapter import OnnxRuntimeAdapter

    class Interleaved(OnnxRuntimeAdapter):
        def _run(self, op, feeds, dtype, attributes):  # type: ignore[no-untyped-def]
            if op == "RotaryEmbedding":
                attributes = dict(attributes, interleaved=1)
            return super()._run(op, feeds, dtype, attributes)

    interleaved = Interleaved()
    assert _rotary_verdicts(interleaved, ["equivalence"]) == {"failed", "skipped"}
    interleaved.conventions = interleaved.conventions.replace(rope_pairing="interleaved")
    assert _rotary_verdicts(interleaved, ["equivalence"]) == {"passed", "skipped"}
    default = OnnxRuntimeAdapter()
    default.conventions = default.conventions.replace(rope_pairing="interleaved")
    assert _rotary_verdicts(default, ["equivalence"]) == {"failed", "skipped"}
