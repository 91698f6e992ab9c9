"""The reference computed while the worker converts: on the arguments the worker is expected to
report it sent (:func:`expected_sent`), kept only when its report is the same bit for bit
(:func:`same_bits`). torch's conversion is the one expected, in every dtype and for every kind
of argument; an adapter that converts otherwise is judged on what it reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from transpec.adapters.base import Declared
from transpec.oracle.catalogue import PROPERTIES
from transpec.oracle.engine.dtypes import same_bits
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.isolation import AdapterSource, Worker, expected_sent
from transpec.spec.conventions import Conventions

CLI = Path(__file__).resolve().parent.parent / "cli"

DTYPES = ("float64", "float32", "float16", "bfloat16")
#: one equivalence property per component: its strategy draws every kind of argument it takes
EQUIVALENCE = {p.component: p for p in PROPERTIES if p.name == "equivalence" and not p.backward}


@pytest.fixture(scope="module")
def torch_adapter() -> Any:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    return TorchAdapter()


@pytest.mark.parametrize("component", sorted(EQUIVALENCE))
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_reports_what_the_run_expects(torch_adapter: Any, component: str, dtype: str) -> None:
    """What torch's conversion sends (the worker's harness, run here) is the expected guess."""
    if not torch_adapter.provides(component):
        pytest.skip(f"torch does not provide {component}")
    harness = Harness(torch_adapter, dtype)

    @settings(max_examples=8, database=None, deadline=None)
    @given(EQUIVALENCE[component].strategy(dtype))
    def check(args: dict[str, Any]) -> None:
        encoded = harness.encode(component, args)
        _, sent, _ = harness._prepare(component, encoded)
        guess = expected_sent(component, encoded, dtype)
        assert guess is not None and same_bits(guess, sent)

    check()


def test_same_bits_is_bitwise() -> None:
    x = np.array([1.0, -0.0, np.nan])
    assert same_bits({"x": x, "dim": -1}, {"x": x.copy(), "dim": -1})
    assert not same_bits({"x": x}, {"x": np.array([1.0, 0.0, np.nan])})  # the sign of zero
    assert not same_bits({"x": x}, {"x": np.nextafter(x, 2.0)})
    assert not same_bits({"x": x}, {"x": x.astype(np.float32)})  # the dtype
    assert not same_bits({"x": x}, {"x": x.reshape(3, 1)})  # the shape
    square = np.arange(4.0).reshape(2, 2)
    assert not same_bits({"x": square}, {"x": np.asfortranarray(square)})  # the layout
    assert not same_bits({"x": x, "dim": -1}, {"dim": -1, "x": x})  # the order of the keys
    assert not same_bits({"x": x, "dim": -1}, {"x": x})
    assert not same_bits({"scale": 1}, {"scale": 1.0})  # the type
    assert not same_bits({"scale": np.nan}, {"scale": np.nan})  # (not equal: judged again)
    assert same_bits({"p": {"w": x, "b": None}}, {"p": {"w": x.copy(), "b": None}})
    assert not same_bits({"p": {"w": x, "b": None}}, {"p": {"w": x, "b": x}})
    assert not same_bits({"m": np.array([True])}, {"m": np.array([1.0])})
    assert same_bits((x, None, 1.0), (x.copy(), None, 1.0))  # tuples, item by item
    assert not same_bits((x,), (x, x))
    assert not same_bits((1,), (1.0,))
    assert not same_bits((x,), [x])


def test_arguments_the_worker_refuses_have_no_guess() -> None:
    assert expected_sent("softmax", {"x": np.array(["a"]), "dim": -1}, "float32") is None
    assert expected_sent("no-such-component", {"x": np.ones(2)}, "float32") is None


def test_an_adapter_that_converts_otherwise_is_judged_on_its_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(CLI))
    from cli_isolation_fixtures import TruncatingSoftmax

    x = np.array([[0.1, -0.7, 1.3], [2.9, -3.3, 0.2]])
    declared = Declared(Conventions(), 30.0)
    worker = Worker(AdapterSource("cli_isolation_fixtures:TruncatingSoftmax"))
    isolated = Harness(TruncatingSoftmax(), "float32", declared=declared, worker=worker)
    try:
        call = isolated.call("softmax", {"x": x, "dim": -1})
    finally:
        worker.close()
    truncated = TruncatingSoftmax().to_native(x, "float32", "cpu").astype(np.float64)
    guess = expected_sent("softmax", {"x": x, "dim": -1}, "float32")
    assert guess is not None and not same_bits(guess, call.sent)
    assert np.array_equal(call.sent["x"], truncated)
    alone = Harness(TruncatingSoftmax(), "float32", declared=declared).call(
        "softmax", {"x": x, "dim": -1}
    )
    assert np.array_equal(call.reference.value, alone.reference.value)
    assert np.array_equal(call.tolerance.bound, alone.tolerance.bound)
    assert not np.array_equal(call.reference.value, isolated.judging("softmax", guess)[0].value), (
        "the truncation does not change the reference: the test shows nothing"
    )
