"""The properties of the kernels' backward passes.

``grad_equivalence_<arg>``: one property per gradient, each element within its derived bound
(docs/gradients.md). The metamorphic ones check identities proved in
:mod:`transpec.oracle.gradients` (spec: :mod:`transpec.spec.backward`) without trusting the
reference's formulas, each against the bound the calls' tolerances imply:

* ``grad_row_sum`` (softmax, LayerNorm): shift invariance makes x̄ sum to 0 over each slice;
* ``grad_orthogonality`` (LayerNorm, RMSNorm): scale invariance makes x̄ orthogonal to x
  (eps = 0; the reference's residual at the small eps drawn is subtracted);
* ``grad_causal_zeros``: with the cotangent zero from query t on, keys only queries >= t see get
  exactly zero k̄ and v̄;
* ``grad_masked_keys_zero``: keys no query sees, and -inf entries of a float mask, get exactly 0;
* ``grad_gqa_group_sum``: k̄, v̄ of grouped K/V equal the sums over each group of the gradients
  of the implementation's own call on K/V repeated per the head map;
* ``grad_linearity``: the backward is linear in the cotangent.

Every property is a backward one (``Property.backward``): a run includes them on request.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.adapters.base import Adapter
from transpec.oracle import components
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.engine.error_model import U64
from transpec.oracle.engine.harness import Harness, assert_related, assert_relation
from transpec.oracle.engine.outcome import PropertyViolation
from transpec.oracle.engine.picture import Evidence
from transpec.oracle.engine.property import Check, Property, example_rng
from transpec.oracle.engine.strategy import Args
from transpec.oracle.gradients import calls
from transpec.oracle.gradients.calls import GradientCall, bound_of, call_vjp, split_cotangent
from transpec.oracle.gradients.strategies import with_cotangent
from transpec.oracle.gradients.vjp import group_sum, reduce_to
from transpec.oracle.kernels import strategies as kstrat

_BOTH = "sum of the calls' gradient bounds (their references' difference subtracted)"


def applies_with_gradients(component: str) -> Callable[[Adapter, str], str | None]:
    """Runs for an adapter that computes ``component``'s backward in a declared dtype."""

    def applies(adapter: Adapter, dtype: str) -> str | None:
        if not adapter.provides(component):
            return f"{adapter.name} does not provide {component}"
        if not adapter.provides_gradients(component):
            return f"{adapter.name} does not provide {component}'s gradients"
        dt = canonical_dtype(dtype)
        if dt not in tuple(canonical_dtype(d) for d in adapter.dtypes):
            return f"{adapter.name} does not declare dtype {dt}"
        fill = adapter.conventions.for_dtype(dt).mask_fill
        if component in FINITE_FILL_UNDERIVED and fill is not None:
            return (
                f"transpec's backward of {component} is derived for masked scores of -inf; "
                f"{adapter.name} declares mask_fill={fill!r} in {dt}"
            )
        return None

    return applies


FINITE_FILL_UNDERIVED = (
    "multi_head_attention",
    "multi_head_attention_weights",
    "encoder_layer",
    "decoder_layer",
)
"""The layers whose backward reference (:mod:`transpec.oracle.gradients.layers`) is derived for
masked scores of -inf only: under a declared finite ``mask_fill`` their gradient properties are
skipped with that reason, never judged against a reference of another masking."""


def _inputs(component: str, **options: Any) -> Callable[[str], st.SearchStrategy[Args]]:
    def inputs(dtype: str) -> st.SearchStrategy[Args]:
        return with_cotangent(component, dtype, **options)

    return inputs


def _vjp(harness: Harness, component: str, args: Args) -> GradientCall:
    rest, g = split_cotangent(args)
    return call_vjp(harness, component, rest, g)


def grad_equivalence(component: str, name: str) -> Check:
    """Gradient ``name`` of one backward call within its bound of the reference."""

    def check(harness: Harness, args: Args) -> float:
        call = _vjp(harness, component, args)
        if name not in call.grads:
            return 0.0  # not differentiable in this example (a boolean or absent mask)
        return calls.assert_gradient(call, name)

    return check


def _slice_sum(call: GradientCall, name: str, weights: np.ndarray | None, what: str) -> float:
    """Σ over each normalized slice of weights ∘ x̄ must equal the reference's (0 exactly, or
    the reference's residual), within Σ weights·bound + the float64 summation error."""
    component = call.component
    if component == "softmax":
        dim = int(call.inputs.get("dim", -1))
        axes: tuple[int, ...] = (dim,)
    else:
        ns = call.inputs["normalized_shape"]
        n_axes = 1 if isinstance(ns, (int, np.integer)) else len(tuple(ns))
        axes = tuple(range(-n_axes, 0))
    w = 1.0 if weights is None else weights
    got = call.grads[name]
    ref = call.reference.grads[name].value
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.sum(got * w, axis=axes)
        expected = np.sum(ref * w, axis=axes)
        bound = np.sum(bound_of(call, name) * np.abs(w), axis=axes)
        n = float(np.prod([got.shape[a] for a in axes]))
        arithmetic = 2 * n * U64 * np.sum(np.abs(got * w) + np.abs(ref * w), axis=axes)
    return assert_related(
        total,
        expected,
        bound + np.where(np.isfinite(arithmetic), arithmetic, 0.0),
        what=what,
        derivation="Σ over the slice of the elements' gradient bounds (× |weight|) + float64 "
        "summation error",
    )


def _check_row_sum(component: str) -> Check:
    def check(harness: Harness, args: Args) -> float:
        call = _vjp(harness, component, args)
        return _slice_sum(call, "x", None, f"{component} x̄ does not sum to 0 over the slice")

    return check


def _check_orthogonality(component: str) -> Check:
    def check(harness: Harness, args: Args) -> float:
        call = _vjp(harness, component, args)
        x = np.asarray(call.inputs["x"], dtype=np.float64)
        return _slice_sum(call, "x", x, f"{component} x̄ is not orthogonal to x (Σ x̄∘x ≠ 0)")

    return check


def _check_linearity(component: str) -> Check:
    """vjp(a·g1 + b·g2) = a·vjp(g1) + b·vjp(g2), a, b powers of two of either sign."""

    def check(harness: Harness, args: Args) -> float:
        rest, g1 = split_cotangent(args)
        rng = example_rng(args, "grad_linearity")
        g2 = rng.standard_normal(g1.shape) * float(np.max(np.abs(g1)) or 1.0)
        a, b = (float(rng.choice([-2.0, -1.0, 0.5, 1.0, 2.0])) for _ in range(2))
        c1 = call_vjp(harness, component, rest, g1)
        c2 = call_vjp(harness, component, rest, g2)
        c3 = call_vjp(harness, component, rest, a * c1.cotangent + b * c2.cotangent)
        worst = 0.0
        for name in c3.grads:
            base = a * c1.grads[name] + b * c2.grads[name]
            ref_base = a * c1.reference.grads[name].value + b * c2.reference.grads[name].value
            bound = bound_of(c3, name) + abs(a) * bound_of(c1, name) + abs(b) * bound_of(c2, name)
            worst = max(
                worst,
                _over_gradient(
                    c3,
                    name,
                    functools.partial(
                        assert_relation,
                        c3.grads[name],
                        base,
                        c3.reference.grads[name].value,
                        ref_base,
                        bound,
                        what=f"{component} backward is not linear in the cotangent ({name}̄, "
                        f"a={a:g}, b={b:g})",
                        derivation=_BOTH,
                    ),
                ),
            )
        return worst

    return check


# -- attention ---------------------------------------------------------------------------------


def _over_gradient(call: GradientCall, name: str, check: Callable[[], float]) -> float:
    """``check()``, a relation over gradient ``name`` of ``call`` (an array of its shape); its
    failure's picture is drawn over that gradient (dK key × feature beside the mask transposed,
    :func:`transpec.oracle.engine.picture.gradient_view`) and the arguments the call received,
    which a relation's evidence does not know."""
    try:
        return check()
    except PropertyViolation as exc:
        if isinstance(exc.evidence, Evidence):
            exc.evidence = dataclasses.replace(exc.evidence, gradient=name, args=call.inputs)
        raise


def _zero_at(call: GradientCall, name: str, where: np.ndarray, what: str) -> float:
    """Gradient ``name`` must be 0 where ``where`` holds (within the call's bound there, the
    underflow floor: the weights are exactly 0)."""
    got = call.grads[name]
    where = np.broadcast_to(where, got.shape)
    if not where.any():
        return 0.0
    zeros = np.zeros_like(got)
    return _over_gradient(
        call,
        name,
        functools.partial(
            assert_related,
            np.where(where, got, 0.0),
            zeros,
            np.where(where, bound_of(call, name), 0.0),
            what=what,
            derivation="exactly 0 (proved); the bound there is the underflow floor",
        ),
    )


def _kv_visible(harness: Harness, call: GradientCall) -> tuple[np.ndarray, np.ndarray]:
    """(keys some query sees, per kv head: shape (..., Hkv, Lk, 1); the -inf entries of a float
    mask) under the declared conventions."""
    from transpec.oracle.kernels.reference import attention_setup

    setup = attention_setup(**call.inputs, conventions=harness.conventions)
    weights = call.reference.forward.weights
    assert weights is not None
    visible = np.broadcast_to(np.asarray(setup.visible), weights.shape)
    if setup.additive is not None:
        visible = visible & ~np.isneginf(np.broadcast_to(setup.additive, weights.shape))
    seen = np.any(visible, axis=-2).astype(np.float64)[..., None]  # (..., Hq, Lk, 1)
    k_shape = call.grads["k"].shape
    if len(k_shape) >= 3:
        seen = group_sum(seen, k_shape[-3], harness.conventions.gqa_mapping)
    seen = reduce_to(seen, (*k_shape[:-1], 1))
    neg = (
        np.isneginf(np.asarray(call.inputs["attn_mask"], dtype=np.float64))
        if setup.additive is not None
        else np.zeros((), dtype=bool)
    )
    return seen > 0, neg


def _check_masked_keys(harness: Harness, args: Args) -> float:
    if harness.conventions.mask_fill is not None:
        return 0.0  # a finite fill gives masked keys a weight: the identity does not apply
    call = _vjp(harness, "attention", args)
    seen, neg = _kv_visible(harness, call)
    worst = 0.0
    for name in ("k", "v"):
        worst = max(
            worst,
            _zero_at(call, name, ~seen, f"attention {name}̄ of keys no query sees is not 0"),
        )
    if "attn_mask" in call.grads:
        worst = max(
            worst,
            _zero_at(call, "attn_mask", neg, "attention mask gradient at -inf entries is not 0"),
        )
    return worst


def _check_causal_zeros(harness: Harness, args: Args) -> float:
    """Cotangent zero on queries >= t: keys j >= t + offset are seen by those queries only."""
    if harness.conventions.mask_fill is not None:
        return 0.0
    rest, g = split_cotangent(args)
    lq, lk = g.shape[-2], np.shape(rest["k"])[-2]
    offset = harness.conventions.causal_offset(lq, lk)
    if offset is None:
        return 0.0  # the causal rule hides no key from these queries
    rng = example_rng(args, "grad_causal_zeros")
    t = int(rng.integers(1, lq)) if lq > 1 else 1
    g = np.array(g)
    g[..., t:, :] = 0.0
    call = call_vjp(harness, "attention", rest, g)
    later = (np.arange(lk) >= t + offset)[:, None]
    worst = 0.0
    for name in ("k", "v"):
        worst = max(
            worst,
            _zero_at(
                call,
                name,
                later,
                f"attention {name}̄ of keys after query {t - 1} (cotangent 0 from query {t} on, "
                f"is_causal, {harness.conventions.causal_alignment}) is not 0",
            ),
        )
    return worst


def _check_gqa_sum(harness: Harness, args: Args) -> float:
    rest, g = split_cotangent(args)
    grouped = call_vjp(harness, "attention", rest, g)
    q, k = np.asarray(rest["q"]), np.asarray(rest["k"])
    hq, hkv = q.shape[-3], k.shape[-3]
    repeated_args = harness.lower_gqa(rest)
    repeated = call_vjp(harness, "attention", repeated_args, g)
    mapping = harness.conventions.gqa_mapping
    worst = 0.0
    for name in ("k", "v"):
        summed = group_sum(repeated.grads[name], hkv, mapping)
        ref_summed = group_sum(repeated.reference.grads[name].value, hkv, mapping)
        bound = bound_of(grouped, name) + group_sum(bound_of(repeated, name), hkv, mapping)
        worst = max(
            worst,
            assert_relation(
                grouped.grads[name],
                summed,
                grouped.reference.grads[name].value,
                ref_summed,
                bound,
                what=f"attention {name}̄ with enable_gqa ({hq} query heads, {hkv} kv heads) "
                f"differs from the group sums of the implementation's own gradients on K/V "
                f"repeated per gqa_mapping={mapping!r}",
                derivation=_BOTH,
            ),
        )
    return worst


def _gqa_applies(adapter: Adapter, dtype: str) -> str | None:
    reason = applies_with_gradients("attention")(adapter, dtype)
    if reason is not None:
        return reason
    if adapter.supports_gqa is False:
        return f"{adapter.name} declares supports_gqa = False"
    return None


# -- norms -------------------------------------------------------------------------------------


#: the strategy options that make a gradient's argument present in every example (a norm's
#: weight and bias are otherwise drawn half the time)
_PRESENT: dict[tuple[str, str], dict[str, Any]] = {
    ("layer_norm", "weight"): {"weight": True},
    ("layer_norm", "bias"): {"bias": True},
    ("rms_norm", "weight"): {"weight": True},
    ("attention", "attn_mask"): {
        "mask_kinds": tuple(k for k in kstrat.MASK_KINDS if k not in ("none", "is_causal"))
    },
}


def _equivalences(component: str) -> list[Property]:
    app = applies_with_gradients(component)
    return [
        Property(
            component,
            f"grad_equivalence_{name}",
            f"every element of the gradient of {name} within its derived bound of the float64 "
            "reference backward (docs/gradients.md)",
            _inputs(component, **_PRESENT.get((component, name), {})),
            grad_equivalence(component, name),
            app,
            backward=True,
        )
        for name in components.get(component).gradients
    ]


#: eps of the norms' orthogonality: far below every standard-regime variance (as the forward
#: invariances)
_SMALL_EPS = (1e-12, 1e-10)


def gradient_properties() -> tuple[Property, ...]:
    """The backward properties of softmax, attention, LayerNorm and RMSNorm."""
    props: list[Property] = []
    sm = "softmax"
    props += _equivalences(sm)
    props += [
        Property(
            sm,
            "grad_row_sum",
            "x̄ sums to 0 over every softmax slice (shift invariance)",
            _inputs(sm),
            _check_row_sum(sm),
            applies_with_gradients(sm),
            backward=True,
        ),
        Property(
            sm,
            "grad_linearity",
            "the backward is linear in the cotangent",
            _inputs(sm),
            _check_linearity(sm),
            applies_with_gradients(sm),
            backward=True,
        ),
    ]
    att = "attention"
    app = applies_with_gradients(att)
    props += _equivalences(att)
    props += [
        Property(
            att,
            "grad_causal_zeros",
            "with is_causal and the cotangent 0 from query t on, keys only those queries see "
            "get exactly 0 k̄ and v̄",
            _inputs(att, shapes=kstrat.attention_shapes(min_len=2), mask_kinds=("is_causal",)),
            _check_causal_zeros,
            app,
            backward=True,
        ),
        Property(
            att,
            "grad_masked_keys_zero",
            "keys no query sees get exactly 0 k̄ and v̄; -inf entries of a float mask get 0",
            _inputs(att, mask_kinds=("key_padding", "bool", "fully_masked_rows")),
            _check_masked_keys,
            app,
            backward=True,
        ),
        Property(
            att,
            "grad_gqa_group_sum",
            "k̄, v̄ of grouped K/V are the group sums of the gradients on repeated K/V",
            _inputs(att, shapes=kstrat.attention_shapes(gqa=True)),
            _check_gqa_sum,
            _gqa_applies,
            backward=True,
        ),
        Property(
            att,
            "grad_linearity",
            "the backward is linear in the cotangent",
            _inputs(att),
            _check_linearity(att),
            app,
            backward=True,
        ),
    ]
    for norm, centered in (("layer_norm", True), ("rms_norm", False)):
        napp = applies_with_gradients(norm)
        props += _equivalences(norm)
        if centered:
            props.append(
                Property(
                    norm,
                    "grad_row_sum",
                    "x̄ sums to 0 over every normalized slice (shift invariance)",
                    _inputs(norm),
                    _check_row_sum(norm),
                    napp,
                    backward=True,
                )
            )
        props += [
            Property(
                norm,
                "grad_orthogonality",
                "x̄ is orthogonal to x over every normalized slice (scale invariance, eps → 0)",
                _inputs(
                    norm,
                    regimes=("standard", "small_n"),
                    eps=_SMALL_EPS,
                    **({"default_eps": False} if not centered else {}),
                ),
                _check_orthogonality(norm),
                napp,
                backward=True,
            ),
            Property(
                norm,
                "grad_linearity",
                "the backward is linear in the cotangent",
                _inputs(norm),
                _check_linearity(norm),
                napp,
                backward=True,
            ),
        ]
    return tuple(props)
