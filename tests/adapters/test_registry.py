"""Loading adapters by name: built-ins, ``module:attribute``, functions, and every error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transpec.adapters import AdapterLoadError, load_adapter
from transpec.adapters.base import COMPONENTS, Adapter, FunctionAdapter
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.adapters.registry import BUILTIN_ADAPTERS

USER_MODULE = """
import numpy as np
from transpec.adapters.base import Adapter

class MyAdapter(Adapter):
    name = "mine"
    def softmax(self, x, dim=-1):
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        return e / e.sum(axis=dim, keepdims=True)

class NeedsArgs(Adapter):
    def __init__(self, size):
        self.size = size

class Broken(Adapter):
    def __init__(self):
        raise RuntimeError("no GPU\\nat all")

class Namespace:
    class Inner(Adapter):
        name = "inner"

INSTANCE = MyAdapter()
NUMBER = 3

def my_rms_norm(x, normalized_shape, weight=None, eps=None):
    return x
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory holding ``transpec_user_kernels.py`` (not importable otherwise)."""
    name = f"transpec_user_kernels_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    (tmp_path / "transpec_failing_import.py").write_text("import transpec_no_such_dependency\n")
    (tmp_path / "transpec_raising_import.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for mod in ("transpec_failing_import", "transpec_raising_import"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setenv("TRANSPEC_TEST_MODULE", name)
    return tmp_path / name


def test_builtin_numpy_and_the_table() -> None:
    assert isinstance(load_adapter("numpy"), NumpyAdapter)
    assert {"numpy", "torch", "torch-math", "torch-flash", "torch-efficient", "torch-cudnn"} <= set(
        BUILTIN_ADAPTERS
    )
    for name, entry in BUILTIN_ADAPTERS.items():
        assert entry.description and "\n" not in entry.description, name
        assert entry.__doc__ == entry.description
        assert entry.spec.startswith("transpec.adapters.")


def test_builtin_torch_adapters_load() -> None:
    pytest.importorskip("torch")
    for name in ("torch", "torch-math", "torch-flash", "torch-efficient", "torch-cudnn"):
        adapter = load_adapter(name)
        assert isinstance(adapter, Adapter) and adapter.name == name
        assert adapter.framework == "torch"
        # the same class is reachable through its module:attribute spec
        assert type(load_adapter(BUILTIN_ADAPTERS[name].spec)) is type(adapter)


def test_module_relative_to_the_current_directory(user_dir: Path) -> None:
    module = user_dir.name
    adapter = load_adapter(f"{module}:MyAdapter")
    assert adapter.name == "mine" and adapter.provides("softmax")
    assert load_adapter(f"{module}:INSTANCE").name == "mine"
    assert load_adapter(f"{module}:Namespace.Inner").name == "inner"
    wrapped = load_adapter(f"{module}:my_rms_norm", component="rms_norm")
    assert isinstance(wrapped, FunctionAdapter) and wrapped.components() == ("rms_norm",)
    assert str(user_dir.parent) not in sys.path  # the directory was on sys.path only to import


def test_function_can_take_over_a_framework_adapters_conversion(user_dir: Path) -> None:
    pytest.importorskip("torch")
    wrapped = load_adapter(f"{user_dir.name}:my_rms_norm", component="rms_norm", base="torch")
    assert wrapped.framework == "torch" and "bfloat16" in wrapped.dtypes


ERRORS = {
    "unknown built-in": (
        ("nonesuch", None),
        f"unknown adapter 'nonesuch'; built-in adapters: {', '.join(BUILTIN_ADAPTERS)} "
        "(or give module:attribute)",
    ),
    "module not found": (
        ("transpec_no_such_module:X", None),
        "module 'transpec_no_such_module' not found (looked in the current directory and sys.path)",
    ),
    "dependency of the module not found": (
        ("transpec_failing_import:X", None),
        "importing module 'transpec_failing_import' failed: ModuleNotFoundError: No module "
        "named 'transpec_no_such_dependency'",
    ),
    "module raises on import": (
        ("transpec_raising_import:X", None),
        "importing module 'transpec_raising_import' failed: RuntimeError: boom",
    ),
    "attribute not found": (("{m}:Nope", None), "'{m}' has no attribute 'Nope'"),
    "nested attribute not found": (
        ("{m}:Namespace.Nope", None),
        "'{m}:Namespace' has no attribute 'Nope'",
    ),
    "not an adapter": (
        ("{m}:NUMBER", None),
        "'{m}:NUMBER' is a int, not an Adapter subclass, an Adapter instance or a function",
    ),
    "class that is not an adapter": (
        ("{m}:Namespace", None),
        "'{m}:Namespace' is a class but not a transpec Adapter subclass",
    ),
    "adapter class needing arguments": (
        ("{m}:NeedsArgs", None),
        "'{m}:NeedsArgs'() failed: TypeError: NeedsArgs.__init__() missing 1 required "
        "positional argument: 'size'",
    ),
    "adapter class raising": (
        ("{m}:Broken", None),
        "'{m}:Broken'() failed: RuntimeError: no GPU at all",
    ),
    "function without component": (
        ("{m}:my_rms_norm", None),
        "'{m}:my_rms_norm' is a function: say which component it implements (one of "
        f"{', '.join(COMPONENTS)})",
    ),
    "unknown component": (
        ("{m}:my_rms_norm", "rmsnorm"),
        f"unknown component 'rmsnorm'; expected one of {', '.join(COMPONENTS)}",
    ),
    "component with an adapter class": (
        ("{m}:MyAdapter", "softmax"),
        "'{m}:MyAdapter' is an adapter, not a function: component='softmax' applies to "
        "functions only",
    ),
    "component with an adapter instance": (
        ("{m}:INSTANCE", "softmax"),
        "'{m}:INSTANCE' is an adapter, not a function: component='softmax' applies to "
        "functions only",
    ),
    "component with a built-in": (
        ("numpy", "softmax"),
        "'numpy' is an adapter, not a function: component='softmax' applies to functions only",
    ),
    "malformed spec": (
        ("{m}:", None),
        "adapter '{m}:' is not of the form module:attribute (e.g. my_kernels:MyAdapter)",
    ),
    "attribute not a name": (("{m}:1x", None), "attribute '1x' in '{m}:1x' is not a dotted name"),
    "empty spec": (("  ", None), "an adapter is a built-in name or module:attribute, got '  '"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_load_error_has_its_one_line_message(user_dir: Path, case: str) -> None:
    (spec, component), message = ERRORS[case]
    module = user_dir.name
    spec, message = spec.replace("{m}", module), message.replace("{m}", module)
    with pytest.raises(AdapterLoadError) as info:
        load_adapter(spec, component=component)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_adapters_and_the_registry_does_not_import_torch() -> None:
    result = _python(
        """
        import sys
        import transpec.adapters
        import transpec.adapters.registry
        import transpec.adapters.torch.adapter
        from transpec.adapters import load_adapter
        load_adapter("numpy")
        print(sorted(m for m in ("torch", "sympy") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_torch_is_one_message_naming_the_extra() -> None:
    result = _python(
        """
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        from transpec.adapters import AdapterLoadError, load_adapter
        for name in ("torch", "torch-flash"):
            try:
                load_adapter(name)
            except AdapterLoadError as exc:
                print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "the torch adapter needs PyTorch: pip install 'transpec[torch]'",
        "the torch-flash adapter needs PyTorch: pip install 'transpec[torch]'",
    ]
