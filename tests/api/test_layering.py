"""The user-facing layer (run, reports, case files, CLI, pytest plugin) sits above the oracle:
nothing in ``oracle/``, ``spec/`` or ``adapters/`` imports it, not even inside a function.
``transpec.errors`` imports nothing, so every layer may import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_LAYER = ("cli", "runs", "jobs", "reports", "plugin", "cases")
LOWER = ("oracle", "spec", "adapters")


def _imported(tree: ast.AST) -> list[str]:
    """Every module an import statement names (``from transpec import x`` gives transpec.x)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _user_modules(names: list[str]) -> list[str]:
    prefixes = tuple(f"transpec.{m}" for m in USER_LAYER)
    return [n for n in names if n in prefixes or n.startswith(tuple(p + "." for p in prefixes))]


@pytest.mark.parametrize("folder", LOWER)
def test_the_lower_layers_never_import_the_user_layer(folder: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (found := _user_modules(_imported(ast.parse(path.read_text()))))
    }
    assert offenders == {}


def test_the_scan_sees_the_user_layer_importing_the_oracle() -> None:
    names = _imported(ast.parse((ROOT / "transpec" / "cli.py").read_text()))
    assert "transpec.runs" in _user_modules(names)
    assert any(n.startswith("transpec.oracle.") for n in names)


def test_errors_imports_nothing() -> None:
    names = _imported(ast.parse((ROOT / "transpec" / "errors.py").read_text()))
    assert names == ["__future__", "__future__.annotations"]
