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
