"""The registry of the corpus: wrong ("chaff") and right ("wheat") implementations.

A *chaff* carries exactly one defect a real developer could make; a *wheat* is correct but
computes the block another way (or declares a non-canonical convention and honours it). Each
entry names its component, says in one line what is wrong (or how it computes), and, for a
chaff, the dtypes in which the defect can be seen at all, with the reason.

Entries are registered by decorating the adapter class::

    @chaff("attention", visible=ALL_DTYPES, why="1/d instead of 1/sqrt(d): logits off by sqrt(d)")
    class AttentionScaleInvD(AttentionBase):
        '''Scale 1/d instead of 1/sqrt(d).'''

The one-line description is the first line of the class docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from transpec.adapters.base import Adapter
from transpec.oracle import components
from transpec.oracle.engine.dtypes import DTYPES

ALL_DTYPES: tuple[str, ...] = DTYPES
HALF_DTYPES: tuple[str, ...] = ("float16", "bfloat16")

A = TypeVar("A", bound=type[Adapter])


@dataclass(frozen=True)
class Entry:
    """One implementation of the corpus.

    ``visible`` is empty for a wheat; for a chaff it lists the dtypes in which its defect can be
    seen at all (the quality tests require a kill in each of them) and ``why`` says why.
    ``gradients``: an entry of the backward pass (its forward is right; it is judged by the
    component's backward properties).
    """

    name: str
    component: str
    kind: str  # "chaff" or "wheat"
    description: str
    adapter: type[Adapter]
    visible: tuple[str, ...] = ()
    why: str = ""
    gradients: bool = False

    def make(self) -> Adapter:
        """A fresh adapter instance of this entry."""
        return self.adapter()

    @property
    def is_chaff(self) -> bool:
        return self.kind == "chaff"


CHAFFS: list[Entry] = []
WHEATS: list[Entry] = []


def _describe(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    if not doc:
        raise ValueError(f"{cls.__name__} needs a docstring: its first line is the description")
    return doc.splitlines()[0].strip()


def _snake(name: str) -> str:
    """CamelCase -> snake_case: "RMSNormKVSwapped" -> "rms_norm_kv_swapped"."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            prev, nxt = name[i - 1], name[i + 1 : i + 2]
            if prev.islower() or prev.isdigit() or (prev.isupper() and nxt.islower()):
                out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _register(
    kind: str, component: str, visible: tuple[str, ...], why: str, gradients: bool = False
) -> Callable[[A], A]:
    components.get(component)
    for d in visible:
        if d not in ALL_DTYPES:
            raise ValueError(f"unknown dtype {d!r}")

    def decorate(cls: A) -> A:
        name = _snake(cls.__name__)
        entry = Entry(
            name=name,
            component=component,
            kind=kind,
            description=_describe(cls),
            adapter=cls,
            visible=visible,
            why=why,
            gradients=gradients,
        )
        registry = CHAFFS if kind == "chaff" else WHEATS
        if any(e.name == name for e in CHAFFS + WHEATS):
            raise ValueError(f"duplicate corpus entry {name!r}")
        cls.name = name
        registry.append(entry)
        return cls

    return decorate


def chaff(
    component: str, *, visible: tuple[str, ...], why: str, gradients: bool = False
) -> Callable[[A], A]:
    """Register a wrong implementation whose defect is visible in ``visible`` dtypes
    (``gradients``: a defect of its backward pass)."""
    if not visible or not why:
        raise ValueError("a chaff names the dtypes where its defect is visible, and why")
    return _register("chaff", component, tuple(visible), why, gradients)


def wheat(component: str, *, gradients: bool = False) -> Callable[[A], A]:
    """Register a correct implementation (computed another way or with declared conventions;
    ``gradients``: a correct backward pass computed another way)."""
    return _register("wheat", component, (), "", gradients)
