"""The property catalogue: every property of every registered component, one verdict each.

Built from the registry (:mod:`transpec.oracle.components`): each record's family module builds
its properties (:class:`~transpec.oracle.engine.property.Property`), listed here component by
component in registry order.
"""

from __future__ import annotations

from collections.abc import Iterable

from transpec.oracle.engine.property import Property


def _catalogue() -> tuple[Property, ...]:
    from transpec.oracle import components

    return tuple(p for record in components.REGISTRY.values() for p in record.property_list())


#: every property of every registered component, component by component in registry order
PROPERTIES: tuple[Property, ...] = _catalogue()


def select(
    components: Iterable[str] | str | None = None, names: Iterable[str] | str | None = None
) -> tuple[Property, ...]:
    """The properties of the given components with the given names (None: all).

    A name may be ``"equivalence"`` (every component's) or ``"attention.causality"``.
    Unknown components or names raise ``ValueError`` listing the known ones.
    """
    comps = (
        {components}
        if isinstance(components, str)
        else (None if components is None else set(components))
    )
    wanted = {names} if isinstance(names, str) else (None if names is None else set(names))
    if comps is not None:
        from transpec.oracle import components as registry

        for component in sorted(comps):
            registry.get(component)
    if wanted is not None:
        known_names = {p.name for p in PROPERTIES} | {p.id for p in PROPERTIES}
        unknown = sorted(wanted - known_names)
        if unknown:
            raise ValueError(
                f"unknown propert(y/ies) {', '.join(unknown)}; known: "
                f"{', '.join(sorted({p.name for p in PROPERTIES}))}"
            )
    chosen = tuple(
        p
        for p in PROPERTIES
        if (comps is None or p.component in comps)
        and (wanted is None or p.name in wanted or p.id in wanted)
    )
    if not chosen:
        raise ValueError(
            f"no property matches components={sorted(comps or [])} names={sorted(wanted or [])}"
        )
    return chosen


def names(component: str | None = None) -> tuple[str, ...]:
    """Property ids (``component.name``), optionally of one component."""
    return tuple(p.id for p in PROPERTIES if component is None or p.component == component)
