r"""Properties of the embedding and positional components (registered in
:data:`transpec.oracle.kernels.properties.PROPERTIES`).

Oracle checks: ``equivalence`` (every element within the bound of
:mod:`transpec.oracle.positional.tolerance`) and ``shape_dtype`` for each component. Metamorphic
checks, with bounds derived from the calls' tolerances as in
:mod:`transpec.oracle.kernels.properties` (if each output is within b of its reference, a relation
that exact arithmetic makes true holds within the combination of the b's; the references' own
difference is subtracted):

* ``embedding.lookup_exact`` -- without scaling, the output *is* the rounded weight rows:
  bitwise equal to ``weight[input]`` (bound 0);
* ``sinusoidal_positional_encoding.sinusoidal_shift_is_rotation`` -- for a shift k, every
  (sin, cos) pair of row p + k equals the rotation by :math:`k\,\omega_i` of the pair of row p,
  with the declared frequencies and layout: bound :math:`b_{p+k} + (|\cos k\omega| +
  |\sin k\omega|)\,(b^{\sin}_p + b^{\cos}_p)`;
* ``sinusoidal_positional_encoding.position_offset`` and ``rotary_embedding.position_offset`` --
  the table (rotation) at offset t equals rows t.. of the table from 0 (the rotation at the
  explicit positions t..t+L-1): catches off-by-one KV-cache offsets;
* ``rotary_embedding.rope_relative_position`` -- the scores :math:`\tilde q_m\cdot\tilde k_n`
  of rotated q and k do not change when both positions shift by s: per score the bound is
  :math:`\sum_d (b^q_d |\tilde k_d| + |\tilde q_d|\, b^k_d + b^q_d b^k_d)` of each call, summed;
* ``rotary_embedding.rope_norm_preservation`` -- the norm of each rotated pair equals the norm of
  the input pair: :math:`|\,\|o\| - \|x\|\,| \le \|o - r\| \le b_1 + b_2`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from hypothesis import strategies as st

from transpec.oracle.engine.error_model import U64
from transpec.oracle.engine.harness import (
    Harness,
    assert_related,
    assert_relation,
    bound_of,
    relate,
)
from transpec.oracle.engine.strategy import Args
from transpec.oracle.positional import strategies as sp

if TYPE_CHECKING:
    from transpec.oracle.engine.property import Property


EMB, PE, ROPE, ALIBI = (
    "embedding",
    "sinusoidal_positional_encoding",
    "rotary_embedding",
    "alibi_bias",
)


def _rng(args: Args, salt: str) -> np.random.Generator:
    from transpec.oracle.engine.property import example_rng

    return example_rng(args, salt)


# -- embedding ---------------------------------------------------------------------------------


def _check_lookup_exact(harness: Harness, args: Args) -> float:
    call = harness.call(EMB, {**args, "scale_by_sqrt_d": False})
    rows = np.asarray(call.inputs["weight"])[np.asarray(call.inputs["input"])]
    return assert_related(
        call.output,
        rows,
        0.0,
        what="lookup_exact: the output is not the rounded weight rows bit for bit",
        derivation="a lookup copies rows: bound 0",
    )


# -- sinusoidal encoding -----------------------------------------------------------------------


def _sinusoid_pairs(harness: Harness, d_model: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sin column, cos column, ω) of each frequency under the declared conventions."""
    from transpec.oracle.layers.reference import sinusoid_frequencies

    conv = harness.conventions
    omega = sinusoid_frequencies(d_model, frequencies=conv.sinusoidal_frequencies)
    i = np.arange(d_model // 2)
    if conv.sinusoidal_layout == "interleaved":
        return 2 * i, 2 * i + 1, omega[: d_model // 2]
    return i, i + d_model // 2, omega[: d_model // 2]


def _check_shift_rotation(harness: Harness, args: Args) -> float:
    call = harness.call(PE, args)
    length, d_model = int(args["length"]), int(args["d_model"])
    if length < 2:
        return 0.0
    k = int(_rng(args, "sinusoid-shift").integers(1, length))
    sin_col, cos_col, omega = _sinusoid_pairs(harness, d_model)
    ck, sk = np.cos(k * omega), np.sin(k * omega)

    def rotate(table: np.ndarray) -> np.ndarray:
        """M_k applied to rows 0..L-k-1: the prediction of rows k..L-1."""
        s, c = table[:-k, sin_col], table[:-k, cos_col]
        out = np.zeros_like(table[:-k])
        out[:, sin_col] = s * ck + c * sk
        out[:, cos_col] = c * ck - s * sk
        return out

    b = bound_of(call)
    pair_bound = b[:-k, sin_col] + b[:-k, cos_col]
    spread = np.zeros_like(b[:-k])
    spread[:, sin_col] = spread[:, cos_col] = (np.abs(ck) + np.abs(sk)) * pair_bound
    return assert_relation(
        call.output[k:],
        rotate(call.output),
        call.reference.value[k:],
        rotate(call.reference.value),
        b[k:] + spread + 4 * U64,
        what=f"sinusoidal_shift_is_rotation: PE(p + {k}) is not the rotation by {k}·ω of PE(p)",
        derivation="b(p+k) + (|cos kω| + |sin kω|)·(b_sin(p) + b_cos(p))",
    )


def _check_pe_offset(harness: Harness, args: Args) -> float:
    offset, length = int(args["offset"]), int(args["length"])
    shifted = harness.call(PE, args)
    full = harness.call(PE, {**args, "offset": 0, "length": offset + length})
    return relate(
        shifted,
        full,
        transform=lambda x: x[offset:],
        what=f"position_offset: the table at offset {offset} is not rows {offset}.. of the "
        "table from position 0",
    )


# -- rotary ------------------------------------------------------------------------------------


def _check_rope_offset(harness: Harness, args: Args) -> float:
    offset = int(args["offset"])
    length = np.shape(args["x"])[-2]
    by_offset = harness.call(ROPE, {**args, "positions": None})
    explicit = {**args, "positions": np.arange(offset, offset + length, dtype=np.int64)}
    by_positions = harness.call(ROPE, {**explicit, "offset": 0})
    return relate(
        by_offset,
        by_positions,
        what=f"position_offset: offset={offset} differs from the positions "
        f"{offset}..{offset + length - 1}",
    )


def _scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.matmul(q, np.swapaxes(k, -1, -2))


def _check_relative_position(harness: Harness, args: Args) -> float:
    rng = _rng(args, "rope-relative")
    x = np.asarray(args["x"], dtype=np.float64)
    keys = rng.permutation(x.reshape(-1, x.shape[-1]), axis=0).reshape(x.shape)
    shift = int(rng.integers(1, 4097))

    def moved(extra: int) -> dict[str, Any]:
        if args.get("positions") is None:
            return {**args, "offset": int(args.get("offset", 0)) + extra}
        return {**args, "positions": np.asarray(args["positions"]) + extra}

    def scores(extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cq = harness.call(ROPE, moved(extra))
        ck = harness.call(ROPE, {**moved(extra), "x": keys})
        bq, bk = bound_of(cq), bound_of(ck)
        aq, ak = np.abs(cq.output), np.abs(ck.output)
        bound = _scores(bq, ak) + _scores(aq, bk) + _scores(bq, bk)
        ref = _scores(cq.reference.value, ck.reference.value)
        d = x.shape[-1]
        arithmetic = 2 * d * U64 * _scores(np.abs(cq.reference.value), np.abs(ck.reference.value))
        return _scores(cq.output, ck.output), ref, bound + arithmetic

    s0, r0, b0 = scores(0)
    s1, r1, b1 = scores(shift)
    return assert_relation(
        s1,
        s0,
        r1,
        r0,
        b0 + b1,
        what=f"rope_relative_position: the scores q_m·k_n changed when both positions moved by "
        f"{shift}",
        derivation="per score Σ_d (b_q|k̃| + |q̃|b_k + b_q b_k) of each call, summed",
    )


def _check_norm_preservation(harness: Harness, args: Args) -> float:
    from transpec.oracle.positional.reference import rope_pairs

    call = harness.call(ROPE, args)
    first, second = rope_pairs(call.output.shape[-1], harness.conventions.rope_pairing)
    x = np.asarray(call.inputs["x"], dtype=np.float64)
    x = np.broadcast_to(x, call.output.shape)
    out, b = call.output, bound_of(call)
    norm_out = np.hypot(out[..., first], out[..., second])
    norm_in = np.hypot(x[..., first], x[..., second])
    return assert_related(
        norm_out,
        norm_in,
        b[..., first] + b[..., second] + 4 * U64 * norm_in,
        what="rope_norm_preservation: a rotated pair changed its norm",
        derivation="| |o| - |x| | <= |o - r| <= b_first + b_second (r the exact rotation)",
    )


# -- the catalogue -----------------------------------------------------------------------------


def _inputs(factory: Callable[..., st.SearchStrategy[Args]], **options: Any) -> Any:
    def inputs(dtype: str) -> st.SearchStrategy[Args]:
        return factory(dtype, **options)

    return inputs


def positional_properties() -> tuple[Property, ...]:
    """Every property of the embedding and positional components."""
    from transpec.oracle.engine.property import (
        Property,
        applies_when_declared,
        equivalence_check,
        shape_dtype_check,
    )

    def common(component: str, factory: Callable[..., Any], shape: str) -> list[Property]:
        app = applies_when_declared(component)
        return [
            Property(
                component,
                "equivalence",
                "every output element within the derived bound of the float64 reference",
                _inputs(factory),
                equivalence_check(component),
                app,
            ),
            Property(
                component,
                "shape_dtype",
                f"a native array of shape {shape} in the dtype under test",
                _inputs(factory),
                shape_dtype_check(component),
                app,
            ),
        ]

    return (
        *common(EMB, sp.embedding_inputs, "input.shape + (d,)"),
        Property(
            EMB,
            "lookup_exact",
            "without scaling the output is the rounded weight rows, bit for bit",
            _inputs(sp.embedding_inputs, scale_by_sqrt_d=False),
            _check_lookup_exact,
            applies_when_declared(EMB),
        ),
        *common(PE, sp.sinusoidal_inputs, "(length, d_model)"),
        Property(
            PE,
            "sinusoidal_shift_is_rotation",
            "PE(p + k) is the fixed rotation by k·ω of PE(p), pair by pair, for the declared "
            "layout and frequencies",
            _inputs(sp.sinusoidal_inputs, min_length=2),
            _check_shift_rotation,
            applies_when_declared(PE),
        ),
        Property(
            PE,
            "position_offset",
            "the table at offset t equals rows t.. of the table from position 0",
            _inputs(sp.sinusoidal_inputs, min_offset=1, max_offset=300),
            _check_pe_offset,
            applies_when_declared(PE),
        ),
        *common(ROPE, sp.rotary_inputs, "x.shape"),
        Property(
            ROPE,
            "rope_relative_position",
            "scores q_m·k_n of rotated q, k are unchanged when both positions shift alike",
            _inputs(sp.rotary_inputs),
            _check_relative_position,
            applies_when_declared(ROPE),
        ),
        Property(
            ROPE,
            "rope_norm_preservation",
            "each rotated coordinate pair keeps its norm",
            _inputs(sp.rotary_inputs),
            _check_norm_preservation,
            applies_when_declared(ROPE),
        ),
        Property(
            ROPE,
            "position_offset",
            "rotating with offset t equals rotating at the explicit positions t..t+L-1",
            _inputs(sp.rotary_inputs, position_modes=("offset",), min_offset=1),
            _check_rope_offset,
            applies_when_declared(ROPE),
        ),
        *common(ALIBI, sp.alibi_inputs, "(num_heads, query_length, key_length)"),
    )
