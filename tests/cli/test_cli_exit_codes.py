"""``transpec`` exit codes and one-line errors; ``list``, ``--version``, ``derive`` errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import transpec
from transpec.cli import main

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fixtures_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("transpec: error: ")
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["check", "no-such-adapter"], ["no-such-adapter"]),
        (["check", "no_such_module_xyz:Thing"], ["no_such_module_xyz"]),
        (["check", "cli_fixtures:NoSuchThing"], ["NoSuchThing"]),
        (["check", "cli_fixtures:NOT_AN_ADAPTER"], ["NOT_AN_ADAPTER"]),
        (["check", "cli_fixtures:right_softmax"], ["--component"]),
        (["check", "numpy", "--component", "convolution"], ["convolution", "softmax"]),
        (["check", "numpy", "--dtype", "int8"], ["int8", "bfloat16"]),
        (["check", "numpy", "--property", "telepathy"], ["telepathy", "causality"]),
        (["check", "numpy", "--max-examples", "0"], ["max_examples"]),
        (["check", "numpy", "--profile", "quick"], ["quick"]),
        (["check", "numpy", "--no-such-flag"], ["--no-such-flag"]),
        (["reproduce", "no-such-file.npz"], ["no-such-file.npz"]),
    ],
)
def test_usage_and_load_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    try:
        _one_line_error(capsys, argv, *needles)
    except SystemExit as exc:  # argparse's own errors exit through SystemExit
        assert exc.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(n in err[0] for n in needles), err


def test_reproduce_rejects_a_file_that_is_not_a_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip file")
    _one_line_error(capsys, ["reproduce", str(bogus)], "bogus.npz")


def test_function_with_its_component_passes_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", "cli_fixtures:right_softmax", "--component", "softmax"]
    argv += ["--dtype", "float32", "--max-examples", "3", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "adapter:" in out and "right_softmax" in out
    assert "0 failed" in out and "FAILED" not in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"transpec {transpec.__version__}"


def test_list_names_every_component_property_convention_and_adapter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transpec.adapters.base import COMPONENTS
    from transpec.adapters.registry import BUILTIN_ADAPTERS
    from transpec.oracle.catalogue import PROPERTIES

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for component in COMPONENTS:
        assert component in out
    for prop in PROPERTIES:
        assert f"{prop.component}.{prop.name}" in out
    for name in BUILTIN_ADAPTERS:
        assert name in out
    assert "causal_alignment" in out
    assert main(["list", "properties"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(PROPERTIES)


def test_derive_prints_a_block_and_rejects_an_unknown_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    derive = pytest.importorskip("transpec.spec.derive")
    block = derive.BLOCKS[0]
    assert main(["derive", block, "--format", "latex"]) == 0
    assert capsys.readouterr().out.strip() == derive.render(block, "latex").strip()
    _one_line_error(capsys, ["derive", "no_such_block"], "no_such_block")


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, transpec.cli, transpec.plugin;"
        "from transpec import *;"  # every name of the package's top level
        "heavy = [m for m in ('torch', 'sympy') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
