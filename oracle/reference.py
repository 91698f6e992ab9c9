"""The float64 reference of any block: the public entry point.

:func:`compute` gives the reference of any registered component on the arguments of its adapter
method, found through the component's registry record (:mod:`transpec.oracle.components`). The
kernels' reference functions, which take keyword arguments and return a :class:`Reference` with
the value, its componentwise absolute-value reference and the terms the tolerance model reads, are
re-exported from :mod:`transpec.oracle.kernels.reference`.

>>> ref = compute("softmax", {"x": x})                    # doctest: +SKIP
>>> ref = attention(q, k, v, is_causal=True)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.oracle.kernels.reference import Reference as Reference
from transpec.oracle.kernels.reference import attention as attention
from transpec.oracle.kernels.reference import layer_norm as layer_norm
from transpec.oracle.kernels.reference import rms_norm as rms_norm
from transpec.oracle.kernels.reference import softmax as softmax
from transpec.spec.conventions import CANONICAL, Conventions

__all__ = ["Reference", "attention", "compute", "layer_norm", "rms_norm", "softmax"]


def compute(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    semantics: Mapping[str, str] | None = None,
) -> Reference:
    """The reference of ``component`` on ``args`` (keyed by the adapter method's parameters)
    under ``conventions``.

    ``dtype`` is the dtype under test; it matters only where the semantics depend on it
    (``rms_norm`` with ``eps=None``, conventions given per dtype, which are resolved for it).
    ``semantics``: a layer's path-dependent choices
    (``Adapter.layer_semantics``).
    """
    from transpec.oracle import components

    resolved = conventions.for_dtype(canonical_dtype(dtype))
    return components.get(component).compute_reference(
        args, conventions=resolved, dtype=dtype, semantics=semantics
    )
