"""With the implementation in a worker process, the run's own process holds BLAS to one thread
(its other cores are the worker's); with the implementation in the run's process, BLAS is left
as its users have it."""

from __future__ import annotations

from typing import Any

import pytest

from transpec import runs
from transpec.adapters.numpy.adapter import NumpyAdapter
from transpec.oracle.engine import blas

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_one_blas_thread_holds_and_restores() -> None:
    before = _blas_threads()
    with blas.one_thread():
        assert set(_blas_threads()) <= {1}
    assert _blas_threads() == before


@pytest.mark.parametrize(("isolation", "held"), [("process", True), ("none", False)])
def test_the_run_holds_blas_only_beside_a_worker(
    isolation: str, held: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[bool] = []
    real = blas.one_thread

    def recording() -> Any:
        entered.append(True)
        return real()

    monkeypatch.setattr(blas, "one_thread", recording)
    result = runs.run(
        NumpyAdapter(),
        components=["softmax"],
        properties=["equivalence"],
        dtypes=["float64"],
        max_examples=2,
        failures_dir=None,
        adapter_spec="numpy",
        isolation=isolation,
    )
    assert [v.status for v in result.verdicts] == ["passed"]
    assert entered == ([True] if held else [])
