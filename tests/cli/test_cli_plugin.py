"""The pytest plugin: ``--transpec`` items under ``-n 2``, ``-k`` and ``--junitxml``; nothing
without ``--transpec``; ``conformance_tests`` in a user's module; ``assert_conforms``."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_plugin_items_and_conformance_tests_under_xdist_with_k_and_junitxml(
    tmp_path: Path,
) -> None:
    """One run: ``--transpec`` items and a user module's ``conformance_tests`` side by side."""
    (tmp_path / "test_user.py").write_text(
        "from transpec.plugin import conformance_tests\n"
        "from cli_fixtures import WrongScaleAttention\n"
        "test_mine = conformance_tests(WrongScaleAttention(), components=['attention'],\n"
        "    properties=['equivalence', 'causality'], dtypes=['float32'], max_examples=4)\n"
    )
    (tmp_path / "test_gpu_per_worker.py").write_text(
        "import os\n"
        "def test_worker_sees_its_gpu():\n"
        "    n = int(os.environ['PYTEST_XDIST_WORKER'][2:])\n"
        "    assert os.environ['CUDA_VISIBLE_DEVICES'] == ['3', '5'][n % 2]\n"
    )
    junit = tmp_path / "junit.xml"
    proc = _pytest(
        tmp_path,
        "-n",
        "2",
        "--transpec-gpus",
        "3,5",
        "--transpec",
        "cli_fixtures:WrongScaleAttention",
        "--transpec-component",
        "attention",
        "--transpec-dtype",
        "float32",
        "--transpec-max-examples",
        "4",
        "-k",
        "equivalence or causality or gpu",
        f"--junitxml={junit}",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 failed, 3 passed" in proc.stdout
    # failures show transpec's report, not a traceback into transpec
    assert "FAILED attention.equivalence[float32-cpu]" in proc.stdout
    assert "reproduce: transpec reproduce" in proc.stdout
    assert "tolerance derivation:" in proc.stdout
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {
        c.get("name"): ("failed" if c.find("failure") is not None else "passed") for c in cases
    }
    assert outcome == {
        "test_worker_sees_its_gpu": "passed",
        "attention.equivalence[float32-cpu]": "failed",
        "attention.causality[float32-cpu]": "passed",
        "test_mine[attention.equivalence-float32-cpu]": "failed",
        "test_mine[attention.causality-float32-cpu]": "passed",
    }


def test_skipped_verdicts_are_pytest_skips_with_their_reason(tmp_path: Path) -> None:
    proc = _pytest(
        tmp_path,
        "--transpec",
        "cli_fixtures:NumpyWithoutBfloat16",
        "--transpec-component",
        "softmax",
        "--transpec-property",
        "equivalence",
        "--transpec-dtype",
        "bfloat16,float64",
        "--transpec-max-examples",
        "2",
        "-rs",
    )
    # bfloat16 was asked for by name and ran nothing: not a pass (exit 5, the reason in one line)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout
    assert "adapter does not declare bfloat16" in proc.stdout
    assert "transpec: nothing tested: dtype bfloat16 ran nothing" in proc.stdout


def test_without_transpec_the_plugin_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "transpec" not in proc.stdout


def test_bad_adapter_is_a_usage_error(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "--transpec", "cli_fixtures:NoSuchThing")
    assert proc.returncode == 4
    assert "transpec: " in proc.stderr and "NoSuchThing" in proc.stderr


def test_assert_conforms_raises_with_the_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    from cli_fixtures import WrongScaleAttention

    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.plugin import assert_conforms

    options = {
        "components": ["attention"],
        "properties": ["equivalence"],
        "dtypes": ["float32"],
        "max_examples": 4,
        "failures_dir": tmp_path,
    }
    with pytest.raises(AssertionError, match=r"FAILED attention\.equivalence"):
        assert_conforms(WrongScaleAttention(), **options)
    assert assert_conforms(NumpyAdapter(), **options).counts()["passed"] == 1


def test_assert_conforms_refuses_a_run_that_tested_nothing(tmp_path: Path) -> None:
    """A dtype the adapter does not declare turns every verdict into a skip: not a pass."""
    from transpec.adapters.numpy.adapter import NumpyAdapter
    from transpec.plugin import assert_conforms

    adapter = NumpyAdapter()
    adapter.dtypes = ("float64", "float32", "float16")
    with pytest.raises(AssertionError, match=r"^transpec: nothing tested: .*bfloat16"):
        assert_conforms(
            adapter,
            components=["softmax"],
            properties=["equivalence"],
            dtypes=["bfloat16"],
            failures_dir=tmp_path,
        )


def test_saved_cases_stay_where_the_run_started_after_an_os_chdir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A relative failures directory is resolved when the run starts: an implementation that
    changes the working directory cannot move where its counterexamples are saved."""
    monkeypatch.syspath_prepend(str(HERE))
    from cli_fixtures import WrongScaleAttention

    from transpec.runs import run

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)

    class MovesAway(WrongScaleAttention):
        def scaled_dot_product_attention(self, *args: Any, **kwargs: Any) -> Any:
            os.chdir(elsewhere)
            return super().scaled_dot_product_attention(*args, **kwargs)

    result = run(
        MovesAway(),
        components=["attention"],
        properties=["equivalence"],
        dtypes=["float32"],
        max_examples=4,
        failures_dir="saved",
    )
    (verdict,) = result.verdicts
    assert verdict.status == "failed" and verdict.failure_file is not None
    assert Path(verdict.failure_file).parent == start / "saved"
    assert not (elsewhere / "saved").exists()
