"""The distribution ships every package of the source tree: ``[tool.setuptools] packages`` in
pyproject.toml names each folder that holds an ``__init__.py`` (under its ``package-dir``
name), so an installed transpec (not only an editable one) imports all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Every dotted package name the source tree holds, through the package-dir mapping."""
    found: set[str] = set()
    for name, folder in _setuptools()["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            found.add(".".join((name, *parts)))
    return found


def test_every_source_package_is_distributed() -> None:
    listed = set(_setuptools()["packages"])
    missing = sorted(_source_packages() - listed)
    assert not missing, f"packages missing from pyproject's [tool.setuptools] packages: {missing}"


def test_every_distributed_package_exists() -> None:
    stale = sorted(set(_setuptools()["packages"]) - _source_packages())
    assert not stale, f"pyproject lists packages with no __init__.py: {stale}"
