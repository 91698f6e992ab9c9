"""The component registry is complete: every registered component has everything a block needs.

In the spirit of an export check: a block that is registered but lacks its reference, its
tolerance, its strategy, a property, a NumPy or torch implementation, a derive page or a chaff in
the corpus fails here, by name, before a user meets the gap.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle import components
from transpec.oracle.catalogue import PROPERTIES
from transpec.oracle.engine.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
RECORDS = list(components.REGISTRY.values())
IDS = [r.name for r in RECORDS]


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_function_a_record_names_resolves(record: components.Component) -> None:
    for role in ("reference", "tolerance", "strategy", "properties"):
        assert callable(components._resolve(getattr(record, role))), (record.name, role)


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_component_has_properties_with_an_equivalence(
    record: components.Component,
) -> None:
    names = [p.name for p in record.property_list()]
    assert "equivalence" in names, record.name
    assert [p.id for p in PROPERTIES if p.component == record.name] == [
        f"{record.name}.{n}" for n in names
    ]


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_the_numpy_method_has_the_registered_signature(record: components.Component) -> None:
    method = getattr(NumpyAdapter, record.method, None)
    assert method is not None, f"NumpyAdapter has no {record.method}"
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    assert tuple(params) == record.argument_names


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_the_torch_adapter_provides_it(record: components.Component) -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    method = getattr(TorchAdapter, record.method, None)
    assert method is not None and TorchAdapter().provides(record.name)
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    # SDPA has no softcap: it is passed only when drawn, and attention.softcap, which always
    # draws it, is skipped for torch by the run's plan
    assert tuple(params) == tuple(n for n in record.argument_names if n != "softcap")


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_the_strategy_draws_arguments_the_harness_judges(record: components.Component) -> None:
    """One drawn example goes through the harness: reference, tolerance and comparison."""
    harness = Harness(NumpyAdapter(), "float32")

    @settings(max_examples=3, database=None, suppress_health_check=list(HealthCheck))
    @given(record.inputs("float32"))
    def check(args: dict) -> None:
        assert set(args) <= set(record.argument_names)
        call = harness.call(record.name, args)
        ratio = harness.assert_equivalent(call)
        assert np.isfinite(ratio) and ratio <= 1.0

    check()


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_component_has_a_derive_page(record: components.Component) -> None:
    from transpec.spec.derive import BLOCKS

    assert record.derive_page in BLOCKS


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_component_has_a_chaff_in_the_corpus(record: components.Component) -> None:
    pytest.importorskip("torch")
    import corpus

    chaffs = corpus.select(record.name, "chaff", backward=False)
    assert chaffs, f"no chaff of {record.name}'s forward in benchmarks/corpus"


def test_unknown_names_are_reported_by_the_registry_alone() -> None:
    with pytest.raises(components.UnknownComponentError, match="unknown component 'gelu'"):
        components.get("gelu")
    sources = [
        *ROOT.glob("oracle/**/*.py"),
        *ROOT.glob("adapters/**/*.py"),
        *ROOT.glob("transpec/*.py"),
    ]
    owners = [
        p.relative_to(ROOT).as_posix()
        for p in sources
        if re.search(r"f\"unknown component \{", p.read_text())
    ]
    assert owners == ["oracle/components.py"]


def test_argument_kinds_are_known() -> None:
    for record in RECORDS:
        for argument in record.arguments:
            assert argument.kind in components.ARGUMENT_KINDS
    with pytest.raises(ValueError, match="unknown argument kind"):
        components.Argument("x", "tensor")  # type: ignore[arg-type]


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_hook_a_record_declares_resolves(record: components.Component) -> None:
    for name in record.hooks:
        assert callable(record.hook(name)), (record.name, name)


def test_the_kernels_declare_the_hooks_their_shared_code_calls() -> None:
    for name in components.names("kernels"):
        assert set(components.get(name).hooks) == {
            "reference",
            "rule",
            "emulate",
            "highprec",
            "regime",
            "vjp_reference",
            "vjp_rule",
            "vjp_highprec",
            "gradient_properties",
        }


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_a_differentiable_record_has_its_backward_oracle(record: components.Component) -> None:
    """A record that names gradients has their reference, rule and properties (a
    grad_equivalence per gradient, all backward ones), and the NumPy and torch adapters
    compute them; a record without gradients has no backward hook."""
    backward_hooks = {"vjp_reference", "vjp_rule", "vjp_highprec", "gradient_properties"}
    if not record.gradients:
        assert not backward_hooks & set(record.hooks), record.name
        return
    if record.takes_params:
        # a layer: the chain rule through its composition (no 40-digit path; its reference is
        # checked against finite differences of the forward reference), its parameters named
        # by their key in params
        backward_hooks -= {"vjp_highprec"}
        assert {g for g in record.gradients if g in record.argument_names} <= set(
            record.arguments_of("array")
        )
    else:
        assert set(record.gradients) <= set(record.argument_names)
    assert backward_hooks <= set(record.hooks), record.name
    props = {p.name: p for p in record.property_list() if p.backward}
    for name in record.gradients:
        assert f"grad_equivalence_{name}" in props, (record.name, name)
    from transpec.adapters.numpy.adapter import NumpyAdapter

    if not record.takes_params:
        assert NumpyAdapter().provides_gradients(record.name)
    torch_adapter = pytest.importorskip("transpec.adapters.torch.adapter").TorchAdapter()
    assert torch_adapter.provides_gradients(record.name)


def test_the_kernels_and_positional_blocks_declare_their_tolerance_rule() -> None:
    """kernels.tolerance.tolerance finds a block's rule through its record, not a table."""
    for family in ("kernels", "positional"):
        for name in components.names(family):
            assert callable(components.get(name).hook("rule")), name


def test_the_kernels_and_the_engine_do_not_switch_on_component_names() -> None:
    """What differs between blocks is a record's hook or a parameter its caller chooses."""
    switch = re.compile(r"component (==|!=|in|not in) [\"(]")
    sources = [
        *ROOT.glob("oracle/kernels/*.py"),
        *ROOT.glob("oracle/engine/*.py"),
        ROOT / "transpec/reports.py",
    ]
    offenders = [
        f"{p.relative_to(ROOT).as_posix()}:{i}"
        for p in sources
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if switch.search(line)
    ]
    assert offenders == []


def test_a_missing_hook_names_the_component() -> None:
    with pytest.raises(LookupError, match="softmax declares no 'nothing' hook"):
        components.get("softmax").hook("nothing")


def test_declared_conventions_are_fields_and_every_field_concerns_a_component() -> None:
    import dataclasses

    from transpec.spec.conventions import EVERY_COMPONENT, Conventions

    fields = {f.name for f in dataclasses.fields(Conventions)} - set(EVERY_COMPONENT)
    declared = {c for record in RECORDS for c in record.conventions}
    assert declared <= fields
    assert fields <= declared, f"no component declares {sorted(fields - declared)}"
