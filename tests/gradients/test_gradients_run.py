"""The backward properties in a run: opt-in (``--gradients``, ``gradients=True``, or named),
reported as properties of their own in the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import plan


def test_a_run_includes_the_backward_properties_on_request_only() -> None:
    adapter = NumpyAdapter()
    default = {c.prop.name for c in plan(adapter, components=["softmax"])}
    assert default and not any(n.startswith("grad_") for n in default)
    with_gradients = {c.prop.name for c in plan(adapter, components=["softmax"], gradients=True)}
    assert {"grad_equivalence_x", "grad_row_sum", "grad_linearity"} <= with_gradients
    assert default <= with_gradients
    named = {c.prop.name for c in plan(adapter, properties=["softmax.grad_row_sum"])}
    assert named == {"grad_row_sum"}


def test_transpec_check_gradients_reports_them_in_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transpec.cli import main

    argv = ["check", "numpy", "--component", "softmax", "--max-examples", "2", "--quiet"]
    argv += ["--failures-dir", str(tmp_path)]
    assert main([*argv, "--gradients"]) == 0
    table = capsys.readouterr().out
    assert "grad_equivalence_x" in table and "grad_linearity" in table
    assert main(argv) == 0
    assert "grad_" not in capsys.readouterr().out


def test_an_adapter_without_gradients_is_skipped_with_the_reason() -> None:
    from transpec.adapters.base import FunctionAdapter
    from transpec.runs import run

    def softmax(x, dim=-1):  # type: ignore[no-untyped-def]
        return NumpyAdapter().softmax(x, dim)

    result = run(
        FunctionAdapter(softmax, component="softmax"),
        properties=["grad_equivalence_x"],
        components=["softmax"],
        dtypes=["float64"],
        failures_dir=None,
        max_examples=2,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "skipped" and "gradients" in verdict.message


def test_a_bare_torch_function_is_differentiated_by_autograd() -> None:
    """FunctionAdapter with a torch base: the function itself goes through torch.autograd."""
    torch = pytest.importorskip("torch")
    from transpec.adapters.base import FunctionAdapter
    from transpec.adapters.torch.adapter import TorchAdapter
    from transpec.runs import run

    def softmax(x, dim=-1):  # type: ignore[no-untyped-def]
        return torch.softmax(x, dim=dim)

    def no_d_term(x, dim=-1):  # type: ignore[no-untyped-def]
        class Wrong(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):  # type: ignore[no-untyped-def]
                p = torch.softmax(t, dim=dim)
                ctx.save_for_backward(p)
                return p

            @staticmethod
            def backward(ctx, g):  # type: ignore[no-untyped-def]
                (p,) = ctx.saved_tensors
                return p * g

        return Wrong.apply(x)

    def verdicts(function):  # type: ignore[no-untyped-def]
        adapter = FunctionAdapter(function, component="softmax", base=TorchAdapter())
        assert adapter.provides_gradients("softmax")
        result = run(
            adapter,
            components=["softmax"],
            properties=["grad_equivalence_x"],
            dtypes=["float32"],
            failures_dir=None,
            max_examples=5,
        )
        return [v.status for v in result.verdicts]

    assert verdicts(softmax) == ["passed"]
    assert verdicts(no_d_term) == ["failed"]


def test_a_declared_finite_mask_fill_skips_the_attention_layers_backward_with_the_reason() -> None:
    # the layers' backward reference is derived for masked scores of -inf: under a finite fill
    # their gradient properties are skipped (named as transpec's limit), never judged wrongly
    from transpec.spec.conventions import Conventions

    adapter = NumpyAdapter()
    adapter.conventions = Conventions(mask_fill=-1e4)
    layers = ["multi_head_attention", "encoder_layer", "feed_forward"]
    cases = plan(adapter, components=layers, dtypes=["float32"], gradients=True)
    backward = [c for c in cases if c.prop.backward]
    skipped = {c.prop.component for c in backward if c.skip is not None}
    judged = {c.prop.component for c in backward if c.skip is None}
    assert skipped == {"multi_head_attention", "encoder_layer"}
    assert judged == {"feed_forward"}
    reasons = {c.skip for c in backward if c.skip is not None}
    assert all("derived for masked scores of -inf" in r and "-10000.0" in r for r in reasons)
    canonical = plan(NumpyAdapter(), components=layers, dtypes=["float32"], gradients=True)
    assert all(c.skip is None for c in canonical if c.prop.backward)
