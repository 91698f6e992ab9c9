"""The properties of the layer components (registered into
:data:`transpec.oracle.kernels.properties.PROPERTIES`).

=========================================  =========================================================
property                                   what it checks
=========================================  =========================================================
``<component>.equivalence``                every element within the propagated bound of the float64
                                           reference (:mod:`transpec.oracle.layers.tolerance`);
                                           NaN positions exact
``<component>.shape_dtype``                a native array of the reference's shape in the dtype
``multi_head_attention.permutation_``      self-attention without masks: permuting the sequence
``equivariance``, ``encoder_layer.``       permutes the output
``permutation_equivariance``
``multi_head_attention.head_independence`` with head g's out_proj columns zeroed, replacing head
                                           g's Q/K/V projection rows leaves the output unchanged
                                           (a wrong head split mixes heads and fails)
``multi_head_attention_weights.``          each row of the weights sums to 1 within the sum of
``rows_sum_to_one``                        the row's bounds; a query row with no visible key is
                                           NaN (torch, ``fully_masked_row="nan"``) or all zero
                                           (``"zero"``, NumpyAdapter) as the adapter declares
``decoder_layer.decoder_causality``        causal target mask: changing target tokens after i
                                           leaves the outputs at positions <= i unchanged
``decoder_layer.source_key_padding_``      changing padded memory positions leaves the output
``invariance``                             unchanged (cross-attention hides them)
``<component>.fast_slow_agreement``        (adapters with a slow path, torch) the default path
                                           agrees with the slow path of the same module within
                                           both bounds, NaN positions equal
=========================================  =========================================================

Metamorphic bounds follow :mod:`transpec.oracle.kernels.properties`: the sum of the calls' derived
tolerances, with the references' own difference subtracted (``assert_relation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.adapters.base import Adapter
from transpec.oracle import components
from transpec.oracle.engine.harness import Harness, assert_related, bound_of, relate
from transpec.oracle.engine.strategy import Args
from transpec.oracle.layers import strategies as sl

MHA, FFN, ENC, DEC = "multi_head_attention", "feed_forward", "encoder_layer", "decoder_layer"
MHAW = "multi_head_attention_weights"


def _rng(args: Args, salt: str) -> np.random.Generator:
    from transpec.oracle.engine.property import example_rng

    flat = {k: v for k, v in args.items() if k != "params"}
    for key, value in sorted(args.get("params", {}).items()):
        flat[f"params.{key}"] = value
    return example_rng(flat, salt)


def _inputs(component: str, **options: Any) -> Callable[[str], st.SearchStrategy[Args]]:
    def inputs(dtype: str) -> st.SearchStrategy[Args]:
        return sl.layer_inputs(component, dtype, **options)

    return inputs


def _seq_axis(args: Args) -> int:
    return 1 if args.get("batch_first", True) else 0


def _check_permutation(component: str) -> Callable[[Harness, Args], float]:
    """The check of permutation equivariance: the component's sequence arguments (its record's
    ``array`` arguments) permuted alike along the sequence axis permute the output; an argument
    that is the first one (self-attention: key and value are the query) stays the same object."""
    names = components.get(component).arguments_of("array")

    def check(harness: Harness, args: Args) -> float:
        first = harness.call(component, args)
        axis = _seq_axis(args)
        length = np.shape(args[names[0]])[axis]
        order = _rng(args, "layer-permutation").permutation(length)
        permuted = dict(args)
        for name in names:
            permuted[name] = np.take(np.asarray(args[name]), order, axis=axis)
        for name in names[1:]:
            if args[name] is args[names[0]]:
                permuted[name] = permuted[names[0]]
        second = harness.call(component, permuted)
        return relate(
            second,
            first,
            transform=lambda x: np.take(x, order, axis=axis),
            what="permutation_equivariance: permuting the sequence did not permute the output",
        )

    return check


def _check_head_independence(harness: Harness, args: Args) -> float:
    heads = int(args["num_heads"])
    if heads < 2:
        return 0.0
    rng = _rng(args, "head-independence")
    g = int(rng.integers(0, heads))
    params = {k: np.array(v, dtype=np.float64) for k, v in args["params"].items()}
    e = params["out_proj.weight"].shape[0]
    dh = e // heads
    cols = slice(g * dh, (g + 1) * dh)
    params["out_proj.weight"][:, cols] = 0.0
    base = {**args, "params": params}
    changed_params = {k: v.copy() for k, v in params.items()}
    if "in_proj_weight" in changed_params:
        w = changed_params["in_proj_weight"]
        blocks = [(w, block * e) for block in range(3)]
    else:  # kdim/vdim != embed_dim: separate q/k/v projections
        blocks = [(changed_params[f"{n}_proj_weight"], 0) for n in "qkv"]
    for w, start in blocks:
        rows = slice(start + g * dh, start + (g + 1) * dh)
        w[rows] = rng.uniform(-1.0, 1.0, w[rows].shape) * float(np.max(np.abs(w)))
    first = harness.call(MHA, base)
    second = harness.call(MHA, {**args, "params": changed_params})
    return relate(
        second,
        first,
        what=f"head_independence: with head {g}'s output projection zeroed, changing its "
        "Q/K/V projection rows changed the output",
    )


def _perturb_positions(
    rng: np.random.Generator, x: np.ndarray, selected: np.ndarray, axis: int
) -> np.ndarray:
    """x with fresh N(0, 1) values at the positions ``selected`` (B, L) marks."""
    sel = selected if axis == 1 else selected.T  # (L, B) when sequence-first
    mask = np.broadcast_to(sel[..., None], x.shape)
    return np.where(mask, rng.standard_normal(x.shape), x)


def _check_decoder_causality(harness: Harness, args: Args) -> float:
    axis = _seq_axis(args)
    tgt = np.asarray(args["tgt"])
    length, batch = tgt.shape[axis], tgt.shape[1 - axis]
    if length < 2:
        return 0.0
    rng = _rng(args, "decoder-causality")
    cut = int(rng.integers(0, length - 1))  # positions > cut change
    later = np.broadcast_to(np.arange(length)[None, :] > cut, (batch, length))
    changed = {**args, "tgt": _perturb_positions(rng, tgt, later, axis)}
    first = harness.call(DEC, args)
    second = harness.call(DEC, changed)
    keep = np.take(np.arange(length) <= cut, np.arange(length))
    shape = [1, 1, 1]
    shape[axis] = length
    return relate(
        second,
        first,
        rows=np.broadcast_to(keep.reshape(shape), first.output.shape),
        what=f"decoder_causality: changing target tokens after position {cut} moved outputs "
        f"at positions <= {cut}",
        why="the causal mask hides later tokens: exact outputs equal",
    )


def _check_memory_padding(harness: Harness, args: Args) -> float:
    kpm = args.get("memory_key_padding_mask")
    if kpm is None:
        return 0.0
    k = np.asarray(kpm)
    padded = k if k.dtype == np.bool_ else np.isneginf(k)
    if not padded.any():
        return 0.0
    axis = _seq_axis(args)
    rng = _rng(args, "memory-padding")
    changed = {**args, "memory": _perturb_positions(rng, np.asarray(args["memory"]), padded, axis)}
    first = harness.call(DEC, args)
    second = harness.call(DEC, changed)
    return relate(
        second,
        first,
        what="source_key_padding_invariance: changing padded memory positions changed the output",
        why="padded keys get zero weight: exact outputs equal",
    )


def _check_rows_sum_to_one(harness: Harness, args: Args) -> float:
    call = harness.call(MHAW, args)
    ref = np.asarray(call.reference.value, dtype=np.float64)
    out = np.asarray(call.output, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        sums = np.sum(out, axis=-1)
        ref_sums = np.sum(ref, axis=-1)
    # 1 per row; NaN or 0 where the reference's row has no visible key (declared convention)
    expected = np.where(np.isnan(ref_sums), np.nan, np.where(ref_sums < 0.5, 0.0, 1.0))
    n = ref.shape[-1]
    bound = np.sum(bound_of(call), axis=-1) + n * np.finfo(np.float64).eps
    return assert_related(
        sums,
        expected,
        bound,
        what="rows_sum_to_one: a row of the attention weights does not sum to 1",
        derivation="sum of the row's element bounds (the row of the exact weights sums to 1) "
        "+ n·eps64 for the float64 sum",
    )


def _check_fast_slow(component: str) -> Callable[[Harness, Args], float]:
    def check(harness: Harness, args: Args) -> float:
        slow = harness.slow_path()  # the run's declarations snapshot, the same worker
        if slow is None:
            raise ValueError(f"{harness.adapter.name} has no separate slow path")
        a = harness.call(component, args)
        b = slow.call(component, args)
        return assert_related(
            a.output,
            b.output,
            bound_of(a) + bound_of(b),
            what=f"fast_slow_agreement: {harness.adapter.name}'s default path and its slow path "
            "of the same module disagree",
            derivation="sum of both paths' tolerances (the same module: exact outputs equal)",
        )

    return check


def _applies(component: str) -> Callable[[Adapter, str], str | None]:
    from transpec.oracle.engine.property import applies_when_declared

    return applies_when_declared(component)


def _fast_slow_applies(component: str) -> Callable[[Adapter, str], str | None]:
    def applies(adapter: Adapter, dtype: str) -> str | None:
        reason = _applies(component)(adapter, dtype)
        if reason is not None:
            return reason
        if adapter.slow_path_adapter() is None:
            return f"{adapter.name} has no separate slow path"
        return None

    return applies


def layer_properties() -> tuple[Any, ...]:
    """The layer properties, as :class:`transpec.oracle.kernels.properties.Property` objects."""
    from transpec.oracle.engine.property import Property, equivalence_check, shape_dtype_check

    props: list[Any] = []
    for comp in components.names("layers"):
        app = _applies(comp)
        props.append(
            Property(
                comp,
                "equivalence",
                "every element within the bound propagated through the layer from the float64 "
                "reference; NaN positions exact",
                _inputs(comp),
                equivalence_check(comp),
                app,
            )
        )
        props.append(
            Property(
                comp,
                "shape_dtype",
                "a native array of the reference's shape in the input dtype",
                _inputs(comp),
                shape_dtype_check(comp),
                app,
            )
        )
    props.append(
        Property(
            MHA,
            "permutation_equivariance",
            "self-attention without masks: permuting the sequence permutes the output",
            _inputs(MHA, masks=("none",), self_attention=True),
            _check_permutation(MHA),
            _applies(MHA),
        )
    )
    props.append(
        Property(
            MHA,
            "head_independence",
            "with head g's output projection zeroed, changing head g's Q/K/V projection "
            "rows leaves the output unchanged",
            _inputs(MHA, min_heads=2),
            _check_head_independence,
            _applies(MHA),
        )
    )
    props.append(
        Property(
            MHAW,
            "rows_sum_to_one",
            "each row of the attention weights sums to 1 within the sum of its bounds; rows "
            "with no visible key NaN or zero as the adapter declares",
            _inputs(MHAW),
            _check_rows_sum_to_one,
            _applies(MHAW),
        )
    )
    props.append(
        Property(
            ENC,
            "permutation_equivariance",
            "without masks, permuting the source sequence permutes the output",
            _inputs(ENC, masks=("none",)),
            _check_permutation(ENC),
            _applies(ENC),
        )
    )
    props.append(
        Property(
            DEC,
            "decoder_causality",
            "causal target mask: changing target tokens after i leaves outputs at <= i unchanged",
            _inputs(DEC, masks=("causal",), min_len=2),
            _check_decoder_causality,
            _applies(DEC),
        )
    )
    props.append(
        Property(
            DEC,
            "source_key_padding_invariance",
            "changing padded memory positions leaves the output unchanged",
            _inputs(DEC, memory_masks=("key_padding", "fully_padded")),
            _check_memory_padding,
            _applies(DEC),
        )
    )
    for comp in (MHA, ENC, DEC):
        props.append(
            Property(
                comp,
                "fast_slow_agreement",
                "the default (fast where taken) path agrees with the slow path of the same "
                "module within both bounds; NaN positions equal",
                _inputs(comp, batch_first=True, odd_heads=False),
                _check_fast_slow(comp),
                _fast_slow_applies(comp),
            )
        )
    return tuple(props)
