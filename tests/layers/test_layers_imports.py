"""The float64 layer references are light: importing them pulls in neither sympy nor torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = (
    "import sys\n"
    "import {module}\n"
    "print(','.join(sorted(m for m in ('sympy', 'torch') if m in sys.modules)))\n"
)


def _heavy(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_reference_layers_import_neither_sympy_nor_torch() -> None:
    assert _heavy("transpec.oracle.layers.reference") == ""


def test_the_check_sees_sympy_in_the_spec_layers() -> None:
    assert "sympy" in _heavy("transpec.spec.layers")
