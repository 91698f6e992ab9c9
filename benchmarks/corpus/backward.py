r"""Backward passes: textbook gradients, their wrong variants, and right ones computed otherwise.

Every entry is a torch adapter whose forward is the textbook block and whose backward is a
``torch.autograd.Function`` written by hand, one method per step, so that a chaff overrides
exactly the step that carries its defect. transpec judges them through ``torch.autograd.grad``
of the forward call, as their users run them. Closed forms (``transpec derive``):

* softmax: :math:`\bar x = p \circ (g - \langle g, p\rangle)`;
* attention: :math:`\bar V = P^\top \bar O`, :math:`\bar P = \bar O V^\top`,
  :math:`D = \operatorname{rowsum}(\bar O \circ O)`, :math:`\bar S = P \circ (\bar P - D)`
  (the additive mask's gradient), :math:`\bar Q = \alpha \bar S K`,
  :math:`\bar K = \alpha \bar S^\top Q`, summed over each kv head's query heads;
* LayerNorm: :math:`\bar x = (\hat g - \overline{\hat g}
  - \hat y\,\overline{\hat g \hat y})/\sigma`, :math:`\bar w = \sum g \hat y`,
  :math:`\bar b = \sum g`; RMSNorm likewise without the mean.

Everything is computed in the compute dtype (float32 for float16/bfloat16) and each gradient is
rounded to the input dtype once; the corpus declares that precision for the backward too.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from transpec.adapters.base import Precision
from transpec.oracle.engine.dtypes import canonical_dtype

from ._registry import ALL_DTYPES, HALF_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype, normalized_dims, sequential_matmul

NEG_INF = float("-inf")


def _sum_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    while x.dim() > len(shape):
        x = x.sum(dim=0)
    for axis, size in enumerate(shape):
        if size == 1 and x.shape[axis] != 1:
            x = x.sum(dim=axis, keepdim=True)
    return x


class _Function(torch.autograd.Function):
    """forward: ``impl.forward_pass(*inputs) -> (out, saved)``; backward:
    ``impl.backward_pass(saved, grad_out) -> one gradient (or None) per input``."""

    @staticmethod
    def forward(ctx: Any, impl: Any, *inputs: Any) -> torch.Tensor:  # type: ignore[override]
        out, saved = impl.forward_pass(*inputs)
        ctx.impl, ctx.saved = impl, saved
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:  # type: ignore[override]
        return (None, *ctx.impl.backward_pass(ctx.saved, grad_out))


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------


class SoftmaxGradBase(CorpusAdapter):
    """Textbook softmax forward; backward x̄ = p ∘ (g − Σ g p) along ``dim``."""

    component = "softmax"

    def softmax(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return _Function.apply(self, x, dim)

    def forward_pass(self, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, dict[str, Any]]:
        ct = compute_dtype(x.dtype)
        xc = x.to(ct)
        m = xc.amax(dim=dim, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp(xc - m)
        p = e / e.sum(dim=dim, keepdim=True)
        return p.to(x.dtype), {"p": p, "dim": dim, "io": x.dtype}

    def backward_pass(self, saved: dict[str, Any], g: torch.Tensor) -> tuple[Any, ...]:
        p = saved["p"]
        gc = g.to(p.dtype)
        return (self.grad_x(p, gc, self.axis(saved["dim"])).to(saved["io"]), None)

    def axis(self, dim: int) -> int:
        return dim

    def d_term(self, p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
        return (g * p).sum(dim=dim, keepdim=True)

    def grad_x(self, p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
        return p * (g - self.d_term(p, g, dim))


@wheat("softmax", gradients=True)
class SoftmaxGradTextbook(SoftmaxGradBase):
    """Backward p ∘ (g − ⟨g, p⟩) from the stored p, in the compute dtype."""


@wheat("softmax", gradients=True)
class SoftmaxGradJacobian(SoftmaxGradBase):
    """Backward through the explicit Jacobian (diag(p) − p pᵀ) g, one matrix per slice."""

    def grad_x(self, p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
        pl, gl = p.movedim(dim, -1), g.movedim(dim, -1)
        jac = torch.diag_embed(pl) - pl.unsqueeze(-1) * pl.unsqueeze(-2)
        return torch.matmul(jac, gl.unsqueeze(-1)).squeeze(-1).movedim(-1, dim)


@chaff(
    "softmax", visible=ALL_DTYPES, why="every cotangent that is not 0 moves p∘g off", gradients=True
)
class SoftmaxGradNoDTerm(SoftmaxGradBase):
    """Backward p ∘ g: the ⟨g, p⟩ term is missing."""

    def d_term(self, p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.zeros_like(p.sum(dim=dim, keepdim=True))


@chaff(
    "softmax",
    visible=ALL_DTYPES,
    why="the strategies draw softmax over every axis, not only the last",
    gradients=True,
)
class SoftmaxGradDimIgnored(SoftmaxGradBase):
    """Backward always reduces over the last axis, whatever ``dim`` the forward used."""

    def axis(self, dim: int) -> int:
        return -1


@chaff(
    "softmax", visible=ALL_DTYPES, why="D is off by Σ g(1 − p), far above rounding", gradients=True
)
class SoftmaxGradDWithoutP(SoftmaxGradBase):
    """Backward with D = Σ g instead of Σ g p."""

    def d_term(self, p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
        return g.sum(dim=dim, keepdim=True)


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


class AttentionGradBase(CorpusAdapter):
    """Textbook attention forward; FlashAttention-style backward from the stored P and O."""

    component = "attention"

    def scaled_dot_product_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        return _Function.apply(self, q, k, v, attn_mask, is_causal, scale, enable_gqa)

    # -- forward ------------------------------------------------------------------------------

    def forward_pass(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
        scale: float | None,
        enable_gqa: bool,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        io = q.dtype
        ct = compute_dtype(io)
        hq, hkv = q.shape[-3], k.shape[-3]
        if hq != hkv and (not enable_gqa or hq % hkv):
            raise ValueError(f"{hq} query heads cannot share {hkv} kv heads")
        group = hq // hkv
        qc = q.to(ct)
        kc = k.to(ct).repeat_interleave(group, dim=-3)
        vc = v.to(ct).repeat_interleave(group, dim=-3)
        alpha = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        raw = torch.matmul(qc, kc.transpose(-1, -2)) * alpha
        lq, lk = raw.shape[-2], raw.shape[-1]
        causal = torch.ones(lq, lk, dtype=torch.bool).tril() if is_causal else None
        keep = None
        additive = None
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            keep = attn_mask
        elif attn_mask is not None:
            additive = attn_mask.to(ct)
        saved = {
            "q": qc,
            "k": kc,
            "v": vc,
            "raw": raw,
            "causal": causal,
            "keep": keep,
            "additive": additive,
            "alpha": alpha,
            "group": group,
            "hkv": hkv,
            "io": io,
            "mask_shape": None if additive is None else tuple(attn_mask.shape),  # type: ignore[union-attr]
        }
        p = self.weights(self.masked(raw, saved, causal=True, keep=True))
        o = torch.matmul(p, vc)
        saved["p"], saved["o"] = p, o
        return o.to(io), saved

    def masked(
        self, raw: torch.Tensor, saved: dict[str, Any], *, causal: bool, keep: bool
    ) -> torch.Tensor:
        """T: the scores with the causal and boolean masks (-inf) and the additive mask."""
        t = raw
        if causal and saved["causal"] is not None:
            t = t.masked_fill(~saved["causal"], NEG_INF)
        if keep and saved["keep"] is not None:
            t = t.masked_fill(~saved["keep"], NEG_INF)
        if saved["additive"] is not None:
            t = t + saved["additive"]
        return t

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """Row softmax; a row of -inf gives zero weights."""
        m = t.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        e = torch.exp(t - m)
        denom = e.sum(dim=-1, keepdim=True)
        return torch.where(denom > 0, e / denom, torch.zeros_like(e))

    # -- backward -----------------------------------------------------------------------------

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        io = saved["io"]
        g = grad_out.to(saved["q"].dtype)
        p = self.backward_weights(saved)
        dv = self.grad_v(p, g, saved)
        dp = torch.matmul(g, saved["v"].transpose(-1, -2))
        d = self.d_term(g, saved["o"], p, dp)
        ds = self.grad_s(p, dp, d)
        dq = self.grad_q(ds, saved)
        dk = self.grad_k(ds, saved)
        dk, dv = self.group_sum(dk, saved["hkv"]), self.group_sum(dv, saved["hkv"])
        dmask = None
        if saved["additive"] is not None:
            dmask = _sum_to(self.grad_mask(ds, dp, d), saved["mask_shape"]).to(io)
        return (dq.to(io), dk.to(io), dv.to(io), dmask, None, None, None)

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        """P as the forward stored it."""
        return saved["p"]

    def grad_v(self, p: torch.Tensor, g: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(p.transpose(-1, -2), g)

    def d_term(
        self, g: torch.Tensor, o: torch.Tensor, p: torch.Tensor, dp: torch.Tensor
    ) -> torch.Tensor:
        """D = rowsum(dO ∘ O)."""
        return (g * o).sum(dim=-1, keepdim=True)

    def grad_s(self, p: torch.Tensor, dp: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return p * (dp - d)

    def grad_q(self, ds: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(ds, saved["k"]) * saved["alpha"]

    def grad_k(self, ds: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(ds.transpose(-1, -2), saved["q"]) * saved["alpha"]

    def group_sum(self, x: torch.Tensor, hkv: int) -> torch.Tensor:
        """The query heads of kv head j are j*G .. j*G + G − 1: sum them."""
        hq = x.shape[-3]
        if hq == hkv:
            return x
        return x.reshape(*x.shape[:-3], hkv, hq // hkv, *x.shape[-2:]).sum(dim=-3)

    def grad_mask(self, ds: torch.Tensor, dp: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return ds


@wheat("attention", gradients=True)
class AttentionGradTextbook(AttentionGradBase):
    """FlashAttention-style backward (D = rowsum(dO∘O)) from the stored P, compute dtype."""


@wheat("attention", gradients=True)
class AttentionGradRecompute(AttentionGradBase):
    """The backward recomputes P from the scores and the masks instead of storing it."""

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        return self.weights(self.masked(saved["raw"], saved, causal=True, keep=True))


@wheat("attention", gradients=True)
class AttentionGradDFromDP(AttentionGradBase):
    """D computed as Σ_j P_ij dP_ij (the form before FlashAttention's rowsum(dO∘O))."""

    def d_term(
        self, g: torch.Tensor, o: torch.Tensor, p: torch.Tensor, dp: torch.Tensor
    ) -> torch.Tensor:
        return (p * dp).sum(dim=-1, keepdim=True)


@wheat("attention", gradients=True)
class AttentionGradKeyTiles(AttentionGradBase):
    """Blocked backward over key tiles of 8: P of each tile recomputed from the row's
    log-sum-exp, dK and dV per tile, dQ accumulated over the tiles."""

    tile = 8

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        io = saved["io"]
        g = grad_out.to(saved["q"].dtype)
        t = self.masked(saved["raw"], saved, causal=True, keep=True)
        m = t.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        lse = m + torch.log(torch.exp(t - m).sum(dim=-1, keepdim=True))
        d = (g * saved["o"]).sum(dim=-1, keepdim=True)
        dq = torch.zeros_like(saved["q"])
        dks, dvs, dss = [], [], []
        for j0 in range(0, t.shape[-1], self.tile):
            tj = t[..., j0 : j0 + self.tile]
            pj = torch.where(torch.isneginf(lse), torch.zeros_like(tj), torch.exp(tj - lse))
            kj, vj = (
                saved["k"][..., j0 : j0 + self.tile, :],
                saved["v"][..., j0 : j0 + self.tile, :],
            )
            dvs.append(torch.matmul(pj.transpose(-1, -2), g))
            dsj = pj * (torch.matmul(g, vj.transpose(-1, -2)) - d)
            dss.append(dsj)
            dq = dq + torch.matmul(dsj, kj) * saved["alpha"]
            dks.append(torch.matmul(dsj.transpose(-1, -2), saved["q"]) * saved["alpha"])
        dk = self.group_sum(torch.cat(dks, dim=-2), saved["hkv"])
        dv = self.group_sum(torch.cat(dvs, dim=-2), saved["hkv"])
        dmask = None
        if saved["additive"] is not None:
            dmask = _sum_to(torch.cat(dss, dim=-1), saved["mask_shape"]).to(io)
        return (dq.to(io), dk.to(io), dv.to(io), dmask, None, None, None)


@wheat("attention", gradients=True)
class AttentionGradHalfStorageDeclared(AttentionGradBase):
    """P, dP and dS stored in the input dtype, float32 accumulation: declared
    backward_precision (float32, input dtype) for float16/bfloat16."""

    def backward_precision(self, component: str, dtype: str) -> Precision:
        dt = canonical_dtype(dtype)
        acc = "float32" if dt in HALF_DTYPES else dt
        return Precision(accumulate=acc, store=dt)

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        return saved["p"].to(saved["io"]).to(saved["p"].dtype)

    def grad_s(self, p: torch.Tensor, dp: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        io = self._io
        dp_stored = dp.to(io).to(dp.dtype)
        return (p * (dp_stored - d)).to(io).to(dp.dtype)

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        self._io = saved["io"]
        return super().backward_pass(saved, grad_out)


_ALL = ALL_DTYPES


@chaff(
    "attention", visible=_ALL, why="dS = P∘dP is off by P·D, D = rowsum(dO∘O) ≠ 0", gradients=True
)
class AttentionGradNoDTerm(AttentionGradBase):
    """dS = P ∘ dP: the D term (rowsum(dO∘O)) is missing."""

    def d_term(
        self, g: torch.Tensor, o: torch.Tensor, p: torch.Tensor, dp: torch.Tensor
    ) -> torch.Tensor:
        return torch.zeros_like(o[..., :1])


@chaff(
    "attention",
    visible=_ALL,
    why="P·dO has the wrong shape for Lq ≠ Lk and the wrong values for Lq = Lk",
    gradients=True,
)
class AttentionGradDVUntransposed(AttentionGradBase):
    """dV = P dO instead of Pᵀ dO."""

    def grad_v(self, p: torch.Tensor, g: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(p, g)


@chaff("attention", visible=_ALL, why="dQ off by 1/scale wherever scale ≠ ±1", gradients=True)
class AttentionGradDQScaleForgotten(AttentionGradBase):
    """dQ = dS K: the scale is forgotten."""

    def grad_q(self, ds: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(ds, saved["k"])


@chaff("attention", visible=_ALL, why="dQ off by scale wherever scale ≠ ±1", gradients=True)
class AttentionGradDQScaleTwice(AttentionGradBase):
    """dQ = scale² dS K: the scale applied twice."""

    def grad_q(self, ds: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(ds, saved["k"]) * saved["alpha"] ** 2


@chaff("attention", visible=_ALL, why="dK off by 1/scale wherever scale ≠ ±1", gradients=True)
class AttentionGradDKScaleForgotten(AttentionGradBase):
    """dK = dSᵀ Q: the scale is forgotten."""

    def grad_k(self, ds: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(ds.transpose(-1, -2), saved["q"])


@chaff(
    "attention",
    visible=_ALL,
    why="future keys get weight in the backward only: their dK, dV are no longer 0",
    gradients=True,
)
class AttentionGradCausalForgotten(AttentionGradBase):
    """The backward recomputes P without the causal mask (the forward has it)."""

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        return self.weights(self.masked(saved["raw"], saved, causal=False, keep=True))


@chaff(
    "attention",
    visible=_ALL,
    why="masked keys get weight in the backward only",
    gradients=True,
)
class AttentionGradBoolMaskForgotten(AttentionGradBase):
    """The backward recomputes P without the boolean mask (the forward has it)."""

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        return self.weights(self.masked(saved["raw"], saved, causal=True, keep=False))


@chaff("attention", visible=_ALL, why="G − 1 of the G heads' gradients are dropped", gradients=True)
class AttentionGradGQANotSummed(AttentionGradBase):
    """dK, dV of a kv head taken from the first query head of its group, not the sum."""

    def group_sum(self, x: torch.Tensor, hkv: int) -> torch.Tensor:
        hq = x.shape[-3]
        return x if hq == hkv else x[..., :: hq // hkv, :, :]


@chaff(
    "attention",
    visible=_ALL,
    why="the forward reads kv head h // G, the backward sums heads h % Hkv",
    gradients=True,
)
class AttentionGradGQATiledSum(AttentionGradBase):
    """dK, dV summed over the tiled head map (h % Hkv) while the forward interleaves."""

    def group_sum(self, x: torch.Tensor, hkv: int) -> torch.Tensor:
        hq = x.shape[-3]
        if hq == hkv:
            return x
        return x.reshape(*x.shape[:-3], hq // hkv, hkv, *x.shape[-2:]).sum(dim=-4)


@chaff(
    "attention",
    visible=HALF_DTYPES,
    why="a float16/bfloat16 accumulator over Lq queries under a declared float32 one",
    gradients=True,
)
class AttentionGradHalfDVAccumulator(AttentionGradBase):
    """dV = Pᵀ dO accumulated in the input dtype (float32 declared)."""

    def grad_v(self, p: torch.Tensor, g: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        io = saved["io"]
        if io not in (torch.float16, torch.bfloat16):
            return super().grad_v(p, g, saved)
        return sequential_matmul(p.transpose(-1, -2).to(io), g.to(io), io).to(p.dtype)


@chaff(
    "attention",
    visible=_ALL,
    why="the gradient at -inf entries must be exactly 0",
    gradients=True,
)
class AttentionGradMaskNotZeroed(AttentionGradBase):
    """The float mask's gradient is dP − D (the weight P missing) at its -inf entries."""

    def grad_mask(self, ds: torch.Tensor, dp: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return torch.where(ds == 0, dp - d, ds)


@chaff(
    "attention",
    visible=_ALL,
    why="D summed over the queries instead of the value features",
    gradients=True,
)
class AttentionGradDOverQueries(AttentionGradBase):
    """D = Σ_i dO ∘ O over the queries (the wrong axis) instead of over the features."""

    def d_term(
        self, g: torch.Tensor, o: torch.Tensor, p: torch.Tensor, dp: torch.Tensor
    ) -> torch.Tensor:
        return (g * o).sum(dim=-2, keepdim=True).sum(dim=-1, keepdim=True).expand_as(o[..., :1])


@chaff(
    "attention",
    visible=_ALL,
    why="a fully masked row's weights are 0/0 in the backward: NaN where 0 is declared",
    gradients=True,
)
class AttentionGradDeadRowsNaN(AttentionGradBase):
    """The backward recomputes P without the guard for fully masked rows (0/0 = NaN)."""

    def backward_weights(self, saved: dict[str, Any]) -> torch.Tensor:
        t = self.masked(saved["raw"], saved, causal=True, keep=True)
        m = t.amax(dim=-1, keepdim=True)
        e = torch.exp(t - m)
        return e / e.sum(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# LayerNorm and RMSNorm
# ---------------------------------------------------------------------------------------------


class _NormGradBase(CorpusAdapter):
    """A norm's forward in the compute dtype; its backward from the saved statistics."""

    centered = True

    def forward_pass(
        self, x: torch.Tensor, shape: Any, weight: Any, bias: Any, eps: float | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        io = x.dtype
        ct = compute_dtype(io)
        dims = normalized_dims(shape)
        xc = x.to(ct)
        if eps is None:
            eps = float(torch.finfo(io).eps)  # the canonical eps=None: the input dtype's
        if self.centered:
            mu = xc.mean(dim=dims, keepdim=True)
            var = ((xc - mu) ** 2).mean(dim=dims, keepdim=True)
        else:
            mu = torch.zeros_like(xc.sum(dim=dims, keepdim=True))
            var = (xc * xc).mean(dim=dims, keepdim=True)
        rstd = 1.0 / torch.sqrt(var + eps)
        yhat = (xc - mu) * rstd
        w = None if weight is None else weight.to(ct)
        b = None if bias is None else bias.to(ct)
        y = yhat if w is None else yhat * w
        y = y if b is None else y + b
        saved = {
            "x": xc,
            "mu": mu,
            "var": var,
            "rstd": rstd,
            "w": w,
            "b": b,
            "dims": dims,
            "eps": eps,
            "io": io,
        }
        return y.to(io), saved

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        io, dims = saved["io"], saved["dims"]
        g = grad_out.to(saved["x"].dtype)
        yhat = self.yhat(saved)
        gh = g if saved["w"] is None else g * saved["w"]
        dx = self.grad_x(gh, yhat, saved)
        lead = tuple(range(g.dim() - len(dims)))
        dw = None if saved["w"] is None else self.grad_weight(g, yhat, lead).to(io)
        db = None if saved["b"] is None else self.grad_bias(g, lead).to(io)
        return (dx.to(io), None, dw, db, None)

    def yhat(self, saved: dict[str, Any]) -> torch.Tensor:
        return (saved["x"] - saved["mu"]) * self.backward_rstd(saved)

    def backward_rstd(self, saved: dict[str, Any]) -> torch.Tensor:
        return saved["rstd"]

    def grad_x(self, gh: torch.Tensor, yhat: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        dims = saved["dims"]
        m1 = gh.mean(dim=dims, keepdim=True) if self.centered else 0.0
        m2 = (gh * yhat).mean(dim=dims, keepdim=True)
        return self.backward_rstd(saved) * (gh - self.mean_term(m1) - self.projection(yhat, m2))

    def mean_term(self, m1: Any) -> Any:
        return m1

    def projection(self, yhat: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
        return yhat * m2

    def grad_weight(self, g: torch.Tensor, yhat: torch.Tensor, lead: tuple[int, ...]) -> Any:
        return (g * yhat).sum(dim=lead) if lead else g * yhat

    def grad_bias(self, g: torch.Tensor, lead: tuple[int, ...]) -> Any:
        return g.sum(dim=lead) if lead else g


class LayerNormGradBase(_NormGradBase):
    """LayerNorm forward; backward (ĝ − mean ĝ − ŷ mean(ĝŷ))/σ, w̄ = Σ gŷ, b̄ = Σ g."""

    component = "layer_norm"

    def layer_norm(
        self,
        x: torch.Tensor,
        normalized_shape: Any,
        weight: Any = None,
        bias: Any = None,
        eps: float = 1e-5,
    ) -> torch.Tensor:
        return _Function.apply(self, x, normalized_shape, weight, bias, eps)


class RMSNormGradBase(_NormGradBase):
    """RMSNorm forward; backward (ĝ − ŷ mean(ĝŷ))/r, w̄ = Σ gŷ."""

    component = "rms_norm"
    centered = False

    def rms_norm(
        self, x: torch.Tensor, normalized_shape: Any, weight: Any = None, eps: float | None = None
    ) -> torch.Tensor:
        return _Function.apply(self, x, normalized_shape, weight, None, eps)


@wheat("layer_norm", gradients=True)
class LayerNormGradTextbook(LayerNormGradBase):
    """Backward (ĝ − mean ĝ − ŷ mean(ĝŷ))/σ from the saved mean and 1/σ, compute dtype."""


@wheat("layer_norm", gradients=True)
class LayerNormGradAffineForm(LayerNormGradBase):
    """Backward in torch's form x̄ = a·ĝ + b·x + c, with a = 1/σ, b and c per row (float32
    statistics)."""

    def grad_x(self, gh: torch.Tensor, yhat: torch.Tensor, saved: dict[str, Any]) -> torch.Tensor:
        dims, rstd, mu, x = saved["dims"], saved["rstd"], saved["mu"], saved["x"]
        n = 1
        for d in dims:
            n *= x.shape[d]
        ds = (gh * x).sum(dim=dims, keepdim=True)
        db = gh.sum(dim=dims, keepdim=True)
        b = (db * mu - ds) * rstd**3 / n
        c = -b * mu - db * rstd / n
        return rstd * gh + b * x + c


@wheat("layer_norm", gradients=True)
class LayerNormGradFloat64(LayerNormGradBase):
    """Backward in float64 from the input, rounded once to the input dtype."""

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        wide = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in saved.items()}
        x = wide["x"]
        wide["mu"] = x.mean(dim=wide["dims"], keepdim=True)
        var = ((x - wide["mu"]) ** 2).mean(dim=wide["dims"], keepdim=True)
        wide["rstd"] = 1.0 / torch.sqrt(var + wide["eps"])
        return super().backward_pass(wide, grad_out.double())


@wheat("rms_norm", gradients=True)
class RMSNormGradTextbook(RMSNormGradBase):
    """Backward (ĝ − ŷ mean(ĝŷ))/r from the saved 1/r, compute dtype."""


@chaff("layer_norm", visible=ALL_DTYPES, why="x̄ off by mean(ĝ)/σ per slice", gradients=True)
class LayerNormGradNoMeanTerm(LayerNormGradBase):
    """LayerNorm x̄ without the −mean(ĝ) term."""

    def mean_term(self, m1: Any) -> Any:
        return 0.0


@chaff("layer_norm", visible=ALL_DTYPES, why="x̄ off by ŷ·mean(ĝŷ)/σ", gradients=True)
class LayerNormGradNoProjection(LayerNormGradBase):
    """LayerNorm x̄ without the −ŷ·mean(ĝŷ) projection term."""

    def projection(self, yhat: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(yhat)


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="inputs with two or more leading dims: w̄ is off by the size of the others (torch's "
    "autograd sums a gradient of a broadcast shape itself, so only the values can be wrong)",
    gradients=True,
)
class LayerNormGradWeightWrongAxes(LayerNormGradBase):
    """w̄ = Σ gŷ over the first leading dim, averaged over the other leading dims."""

    def grad_weight(self, g: torch.Tensor, yhat: torch.Tensor, lead: tuple[int, ...]) -> Any:
        if len(lead) < 2:
            return super().grad_weight(g, yhat, lead)
        return (g * yhat).sum(dim=0).mean(dim=tuple(range(len(lead) - 1)))


@chaff("layer_norm", visible=ALL_DTYPES, why="b̄ off by the factor 1/rows", gradients=True)
class LayerNormGradBiasMean(LayerNormGradBase):
    """b̄ = mean of g over the rows instead of the sum."""

    def grad_bias(self, g: torch.Tensor, lead: tuple[int, ...]) -> Any:
        return g.mean(dim=lead) if lead else g


@chaff(
    "layer_norm",
    visible=ALL_DTYPES,
    why="1/√var ≠ 1/√(var + eps) where var is within ×10 of eps (the small_variance regime)",
    gradients=True,
)
class LayerNormGradEpsForgotten(LayerNormGradBase):
    """The backward recomputes 1/σ as 1/√var: eps forgotten."""

    def backward_rstd(self, saved: dict[str, Any]) -> torch.Tensor:
        return 1.0 / torch.sqrt(saved["var"])


@chaff("rms_norm", visible=ALL_DTYPES, why="x̄ off by ŷ·mean(ĝŷ)/r", gradients=True)
class RMSNormGradNoProjection(RMSNormGradBase):
    """RMSNorm x̄ without the −ŷ·mean(ĝŷ) projection term."""

    def projection(self, yhat: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(yhat)


@chaff("rms_norm", visible=ALL_DTYPES, why="w̄ off by the factor r", gradients=True)
class RMSNormGradWeightUnnormalized(RMSNormGradBase):
    """w̄ = Σ g·x: the 1/r of ŷ forgotten."""

    def grad_weight(self, g: torch.Tensor, yhat: torch.Tensor, lead: tuple[int, ...]) -> Any:
        x = yhat / self._rstd
        return (g * x).sum(dim=lead) if lead else g * x

    def backward_pass(self, saved: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        self._rstd = saved["rstd"]
        return super().backward_pass(saved, grad_out)
