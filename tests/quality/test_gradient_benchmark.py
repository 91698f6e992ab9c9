"""benchmarks/gradients.py: the calibration runs the layers on every adapter that provides their
gradients, judges every gradient of a layer call, and counts torch's reported LayerNorm
bias-sum finding apart only where it can show."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gradients.py"
    spec = importlib.util.spec_from_file_location("gradients_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _args(**kw: object) -> argparse.Namespace:
    base = {"cases": 0, "layer_cases": 0, "chunks": 1, "seed": 1, "only": ""}
    return argparse.Namespace(**{**base, **kw})


def test_layers_are_calibrated_on_every_adapter_that_provides_their_gradients() -> None:
    from transpec.adapters.registry import load_adapter

    bench = _bench()
    assert bench._jobs(_args()) == []  # no cases asked for: nothing runs
    jobs = bench._jobs(_args(layer_cases=7))
    for adapter in bench.ADAPTERS:
        loaded = load_adapter(adapter)
        for layer in bench.LAYERS:
            runs = {(j[1], j[2], j[3]) for j in jobs if j[0] == adapter and j[1] == layer}
            if loaded.provides_gradients(layer):
                assert runs == {(layer, d, 7) for d in loaded.dtypes}
            else:
                assert not runs
    assert any(j[0] == "torch" and j[1] == "encoder_layer" for j in jobs)
    assert not any(j[1] in bench.COMPONENTS for j in jobs)  # --cases 0: no kernel
    only = bench._jobs(_args(layer_cases=3, cases=8, only="torch:decoder_layer:float32"))
    assert [j[:4] for j in only] == [("torch", "decoder_layer", "float32", 3)]


def test_reported_finding_is_torch_layer_norm_bias_in_half_precision_only() -> None:
    bench = _bench()
    assert bench.reported("torch", "layer_norm", "bias", "float16")
    assert bench.reported("torch", "encoder_layer", "norm2.bias", "bfloat16")
    assert not bench.reported("torch", "encoder_layer", "norm2.weight", "bfloat16")
    assert not bench.reported("torch", "encoder_layer", "linear1.bias", "float16")
    assert not bench.reported("torch", "encoder_layer", "norm2.bias", "float32")
    assert not bench.reported("numpy", "layer_norm", "bias", "float16")
    assert not bench.reported("torch", "multi_head_attention", "in_proj_bias", "float16")


def test_a_layer_calibration_row_judges_every_gradient_of_each_call() -> None:
    bench = _bench()
    row = bench._calibrate(("torch", "encoder_layer", "float32", 3, 20261, {}))
    assert row.cases == 3 and row.false_alarms == 0
    assert len(row.ratios) == 3 and max(row.ratios) > 0.0


def test_layer_peers_differentiate_the_parameters_too() -> None:
    """The peers' table covers the layer entries: gradcheck (float64) runs over every input and
    parameter as the adapter's own vjp differentiates them, so a correct module passes and a
    module whose out-projection weight gradient is transposed is flagged, by transpec too."""
    bench = _bench()
    _, _, wheat = bench._peers_job(("multihead_attention_grad_torch", "float64", 2, 1))
    assert wheat["gradcheck"] and not any(wheat["gradcheck"])
    assert not any(wheat["transpec"])
    _, _, chaff = bench._peers_job(
        ("multihead_attention_grad_out_weight_transposed", "float64", 4, 2)
    )
    assert any(chaff["gradcheck"]) and any(chaff["transpec"])
