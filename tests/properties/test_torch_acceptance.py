"""Every property accepts PyTorch (CPU) in all four dtypes: no false alarms on a correct library.

Few examples per property and dtype keep this fast; the ``thorough`` profile of a real run
draws many more.
"""

from __future__ import annotations

from typing import Any

import pytest

from transpec.oracle.properties import PROPERTIES

pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


@pytest.fixture(scope="module")
def torch_adapter() -> Any:
    from transpec.adapters.torch_adapter import TorchAdapter

    return TorchAdapter()


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.id)
def test_accepts_torch(prop: Any, dtype: str, torch_adapter: Any, accepts: Any) -> None:
    assert accepts(prop.component, prop.name, torch_adapter, dtype, examples=4) <= 1.0
