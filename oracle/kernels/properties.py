"""The properties of the kernels (softmax, attention, LayerNorm, RMSNorm), one verdict each.

Each is a :class:`~transpec.oracle.engine.property.Property`. Two kinds of checks:

* **oracle checks** compare one call with the float64 reference on the same (rounded) inputs
  under the per-element bound of the tolerance model (``equivalence`` and its regime-specific
  forms: ``large_logits``, ``small_variance``, ``large_mean``, ``normalized_shape``,
  ``fully_masked_rows``), or compare the RMS of the relative error with that of a correct
  kernel emulated at the declared precision (``error_statistic``);
* **metamorphic checks** relate several calls of the implementation to each other (causality,
  invariances, linearity, ...). Their bounds are derived, not guessed: if every call *i* is
  within its tolerance ``b_i`` of its reference ``r_i``, then for a relation
  ``out_1 = L(out_2, ...)`` that exact arithmetic makes true, with ``L = Σ c_i ·`` linear (a
  permutation, a slice, a sum, a linear combination),

  ``|out_1 - L(out_2, ...) - (r_1 - L(r_2, ...))| <= b_1 + Σ |c_i| b_i``

  (plus the float64 rounding of the check itself). That is the check: the references'
  own difference, zero where the relation is exact and otherwise the effect of rounding the
  transformed inputs to the dtype under test (or of eps in the invariances of the norms), is
  subtracted rather than tolerated. A correct implementation never fails a metamorphic check;
  a wrong one fails as soon as the relation moves by more than the calls' tolerances.

Metamorphic checks draw their transformations (permutations, perturbations, coefficients)
from a NumPy generator seeded by the bytes of the example: the same example always gets the
same transformation, so a saved failure replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.adapters.base import Adapter
from transpec.oracle.engine.error_model import U64
from transpec.oracle.engine.harness import (
    Call,
    Harness,
    assert_related,
    assert_relation,
    bound_of,
    relate,
)
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.engine.property import (
    Check,
    Inputs,
    Property,
    applies_when_declared,
    applies_when_received,
    equivalence_check,
    example_rng,
    shape_dtype_check,
)
from transpec.oracle.engine.strategy import Args
from transpec.oracle.kernels import strategies as strat

# -- shared pieces ---------------------------------------------------------------------------


def _finite_rows(*refs: np.ndarray) -> np.ndarray:
    ok = np.ones(np.shape(refs[0]), dtype=bool)
    for r in refs:
        ok &= np.isfinite(r)
    return ok


def _error_statistic(component: str) -> Check:
    def check(harness: Harness, args: Args) -> float:
        from transpec.oracle.engine.compare import error_statistic

        call = harness.call(component, args)
        stat = error_statistic(
            component,
            call.sent,
            call.output,
            call.reference,
            conventions=harness.conventions,
            dtype=harness.dtype,
            precision=harness.precision(component),
        )
        if not stat.passed:
            from transpec.oracle.engine.picture import StatisticEvidence

            figures = dict(getattr(stat, "figures", {}) or {})
            shown = ", ".join(f"{k}={v:.3g}" for k, v in figures.items())
            emulated_at = f"a correct kernel emulated at {harness.precision(component)}"
            evidence = None
            if stat.errors is not None and stat.emulated_errors is not None:
                threshold = float(figures.get("threshold", 1.0))
                evidence = StatisticEvidence(
                    stat.errors, stat.emulated_errors, threshold, note=emulated_at
                )
            raise PropertyViolation(
                f"error_statistic: RMS of |error|/absref is {float(stat.ratio):.3g}× the allowed "
                f"multiple of {emulated_at} ({shown})",
                ratio=float(stat.ratio),
                details={"figures": figures},
                evidence=evidence,
            )
        return float(stat.ratio)

    return check


# -- attention: masks and heads ----------------------------------------------------------------


def masked_keys(harness: Harness, call: Call, *, zero_weight: bool = False) -> np.ndarray:
    """(..., Hq, Lq, Lk) True where the key is masked for the query by the arguments'
    semantics under the declared conventions (boolean mask, is_causal, additive -inf).

    ``zero_weight``: only the keys whose weight is exactly zero -- under a finite
    ``mask_fill`` a masked key's score is the fill, so only additive -inf keys qualify.
    """
    from transpec.oracle.kernels.reference import attention_setup

    conventions = harness.conventions
    if conventions.mask_fill_mode == "add":
        # the keys an added fill masks are the keys a replacing one would: read them there
        conventions = conventions.replace(mask_fill_mode="replace")
    setup = attention_setup(**call.sent, conventions=conventions)
    masked = ~np.asarray(setup.visible)
    if zero_weight and setup.fill is not None:
        masked = np.zeros_like(masked)
    if setup.additive is not None:
        masked = masked | np.isneginf(np.broadcast_to(setup.additive, masked.shape))
    return np.broadcast_to(masked, call.reference.value.shape[:-1] + masked.shape[-1:])


def _kv_head_of(harness: Harness, h: int, q_heads: int, kv_heads: int) -> int:
    if q_heads == kv_heads:
        return h
    if harness.conventions.gqa_mapping == "interleave":
        return h // (q_heads // kv_heads)
    return h % kv_heads


def _expand_kv(harness: Harness, x: np.ndarray, groups: int) -> np.ndarray:
    """K or V with each kv head repeated for its query heads, under the declared mapping."""
    if groups == 1:
        return x
    if harness.conventions.gqa_mapping == "interleave":
        return np.repeat(x, groups, axis=-3)
    reps = [1] * x.ndim
    reps[-3] = groups
    return np.tile(x, reps)


def _mask_slice(mask: Any, axis: int, index: int, size: int) -> Any:
    """Slice a 4-d mask along ``axis`` where it has that axis at full size (else broadcast)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    pos = m.ndim + axis if axis < 0 else axis - (4 - m.ndim)
    if 0 <= pos < m.ndim and m.shape[pos] == size:
        return np.take(m, [index], axis=pos)
    return m


def _take_mask(mask: Any, axis: int, order: np.ndarray, size: int) -> Any:
    """Permute a mask along a negative ``axis`` where it is full size there."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim >= -axis and m.shape[axis] == size:
        return np.take(m, order, axis=axis)
    return m


def _perturb_like(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Fresh values of the same spread as ``x`` (so nothing overflows the dtype)."""
    peak = float(np.max(np.abs(x))) if x.size else 1.0
    std = float(np.std(x)) if x.size > 1 else peak
    fresh = rng.standard_normal(x.shape) * (std if std > 0 else 1.0)
    return np.clip(fresh, -peak, peak) if peak > 0 else fresh


def _hidden_key_invariance(harness: Harness, args: Args, perturbed: np.ndarray, what: str) -> float:
    """Change K and V at the keys ``perturbed`` (B, Lk) marks; every query row for which all
    of them are masked must keep its output (both tolerances: see ``relate``)."""
    first = harness.call("attention", args)
    rng = example_rng(args, what)
    k = np.array(args["k"], dtype=np.float64)
    v = np.array(args["v"], dtype=np.float64)
    sel_k = np.broadcast_to(perturbed[:, None, :, None], k.shape)
    sel_v = np.broadcast_to(perturbed[:, None, :, None], v.shape)
    changed = dict(args)
    changed["k"] = np.where(sel_k, _perturb_like(rng, k), k)
    changed["v"] = np.where(sel_v, _perturb_like(rng, v) * 4.0, v)
    second = harness.call("attention", changed)
    masked = masked_keys(harness, first)  # (B, Hq, Lq, Lk)
    pk = np.broadcast_to(perturbed[:, None, None, :], masked.shape)
    blind = np.all(masked | ~pk, axis=-1)  # rows that see none of the perturbed keys
    if not blind.any():
        return 0.0
    return relate(
        second,
        first,
        rows=np.broadcast_to(blind[..., None], first.output.shape),
        what=f"{what}: outputs of queries that cannot see the changed keys moved",
        why="masked keys get zero weight: the exact outputs are equal",
    )


def _check_causality(harness: Harness, args: Args) -> float:
    Lk = np.shape(args["k"])[-2]
    B = np.shape(args["k"])[0]
    if Lk < 2:
        return 0.0
    rng = example_rng(args, "causality-cut")
    cut = int(rng.integers(1, Lk))
    perturbed = np.broadcast_to(np.arange(Lk)[None, :] >= cut, (B, Lk))
    return _hidden_key_invariance(harness, args, perturbed, "causality")


def _check_key_padding(harness: Harness, args: Args) -> float:
    mask = np.asarray(args["attn_mask"])
    keep = mask if mask.dtype == np.bool_ else ~np.isneginf(mask)
    B, Hq, Lq, _ = np.shape(args["q"])
    Lk = np.shape(args["k"])[-2]
    keep = np.broadcast_to(keep, (B, Hq, Lq, Lk))
    padded = ~np.any(keep, axis=(1, 2))  # (B, Lk): keys no query of the example sees
    if not padded.any():
        return 0.0
    worst = _hidden_key_invariance(harness, args, padded.reshape(B, Lk), "key_padding_invariance")
    return max(worst, _padded_keys_removed(harness, args, padded.reshape(B, Lk)))


def _padded_keys_removed(harness: Harness, args: Args, padded: np.ndarray) -> float:
    """Each example computed without its padded keys (K, V and mask columns removed) equals
    its slice of the padded call: padding a key must act on that key only (for instance it
    must not also zero the output of the query at the same position when Lq = Lk)."""
    if args.get("is_causal"):
        return 0.0  # removing keys would move the causal diagonal
    full = harness.call("attention", args)
    B, Hq, Lq, _ = np.shape(args["q"])
    Lk = np.shape(args["k"])[-2]
    mask = np.broadcast_to(np.asarray(args["attn_mask"]), (B, Hq, Lq, Lk))
    worst = 0.0
    for b in range(B):
        kept = np.flatnonzero(~padded[b])
        if kept.size in (0, Lk):
            continue
        alone = dict(args)
        alone["q"] = np.asarray(args["q"])[b : b + 1]
        alone["k"] = np.asarray(args["k"])[b : b + 1][..., kept, :]
        alone["v"] = np.asarray(args["v"])[b : b + 1][..., kept, :]
        alone["attn_mask"] = np.array(mask[b : b + 1][..., kept])
        single = harness.call("attention", alone)
        worst = max(
            worst,
            relate(
                single,
                full,
                transform=itemgetter(np.s_[b : b + 1]),
                what=f"key_padding_invariance: example {b} computed without its "
                f"{Lk - kept.size} padded key(s) differs from its slice of the padded call",
                why="padded keys get zero weight: the exact outputs are equal",
            ),
        )
    return worst


def _check_batch_independence(harness: Harness, args: Args) -> float:
    full = harness.call("attention", args)
    B = np.shape(args["q"])[0]
    worst = 0.0
    for b in range(B):
        alone = dict(args)
        for name in ("q", "k", "v"):
            alone[name] = np.asarray(args[name])[b : b + 1]
        alone["attn_mask"] = _mask_slice(args["attn_mask"], 0, b, B)
        single = harness.call("attention", alone)
        worst = max(
            worst,
            relate(
                single,
                full,
                transform=itemgetter(np.s_[b : b + 1]),
                what=f"batch_independence: example {b} computed alone differs from its "
                "slice of the batched output",
            ),
        )
    return worst


def _check_head_independence(harness: Harness, args: Args) -> float:
    full = harness.call("attention", args)
    Hq, Hkv = np.shape(args["q"])[1], np.shape(args["k"])[1]
    worst = 0.0
    for h in range(Hq):
        g = _kv_head_of(harness, h, Hq, Hkv)
        alone = dict(args)
        alone["q"] = np.asarray(args["q"])[:, h : h + 1]
        alone["k"] = np.asarray(args["k"])[:, g : g + 1]
        alone["v"] = np.asarray(args["v"])[:, g : g + 1]
        alone["enable_gqa"] = False
        alone["attn_mask"] = _mask_slice(args["attn_mask"], 1, h, Hq)
        single = harness.call("attention", alone)
        worst = max(
            worst,
            relate(
                single,
                full,
                transform=itemgetter(np.s_[:, h : h + 1]),
                what=f"head_independence: query head {h} computed alone (with kv head {g}) "
                "differs from its slice of the multi-head output",
            ),
        )
    return worst


def _check_kv_permutation(harness: Harness, args: Args) -> float:
    first = harness.call("attention", args)
    Lk = np.shape(args["k"])[-2]
    order = example_rng(args, "kv-permutation").permutation(Lk)
    permuted = dict(args)
    permuted["k"] = np.asarray(args["k"])[..., order, :]
    permuted["v"] = np.asarray(args["v"])[..., order, :]
    permuted["attn_mask"] = _take_mask(args["attn_mask"], -1, order, Lk)
    second = harness.call("attention", permuted)
    return relate(
        second,
        first,
        what="kv_permutation_invariance: permuting keys, values and mask columns jointly "
        "changed the output",
    )


def _check_query_permutation(harness: Harness, args: Args) -> float:
    first = harness.call("attention", args)
    Lq = np.shape(args["q"])[-2]
    order = example_rng(args, "query-permutation").permutation(Lq)
    permuted = dict(args)
    permuted["q"] = np.asarray(args["q"])[..., order, :]
    permuted["attn_mask"] = _take_mask(args["attn_mask"], -2, order, Lq)
    second = harness.call("attention", permuted)
    return relate(
        second,
        first,
        transform=lambda x: x[..., order, :],
        what="query_permutation_equivariance: permuting queries (and mask rows) did not "
        "permute the output rows alike",
    )


def _check_value_linearity(harness: Harness, args: Args) -> float:
    rng = example_rng(args, "value-linearity")
    a = float(rng.choice([-1.0, 1.0]) * 2.0 ** rng.uniform(-1.0, 1.0))
    b = float(rng.choice([-1.0, 1.0]) * 2.0 ** rng.uniform(-1.0, 1.0))
    if abs(a + b - 1.0) < 0.25:  # keep a + b away from 1, so an added constant shows
        b = b + 0.5
    v1 = np.asarray(args["v"], dtype=np.float64)
    v2 = _perturb_like(rng, v1)
    first = harness.call("attention", args)
    second = harness.call("attention", {**args, "v": v2})
    # the implementation receives round(a·V1 + b·V2); V1, V2 as it received them
    combined = harness.call(
        "attention", {**args, "v": a * first.inputs["v"] + b * second.inputs["v"]}
    )
    r1, r2, r3 = first.reference.value, second.reference.value, combined.reference.value
    rows = _finite_rows(r1, r2, r3)
    bound = bound_of(combined) + abs(a) * bound_of(first) + abs(b) * bound_of(second)
    return assert_relation(
        np.where(rows, combined.output, 0.0),
        np.where(rows, a * first.output + b * second.output, 0.0),
        np.where(rows, r3, 0.0),
        np.where(rows, a * r1 + b * r2, 0.0),
        np.where(rows, bound + 4 * U64 * (abs(a) * np.abs(r1) + abs(b) * np.abs(r2)), 0.0),
        what=f"value_linearity: out({a:.4g}·V1 + {b:.4g}·V2) != {a:.4g}·out(V1) + {b:.4g}·out(V2)",
        derivation="tolerance of the three calls, weighted by |a|, |b| (the references' "
        "r3 - a·r1 - b·r2, from rounding a·V1 + b·V2 to the dtype, is subtracted)",
    )


def _check_convex_hull(harness: Harness, args: Args) -> float:
    call = harness.call("attention", args)
    masked = masked_keys(harness, call, zero_weight=True)  # (B, Hq, Lq, Lk)
    Hq, Hkv = np.shape(args["q"])[1], np.shape(args["k"])[1]
    v = _expand_kv(harness, call.inputs["v"], Hq // Hkv)  # (B, Hq, Lk, Ev)
    v = np.broadcast_to(v, call.output.shape[:-2] + v.shape[-2:])
    seen = ~masked[..., :, :, None]  # (B, Hq, Lq, Lk, 1)
    vv = v[..., None, :, :]  # (B, Hq, 1, Lk, Ev)
    lo = np.min(np.where(seen, vv, np.inf), axis=-2)
    hi = np.max(np.where(seen, vv, -np.inf), axis=-2)
    live = np.isfinite(lo) & np.isfinite(call.reference.value)  # dead rows: see fully_masked_rows
    out = call.output
    excess = np.where(live, np.maximum(lo - out, out - hi), 0.0)
    excess = np.where(np.isnan(out) & live, np.inf, np.maximum(excess, 0.0))
    return assert_related(
        excess,
        np.zeros_like(excess),
        np.where(live, bound_of(call), 0.0),
        what="convex_hull: an output left [min, max] of the value rows its query can see "
        "(by the amount shown as the error)",
        derivation="tolerance of the call (the exact output is a convex combination)",
    )


def _check_fully_masked_rows(harness: Harness, args: Args) -> float:
    call = harness.call("attention", args)
    dead = np.all(masked_keys(harness, call), axis=-1)  # (B, Hq, Lq)
    if not dead.any():
        return 0.0
    rows = np.broadcast_to(dead[..., None], call.output.shape)
    conv = harness.conventions
    if conv.mask_fill is None:
        rule = f"fully_masked_row={conv.fully_masked_row!r}"
    elif conv.mask_fill_mode == "add":
        rule = f"mask_fill={conv.mask_fill!r} added (softmax of the scores plus the fill)"
    else:
        rule = f"mask_fill={conv.mask_fill!r} (a uniform row: the mean of the visible V)"
    return assert_related(
        np.where(rows, call.output, 0.0),
        np.where(rows, call.reference.value, 0.0),
        np.where(rows, bound_of(call), 0.0),
        what=f"fully_masked_rows: a query with every key masked did not follow {rule}",
        derivation=call.tolerance.derivation,
    )


# -- GQA ---------------------------------------------------------------------------------------


def gqa_support(adapter: Adapter, dtype: str) -> str | None:
    """None when the adapter runs grouped-query attention, else why not (see
    :meth:`Harness.gqa_support`)."""
    return Harness(adapter, dtype).gqa_support()


def _check_gqa(harness: Harness, args: Args) -> float:
    grouped = harness.call("attention", args)
    Hq, Hkv = np.shape(args["q"])[1], np.shape(args["k"])[1]
    repeated_args = dict(args)
    repeated_args["k"] = _expand_kv(harness, np.asarray(args["k"]), Hq // Hkv)
    repeated_args["v"] = _expand_kv(harness, np.asarray(args["v"]), Hq // Hkv)
    repeated_args["enable_gqa"] = False
    repeated = harness.call("attention", repeated_args)
    mapping = harness.conventions.gqa_mapping
    return relate(
        grouped,
        repeated,
        what=f"gqa: enable_gqa output differs from the implementation's own output on K/V "
        f"repeated per gqa_mapping={mapping!r}",
    )


def _gqa_applies(adapter: Adapter, dtype: str) -> str | None:
    reason = applies_when_declared("attention")(adapter, dtype)
    return reason if reason is not None else gqa_support(adapter, dtype)


# -- norms and softmax -------------------------------------------------------------------------


def _check_invariance(
    component: str, transform: Callable[[np.random.Generator, Args], Args], what: str
) -> Check:
    """out(transform(args)) = out(args), within both tolerances (see ``relate``)."""

    def check(harness: Harness, args: Args) -> float:
        first = harness.call(component, args)
        second = harness.call(component, transform(example_rng(args, what), args))
        return relate(second, first, what=f"{what}: the output changed")

    return check


def _shift_norm(rng: np.random.Generator, args: Args) -> Args:
    x = np.asarray(args["x"], dtype=np.float64)
    spread = float(np.max(np.abs(x))) if x.size else 1.0
    return {**args, "x": x + float(rng.uniform(-2.0, 2.0)) * (spread if spread > 0 else 1.0)}


def _scale_input(rng: np.random.Generator, args: Args) -> Args:
    # powers of two scale exactly in every binary format (no rounding of the new input)
    exponent = int(rng.choice([-3, -2, -1, 1, 2, 3]))
    return {**args, "x": np.asarray(args["x"], dtype=np.float64) * 2.0**exponent}


def _shift_softmax(rng: np.random.Generator, args: Args) -> Args:
    return {**args, "x": np.asarray(args["x"], dtype=np.float64) + float(rng.uniform(-8.0, 8.0))}


def _check_rows_sum_to_one(harness: Harness, args: Args) -> float:
    """Σ_i out_i = 1 along ``dim``: |Σ a_i - Σ r_i| <= Σ b_i (Σ r_i is 1 up to float64
    rounding, which is thereby subtracted), plus the float64 rounding of the sums."""
    call = harness.call("softmax", args)
    dim = int(args.get("dim", -1))
    n = call.output.shape[dim]
    total = np.sum(call.output, axis=dim)
    ref_total = np.sum(call.reference.value, axis=dim)
    bound = np.sum(bound_of(call), axis=dim) + 2 * n * U64 * (
        np.sum(np.abs(call.output), axis=dim) + np.abs(ref_total)
    )
    return assert_related(
        total,
        ref_total,
        bound,
        what="rows_sum_to_one: a softmax row does not sum to 1",
        derivation="Σ of the row's per-element tolerances + float64 summation error",
    )


# -- the catalogue -----------------------------------------------------------------------------


def _attention(**options: Any) -> Inputs:
    def inputs(dtype: str) -> st.SearchStrategy[Args]:
        return strat.attention_inputs(dtype, **options)

    return inputs


def _strategy(factory: Callable[..., st.SearchStrategy[Args]], **options: Any) -> Inputs:
    def inputs(dtype: str) -> st.SearchStrategy[Args]:
        return factory(dtype, **options)

    return inputs


_NO_CAUSAL_FLAG = tuple(k for k in strat.MASK_KINDS if k != "is_causal")
_LIVE_MASKS = tuple(k for k in strat.MASK_KINDS if k != "fully_masked_rows")
#: examples for the statistical check: >= 16 query rows of >= 16 values, 8..300 keys
_BIG_ATTENTION = strat.attention_shapes(
    max_batch=1,
    max_kv_heads=2,
    max_groups=2,
    min_len=16,
    max_len=33,
    long_lengths=(97, 113, 129, 257, 300),
    min_head_dim=16,
    max_head_dim=64,
    decode=False,
)
_ATT = "attention"
#: rows per example of the statistical check of the norms: each row shares the rounding of its
#: mean and 1/σ, so the RMS over few rows is the RMS of few draws (one row of 256 gave ratios
#: of 3.6 between two correct kernels; 32 rows average the row factors out)
_STATISTIC_ROWS = 32
#: eps for the invariances of the norms (the eps = 0 limit): far below the variance of every
#: standard-regime row (σ >= 2^-4), so that the exact outputs agree to far below the tolerance
_SMALL_EPS = (1e-12, 1e-10)


def _attention_properties() -> tuple[Property, ...]:
    app = applies_when_declared(_ATT)
    return (
        Property(
            _ATT,
            "equivalence",
            "every output element within the derived bound of the float64 reference; "
            "NaN/inf positions exact",
            _attention(),
            equivalence_check(_ATT),
            app,
        ),
        Property(
            _ATT,
            "error_statistic",
            "RMS of error/absref no worse than a correct kernel emulated at the declared "
            "precision (long key sequences)",
            _attention(
                shapes=_BIG_ATTENTION,
                mask_kinds=("none", "bool", "is_causal"),
                logits=("moderate",),
            ),
            _error_statistic(_ATT),
            app,
        ),
        Property(
            _ATT,
            "softcap",
            "with a softcap (cap · tanh(S / cap) on the scaled scores, before the mask), every "
            "output element within the derived bound of the float64 reference",
            _attention(softcap=True),
            equivalence_check(_ATT),
            applies_when_received(_ATT, "softcap", app),
        ),
        Property(
            _ATT,
            "shape_dtype",
            "a native array of shape (B, Hq, Lq, Ev) in the input dtype",
            _attention(),
            shape_dtype_check(_ATT),
            app,
        ),
        Property(
            _ATT,
            "causality",
            "with is_causal, changing keys/values a query must not see (under the "
            "declared alignment) leaves its output unchanged",
            _attention(shapes=strat.attention_shapes(min_len=2), mask_kinds=("is_causal",)),
            _check_causality,
            app,
        ),
        Property(
            _ATT,
            "key_padding_invariance",
            "changing keys/values that the mask pads out, or removing them, leaves every "
            "output unchanged",
            _attention(
                shapes=st.one_of(
                    strat.attention_shapes(min_len=2, square=True), strat.attention_shapes()
                ),
                mask_kinds=("key_padding",),
            ),
            _check_key_padding,
            app,
        ),
        Property(
            _ATT,
            "batch_independence",
            "each batch example computed alone equals its slice of the batched output",
            _attention(shapes=strat.attention_shapes(max_batch=3, long_lengths=())),
            _check_batch_independence,
            app,
        ),
        Property(
            _ATT,
            "head_independence",
            "each query head computed alone with its kv head equals its slice of the "
            "multi-head output",
            _attention(shapes=strat.attention_shapes(long_lengths=())),
            _check_head_independence,
            app,
        ),
        Property(
            _ATT,
            "kv_permutation_invariance",
            "permuting keys, values and mask columns jointly leaves the output unchanged",
            _attention(mask_kinds=_NO_CAUSAL_FLAG),
            _check_kv_permutation,
            app,
        ),
        Property(
            _ATT,
            "query_permutation_equivariance",
            "permuting queries and mask rows permutes the output rows alike",
            _attention(mask_kinds=_NO_CAUSAL_FLAG),
            _check_query_permutation,
            app,
        ),
        Property(
            _ATT,
            "value_linearity",
            "out(a·V1 + b·V2) = a·out(V1) + b·out(V2) within the three calls' bounds",
            _attention(),
            _check_value_linearity,
            app,
        ),
        Property(
            _ATT,
            "convex_hull",
            "each output element lies in [min, max] of the value rows its query sees",
            _attention(mask_kinds=_LIVE_MASKS),
            _check_convex_hull,
            app,
        ),
        Property(
            _ATT,
            "fully_masked_rows",
            "a query with every key masked outputs what the declared convention says "
            "(zero, NaN, or the mean of V under a finite mask_fill)",
            _attention(mask_kinds=("fully_masked_rows",)),
            _check_fully_masked_rows,
            app,
        ),
        Property(
            _ATT,
            "large_logits",
            "no overflow or NaN, and equivalence, at logits beyond exp's overflow "
            "threshold of the dtype",
            _attention(logits=("large",)),
            equivalence_check(_ATT),
            app,
        ),
        Property(
            _ATT,
            "long_context",
            "equivalence on long sequences (up to 128k keys in the thorough profile), judged "
            "exactly on sampled query rows: tile boundaries, causal frontier, padding edges",
            strat.long_context_inputs,
            _check_long_context,
            app,
            sized_by_profile=True,
        ),
        Property(
            _ATT,
            "gqa",
            "enable_gqa equals the implementation's own output on K/V repeated per the "
            "declared head mapping",
            _attention(shapes=strat.attention_shapes(gqa=True)),
            _check_gqa,
            _gqa_applies,
        ),
    )


def _check_long_context(harness: Harness, args: Args) -> float:
    """Equivalence on the query rows :func:`~transpec.oracle.kernels.reference.sampled_rows`
    chooses (tile boundaries, causal frontier, padding edges, first/last, random); the
    implementation runs on the whole input."""
    return harness.assert_equivalent(harness.call(_ATT, args, rows="sampled"))


def _check_long_input(component: str) -> Callable[[Harness, Args], float]:
    """Equivalence on the rows :func:`~transpec.oracle.kernels.reference.sampled_norm_rows`
    chooses (first and last, tile boundaries, random); the implementation runs on the whole
    input."""

    def check(harness: Harness, args: Args) -> float:
        return harness.assert_equivalent(harness.call(component, args, rows="sampled"))

    return check


def _norm_properties(
    component: str,
    factory: Callable[..., st.SearchStrategy[Args]],
    *,
    centered: bool,
    default_eps: bool,
) -> tuple[Property, ...]:
    """The properties of a norm whose arguments ``factory`` draws. ``centered``: it subtracts
    the mean (LayerNorm), so it is also shift invariant and has a |μ| ≫ σ regime.
    ``default_eps``: ``factory`` takes a ``default_eps`` option (eps=None, the dtype's epsilon),
    which the scale invariance turns off."""
    app = applies_when_declared(component)
    # RMSNorm's eps=None is the dtype's epsilon (float16: ~1e-3), not small against σ²
    no_default_eps = {"default_eps": False} if default_eps else {}
    props = [
        Property(
            component,
            "equivalence",
            "every output element within the derived bound of the float64 reference",
            _strategy(factory),
            equivalence_check(component),
            app,
        ),
        Property(
            component,
            "error_statistic",
            "RMS of error/absref no worse than a correct kernel emulated at the declared "
            "precision (256..512 features)",
            _strategy(
                factory,
                regimes=("standard",),
                max_normalized_dims=1,
                min_features=256,
                max_features=512,
                min_rows=_STATISTIC_ROWS,
            ),
            _error_statistic(component),
            app,
        ),
        Property(
            component,
            "shape_dtype",
            "a native array of x's shape in the input dtype",
            _strategy(factory),
            shape_dtype_check(component),
            app,
        ),
    ]
    if centered:
        props.append(
            Property(
                component,
                "shift_invariance",
                "x -> x + c leaves the output unchanged (eps small against the variance)",
                _strategy(factory, regimes=("standard", "small_n"), eps=_SMALL_EPS),
                _check_invariance(component, _shift_norm, "shift_invariance"),
                app,
            )
        )
    props.append(
        Property(
            component,
            "scale_invariance",
            "x -> 2^k x leaves the output unchanged (eps small against the variance)",
            _strategy(factory, regimes=("standard", "small_n"), eps=_SMALL_EPS, **no_default_eps),
            _check_invariance(component, _scale_input, "scale_invariance"),
            app,
        )
    )
    props.append(
        Property(
            component,
            "small_variance",
            "equivalence where σ² (mean(x²) for RMSNorm) is within ×10 of eps",
            _strategy(factory, regimes=("small_variance",)),
            equivalence_check(component),
            app,
        )
    )
    if centered:
        props.append(
            Property(
                component,
                "bounded_output",
                "|y_i| <= √(n - 1) with unit weight and no bias, in every regime",
                _strategy(
                    factory, regimes=("large_mean", "small_n", "standard"), weight=False, bias=False
                ),
                _check_bounded_output,
                app,
            )
        )
        props.append(
            Property(
                component,
                "large_mean",
                "equivalence at |μ| ≫ σ, judged by the variance algorithm's own bound",
                _strategy(factory, regimes=("large_mean",)),
                equivalence_check(component),
                app,
            )
        )
    props.append(
        Property(
            component,
            "normalized_shape",
            "equivalence over 2- and 3-dimensional normalized shapes",
            _strategy(factory, min_normalized_dims=2),
            equivalence_check(component),
            app,
        )
    )
    props.append(
        Property(
            component,
            "long_input",
            "equivalence on long inputs (hidden sizes past tile boundaries; past the 2²⁵ "
            "elements where the reference samples rows by itself in the thorough profile), "
            "judged exactly on sampled rows",
            partial(strat.long_norm_inputs, centered=centered),
            _check_long_input(component),
            app,
            sized_by_profile=True,
        )
    )
    return tuple(props)


def _check_bounded_output(harness: Harness, args: Args) -> float:
    """LayerNorm with unit weight and no bias: |y_i| <= √(n - 1) for every x and every
    declaration (a deviation can hold at most (n - 1)/n of the row's sum of squares; eps and
    the unbiased variance only shrink y), up to the first-order rounding of an algorithm that
    computes the variance from the computed mean (docs/tolerance.md §3.3, "The hard bound")."""
    from transpec.oracle.engine.error_model import SAFETY, gamma, units

    call = harness.call("layer_norm", args)
    ref = call.reference
    n = float(ref.terms["n"])
    un = units(harness.dtype, harness.precision("layer_norm"), elementwise=True)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        kappa = 1.0 + np.asarray(ref.terms["mean_abs"]) * np.asarray(ref.terms["inv_sigma"])
        rel = (gamma(n + 2, un.acc) + 2.0 * un.to_elem) * kappa
        rel = rel + un.fn + 3.0 * un.elem + un.store + un.out + un.acc
        limit = np.sqrt(n - 1.0) * (1.0 + SAFETY * rel) + SAFETY * un.eta_out
        limit = np.broadcast_to(limit, call.output.shape)
        y = np.abs(call.output)
        ratios = np.where(np.isfinite(y), y / limit, np.inf)
    worst = float(np.max(ratios)) if ratios.size else 0.0
    if not worst <= 1.0:
        at = np.unravel_index(int(np.argmax(ratios)), ratios.shape)
        raise PropertyViolation(
            f"bounded_output: |y| = {float(y[at]):.4g} at {tuple(map(int, at))} exceeds "
            f"√(n - 1) = {np.sqrt(n - 1.0):.4g} (n = {int(n)}; allowed with rounding "
            f"{float(limit[at]):.4g}): no x gives that, whatever the variance algorithm",
            ratio=worst,
        )
    return worst


def _softmax_properties() -> tuple[Property, ...]:
    app = applies_when_declared("softmax")
    inputs = _strategy(strat.softmax_inputs)
    return (
        Property(
            "softmax",
            "equivalence",
            "every output element within the derived bound of the float64 reference",
            inputs,
            equivalence_check("softmax"),
            app,
        ),
        Property(
            "softmax",
            "error_statistic",
            "RMS of error/absref no worse than a correct kernel emulated at the declared "
            "precision (16..48 rows of 256..1024 logits)",
            _strategy(strat.softmax_statistic_inputs),
            _error_statistic("softmax"),
            app,
        ),
        Property(
            "softmax",
            "shape_dtype",
            "a native array of x's shape in the input dtype",
            inputs,
            shape_dtype_check("softmax"),
            app,
        ),
        Property(
            "softmax",
            "rows_sum_to_one",
            "every row sums to 1 within the sum of its elements' bounds",
            inputs,
            _check_rows_sum_to_one,
            app,
        ),
        Property(
            "softmax",
            "shift_invariance",
            "x -> x + c (a constant) leaves the output unchanged",
            _strategy(strat.softmax_inputs, logits=("moderate",)),
            _check_invariance("softmax", _shift_softmax, "shift_invariance"),
            app,
        ),
        Property(
            "softmax",
            "large_logits",
            "no overflow or NaN, and equivalence, at logits beyond exp's overflow "
            "threshold of the dtype",
            _strategy(strat.softmax_inputs, logits=("large",)),
            equivalence_check("softmax"),
            app,
        ),
    )


def core_properties() -> tuple[Property, ...]:
    """The properties of the kernels: softmax, attention, LayerNorm, RMSNorm."""
    return (
        *_softmax_properties(),
        *_attention_properties(),
        *_norm_properties("layer_norm", strat.layer_norm_inputs, centered=True, default_eps=False),
        *_norm_properties("rms_norm", strat.rms_norm_inputs, centered=False, default_eps=True),
    )
