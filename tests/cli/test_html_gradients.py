"""The pictures of the failures that are not one forward output against its bound: a gradient
comparison (``grad_equivalence_<name>``: the error/tolerance map over the gradient, dK beside the
mask transposed, a parameter's gradient as its own matrix or row, the worst element's derivation)
and a failed ``error_statistic`` (no per-element tolerance: the implementation's and a correct
kernel's distributions of |error| / absref, with both RMS values and the allowed one). Each is
shown on constructed evidence and on a real failing verdict: a backward chaff of the corpus,
torch's own LayerNorm bias gradient in bfloat16, a forward chaff that only the statistic sees."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec import htmlreport
from transpec.oracle.engine.picture import Evidence, Picture, StatisticEvidence
from transpec.oracle.engine.profiles import resolve
from transpec.runs import RunResult, Verdict
from transpec.spec.conventions import CANONICAL

HERE = Path(__file__).resolve().parent


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def _tags(text: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser.tags


def _page(*verdicts: Verdict) -> str:
    result = RunResult(
        adapter="demo",
        adapter_spec=None,
        conventions=CANONICAL.to_dict(),
        profile=resolve("ci"),
        components=tuple(sorted({v.component for v in verdicts})),
        dtypes=tuple(sorted({v.dtype for v in verdicts})),
        devices=("cpu",),
        seconds=1.0,
    )
    result.verdicts = list(verdicts)
    return htmlreport.render(result)


def _failed(prop: str, picture: dict[str, Any], component: str = "attention") -> Verdict:
    return Verdict(
        component,
        prop,
        "float32",
        "cpu",
        "failed",
        ratio=10.0,
        examples=3,
        message="out of tolerance",
        failure_kind="violation",
        picture=picture,
    )


def _causal_args(lq: int, lk: int, heads_q: int = 2, heads_kv: int = 2) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {
        "q": rng.standard_normal((1, heads_q, lq, 4)),
        "k": rng.standard_normal((1, heads_kv, lk, 4)),
        "v": rng.standard_normal((1, heads_kv, lk, 4)),
        "attn_mask": None,
        "is_causal": True,
        "enable_gqa": heads_q != heads_kv,
    }


# -- gradients ----------------------------------------------------------------------------------


def test_dq_is_drawn_query_by_feature_beside_the_mask_as_applied() -> None:
    args = _causal_args(6, 6)
    got = np.zeros((1, 2, 6, 4))
    got[0, 1, 2, 3] = 1.0
    picture = Evidence(got, np.zeros_like(got), 0.1, (0, 1, 2, 3), args=args, gradient="q")
    drawn = picture.picture(conventions=CANONICAL)
    assert drawn.of == "the gradient of q" and drawn.axes == ("query", "feature")
    assert drawn.slice == (0, 1) and drawn.worst == (2, 3)
    assert drawn.mask_axes == ("query", "key")
    assert drawn.mask == np.tril(np.ones((6, 6))).tolist()  # query i sees keys j <= i


def test_dk_is_drawn_key_by_feature_beside_the_mask_transposed() -> None:
    """The rows of dK are keys: the mask beside it is key × query (which queries saw each key),
    so a key row of the map lines up with its row of the mask."""
    args = _causal_args(5, 7)  # top-left causal (canonical): query i sees keys j <= i
    got = np.zeros((1, 2, 7, 4))
    got[0, 0, 6, 1] = 1.0
    drawn = Evidence(got, np.zeros_like(got), 0.1, (0, 0, 6, 1), args=args, gradient="k").picture(
        conventions=CANONICAL
    )
    assert drawn.axes == ("key", "feature") and drawn.of == "the gradient of k"
    assert drawn.mask_axes == ("key", "query") and drawn.mask is not None
    mask = np.array(drawn.mask)
    assert mask.shape == (7, 5)  # keys × queries
    assert mask[4].tolist() == [0, 0, 0, 0, 1]  # key 4: seen by the last query only
    assert mask[6].tolist() == [0] * 5  # key 6: seen by no query
    assert "transposed" in drawn.mask_note
    text = _page(_failed("grad_equivalence_k", drawn.to_dict()))
    assert "the gradient of k (1, 2, 7, 4)" in text
    assert "the queries that could see each key" in text
    images = {a["class"]: a for t, a in _tags(text) if t == "img"}
    assert int(images["heatmap"]["height"]) == int(images["mask"]["height"])  # rows line up


def test_dk_under_grouped_heads_has_no_mask_rather_than_a_wrong_one() -> None:
    args = _causal_args(4, 4, heads_q=4, heads_kv=2)
    got = np.ones((1, 2, 4, 4))
    drawn = Evidence(got, got * 0, 0.1, (0, 1, 0, 0), args=args, gradient="v").picture(
        conventions=CANONICAL
    )
    assert drawn.axes == ("key", "feature") and drawn.mask is None


def test_a_parameter_gradient_is_its_own_matrix_and_a_bias_one_row_without_a_mask() -> None:
    args = {"query": np.ones((2, 3, 4)), "key_padding_mask": np.zeros((2, 3), dtype=bool)}
    args |= {"batch_first": True}
    weight = np.zeros((12, 4))
    weight[7, 2] = 1.0
    drawn = Evidence(weight, weight * 0, 0.1, (7, 2), args=args, gradient="in_proj_weight").picture(
        conventions=CANONICAL
    )
    assert drawn.axes == ("in_proj_weight row", "column") and drawn.mask is None
    assert drawn.worst == (7, 2) and drawn.plane == (12, 4)
    bias = Evidence(np.ones(5), np.zeros(5), 0.1, (3,), args=args, gradient="in_proj_bias")
    row = bias.picture(conventions=CANONICAL)
    assert row.axes == ("", "element") and row.plane == (1, 5) and row.worst == (0, 3)
    text = _page(_failed("grad_equivalence_in_proj_bias", row.to_dict(), "multi_head_attention"))
    assert "the gradient of in_proj_bias (5,)" in text and 'class="mask"' not in text


def test_a_decoder_memory_gradient_is_memory_by_feature_without_the_self_attention_mask() -> None:
    args = {"tgt": np.ones((2, 3, 4)), "memory": np.ones((2, 5, 4)), "batch_first": True}
    args |= {"tgt_mask": np.triu(np.ones((3, 3), dtype=bool), 1)}
    got = np.zeros((2, 5, 4))
    got[1, 4, 0] = 1.0
    drawn = Evidence(got, got * 0, 0.1, (1, 4, 0), args=args, gradient="memory").picture(
        conventions=CANONICAL
    )
    assert drawn.axes == ("memory", "feature") and drawn.mask is None
    assert drawn.slice == (1,) and drawn.worst == (4, 0)
    tgt = Evidence(
        np.ones((2, 3, 4)), np.zeros((2, 3, 4)), 0.1, (0, 2, 1), args=args, gradient="tgt"
    )
    rows = tgt.picture(conventions=CANONICAL)
    assert rows.axes == ("query", "feature") and rows.mask is not None  # tgt_mask, query rows
    assert np.array(rows.mask).tolist() == np.tril(np.ones((3, 3))).tolist()


def test_the_gradient_picture_survives_the_json_report() -> None:
    args = _causal_args(3, 3)
    got = np.ones((1, 2, 3, 4))
    drawn = Evidence(got, got * 0, 0.5, (0, 0, 2, 0), args=args, gradient="k").picture(
        conventions=CANONICAL
    )
    back = Picture.from_dict(json.loads(json.dumps(drawn.to_dict())))
    assert back.of == drawn.of and back.mask_axes == ("key", "query") and back.axes == drawn.axes


# -- the error statistic ------------------------------------------------------------------------


def _statistic(scale: float = 3.0, threshold: float = 2.0) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    emulated = np.abs(rng.standard_normal(400)) * 1e-3
    emulated[:4] = 0.0  # exact elements are counted apart
    errors = emulated * scale
    return StatisticEvidence(errors, emulated, threshold, note="float32 accumulation").picture()


def test_a_failed_statistic_pictures_both_distributions_and_the_three_rms() -> None:
    drawn = _statistic()
    assert drawn.exact == (4, 4) and drawn.elements == 400
    assert sum(drawn.implementation) == sum(drawn.emulated) == 396
    assert math.isclose(drawn.rms, 3 * drawn.emulated_rms)
    assert math.isclose(drawn.allowed_rms, 2 * drawn.emulated_rms)
    # the implementation's histogram is the emulated one shifted by log10(3) to the right
    centre = np.array(drawn.edges[:-1]) + 0.5 * np.diff(drawn.edges)
    mean_impl = np.average(centre, weights=drawn.implementation)
    mean_emu = np.average(centre, weights=drawn.emulated)
    assert 0.3 < mean_impl - mean_emu < 0.65
    text = _page(_failed("error_statistic", drawn.to_dict()))
    tags = _tags(text)
    svg = next(a for t, a in tags if t == "svg" and a.get("class") == "distribution")
    assert float(svg["data-rms"]) > float(svg["data-allowed"])
    lines = {
        a["class"]: float(a["x1"]) for t, a in tags if t == "line" and "rms-" in a.get("class", "")
    }
    assert lines["rms-emulated"] < lines["rms-allowed"] < lines["rms-implementation"]
    bars = [a["class"] for t, a in tags if t == "rect" and a.get("class", "").startswith("bar-")]
    assert "bar-implementation" in bars and "bar-emulated" in bars
    assert "allowed RMS = 2 × correct" in text and "float32 accumulation" in text
    assert 'class="heatmap"' not in text  # no per-element map: there is no per-element bound


def test_the_statistic_picture_keeps_its_axis_when_errors_span_many_decades() -> None:
    errors = np.array([1e-30, 1e-3, 2e-3, 0.0])
    drawn = StatisticEvidence(errors, errors / 2, 2.0).picture()
    assert drawn.edges[-1] - drawn.edges[0] <= 9  # at most 8 decades below the top, plus one
    assert sum(drawn.implementation) == 3  # the tiny one counted in the first bin, not lost
    json.dumps(drawn.to_dict(), allow_nan=False)


# -- real failing verdicts ----------------------------------------------------------------------


def _run(entry: str, component: str, prop: str, dtype: str, *, gradients: bool) -> Verdict:
    import corpus

    from transpec.runs import run

    result = run(
        corpus.entry(entry).make(),
        components=[component],
        properties=[prop],
        dtypes=[dtype],
        devices=["cpu"],
        failures_dir=None,
        gradients=gradients,
    )
    (verdict,) = result.verdicts
    return verdict


def test_a_backward_chaff_that_forgets_the_causal_mask_is_pictured_on_dk() -> None:
    pytest.importorskip("torch")
    verdict = _run(
        "attention_grad_causal_forgotten",
        "attention",
        "grad_equivalence_k",
        "float32",
        gradients=True,
    )
    assert verdict.status == "failed" and verdict.picture is not None
    picture = verdict.picture
    assert picture["kind"] == "map" and picture["of"] == "the gradient of k"
    assert picture["axes"] == ["key", "feature"] and picture["mask_axes"] == ["key", "query"]
    assert picture["mask"] is not None  # the causal mask, one row per key
    row, _ = picture["worst"]
    assert picture["mask"][row] != [1.0] * len(picture["mask"][row])  # a key some query hid
    assert verdict.worst is not None and "docs/gradients.md" in verdict.worst["derivation"]


def test_a_gradient_relation_is_pictured_over_the_gradient_it_constrains() -> None:
    """grad_causal_zeros: keys only later queries see must get exactly 0; the map is over dK
    (key × feature, beside the mask transposed), not labelled as an output."""
    pytest.importorskip("torch")
    verdict = _run(
        "attention_grad_causal_forgotten",
        "attention",
        "grad_causal_zeros",
        "float32",
        gradients=True,
    )
    assert verdict.status == "failed" and verdict.picture is not None
    picture = verdict.picture
    assert picture["of"] in ("the gradient of k", "the gradient of v")
    assert picture["axes"] == ["key", "feature"] and picture["mask_axes"] == ["key", "query"]
    assert picture["note"].startswith("the relation: attention")
    assert picture["plane"][0] == picture["mask_plane"][0]  # one row per key in both


def test_torch_layer_norm_bias_gradient_in_bfloat16_is_pictured_as_one_row() -> None:
    """torch's LayerNorm sums the bias gradient in the input dtype (docs/gradients.md §7)."""
    pytest.importorskip("torch")
    from transpec.adapters.torch import TorchAdapter
    from transpec.runs import run

    result = run(
        TorchAdapter(),
        components=["layer_norm"],
        properties=["grad_equivalence_bias"],
        dtypes=["bfloat16"],
        failures_dir=None,
        gradients=True,
    )
    (verdict,) = result.verdicts
    assert verdict.status == "failed" and verdict.picture is not None, verdict.message
    picture = verdict.picture
    assert picture["of"] == "the gradient of bias" and picture["axes"] == ["", "element"]
    assert len(picture["ratio"]) == 1 and picture["mask"] is None
    worst = max(float(x) for x in picture["ratio"][0])
    assert math.isclose(worst, verdict.ratio, rel_tol=0.01)
    text = _page(verdict)
    assert "the gradient of bias" in text and "tolerance derivation" in text


def test_a_chaff_only_the_statistic_sees_is_pictured_by_its_distributions() -> None:
    """P·V accumulated in bfloat16 while float32 is declared: every element within its bound,
    the typical error several times a correct kernel's."""
    pytest.importorskip("torch")
    verdict = _run(
        "attention_low_precision_pv", "attention", "error_statistic", "bfloat16", gradients=False
    )
    assert verdict.status == "failed" and verdict.picture is not None
    picture = verdict.picture
    assert picture["kind"] == "distribution"
    assert picture["rms"] > picture["allowed_rms"] > picture["emulated_rms"] > 0
    assert math.isclose(picture["rms"] / picture["allowed_rms"], verdict.ratio, rel_tol=1e-6)
    assert "Precision(" in picture["note"]


# -- transpec reproduce --html ------------------------------------------------------------------


def test_reproduce_writes_the_page_of_the_replayed_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A saved forward failure replayed: the same page as check's (header, the one verdict, its
    heat map and mask); a saved gradient failure of a built-in adapter: its gradient's map."""
    from transpec.cli import main

    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)
    argv = ["check", "cli_fixtures:WrongScaleAttention", "--component", "attention"]
    argv += ["--property", "equivalence", "--dtype", "float32", "--failures-dir", "cases"]
    argv += ["--max-examples", "6", "--quiet", "--isolation", "none", "--html", "check.html"]
    assert main(argv) == 1
    (saved,) = (tmp_path / "cases").iterdir()
    capsys.readouterr()
    argv = ["reproduce", str(saved), "--trust", "--isolation", "none", "--html", "replay.html"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAILED attention.equivalence[float32-cpu]")
    assert out.splitlines()[-1] == f"HTML report: {tmp_path / 'replay.html'}"
    text = (tmp_path / "replay.html").read_text()
    tags = _tags(text)
    assert [a["data-status"] for t, a in tags if t == "tr" and "data-status" in a] == ["failed"]
    assert sum(1 for t, a in tags if t == "img" and a.get("class") == "heatmap") == 1
    assert "cli_fixtures:WrongScaleAttention" in text and f"transpec reproduce {saved}" in text
    # the replay's picture is the run's: the same shrunk example, the same map
    check_maps = [a["src"] for t, a in _tags((tmp_path / "check.html").read_text()) if t == "img"]
    assert [a["src"] for t, a in tags if t == "img"] == check_maps


def test_reproduce_html_of_a_gradient_case_and_a_bad_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from transpec.adapters.torch import TorchAdapter
    from transpec.cli import main
    from transpec.runs import run

    run(
        TorchAdapter(),
        components=["layer_norm"],
        properties=["grad_equivalence_bias"],
        dtypes=["bfloat16"],
        failures_dir=tmp_path / "cases",
        gradients=True,
    )
    (saved,) = (tmp_path / "cases").iterdir()
    page = tmp_path / "replay.html"
    assert main(["reproduce", str(saved), "--isolation", "none", "--html", str(page)]) == 1
    text = page.read_text()
    assert "the gradient of bias" in text and "layer_norm.grad_equivalence_bias" in text
    capsys.readouterr()
    # a report path that cannot be written is refused before the case is replayed
    assert main(["reproduce", str(saved), "--html", str(tmp_path)]) == 2
    assert "it is a directory" in capsys.readouterr().err
