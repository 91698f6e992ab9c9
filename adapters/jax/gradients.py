"""The backward pass of a JAX adapter: ``jax.vjp`` of the very forward call.

Every component method of a JAX adapter (``jax.nn.dot_product_attention``, a user's
``jax.custom_vjp`` kernel, a bare function on ``--base jax``) is differentiated as its users
differentiate it: the method is wrapped as a function of its float array arguments (and, for a
layer, of the float arrays in ``params``), ``jax.vjp`` runs its forward pass and the pullback
of the cotangent gives one gradient per argument, under the argument's name (a parameter's
under its key in ``params``). A ``custom_vjp`` rule is then the backward that is judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transpec.oracle import components as registry


class JaxGradientsMixin:
    """``vjp`` through ``jax.vjp`` for every component with a registered backward: part of the
    JAX array base, so that any JAX implementation is differentiated as its users do."""

    def provides_gradients(self, component: str) -> bool:
        record = registry.REGISTRY.get(component)
        return record is not None and bool(record.gradients) and self.provides(component)  # type: ignore[attr-defined]

    def vjp(self, component: str, args: Mapping[str, Any], grad_output: Any) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        record = registry.get(component)
        call = dict(args)
        params = dict(call["params"]) if isinstance(call.get("params"), Mapping) else None
        names, primals = [], []
        for name in record.gradients:
            value = call[name] if name in call else (params or {}).get(name)
            if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
                names.append(name)
                primals.append(value)
        method = getattr(self, record.method)

        def forward(*xs: Any) -> Any:
            local = dict(call)
            local_params = dict(params) if params is not None else None
            for name, x in zip(names, xs, strict=True):
                if name in call:
                    local[name] = x
                elif local_params is not None:
                    local_params[name] = x
            if local_params is not None:
                local["params"] = local_params
            return method(**local)

        _, pullback = jax.vjp(forward, *primals)
        grads = pullback(grad_output)
        return dict(zip(names, grads, strict=True))
