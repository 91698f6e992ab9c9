"""Torch plumbing shared by the corpus: conversion, working precision, rounding accumulators.

Every corpus implementation is hand-written torch code that runs in all four dtypes on CPU. The
working ("compute") precision is the input dtype for float64/float32 and float32 for
float16/bfloat16; the result is rounded to the input dtype at the end. Intermediates stay in
the compute precision, so the corpus declares ``Precision(accumulate=c, store=c)`` with ``c``
the compute dtype -- the tightest honest declaration, which the oracle then holds it to.

Conversion (rounding float64 inputs to the dtype under test, and back) is
:class:`transpec.adapters.torch.adapter.TorchAdapter`'s; the corpus adds only the components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from transpec.adapters.base import Precision
from transpec.adapters.torch.adapter import TorchAdapter
from transpec.oracle.engine.dtypes import canonical_dtype
from transpec.spec.conventions import Conventions


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 inputs, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _exact_dtype(dtype: torch.dtype) -> torch.dtype:
    """A dtype in which one operation on two ``dtype`` values, rounded to ``dtype``, is the
    correctly rounded ``dtype`` operation: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sequential_sum(x: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """sum over ``dim`` (keepdim) as a loop of additions, each rounded to ``dtype``.

    This emulates an accumulator held in ``dtype`` (torch's own CPU reductions of float16 and
    bfloat16 accumulate in float32, so they cannot show the defect).
    """
    wide = _exact_dtype(dtype)
    x = x.movedim(dim, -1)
    acc = torch.zeros(x.shape[:-1], dtype=dtype)
    for j in range(x.shape[-1]):
        acc = (acc.to(wide) + x[..., j].to(wide)).to(dtype)
    return acc.unsqueeze(-1).movedim(-1, dim)


def sequential_matmul(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a @ b with each product and each partial sum rounded to ``dtype`` (a ``dtype``
    accumulator without fused multiply-add); the result is in ``dtype``."""
    wide = _exact_dtype(dtype)
    out_shape = (*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    acc = torch.zeros(out_shape, dtype=dtype)
    for j in range(a.shape[-1]):
        prod = (a[..., :, j : j + 1].to(wide) * b[..., j : j + 1, :].to(wide)).to(dtype)
        acc = (acc.to(wide) + prod.to(wide)).to(dtype)
    return acc


def normalized_dims(normalized_shape: Any) -> tuple[int, ...]:
    """The trailing dims named by ``normalized_shape`` (an int or a sequence of ints)."""
    if isinstance(normalized_shape, int):
        return (-1,)
    n = len(tuple(normalized_shape))
    return tuple(range(-n, 0))


class CorpusAdapter(TorchAdapter):
    """Base of every corpus implementation: torch conversion, all four dtypes, CPU.

    It declares the precision the corpus code really uses: everything (sums, dot products,
    intermediates) in the compute dtype of :func:`compute_dtype`.
    """

    framework = "torch"
    #: canonical unless an entry declares otherwise (TorchAdapter declares torch's own choices)
    conventions = Conventions()
    dtypes = ("float64", "float32", "float16", "bfloat16")
    devices = ("cpu",)
    call_timeout = 120.0
    attention_stores_half = False
    #: the one component this implementation provides (set by each component's base class)
    component: str = ""

    def provides(self, component: str) -> bool:
        return component == self.component

    def components(self) -> tuple[str, ...]:
        return (self.component,)

    def precision(self, component: str, dtype: str) -> Precision:
        dtype = canonical_dtype(dtype)
        c = "float32" if dtype in ("float16", "bfloat16") else dtype
        return Precision(accumulate=c, store=c)

    def backward_precision(self, component: str, dtype: str) -> Precision:
        """The backward computes like the forward: everything in the compute dtype."""
        return self.precision(component, dtype)

    def supports(
        self,
        component: str,
        args: Mapping[str, Any],
        *,
        dtype: str | None = None,
        device: str | None = None,
    ) -> str | None:
        """The corpus takes every input the spec defines (a mask together with is_causal too)."""
        return None

    def available_devices(self) -> tuple[str, ...]:
        return ("cpu",)

    def describe(self) -> str:
        return f"{self.name} (torch {torch.__version__}, transpec corpus)"
