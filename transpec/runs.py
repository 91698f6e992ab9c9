"""The conformance run: every component × property × dtype × device of an adapter, one verdict each.

For each case the runner either skips it with a reason (the adapter does not provide the
component, does not declare the dtype or device, the device is absent, or the property says it
does not apply) or runs the property under Hypothesis (``@given(prop.inputs(dtype))`` with the
settings of :mod:`transpec.oracle.engine.profiles`). A case ends in one :class:`Verdict`:

* ``passed``  -- every example passed; ``ratio`` is the worst error-to-tolerance ratio seen
  (max over examples of max_i |out_i - ref_i| / bound_i, <= 1);
* ``failed``  -- the implementation broke the property (:class:`PropertyViolation`) or did not
  return a usable array (:class:`ImplementationFailure`: raised, hung, crashed its worker
  process, not an array, wrong shape or dtype, an input or the conventions changed). The
  shrunk counterexample -- the arguments of Hypothesis's final failing call -- is saved to
  ``failures_dir`` with everything needed to replay it (``transpec reproduce FILE``);
* ``skipped`` -- with its reason;
* ``error``   -- transpec itself raised an unexpected exception on this case (a bug in transpec,
  not in the implementation); reported with its traceback, and the run goes on.

Nothing an implementation does stops a run (with ``isolation="process"``, not even a segfault or
a hang in C). Ctrl-C does: the verdicts so far are kept and the
result says ``interrupted``.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import copy
import dataclasses
import hashlib
import json
import shlex
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import transpec
from transpec import progress
from transpec.adapters.base import Adapter, Declared, FunctionAdapter, validate_adapter
from transpec.oracle import components as registry
from transpec.oracle.engine import blas
from transpec.oracle.engine.dtypes import DTYPES, canonical_dtype
from transpec.oracle.engine.isolation import WorkerError, check_isolation
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation, Worst
from transpec.oracle.engine.profiles import Profile, case_seed, hypothesis_settings, resolve

if TYPE_CHECKING:
    from transpec.oracle.engine.harness import Harness
    from transpec.oracle.engine.isolation import Worker
    from transpec.oracle.engine.property import Property
    from transpec.spec.conventions import Conventions
    from transpec.xfails import KnownFailures

Status = Literal["passed", "failed", "skipped", "error", "xfailed", "xpassed"]
#: ``xfailed``/``xpassed``: a failed/passed verdict listed as a known failure
#: (:mod:`transpec.xfails`)
STATUSES: tuple[Status, ...] = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")

#: format tag of saved counterexample files
FILE_FORMAT = "transpec-case-1"

#: exit status of a run that tested nothing it was asked to (pytest's "no tests collected")
EXIT_NOTHING_TESTED = 5

#: the selections a run reports as empty when they ran nothing (Verdict attribute names)
_REQUESTED = ("component", "dtype", "device")


@dataclass
class Verdict:
    """The outcome of one component × property × dtype × device.

    ``ratio``: worst error-to-tolerance ratio (``None`` when nothing was compared, ``inf`` for a
    NaN/inf mismatch or an implementation failure). ``examples``: calls of the property check.
    ``message``: one line (skip reason, failure summary). ``report``: the full failure report
    (counterexample, worst element, tolerance derivation, file, command); empty when passed.
    """

    component: str
    property: str
    dtype: str
    device: str
    status: Status
    ratio: float | None = None
    examples: int = 0
    seconds: float = 0.0
    message: str = ""
    failure_file: str | None = None
    reproduce_command: str | None = None
    report: str = ""
    counterexample: str = ""
    worst: dict[str, Any] | None = None
    failure_kind: str | None = None
    #: examples the adapter's ``supports()`` rejected (not counted in ``examples``)
    discarded: int = 0
    #: ``"FILE:LINE: reason"`` of the known-failures entry that lists this verdict, or None
    known_failure: str | None = None
    #: the error map and the mask of a numeric failure's reported example
    #: (:meth:`transpec.oracle.engine.picture.Picture.to_dict`), or None
    picture: dict[str, Any] | None = None
    #: when calls were judged on sampled rows (a long input): how many, and which rows the
    #: last one judged (``"3 calls; last: judged 453 of 2100 rows: 0-2,15-17,..."``); else None
    judged_rows: str | None = None

    @builtins.property  # the field ``property`` shadows the builtin in this class body
    def name(self) -> str:
        """``component.property[dtype-device]``: unique within a run."""
        return f"{self.component}.{self.property}[{self.dtype}-{self.device}]"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict` (a JSON report, or a verdict sent between processes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("ratio",):
            if isinstance(values.get(key), str):
                values[key] = float(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "component": self.component,
            "property": self.property,
            "dtype": self.dtype,
            "device": self.device,
            "status": self.status,
            "ratio": _json_float(self.ratio),
            "examples": self.examples,
            "discarded": self.discarded,
            "seconds": round(self.seconds, 4),
            "message": self.message,
            "failure_kind": self.failure_kind,
            "worst": self.worst,
            "counterexample": self.counterexample,
            "failure_file": self.failure_file,
            "reproduce_command": self.reproduce_command,
            "report": self.report,
            "known_failure": self.known_failure,
            "picture": self.picture,
            "judged_rows": self.judged_rows,
        }


@dataclass
class RunResult:
    """All verdicts of a run and what was run."""

    adapter: str
    adapter_spec: str | None
    conventions: dict[str, Any]
    profile: Profile
    components: tuple[str, ...]
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    verdicts: list[Verdict] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    #: what the caller asked for by name (``component``, ``dtype``, ``device``): each must run
    #: something, or the run tested less than it was asked to (see :func:`nothing_tested`)
    requested: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: where the implementation ran: ``"none"`` (this process) or ``"process"`` (a worker)
    isolation: str = "none"
    #: the worker's address-space limit in bytes (``None``: none, or no worker)
    memory_limit: int | None = None
    #: the known-failures file the verdicts were marked with (None: none)
    xfails: KnownFailures | None = None
    #: how many processes judged the cases at once (:mod:`transpec.jobs`; 1: this one)
    jobs: int = 1

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {s: 0 for s in STATUSES}
        for v in self.verdicts:
            out[v.status] += 1
        out["total"] = len(self.verdicts)
        return out

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status in ("failed", "error")]

    @property
    def xpassed(self) -> list[Verdict]:
        """Verdicts listed as known failures that passed ("fixed upstream?")."""
        return [v for v in self.verdicts if v.status == "xpassed"]

    @property
    def nothing_tested(self) -> str | None:
        """Why this run tested nothing it was asked to (one line), or ``None``: see
        :func:`nothing_tested`."""
        return nothing_tested(self.verdicts, self.requested)

    @property
    def exit_code(self) -> int:
        """0 all passed (skips and expected failures allowed), 1 a failure or error (or a
        listed known failure that passed, under ``strict``), 130 interrupted, 5
        (:data:`EXIT_NOTHING_TESTED`) when no verdict ran or a requested component, dtype or
        device ran nothing."""
        if self.interrupted:
            return 130
        if self.failures:
            return 1
        if self.xfails is not None and self.xfails.strict and self.xpassed:
            return 1
        return EXIT_NOTHING_TESTED if self.nothing_tested else 0


@dataclass(frozen=True)
class Case:
    """One planned verdict: a property at a dtype on a device, or a skip with its reason."""

    prop: Property
    dtype: str
    device: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.prop.component}.{self.prop.name}[{self.dtype}-{self.device}]"


# -- planning -----------------------------------------------------------------------------------


def _validated(
    values: Sequence[str] | None, known: Sequence[str], what: str
) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(known)}")
        if value not in out:
            out.append(value)
    return tuple(out)


def plan(
    adapter: Adapter,
    *,
    components: Sequence[str] | None = None,
    properties: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    gradients: bool = False,
) -> list[Case]:
    """The cases of a run, in a fixed order (component, property, device, dtype).

    ``components``/``properties``/``dtypes``/``devices`` select; ``None`` means all the adapter
    declares (all components, so that missing ones are reported as skipped). The properties of
    the backward pass (``Property.backward``) are included with ``gradients=True`` or when named
    in ``properties``. Unknown names raise ``ValueError`` with a one-line message.
    """
    from transpec.oracle.catalogue import PROPERTIES

    if components is None:
        comps = registry.names()
    else:
        chosen = [components] if isinstance(components, str) else components
        comps = tuple(dict.fromkeys(registry.get(c).name for c in chosen))
    if properties is not None:
        if isinstance(properties, str):
            properties = [properties]
        scope = [p for p in PROPERTIES if p.component in comps]
        known = {p.name for p in scope} | {f"{p.component}.{p.name}" for p in scope}
        for name in properties:
            if name not in known:
                raise ValueError(
                    f"unknown property {name!r} for {', '.join(comps)}; "
                    f"expected one of {', '.join(sorted({p.name for p in scope}))}"
                )
    props = planned_properties(comps, properties, gradients=gradients)
    if dtypes is None:
        wanted_dtypes = tuple(canonical_dtype(d) for d in adapter.dtypes)
    else:
        if isinstance(dtypes, str):
            dtypes = [dtypes]
        wanted_dtypes = tuple(dict.fromkeys(canonical_dtype(d) for d in dtypes))
    available = tuple(adapter.available_devices())
    if devices is None:
        wanted_devices = available or tuple(adapter.devices)
    else:
        if isinstance(devices, str):
            devices = [devices]
        wanted_devices = tuple(dict.fromkeys(str(d) for d in devices))
        for d in wanted_devices:
            if not d or any(c.isspace() for c in d):
                raise ValueError(f"invalid device name {d!r}")
    declared_dtypes = {canonical_dtype(d) for d in adapter.dtypes}
    cases: list[Case] = []
    for prop in props:
        for device in wanted_devices:
            for dtype in wanted_dtypes:
                cases.append(
                    Case(
                        prop,
                        dtype,
                        device,
                        _skip_reason(adapter, prop, dtype, device, declared_dtypes, available),
                    )
                )
    return cases


def planned_properties(
    components: Sequence[str] | None, properties: Sequence[str] | None, *, gradients: bool
) -> tuple[Property, ...]:
    """The properties a plan of ``components`` (None: all) judges: those named in
    ``properties`` (None: all), the backward pass's (``Property.backward``) only with
    ``gradients=True`` or when named. Unknown names raise ``ValueError``."""
    from transpec.oracle.catalogue import select

    chosen = None if components is None else list(components)
    props = select(components=chosen, names=list(properties) if properties else None)
    if not gradients and not properties:
        props = tuple(p for p in props if not p.backward)
    return props


def _skip_reason(
    adapter: Adapter,
    prop: Property,
    dtype: str,
    device: str,
    declared_dtypes: set[str],
    available: tuple[str, ...],
) -> str | None:
    if not adapter.provides(prop.component):
        return f"adapter does not provide {prop.component}"
    if dtype not in declared_dtypes:
        return f"adapter does not declare {dtype}"
    per_component = adapter.component_dtypes(prop.component)
    if per_component is not None and dtype not in {canonical_dtype(d) for d in per_component}:
        return f"adapter does not declare {dtype} for {prop.component}"
    declared = set(adapter.devices) | set(getattr(type(adapter), "devices", ()))
    if device not in declared:
        return f"adapter does not declare device {device}"
    if device not in available:
        return f"device {device} is not available on this machine"
    try:
        return prop.applies(adapter, dtype)
    except Exception:
        # undecidable here: run the property, whose verdict will show the problem
        return None


# -- an empty run -------------------------------------------------------------------------------


def _reasons(verdicts: Sequence[Verdict], limit: int = 3) -> str:
    """The distinct skip reasons of ``verdicts``, at most ``limit`` of them, in one line."""
    reasons = list(dict.fromkeys(v.message for v in verdicts if v.message))
    text = "; ".join(reasons[:limit])
    if len(reasons) > limit:
        text += f"; and {len(reasons) - limit} more"
    return text


def nothing_tested(
    verdicts: Sequence[Verdict], requested: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """Why a run tested nothing it was asked to, in one line; ``None`` when it tested.

    A run tests something when a verdict ran (passed, failed or errored). Skips alone are not a
    pass: a misnamed method, a device that is absent or a dtype the adapter does not declare
    turn every verdict into a skip. ``requested`` maps ``component``, ``dtype`` and ``device``
    to the names the caller chose explicitly; each of them must have run at least one verdict.
    """
    ran = [v for v in verdicts if v.status != "skipped"]
    if not verdicts:
        return "no verdict ran: the selection made no verdicts"
    if not ran:
        return f"no verdict ran: all {len(verdicts)} were skipped ({_reasons(verdicts)})"
    for what in _REQUESTED:
        for name in (requested or {}).get(what, ()):
            mine = [v for v in verdicts if getattr(v, what) == name]
            if mine and all(v.status == "skipped" for v in mine):
                return (
                    f"{what} {name} ran nothing: its {len(mine)} verdicts were skipped "
                    f"({_reasons(mine)})"
                )
    return None


def misnamed_methods(adapter: Adapter) -> list[tuple[str, str]]:
    """``(method, expected)`` for each public method of ``adapter`` whose name is close to the
    method of a component it does not provide but matches none (``layernorm`` for
    ``layer_norm``): such a method is never called, and its component would only be skipped."""
    import difflib

    if isinstance(adapter, FunctionAdapter):
        return []
    methods = {r.method: r.name for r in registry.REGISTRY.values()}
    missing = [m for m, c in methods.items() if not adapter.provides(c)]
    inherited = set(dir(Adapter))
    out: list[tuple[str, str]] = []
    for attribute in dir(type(adapter)):
        if attribute.startswith("_") or attribute in methods or attribute in inherited:
            continue
        if not callable(getattr(type(adapter), attribute, None)):
            continue
        close = difflib.get_close_matches(attribute, missing, n=1, cutoff=0.6)
        if close:
            out.append((attribute, close[0]))
    return out


# -- running ------------------------------------------------------------------------------------


def run(
    adapter: Adapter,
    *,
    components: Sequence[str] | None = None,
    properties: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    profile: str = "ci",
    seed: int | None = None,
    max_examples: int | None = None,
    failures_dir: str | Path | None = "transpec-failures",
    on_verdict: Callable[[Verdict], None] | None = None,
    adapter_spec: str | None = None,
    on_start: Callable[[RunResult, list[Case]], None] | None = None,
    isolation: str = "none",
    memory_limit: int | None = None,
    gradients: bool = False,
    xfails: KnownFailures | str | Path | None = None,
    jobs: int | str = 1,
) -> RunResult:
    """Run the selected properties against ``adapter`` and return every verdict.

    ``profile`` is ``"ci"`` (fixed seed, few examples) or ``"thorough"``; ``seed`` and
    ``max_examples`` override it. Failing cases are saved under ``failures_dir`` (``None``: not
    saved; a relative path is resolved against the current directory when the run starts).
    ``on_verdict`` is called with each verdict as it is made; ``on_start`` once with the
    empty result and the plan. ``adapter_spec`` is how the reproduce command reloads the adapter
    (inferred for importable classes and functions when not given). ``gradients``: include
    the properties of the backward pass (:func:`plan`).

    ``isolation``: ``"none"`` calls the implementation in this process (in a thread, under its
    ``call_timeout``); ``"process"`` in a worker process loaded from ``adapter_spec``
    (:mod:`transpec.oracle.engine.isolation`), so that a segfault, ``os._exit``, a hang in C
    or an unbounded allocation ends only that verdict (failure kinds ``crashed``, ``hung``)
    and the run goes on with a fresh worker. ``memory_limit``: the worker's address-space cap
    in bytes (``None``: half the physical memory when every device is ``cpu``, else none; 0:
    none).

    ``xfails``: known failures (a :class:`~transpec.xfails.KnownFailures` or the path of its
    file) that mark the verdicts they list ``xfailed``/``xpassed``.

    ``jobs``: how many processes judge the cases at once (:mod:`transpec.jobs`; ``"auto"``: one
    per usable core for a long enough selection). More than one needs ``isolation="process"``;
    the verdicts are those of a serial run, in the same order.

    The adapter's declarations are checked first
    (:func:`~transpec.adapters.base.validate_adapter`: an
    :class:`~transpec.errors.AdapterDeclarationError`, a ``ValueError``, with a one-line
    message), and its conventions and ``call_timeout`` are copied once: every case of the run
    is judged under that one copy, which the result (and so every report) shows, whatever the
    implementation does to its adapter meanwhile.

    Unknown names raise ``ValueError``. Ctrl-C ends the run early with ``interrupted=True``.
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(
            f"expected a transpec Adapter, got {type(adapter).__name__}; wrap a function with "
            "transpec.adapters.FunctionAdapter(function, component=...)"
        )
    check_isolation(isolation)
    declared = validate_adapter(adapter)
    if isinstance(xfails, (str, Path)):
        from transpec.xfails import KnownFailures

        xfails = KnownFailures.load(xfails)
    if failures_dir is not None:
        # resolved before any implementation runs: its os.chdir must not move the saved cases
        failures_dir = Path(failures_dir).resolve()
    resolved = resolve(profile, seed=seed, max_examples=max_examples)
    cases = plan(
        adapter,
        components=components,
        properties=properties,
        dtypes=dtypes,
        devices=devices,
        gradients=gradients,
    )
    spec = adapter_spec if adapter_spec is not None else infer_spec(adapter)
    from transpec.jobs import preload, resolve_jobs

    runnable = [(index, case) for index, case in enumerate(cases) if case.skip is None]
    jobs = resolve_jobs(jobs, isolation=isolation, runnable=len(runnable))
    worker = (
        open_worker(adapter, spec, memory_limit, devices={c.device for c in cases})
        if isolation == "process"
        else None
    )
    result = RunResult(
        adapter=_describe(adapter),
        adapter_spec=spec,
        conventions=declared.conventions.to_dict(),
        profile=resolved,
        components=tuple(dict.fromkeys(c.prop.component for c in cases)),
        dtypes=tuple(dict.fromkeys(c.dtype for c in cases)),
        devices=tuple(dict.fromkeys(c.device for c in cases)),
        requested=requested_names(components=components, dtypes=dtypes, devices=devices),
        isolation=isolation,
        memory_limit=worker.memory_limit if worker is not None else None,
        xfails=xfails,
        jobs=jobs,
    )
    if worker is not None and jobs == 1:
        with contextlib.suppress(WorkerError):  # (reported by the first call that needs it)
            worker.spawn()  # it loads the adapter while the first examples are drawn
    if on_start is not None:
        on_start(result, cases)
    start = time.perf_counter()
    progress.begin(len(cases), resolved.max_examples)
    #: the plan indices of result.verdicts: a verdict made in a job takes its place in plan order
    made: list[int] = []

    def shrink(case: Case) -> bool:
        return xfails is None or xfails.find(case.name) is None

    def record(index: int, verdict: Verdict, *, examples_reported: bool = True) -> None:
        if xfails is not None:
            xfails.apply(verdict)
        position = bisect.bisect(made, index)
        made.insert(position, index)
        result.verdicts.insert(position, verdict)
        progress.verdict_done(0 if examples_reported else verdict.examples)
        if on_verdict is not None:
            on_verdict(verdict)

    # with the implementation in a worker process, this process only draws and judges: BLAS
    # held to one thread here leaves the other cores to the worker (OpenBLAS's idle threads
    # spin on them between the small products of the references)
    blas_held = blas.one_thread() if worker is not None else contextlib.nullcontext()
    serial = list(enumerate(cases))
    try:
        with blas_held:
            if jobs > 1 and worker is not None:
                from transpec.jobs import JobSetup, judge_in_jobs, usable_cores

                for index, case in serial:
                    if case.skip is not None:
                        record(index, run_case(adapter, case, resolved))
                setup = JobSetup(
                    source=worker.source,
                    expect=worker.expect,
                    memory_limit=worker.memory_limit,
                    declared=declared,
                    profile=resolved,
                    failures_dir=failures_dir,
                    adapter_spec=spec,
                    stream_threads=max(1, usable_cores() // jobs),
                )
                serial = judge_in_jobs(
                    runnable,
                    jobs,
                    setup,
                    shrink=shrink,
                    record=lambda index, verdict: record(index, verdict, examples_reported=False),
                )
            if serial:
                preload()  # before the first draw here: see transpec.jobs.preload
            for index, case in serial:
                verdict = run_case(
                    adapter,
                    case,
                    resolved,
                    failures_dir=failures_dir,
                    adapter_spec=spec,
                    declared=declared,
                    worker=worker,
                    shrink=shrink(case),
                )
                record(index, verdict)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if worker is not None:
            worker.close()
        progress.end()
    result.seconds = time.perf_counter() - start
    return result


def open_worker(
    adapter: Adapter,
    spec: str | None,
    memory_limit: int | None = None,
    *,
    devices: Iterable[str] = ("cpu",),
) -> Worker:
    """The worker process of a run with ``isolation="process"`` (started on its first call).

    The worker loads the adapter from ``spec`` (for a :class:`FunctionAdapter`: the function,
    its component and its base's spec); ``ValueError`` (one line) when the adapter cannot be
    loaded by name. ``memory_limit``: bytes of address space (``None``: half the physical
    memory when every one of ``devices`` is ``cpu`` -- a GPU runtime reserves far more address
    space than it uses --, else none; 0: none)."""
    from transpec.oracle.engine.isolation import AdapterSource, Worker, default_memory_limit

    if spec is None:
        raise ValueError(
            f"isolation 'process' needs an adapter that can be loaded again by name (a built-in "
            f"name or module:attribute); {adapter.name!r} cannot: pass its spec or use "
            "isolation 'none'"
        )
    conventions = getattr(adapter, "conventions", None)
    if isinstance(adapter, FunctionAdapter):
        base = adapter.base_name or infer_spec(adapter._base)
        source = AdapterSource(spec, adapter._component, base, conventions)
    else:
        source = AdapterSource(spec, conventions=conventions)
    if memory_limit is None:
        memory_limit = default_memory_limit() if set(devices) <= {"cpu"} else None
    if memory_limit is not None and memory_limit < 0:
        raise ValueError(f"memory_limit must be a number of bytes >= 0, got {memory_limit}")
    expect = f"{type(adapter).__module__}:{type(adapter).__qualname__}"
    return Worker(source, memory_limit=memory_limit or None, expect=expect)


def requested_names(
    *,
    components: Sequence[str] | None,
    dtypes: Sequence[str] | None,
    devices: Sequence[str] | None,
) -> dict[str, tuple[str, ...]]:
    """The names a caller chose explicitly, canonical (``None``: not chosen): what
    :func:`nothing_tested` checks ran something."""
    out: dict[str, tuple[str, ...]] = {}
    for what, values in (("component", components), ("dtype", dtypes), ("device", devices)):
        if values is None:
            continue
        names = [values] if isinstance(values, str) else list(values)
        if what == "component":
            names = [registry.get(n).name for n in names]
        elif what == "dtype":
            names = [canonical_dtype(n) for n in names]
        out[what] = tuple(dict.fromkeys(str(n) for n in names))
    return out


def _flaky_failure(exc: BaseException) -> PropertyViolation | ImplementationFailure | None:
    """The implementation's failure inside Hypothesis's "Flaky" error, if that is what it is."""
    from hypothesis.errors import Flaky

    if not isinstance(exc, Flaky):
        return None
    found: list[BaseException] = [*getattr(exc, "exceptions", ())]
    if exc.__cause__ is not None:
        found.append(exc.__cause__)
    for inner in found:
        if isinstance(inner, (PropertyViolation, ImplementationFailure)):
            return inner
        if isinstance(inner, _Abort):
            return inner.failure
    return None


#: failure kinds that end a case at once, unshrunk: a hang would cost the call timeout, and
#: a crash a new worker process, on every shrink step
_NOT_SHRUNK = ("hung", "crashed")


class _Abort(BaseException):
    """Raised inside a Hypothesis test to stop at once (no shrinking): used for hangs and
    crashes (:data:`_NOT_SHRUNK`)."""

    def __init__(self, failure: ImplementationFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


class _AllRejected(Exception):
    """Every example Hypothesis drew was rejected by the adapter's ``supports()``: the verdict
    is skipped with the adapter's reason, not an error."""


@dataclass
class _Trace:
    examples: int = 0
    #: examples the adapter's ``supports()`` rejected (counted in ``examples`` too)
    discarded: int = 0
    ratio: float | None = None
    last_args: dict[str, Any] | None = None
    #: the arguments of the last call that failed (the shrunk counterexample at the end)
    failed_args: dict[str, Any] | None = None
    #: calls judged on sampled rows, and the last one's rows in words (Harness.sampled_rows)
    sampled_calls: int = 0
    sampled_rows: str | None = None


def check_once(prop: Property, harness: Harness, args: Mapping[str, Any]) -> float | None:
    """Run ``prop.check`` on one example; a returned ratio above 1 is a violation."""
    ratio = prop.check(harness, dict(args))
    if ratio is None:
        return None
    ratio = float(ratio)
    if not ratio <= 1.0:
        raise PropertyViolation(
            f"{prop.component}.{prop.name}: error-to-tolerance ratio {ratio:.3g} > 1", ratio=ratio
        )
    return ratio


def run_case(
    adapter: Adapter,
    case: Case,
    profile: Profile,
    *,
    failures_dir: str | Path | None = "transpec-failures",
    adapter_spec: str | None = None,
    declared: Declared | None = None,
    worker: Worker | None = None,
    shrink: bool = True,
) -> Verdict:
    """One verdict: skip, or run the property under Hypothesis and judge the outcome.

    ``declared``: the conventions and time limit to judge under (:func:`run` passes the one
    snapshot of the run); by default a snapshot taken now. ``worker``: the worker process the
    implementation is called in (:func:`open_worker`); ``None``: this process.

    ``shrink=False``: a failure is reported on the first failing example found, not shrunk to
    a minimal one. Runs pass it for the verdicts their known-failures file lists
    (:mod:`transpec.xfails`): the failure is known and the gate only asks whether it still
    fails, so the minutes a slow implementation can spend on shrinking buy nothing; the saved
    case and the report then show a larger example, and ``examples`` counts fewer calls."""
    prop = case.prop
    verdict = Verdict(prop.component, prop.name, case.dtype, case.device, "skipped")
    if case.skip is not None:
        verdict.message = case.skip
        return verdict
    start = time.perf_counter()
    trace = _Trace()
    if declared is None:
        declared = Declared.of(adapter)
    try:
        _hypothesis_run(adapter, case, profile, trace, declared, worker, shrink=shrink)
    except KeyboardInterrupt:
        raise
    except _AllRejected as rejected:
        verdict.status = "skipped"
        verdict.message = f"the adapter rejects every example drawn: {rejected}"
    except _Abort as abort:
        _fail(
            verdict,
            abort.failure,
            trace,
            adapter,
            case,
            profile,
            failures_dir,
            adapter_spec,
            declared,
        )
    except (PropertyViolation, ImplementationFailure) as exc:
        _fail(verdict, exc, trace, adapter, case, profile, failures_dir, adapter_spec, declared)
    except Exception as exc:
        inner = _flaky_failure(exc)
        if inner is not None:
            # failed on an input, then passed on the same input: nondeterministic, still wrong
            _fail(
                verdict,
                inner,
                trace,
                adapter,
                case,
                profile,
                failures_dir,
                adapter_spec,
                declared,
                flaky=True,
            )
            verdict.message = (
                "nondeterministic: failed on this input once and passed on it again; "
                + verdict.message
            )
            verdict.report = verdict.report.replace(
                "\n", "\n  (nondeterministic: the replay of this input passed)\n", 1
            )
        else:
            _fail(verdict, exc, trace, adapter, case, profile, failures_dir, adapter_spec, declared)
    else:
        verdict.status = "passed"
        verdict.ratio = trace.ratio
        verdict.message = f"{trace.examples - trace.discarded} examples" + (
            f" ({trace.discarded} discarded: the adapter does not take them)"
            if trace.discarded
            else ""
        )
    verdict.examples = trace.examples - trace.discarded
    verdict.discarded = trace.discarded
    if trace.sampled_calls:
        calls = f"{trace.sampled_calls} call{'' if trace.sampled_calls == 1 else 's'}"
        verdict.judged_rows = f"{calls} on sampled rows; last: {trace.sampled_rows}"
    verdict.seconds = time.perf_counter() - start
    return verdict


def _hypothesis_run(
    adapter: Adapter,
    case: Case,
    profile: Profile,
    trace: _Trace,
    declared: Declared,
    worker: Worker | None = None,
    *,
    shrink: bool = True,
) -> None:
    from hypothesis import Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from transpec.oracle.engine.harness import Harness

    prop = case.prop
    harness = Harness(adapter, case.dtype, case.device, declared=declared, worker=worker)

    def test(args: dict[str, Any]) -> None:
        trace.examples += 1
        progress.example_done()
        trace.last_args = _copy_args(args)
        try:
            ratio = check_once(prop, harness, args)
        except ImplementationFailure as failure:
            trace.failed_args = trace.last_args
            if failure.kind in _NOT_SHRUNK:
                raise _Abort(failure) from None
            raise
        except Exception:
            trace.failed_args = trace.last_args
            raise
        if ratio is not None and (trace.ratio is None or ratio > trace.ratio):
            trace.ratio = ratio

    # distinct example-database keys per case (the function itself is the same for all)
    test._hypothesis_internal_add_digest = case.name.encode()  # type: ignore[attr-defined]
    seed = case_seed(profile, prop.component, prop.name, case.dtype, case.device)
    chosen = hypothesis_settings(profile)
    if not shrink:
        chosen = settings(chosen, phases=[p for p in chosen.phases if p is not Phase.shrink])
    wrapped = chosen(hypothesis_seed(seed)(given(prop.strategy(case.dtype, profile.name))(test)))
    if chosen.database is None:
        # no example database: the key Hypothesis would derive for it (a digest of the test's
        # source, tokenized again for every case) is never used; the seed is given above
        wrapped._hypothesis_internal_database_key = None
    from hypothesis.errors import Unsatisfiable

    try:
        with _quiet_hypothesis():
            wrapped()
    except Unsatisfiable:
        if harness.rejected:
            raise _AllRejected(harness.rejection) from None
        raise
    finally:
        trace.discarded = harness.rejected
        trace.sampled_calls, trace.sampled_rows = harness.sampled_calls, harness.sampled_rows


@contextlib.contextmanager
def _quiet_hypothesis() -> Iterator[None]:
    """Silence Hypothesis's own "Falsifying example" printing; transpec reports instead."""
    from hypothesis.reporting import with_reporter

    with with_reporter(lambda _value: None):
        yield


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, dict):  # a layer's parameter dict (its class kept: it prints short)
        out = copy.copy(value)
        for k, v in value.items():
            out[k] = _copy_value(v)
        return out
    return value


def _copy_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_value(v) for k, v in args.items()}


def _fail(
    verdict: Verdict,
    exc: BaseException,
    trace: _Trace,
    adapter: Adapter,
    case: Case,
    profile: Profile,
    failures_dir: str | Path | None,
    adapter_spec: str | None,
    declared: Declared,
    *,
    flaky: bool = False,
) -> None:
    """Fill ``verdict`` from the failure ``exc`` raised on ``trace.failed_args``; save it
    (``flaky``: the failure did not recur when Hypothesis replayed the input)."""
    classify(verdict, exc)
    args = trace.failed_args if trace.failed_args is not None else trace.last_args
    verdict.picture = picture_of(exc, args, declared.conventions_for(case.dtype))
    path: Path | None = None
    if args is not None and failures_dir is not None:
        try:
            path = save_case(
                Path(failures_dir),
                adapter=adapter,
                adapter_spec=adapter_spec,
                case=case,
                args=args,
                profile=profile,
                verdict=verdict,
                flaky=flaky,
                conventions=declared.conventions,
            )
        except Exception as save_error:
            verdict.message += f" (the counterexample could not be saved: {save_error})"
    describe_failure(
        verdict,
        exc,
        args,
        adapter=adapter,
        examples=trace.examples,
        failure_file=path,
        adapter_spec=adapter_spec,
    )


def picture_of(
    exc: BaseException, args: Mapping[str, Any] | None, conventions: Conventions
) -> dict[str, Any] | None:
    """The picture (error map, mask) of the reported failure ``exc`` as a dict, or None when
    it compared no arrays. Made here, once per failed verdict, from the evidence the failed
    comparison kept by reference: never while Hypothesis shrinks. A relation's evidence lacks
    the call's arguments; the counterexample's (``args``, transpec's mask meaning) stand in."""
    evidence = getattr(exc, "evidence", None)
    if not isinstance(exc, PropertyViolation) or evidence is None:
        return None
    try:
        canonical_masks = dataclasses.replace(conventions, bool_mask="keep")
        return evidence.picture(args=args, conventions=canonical_masks).to_dict()
    except Exception:  # a picture is a convenience: it must never hide the failure
        return None


def classify(verdict: Verdict, exc: BaseException) -> None:
    """Set status, ratio, kind, message and worst element of ``verdict`` from a failure."""
    if isinstance(exc, PropertyViolation):
        verdict.status = "failed"
        verdict.ratio = exc.ratio
        verdict.failure_kind = "violation"
        verdict.message = exc.message.splitlines()[0] if exc.message else "property violated"
        if exc.worst is not None:
            verdict.worst = worst_dict(exc.worst)
    elif isinstance(exc, ImplementationFailure):
        verdict.status = "failed"
        verdict.ratio = float("inf")
        verdict.failure_kind = exc.kind
        verdict.message = exc.describe().splitlines()[0]
    else:
        verdict.status = "error"
        verdict.failure_kind = "internal"
        text = str(exc).splitlines()[0] if str(exc) else ""
        verdict.message = f"internal error in transpec: {type(exc).__name__}: {text}".rstrip(": ")


def describe_failure(
    verdict: Verdict,
    exc: BaseException,
    args: Mapping[str, Any] | None,
    *,
    adapter: Adapter,
    examples: int | None,
    failure_file: str | Path | None,
    adapter_spec: str | None,
) -> None:
    """Fill the counterexample summary, file, reproduce command and full report of ``verdict``."""
    from transpec.reports import failure_report, summarize_args

    if args is not None:
        try:
            verdict.counterexample = summarize_args(verdict.component, args)
        except Exception as summary_error:  # a summary must never hide the failure itself
            verdict.counterexample = f"(could not summarize the arguments: {summary_error})"
    if failure_file is not None:
        verdict.failure_file = str(failure_file)
        verdict.reproduce_command = reproduce_command(failure_file, adapter_spec)
    details = ""
    if verdict.status == "error":
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    elif isinstance(exc, (PropertyViolation, ImplementationFailure)):
        details = _details(exc)
    verdict.report = failure_report(
        verdict, exc, adapter=_describe(adapter), details=details, examples=examples
    )


def _details(exc: PropertyViolation | ImplementationFailure) -> str:
    if isinstance(exc, PropertyViolation):
        extra = exc.message.splitlines()[1:]
        lines = list(extra)
        for key, value in exc.details.items():
            if value is None or (isinstance(value, (int, float)) and value == 0):
                continue  # e.g. "nonfinite_mismatch: 0" says nothing
            if isinstance(value, Mapping):
                value = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            lines.append(f"{key}: {_short(value)}")
        return "\n".join(lines)
    return "\n".join(exc.message.splitlines()[1:])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def worst_dict(worst: Worst) -> dict[str, Any]:
    return {
        "index": list(worst.index),
        "actual": _json_float(worst.actual),
        "expected": _json_float(worst.expected),
        "error": _json_float(worst.error),
        "tolerance": _json_float(worst.tolerance),
        "ratio": _json_float(worst.ratio),
        "derivation": worst.derivation,
    }


def _json_float(value: float | None) -> float | str | None:
    """JSON has no inf/NaN: they are written as the strings "inf", "-inf", "nan"."""
    if value is None:
        return None
    value = float(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value


def _describe(adapter: Adapter) -> str:
    try:
        return str(adapter.describe())
    except Exception as exc:
        return f"{adapter.name} (describe() raised {type(exc).__name__})"


# -- saved cases --------------------------------------------------------------------------------


def infer_spec(adapter: Adapter) -> str | None:
    """How ``transpec check``/``reproduce`` would load ``adapter`` again, when that is knowable.

    A built-in adapter -> its registry name; an adapter class or a function defined at the top
    level of an importable module -> ``module:attr``; anything else -> ``None``.
    """
    try:
        from transpec.adapters.registry import BUILTIN_ADAPTERS
    except ImportError:  # pragma: no cover - the registry is part of the package
        BUILTIN_ADAPTERS = {}
    if isinstance(adapter, FunctionAdapter):
        target: Any = adapter._function
    else:
        target = type(adapter)
        for name, entry in dict(BUILTIN_ADAPTERS).items():
            module = getattr(entry, "module", None)
            attribute = getattr(entry, "attribute", None)
            if (module, attribute) == (target.__module__, target.__qualname__):
                return str(name)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def reproduce_command(path: str | Path, adapter_spec: str | None) -> str:
    """``transpec reproduce FILE`` (with ``--adapter`` when the file cannot name the adapter,
    and ``--trust`` when the adapter it names is not built in: replaying imports its module,
    which ``reproduce`` does only when told to; the file is the user's own run's)."""
    from transpec.adapters.registry import BUILTIN_ADAPTERS

    command = f"transpec reproduce {shlex.quote(str(path))}"
    if adapter_spec is None:
        command += " --adapter MODULE:ATTR"
    elif adapter_spec not in BUILTIN_ADAPTERS:
        command += " --trust"
    return command


def _encode_value(value: Any) -> Any:
    """A non-array argument as JSON: tuples, dicts and non-finite floats tagged (see
    :func:`decode_value`); arrays are stored as ``.npz`` entries by :func:`save_case`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return _encode_value(value.item())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"float": repr(value)}
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode_value(v) for v in value]}
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, Mapping):
        return {"dict": [[_dict_key(k), _encode_value(v)] for k, v in value.items()]}
    raise TypeError(f"cannot save an argument of type {type(value).__name__}")


def _dict_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"cannot save a dict argument with key {key!r} (keys must be strings)")
    return key


def decode_value(value: Any, arrays: Mapping[str, np.ndarray] | None = None) -> Any:
    """Inverse of the encoding of non-array arguments in saved cases.

    A dict argument (a layer's ``params``) is saved as ``{"dict": [[key, item], ...]}`` in its
    original key order; an item that is an array is ``{"array": ENTRY}``, the name of its
    ``.npz`` entry, looked up in ``arrays``.
    """
    if isinstance(value, dict):
        if "tuple" in value:
            return tuple(decode_value(v, arrays) for v in value["tuple"])
        if "float" in value:
            return float(value["float"])
        if "dict" in value:
            return {str(k): decode_value(v, arrays) for k, v in value["dict"]}
        if "array" in value:
            entry = str(value["array"])
            if arrays is None or entry not in arrays:
                raise ValueError(f"the case file lacks the array entry {entry!r}")
            return arrays[entry]
        raise ValueError(f"unexpected saved value {value!r}")
    if isinstance(value, list):
        return [decode_value(v, arrays) for v in value]
    return value


#: prefix of the ``.npz`` entries of array arguments, and of arrays inside dict arguments
_ARG_PREFIX, _DICT_PREFIX = "arg_", "dict_"


def _encode_dict(
    name: str, value: Mapping[Any, Any], entries: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A dict argument ``name``: its arrays become entries ``dict_<name>.<key>`` of ``entries``
    (the layers' state_dict keys contain dots; argument names do not), the rest JSON."""
    items: list[list[Any]] = []
    for key, item in value.items():
        key = _dict_key(key)
        if isinstance(item, np.ndarray):
            entry = f"{_DICT_PREFIX}{name}.{key}"
            entries[entry] = item
            items.append([key, {"array": entry}])
        else:
            items.append([key, _encode_value(item)])
    return {"dict": items}


def save_case(
    directory: Path,
    *,
    adapter: Adapter,
    adapter_spec: str | None,
    case: Case,
    args: Mapping[str, Any],
    profile: Profile,
    verdict: Verdict,
    flaky: bool = False,
    conventions: Conventions | None = None,
) -> Path:
    """Save one counterexample as a ``.npz`` file: its arrays plus a JSON metadata entry.

    ``flaky``: the failure did not recur when the run replayed the same input (a
    nondeterministic implementation); the metadata says so (``"flaky": true``, absent
    otherwise, so that other files keep their names) and the replay warns that a pass proves
    little.

    The metadata (entry ``__transpec__``) names the adapter (spec string and description),
    component, property, dtype, device, the conventions it was judged under (``conventions``,
    the run's snapshot; the adapter's by default), the transpec version, the
    profile and seed, the verdict, and the non-array arguments. Array arguments (float, bool or
    integer, e.g. embedding indices) are entries ``arg_<name>``; a dict argument (a layer's
    ``params``, keyed by ``state_dict`` names) keeps its key order in the metadata and its arrays
    in entries ``dict_<name>.<key>``, so :func:`load_case` rebuilds it exactly.
    """
    arrays: dict[str, np.ndarray] = {}
    dict_arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif isinstance(value, Mapping):
            scalars[key] = _encode_dict(key, value, dict_arrays)
        else:
            scalars[key] = _encode_value(value)
    entries = {f"{_ARG_PREFIX}{k}": v for k, v in arrays.items()} | dict_arrays
    for entry, array in entries.items():
        if array.dtype.hasobject:
            raise TypeError(f"cannot save the object array {entry!r}")
    meta = {
        "format": FILE_FORMAT,
        "transpec_version": transpec.__version__,
        "adapter": adapter_spec,
        "adapter_kind": "function" if isinstance(adapter, FunctionAdapter) else "adapter",
        "base": (adapter.base_name or infer_spec(adapter._base))
        if isinstance(adapter, FunctionAdapter)
        else None,
        "adapter_describe": _describe(adapter),
        "component": case.prop.component,
        "property": case.prop.name,
        "dtype": case.dtype,
        "device": case.device,
        "conventions": (conventions if conventions is not None else adapter.conventions).to_dict(),
        "profile": profile.name,
        "seed": profile.seed,
        "status": verdict.status,
        "message": verdict.message,
        "args": scalars,
        "arrays": sorted(arrays),
        "order": list(args),
    }
    if flaky:
        meta["flaky"] = True
    text = json.dumps(meta, sort_keys=True)
    digest = hashlib.sha256(text.encode())
    named = {**arrays, **dict_arrays}  # array arguments by their bare name, as files always were
    for key in sorted(named):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(named[key]).tobytes())
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{case.prop.component}-{case.prop.name}-{case.dtype}-{case.device}"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    path = directory / f"{stem}-{digest.hexdigest()[:10]}.npz"
    payload: dict[str, Any] = dict(entries)
    payload["__transpec__"] = np.array(text)
    from transpec.reports import atomic_output

    with atomic_output(path) as fh:  # a run killed while it saves leaves no truncated case
        np.savez_compressed(fh, **payload)
    return path


#: the largest archive member a case file may hold, uncompressed, and all members together,
#: whatever they compress to: a file over these is refused before anything is decompressed (a
#: zip bomb), unless it expands at most :data:`MAX_EXPANSION` times (a long input, a 128k-key
#: attention case of some hundred MiB, is as large on disk as in memory)
MAX_MEMBER_BYTES = 64 * 2**20
MAX_TOTAL_BYTES = 256 * 2**20
#: how many times its stored size a member (and the archive) may expand beyond the limits
#: above: float inputs rounded to half precision and stored as float64 compress a few times; a
#: zip bomb expands about a thousand
MAX_EXPANSION = 16
#: the most archive members a case file may hold
MAX_MEMBERS = 4096

#: metadata fields of a case file: name -> (allowed types, required)
_META_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "component": ((str,), True),
    "property": ((str,), True),
    "dtype": ((str,), True),
    "device": ((str,), True),
    "adapter": ((str, type(None)), True),
    "args": ((dict,), True),
    "order": ((list,), True),
    "transpec_version": ((str,), False),
    "adapter_kind": ((str,), False),
    "base": ((str, type(None)), False),
    "adapter_describe": ((str,), False),
    "conventions": ((dict,), False),
    "profile": ((str,), False),
    "seed": ((int, type(None)), False),
    "status": ((str,), False),
    "message": ((str,), False),
    "arrays": ((list,), False),
    "flaky": ((bool,), False),
}


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", dict: "an object", list: "a list", int: "an integer"}
    names |= {bool: "true or false", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def validate_meta(meta: Any) -> dict[str, Any]:
    """``meta`` when it is well-formed case metadata; :class:`CaseFileReadError` naming the
    first field that is missing, of the wrong type, or unknown."""
    from transpec.errors import CaseFileReadError

    if not isinstance(meta, dict):
        raise CaseFileReadError("the metadata is not a JSON object")
    unknown = sorted(str(k) for k in meta if k not in _META_FIELDS)
    if unknown:
        raise CaseFileReadError(f"unknown metadata field {unknown[0]!r}")
    for name, (types, required) in _META_FIELDS.items():
        if name not in meta:
            if required:
                raise CaseFileReadError(f"metadata field {name!r} is missing")
            continue
        value = meta[name]
        # bool is an int in Python; only "flaky" takes one
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise CaseFileReadError(f"metadata field {name!r} must be {_type_names(types)}")
    if meta["format"] != FILE_FORMAT:
        raise CaseFileReadError(f"unsupported case file format {meta['format']!r}")
    if meta["dtype"] not in DTYPES:
        raise CaseFileReadError(f"metadata field 'dtype' names an unknown dtype {meta['dtype']!r}")
    device = meta["device"]
    if not device or any(c.isspace() for c in device):
        raise CaseFileReadError(f"metadata field 'device' is not a device name: {device!r}")
    if meta.get("adapter_kind", "adapter") not in ("adapter", "function"):
        raise CaseFileReadError("metadata field 'adapter_kind' must be 'adapter' or 'function'")
    for name in ("order", "arrays"):
        if not all(isinstance(item, str) for item in meta.get(name, ())):
            raise CaseFileReadError(f"metadata field {name!r} must be a list of strings")
    for key in meta.get("conventions", {}):
        if not isinstance(key, str):  # pragma: no cover - JSON object keys are strings
            raise CaseFileReadError("metadata field 'conventions' has a key that is not a string")
    return meta


def check_archive(path: Path) -> None:
    """Refuse an archive whose members are too many or too large before decompressing any:
    each member's declared size (``ZipInfo.file_size``, which reading enforces) against
    :data:`MAX_MEMBER_BYTES`, their sum against :data:`MAX_TOTAL_BYTES`, and each array's own
    header (the size NumPy allocates before it reads) against its member's size."""
    from numpy.lib import format as npy

    from transpec.errors import CaseFileReadError

    limit = (
        f"the limit is {MAX_MEMBER_BYTES // 2**20} MiB a member, {MAX_TOTAL_BYTES // 2**20} MiB "
        f"in all, or {MAX_EXPANSION} times the stored size"
    )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise CaseFileReadError(f"{len(members)} archive members (at most {MAX_MEMBERS})")
            total = stored = 0
            for info in members:
                total += info.file_size
                stored += info.compress_size
                member_ok = (
                    info.file_size <= MAX_MEMBER_BYTES
                    or info.file_size <= MAX_EXPANSION * info.compress_size
                )
                total_ok = total <= MAX_TOTAL_BYTES or total <= MAX_EXPANSION * stored
                if not (member_ok and total_ok):
                    raise CaseFileReadError(
                        f"archive member {info.filename!r} expands to {info.file_size} bytes "
                        f"({total} in all so far); {limit}"
                    )
            for info in members:
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = npy.read_array_header_2_0(member)
                count = 1
                for n in shape:
                    count *= int(n)
                if count * dtype.itemsize > info.file_size:
                    raise CaseFileReadError(
                        f"archive member {info.filename!r} declares an array of "
                        f"{count * dtype.itemsize} bytes in {info.file_size} bytes"
                    )
    except CaseFileReadError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaseFileReadError(f"not a readable .npz archive: {text}") from None


def load_case(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, args) of a saved case; :class:`~transpec.errors.CaseFileReadError` (a
    ``CaseFileError``, a ``ValueError``) when it is not a readable transpec case file: the
    archive's sizes are checked before anything is decompressed (:func:`check_archive`) and
    every metadata field before it is used (:func:`validate_meta`)."""
    from transpec.errors import CaseFileReadError

    p = Path(path)
    if not p.is_file():
        raise CaseFileReadError(f"no such file: {p}")
    if not zipfile.is_zipfile(p):
        raise CaseFileReadError(f"{p} is not a transpec case file (not an .npz archive)")
    try:
        check_archive(p)
    except CaseFileReadError as exc:
        raise CaseFileReadError(f"{p}: {exc}") from None
    try:
        with np.load(p, allow_pickle=False) as data:
            if "__transpec__" not in data.files:
                raise CaseFileReadError("not a transpec case file (no __transpec__ entry)")
            meta = validate_meta(json.loads(str(data["__transpec__"])))
            arrays = {
                k[len(_ARG_PREFIX) :]: np.array(data[k])
                for k in data.files
                if k.startswith(_ARG_PREFIX)
            }
            dict_arrays = {k: np.array(data[k]) for k in data.files if k.startswith(_DICT_PREFIX)}
    except CaseFileReadError as exc:
        raise CaseFileReadError(f"{p}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CaseFileReadError(f"{p} is not a readable .npz file: {exc}") from None
    except (ValueError, RecursionError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaseFileReadError(f"{p}: {text}") from None
    try:
        values: dict[str, Any] = {k: decode_value(v, dict_arrays) for k, v in meta["args"].items()}
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaseFileReadError(f"{p}: metadata field 'args': {text}") from None
    values.update(arrays)
    if any(isinstance(v, dict) for v in values.values()):
        from transpec.oracle.layers.strategies import ParamDict  # a dict; prints names, shapes

        values = {k: ParamDict(v) if isinstance(v, dict) else v for k, v in values.items()}
    order = [k for k in meta["order"] if k in values]
    args = {k: values[k] for k in order}
    args.update({k: v for k, v in values.items() if k not in args})
    return meta, args


__all__ = [
    "DTYPES",
    "Case",
    "RunResult",
    "Verdict",
    "check_once",
    "classify",
    "describe_failure",
    "infer_spec",
    "load_case",
    "misnamed_methods",
    "nothing_tested",
    "plan",
    "run",
    "run_case",
    "save_case",
]
