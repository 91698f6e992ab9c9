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

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transpec.oracle import components as registry
from transpec.oracle.engine.harness import Harness, _one_line
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
    """Round, call ``harness.adapter.vjp``, check and convert every gradient (module docstring)."""
    record = registry.get(component)
    adapter = harness.adapter
    if not adapter.provides_gradients(component):
        raise ValueError(f"adapter {adapter.name!r} does not provide {component}'s gradients")
    if record.groups_kv and bool(args.get("enable_gqa")) and harness.gqa_support() is not None:
        # an adapter without GQA gets K/V repeated per its head map (as Harness.call does): its
        # K/V gradients are then those of the repeated heads, judged against their reference
        args = harness.lower_gqa(args)
    harness.require_supported(component, args)
    native, sent, watch = harness._prepare(component, harness.encode(component, args))
    g_native, g_sent = harness._prepare_float(GRAD_OUTPUT, np.asarray(cotangent), watch)
    rounded = harness.decode(component, sent)
    if record.groups_kv and "enable_gqa" in native and not native["enable_gqa"]:
        from transpec.oracle.engine.harness import accepts_argument

        method = getattr(adapter, record.method, None)
        if method is not None and not accepts_argument(method, "enable_gqa"):
            del native["enable_gqa"]
    ref = gref.compute(
        component, sent, g_sent, conventions=harness.conventions, dtype=harness.dtype
    )
    tols = tolerances(
        ref,
        harness.dtype,
        adapter.precision(component, harness.dtype),
        adapter.backward_precision(component, harness.dtype),
    )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            result = adapter.vjp(component, native, g_native)
            adapter.synchronize(harness.device)
            box["result"] = result
        except BaseException as exc:  # reported, never re-raised in this thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"transpec-vjp-{component}", daemon=True)
    thread.start()
    timeout = harness.declared.call_timeout
    thread.join(timeout)
    if thread.is_alive():
        raise ImplementationFailure(
            "hung", f"{component} backward did not return within {timeout:g} s (call_timeout)"
        )
    if "error" in box:
        exc = box["error"]
        raise ImplementationFailure(
            "raised", _one_line(f"{component} backward: {type(exc).__name__}: {exc}")
        )
    harness.check_conventions(component)
    watch.untouched(component, adapter)
    result = box.get("result")
    if not isinstance(result, Mapping):
        raise ImplementationFailure(
            "not_array", f"{component} backward returned {type(result).__name__}, not a dict"
        )
    grads: dict[str, np.ndarray] = {}
    for name, expected in ref.grads.items():
        if name not in result:
            raise ImplementationFailure(
                "not_array", f"{component} backward returned no gradient for {name}"
            )
        grads[name] = harness.convert_output(
            f"{component} backward ({name})", result[name], tuple(np.shape(expected.value))
        )
    return GradientCall(component, grads, rounded, g_sent, ref, tols)


def assert_gradient(call: GradientCall, name: str) -> float:
    """Compare gradient ``name`` of a backward call with its reference under its tolerance; the
    worst ratio, or :class:`PropertyViolation` naming the worst element."""
    from transpec.oracle.engine.compare import compare

    result = compare(call.grads[name], call.reference.grads[name], call.tolerances[name])
    if not result.passed:
        raise PropertyViolation(
            f"gradient of {name}: {result.message}",
            worst=result.worst,
            ratio=float(result.ratio),
            details={"nonfinite_mismatch": result.nonfinite_mismatch},
        )
    return float(result.ratio)


def bound_of(call: GradientCall, name: str) -> np.ndarray:
    """The per-element bound of gradient ``name``, broadcast to its shape."""
    return np.broadcast_to(
        np.asarray(call.tolerances[name].bound, dtype=np.float64), call.grads[name].shape
    )
