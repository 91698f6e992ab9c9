"""Generate :mod:`transpec.oracle.kernels._kernels` from the definitions of
:mod:`transpec.spec.blocks`.

Usage::

    python -m transpec.spec.codegen            # rewrite oracle/kernels/_kernels.py
    python -m transpec.spec.codegen --check    # exit 1 if the committed file is out of date

Each kernel's program is printed by :class:`~transpec.spec.nodes.KernelPrinter`: matrix products
become ``xp.matmul``, transposes ``xp.swapaxes(., -1, -2)``, row operations their stable code
(max subtraction), and every intermediate value a named statement. The output is deterministic
and already in ``ruff format`` style; when ruff is installed the generator still passes the text
through ``ruff format`` (a no-op on a well-formed run) and falls back to the raw text otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transpec.spec.blocks import KERNELS, Assign, Code, If, Kernel, Return, latex
from transpec.spec.nodes import KernelPrinter

__all__ = ["function_source", "generate", "kernels_path", "main"]

_HEADER = '''"""Numeric kernels of the building blocks (float64 or high precision).

GENERATED from transpec.spec (spec/blocks.py, spec/nodes.py); do not edit by hand.
Regenerate with ``python -m transpec.spec.codegen``; a test checks this file is in sync.

Every kernel takes ``xp``, a math namespace (NumPy for float64, the mpmath namespace of
:mod:`transpec.oracle.kernels.highprec` for object arrays of ``mpmath.mpf``), calls only ``xp.max``,
``xp.sum``, ``xp.exp``, ``xp.log``, ``xp.sqrt``, ``xp.tanh``, ``xp.where``, ``xp.isneginf``,
``xp.matmul``, ``xp.swapaxes`` and arithmetic on values, and works on any leading batch/head
dimensions. Index bookkeeping (reduction axes, kv heads, the causal mask) uses NumPy directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transpec.spec.conventions import CANONICAL, Conventions

Array = Any
'''


def kernels_path() -> Path:
    """oracle/kernels/_kernels.py of this source tree."""
    return Path(__file__).resolve().parent.parent / "oracle" / "kernels" / "_kernels.py"


def _params(kern: Kernel) -> set[str]:
    names = set()
    for part in kern.signature.replace("*,", "").split(","):
        name = part.split(":")[0].strip()
        if name and name != "*":
            names.add(name)
    return names


def _targets(body: Sequence[Any]) -> set[str]:
    out: set[str] = set()
    for step in body:
        if isinstance(step, Assign):
            out.add(step.target)
        elif isinstance(step, If):
            out |= _targets(step.body) | _targets(step.orelse)
        elif isinstance(step, Code):
            for line in step.lines:
                head = line.strip().split(" = ")[0]
                for name in head.split(","):
                    if name.strip().isidentifier():
                        out.add(name.strip())
    return out


def _emit(body: Sequence[Any], printer: KernelPrinter, indent: int) -> list[str]:
    pad = "    " * indent
    lines: list[str] = []
    for step in body:
        if isinstance(step, Code):
            lines += [pad + line for line in step.lines]
        elif isinstance(step, Assign):
            printer.lines = []
            code = printer._print(step.expr)
            lines += [pad + line for line in printer.lines]
            lines.append(f"{pad}{step.target} = {code}")
        elif isinstance(step, If):
            lines.append(f"{pad}if {step.code()}:")
            lines += _emit(step.body, printer, indent + 1)
            if step.orelse:
                lines.append(f"{pad}else:")
                lines += _emit(step.orelse, printer, indent + 1)
        elif isinstance(step, Return):
            printer.lines = []
            codes = [printer._print(e) for e in step.exprs]
            lines += [pad + line for line in printer.lines]
            lines.append(f"{pad}return {', '.join(codes)}")
        else:  # pragma: no cover - programs are built in transpec.spec.blocks
            raise TypeError(f"unknown program step {step!r}")
    return lines


def _docstring(kern: Kernel) -> list[str]:
    text = kern.doc.splitlines()
    if kern.definition is not None:
        wrapped = textwrap.wrap(latex(kern.definition), width=84, break_on_hyphens=False)
        text += ["", "Definition (LaTeX, from transpec.spec.blocks):", ""]
        text += [f"    {line}" for line in wrapped]
    raw = "r" if any("\\" in t for t in text) else ""
    lines = [f'    {raw}"""{text[0]}']
    lines += [f"    {t}".rstrip() for t in text[1:]]
    lines.append('    """')
    return lines


def function_source(kern: Kernel) -> str:
    """The generated source of one kernel (before ``ruff format``)."""
    return _function(kern)


def _function(kern: Kernel) -> str:
    printer = KernelPrinter(reserved=_params(kern) | _targets(kern.body), row_axis=kern.row_axis)
    head = f"def {kern.name}({kern.signature}) -> {kern.returns}:"
    if len(head) > 100:
        params = [p.strip() for p in kern.signature.split(", ")]
        head = f"def {kern.name}(\n" + "".join(f"    {p},\n" for p in params)
        head += f") -> {kern.returns}:"
    body = _emit(kern.body, printer, 1)
    return "\n".join([head, *_docstring(kern), *body]) + "\n"


def _ruff_format(text: str, path: Path) -> str:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        return text
    try:
        done = subprocess.run(
            [ruff, "format", "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=path.parent,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return text
    return done.stdout


def generate(*, format_with_ruff: bool = True) -> str:
    """The text of oracle/kernels/_kernels.py (deterministic)."""
    parts = [_HEADER] + [_function(kern) for kern in KERNELS]
    text = "\n\n".join(parts)
    return _ruff_format(text, kernels_path()) if format_with_ruff else text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transpec.spec.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check the file is in sync")
    parser.add_argument("--output", type=Path, default=None, help="write here instead")
    args = parser.parse_args(argv)
    target = args.output or kernels_path()
    text = generate()
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(f"{target} is out of date; run python -m transpec.spec.codegen", file=sys.stderr)
            return 1
        print(f"{target} is in sync")
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
