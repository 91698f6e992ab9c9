"""Sampled rows of the norms: a row of LayerNorm/RMSNorm depends on that row alone, so the
reference of chosen rows (the leading dims flattened) is exactly those rows of the whole
reference; the harness judges them against the same rows of the implementation's whole
output, and a failure names its element in the whole output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.kernels import reference
from transpec.oracle.kernels.rows import TILE_SIZES


def _args(component: str, x: np.ndarray, n_axes: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    shape = x.shape[x.ndim - n_axes :]
    args: dict[str, Any] = {"x": x, "normalized_shape": shape, "weight": rng.standard_normal(shape)}
    if component == "layer_norm":
        return {**args, "bias": rng.standard_normal(shape), "eps": 1e-5}
    return {**args, "eps": None}


@pytest.mark.parametrize("component", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize(("shape", "n_axes"), [((2, 300, 8), 1), ((520, 4, 3), 2), ((7,), 1)])
def test_the_rows_are_those_of_the_whole_reference(
    component: str, shape: tuple[int, ...], n_axes: int
) -> None:
    x = np.random.default_rng(0).standard_normal(shape) * 3 + 1
    args = _args(component, x, n_axes)
    hook = (
        reference.layer_norm_reference
        if component == "layer_norm"
        else reference.rms_norm_reference
    )
    whole = hook(args, conventions=reference.CANONICAL, dtype="float16")
    part = hook(args, conventions=reference.CANONICAL, dtype="float16", rows="sampled")
    n_rows = int(np.prod(shape[: len(shape) - n_axes]))
    trailing = shape[len(shape) - n_axes :]
    assert part.rows is not None and part.full_shape == shape and part.row_layout == "flat"
    assert list(part.rows) == sorted(set(part.rows)) and part.rows[0] == 0
    assert part.rows[-1] == n_rows - 1
    for b in TILE_SIZES:  # every tile boundary (within the budget at these sizes)
        assert all(r in part.rows for r in range(b, n_rows, b))
    index = list(part.rows)
    np.testing.assert_array_equal(part.value, whole.value.reshape(-1, *trailing)[index])
    np.testing.assert_array_equal(part.abs_value, whole.abs_value.reshape(-1, *trailing)[index])
    lead = x.ndim - n_axes
    for name, term in whole.terms.items():  # the per-row terms (of the input's rank)
        if lead and isinstance(term, np.ndarray) and term.ndim == x.ndim:
            flat = term.reshape(-1, *term.shape[lead:])[index]
            np.testing.assert_array_equal(part.terms[name], flat, err_msg=name)
    again = hook(args, conventions=reference.CANONICAL, dtype="float16", rows="sampled")
    assert again.rows == part.rows  # seeded by the input: a replay judges the same rows
    chosen = hook(args, conventions=reference.CANONICAL, dtype="float16", rows=[-1, 0])
    assert chosen.rows == (n_rows - 1, 0)


def test_bad_rows_are_refused_in_one_line() -> None:
    args = _args("layer_norm", np.ones((4, 3)), 1)
    with pytest.raises(ValueError, match=r"^layer_norm: rows must be in \[-4, 4\)"):
        reference.layer_norm_reference(
            args, conventions=reference.CANONICAL, dtype="float32", rows=[4]
        )
    with pytest.raises(ValueError, match="rows must be row indices or 'sampled'"):
        reference.layer_norm_reference(
            args, conventions=reference.CANONICAL, dtype="float32", rows="all"
        )


class _WrongRow(NumpyAdapter):
    """Correct LayerNorm except on the row of index 256 (a tile boundary), which is doubled."""

    name = "wrong-row"

    def layer_norm(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = np.array(super().layer_norm(x, *args, **kwargs))
        flat = out.reshape(-1, out.shape[-1])
        if flat.shape[0] > 256:
            flat[256] *= 2.0
        return out


def test_the_harness_judges_sampled_rows_and_names_the_whole_index() -> None:
    x = np.random.default_rng(2).standard_normal((3, 200, 16))
    args = _args("layer_norm", x, 1)
    good = Harness(NumpyAdapter(), "float32")
    call = good.call("layer_norm", args, rows="sampled")
    assert call.output.shape == call.reference.value.shape == (len(call.reference.rows or ()), 16)
    assert good.assert_equivalent(call) <= 1.0
    bad = Harness(_WrongRow(), "float32")
    with pytest.raises(PropertyViolation) as violation:
        bad.assert_equivalent(bad.call("layer_norm", args, rows="sampled"))
    assert "of 600 rows" in str(violation.value)
    worst = violation.value.worst
    assert worst is not None and worst.index[:2] == (1, 56)  # row 256 of (3, 200)


def test_a_long_input_is_sampled_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "NORM_SAMPLING_THRESHOLD", 1000)
    x = np.random.default_rng(3).standard_normal((4000, 8))
    call = Harness(NumpyAdapter(), "float32").call("rms_norm", _args("rms_norm", x, 1))
    assert call.reference.rows is not None and len(call.reference.rows) < 4000
    small = Harness(NumpyAdapter(), "float32").call("rms_norm", _args("rms_norm", x[:100], 1))
    assert small.reference.rows is None


def _norm_sizes(strategy: Any, examples: int) -> list[int]:
    """Elements of x in the first ``examples`` derandomized draws."""
    from hypothesis import HealthCheck, Phase, given, settings

    sizes: list[int] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(args: dict[str, Any]) -> None:
        x = args["x"]
        assert x.ndim == 2 and args["normalized_shape"] == (x.shape[-1],)
        sizes.append(int(x.size))

    draw()
    return sizes


@pytest.mark.parametrize("component", ["layer_norm", "rms_norm"])
def test_long_norm_inputs_follow_the_profile(component: str) -> None:
    """The norms' long-input regime: within 2¹⁴ elements in ``ci``, hidden sizes past the
    1024 tile; in ``thorough`` past the 2²⁵ elements above which the reference samples the
    rows by itself, which it then does. The property builds it for the run's profile."""
    from transpec.oracle import catalogue
    from transpec.oracle.engine import profiles
    from transpec.oracle.kernels import strategies

    cap = profiles.LONG_NORM_MAX_ELEMENTS
    assert cap["ci"] <= 1 << 14 < reference.NORM_SAMPLING_THRESHOLD < cap["thorough"]
    centered = component == "layer_norm"
    ci = _norm_sizes(strategies.long_norm_inputs("float32", centered=centered), 30)
    assert max(ci) <= cap["ci"] and max(ci) > 1024
    (prop,) = [p for p in catalogue.PROPERTIES if p.id == f"{component}.long_input"]
    assert prop.sized_by_profile
    assert _norm_sizes(prop.strategy("float32", "ci"), 30) == ci
    # thorough: some drawn shape passes the threshold, none the cap (drawn here with a smaller
    # cap, which the option sets, to stay cheap)
    shapes = [
        min(r, cap["thorough"] // f) * f
        for f in strategies.LONG_NORM_FEATURES
        for r in strategies.LONG_NORM_ROWS
    ]
    assert max(shapes) <= cap["thorough"]
    assert any(n > reference.NORM_SAMPLING_THRESHOLD for n in shapes)
    small = strategies.long_norm_inputs(
        "float32", centered=centered, profile="thorough", max_elements=9000
    )
    assert max(_norm_sizes(small, 20)) <= 9000  # one row at least (8193 features at most)
    # such an input is judged on sampled rows without being asked
    rows, features = 4097, 8193
    x = np.random.default_rng(3).standard_normal((rows, features))
    assert x.size > reference.NORM_SAMPLING_THRESHOLD
    hook = (
        reference.layer_norm_reference
        if component == "layer_norm"
        else reference.rms_norm_reference
    )
    ref = hook(_args(component, x, 1), conventions=reference.CANONICAL, dtype="float32")
    assert ref.rows is not None and 0 < len(ref.rows) < rows and ref.full_shape == x.shape


def test_long_norm_options_are_checked() -> None:
    from transpec.oracle.kernels import strategies

    with pytest.raises(TypeError, match="centered"):
        strategies.long_norm_inputs("float32", centered="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        strategies.long_norm_inputs("float32", centered=False, profile="fast")
    with pytest.raises(ValueError, match="max_elements"):
        strategies.long_norm_inputs("float32", centered=False, max_elements=0)
