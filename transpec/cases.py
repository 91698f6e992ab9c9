"""Replaying a saved counterexample: ``transpec reproduce FILE [--adapter SPEC]``.

A failing case is saved by the runner as a ``.npz`` file (see
:func:`transpec.runs.save_case`): the component's arguments exactly as Hypothesis
generated them (before rounding to the dtype under test) and a JSON entry naming the adapter,
component, property, dtype, device and conventions. Replaying loads the adapter again (the spec
string saved in the file, or ``adapter`` to test a fixed version), runs the property's check once
on the saved arguments and returns a :class:`~transpec.runs.Verdict` with the same
failure report the run printed -- or ``passed`` when the implementation now conforms.

A case file is data from elsewhere: replaying never imports a module whose name it read from
the file unless asked to (``trust=True``, ``transpec reproduce --trust``). Without that, the file
may name a built-in adapter (``numpy``, ``torch``, ...), or the caller names the adapter.

From Python::

    from transpec.cases import reproduce
    verdict = reproduce("transpec-failures/attention-equivalence-float16-cpu-0123456789.npz")
    print(verdict.report or verdict.status)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import transpec
from transpec.adapters.base import Adapter
from transpec.errors import CaseFileError
from transpec.oracle.engine.isolation import check_isolation
from transpec.runs import (
    RunResult,
    Verdict,
    check_once,
    classify,
    describe_failure,
    infer_spec,
    load_case,
    open_worker,
    picture_of,
)

if TYPE_CHECKING:
    from transpec.oracle.engine.profiles import Profile


def _untrusted(spec: str) -> CaseFileError:
    module = spec.partition(":")[0].strip() or spec
    return CaseFileError(
        f"the case file names adapter {spec!r}, which is not built in: replaying it would import "
        f"module {module!r}, named by the file; pass --trust if you trust the file, or "
        "--adapter SPEC to name the adapter yourself"
    )


def load_adapter_for(
    meta: dict[str, Any], adapter: Adapter | str | None, *, trust: bool = False
) -> tuple[Adapter, str]:
    """The adapter to replay with and its spec string (:class:`CaseFileError` when none can be
    found). ``adapter`` (given by the caller) is loaded as it is; a spec read from the file only
    when it names a built-in adapter, or when ``trust`` is true."""
    if isinstance(adapter, Adapter):
        return adapter, infer_spec(adapter) or meta.get("adapter") or "?"
    spec = adapter if adapter is not None else meta.get("adapter")
    if not spec:
        raise CaseFileError(
            "the case file does not say how to load its adapter (it was not importable); "
            "pass --adapter MODULE:ATTR"
        )
    from transpec.adapters.arrays import ARRAY_BASES
    from transpec.adapters.registry import BUILTIN_ADAPTERS, load_adapter

    if adapter is None and not trust:
        for named in (spec, meta.get("base") if meta.get("adapter_kind") == "function" else None):
            if named is not None and str(named) not in {*BUILTIN_ADAPTERS, *ARRAY_BASES}:
                raise _untrusted(str(named))

    if meta.get("adapter_kind") == "function" and adapter is None:
        base = meta.get("base")
        impl = load_adapter(str(spec), component=str(meta["component"]), base=base or None)
        # a function's conventions were declared with the run (--convention), not in its code
        saved = meta.get("conventions")
        if isinstance(saved, dict):
            from transpec.spec.conventions import Conventions

            try:
                impl.conventions = Conventions.from_dict(saved)
            except (TypeError, ValueError) as exc:
                raise CaseFileError(f"the case's conventions cannot be used here: {exc}") from None
        return impl, str(spec)
    from transpec.cli import load_adapter_spec

    return load_adapter_spec(str(spec), str(meta["component"])), str(spec)


def reproduce(
    path: str | Path,
    *,
    adapter: Adapter | str | None = None,
    trust: bool = False,
    isolation: str = "none",
    memory_limit: int | None = None,
) -> Verdict:
    """Re-run the saved case at ``path``; a passed or failed :class:`Verdict` with its report
    (and, for a numeric failure, its ``picture``). The one verdict of :func:`replay`, whose
    arguments and errors are the same."""
    (verdict,) = replay(
        path, adapter=adapter, trust=trust, isolation=isolation, memory_limit=memory_limit
    ).verdicts
    return verdict


def replay(
    path: str | Path,
    *,
    adapter: Adapter | str | None = None,
    trust: bool = False,
    isolation: str = "none",
    memory_limit: int | None = None,
) -> RunResult:
    """Re-run the saved case at ``path``: a :class:`~transpec.runs.RunResult` of one verdict
    (passed or failed, with its report and picture) and what it ran under (the adapter and its
    spec, conventions, the profile and seed the case was saved from, isolation), for the reports
    of a run (``transpec reproduce --html``).

    ``adapter``: an adapter object or spec string that replaces the one named in the file.
    ``trust``: load the adapter the file names even when that imports a module (by default only
    a built-in adapter named in the file is loaded).
    ``isolation``, ``memory_limit``: as for :func:`transpec.runs.run`; with ``"process"`` a case
    that crashed or hung replays as that failure instead of ending or blocking this process.
    Raises :class:`~transpec.errors.CaseFileReadError` for a file that cannot be read (not a case
    file, a metadata field missing, of the wrong type or unknown, an archive member over the size
    limits) and :class:`~transpec.errors.CaseFileError` (both ``ValueError``) for an unknown
    property, an adapter the file names that is not trusted, or an adapter that cannot run the
    case; an adapter spec that does not load raises :class:`~transpec.errors.AdapterLoadError`,
    an adapter whose declarations cannot be used :class:`~transpec.errors.AdapterDeclarationError`.
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
    impl, spec = load_adapter_for(meta, adapter, trust=trust)
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
    check_isolation(isolation)
    worker = (
        open_worker(impl, spec, memory_limit, devices=(device,)) if isolation == "process" else None
    )
    worker_limit = worker.memory_limit if worker is not None else None
    verdict = Verdict(component, name, dtype, device, "passed")
    start = time.perf_counter()
    try:
        harness = Harness(impl, dtype, device, declared=declared, worker=worker)
        ratio = check_once(prop, harness, args)
    except Exception as exc:  # a violation, an implementation failure or an error of transpec
        classify(verdict, exc)
        verdict.picture = picture_of(exc, args, declared.conventions_for(dtype))
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
    finally:
        if worker is not None:
            worker.close()
    verdict.examples = 1
    verdict.seconds = time.perf_counter() - start
    for note in (flaky_note(meta), conventions_note(meta, impl)):
        if note:
            verdict.message = f"{verdict.message}\n{note}"
            if verdict.report:
                verdict.report = f"{verdict.report}\n  {note}"
    return RunResult(
        adapter=impl.name,
        adapter_spec=spec,
        conventions=declared.conventions.to_dict(),
        profile=_saved_profile(meta),
        components=(component,),
        dtypes=(dtype,),
        devices=(device,),
        verdicts=[verdict],
        seconds=verdict.seconds,
        isolation=isolation,
        memory_limit=worker_limit,
    )


def _saved_profile(meta: dict[str, Any]) -> Profile:
    """The profile and seed the case was saved from (the ``ci`` profile when this version has no
    such profile): what the report's header says the example came from."""
    from transpec.oracle.engine.profiles import resolve

    seed = meta.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None
    try:
        return resolve(str(meta.get("profile", "ci")), seed=seed)
    except ValueError:
        return resolve("ci", seed=seed)


def flaky_note(meta: dict[str, Any]) -> str | None:
    """A warning for a case saved from a nondeterministic failure: the run that saved it saw the
    input fail once and pass when Hypothesis replayed it, so one replay proves little."""
    if not meta.get("flaky"):
        return None
    return (
        "note: nondeterministic -- when the run saved this case its failure did not reproduce "
        "on the same input; a pass here does not show the implementation is fixed"
    )


def _concerns(convention: str, component: str) -> bool:
    """Whether a convention field can change the verdict of ``component``: its record's
    ``conventions``, or one that concerns every component (``EVERY_COMPONENT``)."""
    from transpec.oracle import components
    from transpec.spec.conventions import EVERY_COMPONENT

    record = components.REGISTRY.get(component)
    if convention in EVERY_COMPONENT:
        return True
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
