"""The HTML report of a run: one self-contained file a person opens in a browser.

``transpec check --html FILE``, ``pytest --transpec ... --transpec-html FILE`` and
:func:`write_html` write it. It holds, with no network access and no script:

* the header -- what was under test and how (the text report's header, the environment, every
  convention);
* the verdict table -- one row per component × property × dtype × device with its status,
  worst error-to-tolerance ratio and examples; failures first, each linked to its section;
* a section per failure (and per expected failure) -- the message, the counterexample, and for
  a numeric failure the picture of :mod:`transpec.oracle.engine.picture`: the heat map of
  |got − ref| / tolerance over the output slice holding the worst element (its cell outlined),
  with a logarithmic colour scale on which ratio 1, the tolerance, is the boundary between the
  cool colours (within tolerance) and the warm ones (out of it); the mask that was applied
  (which keys each query could see) on the same query rows; the worst element's derivation; the
  saved case and the command that replays it. A gradient comparison (``grad_equivalence_<name>``)
  has the same map over the gradient (dK and dV beside the mask transposed: key × query; a
  parameter's gradient without a mask); a failed ``error_statistic``, which has no per-element
  tolerance, shows the distributions of |error| / absref of the implementation and of a correct
  kernel emulated at the declared precision, with the two RMS values and the allowed one. A
  failure that is not numeric (raised, crashed, hung, mutated_input, shape, ...) shows its
  message and report.

The pictures are PNG images written inline (``data:`` URIs), one pixel per map cell, enlarged
by the browser without smoothing; maps larger than 128 × 128 were max-pooled when they were
captured, and the section says so. Everything from the implementation (messages, names) is
escaped. :func:`write_html` writes through a temporary file and renames it, so a reader never
sees half a report.
"""

from __future__ import annotations

import base64
import html
import math
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transpec.runs import RunResult, Verdict

#: the ratios below this are drawn in the palest colour of the scale
RATIO_FLOOR = 1e-4
#: the target size in CSS pixels of a map's longer side (cells are 3 to 28 pixels)
TARGET_PIXELS = 360

# the colour scale: within tolerance white -> blue, out of it yellow -> red -> dark red
_COOL = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
_WARM = ((254, 224, 139), (253, 174, 97), (244, 109, 67), (215, 48, 39), (103, 0, 31))
_INFINITE = (0, 0, 0)  # an unbounded ratio: NaN/inf where the reference differs
_NOT_COMPARED = (210, 210, 210)  # both non-finite alike
_VISIBLE, _HIDDEN = np.array((236, 246, 236)), np.array((55, 71, 79))
_BIASED = np.array((255, 193, 7))  # visible, with a finite negative term added


# -- PNG ----------------------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` (height, width, 3) uint8: signature, IHDR, IDAT, IEND."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ValueError(f"png: expected a non-empty (h, w, 3) array, got {pixels.shape}")
    height, width = pixels.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter 0
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(pixels)).decode("ascii")


# -- colours ------------------------------------------------------------------------------------


def _ramp(stops: Sequence[tuple[int, int, int]], t: np.ndarray) -> np.ndarray:
    """Colours at positions ``t`` in [0, 1] along ``stops`` (linear between them)."""
    t = np.clip(t, 0.0, 1.0) * (len(stops) - 1)
    low = np.minimum(np.floor(t).astype(int), len(stops) - 2)
    frac = (t - low)[..., None]
    table = np.array(stops, dtype=np.float64)
    return table[low] * (1 - frac) + table[low + 1] * frac


def scale_top(ratios: np.ndarray) -> float:
    """The decade the colour scale ends at: 10^k >= the largest finite ratio, k >= 1."""
    finite = ratios[np.isfinite(ratios)]
    worst = float(finite.max()) if finite.size else 1.0
    return 10.0 ** max(1, math.ceil(math.log10(worst))) if worst > 10 else 10.0


def ratio_colours(ratios: np.ndarray, top: float) -> np.ndarray:
    """RGB (uint8) of each ratio: log scale, ``RATIO_FLOOR``..1 cool, 1..``top`` warm; a
    ratio of exactly 1 is the last cool colour, anything above it warm."""
    r = np.asarray(ratios, dtype=np.float64)
    out = np.zeros((*r.shape, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(np.maximum(np.where(np.isfinite(r), r, 1.0), RATIO_FLOOR))
    cool = np.isfinite(r) & (r <= 1)
    warm = np.isfinite(r) & (r > 1)
    lo = math.log10(RATIO_FLOOR)
    out[cool] = _ramp(_COOL, (x[cool] - lo) / -lo)
    out[warm] = _ramp(_WARM, x[warm] / math.log10(top))
    out[np.isinf(r)] = _INFINITE
    out[np.isnan(r)] = _NOT_COMPARED
    return np.round(out).astype(np.uint8)


def mask_colours(visible: np.ndarray, biased: np.ndarray | None = None) -> np.ndarray:
    """RGB (uint8) of visible fractions: 1 light (seen), 0 dark (hidden), between grey; the
    fraction ``biased`` (seen, with a finite negative term added) is drawn amber."""
    f = np.clip(np.nan_to_num(np.asarray(visible, dtype=np.float64), nan=0.0), 0.0, 1.0)
    b = np.zeros_like(f) if biased is None else np.clip(np.asarray(biased, dtype=np.float64), 0, f)
    colours = _HIDDEN * (1 - f)[..., None] + _VISIBLE * (f - b)[..., None] + _BIASED * b[..., None]
    return np.round(colours).astype(np.uint8)


# -- the page -----------------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2329; --muted: #5b6670; --line: #d8dde2; --bad: #c62828; --ok: #2e7d32;
        --warn: #b26a00; --bg: #ffffff; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 24px 32px 64px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 10px; }
h3 { font-size: 16px; margin: 0; word-break: break-all; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
                   font-size: 12.5px; }
pre { white-space: pre-wrap; word-break: break-word; background: var(--panel); padding: 10px 12px;
      border-radius: 6px; border: 1px solid var(--line); margin: 6px 0; }
.summary { font-size: 15px; margin: 6px 0 14px; }
.banner { padding: 8px 12px; border-radius: 6px; margin: 8px 0; font-weight: 600; }
.banner.bad { background: #fdecea; color: var(--bad); }
.banner.ok { background: #e8f5e9; color: var(--ok); }
.banner.warn { background: #fff4e5; color: var(--warn); }
table.header { border-collapse: collapse; }
table.header th { text-align: left; color: var(--muted); font-weight: 500; padding: 2px 16px 2px 0;
                  vertical-align: top; white-space: nowrap; }
table.header td { padding: 2px 0; }
table.verdicts { border-collapse: collapse; width: 100%; }
table.verdicts th, table.verdicts td { border-bottom: 1px solid var(--line); padding: 4px 8px;
                                       text-align: left; vertical-align: top; }
table.verdicts th { background: var(--panel); position: sticky; top: 0; }
table.verdicts td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.verdicts td.msg { color: var(--muted); max-width: 520px; overflow-wrap: anywhere; }
.status { display: inline-block; min-width: 54px; text-align: center; border-radius: 10px;
          padding: 0 8px; font-size: 12px; font-weight: 600; }
.s-failed, .s-error, .s-xpassed { background: #fdecea; color: var(--bad); }
.s-xfailed { background: #fff4e5; color: var(--warn); }
.s-passed { background: #e8f5e9; color: var(--ok); }
.s-skipped { background: #eceff1; color: var(--muted); }
tr.row-failed, tr.row-error { background: #fffafa; }
section.failure { border: 1px solid var(--line); border-left: 4px solid var(--bad);
                  border-radius: 6px; padding: 14px 18px; margin: 18px 0; }
section.failure.expected { border-left-color: var(--warn); }
.figures { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; margin: 12px 0; }
figure { margin: 0; } figcaption { color: var(--muted); font-size: 12.5px; max-width: 420px; }
.plot { display: grid; grid-template-columns: min-content max-content; justify-content: start;
        gap: 2px 6px; align-items: center; }
.plot .ylabel { writing-mode: vertical-rl; transform: rotate(180deg); color: var(--muted);
                font-size: 12px; text-align: center; }
.plot .xlabel { grid-column: 2; color: var(--muted); font-size: 12px; text-align: center; }
.frame { position: relative; border: 1px solid #90a4ae; line-height: 0; justify-self: start;
         width: max-content; }
.frame img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
.worst-cell { position: absolute; outline: 2px solid #00e5ff; outline-offset: 1px;
              box-shadow: 0 0 0 3px rgba(0,0,0,.55); pointer-events: none; }
.legend { margin-top: 8px; }
.legend text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.legend .one { font-weight: 700; fill: var(--fg); }
dl.worst { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.worst dt { color: var(--muted); } dl.worst dd { margin: 0; overflow-wrap: anywhere; }
details > summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
a { color: #1565c0; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def anchor(verdict: Verdict) -> str:
    """The id of a verdict's section: its name, with characters other than letters, digits,
    ``-``, ``_`` and ``.`` replaced."""
    return "v-" + re.sub(r"[^A-Za-z0-9_.-]", "_", verdict.name)


#: the order of the table: what needs a look first
_ORDER = {"error": 0, "failed": 1, "xpassed": 2, "xfailed": 3, "passed": 4, "skipped": 5}


def render(result: RunResult) -> str:
    """The whole report as one HTML document."""
    from transpec.reports import summary_line

    c = result.counts()
    if result.interrupted:
        banner = ("warn", "INTERRUPTED: the verdicts below are those made before the run stopped")
    elif result.failures or (result.xfails is not None and result.xfails.strict and c["xpassed"]):
        banner = ("bad", f"FAILED: {len(result.failures)} verdict(s) need a look")
    elif result.nothing_tested:
        banner = ("warn", f"nothing tested: {result.nothing_tested}")
    else:
        banner = ("ok", "every verdict passed")
    shown = [v for v in result.verdicts if v.status in ("failed", "error", "xfailed")]
    shown.sort(key=lambda v: _ORDER[v.status])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>transpec: {_e(result.adapter)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>transpec conformance report: {_e(result.adapter)}</h1>",
        f'<div class="summary">{_e(summary_line(result))}</div>',
        f'<div class="banner {banner[0]}" id="verdict-banner">{_e(banner[1])}</div>',
        _header(result),
        _verdict_table(result),
    ]
    if shown:
        parts.append(f'<h2 id="failures">Failures ({len(shown)})</h2>')
        parts.extend(_failure(v) for v in shown)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _header(result: RunResult) -> str:
    from transpec.reports import _canonical_conventions, _isolation, environment

    env = environment()
    p = result.profile
    canonical = _canonical_conventions()
    differences = {k: v for k, v in result.conventions.items() if v != canonical.get(k)}
    rows: list[tuple[str, str]] = [
        ("adapter", result.adapter + (f"  [{result.adapter_spec}]" if result.adapter_spec else "")),
        (
            "conventions",
            ", ".join(f"{k}={v!r}" for k, v in differences.items()) if differences else "canonical",
        ),
        ("components", ", ".join(result.components) or "-"),
        ("dtypes", ", ".join(result.dtypes) or "-"),
        ("devices", ", ".join(result.devices) or "-"),
        (
            "profile",
            f"{p.name} (seed {p.seed}, max {p.max_examples} examples per property"
            + (", database " + p.database if p.database else "")
            + (", CI=true" if p.as_dict()["ci_environment"] else "")
            + ")",
        ),
        ("isolation", _isolation(result)),
    ]
    if result.xfails is not None:
        strict = ", strict" if result.xfails.strict else ""
        rows.append(
            (
                "known failures",
                f"{result.xfails.source} ({len(result.xfails.entries)} entries{strict})",
            )
        )
    versions = ", ".join(f"{k} {v}" for k, v in env.items() if v and k != "platform")
    rows.append(("versions", versions))
    rows.append(("platform", str(env["platform"])))
    rows.append(("duration", f"{result.seconds:.1f} s"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    every = "".join(
        f"<tr><th class='mono'>{_e(k)}</th><td class='mono'>{_e(repr(v))}</td></tr>"
        for k, v in result.conventions.items()
    )
    return (
        '<h2 id="header">Under test</h2>'
        f'<table class="header">{body}</table>'
        f"<details><summary>every convention the run judged under</summary>"
        f'<table class="header">{every}</table></details>'
    )


def _verdict_row(v: Verdict, linked: bool) -> str:
    from transpec.reports import STATUS_WORDS, format_ratio

    name = f"{v.component}.{v.property}"
    name = f'<a href="#{anchor(v)}">{_e(name)}</a>' if linked else _e(name)
    examples = str(v.examples) + (f" (+{v.discarded} discarded)" if v.discarded else "")
    ratio = format_ratio(v.ratio) if v.status != "skipped" else ""
    message = _headline(v.message) if v.status != "passed" else ""
    if v.known_failure:
        message = f"known failure ({v.known_failure}). {message}"
    return (
        f'<tr class="row-{v.status}" data-status="{v.status}" data-name="{_e(v.name)}">'
        f"<td>{name}</td><td>{_e(v.dtype)}-{_e(v.device)}</td>"
        f'<td><span class="status s-{v.status}">{_e(STATUS_WORDS[v.status])}</span></td>'
        f'<td class="num">{_e(ratio)}</td><td class="num">{_e(examples)}</td>'
        f'<td class="num">{v.seconds:.2f}</td><td class="msg">{_e(message)}</td></tr>'
    )


#: the longest message the verdict table shows (the failure's section shows it whole)
TABLE_MESSAGE = 160


def _headline(message: str) -> str:
    """A verdict's message for the table: without the worst element (its section shows it),
    cut at :data:`TABLE_MESSAGE` characters."""
    head = message.split("; worst element")[0]
    return head if len(head) <= TABLE_MESSAGE else head[: TABLE_MESSAGE - 1] + "…"


def _verdict_table(result: RunResult) -> str:
    head = (
        "<tr><th>component.property</th><th>dtype-device</th><th>status</th><th>worst ratio</th>"
        "<th>examples</th><th>seconds</th><th>message</th></tr>"
    )
    ordered = sorted(result.verdicts, key=lambda v: _ORDER[v.status])  # stable: plan order kept
    ran = [v for v in ordered if v.status != "skipped"]
    skipped = [v for v in ordered if v.status == "skipped"]
    linked = ("failed", "error", "xfailed")
    rows = "".join(_verdict_row(v, v.status in linked) for v in ran)
    out = f'<h2 id="verdicts">Verdicts</h2><table class="verdicts" id="verdict-table">{head}{rows}'
    out += "</table>"
    if skipped:
        srows = "".join(_verdict_row(v, False) for v in skipped)
        out += (
            f"<details><summary>{len(skipped)} skipped verdict(s)</summary>"
            f'<table class="verdicts">{head}{srows}</table></details>'
        )
    return out


def _failure(v: Verdict) -> str:
    from transpec.reports import STATUS_WORDS

    expected = v.status == "xfailed"
    parts = [
        f'<section class="failure{" expected" if expected else ""}" id="{anchor(v)}"'
        f' data-kind="{_e(v.failure_kind or "")}">',
        f'<h3><span class="status s-{v.status}">{_e(STATUS_WORDS[v.status])}</span> '
        f"{_e(v.name)}</h3>",
    ]
    if v.known_failure:
        parts.append(f"<p>expected failure, listed in {_e(v.known_failure)}</p>")
    kind = v.failure_kind or ""
    message = v.message
    if v.worst is not None:  # the worst element gets its own block below
        message = message.split("; worst element")[0]
    parts.append(f'<p><b>{_e(_kind_words(kind))}</b></p><pre class="message">{_e(message)}</pre>')
    if v.counterexample:
        parts.append(f"<p>counterexample (shrunk)</p><pre>{_e(v.counterexample)}</pre>")
    if v.picture:
        parts.append(_pictures(v.picture))
    if v.worst is not None:
        parts.append(_worst(v.worst))
    if v.failure_file:
        parts.append(f"<p>saved: <code>{_e(v.failure_file)}</code></p>")
    if v.reproduce_command:
        parts.append(f'<p>reproduce:</p><pre class="reproduce">{_e(v.reproduce_command)}</pre>')
    if v.report:
        parts.append(
            f"<details><summary>the text report</summary><pre>{_e(v.report)}</pre></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _kind_words(kind: str) -> str:
    if kind == "violation":
        return "property violated"
    if kind == "internal":
        return "internal error in transpec"
    return f"implementation failure: {kind}" if kind else "failure"


def _worst(w: Mapping[str, Any]) -> str:
    from transpec.reports import _float, _num, format_ratio

    items = [
        ("element", str(w.get("index"))),
        ("got", _num(w.get("actual"), 17)),
        ("expected (float64 reference)", _num(w.get("expected"), 17)),
        ("|error|", _num(w.get("error"))),
        ("tolerance", _num(w.get("tolerance"))),
        ("error / tolerance", format_ratio(_float(w.get("ratio")))),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd class='mono'>{_e(val)}</dd>" for k, val in items)
    return (
        f'<p>worst element</p><dl class="worst">{rows}</dl>'
        f'<p>tolerance derivation</p><pre class="derivation">{_e(w.get("derivation", ""))}</pre>'
    )


def _cell_size(rows: int, cols: int) -> tuple[int, int]:
    """CSS pixels of a map cell (width, height): the longer side near :data:`TARGET_PIXELS`;
    a map of one or two rows (a vector: a bias gradient) may be 2.5 times as wide, so that its
    cells stay wide enough to see under the worst cell's outline."""

    def side(n: int, target: int = TARGET_PIXELS) -> int:
        return int(min(28, max(3, target // max(n, 1))))

    return side(cols, TARGET_PIXELS * 5 // 2 if rows <= 2 else TARGET_PIXELS), side(rows)


def _pictures(picture: Mapping[str, Any]) -> str:
    """The heat map and its legend, and the mask, side by side (a failed error statistic: its
    two distributions, :func:`_distribution`)."""
    if picture.get("kind") == "distribution":
        return _distribution(picture)
    ratio = np.array(
        [[float(x) for x in row] for row in picture["ratio"]], dtype=np.float64
    ).reshape(len(picture["ratio"]), -1)
    rows, cols = ratio.shape
    top = scale_top(ratio)
    mask = picture.get("mask")
    mask_array = (
        None
        if mask is None
        else np.array(mask, dtype=np.float64).reshape(len(mask), -1)
        if len(mask)
        else None
    )
    cell_w, cell_h = _cell_size(rows, cols)
    if mask_array is not None:
        cell_h = min(cell_h, _cell_size(mask_array.shape[0], mask_array.shape[1])[1])
    shape = picture["shape"]
    of = picture.get("of", "the output")
    where = (
        f"slice [{', '.join(map(str, picture['slice']))}, :, :] of {of} {tuple(shape)}"
        if picture["slice"]
        else f"{of} {tuple(shape)}"
    )
    pool = picture["pool"]
    pooled = (
        f"; max-pooled over blocks of {pool[0]} × {pool[1]} elements (each cell shows its "
        "worst element)"
        if tuple(pool) != (1, 1)
        else ""
    )
    judged = (
        f"; judged query rows {_compact(picture['rows'])}"
        if picture.get("rows") is not None
        else ""
    )
    row_name, col_name = _axis_labels(picture, picture["axes"], picture.get("plane"))
    worst_cell = picture.get("worst")
    marker = ""
    if worst_cell is not None:
        r, c = worst_cell
        marker = (
            f'<div class="worst-cell" style="left:{c * cell_w}px;top:{r * cell_h}px;'
            f'width:{cell_w}px;height:{cell_h}px"></div>'
        )
    heat = (
        '<figure class="heatmap-figure">'
        '<div class="plot">'
        f'<div class="ylabel">{_e(row_name)}</div>'
        f'<div class="frame"><img class="heatmap" alt="error / tolerance map" '
        f'data-rows="{rows}" data-cols="{cols}" width="{cols * cell_w}" height="{rows * cell_h}" '
        f'src="{_data_uri(ratio_colours(ratio, top))}">{marker}</div>'
        f'<div class="xlabel">{_e(col_name)} →</div></div>'
        f"{_legend(top)}"
        f"<figcaption>|got − ref| / tolerance over {_e(where)}{_e(pooled)}{_e(judged)}; "
        "the worst element outlined"
        + (f"; {_e(picture['note'])}" if picture.get("note") else "")
        + "</figcaption></figure>"
    )
    if mask_array is None:
        return f'<div class="figures">{heat}</div>'
    bias = picture.get("mask_bias")
    bias_array = None if not bias else np.array(bias, dtype=np.float64).reshape(mask_array.shape)
    mrows, mcols = mask_array.shape
    mcell_w = _cell_size(mrows, mcols)[0]
    mpool = picture.get("mask_pool", (1, 1))
    mpooled = (
        f"; averaged over blocks of {mpool[0]} × {mpool[1]} (grey: partly visible)"
        if tuple(mpool) != (1, 1)
        else ""
    )
    mrow, mcol = _axis_labels(
        picture, picture.get("mask_axes", ("query", "key")), picture.get("mask_plane")
    )
    mask_figure = (
        '<figure class="mask-figure">'
        '<div class="plot">'
        f'<div class="ylabel">{_e(mrow)}</div>'
        f'<div class="frame"><img class="mask" alt="mask applied" data-rows="{mrows}" '
        f'data-cols="{mcols}" width="{mcols * mcell_w}" height="{mrows * cell_h}" '
        f'src="{_data_uri(mask_colours(mask_array, bias_array))}"></div>'
        f'<div class="xlabel">{_e(mcol)} →</div></div>'
        f"{_mask_legend(bias_array is not None)}"
        f"<figcaption>the mask applied: {_e(_mask_words(picture))}"
        f"{_e(mpooled)}; {_e(picture.get('mask_note', ''))}</figcaption></figure>"
    )
    return f'<div class="figures">{heat}{mask_figure}</div>'


#: the colours of the error statistic's two distributions
_IMPL_COLOUR, _EMULATED_COLOUR = "#d7301f", "#2171b5"


def _distribution(picture: Mapping[str, Any]) -> str:
    """A failed error statistic: the histograms of log10(|error| / absref) of the
    implementation and of the correct kernel emulated at the declared precision, on one axis,
    with the implementation's RMS, the emulated RMS and the allowed RMS (threshold × emulated)
    marked, and the figures beside them (:class:`transpec.oracle.engine.picture.Distribution`).

    The statistic has no per-element tolerance to map: it fails on the typical error, so the
    picture shows the two distributions whose RMS values it compares."""
    from transpec.reports import _num

    edges = [float(e) for e in picture["edges"]]
    impl = [int(n) for n in picture["implementation"]]
    emu = [int(n) for n in picture["emulated"]]
    left, right, top_pad, plot_h, width = 44, 16, 48, 170, 560
    plot_w = width - left - right
    lo, hi = edges[0], edges[-1]
    span = max(hi - lo, 1e-9)

    def x_of(log_value: float) -> float:
        return left + plot_w * (min(max(log_value, lo), hi) - lo) / span

    def share(counts: list[int]) -> list[float]:
        total = sum(counts)
        return [n / total if total else 0.0 for n in counts]

    impl_share, emu_share = share(impl), share(emu)
    peak = max([*impl_share, *emu_share, 1e-9])
    base = top_pad + plot_h

    def bars(values: list[float], colour: str, cls: str) -> str:
        out = []
        for i, value in enumerate(values):
            if value <= 0:
                continue
            x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
            h = plot_h * value / peak
            out.append(
                f'<rect class="{cls}" x="{x0:.1f}" y="{base - h:.1f}" width="{x1 - x0:.1f}" '
                f'height="{h:.1f}" fill="{colour}" fill-opacity="0.45" stroke="{colour}" '
                'stroke-width="1"/>'
            )
        return "".join(out)

    rms, emulated, allowed = (
        float(picture["rms"]),
        float(picture["emulated_rms"]),
        float(picture["allowed_rms"]),
    )
    threshold = float(picture["threshold"])
    # (value, colour, label, class, dashed): each a vertical line with its label above the plot
    lines = [
        (emulated, _EMULATED_COLOUR, "RMS, correct kernel", "rms-emulated", True),
        (allowed, "#000", f"allowed RMS = {threshold:g} × correct", "rms-allowed", False),
        (rms, _IMPL_COLOUR, "RMS, implementation", "rms-implementation", False),
    ]
    lines = [line for line in lines if line[0] > 0]
    xs = [x_of(math.log10(line[0])) for line in lines]
    # labels to the left of their lines on the right of the plot, else to the right; one row
    # each, the row of a label below those of the lines it would cross
    ends = bool(xs) and sum(xs) / len(xs) > left + plot_w * 0.6
    order = sorted(range(len(lines)), key=lambda i: -xs[i] if ends else xs[i])

    def marker(i: int) -> str:
        value, colour, label, cls, dashed = lines[i]
        x, row = xs[i], order.index(i)
        outside = " (off the axis)" if not lo <= math.log10(value) <= hi else ""
        y = 12 + 13 * row
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        return (
            f'<line class="{cls}" x1="{x:.1f}" y1="{y - 9}" x2="{x:.1f}" y2="{base}" '
            f'stroke="{colour}" stroke-width="2.5"{dash}/>'
            f'<text x="{x + (-4 if ends else 4):.1f}" y="{y}" '
            f'text-anchor="{"end" if ends else "start"}" fill="{colour}">'
            f"{_e(label + outside)}</text>"
        )

    ticks = "".join(
        f'<line x1="{x_of(d):.1f}" y1="{base}" x2="{x_of(d):.1f}" y2="{base + 4}" '
        f'stroke="#78909c"/><text x="{x_of(d):.1f}" y="{base + 16}" text-anchor="middle">'
        f"1e{d}</text>"
        for d in range(math.ceil(lo), math.floor(hi) + 1)
    )
    middle = top_pad + plot_h / 2
    svg = "".join(
        [
            f'<svg class="distribution" width="{width}" height="{base + 38}" '
            f'viewBox="0 0 {width} {base + 38}" role="img" data-rms="{rms:.6g}" '
            f'data-allowed="{allowed:.6g}" aria-label="distributions of the relative error: '
            'the implementation and a correct kernel">',
            f'<rect x="{left}" y="{top_pad}" width="{plot_w}" height="{plot_h}" '
            'fill="#fbfcfd" stroke="#cfd8dc"/>',
            bars(emu_share, _EMULATED_COLOUR, "bar-emulated"),
            bars(impl_share, _IMPL_COLOUR, "bar-implementation"),
            *(marker(i) for i in range(len(lines))),
            ticks,
            f'<text x="{left + plot_w / 2:.1f}" y="{base + 32}" text-anchor="middle">'
            "|error| / absref per element (log scale) →</text>",
            f'<text x="12" y="{middle:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {middle:.1f})">share of elements</text>',
            "</svg>",
        ]
    )
    legend = (
        '<svg class="legend distribution-legend" width="420" height="20" viewBox="0 0 420 20" '
        'style="display:block">'
        f'<rect x="0" y="3" width="12" height="12" fill="{_IMPL_COLOUR}" fill-opacity="0.45" '
        f'stroke="{_IMPL_COLOUR}"/><text x="17" y="13">the implementation</text>'
        f'<rect x="150" y="3" width="12" height="12" fill="{_EMULATED_COLOUR}" '
        f'fill-opacity="0.45" stroke="{_EMULATED_COLOUR}"/>'
        f'<text x="167" y="13">a correct kernel, emulated, on the same inputs</text></svg>'
    )
    exact_impl, exact_emu = (int(n) for n in picture.get("exact", (0, 0)))
    items = [
        ("RMS of |error| / absref, implementation", _num(rms)),
        ("RMS, correct kernel (emulated)", _num(emulated)),
        ("allowed RMS", f"{_num(allowed)} = {threshold:g} × {_num(emulated)}"),
        ("implementation / allowed", f"{rms / allowed:.3g}" if allowed > 0 else "inf"),
        (
            "elements",
            f"{int(picture['elements'])} ({exact_impl} exact; correct kernel: {exact_emu} exact)",
        ),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd class='mono'>{_e(v)}</dd>" for k, v in items)
    note = picture.get("note", "")
    return (
        '<div class="figures"><figure class="distribution-figure">'
        f"{svg}{legend}"
        "<figcaption>No element has a tolerance of its own here: the statistic compares the "
        "typical error. Each histogram is the share of the elements per bin of |error| / absref "
        "(the first bin holds everything below it; exact elements are left out); the check "
        "fails because the implementation's RMS lies beyond the allowed RMS, a fixed multiple of "
        "the RMS of a correct kernel"
        + (f" ({_e(note)})" if note else "")
        + ". A whole distribution shifted right is a systematic defect; a separate tail, a "
        "defect in a few rows or elements.</figcaption></figure>"
        f'<dl class="worst statistic">{rows}</dl></div>'
    )


def _mask_words(picture: Mapping[str, Any]) -> str:
    """What the mask figure shows: query × key, or key × query beside a gradient of the keys."""
    if tuple(picture.get("mask_axes", ("query", "key"))) == ("key", "query"):
        return "the queries that could see each key (light) or not (dark)"
    return "the keys each query could see (light) or not (dark)"


def _axis_labels(
    picture: Mapping[str, Any], axes: Sequence[str], plane: Sequence[int] | None
) -> tuple[str, str]:
    """The names of a map's axes with their extent: ``query 0–62 (45 judged)``, ``key 0–256``."""
    if not plane or not plane[0]:
        return str(axes[0]), str(axes[1])
    rows = picture.get("rows")

    def extent(n: int) -> str:
        return "0" if n == 1 else f"0–{n - 1}"

    if rows:
        row = f"{axes[0]} {rows[0]}–{rows[-1]} ({len(rows)} judged)"
    elif not axes[0] and plane[0] == 1:  # a vector drawn as one row: no row axis to name
        row = ""
    else:
        row = f"{axes[0]} {extent(plane[0])}"
    return row, f"{axes[1]} {extent(plane[1])}"


def _compact(rows: Iterable[int]) -> str:
    from transpec.oracle.kernels.rows import compact

    return str(compact(tuple(int(r) for r in rows)))


def _legend(top: float) -> str:
    """The colour scale as an SVG bar: the cool half (ratio 1e-4 .. 1, within tolerance) and
    the warm half (1 .. ``top``, out of it), a marked boundary at ratio 1, and the two special
    colours (unbounded, not compared)."""
    width, half, y0, bar_h = 300, 150, 16, 14
    lo, hi = math.log10(RATIO_FLOOR), math.log10(top)
    cool = 10.0 ** np.linspace(lo, 0.0, half)
    warm = 10.0 ** np.linspace(hi / half, hi, half)
    uri = _data_uri(ratio_colours(np.concatenate([cool, warm])[None, :], top))
    step = max(1, math.ceil(hi / 5))  # at most 5 labels out of tolerance
    ticks = [(f"1e{d}" if d % 2 == 0 else "", half * (d - lo) / -lo) for d in range(int(lo), 0)]
    ticks += [
        # "10" only where the decades are labelled one by one: it would crowd the bold "1"
        ("10" if d == 1 and step == 1 else f"1e{d}" if d % step == 0 else "", half + half * d / hi)
        for d in range(1, int(hi) + 1)
    ]
    below = y0 + bar_h
    tick_svg = "".join(
        f'<line x1="{x:.1f}" y1="{below}" x2="{x:.1f}" y2="{below + 4}" stroke="#78909c"/>'
        f'<text x="{x:.1f}" y="{below + 15}" text-anchor="{"start" if x == 0 else "middle"}">'
        f"{_e(label)}</text>"
        for label, x in ticks
    )
    side = width + 14
    return (
        f'<svg class="legend" width="{side + 110}" height="{below + 22}" '
        f'viewBox="0 0 {side + 110} {below + 22}" role="img" '
        'aria-label="colour scale of error / tolerance">'
        f'<text x="0" y="{y0 - 4}">← within tolerance</text>'
        f'<text x="{width}" y="{y0 - 4}" text-anchor="end">out of tolerance →</text>'
        f'<image href="{uri}" x="0" y="{y0}" width="{width}" height="{bar_h}" '
        'preserveAspectRatio="none" style="image-rendering:pixelated"/>'
        f'<rect x="0" y="{y0}" width="{width}" height="{bar_h}" fill="none" stroke="#90a4ae"/>'
        f"{tick_svg}"
        f'<line class="tolerance-line" x1="{half}" y1="{y0 - 3}" x2="{half}" y2="{below + 5}" '
        'stroke="#000" stroke-width="2.5"/>'
        f'<text class="one" x="{half}" y="{below + 15}" text-anchor="middle">1</text>'
        f'<rect x="{side}" y="{y0 - 12}" width="12" height="12" fill="rgb{_INFINITE}"/>'
        f'<text x="{side + 16}" y="{y0 - 2}">∞ NaN/inf</text>'
        f'<rect x="{side}" y="{y0 + 6}" width="12" height="12" fill="rgb{_NOT_COMPARED}"/>'
        f'<text x="{side + 16}" y="{y0 + 16}">not compared</text>'
        "</svg>"
    )


def _mask_legend(biased: bool = False) -> str:
    light = "rgb({},{},{})".format(*_VISIBLE)
    dark = "rgb({},{},{})".format(*_HIDDEN)
    amber = "rgb({},{},{})".format(*_BIASED)
    extra = (
        f'<rect x="150" y="3" width="12" height="12" fill="{amber}"/>'
        '<text class="biased" x="167" y="13">visible, finite negative term added</text>'
        if biased
        else ""
    )
    width = 400 if biased else 240
    return (
        f'<svg class="legend mask-legend" width="{width}" height="20" '
        f'viewBox="0 0 {width} 20">'
        f'<rect x="0" y="3" width="12" height="12" fill="{light}" stroke="#90a4ae"/>'
        '<text x="17" y="13">visible</text>'
        f'<rect x="75" y="3" width="12" height="12" fill="{dark}"/>'
        f'<text x="92" y="13">hidden</text>{extra}</svg>'
    )


def write_html(result: RunResult, path: str | Path) -> None:
    """Write :func:`render` of ``result`` to ``path`` atomically: into a temporary file in the
    same directory, then renamed over ``path`` (:func:`transpec.reports.write_atomically`)."""
    from transpec.reports import write_atomically

    write_atomically(path, render(result))


__all__ = ["anchor", "png", "render", "write_html"]
