"""Replaying a saved counterexample: ``transpec reproduce FILE [--adapter SPEC]``.

A failing case is saved by the runner as a ``.npz`` file (see
:func:`transpec.runs.save_case`): the component's arguments exactly as Hypothesis
generated them (before rounding to the dtype under test) and a JSON entry naming the adapter,
component, property, dtype, device and conventions. Replaying loads the adapter again (the spec
string saved in the file, or ``adapter`` to test a fixed version), runs the property's check once
on the saved arguments and returns a :class:`~transpec.runs.Verdict` with the same
failure report the run printed -- or ``passed`` when the implementation now conforms.

From Python::

    from transpec.cases import reproduce
    verdict = reproduce("transpec-failures/attention-equivalence-float16-cpu-0123456789.npz")
    print(verdict.report or verdict.status)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import transpec
from transpec.adapters.base import Adapter
from transpec.errors import CaseFileError
from transpec.runs import (
    Verdict,
    check_once,
    classify,
    describe_failure,
    infer_spec,
    load_case,
)


def load_adapter_for(meta: dict[str, Any], adapter: Adapter | str | None) -> tuple[Adapter, str]:
    """The adapter to replay with and its spec string (:class:`CaseFileError` when none can be
    found)."""
    if isinstance(adapter, Adapter):
        return adapter, infer_spec(adapter) or meta.get("adapter") or "?"
    spec = adapter if adapter is not None else meta.get("adapter")
    if not spec:
        raise CaseFileError(
            "the case file does not say how to load its adapter (it was not importable); "
            "pass --adapter MODULE:ATTR"
        )
    from transpec.adapters.registry import load_adapter

    if meta.get("adapter_kind") == "function" and adapter is None:
        base = meta.get("base")
        impl = load_adapter(str(spec), component=str(meta["component"]), base=base or None)
        return impl, str(spec)
    from transpec.cli import load_adapter_spec

    return load_adapter_spec(str(spec), str(meta["component"])), str(spec)


def reproduce(path: str | Path, *, adapter: Adapter | str | None = None) -> Verdict:
    """Re-run the saved case at ``path``; a passed or failed :class:`Verdict` with its report.

    ``adapter``: an adapter object or spec string that replaces the one named in the file.
    Raises :class:`~transpec.errors.CaseFileError` (a ``ValueError``) for an unreadable file, an
    unknown property, or an adapter that cannot run the case; an adapter spec that does not load
    raises :class:`~transpec.errors.AdapterLoadError`, an adapter whose declarations cannot be
    used :class:`~transpec.errors.AdapterDeclarationError`.
    """
    from transpec.adapters.base import validate_adapter
    from transpec.oracle.catalogue import PROPERTIES
    from transpec.oracle.engine.harness import Harness

    meta, args = load_case(path)
    component, name = str(meta["component"]), str(meta["property"])
    dtype, device = str(meta["dtype"]), str(meta["device"])
    matches = [p for p in PROPERTIES if p.component == component and p.name == name]
    if not matches:
        raise CaseFileError(
            f"the case file names property {component}.{name}, which transpec "
            f"{transpec.__version__} does not have"
        )
    prop = matches[0]
    impl, spec = load_adapter_for(meta, adapter)
    declared = validate_adapter(impl)  # AdapterDeclarationError: one line, like a load error
    if not impl.provides(component):
        raise CaseFileError(f"adapter {impl.name!r} does not provide {component}")
    if device not in impl.available_devices():
        raise CaseFileError(f"device {device} is not available to adapter {impl.name!r} here")
    try:
        reason = prop.applies(impl, dtype)
    except Exception:
        reason = None  # undecidable here: run the check, whose verdict will show the problem
    if reason:
        raise CaseFileError(f"{component}.{name} does not apply to adapter {impl.name!r}: {reason}")
    verdict = Verdict(component, name, dtype, device, "passed")
    start = time.perf_counter()
    try:
        ratio = check_once(prop, Harness(impl, dtype, device, declared=declared), args)
    except Exception as exc:  # a violation, an implementation failure or an error of transpec
        classify(verdict, exc)
        describe_failure(
            verdict,
            exc,
            args,
            adapter=impl,
            examples=None,
            failure_file=Path(path),
            adapter_spec=spec,
        )
    else:
        verdict.ratio = ratio
        verdict.message = "the saved case conforms now"
    verdict.examples = 1
    verdict.seconds = time.perf_counter() - start
    note = conventions_note(meta, impl)
    if note:
        verdict.message = f"{verdict.message}\n{note}"
        if verdict.report:
            verdict.report = f"{verdict.report}\n  {note}"
    return verdict


def _concerns(convention: str, component: str) -> bool:
    """Whether a convention field can change the reference of ``component`` (its record's
    ``conventions``)."""
    from transpec.oracle import components

    record = components.REGISTRY.get(component)
    return record is not None and convention in record.conventions


def conventions_note(meta: dict[str, Any], adapter: Adapter) -> str | None:
    """A warning when the adapter's conventions differ from those saved with the case."""
    saved = meta.get("conventions") or {}
    current = adapter.conventions.to_dict()
    component = str(meta.get("component", ""))
    changed = {
        k: (saved.get(k), current.get(k))
        for k in current
        if saved.get(k) != current.get(k) and _concerns(k, component)
    }
    if not changed or not saved:
        return None
    parts = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
    return f"note: the adapter's conventions changed since the case was saved ({parts})"
