"""The HTML report in a real headless browser (Debian's chromium driven by playwright): the
report of a real failing run (a tiled causal kernel that masks only its first tile of queries)
renders with no console error and no request leaving the file, its heat maps and masks are
images of the map's size drawn at their stated size, the worst cell is drawn in a colour out of
tolerance, and a screenshot is saved.

The screenshot goes to ``$TRANSPEC_TEST_ARTIFACTS`` when set, else the test's tmp dir; the test
prints where. Skipped only when no chromium is installed (``.ci/run`` installs it)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: the rows of one query tile of :func:`tiled_attention`
TILE = 16

#: the flags the browser runs with: headless, no sandbox (root in CI), nothing fetched
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def _chromium_page(tmp_path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page of Debian's chromium driven by playwright, in a new, empty user data dir, with
    the console errors and warnings and page errors it reports and the URLs it requests
    (skipped without chromium; a failure when chromium is there but playwright is not)."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium installed (apt-get install chromium); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("chromium is installed but playwright is not: pip install playwright==1.65.2")
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 1000},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            yield page, problems, requests
        finally:
            context.close()


def tiled_attention(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    """softmax(scale·QKᵀ + mask)·V computed per tile of :data:`TILE` query rows, whose causal
    mask is applied in the first tile only: the queries from row 16 on see the future (a bug
    of a tiled kernel that a short sequence never shows)."""
    if enable_gqa and q.shape[-3] != k.shape[-3]:
        k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
        v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    factor = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ np.swapaxes(k, -1, -2)) * factor
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            scores = np.where(attn_mask, scores, -np.inf)
        else:
            scores = scores + attn_mask
    if is_causal:
        future = np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)
        future[TILE:] = False  # the bug: only the first tile is masked
        scores = np.where(future, -np.inf, scores)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        out = (weights / weights.sum(-1, keepdims=True)) @ v
    return out.astype(q.dtype)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transpec.adapters.base import FunctionAdapter
    from transpec.htmlreport import write_html
    from transpec.runs import run

    where = tmp_path_factory.mktemp("html")
    result = run(
        FunctionAdapter(tiled_attention, "attention", name="tiled_attention"),
        components=["attention"],
        properties=["equivalence", "long_context", "shape_dtype"],
        dtypes=["float32"],
        failures_dir=where / "failures",
    )
    assert [v.status for v in result.verdicts] == ["failed", "passed", "failed"]
    path = where / "report.html"
    write_html(result, path)
    return path, result


def _artifacts(tmp_path: Path) -> Path:
    configured = os.environ.get("TRANSPEC_TEST_ARTIFACTS")
    out = Path(configured) if configured else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_the_report_of_a_failing_run_renders_in_chromium(
    report: tuple[Path, Any], tmp_path: Path
) -> None:
    path, result = report
    with _chromium_page(tmp_path) as (page, problems, requests):
        page.goto(path.as_uri(), wait_until="load")
        figures = page.eval_on_selector_all(
            "section.failure",
            """sections => sections.map(s => {
                const box = e => e && e.getBoundingClientRect();
                const heat = s.querySelector('img.heatmap');
                const mask = s.querySelector('img.mask');
                const cell = s.querySelector('.worst-cell');
                const describe = img => img && {
                    complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
                    data: [Number(img.dataset.cols), Number(img.dataset.rows)],
                    attr: [Number(img.getAttribute('width')),
                           Number(img.getAttribute('height'))],
                    box: [box(img).width, box(img).height]};
                let worst = null;
                if (heat && cell) {
                    const c = document.createElement('canvas');
                    c.width = heat.naturalWidth; c.height = heat.naturalHeight;
                    const g = c.getContext('2d');
                    g.drawImage(heat, 0, 0);
                    const h = box(heat), b = box(cell);
                    const x = Math.floor((b.left - h.left) / h.width * heat.naturalWidth);
                    const y = Math.floor((b.top - h.top) / h.height * heat.naturalHeight);
                    worst = {inside: b.left >= h.left - 1 && b.right <= h.right + 1 &&
                                     b.top >= h.top - 1 && b.bottom <= h.bottom + 1,
                             rgb: Array.from(g.getImageData(x, y, 1, 1).data).slice(0, 3)};
                }
                return {id: s.id, heat: describe(heat), mask: describe(mask), worst,
                        legend: !!s.querySelector('svg.legend .tolerance-line')};
            })""",
        )
        table_rows = page.eval_on_selector_all(
            "#verdict-table tr[data-status]", "rows => rows.map(r => r.dataset.status)"
        )
        shot = _artifacts(tmp_path) / "transpec-html-report.png"
        page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the HTML report: {shot}")
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert table_rows == ["failed", "failed", "passed"]
    pictures = {v.name: v.picture for v in result.verdicts if v.picture is not None}
    assert len(figures) == len(pictures) == 2
    for figure, picture in zip(figures, pictures.values(), strict=True):
        heat, mask = figure["heat"], figure["mask"]
        rows, cols = len(picture["ratio"]), len(picture["ratio"][0])
        assert heat["complete"] and heat["natural"] == heat["data"] == [cols, rows], figure
        assert heat["box"] == heat["attr"] and min(heat["box"]) > 0, figure
        assert mask is not None and mask["complete"], figure  # the causal mask applied
        mask_rows, mask_cols = len(picture["mask"]), len(picture["mask"][0])
        assert mask["natural"] == mask["data"] == [mask_cols, mask_rows], figure
        assert mask["box"] == mask["attr"] and mask["box"][1] == heat["box"][1], figure
        assert figure["legend"], figure
        worst = figure["worst"]
        assert worst is not None and worst["inside"], figure
        red, _, blue = worst["rgb"]
        assert red > blue + 60, worst  # the worst element is out of tolerance: a warm colour
    assert shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def gradient_and_statistic_reports(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real failing runs: a backward that forgets the causal mask (dK against the mask
    transposed, torch's LayerNorm bias gradient in bfloat16 beside it) and an attention whose
    P·V sums in bfloat16 while float32 is declared, which only the error statistic sees."""
    pytest.importorskip("torch")
    import corpus

    from transpec.adapters.torch import TorchAdapter
    from transpec.htmlreport import write_html
    from transpec.runs import run

    where = tmp_path_factory.mktemp("html-gradients")
    backward = run(
        corpus.entry("attention_grad_causal_forgotten").make(),
        components=["attention"],
        properties=["grad_equivalence_k"],
        dtypes=["float32"],
        failures_dir=None,
        gradients=True,
    )
    torch_norm = run(
        TorchAdapter(),
        components=["layer_norm"],
        properties=["grad_equivalence_bias"],
        dtypes=["bfloat16"],
        failures_dir=None,
        gradients=True,
    )
    statistic = run(
        corpus.entry("attention_low_precision_pv").make(),
        components=["attention"],
        properties=["error_statistic"],
        dtypes=["bfloat16"],
        failures_dir=None,
    )
    pages = []
    for name, result in (
        ("gradients", backward),
        ("torch-norm", torch_norm),
        ("statistic", statistic),
    ):
        assert [v.status for v in result.verdicts] == ["failed"], name
        pages.append(where / f"{name}.html")
        write_html(result, pages[-1])
    return pages


def test_gradient_and_statistic_failures_render_in_chromium(
    gradient_and_statistic_reports: list[Path], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    shots = []
    with _chromium_page(tmp_path) as (page, problems, requests):
        for path in gradient_and_statistic_reports:
            page.goto(path.as_uri(), wait_until="load")
            seen[path.stem] = page.eval_on_selector(
                "section.failure",
                """s => {
                    const box = e => e && e.getBoundingClientRect();
                    const size = e => e && [box(e).width, box(e).height];
                    const heat = s.querySelector('img.heatmap');
                    const mask = s.querySelector('img.mask');
                    const svg = s.querySelector('svg.distribution');
                    const bars = cls => svg ? Array.from(svg.querySelectorAll('rect.' + cls))
                        .filter(r => box(r).height > 0).length : 0;
                    const x = cls => svg && box(svg.querySelector('line.' + cls)).left;
                    return {heat: heat && heat.complete && size(heat),
                            mask: mask && mask.complete && size(mask),
                            caption: s.querySelector('figcaption').textContent,
                            bars: [bars('bar-implementation'), bars('bar-emulated')],
                            lines: svg && [x('rms-emulated'), x('rms-allowed'),
                                           x('rms-implementation')],
                            svg: size(svg)};
                }""",
            )
            shot = _artifacts(tmp_path) / f"transpec-html-{path.stem}.png"
            page.locator("section.failure").first.screenshot(path=str(shot))
            shots.append(shot)
    print("screenshots of the gradient and statistic failures:", *map(str, shots))
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    dk = seen["gradients"]
    assert "the gradient of k" in dk["caption"]
    assert dk["heat"] and dk["mask"] and dk["heat"][1] == dk["mask"][1]  # key rows line up
    norm = seen["torch-norm"]
    assert "the gradient of bias" in norm["caption"] and norm["heat"] and norm["mask"] is None
    stat = seen["statistic"]
    assert stat["heat"] is None and stat["svg"] and min(stat["svg"]) > 100
    assert min(stat["bars"]) > 0  # both distributions drawn
    emulated, allowed, implementation = stat["lines"]
    assert emulated < allowed < implementation  # the implementation's RMS beyond the allowed
    assert all(shot.stat().st_size > 5_000 for shot in shots)
