"""The regime a kernel's arguments are in, one line for a failure report.

Each function is the ``"regime"`` hook of a kernel record (:mod:`transpec.oracle.components`):
it takes the arguments of one call (keyed by the adapter method's parameters) and returns the
quantities that place it among the regimes the block's properties reach (lengths, logit
magnitudes, masks, |mean|/std, eps), as ``"a, b, c"``. The report that prints the line
(:func:`transpec.reports.summarize_args`) drops it when the hook raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["attention_regime", "norm_regime", "softmax_regime"]


def softmax_regime(args: Mapping[str, Any]) -> str:
    """The row length and the largest finite |x| (nothing when no element is finite)."""
    notes: list[str] = []
    x = np.asarray(args["x"])
    finite = x[np.isfinite(x)]
    if finite.size:
        notes.append(f"row length {x.shape[args.get('dim', -1)]}")
        notes.append(f"max |x| = {np.max(np.abs(finite)):.3g}")
    return ", ".join(notes)


def attention_regime(args: Mapping[str, Any]) -> str:
    """Lq and Lk (decode when Lq = 1), the GQA head ratio, the head dim, the bound
    |scale|·max|q|·max|k|·E on the logits, causal, the kind of mask."""
    notes: list[str] = []
    q, k = np.asarray(args["q"]), np.asarray(args["k"])
    Lq, Lk = q.shape[-2], k.shape[-2]
    notes.append(f"Lq={Lq}, Lk={Lk}" + (" (decode)" if Lq == 1 else ""))
    if q.ndim >= 3 and k.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        notes.append(f"GQA {q.shape[-3]}/{k.shape[-3]} heads")
    notes.append(f"head dim {q.shape[-1]}")
    scale = args.get("scale")
    s = (1.0 / np.sqrt(q.shape[-1])) if scale is None else float(scale)
    if q.size and k.size:
        logits = np.abs(s) * np.max(np.abs(q)) * np.max(np.abs(k)) * q.shape[-1]
        notes.append(f"|logits| <= {logits:.3g}")
    if args.get("is_causal"):
        notes.append("causal")
    mask = args.get("attn_mask")
    if isinstance(mask, np.ndarray):
        notes.append(f"{'bool' if mask.dtype == np.bool_ else 'additive'} mask")
    return ", ".join(notes)


def norm_regime(args: Mapping[str, Any]) -> str:
    """LayerNorm's and RMSNorm's: the number n of normalized elements, the largest |mean|/std
    of a row (all elements finite, n > 1), eps when given."""
    notes: list[str] = []
    x = np.asarray(args["x"])
    shape = args.get("normalized_shape")
    dims = len(shape) if isinstance(shape, (tuple, list)) else 1
    n = int(np.prod(x.shape[x.ndim - dims :])) if x.ndim >= dims else 0
    notes.append(f"n={n} normalized elements")
    if n > 1 and x.size and np.all(np.isfinite(x)):
        rows = x.reshape(-1, n)
        mu = rows.mean(axis=1)
        sd = rows.std(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = np.max(np.where(sd > 0, np.abs(mu) / sd, np.inf))
        notes.append(f"max |mean|/std = {cond:.3g}")
    if args.get("eps") is not None:
        notes.append(f"eps={args['eps']!r}")
    return ", ".join(notes)
