"""One root exception: every error transpec raises about what it was asked to do is a
``TranspecError``; the load and case-file errors stay ``ValueError``s with the same messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transpec import errors
from transpec.errors import (
    AdapterDeclarationError,
    AdapterLoadError,
    CaseFileError,
    KnownFailuresFileError,
    TranspecError,
    UnknownComponentError,
    UsageError,
)

VALUE_ERRORS = (
    AdapterLoadError,
    AdapterDeclarationError,
    CaseFileError,
    UnknownComponentError,
    KnownFailuresFileError,
)


def test_every_error_class_is_a_transpec_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, TranspecError), name
        assert issubclass(cls, Exception), name
    assert set(errors.__all__) == {
        "TranspecError",
        "UsageError",
        "AdapterLoadError",
        "AdapterDeclarationError",
        "CaseFileError",
        "CaseFileReadError",
        "UnknownComponentError",
        "KnownFailuresFileError",
    }


@pytest.mark.parametrize("cls", VALUE_ERRORS)
def test_the_load_and_case_errors_are_still_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)
    assert not issubclass(UsageError, ValueError)


def test_the_old_homes_re_export_the_same_classes() -> None:
    from transpec import adapters, cli
    from transpec.adapters import registry
    from transpec.oracle import components

    assert adapters.AdapterLoadError is registry.AdapterLoadError is AdapterLoadError
    assert cli.UsageError is UsageError
    assert components.UnknownComponentError is UnknownComponentError


def test_errors_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from transpec.errors import TranspecError, AdapterLoadError, CaseFileError\n"
        "heavy = ('numpy', 'torch', 'sympy', 'hypothesis', 'transpec.adapters', "
        "'transpec.oracle')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_adapter_load_error_is_raised_with_its_message() -> None:
    from transpec.adapters.registry import load_adapter

    with pytest.raises(TranspecError) as info:
        load_adapter("no-such-adapter")
    assert type(info.value) is AdapterLoadError
    assert "no-such-adapter" in str(info.value)


def test_unknown_component_error_is_raised_with_its_message() -> None:
    from transpec.oracle import components

    with pytest.raises(TranspecError) as info:
        components.get("convolution")
    assert type(info.value) is UnknownComponentError
    assert str(info.value).startswith("unknown component 'convolution'; expected one of softmax")


def test_case_file_errors(tmp_path: Path) -> None:
    from transpec.cases import reproduce
    from transpec.runs import load_case

    missing = tmp_path / "missing.npz"
    with pytest.raises(CaseFileError, match=r"^no such file: "):
        load_case(missing)
    with pytest.raises(CaseFileError, match=r"^no such file: "):
        reproduce(missing)

    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(CaseFileError, match=r"is not a transpec case file \(not an .npz archive\)"):
        reproduce(text)

    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"not a transpec case file \(no __transpec__ entry\)"):
        reproduce(other)
    with pytest.raises(TranspecError):
        reproduce(other)


def test_a_case_file_naming_an_unknown_property(tmp_path: Path) -> None:
    import json

    from transpec.cases import reproduce
    from transpec.runs import FILE_FORMAT

    path = tmp_path / "case.npz"
    meta = {
        "format": FILE_FORMAT,
        "component": "softmax",
        "property": "telepathy",
        "dtype": "float32",
        "device": "cpu",
        "adapter": "numpy",
        "args": {},
        "order": [],
    }
    np.savez(path, __transpec__=np.array(json.dumps(meta)))
    with pytest.raises(CaseFileError, match=r"names property softmax\.telepathy, which transpec"):
        reproduce(path)
