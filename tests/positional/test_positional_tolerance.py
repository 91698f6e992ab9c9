"""The tolerance rules of the embedding and positional components (docs/tolerance.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.oracle.engine.dtypes import round_to
from transpec.oracle.kernels.tolerance import tolerance
from transpec.oracle.reference import compute

F32 = Precision(accumulate="float32", store="float32")
HALF = Precision(accumulate="float32", store="float16")


def test_a_lookup_has_bound_zero_and_the_scaling_a_relative_one() -> None:
    rng = np.random.default_rng(0)
    args = {"input": rng.integers(0, 5, (3, 4)), "weight": rng.standard_normal((5, 8))}
    plain = tolerance("embedding", compute("embedding", args), "float16", HALF)
    assert not np.any(plain.bound) and "bitwise" in plain.derivation
    ref = compute("embedding", {**args, "scale_by_sqrt_d": True})
    scaled = tolerance("embedding", ref, "float16", HALF)
    y = np.abs(ref.value)
    assert np.all(scaled.bound >= 2 * 2.0**-11 * y)  # at least c·u_out·|y|
    assert np.all(scaled.bound <= 2 * 4 * 2.0**-10 * y + 1e-7)  # and within a few roundings


def test_the_sinusoid_bound_grows_with_the_position() -> None:
    near = compute("sinusoidal_positional_encoding", {"length": 4, "d_model": 8, "offset": 0})
    far = compute("sinusoidal_positional_encoding", {"length": 4, "d_model": 8, "offset": 16384})
    b_near = tolerance("sinusoidal_positional_encoding", near, "float32", F32).bound
    b_far = tolerance("sinusoidal_positional_encoding", far, "float32", F32).bound
    # column 0 has ω = 1: the angle is the position itself
    assert b_far[:, 0].min() > 1000 * b_near[1:, 0].max()
    assert b_far[:, 0].min() > 16384 * 3 * 2.0**-24  # at least the angle's own rounding


def test_a_float32_table_is_accepted_and_a_float16_one_rejected_in_float32() -> None:
    args = {"length": 16, "d_model": 32, "offset": 300}
    ref = compute("sinusoidal_positional_encoding", args)
    bound = tolerance("sinusoidal_positional_encoding", ref, "float32", F32).bound
    pos = np.arange(300, 316, dtype=np.float32)[:, None]
    omega = np.float32(10000.0) ** (-np.arange(0, 32, 2, dtype=np.float32) / np.float32(32))
    table = np.empty((16, 32), dtype=np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos * omega), np.cos(pos * omega)
    assert np.all(np.abs(table - ref.value) <= bound)
    half = round_to(ref.value, "float16")
    assert np.any(np.abs(half - ref.value) > bound)


def test_rope_bound_covers_the_angle_error_of_each_pair() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 8))
    ref = compute("rotary_embedding", {"x": x, "offset": 4000})
    tol = tolerance("rotary_embedding", ref, "bfloat16", Precision("float32", "bfloat16"))
    pair = np.asarray(ref.terms["pair_abs"])
    assert np.all(tol.bound >= 2 * pair * np.asarray(ref.terms["angle"]) * 3 * 2.0**-24)
    assert "γ_2" in tol.derivation and "§7.3" in tol.derivation


def test_alibi_bound_is_relative_and_zero_on_the_diagonal() -> None:
    ref = compute("alibi_bias", {"num_heads": 6, "query_length": 3, "key_length": 5})
    tol = tolerance("alibi_bias", ref, "float16", F32)
    zero = ref.value == 0
    assert zero.any() and np.all(tol.bound[zero] < 1e-7)
    assert np.all(tol.bound[~zero] >= 2 * 2.0**-11 * np.abs(ref.value[~zero]))


def test_unknown_components_still_name_the_known_ones() -> None:
    ref = compute("alibi_bias", {"num_heads": 2, "query_length": 1, "key_length": 1})
    with pytest.raises(ValueError, match="rotary_embedding"):
        tolerance("rope", ref, "float32", F32)
