"""The torch adapters' declarations without importing torch (a CPU-only build).

A run whose implementation lives in a worker process only reads the adapter's declarations in
its own process; for a CPU-only torch build (version label ``+cpu``) these come from the
distribution's metadata, and torch is imported by the worker alone. What the adapter declares
must be what torch itself says; any other build is asked itself.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from transpec.adapters.torch import arrays  # noqa: E402

_CPU_BUILD = str(torch.__version__).endswith("+cpu")


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip()


@pytest.mark.skipif(not _CPU_BUILD, reason="torch here is not a CPU-only build")
def test_declarations_of_a_cpu_build_do_not_import_torch() -> None:
    out = _run(
        """
        import sys
        import numpy as np
        from transpec.adapters.registry import load_adapter
        for name in ("torch", "torch-math", "torch-slow"):
            adapter = load_adapter(name)
            print(adapter.describe())
            print(adapter.available_devices())
            adapter.precision("attention", "float16")
            zeros = np.zeros((1, 1, 2, 3))
            adapter.supports("attention", {"q": zeros, "v": zeros})
        print("torch" in sys.modules)
        """
    )
    lines = out.splitlines()
    assert lines[-1] == "False", out
    assert lines[0] == f"torch (torch {torch.__version__}; devices: cpu)"
    assert lines[1] == "('cpu',)"
    assert lines[2].endswith("; SDPA backend MATH)")


def test_build_is_what_torch_says() -> None:
    """Without torch imported (a CPU build: from the metadata) and with it, the same."""
    out = _run(
        """
        from transpec.adapters.torch.arrays import torch_build
        read = torch_build()
        import torch
        print(read.version == torch.__version__)
        print(read.cuda == (torch.version.cuda if torch.cuda.is_available() else None))
        """
    )
    assert out.splitlines() == ["True", "True"]


def test_other_builds_ask_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version without the ``+cpu`` label (a CUDA or macOS build) is not trusted to have no
    GPU: torch itself answers (here already imported, so it is asked in any case)."""
    monkeypatch.setattr(importlib.metadata, "version", lambda _name: "2.99.0")
    arrays.torch_build.cache_clear()
    try:
        build = arrays.torch_build()
    finally:
        arrays.torch_build.cache_clear()
    assert build.version == torch.__version__
    assert build.cuda == (torch.version.cuda if torch.cuda.is_available() else None)


def test_a_label_alone_is_not_enough() -> None:
    """Metadata left behind by an uninstalled torch (no module to find) is no build: the
    adapter's load fails with ImportError, as a missing torch always did."""
    code = """
        import importlib.util, sys

        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    raise ImportError("No module named 'torch'")
                return None

        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "torch" else real(name, *a)
        sys.meta_path.insert(0, Missing())
        from transpec.adapters.torch.arrays import torch_build
        try:
            torch_build()
        except ImportError:
            print("ImportError")
        """
    assert _run(code) == "ImportError"
