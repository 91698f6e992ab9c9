"""Process isolation from Python: a run whose implementation runs in a worker process gives the
same verdicts, bit for bit, as one in this process (metamorphic properties, which call the
implementation several times per example, and the layers' slow path included); an adapter the
worker cannot load again by name is refused in one line; the slow-path harness is judged under
the run's declarations snapshot; ``conformance_tests`` cannot pass empty."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec.adapters.base import Declared
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine.harness import Harness
from transpec.oracle.engine.isolation import AdapterSource, Worker, WorkerError
from transpec.oracle.engine.outcome import ImplementationFailure
from transpec.runs import run
from transpec.spec.conventions import Conventions

HERE = Path(__file__).resolve().parent
CLI = HERE.parent / "cli"


def _verdicts(isolation: str, adapter: Any, spec: str, **options: Any) -> list[tuple[Any, ...]]:
    options.setdefault("max_examples", 4)
    result = run(adapter, adapter_spec=spec, isolation=isolation, failures_dir=None, **options)
    return [(v.name, v.status, v.failure_kind, v.message) for v in result.verdicts]


def test_a_worker_gives_the_verdicts_of_the_run_in_process() -> None:
    """The same verdicts on the same examples (the ratios may differ in their last digits:
    NumPy's float32 reductions depend on how the buffers they are handed are aligned)."""
    options = {"components": ["softmax", "attention", "encoder_layer"], "dtypes": ["float32"]}
    alone = _verdicts("none", NumpyAdapter(), "numpy", **options)
    isolated = _verdicts("process", NumpyAdapter(), "numpy", **options)
    assert isolated == alone
    assert {status for _, status, *_ in alone} == {"passed", "skipped"}


def test_a_wrong_implementation_fails_alike_in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker finds the user's module where the run found it (the run's ``sys.path``)."""
    monkeypatch.syspath_prepend(str(CLI))
    from cli_fixtures import WrongScaleAttention

    options = {"components": ["attention"], "dtypes": ["float32"], "seed": 1}
    spec = "cli_fixtures:WrongScaleAttention"
    alone = _verdicts("none", WrongScaleAttention(), spec, **options)
    isolated = _verdicts("process", WrongScaleAttention(), spec, **options)
    assert isolated == alone
    assert any(status == "failed" and kind == "violation" for _, status, kind, _ in alone)


def test_backward_passes_run_in_the_worker_with_the_same_verdicts() -> None:
    options = {
        "components": ["softmax", "layer_norm"],
        "dtypes": ["float32"],
        "gradients": True,
        "properties": ["grad_equivalence_x", "grad_equivalence_weight", "grad_row_sum"],
    }
    alone = _verdicts("none", NumpyAdapter(), "numpy", **options)
    isolated = _verdicts("process", NumpyAdapter(), "numpy", **options)
    assert isolated == alone
    assert [status for _, status, *_ in alone].count("passed") >= 4


def test_a_backward_pass_that_crashes_fails_only_its_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(CLI))
    from cli_isolation_fixtures import SegfaultingBackward

    verdicts = _verdicts(
        "process",
        SegfaultingBackward(),
        "cli_isolation_fixtures:SegfaultingBackward",
        components=["softmax"],
        properties=["grad_equivalence_x", "equivalence"],
        gradients=True,
        max_examples=20,
    )
    by_name = {name: (status, kind, message) for name, status, kind, message in verdicts}
    status, kind, message = by_name["softmax.grad_equivalence_x[float32-cpu]"]
    assert (status, kind) == ("failed", "crashed")
    assert "SIGSEGV" in message
    assert by_name["softmax.equivalence[float32-cpu]"][0] == "passed"


def test_the_slow_path_runs_in_the_worker_under_the_runs_snapshot() -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    options = {
        "components": ["encoder_layer"],
        "properties": ["fast_slow_agreement"],
        "dtypes": ["float32"],
        "seed": 3,
    }
    alone = _verdicts("none", TorchAdapter(), "torch", **options)
    isolated = _verdicts("process", TorchAdapter(), "torch", **options)
    assert isolated == alone and len(alone) == 1


def test_the_slow_path_harness_shares_the_snapshot_and_the_worker() -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch.adapter import TorchAdapter

    adapter = TorchAdapter()
    declared = Declared(Conventions(), 7.0)
    worker = Worker(AdapterSource("torch"))
    harness = Harness(adapter, "float32", declared=declared, worker=worker)
    slow = harness.slow_path()
    assert slow is not None
    assert slow.declared is declared and slow.worker is worker and slow.path == "slow"
    assert slow.adapter.name == "torch-slow"
    assert Harness(NumpyAdapter(), "float32").slow_path() is None


def _local_adapter() -> Any:
    class Local(NumpyAdapter):
        """Defined inside a function: no ``module:attribute`` names it."""

        name = "local"

    return Local()


def test_an_instance_the_worker_cannot_rebuild_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^isolation 'process' needs an adapter that can be"):
        run(_local_adapter(), components=["softmax"], isolation="process", failures_dir=None)
    with pytest.raises(ValueError, match=r"^unknown isolation 'thread'"):
        run(NumpyAdapter(), components=["softmax"], isolation="thread", failures_dir=None)


def test_conventions_set_on_the_instance_reach_the_worker() -> None:
    """``--convention`` (or conventions set in Python) change the instance after it was made:
    the worker's reloaded adapter gets them too, so both sides judge and run alike."""
    from transpec.runs import open_worker

    adapter = NumpyAdapter()
    adapter.conventions = Conventions(bool_mask="ignore")
    result = run(
        adapter,
        adapter_spec="numpy",
        components=["softmax"],
        properties=["equivalence"],
        dtypes=["float32"],
        isolation="process",
        failures_dir=None,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "passed", verdict.message
    worker = open_worker(adapter, "numpy")
    try:
        harness = Harness(adapter, "float32", worker=worker)
        harness.call("softmax", {"x": np.ones((2, 3)), "dim": -1})
        assert worker.loaded_conventions == Conventions(bool_mask="ignore")
    finally:
        worker.close()


def test_a_worker_error_names_what_failed() -> None:
    worker = Worker(AdapterSource("no_such_module_here:Adapter"), start_timeout=60)
    harness = Harness(NumpyAdapter(), "float32", worker=worker)
    with pytest.raises(WorkerError, match=r"cannot load the adapter: .*no_such_module_here"):
        harness.call("softmax", {"x": np.ones((2, 3)), "dim": -1})
    worker.close()


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(CLI), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_conformance_tests_that_test_nothing_fail(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "from transpec.plugin import conformance_tests\n"
        "from cli_hostile_fixtures import Misnamed\n"
        "from cli_fixtures import NumpyWithoutBfloat16\n"
        "test_misnamed = conformance_tests(Misnamed(), components=['softmax'])\n"
        "test_no_dtype = conformance_tests(NumpyWithoutBfloat16(), components=['softmax'],\n"
        "    properties=['equivalence'], dtypes=['float32', 'bfloat16'], max_examples=2)\n"
    )
    proc = _pytest(tmp_path, "-rA")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED test_user.py::test_misnamed[nothing-tested]" in proc.stdout
    assert "FAILED test_user.py::test_no_dtype[nothing-tested]" in proc.stdout
    assert re.search(r"transpec: nothing tested: no verdict ran: all \d+ were skipped", proc.stdout)
    assert "transpec: nothing tested: dtype bfloat16 ran nothing" in proc.stdout
    assert "PASSED test_user.py::test_no_dtype[softmax.equivalence-float32-cpu]" in proc.stdout


def test_the_plugin_runs_the_implementation_in_a_worker(tmp_path: Path) -> None:
    proc = _pytest(
        tmp_path,
        "--transpec",
        "cli_isolation_fixtures:Segfault",
        "--transpec-component",
        "softmax,layer_norm,rms_norm",
        "--transpec-property",
        "equivalence",
        "--transpec-max-examples",
        "4",
        "--transpec-isolation",
        "process",
        "-rA",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED transpec::layer_norm.equivalence[float32-cpu]" in proc.stdout
    assert "implementation failure (crashed)" in proc.stdout
    assert "killed by signal SIGSEGV" in " ".join(proc.stdout.split())
    assert "PASSED transpec::rms_norm.equivalence[float32-cpu]" in proc.stdout
    assert "1 failed, 2 passed" in proc.stdout


def _harness_in_worker(
    spec: str, adapter: Any, timeout: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[Harness, Worker]:
    monkeypatch.syspath_prepend(str(CLI))
    worker = Worker(AdapterSource(spec))
    harness = Harness(adapter, "float32", declared=Declared(Conventions(), timeout), worker=worker)
    return harness, worker


def test_the_worker_reports_what_it_sent_before_it_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forward call's worker reports the rounded inputs first: the run computes the reference
    while the implementation (here sleeping 0.3 s) still runs."""
    monkeypatch.syspath_prepend(str(CLI))
    from cli_isolation_fixtures import SlowSoftmax

    harness, worker = _harness_in_worker(
        "cli_isolation_fixtures:SlowSoftmax", SlowSoftmax(), 30.0, monkeypatch
    )
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    try:
        worker.call(  # started and warm
            path="default",
            component="softmax",
            dtype="float32",
            device="cpu",
            declared=harness.declared,
            encoded={"x": x, "dim": -1},
            drop_enable_gqa=False,
        )
        pending = worker.submit(
            path="default",
            component="softmax",
            dtype="float32",
            device="cpu",
            declared=harness.declared,
            encoded={"x": x, "dim": -1},
            drop_enable_gqa=False,
        )
        sent = pending.sent()
        assert not pending.conn.poll(0), "the answer came with the inputs"
        assert np.array_equal(sent["x"], x.astype(np.float32).astype(np.float64))
        again, output = pending.result()
        assert again is sent and output.shape == (2, 3)
    finally:
        worker.close()


def test_an_answer_read_late_is_judged_by_when_it_was_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference takes 0.5 s here, longer than the 0.2 s time limit: an answer made at once
    passes, one made after 0.3 s is ``hung`` although it waited in the pipe."""
    monkeypatch.syspath_prepend(str(CLI))
    from cli_isolation_fixtures import SlowSoftmax

    judging = Harness.judging

    def slow_reference(self: Harness, *args: Any, **kwargs: Any) -> Any:
        import time

        time.sleep(0.5)
        return judging(self, *args, **kwargs)

    monkeypatch.setattr(Harness, "judging", slow_reference)
    args = {"x": np.ones((2, 3)), "dim": -1}
    fast, worker = _harness_in_worker("numpy", NumpyAdapter(), 0.2, monkeypatch)
    try:
        worker.spawn()
        worker._await_ready()
        fast.assert_equivalent(fast.call("softmax", args))
    finally:
        worker.close()
    slow, worker = _harness_in_worker(
        "cli_isolation_fixtures:SlowSoftmax", SlowSoftmax(), 0.2, monkeypatch
    )
    try:
        worker.spawn()
        worker._await_ready()
        # (0.3 s of sleep, more on a loaded machine)
        with pytest.raises(
            ImplementationFailure, match=r"within 0.2 s .*answered after (0\.[3-9]|[1-9])"
        ):
            slow.call("softmax", args)
    finally:
        worker.close()


def test_a_failed_call_comes_before_an_error_of_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference runs while the implementation does; when it raises, the worker's answer is
    still read (the next call gets its own), and a failure of the call is what is reported."""
    monkeypatch.syspath_prepend(str(CLI))
    from cli_isolation_fixtures import Segfault

    def broken(self: Harness, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("reference broke")

    harness, worker = _harness_in_worker("numpy", NumpyAdapter(), 30.0, monkeypatch)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(Harness, "judging", broken)
            with pytest.raises(RuntimeError, match="reference broke"):
                harness.call("softmax", {"x": np.ones((2, 3)), "dim": -1})
        call = harness.call("softmax", {"x": np.full((2, 4), 2.0), "dim": -1})
        assert call.output.shape == (2, 4)
    finally:
        worker.close()
    harness, worker = _harness_in_worker(
        "cli_isolation_fixtures:Segfault", Segfault(), 30.0, monkeypatch
    )
    try:
        monkeypatch.setattr(Harness, "judging", broken)
        args = {"x": np.ones((2, 3)), "normalized_shape": (3,), "weight": None, "bias": None}
        with pytest.raises(ImplementationFailure) as failure:
            harness.call("layer_norm", {**args, "eps": 1e-5})
        assert failure.value.kind == "crashed"
    finally:
        worker.close()


def test_a_spare_worker_started_ahead_is_taken_over() -> None:
    """``prestart`` loads the adapter in a process before the run has its own copy; the run's
    worker takes that process over (with the run's conventions); another spec does not."""
    from transpec.oracle.engine import isolation

    isolation.prestart(AdapterSource("numpy"))
    spare_pid = isolation._SPARES["numpy"][0].pid
    adapter = NumpyAdapter()
    adapter.conventions = Conventions(bool_mask="ignore")
    worker = Worker(AdapterSource("numpy", conventions=adapter.conventions))
    try:
        worker.spawn()
        assert worker.pid == spare_pid and "numpy" not in isolation._SPARES
        harness = Harness(adapter, "float32", worker=worker)
        harness.assert_equivalent(harness.call("softmax", {"x": np.ones((2, 3)), "dim": -1}))
        assert worker.loaded_conventions == Conventions(bool_mask="ignore")
    finally:
        worker.close()
    isolation.prestart(AdapterSource("numpy"))
    other = Worker(AdapterSource("torch-slow"))
    try:
        other.spawn()
        assert other.pid != isolation._SPARES["numpy"][0].pid
    finally:
        other.close()
        isolation._end_spares()
    assert not isolation._SPARES
