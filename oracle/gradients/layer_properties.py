"""The properties of the layers' backward passes (``multi_head_attention``, ``feed_forward``,
``swiglu_feed_forward``, ``encoder_layer``, ``decoder_layer``).

* ``grad_equivalence_<name>``: one per gradient (each array input and each parameter in
  ``params``), every element within its derived bound of the chain-rule reference
  (:mod:`transpec.oracle.gradients.layers`, docs/gradients.md §8);
* ``grad_linearity``: the backward is linear in the cotangent (every layer);
* ``grad_padded_keys_zero`` (``multi_head_attention``): a key that ``key_padding_mask`` hides
  from every query of its batch row gets exactly zero key and value gradient (its projections
  reach the output through weights that are exactly 0);
* ``grad_row_constant_zero`` (``multi_head_attention_weights``): the weights of a query row sum
  to 1 whatever the inputs, so a cotangent constant along each row (c_i for every key) has
  S̄ = P ∘ (c − Σ_j P_ij c) = 0 (the proved softmax VJP): every gradient is exactly 0.
"""

from __future__ import annotations

import numpy as np

from transpec.oracle.engine.harness import Harness, assert_related
from transpec.oracle.engine.property import Property
from transpec.oracle.engine.strategy import Args
from transpec.oracle.gradients.calls import bound_of, call_vjp, split_cotangent
from transpec.oracle.gradients.properties import (
    _check_linearity,
    _equivalences,
    _inputs,
    _zero_at,
    applies_with_gradients,
)

LAYERS = (
    "multi_head_attention",
    "multi_head_attention_weights",
    "feed_forward",
    "swiglu_feed_forward",
    "encoder_layer",
    "decoder_layer",
)


def _check_padded_keys(harness: Harness, args: Args) -> float:
    """Keys padded in ``key_padding_mask`` (True = not allowed) get 0 key and value gradient."""
    rest, g = split_cotangent(args)
    kpm = rest.get("key_padding_mask")
    if kpm is None:
        return 0.0
    kpm = np.asarray(kpm)
    padded = kpm if kpm.dtype == np.bool_ else np.isneginf(kpm)  # (B, S)
    if not padded.any():
        return 0.0
    call = call_vjp(harness, "multi_head_attention", rest, g)
    batch_first = bool(rest.get("batch_first", True))
    worst = 0.0
    for name in ("key", "value"):
        if name not in call.grads:
            continue
        shape = call.grads[name].shape
        where = padded[:, :, None] if batch_first else padded.T[:, :, None]
        where = np.broadcast_to(where, shape)
        worst = max(
            worst,
            _zero_at(call, name, where, f"padded keys get a nonzero gradient of {name}"),
        )
    return worst


def _check_row_constant(harness: Harness, args: Args) -> float:
    """The drawn cotangent replaced by its row means (constant along the keys): every gradient
    within the call's own bound of 0 (of the reference's |value| more, the float64 residue of
    c − Σ P c), NaN only where the reference has NaN (fully masked rows, NaN convention)."""
    rest, g = split_cotangent(args)
    constant = np.broadcast_to(np.mean(g, axis=-1, keepdims=True), g.shape).copy()
    call = call_vjp(harness, "multi_head_attention_weights", rest, constant)
    worst = 0.0
    for name, got in call.grads.items():
        ref = np.asarray(call.reference.grads[name].value)
        worst = max(
            worst,
            assert_related(
                got,
                np.where(np.isnan(ref), np.nan, 0.0),
                bound_of(call, name) + np.abs(np.nan_to_num(ref)),
                what=f"gradient of {name} for a cotangent constant along each row",
                derivation="exactly 0: the weights of a row sum to 1, so S̄ = P∘(c − ⟨c, P⟩) "
                "= 0 (proved softmax VJP); bound: the call's own tolerance",
            ),
        )
    return worst


def properties() -> tuple[Property, ...]:
    """The backward properties of the layers."""
    props: list[Property] = []
    for layer in LAYERS:
        app = applies_with_gradients(layer)
        props += _equivalences(layer)
        props.append(
            Property(
                layer,
                "grad_linearity",
                "the backward is linear in the cotangent",
                _inputs(layer),
                _check_linearity(layer),
                app,
                backward=True,
            )
        )
    mha = "multi_head_attention"
    props.append(
        Property(
            mha,
            "grad_padded_keys_zero",
            "keys key_padding_mask hides from every query get exactly 0 key and value gradient",
            _inputs(mha, masks=("key_padding",)),
            _check_padded_keys,
            applies_with_gradients(mha),
            backward=True,
        )
    )
    weights = "multi_head_attention_weights"
    props.append(
        Property(
            weights,
            "grad_row_constant_zero",
            "a cotangent constant along each row of the weights gets exactly 0 gradient",
            _inputs(weights),
            _check_row_constant,
            applies_with_gradients(weights),
            backward=True,
        )
    )
    return tuple(props)
