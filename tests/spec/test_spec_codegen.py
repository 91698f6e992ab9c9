"""The kernels file is generated from the definitions, in sync, and calls only xp.<allowed>."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from sympy.printing.numpy import NumPyPrinter

import transpec.oracle.kernels._kernels as kernels
from transpec.spec.blocks import KERNELS
from transpec.spec.codegen import generate, kernels_path
from transpec.spec.nodes import XP_FUNCTIONS, KernelPrinter, RowSoftmax


def test_committed_kernels_file_is_in_sync() -> None:
    assert kernels_path().read_text() == generate()


def test_generation_is_deterministic_and_already_formatted() -> None:
    raw = generate(format_with_ruff=False)
    assert raw == generate(format_with_ruff=False)
    assert raw == generate()  # ruff format has nothing to change


def test_generated_file_names_its_source_and_the_command() -> None:
    text = kernels_path().read_text()
    assert "GENERATED from transpec.spec" in text
    assert "python -m transpec.spec.codegen" in text


def _xp_attributes(tree: ast.AST) -> set[str]:
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "xp"
    }


def test_generated_code_calls_only_the_xp_functions_and_no_sympy_or_torch() -> None:
    tree = ast.parse(kernels_path().read_text())
    assert _xp_attributes(tree) <= set(XP_FUNCTIONS)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"sympy", "torch"}


def test_no_python_loop_over_elements() -> None:
    """The only loop in the kernels walks the normalized axes (a handful), never elements."""
    tree = ast.parse(kernels_path().read_text())
    loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.comprehension))]
    assert loops
    for loop in loops:
        assert isinstance(loop, ast.For) and ast.unparse(loop.iter) == "axes"


def test_kernel_names_and_signatures_match_the_definitions() -> None:
    for kern in KERNELS:
        fn = getattr(kernels, kern.name)
        params = inspect.signature(fn).parameters
        assert "xp" in params or kern.name == "kv_heads"
    sig = inspect.signature(kernels.layer_norm)
    assert list(sig.parameters) == [
        "x",
        "n_axes",
        "weight",
        "bias",
        "eps",
        "unbiased",
        "eps_inside_sqrt",
        "xp",
    ]
    assert list(inspect.signature(kernels.attention).parameters) == [
        "q",
        "k",
        "v",
        "bias",
        "scale",
        "softcap",
        "xp",
    ]


def test_printer_emits_batched_matmul_and_swapaxes() -> None:
    q = sp.MatrixSymbol("q", 3, 4)
    k = sp.MatrixSymbol("k", 5, 4)
    code = KernelPrinter()._print(q * k.T)
    assert code == "xp.matmul(q, xp.swapaxes(k, -1, -2))"
    # SymPy's own printer is wrong for batched inputs: .dot and .T
    default = NumPyPrinter()._print(q * k.T)
    assert ".dot(" in default or ".T" in default
    rng = np.random.default_rng(0)
    qb, kb = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
    ours = eval(code, {"xp": np, "q": qb, "k": kb})
    np.testing.assert_allclose(ours, np.einsum("bij,bkj->bik", qb, kb), rtol=1e-13)
    with pytest.raises(ValueError):
        eval(default, {"numpy": np, "q": qb, "k": kb})


def test_printer_hoists_the_stable_shift() -> None:
    printer = KernelPrinter()
    code = printer._print(RowSoftmax(sp.MatrixSymbol("s", 2, 3)))
    assert any("xp.max(s" in line for line in printer.lines)
    assert any("xp.isneginf" in line for line in printer.lines)
    assert code.startswith("e / xp.sum(e")


def test_printer_refuses_functions_outside_the_namespace() -> None:
    with pytest.raises(ValueError, match="may not call"):
        KernelPrinter()._print(sp.sin(sp.Symbol("t")))


def test_check_mode_reports_a_stale_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "_kernels.py"
    stale.write_text(generate().replace("xp.exp(", "xp.exp(1.0 * ", 1))
    cmd = [sys.executable, "-m", "transpec.spec.codegen", "--check", "--output", str(stale)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "out of date" in done.stderr
    stale.write_text(generate())
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0
