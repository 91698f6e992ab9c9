"""A run's cases judged in several processes at once (``transpec check --jobs N``).

A case -- one property at one dtype on one device -- is judged from its own seed
(:func:`~transpec.oracle.engine.profiles.case_seed`) and nothing a case before it did, so the
cases of a run can be judged in any order and in any process. Here the runnable ones go to
the processes ("jobs") of a :class:`concurrent.futures.ProcessPoolExecutor`, in plan order,
one at a time to whichever job is free; each job judges its case with
:func:`transpec.runs.run_case` exactly as a serial run does, calling the implementation in its
own worker process (``isolation="process"``, :mod:`transpec.oracle.engine.isolation`): a
segfault or a hang ends one verdict in one job, as it would serially. The run's own process
plans, marks known failures, reports progress and keeps the verdicts in plan order.

Only runs whose implementation is in worker processes take jobs: the jobs then hold nothing of
the implementation but its adapter's declarations, and the verdicts equal those of a serial
run (statuses, ratios, examples, counterexamples), because each case draws the same examples
wherever it runs (:func:`preload`).

A job process that ends abruptly (killed, out of memory) breaks the pool: the cases not yet
judged are then judged serially by the caller (:func:`judge_in_jobs` returns them). Ctrl-C and
SIGTERM end every job and its worker at once; the verdicts already made are kept.

Jobs are started with ``spawn`` (a fresh interpreter: nothing of the caller's threads or
locks is copied) and ignore SIGINT: the run's process decides when they stop.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import multiprocessing
import os
import pkgutil
import signal
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transpec.adapters.base import Adapter, Declared
    from transpec.oracle.engine.isolation import AdapterSource, Worker
    from transpec.oracle.engine.profiles import Profile
    from transpec.runs import Case, Verdict

#: ``jobs="auto"`` starts at most one job per this many runnable cases: starting a job (an
#: interpreter that imports numpy, Hypothesis and the adapter's framework, and its worker)
#: costs about as much as judging two dozen cases of the ``ci`` profile, so a short selection
#: is judged faster in the run's own process
CASES_PER_JOB = 24

#: transpec modules a run never imports: their import would cost a run time and their number
#: literals mean nothing to it (``gradients.exact`` imports SymPy)
_NOT_PRELOADED = ("transpec.oracle.gradients.exact",)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_jobs(jobs: int | str, *, isolation: str, runnable: int) -> int:
    """How many job processes judge ``runnable`` cases: ``jobs`` as asked, ``"auto"`` one per
    usable core but at most one per :data:`CASES_PER_JOB` runnable cases, never more than
    ``runnable``; 1 (judged in the caller's process) with ``isolation="none"``.

    ``ValueError`` (one line) for a count below 1, a word other than ``auto``, or more than one
    job asked for with ``isolation="none"`` (the implementation would have to be loaded into
    every job, unprotected, and judged there: that is ``isolation="process"``)."""
    if isinstance(jobs, str) and jobs != "auto":
        try:
            jobs = int(jobs)
        except ValueError:
            raise ValueError(f"jobs must be a number >= 1 or 'auto', got {jobs!r}") from None
    if isinstance(jobs, str):
        if isolation != "process":
            return 1
        wanted = min(usable_cores(), max(1, runnable // CASES_PER_JOB))
    else:
        if isinstance(jobs, bool) or jobs < 1:
            raise ValueError(f"jobs must be a number >= 1 or 'auto', got {jobs!r}")
        if jobs > 1 and isolation != "process":
            raise ValueError(
                f"{jobs} jobs need isolation 'process' (each job calls the implementation in "
                "its own worker process); with isolation 'none' a run has one job"
            )
        wanted = jobs
    return max(1, min(wanted, runnable))


@functools.cache
def preload() -> None:
    """Import every transpec module a run may import, now (once per process).

    Hypothesis mixes the number literals of the modules loaded from outside ``site-packages``
    (an editable install of transpec, the user's adapter module) into what it draws, read once
    per new set of loaded modules; a module a case imports lazily would change the examples of
    every case drawn after it in that process. With everything loaded before the first draw, a
    case draws the same examples whichever process judges it and whatever it judged before.
    (With the implementation in a worker, the drawing process imports nothing of transpec
    after this and the adapter's load; an adapter whose own methods import local modules
    late would still shift the examples.) Imports neither torch nor SymPy."""
    import transpec.oracle

    for info in pkgutil.walk_packages(transpec.oracle.__path__, "transpec.oracle."):
        if info.name not in _NOT_PRELOADED:
            importlib.import_module(info.name)
    for name in ("transpec.runs", "transpec.progress", "transpec.reports", "transpec.xfails"):
        importlib.import_module(name)


@dataclass(frozen=True)
class JobSetup:
    """What a job needs to judge the run's cases as the run would: how to load the adapter and
    its worker, and the run's one snapshot of declarations, profile and failure directory."""

    source: AdapterSource
    #: ``module:qualname`` of the adapter class under test (the worker checks what it loads)
    expect: str | None
    memory_limit: int | None
    declared: Declared
    profile: Profile
    failures_dir: str | Path | None
    adapter_spec: str | None
    #: threads of the streaming attention reference in this job (the cores shared out)
    stream_threads: int


@dataclass
class _Job:
    """The state of this job process (set by :func:`_start_job`)."""

    setup: JobSetup
    adapter: Adapter
    worker: Worker
    #: BLAS held to one thread for the job's life
    hold: contextlib.ExitStack


_job: _Job | None = None


def _start_job(setup: JobSetup) -> None:
    """Initializer of a job process: its worker is started first (it imports the framework
    while this process loads the rest), BLAS is held to one thread (the worker computes;
    this process draws and judges), and every module a case may use is loaded."""
    global _job
    from multiprocessing import util

    from transpec.oracle.engine import blas
    from transpec.oracle.engine.isolation import Worker, die_with_parent
    from transpec.oracle.kernels import reference

    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent is not None else None)  # a run killed takes its jobs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(setup.source, memory_limit=setup.memory_limit, expect=setup.expect)
    with contextlib.suppress(Exception):  # (reported by the first call that needs it)
        worker.spawn()
    # ended when the job ends normally; a job that is killed takes its worker with it (the
    # worker dies with its parent)
    util.Finalize(worker, worker.close, exitpriority=10)
    hold = contextlib.ExitStack()
    hold.enter_context(blas.one_thread())
    reference.STREAM_THREADS = setup.stream_threads
    preload()
    _job = _Job(setup, setup.source.load(), worker, hold)


def _judge(component: str, property_name: str, dtype: str, device: str, shrink: bool) -> Verdict:
    """Judge one case in this job (the case is named: a property is found again by name)."""
    from transpec.oracle.catalogue import select
    from transpec.runs import Case, run_case

    job = _job
    if job is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("a job judged a case before it was set up")
    (prop,) = select(components=[component], names=[f"{component}.{property_name}"])
    setup = job.setup
    return run_case(
        job.adapter,
        Case(prop, dtype, device, None),
        setup.profile,
        failures_dir=setup.failures_dir,
        adapter_spec=setup.adapter_spec,
        declared=setup.declared,
        worker=job.worker,
        shrink=shrink,
    )


def judge_in_jobs(
    cases: Sequence[tuple[int, Case]],
    jobs: int,
    setup: JobSetup,
    *,
    shrink: Callable[[Case], bool],
    record: Callable[[int, Verdict], None],
) -> list[tuple[int, Case]]:
    """Judge ``cases`` (``(index in the plan, case)``, all runnable) in ``jobs`` processes;
    ``record(index, verdict)`` is called in this process as each verdict arrives. Returns the
    cases left unjudged because a job process ended abruptly (to be judged by the caller).

    ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into one) ends every job at once and
    propagates; the verdicts recorded so far stand."""
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_start_job, initargs=(setup,)
    )
    pending: dict[Future[Verdict], tuple[int, Case]] = {}
    left: list[tuple[int, Case]] = []
    try:
        for index, case in cases:
            future = executor.submit(
                _judge,
                case.prop.component,
                case.prop.name,
                case.dtype,
                case.device,
                shrink(case),
            )
            pending[future] = (index, case)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: pending[f][0]):
                index, case = pending.pop(future)
                try:
                    verdict = future.result()
                except BrokenProcessPool:
                    left.append((index, case))
                    continue
                except Exception as exc:  # transpec failed in the job: this case errs
                    verdict = _job_error(case, exc)
                record(index, verdict)
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown(wait=True)
    if left:
        warnings.warn(
            f"a job process ended abruptly; the {len(left)} cases it left unjudged are judged "
            "in this process",
            RuntimeWarning,
            stacklevel=2,
        )
    return sorted(left, key=lambda item: item[0])


def _job_error(case: Case, exc: BaseException) -> Verdict:
    """The ``error`` verdict of a case whose job raised (transpec failed, not the
    implementation: :func:`transpec.runs.run_case` turns everything else into a verdict)."""
    from transpec.runs import Verdict, classify

    verdict = Verdict(case.prop.component, case.prop.name, case.dtype, case.device, "error")
    classify(verdict, exc)
    verdict.report = f"{verdict.name}: {verdict.message} (in a job process)"
    return verdict


def _stop(executor: ProcessPoolExecutor) -> None:
    """End every job process now (their workers die with them) and the pool's threads."""
    terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
    else:  # the pool forgets its processes on shutdown: they are taken first
        processes = list((getattr(executor, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)
    executor.shutdown(wait=True, cancel_futures=True)
