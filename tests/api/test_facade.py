"""The top level of the package: ``from transpec import run, reproduce, ...`` gives the objects
of their modules, while ``import transpec`` alone stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import transpec

FACADE = {
    "run": "transpec.runs:run",
    "reproduce": "transpec.cases:reproduce",
    "assert_conforms": "transpec.plugin:assert_conforms",
    "conformance_tests": "transpec.plugin:conformance_tests",
    "Adapter": "transpec.adapters.base:Adapter",
    "FunctionAdapter": "transpec.adapters.base:FunctionAdapter",
    "Precision": "transpec.adapters.base:Precision",
    "Conventions": "transpec.spec.conventions:Conventions",
    "TranspecError": "transpec.errors:TranspecError",
}

HEAVY = ("torch", "sympy", "hypothesis")


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(("name", "target"), sorted(FACADE.items()))
def test_each_name_is_the_object_of_its_module(name: str, target: str) -> None:
    import importlib

    module, _, attribute = target.partition(":")
    assert getattr(transpec, name) is getattr(importlib.import_module(module), attribute)


def test_all_lists_the_facade_and_nothing_else() -> None:
    assert sorted(transpec.__all__) == sorted([*FACADE, "__version__"])
    assert set(FACADE) <= set(dir(transpec))


def test_from_import_works() -> None:
    from transpec import (
        Adapter,
        Conventions,
        FunctionAdapter,
        Precision,
        TranspecError,
        assert_conforms,
        conformance_tests,
        reproduce,
        run,
    )
    from transpec.adapters.numpy.adapter import NumpyAdapter

    assert issubclass(FunctionAdapter, Adapter) and issubclass(NumpyAdapter, Adapter)
    assert issubclass(TranspecError, Exception)
    assert Conventions().to_dict() and Precision
    assert all(map(callable, (assert_conforms, conformance_tests, reproduce, run)))


def test_the_run_function_wins_over_the_runs_module() -> None:
    """``transpec.runs`` is the module, ``transpec.run`` the function, in either import order."""
    code = (
        "import transpec.runs\n"
        "from transpec import run\n"
        "import transpec\n"
        "print(run is transpec.runs.run is transpec.run, callable(run))\n"
    )
    assert _python(code) == "True True"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = transpec.no_such_name
    assert not hasattr(transpec, "Verdict")


def test_import_transpec_is_light() -> None:
    code = (
        "import sys, transpec\n"
        f"heavy = {(*HEAVY, 'numpy')!r}\n"
        "print('heavy:' + ','.join(m for m in heavy if m in sys.modules))\n"
        "print('loaded:' + ','.join(sorted(m for m in sys.modules if m.startswith('transpec'))))\n"
    )
    assert _python(code).splitlines() == ["heavy:", "loaded:transpec,transpec.errors"]


def test_the_facade_names_import_neither_torch_nor_sympy() -> None:
    names = ", ".join(FACADE)
    code = (
        f"import sys\nfrom transpec import {names}\n"
        f"print(','.join(m for m in {HEAVY[:2]!r} if m in sys.modules))\n"
    )
    assert _python(code) == ""


def test_the_check_sees_torch() -> None:
    pytest.importorskip("torch")
    code = (
        "import sys\nimport numpy as np\nfrom transpec.adapters.torch.adapter import TorchAdapter\n"
        "TorchAdapter().to_native(np.zeros(2), 'float32', 'cpu')\nprint('torch' in sys.modules)\n"
    )
    assert _python(code) == "True"
