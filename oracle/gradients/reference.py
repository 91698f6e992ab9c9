"""The float64 reference of every kernel's backward pass, and what its tolerance needs.

:func:`compute` takes a component's arguments (as the implementation received them) and the
cotangent ``grad_output`` (the gradient of the loss with respect to the output), and returns a
:class:`GradientReference`: one :class:`~transpec.oracle.kernels.reference.Reference` per
differentiable argument (the registry record's ``gradients``) that is a float array, and the
unit-free arrays the tolerance rules of :mod:`transpec.oracle.gradients.tolerance` are made of
(``context``). The formulas are those of :mod:`transpec.oracle.gradients.vjp`; the conventions are
resolved by the forward reference's own functions, so the forward and the backward references
agree on masks, fully masked rows, the GQA head map and the norm variants.

:func:`compute_highprec` runs the same formulas over 40-digit ``mpmath`` numbers (the check of the
float64 reference, as :mod:`transpec.oracle.kernels.highprec` is the forward's).

Fully masked rows: under ``fully_masked_row="zero"`` the row's weights are 0, so no gradient
flows through it (its queries, and the keys/values/mask entries it would read, get exactly 0 from
it). Under ``"nan"`` its weights are NaN and NaN flows where the formulas take it: the row's
query gradient and mask row, and every key and value gradient of its head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transpec.oracle import components
from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype
from transpec.oracle.gradients import vjp
from transpec.oracle.kernels import reference as kref
from transpec.oracle.kernels.reference import Reference
from transpec.spec.conventions import CANONICAL, Conventions


@dataclass(frozen=True)
class GradientReference:
    """The reference gradients of one backward call.

    ``grads``: argument name -> :class:`Reference` (value: the float64 gradient; abs_value: its
    componentwise absolute-value scale). ``forward``: the forward reference. ``context``: the
    arrays and numbers the tolerance rule of the component reads.
    """

    component: str
    grads: Mapping[str, Reference]
    forward: Reference
    context: Mapping[str, Any] = field(default_factory=dict)


def _cotangent(g: Any, shape: tuple[int, ...], component: str) -> FloatArray:
    arr = kref._as_float_array(g, f"{component}: grad_output")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{component}: grad_output has shape {list(arr.shape)}, expected the output's "
            f"{list(shape)}"
        )
    return arr


def compute(
    component: str,
    args: Mapping[str, Any],
    grad_output: Any,
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    semantics: Mapping[str, str] | None = None,
) -> GradientReference:
    """The reference gradients of ``component`` on ``args`` for the cotangent ``grad_output``
    (the record's ``"vjp_reference"`` hook computes them); ``semantics``: a layer's declared
    path semantics (:meth:`~transpec.adapters.base.Adapter.layer_semantics`)."""
    record = components.get(component)
    function: Callable[..., GradientReference] = record.hook("vjp_reference")
    if record.takes_params:
        return function(
            args,
            grad_output,
            conventions=conventions,
            dtype=canonical_dtype(dtype),
            semantics=semantics,
        )
    kref.check_args(component, args)
    return function(args, grad_output, conventions=conventions, dtype=canonical_dtype(dtype))


def _last(x: Any, dim: int) -> Any:
    return np.moveaxis(np.asarray(x), dim, -1)


def softmax_gradient(
    args: Mapping[str, Any], grad_output: Any, *, conventions: Conventions, dtype: str
) -> GradientReference:
    """x̄ = p ∘ (g − ⟨g, p⟩) along ``dim``; context: ``p``, ``abs_g``, ``gp`` = Σ|g|p per
    slice (all moved to the last axis), ``dim``."""
    dim = int(args.get("dim", -1))
    fwd = kref.softmax(args["x"], dim, conventions=conventions)
    g = _cotangent(grad_output, fwd.value.shape, "softmax")
    p, gl = _last(fwd.value, dim), _last(g, dim)
    with np.errstate(invalid="ignore"):
        dx = vjp.softmax_vjp(p, gl)
        gp = np.sum(np.abs(gl) * np.nan_to_num(p), axis=-1, keepdims=True)
        scale = np.nan_to_num(p) * (np.abs(gl) + gp)
    grad = Reference(
        value=np.moveaxis(dx, -1, dim),
        abs_value=np.moveaxis(scale, -1, dim),
        terms={"row_length": float(p.shape[-1])},
    )
    context = {"p": p, "abs_g": np.abs(gl), "gp": gp, "dim": dim}
    return GradientReference("softmax", {"x": grad}, fwd, context)


def attention_gradient(
    args: Mapping[str, Any], grad_output: Any, *, conventions: Conventions, dtype: str
) -> GradientReference:
    """q̄, k̄, v̄ (and the additive mask's gradient) of attention under ``conventions``.

    Context (at the expanded, broadcast score shape (..., Hq, Lq, Lk)): ``p`` (0 on fully
    masked rows), ``c`` = |α||Q||K|ᵀ + |A| (0 where a fill replaced the score), ``shift`` =
    |T − m| where p > 0, ``abs_q``, ``abs_k``, ``abs_v``, ``abs_g``, ``visible``, ``tanh``
    (softcap only), and the shapes, scale and head map.
    """
    setup = kref.attention_setup(**dict(args), conventions=conventions)
    fwd = kref.attention(**dict(args), conventions=conventions)
    g = _cotangent(grad_output, fwd.value.shape, "attention")
    with np.errstate(invalid="ignore", over="ignore"):
        t = kref.masked_scores(setup)
        _, p, dead = kref.attention_core(setup, scores=t)
        p = np.asarray(p, dtype=np.float64)
        p_flow = np.where(dead, math.nan, p) if setup.fully_masked_row == "nan" else p
        res = vjp.attention_vjp(
            setup.q,
            setup.k,
            setup.v,
            p_flow,
            g,
            scale=setup.scale,
            softcap=setup.softcap,
            visible=np.broadcast_to(setup.visible, p.shape),
            fill=setup.fill,
        )
    k_in = np.asarray(args["k"])
    kv_heads = k_in.shape[-3] if k_in.ndim >= 3 else 1
    mapping = conventions.gqa_mapping

    def kv(x: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        return vjp.reduce_to(vjp.group_sum(x, kv_heads, mapping) if k_in.ndim >= 3 else x, shape)

    q_shape = tuple(np.shape(args["q"]))
    k_shape, v_shape = k_in.shape, tuple(np.shape(args["v"]))
    grads = {
        "q": Reference(vjp.reduce_to(res["dq"], q_shape), np.zeros(q_shape)),
        "k": Reference(kv(res["dk"], k_shape), np.zeros(k_shape)),
        "v": Reference(kv(res["dv"], v_shape), np.zeros(v_shape)),
    }
    mask_shape: tuple[int, ...] | None = None
    if setup.additive is not None:
        mask_shape = tuple(np.shape(args["attn_mask"]))
        grads["attn_mask"] = Reference(vjp.reduce_to(res["dt"], mask_shape), np.zeros(mask_shape))
    with np.errstate(invalid="ignore", over="ignore"):
        abs_q, abs_k = np.abs(setup.q), np.abs(setup.k)
        c = abs(setup.scale) * np.matmul(abs_q, np.swapaxes(abs_k, -1, -2))
        if setup.additive is not None:
            c = c + np.where(np.isfinite(setup.additive), np.abs(setup.additive), 0.0)
        if setup.fill is not None:
            c = np.where(setup.visible, c, 0.0)
        pos = p > 0
        m = np.max(np.where(pos, t, -math.inf), axis=-1, keepdims=True)
        shift = np.where(pos, np.abs(t - m), 0.0)
        cap = None
        if setup.softcap is not None:
            raw = setup.scale * np.matmul(setup.q, np.swapaxes(setup.k, -1, -2))
            cap = np.tanh(raw / setup.softcap)
    context = {
        "p": p,
        "c": np.broadcast_to(c, p.shape),
        "shift": shift,
        "abs_q": abs_q,
        "abs_k": abs_k,
        "abs_v": np.abs(setup.v),
        "abs_g": np.abs(g),
        "visible": np.broadcast_to(setup.visible, p.shape),
        "fill": setup.fill,
        "tanh": cap,
        "softcap": setup.softcap,
        "scale": setup.scale,
        "dead": dead,
        "nan_rows": setup.fully_masked_row == "nan",
        "kv": kv,
        "q_shape": q_shape,
        "mask_shape": mask_shape,
    }
    return GradientReference("attention", grads, fwd, context)


def _norm_setup(args: Mapping[str, Any]) -> tuple[FloatArray, int, FloatArray | None]:
    x = np.asarray(args["x"], dtype=np.float64)
    ns = args["normalized_shape"]
    n_axes = 1 if isinstance(ns, (int, np.integer)) else len(tuple(ns))
    w = args.get("weight")
    return x, n_axes, None if w is None else np.asarray(w, dtype=np.float64)


def layer_norm_gradient(
    args: Mapping[str, Any], grad_output: Any, *, conventions: Conventions, dtype: str
) -> GradientReference:
    """x̄, w̄, b̄ of LayerNorm under ``conventions``; context: ``abs_g``, ``abs_yhat`` = |x − μ|/σ,
    ``kappa``, ``divisor``, ``rows`` (the number of normalized slices w̄ and b̄ sum over)."""
    fwd = kref.layer_norm(**dict(args), conventions=conventions)
    x, n_axes, w = _norm_setup(args)
    g = _cotangent(grad_output, fwd.value.shape, "layer_norm")
    unbiased = conventions.layer_norm_variance == "unbiased"
    inside = conventions.layer_norm_eps == "inside_sqrt"
    eps = float(args.get("eps", 1e-5))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        res = vjp.layer_norm_vjp(x, n_axes, w, eps, g, unbiased=unbiased, eps_inside_sqrt=inside)
        inv = np.asarray(fwd.terms["inv_sigma"])
        abs_yhat = np.asarray(fwd.terms["abs_centered"]) * inv
        kappa = 1.0 if inside else (1.0 / np.asarray(fwd.terms["sd"])) / inv
    n = int(fwd.terms["n"])
    context = {
        "abs_g": np.abs(g),
        "abs_yhat": abs_yhat,
        "kappa": kappa,
        "divisor": float(n - 1 if unbiased else n),
        "rows": float(x.size // n),
        "n_axes": n_axes,
    }
    grads = {"x": Reference(res["x"], np.zeros(x.shape), {"row_length": float(n)})}
    if args.get("weight") is not None:
        grads["weight"] = Reference(res["weight"], np.zeros(res["weight"].shape))
    if args.get("bias") is not None:
        grads["bias"] = Reference(res["bias"], np.zeros(res["bias"].shape))
    return GradientReference("layer_norm", grads, fwd, context)


def rms_norm_gradient(
    args: Mapping[str, Any], grad_output: Any, *, conventions: Conventions, dtype: str
) -> GradientReference:
    """x̄, w̄ of RMSNorm under ``conventions`` (eps=None: the dtype's epsilon, as the forward)."""
    fwd = kref.rms_norm(**dict(args), conventions=conventions, dtype=dtype)
    x, n_axes, w = _norm_setup(args)
    g = _cotangent(grad_output, fwd.value.shape, "rms_norm")
    inside = conventions.rms_norm_eps == "inside_sqrt"
    eps = float(fwd.terms["eps"])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        res = vjp.rms_norm_vjp(
            x,
            n_axes,
            w,
            eps,
            g,
            eps_inside_sqrt=inside,
            one_plus_weight=conventions.rms_norm_weight == "one_plus_w",
        )
        inv = np.asarray(fwd.terms["inv_rms"])
        abs_yhat = np.abs(x) * inv
        kappa = 1.0 if inside else (1.0 / np.sqrt(np.asarray(fwd.terms["ms"]))) / inv
    n = int(fwd.terms["n"])
    context = {
        "abs_g": np.abs(g),
        "abs_yhat": abs_yhat,
        "kappa": kappa,
        "divisor": float(n),
        "rows": float(x.size // n),
        "n_axes": n_axes,
    }
    grads = {"x": Reference(res["x"], np.zeros(x.shape), {"row_length": float(n)})}
    if args.get("weight") is not None:
        grads["weight"] = Reference(res["weight"], np.zeros(res["weight"].shape))
    return GradientReference("rms_norm", grads, fwd, context)


# -- 40 digits: the same formulas over mpmath ---------------------------------------------------


def compute_highprec(
    component: str,
    args: Mapping[str, Any],
    grad_output: Any,
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    digits: int = 40,
) -> dict[str, FloatArray]:
    """The gradients computed with ``digits`` significant digits by the formulas of
    :mod:`transpec.oracle.gradients.vjp` on the forward's high-precision weights (the record's
    ``"vjp_highprec"`` hook); float64 results (rounded once)."""
    import mpmath

    from transpec.oracle.kernels import highprec as hp

    kref.check_args(component, args)
    function: Callable[..., dict[str, Any]] = components.get(component).hook("vjp_highprec")
    with mpmath.workdps(hp._check_digits(digits)):
        out = function(args, hp.to_mp(grad_output), conventions, canonical_dtype(dtype))
        return {k: hp.to_float64(v) for k, v in out.items()}


# -- the kernel records' "vjp_highprec" hooks: (args, mpf cotangent, conventions, dtype) ->
# gradients as object arrays of mpf at the working precision -------------------------------------


def softmax_highprec(
    args: Mapping[str, Any], g: np.ndarray, conventions: Conventions, dtype: str
) -> dict[str, np.ndarray]:
    from transpec.oracle.kernels import highprec as hp

    dim = int(args.get("dim", -1))
    p = np.moveaxis(hp.softmax(args, conventions, dtype), dim, -1)
    return {"x": np.moveaxis(vjp.softmax_vjp(p, _last(g, dim), xp=hp.xp), -1, dim)}


def layer_norm_highprec(
    args: Mapping[str, Any], g: np.ndarray, conventions: Conventions, dtype: str
) -> dict[str, np.ndarray]:
    from transpec.oracle.kernels import highprec as hp

    x, n_axes, w, _ = hp._norm_args(args)
    res = vjp.layer_norm_vjp(
        x,
        n_axes,
        w,
        float(args.get("eps", 1e-5)),
        g,
        unbiased=conventions.layer_norm_variance == "unbiased",
        eps_inside_sqrt=conventions.layer_norm_eps == "inside_sqrt",
        xp=hp.xp,
    )
    return {k: res[k] for k in ("x", "weight", "bias") if k == "x" or args.get(k) is not None}


def rms_norm_highprec(
    args: Mapping[str, Any], g: np.ndarray, conventions: Conventions, dtype: str
) -> dict[str, np.ndarray]:
    from transpec.oracle.kernels import highprec as hp

    x, n_axes, w, _ = hp._norm_args(args)
    res = vjp.rms_norm_vjp(
        x,
        n_axes,
        w,
        kref.rms_norm_eps(args.get("eps"), dtype, conventions),
        g,
        eps_inside_sqrt=conventions.rms_norm_eps == "inside_sqrt",
        one_plus_weight=conventions.rms_norm_weight == "one_plus_w",
        xp=hp.xp,
    )
    return {k: res[k] for k in ("x", "weight") if k == "x" or args.get(k) is not None}


def attention_highprec(
    args: Mapping[str, Any], g: np.ndarray, conventions: Conventions, dtype: str
) -> dict[str, np.ndarray]:
    import mpmath

    from transpec.oracle.kernels import highprec as hp

    setup = kref.attention_setup(**dict(args), conventions=conventions)
    scale: Any = setup.scale
    if args.get("scale") is None:
        scale = 1 / mpmath.sqrt(setup.q.shape[-1])
    mp_setup = kref.AttentionSetup(
        q=hp.to_mp(setup.q),
        k=hp.to_mp(setup.k),
        v=hp.to_mp(setup.v),
        visible=setup.visible,
        additive=None if setup.additive is None else hp.to_mp(setup.additive),
        fill=setup.fill,
        scale=scale,
        softcap=setup.softcap,
        fully_masked_row=setup.fully_masked_row,
        dead=setup.dead,
    )
    _, p, dead = kref.attention_core(mp_setup, xp=hp.xp)
    if setup.fully_masked_row == "nan":
        p = np.where(dead, mpmath.mpf("nan"), p)
    res = vjp.attention_vjp(
        mp_setup.q,
        mp_setup.k,
        mp_setup.v,
        np.asarray(p, dtype=object),
        g,
        scale=scale,
        softcap=setup.softcap,
        visible=np.broadcast_to(setup.visible, np.shape(p)),
        fill=setup.fill,
        xp=hp.xp,
    )
    k_in = np.asarray(args["k"])
    kv_heads = k_in.shape[-3] if k_in.ndim >= 3 else 1

    def kv(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        grouped = vjp.group_sum(x, kv_heads, conventions.gqa_mapping) if k_in.ndim >= 3 else x
        return vjp.reduce_to(grouped, shape)

    out = {
        "q": vjp.reduce_to(res["dq"], tuple(np.shape(args["q"]))),
        "k": kv(res["dk"], k_in.shape),
        "v": kv(res["dv"], tuple(np.shape(args["v"]))),
    }
    if setup.additive is not None:
        out["attn_mask"] = vjp.reduce_to(res["dt"], tuple(np.shape(args["attn_mask"])))
    return out
