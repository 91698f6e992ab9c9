"""Layer failures are saved and replayed like the others: the case file keeps a ``params`` dict
of arrays (state_dict names, key order, dtypes) and integer index arrays exactly; ``transpec
list components`` gives every component's signature; the layers' underflow floor is not zero
in float64."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from transpec.adapters.base import COMPONENTS, Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.cli import component_signature, main
from transpec.oracle import components
from transpec.oracle.catalogue import select
from transpec.oracle.engine.profiles import resolve
from transpec.runs import Case, Verdict, load_case, save_case

HERE = Path(__file__).resolve().parent
WRONG = "cli_layer_fixtures:WrongActivationFeedForward"


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def test_wrong_layer_fails_saves_and_reproduces(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["check", WRONG, "--component", "feed_forward", "--property", "equivalence"]
    argv += ["--dtype", "float64", "--failures-dir", str(tmp_path / "cases")]
    argv += ["--max-examples", "6", "--quiet"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED feed_forward.equivalence[float64-cpu]" in out
    assert "could not be saved" not in out
    assert "params={linear1.weight: (" in out  # names and shapes, not a page of numbers
    command = next(
        line.split("reproduce: ", 1)[1]
        for line in out.splitlines()
        if "reproduce: transpec reproduce" in line
    )
    saved = Path(command.split()[2])  # transpec reproduce FILE --trust
    meta, args = load_case(saved)
    assert meta["adapter"] == WRONG and meta["component"] == "feed_forward"
    params = args["params"]
    assert isinstance(params, dict) and "linear1.weight" in params
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in params.values())
    assert list(args) == ["x", "params", "activation"]

    assert main(command.split()[1:]) == 1
    replay = capsys.readouterr().out
    assert replay.splitlines()[0] == next(
        line for line in out.splitlines() if line.startswith("FAILED feed_forward.equivalence")
    )
    assert main([*command.split()[1:], "--adapter", "numpy"]) == 0
    assert "passed feed_forward.equivalence[float64-cpu]" in capsys.readouterr().out


def _save(
    tmp_path: Path, component: str, args: dict[str, object], name: str = "equivalence"
) -> Path:
    prop = select(components=[component], names=[name])[0]
    adapter = NumpyAdapter()
    return save_case(
        tmp_path,
        adapter=adapter,
        adapter_spec="numpy",
        case=Case(prop, "float64", "cpu", None),
        args=args,
        profile=resolve("ci"),
        verdict=Verdict(component, name, "float64", "cpu", "failed"),
    )


def test_case_file_rebuilds_dicts_and_integer_arrays_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    params = {
        "self_attn.in_proj_weight": rng.standard_normal((6, 2)),
        "norm1.bias": np.array([0.0, -0.0]),
        "linear1.bias": np.array([np.inf, np.nan]),
        "flag": None,
        "eps": float("nan"),
        "sizes": (2, 3),
    }
    args = {"src": rng.standard_normal((1, 2, 2)), "params": params, "nhead": 2}
    _, loaded = load_case(_save(tmp_path, "encoder_layer", args))
    assert list(loaded) == ["src", "params", "nhead"] and loaded["nhead"] == 2
    got = loaded["params"]
    assert list(got) == list(params)  # the key order is kept
    for key in ("self_attn.in_proj_weight", "norm1.bias", "linear1.bias"):
        assert got[key].dtype == params[key].dtype and got[key].shape == params[key].shape
        assert np.array_equal(got[key], params[key], equal_nan=True)
    assert np.signbit(got["norm1.bias"][1])
    assert got["flag"] is None and np.isnan(got["eps"]) and got["sizes"] == (2, 3)

    indices = np.array([[0, 3], [2, 1]], dtype=np.int64)
    emb = {"input": indices, "weight": rng.standard_normal((4, 3)), "scale_by_sqrt_d": True}
    _, loaded = load_case(_save(tmp_path, "embedding", emb))
    assert loaded["input"].dtype == np.int64 and np.array_equal(loaded["input"], indices)
    assert loaded["scale_by_sqrt_d"] is True


def test_unsavable_dicts_are_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        _save(tmp_path, "feed_forward", {"x": np.zeros((1, 2)), "params": {1: np.zeros(2)}})
    with pytest.raises(TypeError, match="object array"):
        _save(tmp_path, "feed_forward", {"params": {"w": np.array([None, 1])}})


def test_reproduce_refuses_a_property_the_adapter_has_no_use_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.zeros((1, 2, 2))
    path = _save(
        tmp_path,
        "multi_head_attention",
        {"query": x, "key": x, "value": x, "params": {"in_proj_weight": np.zeros((6, 2))}},
        name="fast_slow_agreement",
    )
    assert main(["reproduce", str(path)]) == 2  # saved with numpy: no slow path to compare
    assert "does not apply to adapter 'numpy'" in capsys.readouterr().err


def test_list_components_gives_every_signature(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "components"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(COMPONENTS)
    by_name = dict(line.split(None, 1) for line in lines)
    assert by_name["feed_forward"] == "feed_forward(x, params, activation='relu')"
    assert by_name["softmax"] == "softmax(x, dim=-1)"
    for component, record in components.REGISTRY.items():
        method = record.method
        names = [
            p for p in inspect.signature(getattr(NumpyAdapter, method)).parameters if p != "self"
        ]
        text = component_signature(component)
        assert text.startswith(f"{method}(") and all(n in text for n in names)


def test_layer_underflow_floor_is_positive_in_float64() -> None:
    from transpec.oracle.layers.tolerance import layer_reference, tolerance

    zero = {
        "linear1.weight": np.zeros((3, 2)),
        "linear1.bias": np.zeros(3),
        "linear2.weight": np.zeros((2, 3)),
        "linear2.bias": np.zeros(2),
    }
    args = {"x": np.ones((1, 2)), "params": zero, "activation": "relu"}
    ref = layer_reference("feed_forward", args)
    assert np.all(ref.value == 0.0)
    tol = tolerance("feed_forward", ref, "float64", Precision("float64", "float64"))
    tiny = float(np.nextafter(0.0, 1.0))  # one subnormal step off the exact zero: accepted
    assert np.all(tol.bound >= tiny) and np.all(tiny / tol.bound <= 1.0)
    assert np.all(1e-300 / tol.bound > 1.0)  # a real error is still rejected
