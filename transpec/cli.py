"""The ``transpec`` command.

::

    transpec check [ADAPTER] [--component C ...] [--property P ...] [--dtype D ...]
                   [--device DEV ...] [--profile ci|thorough] [--seed N] [--max-examples N]
                   [--json FILE] [--junit FILE] [--html FILE] [--failures-dir DIR] [--quiet]
                   [--isolation process|none] [--memory-limit MIB] [--jobs N|auto]
                   [--gradients]
                   [--xfails FILE [--strict-xfails]] [--convention KEY=VALUE ...]
    transpec list [components|properties|conventions|adapters]
    transpec reproduce FILE [--adapter SPEC] [--trust] [--isolation process|none] [--html FILE]
    transpec derive BLOCK [--format markdown|latex]
    transpec --version

``ADAPTER`` is a built-in name (``transpec list adapters``; default ``torch`` when torch is
installed, else ``numpy``) or ``module:attr`` naming an Adapter subclass or instance, or a
function together with ``--component``. Options that take names may be repeated or given as a
comma-separated list.

Exit status: 0 every verdict passed (skips allowed, and failures listed in the ``--xfails``
file), 1 a property failed (or transpec raised on a case, or, with ``--strict-xfails``, a listed
verdict passed), 2 usage or load error (one line on stderr), 5 nothing tested (no verdict ran, or a
component, dtype or device asked for by name ran nothing; one line on stderr says why), 130
interrupted by Ctrl-C, 143 terminated (SIGTERM), 129 hung up (SIGHUP): when a run is stopped,
the report of the verdicts so far is still printed and written.

``check`` and ``reproduce`` run the implementation in a worker process by default
(``--isolation process``, :mod:`transpec.oracle.engine.isolation`): a segfault, ``os._exit``, a
hang in C or an allocation without end fails that property (kinds ``crashed``, ``hung``) and the
run goes on. A stop before the run begins (while the adapter imports) still writes the reports.
With workers, ``check`` judges its cases in several processes at once (``--jobs N``, default
``auto``: one per core for a selection long enough; :mod:`transpec.jobs`), each with its own
worker; the verdicts are those of one process, in the same order.

``check`` keeps its standard output for itself: what the implementation prints there goes to
standard error, so the header, the table and the failure reports stay clean. A reader that goes
away (``| head``) ends the printing, never the run or its ``--json``/``--junit``/``--html``
reports.

Importing this module imports neither torch nor SymPy.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import transpec
from transpec import progress
from transpec.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: no verdict ran, or a requested component, dtype or device ran nothing (pytest's "no tests")
EXIT_NOTHING_TESTED = 5
#: signals that stop a run as Ctrl-C does; the exit status is 128 + the signal's number
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``transpec: error: ... (see transpec check --help)``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"transpec: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def default_adapter() -> str:
    """``torch`` when torch is importable, else ``numpy`` (found without importing torch)."""
    return "torch" if importlib.util.find_spec("torch") is not None else "numpy"


def _names(values: Sequence[str] | None, option: str = "") -> list[str] | None:
    """Repeated and comma-separated option values as one list (``None`` when not given). An
    option given with no name at all (``--dtype ''``) is a usage error, not "all of them"."""
    if values is None:
        return None
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    if not out:
        raise UsageError(f"{option or 'an option'} needs at least one name; got {values[-1]!r}")
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    first = text.splitlines()[0] if text else type(exc).__name__
    return first


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="transpec",
        description="Conformance tests, derivations and references for transformer building "
        "blocks.",
    )
    parser.add_argument("--version", action="version", version=f"transpec {transpec.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser("check", help="run the conformance properties against an adapter")
    check.add_argument(
        "adapter",
        nargs="?",
        metavar="ADAPTER",
        help="built-in adapter name or module:attr (default: torch if installed, else numpy)",
    )
    check.add_argument("--component", action="append", metavar="C", help="component(s) to test")
    check.add_argument(
        "--base",
        metavar="ADAPTER",
        help="for a function: the array base whose arrays it takes (numpy, torch, jax; default: "
        "numpy); it brings conversion only, never the framework's conventions",
    )
    check.add_argument(
        "--convention",
        action="append",
        metavar="KEY=VALUE",
        help="declare a convention of the implementation (repeatable; transpec list "
        "conventions); a function's conventions are otherwise the canonical ones",
    )
    check.add_argument("--property", action="append", metavar="P", help="property name(s)")
    check.add_argument("--dtype", action="append", metavar="D", help="dtype(s) to test")
    check.add_argument("--device", action="append", metavar="DEV", help="device(s) to test")
    check.add_argument("--profile", choices=("ci", "thorough"), default="ci")
    check.add_argument("--seed", type=int, metavar="N", help="base seed of the examples")
    check.add_argument(
        "--max-examples", type=int, metavar="N", help="examples per property (overrides profile)"
    )
    check.add_argument("--json", metavar="FILE", help="write the JSON report here")
    check.add_argument("--junit", metavar="FILE", help="write a JUnit XML report here")
    check.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained HTML report here: the verdict table and, per failure, "
        "the error/tolerance heat map, the mask applied and the worst element's derivation",
    )
    check.add_argument(
        "--failures-dir",
        default="transpec-failures",
        metavar="DIR",
        help="where failing cases are saved (default: transpec-failures)",
    )
    check.add_argument("--quiet", "-q", action="store_true", help="no per-verdict progress")
    _isolation_options(check)
    check.add_argument(
        "--jobs",
        "-j",
        default="auto",
        metavar="N|auto",
        help="processes that judge the cases at once, each with its own worker (needs "
        "--isolation process); the verdicts are those of one. Default: auto, one per usable "
        "core for a selection long enough to pay for their start",
    )
    check.add_argument(
        "--gradients",
        action="store_true",
        help="also judge the backward passes (the grad_* properties)",
    )
    check.add_argument(
        "--xfails",
        metavar="FILE",
        help="known failures: verdict ids (component.property[dtype-device], '*' globs) with a "
        "'# reason' each; their failures are expected and do not fail the run",
    )
    check.add_argument(
        "--strict-xfails",
        action="store_true",
        help="a verdict listed in --xfails that passes fails the run",
    )

    lst = sub.add_parser("list", help="list components, properties, conventions or adapters")
    lst.add_argument(
        "what",
        nargs="?",
        choices=("components", "properties", "conventions", "adapters"),
        help="what to list (default: everything)",
    )

    rep = sub.add_parser("reproduce", help="replay a saved failing case")
    rep.add_argument("file", metavar="FILE", help="a .npz case file written by transpec check")
    rep.add_argument("--adapter", metavar="SPEC", help="load this adapter instead of the saved one")
    _isolation_options(rep)
    rep.add_argument(
        "--trust",
        action="store_true",
        help="load the adapter the file names even when that imports a module named in the file "
        "(without it: only built-in adapters)",
    )
    rep.add_argument(
        "--html",
        metavar="FILE",
        help="write the replayed verdict as an HTML page here (the page of transpec check --html)",
    )

    der = sub.add_parser("derive", help="print the derivation of a building block")
    der.add_argument(
        "block", metavar="BLOCK", help="block name (an unknown name lists the known ones)"
    )
    der.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    return parser


#: the isolation ``check`` and ``reproduce`` use unless told otherwise
DEFAULT_ISOLATION = "process"


def _isolation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--isolation",
        choices=("none", "process"),
        default=DEFAULT_ISOLATION,
        help="where the implementation runs: 'process', a worker process that a segfault, "
        "os._exit, a hang or an unbounded allocation ends (failure kinds crashed, hung) while "
        "the run goes on; 'none', this process (faster, unprotected). Default: "
        f"{DEFAULT_ISOLATION}",
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        metavar="MIB",
        help="address-space limit of the worker process in MiB (default: half the physical "
        "memory when every device is cpu, else none; 0: none)",
    )


def _memory_limit(args: argparse.Namespace) -> int | None:
    """``--memory-limit`` in bytes (None: the default; 0: none); a usage error below 0."""
    if args.memory_limit is None:
        return None
    if args.memory_limit < 0:
        raise UsageError(f"--memory-limit must be a number of MiB >= 0, got {args.memory_limit}")
    return int(args.memory_limit) * 2**20


def _jobs(args: argparse.Namespace) -> int | str:
    """``--jobs``: a number >= 1 or ``auto``; a usage error otherwise, or for more than one job
    with ``--isolation none``."""
    if args.jobs == "auto":
        return "auto"
    try:
        jobs = int(args.jobs)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise UsageError(f"--jobs must be a number >= 1 or auto, got {args.jobs!r}")
    if jobs > 1 and args.isolation != "process":
        raise UsageError(
            f"--jobs {jobs} needs --isolation process (each job calls the implementation in its "
            "own worker process)"
        )
    return jobs


def _one_job(
    jobs: int | str,
    args: argparse.Namespace,
    components: Sequence[str] | None,
    properties: Sequence[str] | None,
    dtypes: Sequence[str] | None,
    devices: Sequence[str] | None,
) -> bool:
    """Whether the run will judge its cases in this process (one job), told before the adapter
    is loaded: ``auto`` is one job for a selection whose cases, counted on one device and every
    dtype unless chosen, are too few to share out (:func:`transpec.jobs.resolve_jobs`)."""
    if jobs != "auto":
        return jobs == 1
    from transpec.jobs import resolve_jobs
    from transpec.oracle.engine.dtypes import DTYPES
    from transpec.runs import planned_properties

    try:
        props = planned_properties(components, properties, gradients=args.gradients)
    except ValueError:  # the run reports it
        return True
    cases = len(props) * len(dtypes or DTYPES) * len(devices or ("cpu",))
    return resolve_jobs("auto", isolation=args.isolation, runnable=cases) == 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``transpec`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "list":
            return cmd_list(args.what, sys.stdout)
        if args.command == "reproduce":
            return cmd_reproduce(args)
        if args.command == "derive":
            return cmd_derive(args)
        parser.print_help()
        return EXIT_USAGE
    except UsageError as exc:
        sys.stderr.write(f"transpec: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("transpec: interrupted\n")
        return EXIT_INTERRUPTED


# -- check --------------------------------------------------------------------------------------


def _load_adapter(spec: str, component: str | None, base: str | None = None) -> Any:
    """Load ``spec``; ``component`` is used only when ``spec`` names a bare function."""
    try:
        return load_adapter_spec(spec, component, base)
    except KeyboardInterrupt:
        raise
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        message = _one_line(exc)
        if component is None and "is a function" in message:
            message += "; name it with --component"
        raise UsageError(message) from None
    except Exception as exc:  # importing user code may raise anything
        raise UsageError(f"loading adapter {spec!r} failed: {type(exc).__name__}: {exc}") from None


def load_adapter_spec(spec: str, component: str | None, base: str | None = None) -> Any:
    """An adapter from a spec string; a function spec takes ``component`` (when given) and
    ``base``, the built-in adapter whose arrays, dtypes and devices it works with."""
    from transpec.adapters.registry import load_adapter

    try:
        return load_adapter(spec)
    except ValueError:
        if component is None:
            raise
        # a bare function needs its component; anything else fails again with the first error
        return load_adapter(spec, component=component, base=base)


class _SafeStream:
    """A text stream whose writes never raise: a reader that went away (``| head``) ends what is
    printed, not the run. After the first broken pipe the stream's descriptor points at
    ``/dev/null``, so that nothing (the interpreter's last flush included) writes to the pipe
    again."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def _lost(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.EINVAL, None):
                raise
            self._lost()

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self.stream.flush()
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.EINVAL, None):
                raise
            self._lost()


@contextlib.contextmanager
def _own_stdout() -> Iterator[_SafeStream]:
    """Standard output for transpec alone while the block runs: the stream it yields writes to
    the real standard output, and everything else written there -- an implementation's
    ``print``, a C kernel's ``printf`` -- goes to standard error instead.

    With a real descriptor the redirection is at the descriptor level (``dup2``), so it covers
    code outside Python too; where ``sys.stdout`` has none (captured in tests) it is
    ``contextlib.redirect_stdout``."""
    original = sys.stdout
    try:
        fd, err_fd = original.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        safe = _SafeStream(original)
        with contextlib.redirect_stdout(sys.stderr):
            yield safe
        safe.flush()
        return
    with contextlib.suppress(OSError, ValueError):
        original.flush()
    saved = os.dup(fd)
    os.dup2(err_fd, fd)
    own = os.fdopen(saved, "w", encoding=getattr(original, "encoding", None), closefd=False)
    stream = _SafeStream(own)
    try:
        yield stream
    finally:
        stream.flush()
        with contextlib.suppress(OSError, ValueError):
            own.close()  # flushes (to /dev/null once broken); the descriptor stays open
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()  # what the implementation printed goes to stderr, not stdout
        os.dup2(saved, fd)
        os.close(saved)
        if stream.broken:  # the reader is gone: the interpreter's last flush must not find it
            _SafeStream(original)._lost()


def _report_path(path: str, option: str) -> str:
    """``path`` as an absolute path, once it is known to be writable (the file, and its
    directory, where the report is first written to a temporary file): checked before anything
    runs (a report that cannot be written is a usage error, not a lost run), and absolute so
    that an implementation's ``os.chdir`` cannot move it."""
    absolute = Path(os.path.abspath(os.path.expanduser(path)))
    if absolute.is_dir():
        raise UsageError(f"cannot write the {option} report {path!r}: it is a directory")
    if not absolute.parent.is_dir():
        raise UsageError(
            f"cannot write the {option} report {path!r}: directory {str(absolute.parent)!r} "
            "does not exist"
        )
    if not os.access(absolute.parent, os.W_OK | os.X_OK):
        # a report is written beside its path and renamed over it (atomically): the
        # directory must take a new file, even when the report's file itself is writable
        raise UsageError(
            f"cannot write the {option} report {path!r}: directory "
            f"{str(absolute.parent)!r} is not writable"
        )
    existed = absolute.exists()
    try:
        with absolute.open("a"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot write the {option} report {path!r}: {reason}") from None
    if not existed:
        with contextlib.suppress(OSError):
            absolute.unlink()
    return str(absolute)


@contextlib.contextmanager
def _stop_signals(received: list[int]) -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (the verdicts so far are kept); the
    signal is recorded in ``received``. Outside the main thread nothing is installed."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    try:
        for sig in _STOP_SIGNALS:
            previous[sig] = signal.signal(sig, stop)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_check(args: argparse.Namespace) -> int:
    # report paths first: before any code of the implementation runs (imports included)
    if args.json:
        args.json = _report_path(args.json, "--json")
    if args.junit:
        args.junit = _report_path(args.junit, "--junit")
    if args.html:
        args.html = _report_path(args.html, "--html")
    received: list[int] = []
    with _own_stdout() as out, _stop_signals(received):
        code = _check(args, out, received)
    return code


def _check(args: argparse.Namespace, out: Any, received: list[int]) -> int:
    """Run the check; a stop (Ctrl-C, SIGTERM, SIGHUP) that comes before the run's own loop
    -- while the adapter's module imports, say -- still writes the reports, of no verdicts."""
    err = _SafeStream(sys.stderr)
    try:
        result = _run_check(args, out, err)
    except KeyboardInterrupt:
        result = _stopped_before_the_run(args)
    # a second signal while the reports are written must not lose them
    for sig in _STOP_SIGNALS:
        with contextlib.suppress(ValueError):
            signal.signal(sig, signal.SIG_IGN)
    _finish(result, args, out, err, received)
    if result.interrupted and received:
        return 128 + received[0]
    return int(result.exit_code)


def _stopped_before_the_run(args: argparse.Namespace) -> Any:
    """The result of a run stopped before it began: no verdicts, ``interrupted``."""
    from transpec.oracle.engine.profiles import resolve
    from transpec.runs import RunResult

    try:
        profile = resolve(args.profile, seed=args.seed, max_examples=args.max_examples)
    except ValueError:
        profile = resolve("ci")
    spec = args.adapter or default_adapter()
    result = RunResult(
        adapter=spec,
        adapter_spec=spec,
        conventions={},
        profile=profile,
        components=(),
        dtypes=(),
        devices=(),
    )
    result.interrupted = True
    return result


def _run_check(args: argparse.Namespace, out: Any, err: _SafeStream) -> Any:
    from transpec.oracle import components as registry
    from transpec.oracle.engine.dtypes import canonical_dtype
    from transpec.oracle.engine.profiles import resolve

    components = _names(args.component, "--component")
    for c in components or ():
        try:
            registry.get(c)
        except registry.UnknownComponentError as unknown:
            raise UsageError(str(unknown)) from None
    dtypes = _names(args.dtype, "--dtype")
    try:
        dtypes = [canonical_dtype(d) for d in dtypes] if dtypes else None
        resolve(args.profile, seed=args.seed, max_examples=args.max_examples)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    properties = _names(args.property, "--property")
    devices = _names(args.device, "--device")
    xfails = None
    if args.strict_xfails and not args.xfails:
        raise UsageError("--strict-xfails needs --xfails FILE")
    if args.xfails:
        from transpec.xfails import KnownFailures

        try:
            xfails = KnownFailures.load(args.xfails, strict=args.strict_xfails)
        except ValueError as exc:
            raise UsageError(_one_line(exc)) from None
    spec = args.adapter or default_adapter()
    component = components[0] if components and len(components) == 1 else None
    jobs = _jobs(args)
    one_job = _one_job(jobs, args, components, properties, dtypes, devices)
    if args.isolation == "process" and one_job:
        from transpec.oracle.engine.isolation import AdapterSource, prestart

        # its import overlaps ours (with several jobs, each starts its own worker)
        prestart(AdapterSource(spec, component, args.base))
    adapter = _load_adapter(spec, component, args.base)
    from transpec.adapters.base import FunctionAdapter

    if args.base and not isinstance(adapter, FunctionAdapter):
        raise UsageError(f"--base applies to functions only; {spec!r} is an adapter")
    if args.convention:
        from transpec.spec.conventions import with_assignments

        try:
            adapter.conventions = with_assignments(adapter.conventions, args.convention)
        except (TypeError, ValueError, AttributeError) as exc:
            raise UsageError(_one_line(exc)) from None

    from transpec import reports as report
    from transpec.runs import RunResult, Verdict, misnamed_methods, run

    try:
        misnamed = misnamed_methods(adapter)
    except Exception:  # a hostile adapter's provides() may raise: then the plan shows it
        misnamed = []
    by_method = {r.method: r.name for r in registry.REGISTRY.values()}
    for method, expected in misnamed:
        err.write(
            f"transpec: warning: method {method!r} of the adapter matches no component; "
            f"did you mean {expected!r} ({by_method[expected]})?\n"
        )

    def on_start(result: RunResult, cases: list[Any]) -> None:
        out.write(report.header(result) + "\n")
        out.write(f"{len(cases)} verdicts to make\n\n")
        out.flush()

    def on_verdict(verdict: Verdict) -> None:
        if not args.quiet:
            err.write(report.progress_line(verdict) + "\n")
            err.flush()

    progress.enable(err)  # a bar on a terminal, a line a minute otherwise, even with --quiet
    try:
        with _own_warnings(err):
            result = run(
                adapter,
                components=components,
                properties=properties,
                dtypes=dtypes,
                devices=devices,
                profile=args.profile,
                seed=args.seed,
                max_examples=args.max_examples,
                failures_dir=args.failures_dir,
                on_verdict=on_verdict,
                on_start=on_start,
                adapter_spec=spec,
                isolation=args.isolation,
                memory_limit=_memory_limit(args),
                gradients=args.gradients,
                xfails=xfails,
                jobs=jobs,
            )
    except (ValueError, TypeError) as exc:
        raise UsageError(_one_line(exc)) from None
    return result


@contextlib.contextmanager
def _own_warnings(err: _SafeStream) -> Iterator[None]:
    """transpec's own warnings during the run as one line each on ``err``
    (``transpec: warning: ...``); any other code's are shown as Python shows them."""
    import warnings

    package = str(Path(transpec.__file__).resolve().parent)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if str(Path(filename).resolve()).startswith(package):
                err.write(f"transpec: warning: {message}\n")
                err.flush()
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _write_html(result: Any, path: str) -> None:
    from transpec.htmlreport import write_html

    write_html(result, path)


def _finish(
    result: Any, args: argparse.Namespace, out: Any, err: Any, received: Sequence[int]
) -> None:
    """Write the reports (first: nothing printed can lose them), then print the table, the
    failure reports and, on stderr, why the run stopped or tested nothing."""
    from transpec import reports as report

    written: list[str] = []
    for path, write, label in (
        (args.json, report.write_json, "JSON"),
        (args.junit, report.write_junit, "JUnit"),
        (args.html, _write_html, "HTML"),
    ):
        if not path:
            continue
        try:
            write(result, path)
            written.append(f"{label} report: {path}")
        except OSError as exc:
            err.write(f"transpec: error: cannot write the report: {_one_line(exc)}\n")
    out.write("\n" + report.table(result) + "\n")
    failures = report.failures_section(result)
    if failures:
        out.write("\n" + failures + "\n")
    known = report.known_failures_section(result)
    if known:
        out.write("\n" + known + "\n")
    sampled = report.sampled_rows_section(result)
    if sampled:
        out.write("\n" + sampled + "\n")
    for line in written:
        out.write(line + "\n")
    out.flush()
    if result.interrupted:
        how = signal.Signals(received[0]).name if received else "interrupted"
        stopped = f"stopped by {how}" if received else how
        err.write(f"transpec: {stopped}; the verdicts above are those made so far\n")
    elif result.exit_code == EXIT_NOTHING_TESTED:
        err.write(f"transpec: nothing tested: {result.nothing_tested}\n")
    err.flush()


# -- list ---------------------------------------------------------------------------------------


def component_signature(component: str) -> str:
    """The adapter method of ``component`` with its parameters and defaults, e.g.
    ``softmax(x, dim=-1)``: read from :class:`~transpec.adapters.numpy.adapter.NumpyAdapter`,
    whose methods have the signatures every adapter's methods take (annotations dropped)."""
    import inspect

    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.oracle import components

    method = components.get(component).method
    function = getattr(NumpyAdapter, method, None)
    if function is None:
        return f"{method}(...)"
    parameters = [
        p.replace(annotation=inspect.Parameter.empty)
        for p in inspect.signature(function).parameters.values()
        if p.name != "self"
    ]
    return f"{method}({', '.join(map(str, parameters))})"


def cmd_list(what: str | None, out: TextIO) -> int:
    sections = [what] if what else ["components", "properties", "conventions", "adapters"]
    for i, section in enumerate(sections):
        if len(sections) > 1:
            out.write(("\n" if i else "") + f"{section}:\n")
        indent = "  " if len(sections) > 1 else ""
        for line in _list_lines(section):
            out.write(f"{indent}{line}\n")
    return EXIT_OK


def _list_lines(section: str) -> list[str]:
    if section == "components":
        from transpec.oracle import components

        width = max(map(len, components.REGISTRY))
        return [f"{c:<{width}}  {component_signature(c)}" for c in components.REGISTRY]
    if section == "properties":
        from transpec.oracle.catalogue import PROPERTIES

        names = [f"{p.component}.{p.name}" for p in PROPERTIES]
        width = max(map(len, names), default=0)
        return [f"{n:<{width}}  {p.summary}" for n, p in zip(names, PROPERTIES, strict=True)]
    if section == "conventions":
        from transpec.spec.conventions import describe

        rows = describe()
        width = max(len(r[0]) for r in rows)
        from transpec.spec.conventions import PER_DTYPE_NOTE

        return [
            f"{name:<{width}}  {' | '.join(map(str, allowed))}  -- {text} (canonical: {allowed[0]})"
            for name, text, allowed in rows
        ] + [f"({PER_DTYPE_NOTE})"]
    from transpec.adapters.registry import BUILTIN_ADAPTERS

    lines = []
    width = max(map(len, BUILTIN_ADAPTERS), default=0)
    for name, entry in dict(BUILTIN_ADAPTERS).items():
        lines.append(f"{name:<{width}}  {_adapter_summary(entry)}".rstrip())
    return lines


def _adapter_summary(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(getattr(entry, "description", None), str):
        return str(entry.description)
    doc = getattr(entry, "__doc__", None) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first


# -- reproduce ----------------------------------------------------------------------------------


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Exit 0 when the case passes now, 1 while it still fails, 2 when the file cannot be read
    (``cannot read case file: ...``) or replayed here (an adapter it names that is not trusted,
    a property this version lacks)."""
    from transpec.cases import replay
    from transpec.errors import CaseFileReadError

    if args.html:  # checked before the case's adapter is loaded, as check does
        args.html = _report_path(args.html, "--html")
    with _own_stdout() as out:
        try:
            result = replay(
                args.file,
                adapter=args.adapter,
                trust=args.trust,
                isolation=args.isolation,
                memory_limit=_memory_limit(args),
            )
        except CaseFileReadError as exc:
            raise UsageError(f"cannot read case file: {_one_line(exc)}") from None
        except (ValueError, TypeError, ImportError) as exc:
            raise UsageError(_one_line(exc)) from None
        (verdict,) = result.verdicts
        written = ""
        if args.html:
            try:
                _write_html(result, args.html)
                written = f"HTML report: {args.html}\n"
            except OSError as exc:
                sys.stderr.write(f"transpec: error: cannot write the report: {_one_line(exc)}\n")
        if verdict.status == "passed":
            from transpec.reports import format_ratio

            first, *notes = verdict.message.splitlines()
            ratio = format_ratio(verdict.ratio)
            out.write(f"passed {verdict.name}: {first} (error/tolerance {ratio})\n")
            for note in notes:
                out.write(note + "\n")
            out.write(written)
            return EXIT_OK
        out.write(verdict.report + "\n" + written)
        return EXIT_FAILED


# -- derive -------------------------------------------------------------------------------------


def cmd_derive(args: argparse.Namespace) -> int:
    try:
        from transpec.spec.derive import render
    except ImportError as exc:
        raise UsageError(f"derivations are not available: {_one_line(exc)}") from None
    try:
        text = render(args.block, args.format)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
