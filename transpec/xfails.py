"""Known failures: verdicts a run expects to fail, listed in a text file, so that a CI gate can
accept reported upstream defects and still fail on everything else.

The file (``transpec check --xfails FILE``, ``pytest --transpec-xfails FILE``; FILE may also
be the name of a file transpec ships, :func:`shipped`, e.g. ``torch-2.13-cpu``) holds one verdict
id a line, each followed by a comment saying why (the upstream issue)::

    # torch 2.13.0, CPU
    attention.equivalence[float32-cpu]              # flash kernel, causal + negative scale: NaN
    multi_head_attention.fast_slow_agreement[*-cpu] # fast path NaN vs slow path 0 (pytorch#190486)

An id is ``component.property[dtype-device]``, as every report names a verdict; ``*`` matches
any run of characters and ``?`` one character (brackets are literal, not a character class).
A line whose first non-blank character is ``#`` is a comment; blank lines are ignored. Every
entry must carry its reason: an entry without one, an id that is not of that form, or a name
without wildcards that transpec does not know (a component, a property of that component, a
dtype) is refused with ``FILE:LINE: ...`` (:class:`~transpec.errors.KnownFailuresFileError`):
a typo would otherwise silently list nothing.

A verdict that a listed id matches becomes:

* ``xfailed`` when it failed: an expected failure, reported with its reason, not failing the run;
* ``xpassed`` when it passed: reported ("fixed upstream?"); it fails the run only under
  ``strict`` (``--strict-xfails``).

Skipped verdicts stay skipped, and an ``error`` (transpec itself raised) stays an error: a
known defect of the implementation never hides a defect of transpec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transpec.errors import KnownFailuresFileError

if TYPE_CHECKING:
    from transpec.runs import Verdict

#: ``component.property[dtype-device]``, each part a name or a pattern without spaces
_ID = re.compile(
    r"^(?P<component>[^\s.\[\]]+)\.(?P<property>[^\s\[\]]+)\[(?P<dtype>[^\s\[\]-]+)-(?P<device>[^\s\[\]]+)\]$"
)
_WILDCARDS = ("*", "?")


@dataclass(frozen=True)
class KnownFailure:
    """One entry: the verdict id pattern, its reason, where it was written."""

    pattern: str
    reason: str
    source: str
    line: int

    @property
    def where(self) -> str:
        """``FILE:LINE`` of the entry."""
        return f"{self.source}:{self.line}"

    def matches(self, verdict_name: str) -> bool:
        """True when ``verdict_name`` (``component.property[dtype-device]``) is listed here."""
        return _compile(self.pattern).fullmatch(verdict_name) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    """``*`` -> any run of characters, ``?`` -> one character, everything else literal."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts))


def _literal(part: str) -> bool:
    return not any(w in part for w in _WILDCARDS)


@dataclass(frozen=True)
class KnownFailures:
    """The entries of a known-failures file, and whether a listed verdict that passes fails."""

    entries: tuple[KnownFailure, ...]
    source: str
    strict: bool = False

    @classmethod
    def load(cls, path: str | Path, *, strict: bool = False) -> KnownFailures:
        """Read and check ``path`` (a file, or the name of one transpec ships:
        :func:`shipped`); :class:`~transpec.errors.KnownFailuresFileError` with
        ``FILE:LINE: what is wrong`` for a file that cannot be read or an entry that is wrong."""
        source = str(path)
        if not Path(path).exists() and source in shipped():
            path = shipped()[source]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise KnownFailuresFileError(
                f"cannot read the known-failures file {source!r}: {reason}"
            ) from None
        return cls.parse(text, source=source, strict=strict)

    @classmethod
    def parse(cls, text: str, *, source: str = "<xfails>", strict: bool = False) -> KnownFailures:
        """The entries of ``text`` (the file format of the module docstring)."""
        entries: list[KnownFailure] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            pattern, hash_sign, reason = line.partition("#")
            pattern, reason = pattern.strip(), reason.strip()
            where = f"{source}:{number}"
            if not hash_sign or not reason:
                raise KnownFailuresFileError(
                    f"{where}: {pattern!r} needs its reason after '#' (the upstream issue)"
                )
            _check_id(pattern, where)
            entries.append(KnownFailure(pattern, reason, source, number))
        return cls(tuple(entries), source, strict)

    def find(self, verdict_name: str) -> KnownFailure | None:
        """The first entry that lists ``verdict_name``, or None."""
        for entry in self.entries:
            if entry.matches(verdict_name):
                return entry
        return None

    def apply(self, verdict: Verdict) -> None:
        """Mark ``verdict`` ``xfailed``/``xpassed`` when an entry lists it (see the module
        docstring); its ``known_failure`` becomes ``"FILE:LINE: reason"``."""
        if verdict.status not in ("passed", "failed"):
            return
        entry = self.find(verdict.name)
        if entry is None:
            return
        verdict.known_failure = f"{entry.where}: {entry.reason}"
        if verdict.status == "failed":
            verdict.status = "xfailed"
        else:
            verdict.status = "xpassed"
            verdict.message = (
                f"listed as a known failure ({entry.where}) but passed: fixed upstream? "
                + verdict.message
            ).strip()

    def unmatched(self, verdict_names: list[str]) -> list[KnownFailure]:
        """The entries that list none of ``verdict_names`` (stale, or outside the selection)."""
        return [e for e in self.entries if not any(e.matches(n) for n in verdict_names)]


#: the known-failures files transpec ships, next to this module
SHIPPED_DIR = Path(__file__).parent / "known_failures"


def shipped() -> dict[str, Path]:
    """The known-failures files transpec ships, by name (``torch-2.13-cpu``: the file
    ``known_failures/torch-2.13-cpu.txt`` of the package)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.txt"))}


def _check_id(pattern: str, where: str) -> None:
    """Refuse an id that is not ``component.property[dtype-device]`` or that names, without
    wildcards, a component, property or dtype transpec does not know."""
    match = _ID.match(pattern)
    if match is None:
        raise KnownFailuresFileError(
            f"{where}: {pattern!r} is not a verdict id component.property[dtype-device] "
            "('*' and '?' match any characters)"
        )
    from transpec.oracle import components as registry
    from transpec.oracle.catalogue import PROPERTIES
    from transpec.oracle.engine.dtypes import DTYPES

    component, prop, dtype = match["component"], match["property"], match["dtype"]
    if _literal(component):
        if component not in registry.REGISTRY:
            raise KnownFailuresFileError(
                f"{where}: unknown component {component!r}; expected one of "
                f"{', '.join(registry.REGISTRY)}"
            )
        if _literal(prop):
            known = sorted({p.name for p in PROPERTIES if p.component == component})
            if prop not in known:
                raise KnownFailuresFileError(
                    f"{where}: {component} has no property {prop!r}; expected one of "
                    f"{', '.join(known)}"
                )
    if _literal(dtype) and dtype not in DTYPES:
        raise KnownFailuresFileError(
            f"{where}: unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}"
        )
