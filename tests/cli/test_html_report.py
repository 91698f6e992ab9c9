"""The HTML report as a document: self-contained (no script, nothing fetched), failures first and
linked, every failure's picture as PNG images of the stated size, hostile text escaped, the
colour scale's boundary at ratio 1, written atomically; ``--html`` in the CLI (also when a run is
terminated) and ``--transpec-html`` in the plugin."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transpec import htmlreport
from transpec.oracle.engine.picture import Evidence
from transpec.oracle.engine.profiles import resolve
from transpec.runs import RunResult, Verdict
from transpec.spec.conventions import CANONICAL

HERE = Path(__file__).resolve().parent
HOSTILE = '<script>alert("x")</script> & "quotes"'


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _png_size(uri: str) -> tuple[int, int]:
    data = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _failed_picture() -> dict[str, Any]:
    """A (1, 2, 300, 8) attention output, causal, wrong on the rows past 200 of head 1."""
    shape = (1, 2, 300, 8)
    expected = np.zeros(shape)
    actual = expected.copy()
    actual[0, 1, 200:, :] = 1e-3
    actual[0, 1, 250, 5] = 1.0
    rng = np.random.default_rng(1)
    args = {
        "q": rng.standard_normal((1, 2, 300, 8)),
        "k": rng.standard_normal((1, 2, 300, 8)),
        "v": rng.standard_normal((1, 2, 300, 8)),
        "attn_mask": None,
        "is_causal": True,
    }
    evidence = Evidence(actual, expected, 1e-4, (0, 1, 250, 5), args=args, conventions=CANONICAL)
    return evidence.picture().to_dict()


def _result(interrupted: bool = False) -> RunResult:
    result = RunResult(
        adapter=f"demo {HOSTILE}",
        adapter_spec="demo:Demo",
        conventions=CANONICAL.to_dict() | {"causal_alignment": "bottom_right"},
        profile=resolve("ci"),
        components=("attention",),
        dtypes=("float32",),
        devices=("cpu",),
        seconds=2.5,
        interrupted=interrupted,
    )
    worst = {
        "index": [0, 1, 250, 5],
        "actual": 1.0,
        "expected": 0.0,
        "error": 1.0,
        "tolerance": 1e-4,
        "ratio": 1e4,
        "derivation": "attention: c·(...) at this element bound=1e-4",
    }
    result.verdicts = [
        Verdict("attention", "gqa", "float32", "cpu", "passed", ratio=0.25, examples=12),
        Verdict("attention", "gqa", "float16", "cpu", "skipped", message="not declared"),
        Verdict(
            "attention",
            "equivalence",
            "float32",
            "cpu",
            "failed",
            ratio=1e4,
            examples=30,
            message="3 element(s) out of tolerance; worst element at [0, 1, 250, 5]: ...",
            failure_kind="violation",
            worst=worst,
            counterexample="q: (1, 2, 300, 8)\nregime: causal",
            failure_file="/tmp/x.npz",
            reproduce_command="transpec reproduce /tmp/x.npz --trust",
            report="FAILED attention.equivalence[float32-cpu] -- demo",
            picture=_failed_picture(),
        ),
        Verdict(
            "attention",
            "causality",
            "float32",
            "cpu",
            "failed",
            ratio=float("inf"),
            message=f"implementation failure (raised): ValueError: {HOSTILE}",
            failure_kind="raised",
            report=f"FAILED ... {HOSTILE}",
        ),
        Verdict(
            "attention",
            "large_logits",
            "float32",
            "cpu",
            "xfailed",
            ratio=3.0,
            message="1 element(s) out of tolerance",
            failure_kind="violation",
            known_failure="known.txt:3: upstream issue 123",
        ),
    ]
    return result


def test_the_page_is_self_contained_and_escapes_what_the_implementation_wrote() -> None:
    text = htmlreport.render(_result())
    page = _parse(text)
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "<script>alert" not in text
    assert HOSTILE in "".join(page.text)  # shown, as text
    for _, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name, "")
            assert not value or value.startswith(("#", "data:image/png;base64,")), value


def test_failures_come_first_and_link_to_their_sections() -> None:
    page = _parse(htmlreport.render(_result()))
    statuses = [a["data-status"] for t, a in page.tags if t == "tr" and "data-status" in a]
    ran = [s for s in statuses if s != "skipped"]
    assert ran == ["failed", "failed", "xfailed", "passed"]
    ids = {a["id"] for _, a in page.tags if "id" in a}
    links = [a["href"][1:] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    assert len(links) == 3 and set(links) <= ids
    sections = [a for t, a in page.tags if t == "section"]
    assert [s["data-kind"] for s in sections] == ["violation", "raised", "violation"]


def test_a_numeric_failure_has_its_heat_map_mask_legend_and_derivation() -> None:
    result = _result()
    text = htmlreport.render(result)
    page = _parse(text)
    images = {a["class"]: a for t, a in page.tags if t == "img"}
    heat, mask = images["heatmap"], images["mask"]
    picture = result.verdicts[2].picture
    assert picture is not None
    assert _png_size(heat["src"]) == (8, 100)  # 300 rows pooled by 3, 8 features
    assert (int(heat["data-cols"]), int(heat["data-rows"])) == (8, 100)
    assert _png_size(mask["src"]) == (100, 100)  # 300 x 300 keys, pooled by 3 x 3
    assert int(heat["height"]) == int(mask["height"])  # one row height: the rows line up
    assert "max-pooled over blocks of 3 × 1" in text and "averaged over blocks of 3 × 3" in text
    assert "slice [0, 1, :, :]" in text and "causal" in text
    assert any(a.get("class") == "worst-cell" for _, a in page.tags)
    assert any(a.get("class") == "tolerance-line" for _, a in page.tags)
    assert "attention: c·(...) at this element bound=1e-4" in text
    assert "transpec reproduce /tmp/x.npz --trust" in text
    # the other, non-numeric failure shows its message, no picture
    assert text.count('class="heatmap"') == 1


def test_a_finite_additive_mask_is_drawn_amber_in_the_mask() -> None:
    expected = np.zeros((1, 1, 2, 3))
    fill = np.array([[0.0, -1e30], [0.0, 0.0]])  # query 0: key 1 biased by a finite fill
    args = {"q": np.ones((1, 1, 2, 3)), "k": np.ones((1, 1, 2, 3)), "v": np.ones((1, 1, 2, 3))}
    args |= {"attn_mask": fill, "is_causal": False}
    evidence = Evidence(expected + 1, expected, 0.5, (0, 0, 0, 0), args=args, conventions=CANONICAL)
    result = _result()
    result.verdicts[2].picture = evidence.picture().to_dict()
    text = htmlreport.render(result)
    assert 'class="biased"' in text and "finite negative term" in text
    colours = htmlreport.mask_colours(np.array([[1.0, 1.0]]), np.array([[0.0, 1.0]]))
    assert tuple(colours[0, 1]) == (255, 193, 7) and tuple(colours[0, 0]) == (236, 246, 236)


def test_the_colour_scale_turns_at_ratio_one() -> None:
    colours = htmlreport.ratio_colours(np.array([0.0, 0.5, 1.0, 1.0001, 50.0, np.inf, np.nan]), 100)
    red, blue = colours[:, 0].astype(int), colours[:, 2].astype(int)
    assert all(blue[:3] > red[:3] - 10)  # within tolerance: white to blue
    assert all(red[3:5] > blue[3:5] + 60)  # out of it: yellow to dark red
    assert tuple(colours[5]) == (0, 0, 0) and tuple(colours[6]) == (210, 210, 210)
    assert htmlreport.scale_top(np.array([3.0, np.inf])) == 10.0
    assert htmlreport.scale_top(np.array([2e4])) == 1e5


def test_the_png_encoder_writes_what_it_is_given() -> None:
    import zlib

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = htmlreport.png(pixels)
    assert struct.unpack(">II", data[16:24]) == (3, 2)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert raw == b"\x00" + pixels[0].tobytes() + b"\x00" + pixels[1].tobytes()
    with pytest.raises(ValueError):
        htmlreport.png(np.zeros((0, 3, 3), dtype=np.uint8))


def test_an_interrupted_run_says_so() -> None:
    text = htmlreport.render(_result(interrupted=True))
    assert "INTERRUPTED" in text


def test_the_report_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    htmlreport.write_html(_result(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]

    def refuse(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    target.write_text("old")
    with pytest.raises(OSError):
        htmlreport.write_html(_result(), target)
    assert target.read_text() == "old"  # never half a report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_json_report_carries_the_picture() -> None:
    from transpec import reports

    data = json.loads(json.dumps(reports.to_json(_result()), allow_nan=False))
    pictures = [v["picture"] for v in data["verdicts"] if v["picture"] is not None]
    assert len(pictures) == 1 and pictures[0]["pool"] == [3, 1]
    back = Verdict.from_dict(data["verdicts"][3])
    assert back.ratio == float("inf") and back.failure_kind == "raised"


# -- the CLI and the plugin ---------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def test_cli_html_to_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "transpec.cli", "check", "numpy", "--html", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"transpec: error: cannot write the --html report {str(tmp_path)!r}: it is a directory"
    ]


def test_a_terminated_run_still_writes_the_html_report(tmp_path: Path) -> None:
    argv = ["check", "cli_hostile_fixtures:Terminated", "--component", "softmax"]
    argv += ["--max-examples", "4", "--isolation", "none", "--html", "r.html", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "transpec.cli", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stdout + proc.stderr
    text = (tmp_path / "r.html").read_text()
    assert "INTERRUPTED" in text
    assert re.search(r'data-status="passed"', text)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.html")]  # no temp file


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "benchmarks"), env["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_the_plugin_writes_the_html_report_of_its_items(tmp_path: Path) -> None:
    (tmp_path / "known.txt").write_text("attention.shape_dtype[float32-cpu]  # listed, passes\n")
    proc = _pytest(
        tmp_path,
        "--transpec",
        "corpus.masking:CausalSeesNextKey",
        "--transpec-component",
        "attention",
        "--transpec-dtype",
        "float32",
        "--transpec-property",
        "equivalence,shape_dtype",
        "--transpec-isolation",
        "none",
        "--transpec-xfails",
        "known.txt",
        "--transpec-html",
        "r.html",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"transpec HTML report: {tmp_path / 'r.html'}" in proc.stdout
    text = (tmp_path / "r.html").read_text()
    page = _parse(text)
    statuses = [a["data-status"] for t, a in page.tags if t == "tr" and "data-status" in a]
    assert statuses == ["failed", "xpassed"]
    assert "known.txt:1: listed, passes" in text
    assert "CausalSeesNextKey" in text  # the header names the adapter
    assert sum(1 for t, a in page.tags if t == "img" and a.get("class") == "heatmap") == 1
    assert sum(1 for t, a in page.tags if t == "img" and a.get("class") == "mask") == 1


def test_the_plugin_refuses_an_html_report_without_transpec(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "--transpec-html", "r.html")
    assert proc.returncode == 4  # pytest's usage error
    assert "--transpec-html needs --transpec ADAPTER" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_terminated_pytest_session_still_writes_the_html_report(tmp_path: Path) -> None:
    proc = _pytest(
        tmp_path,
        "--transpec",
        "cli_hostile_fixtures:Terminated",
        "--transpec-component",
        "softmax",
        "--transpec-max-examples",
        "4",
        "--transpec-isolation",
        "none",
        "--transpec-html",
        "r.html",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pytest's "interrupted"
    text = (tmp_path / "r.html").read_text()
    assert "INTERRUPTED" in text and 'data-status="passed"' in text
