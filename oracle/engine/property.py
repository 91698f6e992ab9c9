"""A property: one named, separately reported check of one component, and the generic checks.

A :class:`Property` pairs a strategy of arguments (``inputs(dtype)``) with a ``check`` that calls
the implementation through a :class:`~transpec.oracle.engine.harness.Harness` and returns the worst
error-to-tolerance ratio it saw (<= 1 passes) or raises
:class:`~transpec.oracle.engine.outcome.PropertyViolation` /
:class:`~transpec.oracle.engine.outcome.ImplementationFailure`. ``applies(adapter, dtype)`` returns
a reason to skip (component not provided, dtype not declared) or None.

Every block module builds its properties from these pieces: :func:`applies_when_declared`,
:func:`equivalence_check` (one call within its tolerance of the reference),
:func:`shape_dtype_check`, and :func:`example_rng` for the transformations of metamorphic checks
(permutations, perturbations, coefficients), seeded by the bytes of the example so that the same
example always gets the same transformation and a saved failure replays exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from transpec.adapters.base import Adapter
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.engine.harness import Harness, accepts_argument
from transpec.oracle.engine.strategy import Args

Check = Callable[[Harness, Args], float]
Inputs = Callable[[str], "st.SearchStrategy[Args]"]
Applies = Callable[[Adapter, str], "str | None"]


@dataclass(frozen=True)
class Property:
    """One named, separately reported property of one component.

    ``inputs(dtype)`` -> strategy of argument dicts; ``check(harness, args)`` -> worst ratio
    (<= 1 passes), raising :class:`PropertyViolation` or :class:`ImplementationFailure`;
    ``applies(adapter, dtype)`` -> a skip reason or None.
    """

    component: str
    name: str
    summary: str
    inputs: Inputs
    check: Check
    applies: Applies
    #: a property of the backward pass (:mod:`transpec.oracle.gradients`): a run includes it
    #: when gradients are requested (``transpec check --gradients``) or it is named
    backward: bool = False
    #: ``inputs`` takes the run's profile name too (``inputs(dtype, profile=name)``): its sizes
    #: depend on the profile (the long-context regime)
    sized_by_profile: bool = False

    def strategy(self, dtype: str, profile: str = "ci") -> st.SearchStrategy[Args]:
        """The strategy of its arguments in ``dtype`` under the profile named ``profile``."""
        if self.sized_by_profile:
            return self.inputs(dtype, profile=profile)  # type: ignore[call-arg]
        return self.inputs(dtype)

    @property
    def id(self) -> str:
        """``component.name``, e.g. ``"attention.causality"``."""
        return f"{self.component}.{self.name}"


def applies_when_declared(component: str) -> Applies:
    """The skip rule of most properties: ``component`` runs for an adapter that provides it in
    a dtype it declares; otherwise the reason it does not."""

    def applies(adapter: Adapter, dtype: str) -> str | None:
        if not adapter.provides(component):
            return f"{adapter.name} does not provide {component}"
        dt = canonical_dtype(dtype)
        if dt not in tuple(canonical_dtype(d) for d in adapter.dtypes):
            return (
                f"{adapter.name} does not declare dtype {dt} (declares {', '.join(adapter.dtypes)})"
            )
        return None

    return applies


def applies_when_received(component: str, argument: str, applies: Applies) -> Applies:
    """The skip rule of a property whose every example passes ``argument`` (attention's
    ``softcap``, an optional argument the other properties never draw): ``applies``, and
    skipped before anything is drawn when the adapter's method for ``component`` cannot receive
    ``argument`` (no parameter of that name, no ``**kwargs``) -- every example would otherwise
    be discarded by :meth:`Harness.require_supported` one by one. The run's plan asks it, so a
    run, ``transpec reproduce`` and anything else that plans (the corpus's replays) skip alike.
    """
    from transpec.oracle import components

    def applies_received(adapter: Adapter, dtype: str) -> str | None:
        reason = applies(adapter, dtype)
        if reason is not None:
            return reason
        method = getattr(adapter, components.get(component).method, None)
        if method is not None and not accepts_argument(method, argument):
            return (
                f"{adapter.name}'s {component} method takes no {argument} argument, which every "
                "example of this property passes"
            )
        return None

    return applies_received


def example_rng(args: Mapping[str, Any], salt: str) -> np.random.Generator:
    """A generator seeded by the example's bytes and a salt: same example, same draws."""
    crc = zlib.crc32(salt.encode())
    for key in sorted(args):
        value = args[key]
        if isinstance(value, np.ndarray):
            crc = zlib.crc32(np.ascontiguousarray(value).tobytes(), crc)
        else:
            crc = zlib.crc32(repr(value).encode(), crc)
    return np.random.default_rng(crc)


def equivalence_check(component: str) -> Check:
    """The ``equivalence`` property: one call within its tolerance of the reference."""

    def check(harness: Harness, args: Args) -> float:
        return harness.assert_equivalent(harness.call(component, args))

    return check


def shape_dtype_check(component: str) -> Check:
    """The harness checks the native type, dtype and shape of every call; this check makes
    that its verdict on inputs of every shape the strategies reach (ratio 0 when it holds)."""

    def check(harness: Harness, args: Args) -> float:
        harness.call(component, args)
        return 0.0

    return check
