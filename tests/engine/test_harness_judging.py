"""The harness computes a reference and its tolerance once per distinct input: the slow path
of ``fast_slow_agreement`` and Hypothesis's replays judge the same arguments again, and get the
pair computed for them -- never one computed for other arguments, dtype, conventions, semantics,
rows or precision."""

from __future__ import annotations

import numpy as np

from transpec.adapters.base import Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness, judged_key
from transpec.spec.conventions import Conventions


class _Float64Softmax(NumpyAdapter):
    name = "float64-softmax"

    def precision(self, component: str, dtype: str) -> Precision:
        return Precision(accumulate="float64", store="float64")


def test_the_same_arguments_get_the_same_pair() -> None:
    harness = Harness(NumpyAdapter(), "float32")
    args = {"x": np.linspace(-3.0, 3.0, 12).reshape(3, 4), "dim": -1}
    first = harness.judging("softmax", args)
    again = Harness(NumpyAdapter(), "float32").judging("softmax", dict(args))
    assert again[0] is first[0] and again[1] is first[1]
    np.testing.assert_array_equal(first[0].value, harness.reference("softmax", args).value)


def test_anything_else_gets_its_own() -> None:
    args = {"x": np.linspace(-3.0, 3.0, 12).reshape(3, 4), "dim": -1}
    base = Harness(NumpyAdapter(), "float32").judging("softmax", args)
    other_x = {**args, "x": args["x"] + 2.0**-30}
    other_dim = {**args, "dim": 0}
    assert Harness(NumpyAdapter(), "float32").judging("softmax", other_x)[0] is not base[0]
    assert Harness(NumpyAdapter(), "float32").judging("softmax", other_dim)[0] is not base[0]
    assert Harness(NumpyAdapter(), "float16").judging("softmax", args)[0] is not base[0]
    wider = Harness(_Float64Softmax(), "float32").judging("softmax", args)
    assert wider[1] is not base[1]
    assert not np.array_equal(wider[1].bound, base[1].bound)


def test_the_key_tells_apart_what_prints_alike() -> None:
    x = np.zeros(4)
    assert judged_key(x) != judged_key(x.astype(np.float32))
    assert judged_key(x) != judged_key(x.reshape(2, 2))
    assert judged_key("1") != judged_key(1)
    assert judged_key({"a": 1}, 2) != judged_key({"a": 1, 2: None})
    assert judged_key(Conventions()) != judged_key(Conventions(bool_mask="ignore"))
