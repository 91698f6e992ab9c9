"""transpec in pytest: ``pytest --transpec ADAPTER`` and conformance tests in your own modules.

Command line (the plugin is registered through the ``pytest11`` entry point; without
``--transpec`` it adds nothing)::

    pytest --transpec torch                                  # one test per verdict
    pytest --transpec torch -m transpec -n 2                 # only transpec's tests, 2 workers
    pytest --transpec mypkg.kernels:MyAdapter --transpec-component attention \\
           --transpec-dtype float16 -k causality --junitxml=conformance.xml
    pytest --transpec torch --transpec-device cuda -n 8 --transpec-gpus 0,1,2,3,4,5,6,7

Each component × property × dtype (× device) is one test item named
``transpec::<component>.<property>[<dtype>-<device>]``, collected in a fixed order, so ``-k``,
``-m transpec``, ``--junitxml`` and ``pytest-xdist`` work. A verdict that is skipped (component
not provided, dtype not declared, ...) is a pytest skip with the reason; a failure shows the
failure report (counterexample, worst element, tolerance derivation, saved file, reproduce
command).

``--transpec-xfails FILE`` marks the verdicts a known-failures file lists (:mod:`transpec.xfails`)
as pytest ``xfail``: a listed failure is XFAIL, a listed verdict that passes XPASS (a failure
with ``--transpec-strict-xfails``); an error of transpec itself is never expected.

Skips alone are not a pass: when no transpec verdict ran (passed or failed), or a component,
dtype or device chosen with ``--transpec-component``/``-dtype``/``-device`` ran nothing, a
session that would otherwise succeed exits with status 5 (pytest's "no tests ran", the status
``transpec check`` gives) and the summary says why in one line. A public method of the adapter
whose name is close to a component's method but matches none (``layernorm``) is a warning.

In a test module of your own::

    from transpec.plugin import conformance_tests
    from mypkg.kernels import MyAdapter

    test_my_kernels = conformance_tests(MyAdapter(), dtypes=["float32", "float16"])

``conformance_tests`` returns a test function parametrized over the same cases. For a script or
a single assertion, :func:`assert_conforms` runs everything and raises ``AssertionError`` with the
failure reports.

Importing this module is cheap (every pytest run in an environment with transpec imports it):
the runner, Hypothesis and the adapters are imported only when transpec tests are requested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from transpec.adapters.base import Adapter, Declared
    from transpec.oracle.engine.isolation import Worker
    from transpec.oracle.engine.profiles import Profile
    from transpec.runs import Case, RunResult, Verdict

MARKER = "transpec"

#: the status of a session whose transpec items tested nothing (pytest's NO_TESTS_COLLECTED)
EXIT_NOTHING_TESTED = 5

#: where ``pytest --transpec`` runs the implementation unless ``--transpec-isolation`` says
DEFAULT_ISOLATION = "process"


class TranspecWarning(UserWarning):
    """Something about the adapter under test that will make verdicts be skipped."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("transpec", "transpec conformance tests")
    group.addoption(
        "--transpec",
        metavar="ADAPTER",
        default=None,
        help="add transpec conformance tests of ADAPTER (a built-in name or module:attr)",
    )
    for name, what in (
        ("component", "component(s) to test"),
        ("property", "property name(s) to test"),
        ("dtype", "dtype(s) to test"),
        ("device", "device(s) to test"),
    ):
        group.addoption(
            f"--transpec-{name}", action="append", default=None, metavar=name.upper(), help=what
        )
    group.addoption("--transpec-profile", choices=("ci", "thorough"), default="ci")
    group.addoption(
        "--transpec-gradients",
        action="store_true",
        default=False,
        help="also judge the backward passes (the grad_* properties)",
    )
    group.addoption("--transpec-seed", type=int, default=None, metavar="N")
    group.addoption("--transpec-max-examples", type=int, default=None, metavar="N")
    group.addoption(
        "--transpec-gpus",
        default=None,
        metavar="IDS",
        help="comma-separated GPU ids: xdist worker gwN sees only GPU IDS[N mod len] "
        "(sets CUDA_VISIBLE_DEVICES before any framework starts)",
    )
    group.addoption(
        "--transpec-isolation",
        choices=("none", "process"),
        default=DEFAULT_ISOLATION,
        help="where the implementation runs: 'process', a worker process that a crash or a hang "
        "ends without ending the session (failure kinds crashed, hung); 'none', the pytest "
        f"process (default: {DEFAULT_ISOLATION})",
    )
    group.addoption(
        "--transpec-memory-limit",
        type=int,
        default=None,
        metavar="MIB",
        help="address-space limit of the worker process in MiB (default: half the physical "
        "memory when every device is cpu; 0: none)",
    )
    group.addoption(
        "--transpec-xfails",
        default=None,
        metavar="FILE",
        help="known failures: verdict ids with a '# reason' each, marked xfail",
    )
    group.addoption(
        "--transpec-strict-xfails",
        action="store_true",
        default=False,
        help="a verdict listed in --transpec-xfails that passes fails (strict xfail)",
    )
    group.addoption(
        "--transpec-html",
        default=None,
        metavar="FILE",
        help="write a self-contained HTML report of the transpec verdicts here (heat map, "
        "mask and derivation per failure); written also when the session is interrupted",
    )
    group.addoption(
        "--transpec-failures-dir",
        default="transpec-failures",
        metavar="DIR",
        help="where failing cases are saved (default: transpec-failures)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a transpec conformance verdict")
    if config.getoption("transpec_html", None) and not config.getoption("transpec", None):
        raise pytest.UsageError("transpec: --transpec-html needs --transpec ADAPTER")
    if config.getoption("transpec", None):
        config.pluginmanager.register(EmptySessionGuard(config), "transpec-empty-session-guard")
        html = config.getoption("transpec_html", None)
        if html and not hasattr(config, "workerinput"):  # xdist workers send their reports
            config.pluginmanager.register(HtmlReport(config, html), "transpec-html-report")
    gpus = _split([config.getoption("transpec_gpus") or ""])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if gpus and worker.startswith("gw") and worker[2:].isdigit():
        # one worker per GPU: must happen before torch (or any framework) initializes CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return out or None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    spec = config.getoption("transpec")
    if not spec:
        return None
    seed = config.getoption("transpec_seed")
    examples = config.getoption("transpec_max_examples")
    parts = [f"transpec: adapter {spec}", f"profile {config.getoption('transpec_profile')}"]
    if seed is not None:
        parts.append(f"seed {seed}")
    if examples is not None:
        parts.append(f"{examples} examples per property")
    for name in ("component", "property", "dtype", "device"):
        chosen = _split(config.getoption(f"transpec_{name}"))
        if chosen:
            parts.append(f"{name} {','.join(chosen)}")
    return [", ".join(parts)]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append the transpec items (first, so that ``-k``/``-m`` deselection sees them)."""
    spec = config.getoption("transpec")
    if not spec:
        return
    from transpec.oracle import components as registry
    from transpec.oracle.engine.profiles import resolve
    from transpec.runs import plan

    components = _split(config.getoption("transpec_component"))
    try:
        from transpec.cli import load_adapter_spec

        adapter = load_adapter_spec(
            spec, components[0] if components and len(components) == 1 else None
        )
        profile = resolve(
            config.getoption("transpec_profile"),
            seed=config.getoption("transpec_seed"),
            max_examples=config.getoption("transpec_max_examples"),
        )
        for c in components or ():
            registry.get(c)
        from transpec.adapters.base import validate_adapter
        from transpec.xfails import KnownFailures

        xfails_file = config.getoption("transpec_xfails", None)
        xfails = (
            KnownFailures.load(xfails_file, strict=config.getoption("transpec_strict_xfails"))
            if xfails_file
            else None
        )

        declared = validate_adapter(adapter)
        cases = plan(
            adapter,
            components=components,
            properties=_split(config.getoption("transpec_property")),
            dtypes=_split(config.getoption("transpec_dtype")),
            devices=_split(config.getoption("transpec_device")),
            gradients=bool(config.getoption("transpec_gradients")),
        )
    except (ValueError, TypeError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise pytest.UsageError(f"transpec: {first}") from None
    from transpec.runs import misnamed_methods

    try:
        misnamed = misnamed_methods(adapter)
    except Exception:  # a hostile adapter's provides() may raise: the verdicts will show it
        misnamed = []
    for method, expected in misnamed:
        warnings.warn(
            TranspecWarning(
                f"transpec: method {method!r} of the adapter matches no component; "
                f"did you mean {expected!r}?"
            ),
            stacklevel=1,
        )
    collector = TranspecCollector.from_parent(session, name="transpec", nodeid="transpec")
    failures_dir = config.getoption("transpec_failures_dir")
    worker = None
    if config.getoption("transpec_isolation") == "process":
        from transpec.runs import open_worker

        limit = config.getoption("transpec_memory_limit")
        if limit is not None and limit < 0:
            raise pytest.UsageError(f"transpec: --transpec-memory-limit must be >= 0, got {limit}")
        try:
            worker = open_worker(
                adapter,
                spec,
                None if limit is None else limit * 2**20,
                devices={c.device for c in cases},
            )
        except ValueError as exc:
            raise pytest.UsageError(f"transpec: {exc}") from None
        config.add_cleanup(worker.close)
    from transpec.jobs import preload

    preload()  # before any item draws: an item's examples must not depend on the items before it
    for case in cases:
        item = TranspecItem.from_parent(
            collector,
            name=case.name,
            case=case,
            adapter=adapter,
            profile=profile,
            failures_dir=failures_dir,
            adapter_spec=spec,
            declared=declared,
            worker=worker,
        )
        entry = xfails.find(case.name) if xfails is not None else None
        if entry is not None and xfails is not None:
            reason = f"known failure ({entry.where}): {entry.reason}"
            item.shrink = False
            item.add_marker(
                pytest.mark.xfail(reason=reason, strict=xfails.strict, raises=TranspecFailure)
            )
        items.append(item)


def _requested(config: pytest.Config) -> dict[str, tuple[str, ...]]:
    """The components, dtypes and devices chosen on the command line, canonical."""
    from transpec.oracle import components as registry
    from transpec.oracle.engine.dtypes import canonical_dtype

    out: dict[str, tuple[str, ...]] = {}
    for what in ("component", "dtype", "device"):
        names = _split(config.getoption(f"transpec_{what}"))
        if not names:
            continue
        try:
            if what == "component":
                names = [registry.get(n).name for n in names]
            elif what == "dtype":
                names = [canonical_dtype(n) for n in names]
        except ValueError:
            continue  # reported as a usage error by the collection
        out[what] = tuple(dict.fromkeys(names))
    return out


class EmptySessionGuard:
    """Registered with ``--transpec``: records the outcome of every transpec item that reports
    in this process (all of them on the xdist controller) and, when they tested nothing, turns
    a session that would pass into exit status 5 with a one-line reason in the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        #: node id -> (status, skip reason)
        self.outcomes: dict[str, tuple[str, str]] = {}
        self.why: str | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.nodeid.startswith("transpec::"):
            return
        if hasattr(report, "wasxfail"):  # an expected failure (or XPASS) ran
            self.outcomes[report.nodeid] = ("passed", "")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.outcomes[report.nodeid] = ("skipped", str(reason).removeprefix("Skipped: "))
        elif report.failed:
            self.outcomes[report.nodeid] = ("failed", "")
        elif report.when == "call" and report.nodeid not in self.outcomes:
            self.outcomes[report.nodeid] = ("passed", "")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller sees every report and decides
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            return
        from transpec.runs import Verdict, nothing_tested

        verdicts = []
        for nodeid, (status, reason) in self.outcomes.items():
            head, _, tail = nodeid.removeprefix("transpec::").partition("[")
            component, _, prop = head.partition(".")
            dtype, _, device = tail.rstrip("]").partition("-")
            verdict = Verdict(component, prop, dtype, device, "skipped", message=reason)
            verdict.status = "failed" if status == "failed" else "passed"
            if status == "skipped":
                verdict.status = "skipped"
            verdicts.append(verdict)
        self.why = nothing_tested(verdicts, _requested(self.config))
        if self.why:
            session.exitstatus = EXIT_NOTHING_TESTED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.why:
            terminalreporter.write_line(f"transpec: nothing tested: {self.why}", red=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With ``--transpec-html``, a transpec item's report carries its verdict and what the
    report's header needs, as plain data (xdist sends it from the worker to the controller)."""
    outcome = yield
    verdict = getattr(item, "verdict", None)
    if call.when != "call" or verdict is None or not isinstance(item, TranspecItem):
        return
    if not item.config.getoption("transpec_html", None):
        return
    report = outcome.get_result()
    report.transpec_verdict = verdict.to_dict()
    report.transpec_run = {
        "adapter": _describe(item.adapter),
        "adapter_spec": item.adapter_spec,
        "conventions": item.declared.conventions.to_dict(),
    }


def _describe(adapter: Adapter) -> str:
    from transpec.runs import _describe as describe

    return describe(adapter)


class HtmlReport:
    """``--transpec-html FILE``: gathers the verdicts of the transpec items that report in
    this process (all of them on the xdist controller) and writes the HTML report
    (:mod:`transpec.htmlreport`) when the session finishes, interrupted or not. SIGTERM and
    SIGHUP end the session as Ctrl-C does, so that a stopped session still writes it."""

    def __init__(self, config: pytest.Config, path: str) -> None:
        from transpec.cli import _report_path
        from transpec.errors import UsageError

        try:
            self.path = _report_path(path, "--transpec-html")
        except UsageError as exc:
            raise pytest.UsageError(f"transpec: {exc}") from None
        self.config = config
        self.verdicts: list[Verdict] = []
        self.run: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.previous: dict[int, Any] = {}
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, _interrupt)
            except ValueError:  # not the main thread
                break

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "transpec_verdict", None)
        if data is None:
            return
        from transpec.runs import Verdict

        verdict = Verdict.from_dict(data)
        wasxfail = getattr(report, "wasxfail", None)
        if wasxfail is not None:
            verdict.status = "xpassed" if verdict.status == "passed" else "xfailed"
            verdict.known_failure = _listed_where(str(wasxfail))
        self.verdicts.append(verdict)
        self.run = dict(getattr(report, "transpec_run", None) or self.run)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from transpec.htmlreport import write_html

        result = self.result(session)
        try:
            write_html(result, self.path)
        except OSError as exc:
            warnings.warn(
                TranspecWarning(f"transpec: cannot write the HTML report: {exc}"), stacklevel=1
            )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"transpec HTML report: {self.path}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def result(self, session: pytest.Session) -> RunResult:
        """The verdicts gathered, as the :class:`~transpec.runs.RunResult` reports read."""
        from transpec.oracle.engine.profiles import resolve
        from transpec.runs import RunResult

        config = self.config
        profile = resolve(
            config.getoption("transpec_profile"),
            seed=config.getoption("transpec_seed"),
            max_examples=config.getoption("transpec_max_examples"),
        )
        xfails = None
        xfails_file = config.getoption("transpec_xfails", None)
        if xfails_file:
            from transpec.xfails import KnownFailures

            with contextlib.suppress(ValueError, OSError):
                xfails = KnownFailures.load(
                    xfails_file, strict=config.getoption("transpec_strict_xfails")
                )
        limit = config.getoption("transpec_memory_limit")
        result = RunResult(
            adapter=str(self.run.get("adapter", config.getoption("transpec"))),
            adapter_spec=self.run.get("adapter_spec", config.getoption("transpec")),
            conventions=dict(self.run.get("conventions", {})),
            profile=profile,
            components=tuple(dict.fromkeys(v.component for v in self.verdicts)),
            dtypes=tuple(dict.fromkeys(v.dtype for v in self.verdicts)),
            devices=tuple(dict.fromkeys(v.device for v in self.verdicts)),
            verdicts=list(self.verdicts),
            interrupted=session.exitstatus == pytest.ExitCode.INTERRUPTED,
            seconds=time.perf_counter() - self.started,
            requested=_requested(config),
            isolation=config.getoption("transpec_isolation"),
            memory_limit=None if not limit else limit * 2**20,
            xfails=xfails,
        )
        return result


def _listed_where(reason: str) -> str:
    """``FILE:LINE: reason`` (:attr:`Verdict.known_failure`) from the xfail reason the
    collection gave a listed item, ``known failure (FILE:LINE): reason``."""
    head = "known failure ("
    if not reason.startswith(head) or "): " not in reason:
        return reason
    where, _, why = reason[len(head) :].partition("): ")
    return f"{where}: {why}"


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM/SIGHUP during a session with ``--transpec-html``: stop as Ctrl-C does."""
    raise KeyboardInterrupt


class TranspecCollector(pytest.Collector):
    """The parent of the transpec items (items are made by ``pytest_collection_modifyitems``)."""

    def collect(self) -> list[pytest.Item]:
        return []


class TranspecItem(pytest.Item):
    """One conformance verdict as a pytest test."""

    #: shrink a failure to a minimal example (not for a verdict the known failures list:
    #: :func:`transpec.runs.run_case`)
    shrink: bool = True

    def __init__(
        self,
        *,
        case: Case,
        adapter: Adapter,
        profile: Profile,
        failures_dir: str | None,
        adapter_spec: str | None,
        declared: Declared,
        worker: Worker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.declared = declared
        self.worker = worker
        self.case = case
        self.adapter = adapter
        self.profile = profile
        self.failures_dir = failures_dir
        self.adapter_spec = adapter_spec
        self.add_marker(MARKER)

    def runtest(self) -> None:
        from transpec.runs import run_case

        verdict = run_case(
            self.adapter,
            self.case,
            self.profile,
            failures_dir=self.failures_dir,
            adapter_spec=self.adapter_spec,
            declared=self.declared,
            worker=self.worker,
            shrink=self.shrink,
        )
        self.verdict = verdict  # read by pytest_runtest_makereport (the HTML report)
        self.user_properties.append(("ratio", _ratio_text(verdict.ratio)))
        self.user_properties.append(("examples", str(verdict.examples)))
        if verdict.status == "failed":
            raise TranspecFailure(verdict)
        if verdict.status == "error":
            raise TranspecInternalError(verdict)
        raise_for_verdict(verdict)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """The failure report itself, not a traceback into transpec."""
        if isinstance(excinfo.value, (TranspecFailure, TranspecInternalError)):
            return excinfo.value.verdict.report or excinfo.value.verdict.message
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return ("transpec", None, self.name)


class TranspecFailure(AssertionError):
    """A failed verdict inside pytest; its message is the verdict's one line."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


class TranspecInternalError(AssertionError):
    """An errored verdict (transpec itself raised) inside pytest: never an expected failure."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def _ratio_text(ratio: float | None) -> str:
    from transpec.reports import format_ratio

    return format_ratio(ratio)


def raise_for_verdict(verdict: Verdict) -> None:
    """pytest's outcome for a verdict: skip with the reason, fail with the failure report."""
    if verdict.status == "skipped":
        pytest.skip(verdict.message)
    if verdict.status in ("failed", "error"):
        pytest.fail(verdict.report or verdict.message, pytrace=False)


def conformance_tests(
    adapter: Adapter,
    *,
    components: Sequence[str] | None = None,
    properties: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    profile: str = "ci",
    seed: int | None = None,
    max_examples: int | None = None,
    failures_dir: str | None = "transpec-failures",
    isolation: str = "none",
    adapter_spec: str | None = None,
    memory_limit: int | None = None,
    gradients: bool = False,
) -> Callable[..., None]:
    """A pytest test function with one parametrized case per verdict of ``adapter``.

    Assign it to a ``test_*`` name in a test module::

        test_my_kernels = conformance_tests(MyAdapter(), components=["attention"])

    Case ids are ``<component>.<property>-<dtype>-<device>`` (stable across runs and xdist
    workers); skipped verdicts skip, failures show the failure report. Unknown names raise
    ``ValueError`` when the module is imported.

    Skips alone are not a pass: when no case would run (every one skipped: a misnamed method,
    an absent device, an undeclared dtype), or a component, dtype or device named here would
    run nothing, one more case, ``nothing-tested``, fails with the one-line reason
    (:func:`transpec.runs.nothing_tested`).

    ``gradients`` adds the backward passes' properties.

    ``isolation``, ``adapter_spec``, ``memory_limit``: as for :func:`transpec.runs.run`
    (``"process"`` runs the implementation in a worker process loaded from ``adapter_spec``,
    inferred for an adapter class or function defined at the top level of a module).
    """
    from transpec.adapters.base import validate_adapter
    from transpec.oracle.engine.isolation import check_isolation
    from transpec.oracle.engine.profiles import resolve
    from transpec.runs import (
        Verdict,
        infer_spec,
        nothing_tested,
        open_worker,
        plan,
        requested_names,
        run_case,
    )

    check_isolation(isolation)
    resolved = resolve(profile, seed=seed, max_examples=max_examples)
    declared = validate_adapter(adapter)
    cases = plan(
        adapter,
        components=components,
        properties=properties,
        dtypes=dtypes,
        devices=devices,
        gradients=gradients,
    )
    spec = adapter_spec if adapter_spec is not None else infer_spec(adapter)
    worker = (
        open_worker(adapter, spec, memory_limit, devices={c.device for c in cases})
        if isolation == "process"
        else None
    )
    # what the plan alone says: a case without a skip reason runs (stands in as "passed")
    planned = [
        Verdict(
            c.prop.component,
            c.prop.name,
            c.dtype,
            c.device,
            "skipped" if c.skip is not None else "passed",
            message=c.skip or "",
        )
        for c in cases
    ]
    empty = nothing_tested(
        planned, requested_names(components=components, dtypes=dtypes, devices=devices)
    )
    from transpec.jobs import preload

    preload()  # at collection, before any case draws (see transpec.jobs.preload)
    params: list[Any] = [pytest.param(c, id=_case_id(c)) for c in cases]
    if empty:
        params.append(pytest.param(None, id="nothing-tested"))

    @pytest.mark.transpec
    @pytest.mark.parametrize("case", params)
    def test_conformance(case: Case | None) -> None:
        if case is None:
            pytest.fail(f"transpec: nothing tested: {empty}", pytrace=False)
        verdict = run_case(
            adapter,
            case,
            resolved,
            failures_dir=failures_dir,
            adapter_spec=spec,
            declared=declared,
            worker=worker,
        )
        raise_for_verdict(verdict)

    return test_conformance


def _case_id(case: Case) -> str:
    return f"{case.prop.component}.{case.prop.name}-{case.dtype}-{case.device}"


def assert_conforms(adapter: Adapter, **options: Any) -> RunResult:
    """Run :func:`transpec.runs.run` and raise ``AssertionError`` on any failure, or when the
    run tested nothing it was asked to (every verdict skipped, or a requested component, dtype or
    device ran nothing: :func:`transpec.runs.nothing_tested`).

    The message is the failure reports of every failed verdict, or the one line saying why
    nothing was tested. Returns the run's result otherwise. ``options`` are those of ``run``.
    """
    from transpec.runs import run

    result = run(adapter, **options)
    if result.interrupted:
        raise KeyboardInterrupt
    if result.failures:
        reports = "\n\n".join(v.report or v.message for v in result.failures)
        raise AssertionError(f"{len(result.failures)} transpec verdict(s) failed:\n\n{reports}")
    if result.xfails is not None and result.xfails.strict and result.xpassed:
        names = ", ".join(v.name for v in result.xpassed)
        raise AssertionError(f"transpec: listed as known failures but passed (strict): {names}")
    if result.nothing_tested:
        raise AssertionError(f"transpec: nothing tested: {result.nothing_tested}")
    return result
