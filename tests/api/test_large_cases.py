"""A failing case on a long input is saved and replays: case files refuse a member beyond
``MAX_MEMBER_BYTES`` (and all of them beyond ``MAX_TOTAL_BYTES``) only when it also expands
more than ``MAX_EXPANSION`` times its stored size -- a zip bomb does, a long input of float
data does not. The limits are lowered here so that a long-context case of a few hundred KiB
stands for a 128k-key one of some hundred MiB."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from transpec import runs
from transpec.cases import reproduce
from transpec.errors import CaseFileReadError
from transpec.runs import load_case, run

CLI = Path(__file__).resolve().parent.parent / "cli"


def test_a_long_failing_case_is_saved_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "MAX_MEMBER_BYTES", 16 * 2**10)
    monkeypatch.setattr(runs, "MAX_TOTAL_BYTES", 32 * 2**10)
    monkeypatch.syspath_prepend(str(CLI))
    from cli_fixtures import WrongScaleAttention

    result = run(
        WrongScaleAttention(),
        components=["attention"],
        properties=["long_context"],
        dtypes=["float64"],
        max_examples=4,
        failures_dir=tmp_path,
        adapter_spec="cli_fixtures:WrongScaleAttention",
    )
    (verdict,) = result.verdicts
    assert verdict.status == "failed" and verdict.failure_file is not None
    with zipfile.ZipFile(verdict.failure_file) as archive:
        sizes = {i.filename: i.file_size for i in archive.infolist()}
    assert sizes["arg_k.npy"] > runs.MAX_MEMBER_BYTES
    assert sum(sizes.values()) > runs.MAX_TOTAL_BYTES
    _, args = load_case(verdict.failure_file)
    assert np.shape(args["k"])[-2] > 256
    replay = reproduce(verdict.failure_file, adapter=WrongScaleAttention())
    assert replay.status == "failed" and replay.failure_kind == verdict.failure_kind
    assert replay.ratio == verdict.ratio


def test_a_member_that_expands_too_much_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "MAX_MEMBER_BYTES", 16 * 2**10)
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, __transpec__=np.array("{}"), arg_q=np.zeros(8 * 2**10))
    with pytest.raises(CaseFileReadError, match=r"arg_q\.npy.* expands to 65664 bytes"):
        load_case(bomb)
