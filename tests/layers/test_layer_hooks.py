"""The layers' shared code calls each block's own functions through its record's hooks: every
layer declares them, and no module of the family switches on a component's name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

from transpec.adapters.base import Precision
from transpec.oracle import components
from transpec.oracle.layers import strategies as sl
from transpec.oracle.layers import tolerance as tl

ROOT = Path(__file__).resolve().parents[2]
LAYERS = components.names("layers")
HOOKS = ("forward", "derivation", "draw")
P64 = Precision("float64", "float64")


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_declares_its_hooks(name: str) -> None:
    record = components.get(name)
    # and, for a layer with a backward oracle, its gradient hooks (oracle/gradients/layers.py)
    gradient = {"vjp_reference", "vjp_rule", "gradient_properties"}
    assert set(record.hooks) - gradient == set(HOOKS)
    assert not record.gradients or gradient <= set(record.hooks)
    for hook in HOOKS:
        assert callable(record.hook(hook)), (name, hook)


def test_no_layer_module_switches_on_a_component_name() -> None:
    switch = re.compile(r"component (==|!=|in|not in) [\"(]|== (MHA|MHAW|FFN|ENC|DEC)\b")
    hits = [
        f"{p.relative_to(ROOT).as_posix()}:{n}"
        for p in sorted((ROOT / "oracle" / "layers").glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if switch.search(line)
    ]
    assert hits == []


@pytest.mark.parametrize("name", LAYERS)
def test_drawn_arguments_are_the_signature_and_have_a_reference(name: str) -> None:
    record = components.get(name)

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sl.layer_inputs(name, "float32"))
    def check(args: dict[str, object]) -> None:
        assert list(args) == list(record.argument_names)
        ref = tl.layer_reference(name, args)
        tol = tl.tolerance(name, ref, "float64", P64)
        assert tol.derivation.startswith(f"{name}: c·(")
        assert np.shape(tol.bound) == np.shape(ref.value)

    check()


def test_layer_inputs_reports_unknown_and_non_layer_components() -> None:
    with pytest.raises(components.UnknownComponentError, match="unknown component 'gelu'"):
        sl.layer_inputs("gelu", "float32")
    with pytest.raises(ValueError, match="unknown layer component 'softmax'"):
        sl.layer_inputs("softmax", "float32")


def test_the_decoder_derivation_names_both_fully_masked_row_readings() -> None:
    args = find(sl.layer_inputs("decoder_layer", "float32"), lambda a: True)
    sem = {"fully_masked_row": "nan", "cross_fully_masked_row": "zero"}
    ref = tl.layer_reference("decoder_layer", args, semantics=sem)
    tol = tl.tolerance("decoder_layer", ref, "float64", P64)
    assert "fully masked rows nan/zero (cross) (docs/tolerance.md" in tol.derivation
