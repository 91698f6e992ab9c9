"""What the implementation is handed is its own: private native copies of every input, the
harness's copies read-only and judged by, inputs read back after every call (``mutated_input``),
the conventions snapshotted (``changed_conventions``), the declarations checked before a run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Adapter, Declared, validate_adapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.errors import AdapterDeclarationError, TranspecError
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import FAILURE_KINDS, ImplementationFailure
from transpec.oracle.layers import strategies as sl
from transpec.runs import RunResult, run
from transpec.spec.conventions import Conventions

HERE = Path(__file__).resolve().parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(autouse=True)
def _hostile_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


def _hostile() -> Any:
    import hostile_adapters

    return hostile_adapters


def _attention_args() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    mask = rng.random((1, 2, 4, 6)) < 0.7
    mask[..., 0] = True
    return {
        "q": rng.standard_normal((1, 2, 4, 5)),
        "k": rng.standard_normal((1, 2, 6, 5)),
        "v": rng.standard_normal((1, 2, 6, 3)),
        "attn_mask": mask,
        "is_causal": False,
        "scale": None,
        "enable_gqa": False,
    }


def _encoder_args() -> dict[str, Any]:
    rng = np.random.default_rng(6)
    e = 8
    params = {
        **sl.mha_params(rng, e, "self_attn."),
        **sl.ffn_params(rng, e, 12),
        **sl.norm_params(rng, e, "norm1"),
        **sl.norm_params(rng, e, "norm2"),
    }
    return {
        "src": rng.standard_normal((2, 5, e)),
        "params": params,
        "nhead": 2,
        "norm_first": False,
        "activation": "relu",
        "layer_norm_eps": 1e-5,
        "src_mask": None,
        "src_key_padding_mask": None,
        "is_causal": False,
        "batch_first": True,
    }


def _embedding_args() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {"input": rng.integers(0, 9, size=(2, 4)), "weight": rng.standard_normal((9, 6))}


def _failure(adapter: Adapter, component: str, args: dict[str, Any], dtype: str) -> Any:
    with pytest.raises(ImplementationFailure) as info:
        Harness(adapter, dtype).call(component, args)
    return info.value


def _run(adapter: Adapter, component: str, dtype: str, **options: Any) -> RunResult:
    options.setdefault("max_examples", 4)
    return run(adapter, components=[component], dtypes=[dtype], failures_dir=None, **options)


# -- private copies ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_harness_copies_share_nothing_with_the_native_inputs(dtype: str) -> None:
    """NumPy's ``to_native`` in float64 is ``np.asarray``, a view of what it is given: the
    implementation must still hold nothing the harness keeps, nor the property's arguments."""
    harness = Harness(NumpyAdapter(), dtype)
    for component, args in (
        ("attention", _attention_args()),
        ("encoder_layer", _encoder_args()),
        ("embedding", _embedding_args()),
    ):
        drawn = {k: (dict(v) if isinstance(v, dict) else v) for k, v in args.items()}
        native, kept = harness.round_inputs(component, drawn)
        for name, value in native.items():
            pairs = value.items() if isinstance(value, dict) else [(None, value)]
            for key, nat in pairs:
                if not isinstance(nat, np.ndarray):
                    continue
                own = kept[name] if key is None else kept[name][key]
                given = drawn[name] if key is None else drawn[name][key]
                assert not np.shares_memory(nat, own), (component, name, key)
                assert not np.shares_memory(nat, given), (component, name, key)
                assert not own.flags.writeable, (component, name, key)
        if "params" in native:
            assert native["params"] is not drawn["params"]


def test_each_call_gets_fresh_native_arrays() -> None:
    seen: list[Any] = []

    class Recording(NumpyAdapter):
        def softmax(self, x: Any, dim: int = -1) -> Any:
            seen.append(x)
            return super().softmax(x, dim)

    harness = Harness(Recording(), "float64")
    args = {"x": np.linspace(-2.0, 2.0, 12).reshape(3, 4), "dim": -1}
    first, second = harness.call("softmax", args), harness.call("softmax", args)
    assert seen[0] is not seen[1] and not np.shares_memory(seen[0], seen[1])
    assert not first.inputs["x"].flags.writeable and not first.sent["x"].flags.writeable
    np.testing.assert_array_equal(first.output, second.output)


def test_the_adapter_hooks_get_copies_of_the_arguments() -> None:
    """``supports`` and ``layer_semantics`` are the adapter's code too: what they edit is a
    copy, never the arguments the reference is computed on."""

    class EditingHooks(NumpyAdapter):
        def supports(self, component: str, args: Any, **_: Any) -> str | None:
            for value in args.values():
                if isinstance(value, np.ndarray) and value.dtype == np.float64:
                    value[...] = 0.0
            return None

        def layer_semantics(self, component: str, args: Any) -> dict[str, str]:
            args["src"][...] = 0.0
            args["params"]["linear1.weight"][...] = 0.0
            return {}

    for component, args in (("attention", _attention_args()), ("encoder_layer", _encoder_args())):
        call = Harness(EditingHooks(), "float64").call(component, args)
        right = Harness(NumpyAdapter(), "float64").call(component, args)
        np.testing.assert_array_equal(call.reference.value, right.reference.value)
        assert Harness(NumpyAdapter(), "float64").assert_equivalent(call) <= 1.0


# -- mutated inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "component", "args", "dtype", "named"),
    [
        ("ZeroesQueryAttention", "attention", _attention_args, "float64", "input q in place"),
        ("ZeroesQueryAttention", "attention", _attention_args, "float16", "input q in place"),
        ("FlipsMaskAttention", "attention", _attention_args, "float32", "input attn_mask"),
        ("ZeroesIndicesEmbedding", "embedding", _embedding_args, "float32", "input input"),
        ("EditsWeightEmbedding", "embedding", _embedding_args, "float64", "input weight"),
        ("EditsParamsEncoder", "encoder_layer", _encoder_args, "float64", "params['linear1"),
        ("ReplacesParamsEncoder", "encoder_layer", _encoder_args, "float32", "entry replaced"),
        ("ScalesInputsWrongEncoder", "encoder_layer", _encoder_args, "float64", "input src"),
    ],
)
def test_an_input_modified_by_the_implementation_is_a_failure_naming_it(
    adapter: str, component: str, args: Any, dtype: str, named: str
) -> None:
    failure = _failure(getattr(_hostile(), adapter)(), component, args(), dtype)
    assert failure.kind == "mutated_input"
    assert failure.message.startswith(f"{component} modified its input ")
    assert named in failure.message
    assert "\n" not in failure.message


def test_the_message_counts_the_changed_elements() -> None:
    args = _attention_args()
    failure = _failure(_hostile().ZeroesQueryAttention(), "attention", args, "float64")
    assert failure.message == (
        f"attention modified its input q in place ({args['q'].size} elements changed)"
    )


def test_a_params_entry_added_or_removed_is_a_mutation() -> None:
    class Adds(NumpyAdapter):
        def encoder_layer(self, src: Any, params: Any, *a: Any, **k: Any) -> Any:
            params["extra"] = None
            return super().encoder_layer(src, params, *a, **k)

    class Removes(NumpyAdapter):
        def encoder_layer(self, src: Any, params: Any, *a: Any, **k: Any) -> Any:
            out = super().encoder_layer(src, params, *a, **k)
            del params["norm2.bias"]
            return out

    added = _failure(Adds(), "encoder_layer", _encoder_args(), "float32")
    assert added.kind == "mutated_input" and "1 entry added: 'extra'" in added.message
    removed = _failure(Removes(), "encoder_layer", _encoder_args(), "float32")
    assert removed.kind == "mutated_input" and "removed: 'norm2.bias'" in removed.message


def test_nan_inputs_left_alone_are_not_a_mutation_but_a_sign_flip_of_zero_is() -> None:
    class FlipsZeros(NumpyAdapter):
        def softmax(self, x: Any, dim: int = -1) -> Any:
            out = super().softmax(x, dim)
            x[x == 0] = -0.0
            return out

    x = np.array([[0.0, 1.0, np.nan, 2.0]])
    assert Harness(NumpyAdapter(), "float64").call("softmax", {"x": x, "dim": -1})
    failure = _failure(FlipsZeros(), "softmax", {"x": x, "dim": -1}, "float64")
    assert failure.kind == "mutated_input" and "1 element changed" in failure.message


def test_a_wrong_implementation_that_edits_its_inputs_fails_under_a_run() -> None:
    """Wrong by 1e-6 and its inputs scaled to match, or a wrong lookup hidden by editing the
    table: the verdicts are failures (the mutation is reported first)."""
    hostile = _hostile()
    for adapter, component in (
        (hostile.ScalesInputsWrongEncoder(), "encoder_layer"),
        (hostile.EditsWeightEmbedding(), "embedding"),
    ):
        result = _run(adapter, component, "float64")
        ran = [v for v in result.verdicts if v.status != "skipped"]
        assert ran and all(v.status == "failed" for v in ran), result.verdicts
        assert {v.failure_kind for v in ran} == {"mutated_input"}
        assert result.exit_code == 1


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_sdpa_scaling_q_in_place_is_a_mutation() -> None:
    adapter = _hostile().TorchScalesQuery()
    failure = _failure(adapter, "attention", _attention_args(), "float32")
    assert failure.kind == "mutated_input"
    assert failure.message.startswith("attention modified its input q in place (")
    result = _run(adapter, "attention", "float32", properties=["equivalence"])
    (verdict,) = result.verdicts
    assert verdict.status == "failed" and verdict.failure_kind == "mutated_input"


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_inputs_read_back_unchanged_for_a_correct_adapter() -> None:
    from transpec.adapters.torch.adapter import TorchAdapter

    for component, args in (
        ("attention", _attention_args()),
        ("encoder_layer", _encoder_args()),
        ("embedding", _embedding_args()),
    ):
        for dtype in ("float64", "bfloat16"):
            call = Harness(TorchAdapter(), dtype).call(component, args)
            assert call.output.shape == np.shape(call.reference.value)


def test_every_failure_kind_is_listed() -> None:
    assert FAILURE_KINDS == (
        "raised",
        "hung",
        "not_array",
        "shape",
        "dtype",
        "mutated_input",
        "changed_conventions",
        "crashed",
    )


# -- conventions ------------------------------------------------------------------------------


def test_a_call_that_changes_the_class_conventions_is_judged_under_the_original(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cls = _hostile().IgnoreMaskAttention
    monkeypatch.setattr(cls, "conventions", Conventions())  # restored after the test
    harness = Harness(cls(), "float32")
    with pytest.raises(ImplementationFailure) as info:
        harness.call("attention", _attention_args())
    assert info.value.kind == "changed_conventions"
    assert "bool_mask: 'keep' -> 'ignore'" in info.value.message
    assert harness.conventions == Conventions()

    monkeypatch.setattr(cls, "conventions", Conventions())
    result = run(
        cls(),
        components=["attention"],
        properties=["equivalence", "causality"],
        dtypes=["float32"],
        max_examples=4,
        failures_dir=tmp_path,
    )
    assert cls.conventions.bool_mask == "ignore"  # the implementation did change it ...
    assert result.conventions == Conventions().to_dict()  # ... the run reports the original
    assert {v.failure_kind for v in result.verdicts} == {"changed_conventions"}
    for verdict in result.verdicts:
        assert verdict.failure_file is not None
        from transpec.runs import load_case

        meta, _ = load_case(verdict.failure_file)
        assert meta["conventions"] == Conventions().to_dict()


def test_conventions_edited_in_place_are_a_change_too() -> None:
    cls = _hostile().EditsConventionsInPlace
    adapter = cls()
    try:
        harness = Harness(adapter, "float64")
        with pytest.raises(ImplementationFailure) as info:
            harness.call("softmax", {"x": np.ones((2, 3)), "dim": -1})
        assert info.value.kind == "changed_conventions"
        assert "gqa_mapping: 'interleave' -> 'tile'" in info.value.message
        assert harness.conventions.gqa_mapping == "interleave"
    finally:
        object.__setattr__(cls.conventions, "gqa_mapping", "interleave")


def test_the_snapshot_is_a_copy() -> None:
    adapter = NumpyAdapter()
    declared = Declared.of(adapter)
    assert declared.conventions == adapter.conventions
    assert declared.conventions is not adapter.conventions


# -- declarations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "text"),
    [
        ("ZeroTimeout", "call_timeout must be a finite number of seconds > 0, got 0.0"),
        ("NaNTimeout", "call_timeout must be a finite number of seconds > 0, got nan"),
        ("TextTimeout", "call_timeout must be a finite number of seconds > 0, got '5'"),
        ("StringDtypes", "dtypes must be a tuple of names, got the string 'float32'"),
        ("NoDtypes", "dtypes is empty"),
        ("NumberDevices", "devices must hold names without spaces, got 0"),
        ("RaisingDevices", "available_devices() raised RuntimeError: no driver second line"),
        ("RaisingProvides", "provides('attention') raised KeyError: 'attention'"),
    ],
)
def test_declarations_a_run_cannot_use_are_one_line_errors(adapter: str, text: str) -> None:
    impl = getattr(_hostile(), adapter)()
    with pytest.raises(AdapterDeclarationError) as info:
        validate_adapter(impl)
    message = str(info.value)
    assert text in message and "\n" not in message
    assert message.startswith(f"adapter {impl.name!r}: ")
    assert isinstance(info.value, TranspecError) and isinstance(info.value, ValueError)
    with pytest.raises(AdapterDeclarationError):
        run(impl, components=["softmax"], max_examples=1, failures_dir=None)


@pytest.mark.parametrize("timeout", [-1.0, float("inf"), True, None])
def test_a_harness_refuses_an_unusable_call_timeout(timeout: Any) -> None:
    class Odd(NumpyAdapter):
        call_timeout = timeout

    with pytest.raises(AdapterDeclarationError, match="call_timeout"):
        Harness(Odd(), "float32")


def test_a_harness_refuses_conventions_that_are_not_conventions() -> None:
    class Odd(NumpyAdapter):
        conventions = ("bool_mask", "keep")  # type: ignore[assignment]

    with pytest.raises(AdapterDeclarationError, match="must be a transpec Conventions"):
        Harness(Odd(), "float32")


def test_the_json_report_shows_the_snapshot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from transpec.reports import write_json

    cls = _hostile().IgnoreMaskAttention
    monkeypatch.setattr(cls, "conventions", Conventions(causal_alignment="bottom_right"))
    result = _run(cls(), "attention", "float32", properties=["equivalence"])
    write_json(result, tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    expected = Conventions(causal_alignment="bottom_right").to_dict()
    assert data["adapter"]["conventions"] == result.conventions == expected
    assert cls.conventions.bool_mask == "ignore"
    (verdict,) = data["verdicts"]
    assert verdict["failure_kind"] == "changed_conventions"
