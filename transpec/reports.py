"""Reports of a conformance run: the header, the terminal table, failure reports, JSON, JUnit XML
(the HTML page is :mod:`transpec.htmlreport`).

* header -- what is under test: the adapter's ``describe()``, its conventions where they differ
  from the canonical ones, dtypes, devices, profile, seed, and the transpec/NumPy/torch versions;
* table -- one row per component × property, one column per dtype (× device when more than one):
  ``ok`` with the worst error-to-tolerance ratio, ``FAILED`` with it, ``ERROR``, or ``skip``;
  with a known-failures file (:mod:`transpec.xfails`), ``xfail`` with the ratio for a listed
  failure and ``XPASS`` for a listed verdict that passed;
* known failures -- each expected failure with its reason, each listed verdict that passed
  ("fixed upstream?");
* sampled rows -- each passing verdict whose long inputs were judged on sampled rows, with
  how many calls were and which rows the last one judged (``judged_rows`` in the JSON);
* failure report -- for each failed case: the shrunk counterexample (shapes, flags, regime), the
  worst element with its error and tolerance and how that tolerance was derived, the saved file
  and the one-line command that replays it;
* JSON -- ``{"transpec_version", "adapter", "settings", "environment", "verdicts", "summary",
  "nothing_tested", "known_failures", "interrupted", "seconds"}`` (``known_failures``: the
  file and its strictness, or null; a listed verdict has status ``xfailed``/``xpassed`` and
  its entry in ``known_failure``) (``nothing_tested``: why the run tested
  nothing it was asked to, or null); a numeric failure's verdict holds its ``picture``
  (``kind`` ``"map"``: :class:`transpec.oracle.engine.picture.Picture`, the error map over the
  output or a gradient and the mask applied; ``"distribution"``:
  :class:`~transpec.oracle.engine.picture.Distribution`, a failed error statistic's two
  distributions);
  non-finite ratios are the strings ``"inf"``/``"nan"``;
* JUnit XML -- one ``<testcase>`` per verdict; failures carry the failure report, skips their
  reason; an expected failure is a ``<skipped type="xfail">`` with its reason and report, a
  listed verdict that passed a pass with an ``XPASS`` note in ``<system-out>`` (a ``<failure
  type="xpass">`` under ``strict``). Text from the implementation (an exception's message) is
  made well-formed XML 1.0 first (:func:`xml_text`: ANSI escapes dropped, forbidden characters
  escaped).

Every report file (JSON, JUnit, HTML) is written atomically (:func:`write_atomically`): a run
stopped or killed while it writes leaves the previous file whole, never half a report.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import stat
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

import transpec

if TYPE_CHECKING:
    from transpec.runs import RunResult, Verdict


# -- environment and header ---------------------------------------------------------------------


def environment() -> dict[str, str | None]:
    """Versions of Python, transpec, NumPy, Hypothesis and (when already imported) torch."""
    import hypothesis

    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "transpec": transpec.__version__,
        "numpy": np.__version__,
        "hypothesis": hypothesis.__version__,
        "torch": getattr(torch, "__version__", None) if torch is not None else None,
        "platform": platform.platform(),
    }


def header(result: RunResult) -> str:
    """Lines that say what is under test and how it is run."""
    env = environment()
    differences = {
        k: v for k, v in result.conventions.items() if v != _canonical_conventions().get(k)
    }
    conventions = (
        ", ".join(f"{k}={v!r}" for k, v in differences.items()) if differences else "canonical"
    )
    p = result.profile
    versions = f"transpec {env['transpec']}, numpy {env['numpy']}, hypothesis {env['hypothesis']}"
    if env["torch"]:
        versions += f", torch {env['torch']}"
    versions += f", python {env['python']}"
    lines = [
        f"transpec conformance run -- {versions}",
        f"adapter:     {result.adapter}"
        + (f"  [{result.adapter_spec}]" if result.adapter_spec else ""),
        f"conventions: {conventions}",
        f"components:  {', '.join(result.components)}",
        f"dtypes:      {', '.join(result.dtypes)}",
        f"devices:     {', '.join(result.devices)}",
        f"profile:     {p.name} (seed {p.seed}, max {p.max_examples} examples per property"
        + (", database " + p.database if p.database else "")
        + (", CI=true" if p.as_dict()["ci_environment"] else "")
        + ")",
        f"isolation:   {_isolation(result)}",
    ]
    if result.xfails is not None:
        strict = ", strict" if result.xfails.strict else ""
        lines.append(
            f"known failures: {result.xfails.source} ({len(result.xfails.entries)} entries{strict})"
        )
    return "\n".join(lines)


def _isolation(result: RunResult) -> str:
    """Where the implementation runs, for the header."""
    if result.isolation != "process":
        return "none (the implementation runs in this process)"
    limit = result.memory_limit
    cap = f", memory limit {limit / 2**30:.3g} GiB" if limit else ""
    if result.jobs > 1:
        return (
            f"process ({result.jobs} jobs judge the cases at once, each calling the "
            f"implementation in its own worker process{cap})"
        )
    return f"process (the implementation runs in a worker process{cap})"


def _canonical_conventions() -> dict[str, Any]:
    from transpec.spec.conventions import CANONICAL

    return CANONICAL.to_dict()


# -- one verdict --------------------------------------------------------------------------------


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio != ratio:
        return "nan"
    if ratio == float("inf"):
        return "inf"
    return f"{ratio:.2g}" if ratio < 1 else f"{ratio:.3g}"


#: the word of each status in the progress lines and the table
STATUS_WORDS = {
    "passed": "ok",
    "failed": "FAILED",
    "skipped": "skip",
    "error": "ERROR",
    "xfailed": "xfail",
    "xpassed": "XPASS",
}


def progress_line(verdict: Verdict) -> str:
    """One line per verdict, for progress on stderr."""
    status = STATUS_WORDS[verdict.status]
    if verdict.status == "skipped":
        tail = verdict.message
    elif verdict.status == "xfailed":
        tail = f"expected failure ({verdict.known_failure}): {verdict.message}"
    elif verdict.status in ("passed", "xpassed"):
        tail = f"ratio {format_ratio(verdict.ratio)}, {verdict.examples} examples" + (
            f" ({verdict.discarded} discarded)" if verdict.discarded else ""
        )
    else:
        tail = verdict.message
    return f"{status:<6} {verdict.name} ({verdict.seconds:.2f}s) {tail}".rstrip()


def summarize_args(component: str, args: Mapping[str, Any]) -> str:
    """The counterexample in a few lines: shapes, flags, value ranges, the regime it is in."""
    parts: list[str] = []
    for key, value in args.items():
        if isinstance(value, np.ndarray):
            if value.dtype == np.bool_:
                parts.append(
                    f"{key}: bool {tuple(value.shape)} ({int(value.sum())}/{value.size} True)"
                )
            else:
                finite = value[np.isfinite(value)]
                rng = (
                    f"|x| in [{np.abs(finite).min():.3g}, {np.abs(finite).max():.3g}]"
                    if finite.size
                    else "no finite values"
                )
                nonfinite = value.size - finite.size
                extra = f", {nonfinite} non-finite" if nonfinite else ""
                parts.append(f"{key}: {tuple(value.shape)} {rng}{extra}")
        else:
            parts.append(f"{key}={value!r}")
    regime = _regime(component, args)
    text = "; ".join(parts)
    return f"{text}\nregime: {regime}" if regime else text


def _regime(component: str, args: Mapping[str, Any]) -> str:
    """The regime line of a counterexample: the component record's ``"regime"`` hook on
    ``args``, or "" when the record declares none, the name is unknown or the hook raises."""
    from transpec.oracle import components

    try:
        record = components.get(component)
        if "regime" not in record.hooks:
            return ""
        return str(record.hook("regime")(args))
    except Exception:  # the regime line is a convenience; never let it hide a failure
        return ""


def failure_report(
    verdict: Verdict,
    exc: BaseException | None,
    *,
    adapter: str,
    details: str = "",
    examples: int | None = None,
) -> str:
    """The report of one failed (or errored) verdict, as a user reads it."""
    title = "FAILED" if verdict.status == "failed" else "ERROR"
    lines = [f"{title} {verdict.name} -- {adapter}"]
    message = verdict.message
    if verdict.worst is not None and "; worst element" in message:
        message = message.split("; worst element")[0]  # the worst element gets its own lines
    lines.extend(_wrapped(message, "  "))
    for extra in details.splitlines():
        if extra.strip():
            lines.append(f"  {extra}")
    if verdict.counterexample:
        shrunk = "counterexample (shrunk"
        shrunk += f", after {examples} calls)" if examples else ")"
        first, *rest = verdict.counterexample.splitlines()
        lines.append(f"  {shrunk}: {first}")
        lines.extend(f"  {r}" for r in rest)
    if verdict.worst is not None:
        w = verdict.worst
        lines.append(
            f"  worst element {w['index']}: got {_num(w['actual'], 17)}, "
            f"expected {_num(w['expected'], 17)}"
        )
        lines.append(
            f"  |error| = {_num(w['error'])} > tolerance {_num(w['tolerance'])} "
            f"(error/tolerance = {format_ratio(_float(w['ratio']))})"
        )
        lines.append(f"  tolerance derivation: {w['derivation']}")
    if verdict.failure_file:
        lines.append(f"  saved: {verdict.failure_file}")
    if verdict.reproduce_command:
        lines.append(f"  reproduce: {verdict.reproduce_command}")
    return "\n".join(lines)


def _wrapped(text: str, indent: str, width: int = 100) -> list[str]:
    """``text`` wrapped to ``width`` columns for reading, every word kept (a long path or
    token stays whole on its own line)."""
    import textwrap

    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _num(value: Any, digits: int = 4) -> str:
    """A float in ``digits`` significant digits; strings ("inf", "nan") as they are."""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if digits > 4 else f"{value:.3e}"
    return str(value)


# -- the table ----------------------------------------------------------------------------------


def table(result: RunResult) -> str:
    """component × property rows, dtype (× device) columns; a summary line at the end."""
    multi_device = len(result.devices) > 1
    columns: list[tuple[str, str]] = [
        (dtype, device) for device in result.devices for dtype in result.dtypes
    ]
    cells: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
    for v in result.verdicts:
        row = (v.component, v.property)
        if v.status in ("passed", "failed", "xfailed", "xpassed"):
            cell = f"{STATUS_WORDS[v.status]} {format_ratio(v.ratio)}"
        elif v.status == "error":
            cell = "ERROR"
        else:
            cell = "skip"
        cells.setdefault(row, {})[(v.dtype, v.device)] = cell
    head = ["component", "property"] + [
        f"{dtype}/{device}" if multi_device else dtype for dtype, device in columns
    ]
    rows: list[list[str]] = []
    collapsed: set[str] = set()
    for (component, prop), by_col in cells.items():
        if component in collapsed:
            continue
        mine = [v for v in result.verdicts if v.component == component]
        if len(mine) > len(columns) and all(v.status == "skipped" for v in mine):
            # a component the adapter does not provide: one row, not one per property
            n = len({v.property for v in mine})
            rows.append([component, f"({n} properties)"] + ["skip"] * len(columns))
            collapsed.add(component)
            continue
        rows.append([component, prop] + [by_col.get(col, "") for col in columns])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    out.append("")
    out.append(summary_line(result))
    skip_reasons = sorted({v.message for v in result.verdicts if v.status == "skipped"})
    if skip_reasons:
        out.append("skip reasons: " + "; ".join(skip_reasons))
    return "\n".join(out)


def summary_line(result: RunResult) -> str:
    c = result.counts()
    parts = [f"{c['passed']} passed", f"{c['failed']} failed"]
    if c["error"]:
        parts.append(f"{c['error']} errors")
    if c["xfailed"]:
        parts.append(f"{c['xfailed']} expected failures")
    if c["xpassed"]:
        parts.append(f"{c['xpassed']} listed but passed")
    parts.append(f"{c['skipped']} skipped")
    passed = [v.ratio for v in result.verdicts if v.status == "passed" and v.ratio is not None]
    worst = f", worst passing ratio {format_ratio(max(passed))}" if passed else ""
    state = " (INTERRUPTED)" if result.interrupted else ""
    return f"{', '.join(parts)} in {result.seconds:.1f}s{worst}{state}"


def failures_section(result: RunResult) -> str:
    return "\n\n".join(v.report for v in result.failures if v.report)


def sampled_rows_section(result: RunResult) -> str:
    """The passing verdicts whose long inputs were judged on sampled rows, and which rows
    ("" when none was)."""
    sampled = [v for v in result.verdicts if v.status == "passed" and v.judged_rows]
    if not sampled:
        return ""
    lines = ["judged on sampled rows (long inputs; the implementation ran on the whole input):"]
    for v in sampled:
        lines.append(f"  {v.name}: {v.judged_rows}")
    return "\n".join(lines)


def known_failures_section(result: RunResult) -> str:
    """The verdicts a known-failures file listed: expected failures with their reason and
    summary, listed verdicts that passed ("fixed upstream?"); "" without such a file."""
    if result.xfails is None:
        return ""
    lines: list[str] = []
    xfailed = [v for v in result.verdicts if v.status == "xfailed"]
    if xfailed:
        lines.append(f"expected failures ({len(xfailed)}, listed in {result.xfails.source}):")
        for v in xfailed:
            lines.append(f"  xfail {v.name} -- {v.known_failure}")
            lines.append(f"        {v.message}")
    xpassed = result.xpassed
    if xpassed:
        strict = " (fails the run: --strict-xfails)" if result.xfails.strict else ""
        lines.append(f"listed as known failures but passed, fixed upstream?{strict}:")
        for v in xpassed:
            lines.append(f"  XPASS {v.name} -- {v.known_failure}")
    return "\n".join(lines)


# -- machine-readable reports -------------------------------------------------------------------


def to_json(result: RunResult) -> dict[str, Any]:
    """The JSON report (see the module docstring for the schema)."""
    return {
        "transpec_version": transpec.__version__,
        "adapter": {
            "describe": result.adapter,
            "spec": result.adapter_spec,
            "conventions": result.conventions,
        },
        "settings": {
            **result.profile.as_dict(),
            "components": list(result.components),
            "dtypes": list(result.dtypes),
            "devices": list(result.devices),
            "isolation": result.isolation,
            "memory_limit": result.memory_limit,
            "jobs": result.jobs,
        },
        "environment": environment(),
        "verdicts": [v.to_dict() for v in result.verdicts],
        "summary": result.counts(),
        "nothing_tested": result.nothing_tested,
        "known_failures": (
            None
            if result.xfails is None
            else {"file": result.xfails.source, "strict": result.xfails.strict}
        ),
        "interrupted": result.interrupted,
        "seconds": round(result.seconds, 3),
    }


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file whose bytes replace ``path`` when the ``with`` block ends normally, so
    that ``path`` is at every moment either what it was or the whole new content: written into
    a temporary file in the same directory (the same file system), flushed to disk, then renamed
    over ``path`` (``os.replace``, atomic on POSIX and Windows). A run stopped, killed or out of
    disk space while it writes leaves the previous file whole and no temporary file (it is
    removed on any exception; only a SIGKILL or a power cut between its creation and the rename
    can leave a ``.NAME.*.tmp`` behind, never ``path`` truncated). A symbolic link is written
    through, as an in-place write would; an existing file keeps its permissions, a new one is
    ``0o644``."""
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output`: ``path`` is at every
    moment either what it was or the whole new text."""
    with atomic_output(path) as fh:
        fh.write(text.encode("utf-8"))


def write_json(result: RunResult, path: str | Path) -> None:
    """The JSON report of ``result`` written to ``path`` atomically (:func:`write_atomically`)."""
    data = to_json(result)
    # ASCII with escapes: any text an implementation put in a message stays valid JSON
    write_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


#: ANSI escape sequences (colours, cursor movement) and other ESC-introduced controls
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
#: characters XML 1.0 forbids (its Char production: tab, newline, CR, U+0020-U+D7FF,
#: U+E000-U+FFFD, U+10000-U+10FFFF)
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` as XML 1.0 can carry it: ANSI escape sequences dropped, every other forbidden
    character (NUL, control characters, lone surrogates, U+FFFE/U+FFFF) written as ``\\xNN``
    or ``\\uNNNN``. Messages come from the implementation under test and may hold anything."""
    text = _ANSI.sub("", text)
    return _NOT_XML.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def junit_xml(result: RunResult) -> str:
    """JUnit XML: one testsuite, one testcase per verdict (classname ``transpec.<component>``)."""
    c = result.counts()
    suite = ET.Element(
        "testsuite",
        {
            "name": "transpec",
            "tests": str(c["total"]),
            "failures": str(
                c["failed"]
                + (c["xpassed"] if result.xfails is not None and result.xfails.strict else 0)
            ),
            "errors": str(c["error"]),
            "skipped": str(c["skipped"] + c["xfailed"]),
            "time": f"{result.seconds:.3f}",
        },
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("adapter", result.adapter),
        ("profile", result.profile.name),
        ("seed", str(result.profile.seed)),
        ("isolation", result.isolation),
        ("jobs", str(result.jobs)),
        ("interrupted", str(result.interrupted).lower()),
    ):
        ET.SubElement(props, "property", {"name": key, "value": xml_text(value)})
    for v in result.verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": xml_text(f"transpec.{v.component}"),
                "name": xml_text(f"{v.property}[{v.dtype}-{v.device}]"),
                "time": f"{v.seconds:.3f}",
            },
        )
        if v.status == "failed":
            node = ET.SubElement(case, "failure", {"message": xml_text(v.message)})
            node.text = xml_text(v.report)
        elif v.status == "error":
            node = ET.SubElement(case, "error", {"message": xml_text(v.message)})
            node.text = xml_text(v.report)
        elif v.status == "skipped":
            ET.SubElement(case, "skipped", {"message": xml_text(v.message)})
        elif v.status == "xfailed":
            node = ET.SubElement(
                case,
                "skipped",
                {
                    "type": "xfail",
                    "message": xml_text(f"expected failure ({v.known_failure}): {v.message}"),
                },
            )
            node.text = xml_text(v.report)
        elif v.status == "xpassed":
            note = f"XPASS: {v.message} ({v.known_failure})"
            if result.xfails is not None and result.xfails.strict:
                ET.SubElement(case, "failure", {"type": "xpass", "message": xml_text(note)})
            else:
                ET.SubElement(case, "system-out").text = xml_text(note)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: RunResult, path: str | Path) -> None:
    """The JUnit XML report of ``result`` written to ``path`` atomically
    (:func:`write_atomically`)."""
    write_atomically(path, junit_xml(result))
