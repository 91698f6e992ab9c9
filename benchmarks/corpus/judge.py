"""Judging corpus entries with transpec: one property at a time, stopping at the first kill.

Two ways, on the same examples:

* :func:`verdict` -- the runner itself (``transpec.runs.run``, the ``ci`` profile),
  one property and one dtype: exactly what a user's CI would conclude;
* :func:`first_kill` -- the runner's examples replayed without shrinking: the same seed per
  (component, property, dtype, device) and the same strategy, so the examples are the runner's
  up to the first failing one. It reports *which* example first kills and how long that took,
  which a verdict (whose example count includes the shrinking) cannot say.

Every entry is built on torch, so an example can fail through a defect of torch's own (its
findings, docs/findings.md) rather than the entry's: :func:`first_kill` counts a failing example
as a kill only when torch's built-in adapter passes the same example.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from transpec.adapters.base import Adapter
from transpec.oracle.engine.outcome import ImplementationFailure, PropertyViolation
from transpec.oracle.engine.profiles import case_seed, resolve
from transpec.runs import Verdict, check_once, plan, run


def properties_of(component: str, *, backward: bool | None = None) -> tuple[str, ...]:
    """The names of the component's properties, in the runner's order (``backward`` True or
    False: only its backward or only its forward ones)."""
    from transpec.oracle.catalogue import select

    return tuple(
        p.name for p in select(components=[component]) if backward is None or p.backward == backward
    )


def verdict(
    adapter: Adapter, component: str, prop: str, dtype: str, *, profile: str = "ci"
) -> Verdict:
    """The runner's verdict for one property of ``component`` in one dtype (nothing saved)."""
    result = run(
        adapter,
        components=[component],
        properties=[prop],
        dtypes=[dtype],
        devices=["cpu"],
        profile=profile,
        failures_dir=None,
    )
    (only,) = result.verdicts
    return only


@dataclass(frozen=True)
class Kill:
    """Outcome of replaying one property's examples until the first failure."""

    component: str
    prop: str
    dtype: str
    status: str  # "killed", "survived", "skipped", "error" (transpec itself raised)
    examples: int  # examples run (the killing one included)
    seconds: float
    message: str = ""


def first_kill(
    adapter: Adapter,
    component: str,
    prop: str,
    dtype: str,
    *,
    profile: str = "ci",
    max_examples: int | None = None,
    baseline: str | Adapter | None = "torch",
) -> Kill:
    """Replay the runner's examples of one property, stop at the first failing one; skipped
    where the runner skips it (by the plan, or every example drawn rejected by ``supports()``).

    ``baseline``: a correct adapter (a built-in name or an instance; None: none) that judges
    each failing example again. Where it fails the same example, the failure is the baseline's
    own (a finding of torch's that the entry inherits by calling torch), not a kill of the
    entry's defect: the replay goes on to the next example, and the survivor's message counts
    these examples."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    from transpec.oracle.engine.harness import Harness

    (case,) = plan(
        adapter, components=[component], properties=[prop], dtypes=[dtype], devices=["cpu"]
    )
    if case.skip is not None:
        return Kill(component, prop, dtype, "skipped", 0, 0.0, case.skip)
    resolved = resolve(profile, max_examples=max_examples)
    harness = Harness(adapter, dtype, "cpu")
    count = 0
    failure: list[str] = []
    killed_at: list[tuple[int, float]] = []  # (example number, seconds) of the first failure
    internal: list[str] = []
    inherited: list[str] = []  # failing examples that the baseline fails too
    baseline_fails = _baseline_judge(baseline, component, prop, dtype)

    def test(args: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        try:
            check_once(case.prop, harness, args)
        except (PropertyViolation, ImplementationFailure) as exc:
            if not failure and baseline_fails(args):
                inherited.append(exc.describe().splitlines()[0])
                return
            _note(exc.describe().splitlines()[0])
            raise
        except Exception as exc:  # not a verdict on the implementation: transpec raised
            if type(exc).__name__ == "UnsatisfiedAssumption":  # hypothesis.reject()
                raise
            internal.append(f"{type(exc).__name__}: {exc}")
            raise

    def _note(message: str) -> None:
        if not failure:  # Hypothesis replays the failing example once more to report it
            failure.append(message)
            killed_at.append((count, time.perf_counter() - start))

    start = time.perf_counter()
    seed = case_seed(resolved, component, prop, dtype, "cpu")
    wrapped = settings(
        max_examples=resolved.max_examples,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )(hypothesis_seed(seed)(given(case.prop.inputs(dtype))(test)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Hypothesis warns about large reprs of arrays
            wrapped()
    except Unsatisfiable:
        if not harness.rejected:
            raise
        # every example drawn was rejected by the adapter's supports(): skipped, as the runner
        # skips it (a method that cannot receive an argument is skipped by the plan, above)
        elapsed = time.perf_counter() - start
        message = f"the adapter rejects every example drawn: {harness.rejection}"
        return Kill(component, prop, dtype, "skipped", count, elapsed, message)
    except Exception:
        if internal and not failure:
            elapsed = time.perf_counter() - start
            return Kill(component, prop, dtype, "error", count, elapsed, internal[0])
        if not failure:
            raise
        n, seconds = killed_at[0]
        return Kill(component, prop, dtype, "killed", n, seconds, failure[0])
    message = ""
    if inherited:
        message = (
            f"({len(inherited)} failing examples fail on the baseline too, not counted: "
            f"{inherited[0]})"
        )
    return Kill(component, prop, dtype, "survived", count, time.perf_counter() - start, message)


def _baseline_judge(
    baseline: str | Adapter | None, component: str, prop: str, dtype: str
) -> Callable[[dict[str, Any]], bool]:
    """Whether ``baseline`` fails an example of the property (False where there is no
    baseline, or it does not provide the property, or it rejects the example)."""
    from hypothesis.errors import UnsatisfiedAssumption

    from transpec.adapters.registry import load_adapter
    from transpec.oracle.engine.harness import Harness

    if baseline is None:
        return lambda args: False
    adapter = load_adapter(baseline) if isinstance(baseline, str) else baseline
    (case,) = plan(
        adapter, components=[component], properties=[prop], dtypes=[dtype], devices=["cpu"]
    )
    if case.skip is not None:
        return lambda args: False
    harness = Harness(adapter, dtype, "cpu")

    def fails(args: dict[str, Any]) -> bool:
        try:
            check_once(case.prop, harness, args)
        except (PropertyViolation, ImplementationFailure):
            return True
        except UnsatisfiedAssumption:  # the baseline cannot receive this example
            return False
        return False

    return fails


def first_kill_among(
    make: Callable[[], Adapter],
    component: str,
    props: Iterable[str],
    dtype: str,
    *,
    max_examples: int | None = None,
) -> tuple[bool, list[str]]:
    """:func:`first_kill` for each property in order, a fresh adapter each, until one kills:
    (killed, a line for each property that did not, saying what it did)."""
    seen = []
    for prop in props:
        kill = first_kill(make(), component, prop, dtype, max_examples=max_examples)
        if kill.status == "killed":
            return True, seen
        seen.append(f"{prop}: {kill.status} after {kill.examples} examples {kill.message}")
    return False, seen
