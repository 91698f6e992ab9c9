"""The streaming attention reference equals the direct one, and sampled rows are exact rows.

The streaming reference (:func:`transpec.oracle.kernels.reference.attention` over key blocks)
must give the direct reference's value within the float64 bound of the tolerance model, and
every term the bound is made of (hence the bound of every dtype) to float64 rounding, under
every convention, mask kind, GQA, softcap and fully masked rows. Blocks are made tiny here
(7 rows and keys) so that every example crosses many block boundaries, ragged tails included.
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Precision
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle import reference as public
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.kernels import reference as kref
from transpec.oracle.kernels import upward
from transpec.oracle.kernels.rows import TILE_SIZES, compact, judged_rows
from transpec.oracle.kernels.tolerance import tolerance
from transpec.spec.conventions import CANONICAL

P64 = Precision("float64", "float64")
PRECISIONS = {
    "float64": P64,
    "float32": Precision("float32", "float32"),
    "float16": Precision("float32", "float16"),
    "bfloat16": Precision("float32", "bfloat16"),
}
CONVENTIONS = (
    CANONICAL,
    dataclasses.replace(
        CANONICAL, causal_alignment="bottom_right", fully_masked_row="nan", gqa_mapping="tile"
    ),
    dataclasses.replace(CANONICAL, mask_fill=-1e4, bool_mask="ignore"),
    dataclasses.replace(CANONICAL, mask_fill=-1.0),  # a fill whose weight does not vanish
)


#: the bound's magnitudes that the streaming reference may compute in float32
FLOAT32_NAMES = (
    "score_weighted",
    "score_mean",
    "shift_weighted",
    "shift_mean",
    "score_max",
    "shift_max",
    "sum_abs_v",
)


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kref, "STREAM_BLOCK", 7)


@pytest.fixture(params=(False, True), ids=("float64_terms", "float32_terms"))
def float32_terms(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(kref, "FLOAT32_TERMS", request.param)
    return bool(request.param)


def float32_slack(streamed: kref.Reference, q: Any, k: Any, v: Any, scale: float | None) -> float:
    """An absolute amount by which a float32 term may exceed its float64 value beyond the
    relative looseness: the absolute losses Lk·(6E + 2·SHIFT_LIMIT + 8)·2⁻¹²⁶ of
    docs/tolerance.md §3.2.2 in the largest units of these inputs (times 8 for the scaling to
    [0.5, 1) of each operand)."""
    e, n_keys = np.shape(q)[-1], np.shape(k)[-2]
    s = 1.0 / np.sqrt(e) if scale is None else abs(scale)
    units = (1.0 + s * np.max(np.abs(q)) * np.max(np.abs(k))) * (1.0 + np.max(np.abs(v)))
    loss = n_keys * (6 * e + 2 * kref.SHIFT_LIMIT + 8) * upward.TINY32
    return float(8.0 * loss * units * kref.SHIFT_LIMIT)


def assert_float32_terms(
    streamed: kref.Reference, direct: kref.Reference, block: int, slack: float
) -> None:
    """Each float32 term, and P|V| (``abs_value``), bounds its float64 value from above, and
    exceeds it by at most the stated looseness (relative 2(E + b + 8)·2⁻²⁴, b keys per block)
    plus ``slack``; every dtype's bound likewise, by at most (1 + w)·that relative amount,
    w <= 50 the amplification's argument (docs/tolerance.md §3.2.2)."""
    e = int(float(np.asarray(direct.terms["n_dot"])))
    rel = upward.looseness(e + block + 5)
    pairs = [(name, streamed.terms[name], direct.terms[name]) for name in FLOAT32_NAMES]
    pairs.append(("abs_value", streamed.abs_value, direct.abs_value))
    for name, streamed_term, direct_term in pairs:
        a, b = np.broadcast_arrays(np.asarray(streamed_term), np.asarray(direct_term))
        assert np.all(a >= b * (1.0 - 1e-12)), name
        assert np.all(a <= b * (1.0 + rel) + slack), name
    for dtype, precision in PRECISIONS.items():
        b_stream = tolerance("attention", streamed, dtype, precision).bound
        b_direct = tolerance("attention", direct, dtype, precision).bound
        assert np.all(b_stream >= b_direct * (1.0 - 1e-12)), dtype
        assert np.all(b_stream <= b_direct * (1.0 + 51.0 * rel) + 2.0 * slack), dtype


def _masks(rng: np.random.Generator, lq: int, lk: int) -> list[Any]:
    boolean = rng.random((2, 1, lq, lk)) < 0.6
    boolean[0, 0, min(3, lq - 1)] = False  # a fully masked row (under "keep")
    additive = np.where(rng.random((lq, lk)) < 0.7, rng.uniform(-2, 2, (lq, lk)), -np.inf)
    additive[min(2, lq - 1)] = -np.inf
    padding = (np.arange(lk) < max(1, lk - 5))[None, None, None, :]
    return [None, boolean, additive, padding, rng.random(lk) < 0.8]


def _cases() -> list[tuple[int, int, int, int, int, int]]:
    # (Hq, Hkv, Lq, Lk, E, Ev): square, Lq < Lk, Lq > Lk, decode, one key, GQA
    return [
        (2, 2, 16, 16, 5, 5),
        (4, 2, 20, 33, 5, 3),
        (2, 1, 33, 20, 8, 4),
        (2, 2, 1, 17, 3, 6),
        (1, 1, 9, 1, 4, 4),
    ]


def _assert_same(
    streamed: kref.Reference, direct: kref.Reference, float32_slack: float | None = None
) -> None:
    """The streamed value within the float64 bound of the direct one, P|V| and every float64
    term to float64 rounding; with ``float32_slack``, P|V| and the float32 terms by
    :func:`assert_float32_terms` instead."""
    value, expected = streamed.value, direct.value
    assert value.shape == expected.shape
    assert np.array_equal(np.isnan(value), np.isnan(expected))
    bound = tolerance("attention", direct, "float64", P64).bound
    finite = ~np.isnan(expected)
    assert np.all(np.abs(value - expected)[finite] <= bound[finite])
    if float32_slack is None:
        assert np.allclose(streamed.abs_value, direct.abs_value, rtol=1e-13, atol=0)
    else:
        assert_float32_terms(streamed, direct, kref.STREAM_BLOCK, float32_slack)
    for name, term in direct.terms.items():
        if float32_slack is not None and name in FLOAT32_NAMES:
            continue
        a, b = np.broadcast_arrays(np.asarray(streamed.terms[name]), np.asarray(term))
        assert np.allclose(a, b, rtol=1e-12, atol=0), name
    if float32_slack is not None:
        return
    for dtype, precision in PRECISIONS.items():
        b_stream = tolerance("attention", streamed, dtype, precision).bound
        b_direct = tolerance("attention", direct, dtype, precision).bound
        assert np.allclose(b_stream, b_direct, rtol=1e-12, atol=0), dtype


@pytest.mark.parametrize(
    "conventions", CONVENTIONS, ids=("canonical", "bottom_right", "fill", "fill_-1")
)
@pytest.mark.parametrize("causal", (False, True))
def test_streaming_equals_direct(conventions: Any, causal: bool, float32_terms: bool) -> None:
    rng = np.random.default_rng(7)
    for hq, hkv, lq, lk, e, ev in _cases():
        q = rng.standard_normal((2, hq, lq, e)) * 3.0
        k = rng.standard_normal((2, hkv, lk, e))
        v = rng.standard_normal((2, hkv, lk, ev)) * np.exp2(rng.integers(-3, 4, (2, hkv, 1, ev)))
        for mask in _masks(rng, lq, lk):
            for softcap in (None, 2.5):
                for scale in (None, -0.7):
                    args = (q, k, v, mask, causal, scale, hq != hkv, softcap)
                    direct = kref.attention(*args, conventions=conventions, streaming=False)
                    streamed = kref.attention(*args, conventions=conventions, streaming=True)
                    slack = float32_slack(streamed, q, k, v, scale) if float32_terms else None
                    _assert_same(streamed, direct, slack)
                    assert streamed.weights is None and direct.weights is not None


def test_streaming_large_logits_and_underflowing_weights(float32_terms: bool) -> None:
    """Logit gaps beyond 745: float64 weights underflow to 0; the streaming reference finds the
    same positive weights (hence the same maximum shift) as the direct one."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 2, 19, 8)) * 40.0
    k = rng.standard_normal((1, 2, 23, 8)) * 40.0
    v = rng.standard_normal((1, 2, 23, 8))
    for causal in (False, True):
        direct = kref.attention(q, k, v, None, causal, streaming=False)
        # weights of visible keys underflow to 0: D's maximum runs over the positive ones only
        assert direct.weights is not None and (direct.weights == 0).sum() > 19 * 23
        assert np.asarray(direct.terms["shift_max"]).max() > 700
        streamed = kref.attention(q, k, v, None, causal, streaming=True)
        slack = float32_slack(streamed, q, k, v, None) if float32_terms else None
        _assert_same(streamed, direct, slack)


@pytest.mark.parametrize(
    "conventions", CONVENTIONS, ids=("canonical", "bottom_right", "fill", "fill_-1")
)
def test_rows_are_the_rows_of_the_whole_reference(conventions: Any, float32_terms: bool) -> None:
    rng = np.random.default_rng(11)
    q = rng.standard_normal((2, 4, 30, 6))
    k = rng.standard_normal((2, 2, 41, 6))
    v = rng.standard_normal((2, 2, 41, 5))
    for mask in _masks(rng, 30, 41):
        whole = kref.attention(q, k, v, mask, True, None, True, conventions=conventions)
        rows = [29, 0, -1, 7, 7, 14, 15, -30]
        part = public.attention(q, k, v, mask, True, None, True, conventions=conventions, rows=rows)
        index = [r % 30 for r in rows]
        assert part.rows == tuple(index) and part.full_shape == whole.value.shape
        sub = dataclasses.replace(
            whole,
            value=whole.value[..., index, :],
            abs_value=whole.abs_value[..., index, :],
            terms={
                n: t if np.ndim(t) == 0 or np.shape(t)[-2] == 1 else np.asarray(t)[..., index, :]
                for n, t in whole.terms.items()
            },
            weights=None,
        )
        _assert_same(part, sub, float32_slack(part, q, k, v, None) if float32_terms else None)


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([], ValueError),
        ([[0, 1]], ValueError),
        ([30], ValueError),
        ([-31], ValueError),
        ([0.0, 1.0], TypeError),
        ([True], TypeError),
        ("0", TypeError),
    ],
)
def test_bad_rows_are_refused(rows: Any, error: type[Exception]) -> None:
    q = np.ones((1, 30, 4))
    with pytest.raises(error, match="rows"):
        kref.attention(q, q, q, rows=rows)


def test_rows_need_the_streaming_reference() -> None:
    q = np.ones((1, 3, 4))
    with pytest.raises(ValueError, match="streaming"):
        kref.attention(q, q, q, rows=[0], streaming=False)
    with pytest.raises(TypeError, match="streaming"):
        kref.attention(q, q, q, streaming="yes")  # type: ignore[arg-type]


def test_streaming_is_automatic_above_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    q = np.random.default_rng(0).standard_normal((1, 2, 10, 4))
    direct = kref.attention(q, q, q, is_causal=True)
    assert direct.weights is not None
    monkeypatch.setattr(kref, "DIRECT_LIMIT", 199)  # blocks, the weights still kept
    blocked = kref.attention(q, q, q, is_causal=True)
    assert blocked.weights is not None and np.allclose(blocked.weights, direct.weights)
    monkeypatch.setattr(kref, "STREAMING_THRESHOLD", 199)  # blocks, no (Lq, Lk) array
    assert kref.attention(q, q, q, is_causal=True).weights is None


def test_streaming_memory_is_linear_in_the_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """One head of 8192 queries and keys: a score matrix alone would be 512 MiB; the
    streaming reference of three rows stays within a few MiB (block temporaries)."""
    monkeypatch.setattr(kref, "STREAM_BLOCK", 512)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 8192, 8)) for _ in range(3))
    tracemalloc.start()
    try:
        ref = kref.attention(q, k, v, is_causal=True, rows=[0, 4095, 8191])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.value.shape == (1, 1, 3, 8)
    assert peak < 32 * 2**20, peak


# -- the rows judged on a long input -----------------------------------------------------------


def test_judged_rows_cover_boundaries_ends_frontier_and_padding() -> None:
    lq, lk = 1000, 1300
    offset = lk - lq
    mask = (np.arange(lk) < 1250)[None, None, None, :]
    rows = set(judged_rows(lq, lk, causal_offset=offset, key_mask=~mask).tolist())
    for b in TILE_SIZES:
        for m in range(b, lq + 1, b):
            assert {m - 1, m} | ({m + 1} if m + 1 < lq else set()) <= rows, (b, m)
    assert {0, 1, lq - 2, lq - 1} <= rows
    assert {1249 - offset, 1250 - offset, 1251 - offset} <= rows  # frontier at the padding edge
    assert {1024 - offset - 1, 1024 - offset, 1024 - offset + 1} <= rows  # a key tile edge
    assert all(0 <= r < lq for r in rows)
    again = judged_rows(lq, lk, causal_offset=offset, key_mask=~mask)
    assert sorted(rows) == again.tolist()  # the same draws for the same input


def test_judged_rows_take_every_tile_boundary_up_to_128k() -> None:
    n = 131072
    rows = set(judged_rows(n, n, causal_offset=0, rng=np.random.default_rng(1)).tolist())
    assert all({m - 1, m, m + 1} & set(range(n)) <= rows for m in range(16, n + 1, 16))
    assert len(rows) < 24576 + 200  # the boundaries, ends and random rows


def test_judged_rows_of_a_longer_input_take_every_largest_tile_boundary() -> None:
    n = 1 << 20
    rows = judged_rows(n, n, causal_offset=0, rng=np.random.default_rng(1))
    assert len(rows) < 3 * n // 256 + 800
    as_set = set(rows.tolist())
    assert all({m - 1, m} <= as_set for m in range(256, n, 256))
    assert {0, 1, n - 2, n - 1} <= as_set
    for b in (16, 32, 64, 128):  # the first and last boundaries of every smaller size
        assert {b - 1, b, b + 1, n - b - 1, n - b} <= as_set
    assert compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_judged_rows_refuse_empty_lengths() -> None:
    with pytest.raises(ValueError, match="lengths"):
        judged_rows(0, 3)


# -- the harness judges sampled rows of the whole output --------------------------------------


class _TailTileBug(NumpyAdapter):
    """Correct attention except the last partial 64-row tile of queries, whose output is
    scaled by 1.01 (a ragged-tail bug)."""

    name = "tail-tile"

    def scaled_dot_product_attention(self, q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        out = np.array(super().scaled_dot_product_attention(q, k, v, **kwargs))
        tail = (q.shape[-2] // 64) * 64
        out[..., tail:, :] *= 1.01
        return out


def _long_args(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 1, n, 16)) for _ in range(3))
    return {
        "q": q,
        "k": k,
        "v": v,
        "attn_mask": None,
        "is_causal": True,
        "scale": None,
        "enable_gqa": False,
    }


def test_harness_judges_sampled_rows_of_the_whole_output() -> None:
    args = _long_args(777)
    call = Harness(NumpyAdapter(), "float64").call("attention", args, rows="sampled")
    rows = call.reference.rows
    assert rows is not None and len(rows) < 777 and call.output.shape == (1, 1, len(rows), 16)
    assert Harness(NumpyAdapter(), "float64").assert_equivalent(call) <= 1.0
    bad = Harness(_TailTileBug(), "float64")
    with pytest.raises(PropertyViolation) as info:
        bad.assert_equivalent(bad.call("attention", args, rows="sampled"))
    violation = info.value
    assert f"judged {len(rows)} of 777 query rows" in violation.message
    assert violation.worst is not None and violation.worst.index[-2] >= 768
    assert "judged query rows 0-" in violation.worst.derivation
    assert violation.details["judged_rows"] == list(rows)


def test_rows_are_for_attention_only() -> None:
    with pytest.raises(ValueError, match="rows"):
        kref.compute_component("softmax", {"x": np.ones((2, 3))}, rows=[0])
    with pytest.raises(ValueError, match="sampled"):
        kref.attention_reference(_long_args(8), conventions=CANONICAL, dtype="float64", rows="all")


# -- the long-context regime ---------------------------------------------------------------------


def _drawn_sizes(strategy: Any, examples: int = 40) -> list[tuple[int, int, int]]:
    from hypothesis import HealthCheck, Phase, given, settings

    sizes: list[tuple[int, int, int]] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(args: dict[str, Any]) -> None:
        q, k = args["q"], args["k"]
        sizes.append((q.shape[-3], q.shape[-2], k.shape[-2]))
        assert args["enable_gqa"] == (q.shape[-3] != k.shape[-3])
        mask = args["attn_mask"]
        assert mask is None or (mask.dtype == np.bool_ and mask[..., 0].all())

    draw()
    return sizes


def test_long_context_lengths_follow_the_profile() -> None:
    """The caps come from the profile the strategy is built for, whatever profile was built
    last in the process; the run builds it for its own (``Property.strategy``)."""
    from transpec.oracle import catalogue
    from transpec.oracle.engine import profiles
    from transpec.oracle.kernels import strategies

    assert 131072 in strategies.LONG_CONTEXT_LENGTHS
    assert {257, 513, 65537, 1023} <= set(strategies.LONG_CONTEXT_LENGTHS)
    profiles.hypothesis_settings(profiles.resolve("thorough", seed=1))  # changes nothing here
    ci = _drawn_sizes(strategies.long_context_inputs("float32"))
    assert all(lk <= 600 and h * lq * lk <= max(1 << 14, h * lk) for h, lq, lk in ci)
    assert max(lk for _, _, lk in ci) > 512  # past the 512 tile boundary
    # the thorough profile's caps (drawn here with a small score budget to stay cheap)
    thorough = _drawn_sizes(
        strategies.long_context_inputs("float32", profile="thorough", max_scores=1 << 18)
    )
    assert max(lk for _, _, lk in thorough) > 600
    assert all(h * lq * lk <= max(1 << 18, h * lk) for h, lq, lk in thorough)
    (prop,) = [p for p in catalogue.PROPERTIES if p.id == "attention.long_context"]
    assert prop.sized_by_profile
    assert _drawn_sizes(prop.strategy("float32")) == ci
    assert _drawn_sizes(prop.strategy("float32", "ci")) == ci


def test_long_context_options_are_checked() -> None:
    from transpec.oracle.kernels import strategies

    with pytest.raises(ValueError, match="max_keys"):
        strategies.long_context_inputs("float32", max_keys=0)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        strategies.long_context_inputs("float32", profile="fast")
    with pytest.raises(TypeError, match="max_scores"):
        strategies.long_context_inputs("float32", max_scores=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("float32_terms", (False, True))
def test_chunks_of_heads_give_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, float32_terms: bool
) -> None:
    """The batch and heads taken one at a time (:data:`STREAM_CHUNK` = 1) give the reference of
    all of them at once bit for bit: masks with and without batch and head dims, GQA, a batch
    dim broadcast between q and k/v, sampled rows, the weights kept."""
    rng = np.random.default_rng(13)
    q = rng.standard_normal((1, 4, 20, 6))
    k = rng.standard_normal((2, 2, 25, 6))
    v = rng.standard_normal((2, 2, 25, 5))
    masks = _masks(rng, 20, 25)
    masks.append(rng.random((2, 4, 20, 25)) < 0.7)
    for mask in masks:
        for rows in (None, [19, 0, 7]):
            for keep in (False, True):
                if rows is not None and keep:
                    continue
                problem = kref.attention_problem(q, k, v, mask, True, None, True)
                index = None if rows is None else kref.query_rows(rows, 20)
                args = {"keep_weights": keep, "float32_terms": float32_terms}
                monkeypatch.setattr(kref, "STREAM_CHUNK", 1 << 20)
                whole = kref._attention_blocks(problem, index, 7, **args)
                monkeypatch.setattr(kref, "STREAM_CHUNK", 1)
                chunked = kref._attention_blocks(problem, index, 7, **args)
                assert np.array_equal(chunked.value, whole.value, equal_nan=True)
                assert np.array_equal(chunked.abs_value, whole.abs_value)
                assert chunked.rows == whole.rows and chunked.full_shape == whole.full_shape
                if keep:
                    assert np.array_equal(chunked.weights, whole.weights)  # type: ignore[arg-type]
                assert chunked.terms.keys() == whole.terms.keys()
                for name, term in whole.terms.items():
                    a, b = np.broadcast_arrays(np.asarray(chunked.terms[name]), np.asarray(term))
                    assert np.array_equal(a, b, equal_nan=True), name


@pytest.mark.parametrize("float32_terms", (False, True))
def test_threads_give_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch, float32_terms: bool
) -> None:
    """Blocks of rows taken by 1, 2 or 3 threads (:data:`STREAM_THREADS`) give the same
    reference, bit for bit at these sizes (BLAS runs one thread on such small products either
    way), with no warning from any thread: fully masked rows (0·inf, -inf - -inf) included."""
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(17)
    q = rng.standard_normal((2, 3, 30, 6))
    k = rng.standard_normal((2, 3, 33, 6))
    v = rng.standard_normal((2, 3, 33, 5))
    masks = _masks(rng, 30, 33)
    dead = np.ones((30, 33), dtype=bool)
    dead[::3] = False  # every third row sees every key, the others none
    masks.append(dead)
    for mask in masks:
        problem = kref.attention_problem(q, k, v, mask, False, None, False)
        results = []
        for threads in (1, 2, 3):
            monkeypatch.setattr(kref, "STREAM_THREADS", threads)
            assert kref._stream_threads(20) == threads
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                results.append(
                    kref._attention_blocks(problem, None, 7, float32_terms=float32_terms)
                )
        first = results[0]
        for other in results[1:]:
            assert np.array_equal(other.value, first.value, equal_nan=True)
            assert np.array_equal(other.abs_value, first.abs_value)
            for name, term in first.terms.items():
                a, b = np.broadcast_arrays(np.asarray(other.terms[name]), np.asarray(term))
                assert np.array_equal(a, b, equal_nan=True), name


def test_a_failing_block_fails_the_threaded_reference() -> None:
    """An exception raised in one block of rows reaches the caller, threads or not, and the
    blocks not yet started are dropped (an interrupt does not wait for the whole reference)."""
    pytest.importorskip("threadpoolctl")
    started: list[int] = []

    def run(task: int, work: Any) -> None:
        started.append(task)
        if task == 5:
            raise ValueError("block 5")
        time.sleep(0.01)

    for threads in (1, 2):
        started.clear()
        with pytest.raises(ValueError, match="block 5"):
            kref._run_blocks(list(range(200)), run, threads, lambda: kref._Workspace(4, 3))
        assert 5 in started and len(started) < 200
