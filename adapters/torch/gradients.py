"""The backward pass of a torch adapter: ``torch.autograd.grad`` of the very forward call.

Every component method of a torch adapter (``F.scaled_dot_product_attention``, a user's custom
``torch.autograd.Function``, a corpus kernel) is differentiated as its users differentiate it: the
float inputs it receives are made leaves that require grad, the method is called under
``torch.enable_grad()``, and ``torch.autograd.grad(output, leaves, grad_output)`` gives the
gradients. A leaf the output does not depend on gets zeros (``allow_unused``): a detached input
is then judged like any wrong gradient.

A layer's parameters are leaves too: each float tensor in ``params`` requires grad and its
gradient is returned under its key (``"linear1.weight"``). While the call runs,
:func:`differentiating` is true, so that a module-based implementation (the built-in layers)
routes ``params`` into its module (``torch.func.functional_call``) instead of copying them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from transpec.oracle import components as registry

_DIFFERENTIATING = contextvars.ContextVar("transpec_torch_differentiating", default=False)


def differentiating() -> bool:
    """True inside :meth:`TorchGradientsMixin.vjp`'s forward call."""
    return _DIFFERENTIATING.get()


class TorchGradientsMixin:
    """``vjp`` through autograd for every component with a registered backward: part of the
    torch array base, so that any torch implementation (a built-in, a user's adapter class, a
    bare function on the torch base) is differentiated as its users differentiate it."""

    def provides_gradients(self, component: str) -> bool:
        record = registry.REGISTRY.get(component)
        return record is not None and bool(record.gradients) and self.provides(component)  # type: ignore[attr-defined]

    def vjp(self, component: str, args: Mapping[str, Any], grad_output: Any) -> dict[str, Any]:
        import torch

        record = registry.get(component)
        call = dict(args)
        params = call.get("params")
        params = params if isinstance(params, Mapping) else {}
        leaves: dict[str, Any] = {}
        for name in record.gradients:
            value = call[name] if name in call else params.get(name)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                leaves[name] = value.requires_grad_(True)
        token = _DIFFERENTIATING.set(True)
        try:
            with torch.enable_grad():
                out = getattr(self, record.method)(**call)
        finally:
            _DIFFERENTIATING.reset(token)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise RuntimeError(f"{component}'s output does not depend on its inputs in autograd")
        grads = torch.autograd.grad(
            out, list(leaves.values()), grad_outputs=grad_output, allow_unused=True
        )
        return {
            name: (torch.zeros_like(leaf) if grad is None else grad)
            for (name, leaf), grad in zip(leaves.items(), grads, strict=True)
        }
