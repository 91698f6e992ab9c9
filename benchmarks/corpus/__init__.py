"""The transpec corpus: wrong ("chaff") and right ("wheat") implementations of the blocks.

Every entry is a torch adapter (float64, float32, float16, bfloat16 on CPU) that provides one
component. A chaff carries one defect a real developer could make and names the dtypes in which
that defect can be seen at all; a wheat is correct -- computed another way, or with a
non-canonical convention that it declares. transpec must kill every chaff in every dtype where
its defect is visible and pass every wheat in every dtype (``tests/quality``).

>>> from corpus import CHAFFS, WHEATS, entry
>>> entry("attention_scale_inv_d").make()   # an Adapter
"""

from __future__ import annotations

from transpec.oracle import components

from . import (
    _registry,
    attention,
    backward,
    backward_layers,
    layers,
    masking,
    norms,
    positional,
    softmax,
)
from ._registry import ALL_DTYPES, HALF_DTYPES, Entry, chaff, wheat

#: the components of the core corpus: the kernels (softmax, attention and the norms)
CORE_COMPONENTS: tuple[str, ...] = components.names("kernels")

#: chaffs and wheats of the core components (the kill matrix, calibration and peers use these)
CHAFFS: list[Entry] = [
    e for e in _registry.CHAFFS if e.component in CORE_COMPONENTS and not e.gradients
]
WHEATS: list[Entry] = [
    e for e in _registry.WHEATS if e.component in CORE_COMPONENTS and not e.gradients
]
#: chaffs and wheats of the backward passes, kernels and layers (judged by the backward
#: properties)
BACKWARD_CHAFFS: list[Entry] = [e for e in _registry.CHAFFS if e.gradients]
BACKWARD_WHEATS: list[Entry] = [e for e in _registry.WHEATS if e.gradients]
#: chaffs and wheats of the layer and positional components (``layers``, ``positional``)
LAYER_CHAFFS: list[Entry] = [
    e for e in _registry.CHAFFS if e.component not in CORE_COMPONENTS and not e.gradients
]
LAYER_WHEATS: list[Entry] = [
    e for e in _registry.WHEATS if e.component not in CORE_COMPONENTS and not e.gradients
]

ENTRIES: list[Entry] = (
    CHAFFS + WHEATS + LAYER_CHAFFS + LAYER_WHEATS + BACKWARD_CHAFFS + BACKWARD_WHEATS
)


def entry(name: str) -> Entry:
    """The entry called ``name``; ``KeyError`` listing the known names otherwise."""
    for e in ENTRIES:
        if e.name == name:
            return e
    raise KeyError(f"no corpus entry {name!r}; known: {', '.join(e.name for e in ENTRIES)}")


def select(
    component: str | None = None, kind: str | None = None, *, backward: bool | None = None
) -> list[Entry]:
    """Entries of one component and/or kind ("chaff" or "wheat"), in registration order;
    ``backward=True`` keeps only the backward corpus (a defect in the gradients, a correct
    forward), ``backward=False`` only the forward one, ``None`` both."""
    return [
        e
        for e in ENTRIES
        if (component is None or e.component == component)
        and (kind is None or e.kind == kind)
        and (backward is None or bool(e.gradients) == backward)
    ]


__all__ = [
    "ALL_DTYPES",
    "BACKWARD_CHAFFS",
    "BACKWARD_WHEATS",
    "CHAFFS",
    "CORE_COMPONENTS",
    "ENTRIES",
    "HALF_DTYPES",
    "LAYER_CHAFFS",
    "LAYER_WHEATS",
    "WHEATS",
    "Entry",
    "attention",
    "backward",
    "backward_layers",
    "chaff",
    "entry",
    "layers",
    "masking",
    "norms",
    "positional",
    "select",
    "softmax",
    "wheat",
]
