"""The conventions and the generated kernels import neither sympy nor torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = (
    "import sys\n"
    "import {module}\n"
    "heavy = sorted(m for m in ('sympy', 'torch') if m in sys.modules)\n"
    "print(','.join(heavy))\n"
)


@pytest.mark.parametrize(
    "module", ["transpec.spec", "transpec.spec.conventions", "transpec.oracle.kernels._kernels"]
)
def test_light_modules_do_not_import_sympy_or_torch(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "", f"{module} imported {done.stdout.strip()}"


def test_the_check_itself_sees_sympy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module="transpec.spec.blocks")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sympy" in done.stdout
