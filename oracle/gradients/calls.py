"""Calling an implementation's backward pass and judging each gradient.

:func:`call_vjp` is to a backward pass what :meth:`Harness.call
<transpec.oracle.engine.harness.Harness.call>` is to a forward one: the arguments and the
cotangent are rounded to the dtype under test by the adapter's own conversion (fresh native
copies; the harness keeps read-only float64 copies of what was sent), the reference gradients and
their tolerances are computed on those copies before the call, the adapter's ``vjp`` runs under
the declared time limit, and afterwards its conventions and every input (the cotangent included)
must be as they were. Each returned gradient must be a native array of its argument's shape and
of the dtype under test; an exception, a hang, a missing gradient, a wrong type, dtype or shape is
an :class:`~transpec.oracle.engine.outcome.ImplementationFailure`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transpec.oracle import components as registry
from transpec.oracle.engine.harness import Harness, _frozen_values, check_shape, copy_arguments
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.gradients import reference as gref
from transpec.oracle.gradients.tolerance import tolerances
from transpec.oracle.kernels.tolerance import Tolerance

#: the key of the cotangent in the argument dicts the gradient properties draw
GRAD_OUTPUT = "grad_output"


@dataclass(frozen=True)
class GradientCall:
    """One backward call: the gradients as float64 (``grads``), the arguments as the
    implementation received them in canonical meaning (``inputs``), the rounded cotangent, the
    reference gradients and their tolerances, keyed by argument name."""

    component: str
    grads: dict[str, np.ndarray]
    inputs: dict[str, Any]
    cotangent: np.ndarray
    reference: gref.GradientReference
    tolerances: dict[str, Tolerance] = field(repr=False)


def split_cotangent(args: Mapping[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """(the component's arguments, the cotangent) of an argument dict a gradient property drew."""
    rest = {k: v for k, v in args.items() if k != GRAD_OUTPUT}
    return rest, np.asarray(args[GRAD_OUTPUT], dtype=np.float64)


def call_vjp(
    harness: Harness, component: str, args: Mapping[str, Any], cotangent: Any
) -> GradientCall:
    """Round, call ``harness.adapter.vjp`` (in the harness's worker process when it has one),
    check and convert every gradient (module docstring)."""
    record = registry.get(component)
    adapter = harness.adapter
    if not adapter.provides_gradients(component):
        raise ValueError(f"adapter {adapter.name!r} does not provide {component}'s gradients")
    if record.groups_kv and bool(args.get("enable_gqa")) and harness.gqa_support() is not None:
        # an adapter without GQA gets K/V repeated per its head map (as Harness.call does): its
        # K/V gradients are then those of the repeated heads, judged against their reference
        args = harness.lower_gqa(args)
    harness.require_supported(component, args)
    encoded = harness.encode(component, args)
    drop = harness._drops_enable_gqa(component, encoded)
    if harness.worker is not None:
        sent, grads = harness.worker.call(
            path=harness.path,
            component=component,
            dtype=harness.dtype,
            device=harness.device,
            declared=harness.declared,
            encoded=encoded,
            drop_enable_gqa=drop,
            cotangent=np.array(cotangent, dtype=np.float64),
        )
        sent = _frozen_values(sent)
        g_sent = sent.pop(GRAD_OUTPUT)
        ref, tols = _reference(harness, component, sent, g_sent)
    else:
        native, sent, watch = harness._prepare(component, encoded)
        g_native, g_sent = harness._prepare_float(GRAD_OUTPUT, np.asarray(cotangent), watch)
        if drop:
            del native["enable_gqa"]
        ref, tols = _reference(harness, component, sent, g_sent)
        result = harness.run_limited(
            f"{component} backward",
            lambda: adapter.vjp(component, native, g_native),
            prefix=f"{component} backward: ",
        )
        harness.check_conventions(component)
        watch.untouched(component, adapter)
        grads = _gradients(harness, component, result, list(ref.grads))
    for name, expected in ref.grads.items():
        if name not in grads:
            raise ImplementationFailure(
                "not_array", f"{component} backward returned no gradient for {name}"
            )
        check_shape(f"{component} backward ({name})", grads[name], np.shape(expected.value))
    return GradientCall(component, grads, harness.decode(component, sent), g_sent, ref, tols)


def execute_vjp(
    harness: Harness,
    component: str,
    encoded: Mapping[str, Any],
    cotangent: np.ndarray,
    *,
    drop_enable_gqa: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The worker process's side of :func:`call_vjp`: (what was sent, the cotangent under
    :data:`GRAD_OUTPUT` among it; the gradients as float64) for arguments already in the
    adapter's declared meaning. The parent computes the references and the tolerances and
    checks that every gradient is there with its argument's shape."""
    native, sent, watch = harness._prepare(component, encoded)
    g_native, g_sent = harness._prepare_float(GRAD_OUTPUT, cotangent, watch)
    if drop_enable_gqa:
        native.pop("enable_gqa", None)
    result = harness.run_limited(
        f"{component} backward",
        lambda: harness.adapter.vjp(component, native, g_native),
        limited=False,
        prefix=f"{component} backward: ",
    )
    harness.check_conventions(component)
    watch.untouched(component, harness.adapter)
    grads = _gradients(harness, component, result, differentiable(component, sent))
    return {**sent, GRAD_OUTPUT: g_sent}, grads


def differentiable(component: str, args: Mapping[str, Any]) -> list[str]:
    """The gradients a backward call on ``args`` returns: each of the record's ``gradients``
    that is a float array among the arguments or, for a layer, among its ``params``."""
    params = args.get("params")
    params = params if isinstance(params, Mapping) else {}
    out = []
    for name in registry.get(component).gradients:
        value = args[name] if name in args else params.get(name)
        if value is not None and np.asarray(value).dtype.kind == "f":
            out.append(name)
    return out


def _reference(
    harness: Harness, component: str, sent: Mapping[str, Any], g_sent: np.ndarray
) -> tuple[gref.GradientReference, dict[str, Tolerance]]:
    """The reference gradients on what was sent, and their tolerances under the declared
    forward and backward precisions."""
    adapter = harness.adapter
    semantics = None
    if registry.get(component).takes_params:
        # the path the backward takes (torch's modules differentiate on their slow path)
        declare = getattr(adapter, "backward_layer_semantics", adapter.layer_semantics)
        semantics = declare(component, copy_arguments(sent))
    ref = gref.compute(
        component,
        sent,
        g_sent,
        conventions=harness.conventions,
        dtype=harness.dtype,
        semantics=semantics,
    )
    forward: Any = adapter.precision(component, harness.dtype)
    backward: Any = adapter.backward_precision(component, harness.dtype)
    flushed = harness.conventions.flush_subnormals
    if flushed:  # the flushed formats' underflow floor is their smallest normal (as forward)
        from transpec.oracle.engine.error_model import Flushing

        forward, backward = Flushing(forward, flushed), Flushing(backward, flushed)
    tols = tolerances(ref, harness.dtype, forward, backward)
    return ref, tols


def _gradients(
    harness: Harness, component: str, result: Any, names: list[str]
) -> dict[str, np.ndarray]:
    """The gradients ``names`` of a raw ``vjp`` result, each checked (a native array of the
    dtype under test) and converted to a float64 copy; the shape is checked by the caller."""
    if not isinstance(result, Mapping):
        raise ImplementationFailure(
            "not_array", f"{component} backward returned {type(result).__name__}, not a dict"
        )
    grads: dict[str, np.ndarray] = {}
    for name in names:
        if name not in result:
            raise ImplementationFailure(
                "not_array", f"{component} backward returned no gradient for {name}"
            )
        grads[name] = harness.convert_output(f"{component} backward ({name})", result[name], None)
    return grads


def assert_gradient(call: GradientCall, name: str) -> float:
    """Compare gradient ``name`` of a backward call with its reference under its tolerance; the
    worst ratio, or :class:`PropertyViolation` naming the worst element."""
    from transpec.oracle.engine.compare import compare

    result = compare(call.grads[name], call.reference.grads[name], call.tolerances[name])
    if not result.passed:
        from transpec.oracle.engine.picture import Evidence

        raise PropertyViolation(
            f"gradient of {name}: {result.message}",
            worst=result.worst,
            ratio=float(result.ratio),
            details={"nonfinite_mismatch": result.nonfinite_mismatch},
            # the arguments as received, in transpec's mask meaning; the run supplies the
            # conventions (picture_of)
            evidence=Evidence(
                call.grads[name],
                np.asarray(call.reference.grads[name].value),
                call.tolerances[name].bound,
                result.worst.index if result.worst is not None else (),
                args=call.inputs,
                gradient=name,
            ),
        )
    return float(result.ratio)


def bound_of(call: GradientCall, name: str) -> np.ndarray:
    """The per-element bound of gradient ``name``, broadcast to its shape."""
    return np.broadcast_to(
        np.asarray(call.tolerances[name].bound, dtype=np.float64), call.grads[name].shape
    )
