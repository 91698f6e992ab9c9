"""The pieces of a run judged in job processes (:mod:`transpec.jobs`): how many jobs a run
takes, the modules loaded before the first draw, and the progress of verdicts made elsewhere.
The runs themselves are driven through the command in ``tests/cli/test_cli_jobs.py``."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from transpec import jobs, progress


@pytest.mark.parametrize(
    ("asked", "isolation", "runnable", "cores", "expected"),
    [
        ("auto", "process", 300, 2, 2),
        ("auto", "process", 300, 16, 12),  # one job per CASES_PER_JOB cases
        ("auto", "process", 40, 2, 1),  # too few to pay for a second job's start
        ("auto", "process", 0, 2, 1),
        ("auto", "none", 300, 2, 1),  # the implementation is in this process: one job
        (4, "process", 3, 2, 3),  # never more jobs than cases
        (4, "process", 300, 2, 4),  # a count asked for is taken, even above the cores
        ("3", "process", 300, 2, 3),
        (1, "none", 300, 2, 1),
    ],
)
def test_how_many_jobs_a_run_takes(
    monkeypatch: pytest.MonkeyPatch,
    asked: int | str,
    isolation: str,
    runnable: int,
    cores: int,
    expected: int,
) -> None:
    monkeypatch.setattr(jobs, "usable_cores", lambda: cores)
    assert jobs.resolve_jobs(asked, isolation=isolation, runnable=runnable) == expected


@pytest.mark.parametrize(
    ("asked", "isolation", "words"),
    [
        (0, "process", "jobs must be a number >= 1 or 'auto', got 0"),
        (-1, "process", "jobs must be a number >= 1 or 'auto', got -1"),
        ("some", "process", "jobs must be a number >= 1 or 'auto', got 'some'"),
        (True, "process", "jobs must be a number >= 1 or 'auto', got True"),
        (2, "none", "2 jobs need isolation 'process'"),
    ],
)
def test_a_bad_job_count_is_refused_in_one_line(
    asked: int | str, isolation: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words) as raised:
        jobs.resolve_jobs(asked, isolation=isolation, runnable=10)
    assert "\n" not in str(raised.value)


def test_run_refuses_jobs_without_a_worker() -> None:
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.runs import run

    with pytest.raises(ValueError, match="2 jobs need isolation 'process'"):
        run(NumpyAdapter(), components=["softmax"], jobs=2, failures_dir=None)


_PRELOAD_THEN_RUN = """
import json, sys
from transpec.jobs import preload
preload()
loaded = {name for name in sys.modules if name.startswith("transpec")}
heavy = sorted(name for name in ("torch", "sympy") if name in sys.modules)
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.runs import run
result = run(NumpyAdapter(), max_examples=2, failures_dir=None)
new = sorted(name for name in sys.modules if name.startswith("transpec") and name not in loaded)
print(json.dumps({"heavy": heavy, "new": new, "ran": result.counts()["passed"]}))
"""


def test_after_preload_a_run_imports_no_transpec_module() -> None:
    """A module imported by a case would change what the cases after it draw in that process
    (Hypothesis reads the literals of local modules): after :func:`jobs.preload`, a run over
    every component imports none, and the preload itself imports neither torch nor SymPy."""
    out = subprocess.run(
        [sys.executable, "-c", _PRELOAD_THEN_RUN], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    assert found["ran"] > 50
    # the NumPy adapter's own modules load when its components are first called
    assert [n for n in found["new"] if not n.startswith("transpec.adapters")] == []


def test_progress_counts_the_examples_of_verdicts_made_elsewhere() -> None:
    bar = progress.Progress(3, 10, io.StringIO(), terminal=False)
    bar.example()
    bar.verdict()
    bar.verdict(examples=7)  # judged in a job: its examples arrive with it
    assert (bar.verdicts, bar.examples) == (2, 8)


def test_a_case_whose_job_raised_is_an_error_of_transpec() -> None:
    """Not a failure of the implementation: run_case turns everything the implementation does
    into a verdict, so an exception out of a job is transpec's."""
    from transpec.oracle.catalogue import select
    from transpec.runs import Case

    (prop,) = select(components=["softmax"], names=["softmax.equivalence"])
    verdict = jobs._job_error(Case(prop, "float32", "cpu", None), RuntimeError("boom\nmore"))
    assert (verdict.status, verdict.failure_kind) == ("error", "internal")
    assert verdict.message == "internal error in transpec: RuntimeError: boom"
    assert verdict.report.endswith("(in a job process)")


def test_the_result_holds_each_verdict_in_plan_order_as_it_arrives() -> None:
    """From Python: ``run(jobs=2)``; whatever order the jobs finish in, ``result.verdicts`` is
    in plan order at every ``on_verdict`` and holds the verdict just made."""
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.runs import RunResult, Verdict, plan, run

    adapter = NumpyAdapter()
    selection = {"components": ["softmax", "rms_norm"], "dtypes": ["float32", "float64"]}
    order = [c.name for c in plan(adapter, **selection)]  # type: ignore[arg-type]
    seen: list[RunResult] = []
    checked: list[str] = []

    def on_verdict(verdict: Verdict) -> None:
        names = [v.name for v in seen[0].verdicts]
        assert verdict.name in names
        assert names == [n for n in order if n in names]
        checked.append(verdict.name)

    result = run(
        adapter,
        **selection,  # type: ignore[arg-type]
        max_examples=2,
        isolation="process",
        adapter_spec="numpy",
        jobs=2,
        failures_dir=None,
        on_start=lambda r, _cases: seen.append(r),
        on_verdict=on_verdict,
    )
    assert result.jobs == 2 and not result.interrupted
    assert [v.name for v in result.verdicts] == order and sorted(checked) == sorted(order)
    assert all(v.status == "passed" for v in result.verdicts)
