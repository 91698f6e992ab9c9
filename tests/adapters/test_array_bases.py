"""Array bases convert and nothing else: a bare function on ``--base torch`` gets canonical
conventions, the default precision, no rejected inputs and one code path; what it computes is
declared with ``--convention key=value`` (validated, shown in the header)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec.adapters.arrays import ARRAY_BASES, NumpyArrays, load_array_base
from transpec.adapters.base import Adapter, FunctionAdapter, Precision
from transpec.cli import main
from transpec.errors import AdapterLoadError
from transpec.runs import run
from transpec.spec.conventions import CANONICAL, parse_assignment, with_assignments

HERE = Path(__file__).resolve().parent
RMS = ["--component", "rms_norm", "--property", "equivalence", "--dtype", "float16"]


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def test_bases_declare_only_conversion() -> None:
    torch = pytest.importorskip("torch")
    from bare_functions import torch_rms_norm

    base = load_array_base("torch")
    assert base.conventions == CANONICAL
    assert base.precision("attention", "float16") == Adapter().precision("attention", "float16")
    assert base.supports("attention", {}) is None and base.slow_path_adapter() is None
    wrapped = FunctionAdapter(torch_rms_norm, "rms_norm", base="torch")
    assert wrapped.conventions == CANONICAL and wrapped.base_name == "torch"
    assert wrapped.precision("rms_norm", "bfloat16") == Precision("float32", "bfloat16")
    assert wrapped.framework == "torch" and "bfloat16" in wrapped.dtypes
    assert isinstance(wrapped.to_native(np.ones(2), "float16", "cpu"), torch.Tensor)
    assert isinstance(FunctionAdapter(torch_rms_norm, "rms_norm")._base, NumpyArrays)
    assert set(ARRAY_BASES) >= {"numpy", "torch", "jax"}


def test_unknown_base_is_one_line() -> None:
    with pytest.raises(AdapterLoadError, match="unknown array base 'torch-math'; expected one of"):
        load_array_base("torch-math")


def test_a_function_on_the_torch_base_is_judged_by_canonical_conventions() -> None:
    """The issue's case: F.rms_norm's eps=None follows float32 in float16. Under the torch
    base that is a deviation to declare, and a function that follows the canonical eps passes;
    declaring the wrong convention for it fails."""
    pytest.importorskip("torch")
    from bare_functions import canonical_rms_norm, torch_rms_norm

    options = {
        "components": ["rms_norm"],
        "properties": ["equivalence"],
        "dtypes": ["float16"],
        "max_examples": 30,
        "failures_dir": None,
    }
    canonical = FunctionAdapter(canonical_rms_norm, "rms_norm", base="torch")
    assert run(canonical, **options).exit_code == 0
    as_torch = FunctionAdapter(torch_rms_norm, "rms_norm", base="torch")
    assert run(as_torch, **options).exit_code == 1  # undeclared: torch's opmath eps
    as_torch.conventions = CANONICAL.replace(rms_norm_default_eps="opmath")
    assert run(as_torch, **options).exit_code == 0  # declared
    canonical.conventions = CANONICAL.replace(rms_norm_default_eps="opmath")
    assert run(canonical, **options).exit_code == 1  # a wrong declaration fails


def test_convention_option_is_validated_and_shown(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    argv = ["check", "bare_functions:torch_rms_norm", *RMS, "--base", "torch", "-q"]
    argv += ["--max-examples", "30", "--failures-dir", "f"]
    assert main(argv) == 1
    capsys.readouterr()
    assert main([*argv, "--convention", "rms_norm_default_eps=opmath"]) == 0
    out = capsys.readouterr().out
    assert "conventions: rms_norm_default_eps='opmath'" in out
    for bad, needle in (
        ("rms_norm_default_eps", "is not key=value"),
        ("rms_norm_default_eps=float32", "rms_norm_default_eps='float32' is not 'dtype', 'opmath'"),
        ("rms_eps=dtype", "unknown convention 'rms_eps'"),
        ("mask_fill=lots", "expected a finite number or none"),
        ("mask_fill=inf", "must be finite"),
    ):
        assert main([*argv, "--convention", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (bad, err)
    assert main([*argv[:-2], "--base", "torch-math"]) == 2
    assert "unknown array base 'torch-math'" in capsys.readouterr().err


def test_parse_assignment_types_values() -> None:
    assert parse_assignment("mask_fill=-1e9") == ("mask_fill", -1e9)
    assert parse_assignment("mask_fill=None") == ("mask_fill", None)
    assert parse_assignment(" bool_mask = ignore ") == ("bool_mask", "ignore")
    assert with_assignments(CANONICAL, ["bool_mask=ignore", "bool_mask=keep"]) == CANONICAL


def test_flush_subnormals_needed_declared_and_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    """A softmax that flushes subnormal results fails without the declaration, passes with it,
    and fails when the declaration names another dtype: the floor widens for the declared
    formats only, to their smallest normal and no further."""
    argv = ["check", "bare_functions:flushing_softmax", "--component", "softmax"]
    argv += ["--property", "equivalence,large_logits", "--dtype", "float32,float16", "-q"]
    argv += ["--failures-dir", "f"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "got 0, expected" in out
    assert main([*argv, "--convention", "flush_subnormals=float32,float16"]) == 0
    assert "flush_subnormals=['float32', 'float16']" in capsys.readouterr().out
    assert main([*argv, "--convention", "flush_subnormals=float64,float16"]) == 1
    assert "FAILED softmax" in capsys.readouterr().out
    assert main([*argv, "--convention", "flush_subnormals=float8"]) == 2
    assert "'float8' is not one of" in capsys.readouterr().err


def test_the_flush_floor_is_the_smallest_normal() -> None:
    from transpec.adapters.base import Precision
    from transpec.oracle.engine.error_model import Flushing, eta, units

    plain = units("float32", Precision("float32", "float32"))
    flushed = units("float32", Flushing(Precision("float32", "float32"), ("float32",)))
    assert plain.eta_out == eta("float32") == 2.0**-150
    assert flushed.eta_out == flushed.eta_acc == 2.0**-126  # the smallest normal, no more
    other = units("float16", Flushing(Precision("float32", "float16"), ("float32",)))
    assert other.eta_acc == 2.0**-126 and other.eta_out == eta("float16")


@pytest.mark.slow
def test_a_jax_function_on_the_jax_base(capsys: pytest.CaptureFixture[str]) -> None:
    """jax.nn.softmax through --base jax: XLA on the CPU flushes float32 subnormals (declared
    here; docs/findings.md)."""
    pytest.importorskip("jax")
    argv = ["check", "bare_functions:jax_softmax", "--component", "softmax", "--base", "jax"]
    argv += ["--property", "equivalence", "--dtype", "float32", "--max-examples", "6", "-q"]
    argv += ["--convention", "flush_subnormals=float32", "--failures-dir", "f"]
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "flush_subnormals=['float32']" in out and "jax-arrays" not in out


def test_scalar_attributes_needed_declared_and_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    """A float64 LayerNorm whose eps is a float32 attribute: off by float32's rounding of eps
    where the variance is near eps, so it fails as exact and passes declared; a LayerNorm with
    the exact eps fails under the float32 declaration."""
    argv = ["check", "bare_functions:float32_eps_layer_norm", "--component", "layer_norm"]
    argv += ["--property", "small_variance", "--dtype", "float64", "-q", "--failures-dir", "f"]
    assert main(argv) == 1
    capsys.readouterr()
    assert main([*argv, "--convention", "scalar_attributes=float32"]) == 0
    capsys.readouterr()
    exact = ["check", "numpy", *argv[2:], "--convention", "scalar_attributes=float32"]
    assert main(exact) == 1
    capsys.readouterr()


def test_per_component_dtypes_skip_with_the_reason() -> None:
    from transpec.adapters.base import validate_adapter
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.errors import AdapterDeclarationError

    class NoFloat16Softmax(NumpyAdapter):
        def component_dtypes(self, component: str) -> tuple[str, ...] | None:
            return ("float64", "float32") if component == "softmax" else None

    options = {"components": ["softmax", "rms_norm"], "properties": ["shape_dtype"]}
    result = run(NoFloat16Softmax(), dtypes=["float16"], failures_dir=None, **options)
    status = {v.name: (v.status, v.message) for v in result.verdicts}
    assert status["softmax.shape_dtype[float16-cpu]"] == (
        "skipped",
        "adapter does not declare float16 for softmax",
    )
    assert status["rms_norm.shape_dtype[float16-cpu]"][0] == "passed"

    class Wrong(NumpyAdapter):
        def component_dtypes(self, component: str) -> Any:
            return "float32"

    with pytest.raises(AdapterDeclarationError, match=r"component_dtypes.*tuple of dtype names"):
        validate_adapter(Wrong())
