r"""Backward passes of the layers: the feed-forward layer's textbook chain rule, wrong variants
and right ones computed otherwise; torch's modules with one defect put into their backward.

``linear2(φ(linear1(x)))`` as one ``torch.autograd.Function``: the forward is the textbook block,
the backward the chain rule written by hand, one method per step,

* :math:`\bar b_2 = \sum_{rows} g`, :math:`\bar W_2 = g^\top \phi(h)`, :math:`\bar a = g W_2`;
* :math:`\bar h = \bar a \circ \phi'(h)` (relu: 1 where h > 0; GELU: Φ(h) + h φ(h); the tanh
  form's derivative);
* :math:`\bar b_1 = \sum_{rows} \bar h`, :math:`\bar W_1 = \bar h^\top x`,
  :math:`\bar x = \bar h W_1`,

so that a chaff overrides the step that carries its defect. transpec judges them through
``torch.autograd.grad`` of the forward call, with respect to ``x`` and every parameter in
``params``. Everything is computed in the compute dtype (float32 for float16/bfloat16), each
gradient rounded to the input dtype once.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from transpec.adapters.torch.adapter import TorchAdapter

from ._registry import ALL_DTYPES, chaff, wheat
from ._torch import CorpusAdapter, compute_dtype
from .backward import _Function


def _phi(h: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(h)
    return torch.nn.functional.gelu(h, approximate="tanh" if activation == "gelu_tanh" else "none")


def _phi_slope(h: torch.Tensor, activation: str) -> torch.Tensor:
    """φ'(h)."""
    if activation == "relu":
        return (h > 0).to(h.dtype)
    if activation == "gelu_tanh":
        a = math.sqrt(2.0 / math.pi)
        t = torch.tanh(a * (h + 0.044715 * h**3))
        return 0.5 * (1 + t) + 0.5 * h * (1 - t * t) * a * (1 + 3 * 0.044715 * h * h)
    pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    return 0.5 * (1 + torch.erf(h / math.sqrt(2.0))) + h * pdf


class FeedForwardGradBase(CorpusAdapter):
    """Textbook feed-forward forward; the chain rule backward (module docstring)."""

    component = "feed_forward"

    def feed_forward(self, x: torch.Tensor, params: Any, activation: str = "relu") -> Any:
        return _Function.apply(
            self,
            x,
            params["linear1.weight"],
            params.get("linear1.bias"),
            params["linear2.weight"],
            params.get("linear2.bias"),
            activation,
        )

    def work_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return compute_dtype(dtype)

    def forward_pass(
        self, x: Any, w1: Any, b1: Any, w2: Any, b2: Any, activation: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        ct = self.work_dtype(x.dtype)
        xc, w1c, w2c = x.to(ct), w1.to(ct), w2.to(ct)
        h = xc @ w1c.T + (0 if b1 is None else b1.to(ct))
        a = _phi(h, activation)
        y = a @ w2c.T + (0 if b2 is None else b2.to(ct))
        saved = {"x": xc, "w1": w1c, "w2": w2c, "h": h, "a": a, "act": activation}
        saved["dtypes"] = [t.dtype if t is not None else None for t in (x, w1, b1, w2, b2)]
        return y.to(x.dtype), saved

    def hidden(self, s: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, φ(h)) as the forward saved them."""
        return s["h"], s["a"]

    def bias_grad(self, g2: torch.Tensor) -> torch.Tensor:
        return g2.sum(dim=0)

    def w2_grad(self, g2: torch.Tensor, a2: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return g2.T @ a2

    def slope(self, h: torch.Tensor, activation: str) -> torch.Tensor:
        return _phi_slope(h, activation)

    def w1_grad(self, gh2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return gh2.T @ x2

    def backward_pass(self, s: dict[str, Any], grad_out: torch.Tensor) -> tuple[Any, ...]:
        h, a = self.hidden(s)
        g = grad_out.to(h.dtype)
        m, n = s["w2"].shape[0], s["w1"].shape[0]
        g2, a2, h2 = g.reshape(-1, m), a.reshape(-1, n), h.reshape(-1, n)
        x2 = s["x"].reshape(-1, s["x"].shape[-1])
        gb2 = self.bias_grad(g2)
        gw2 = self.w2_grad(g2, a2, h2)
        gh = (g @ s["w2"]) * self.slope(h, s["act"])
        gh2 = gh.reshape(-1, n)
        gb1 = self.bias_grad(gh2)
        gw1 = self.w1_grad(gh2, x2)
        gx = gh @ s["w1"]
        dx, dw1, db1, dw2, db2 = s["dtypes"]
        return (
            gx.to(dx),
            gw1.to(dw1),
            None if db1 is None else gb1.to(db1),
            gw2.to(dw2),
            None if db2 is None else gb2.to(db2),
            None,
        )


# -- wheats --------------------------------------------------------------------------------------


@wheat("feed_forward", gradients=True)
class FeedForwardGradTextbook(FeedForwardGradBase):
    """The chain rule on the saved hidden activations."""


@wheat("feed_forward", gradients=True)
class FeedForwardGradRecompute(FeedForwardGradBase):
    """The hidden layer recomputed in the backward from x and linear1 instead of saved."""

    def forward_pass(self, *args: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        y, s = super().forward_pass(*args)
        s["b1"] = args[2]
        del s["h"], s["a"]
        return y, s

    def hidden(self, s: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        b1 = s["b1"]
        h = s["x"] @ s["w1"].T + (0 if b1 is None else b1.to(s["x"].dtype))
        return h, _phi(h, s["act"])


@wheat("feed_forward", gradients=True)
class FeedForwardGradFloat64(FeedForwardGradBase):
    """Forward and backward in float64, each output rounded once."""

    def work_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float64


# -- chaffs --------------------------------------------------------------------------------------


@chaff(
    "feed_forward",
    visible=ALL_DTYPES,
    why="inputs with more than one row: b̄ misses every row but the first",
    gradients=True,
)
class FeedForwardGradBiasNotSummed(FeedForwardGradBase):
    """b̄₁, b̄₂ = the cotangent of the first row only (not summed over the batch)."""

    def bias_grad(self, g2: torch.Tensor) -> torch.Tensor:
        return g2[0]


@chaff(
    "feed_forward",
    visible=ALL_DTYPES,
    why="W̄₂ reads h where the forward used φ(h): off wherever φ(h) ≠ h",
    gradients=True,
)
class FeedForwardGradW2PreActivation(FeedForwardGradBase):
    """W̄₂ = gᵀ h (the pre-activation) instead of gᵀ φ(h)."""

    def w2_grad(self, g2: torch.Tensor, a2: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return g2.T @ h2


@chaff(
    "feed_forward",
    visible=ALL_DTYPES,
    why="a tenth of W̄₁'s entries are 0 and the rest scaled by 1/0.9",
    gradients=True,
)
class FeedForwardGradDropout(FeedForwardGradBase):
    """Dropout (p = 0.1) left on W̄₁."""

    def w1_grad(self, gh2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        full = super().w1_grad(gh2, x2)
        gen = torch.Generator().manual_seed(0)
        keep = (torch.rand(full.shape, generator=gen) >= 0.1).to(full.dtype)
        return full * keep / 0.9


@chaff(
    "feed_forward",
    visible=ALL_DTYPES,
    why="GELU: φ'(h) = Φ(h) misses h·φ(h), up to 0.24 of the slope (relu: the slope is 1 "
    "at h ≤ 0 too)",
    gradients=True,
)
class FeedForwardGradSlopeWithoutPdf(FeedForwardGradBase):
    """GELU's derivative without its h·pdf(h) term; relu's as h >= −∞ (the slope ignored)."""

    def slope(self, h: torch.Tensor, activation: str) -> torch.Tensor:
        if activation == "relu":
            return torch.ones_like(h)
        return 0.5 * (1 + torch.erf(h / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# torch's modules with one defect put into their backward
# ---------------------------------------------------------------------------------------------


class _GradientEdit(torch.autograd.Function):
    """Identity forward; backward ``edit(g)``: a defect put into one gradient only."""

    @staticmethod
    def forward(ctx: Any, edit: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.edit = edit
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:  # type: ignore[override]
        return None, ctx.edit(g)


class _ModuleGradBase(TorchAdapter):
    """torch's own module for one layer (its precision declarations kept), differentiated by
    autograd; a chaff edits the gradient reaching one parameter (``edit``) or the output's
    (``output``)."""

    name = "corpus-module"
    component = ""
    #: the parameter whose gradient the chaff edits ("" none)
    edited = ""

    def provides(self, component: str) -> bool:
        return component == self.component

    def components(self) -> tuple[str, ...]:
        return (self.component,)

    def edit(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def _params(self, params: Any) -> Any:
        if not self.edited or params.get(self.edited) is None:
            return params
        return {**params, self.edited: _GradientEdit.apply(self.edit, params[self.edited])}


class MultiheadAttentionModuleGrad(_ModuleGradBase):
    component = "multi_head_attention"

    def multi_head_attention(
        self, query: Any, key: Any, value: Any, params: Any, *a: Any, **kw: Any
    ) -> Any:
        return super().multi_head_attention(query, key, value, self._params(params), *a, **kw)


class MultiheadAttentionWeightsModuleGrad(_ModuleGradBase):
    component = "multi_head_attention_weights"

    def multi_head_attention_weights(
        self, query: Any, key: Any, value: Any, params: Any, *a: Any, **kw: Any
    ) -> Any:
        return super().multi_head_attention_weights(
            query, key, value, self._params(params), *a, **kw
        )


@wheat("multi_head_attention_weights", gradients=True)
class MultiheadAttentionWeightsGradTorch(MultiheadAttentionWeightsModuleGrad):
    """nn.MultiheadAttention's weights (need_weights=True) differentiated by autograd."""


@chaff(
    "multi_head_attention_weights",
    visible=ALL_DTYPES,
    why="averaged weights of 2 or more heads: every head's cotangent is ȳ, not ȳ/H, so every "
    "gradient is H times too large",
    gradients=True,
)
class MultiheadAttentionWeightsGradMeanNotDivided(MultiheadAttentionWeightsModuleGrad):
    """The averaged weights, and the backward of their sum over the heads: the mean's backward
    without its 1/H."""

    def multi_head_attention_weights(self, query: Any, *a: Any, **kw: Any) -> Any:
        out = super().multi_head_attention_weights(query, *a, **kw)
        average = kw.get("average_attn_weights", a[8] if len(a) > 8 else True)
        heads = int(kw.get("num_heads", a[3] if len(a) > 3 else 1))
        if not average or heads == 1:
            return out
        summed = out * heads
        return out.detach() + summed - summed.detach()


class EncoderModuleGrad(_ModuleGradBase):
    component = "encoder_layer"

    def encoder_layer(self, src: Any, params: Any, *a: Any, **kw: Any) -> Any:
        return super().encoder_layer(src, self._params(params), *a, **kw)


@wheat("multi_head_attention", gradients=True)
class MultiheadAttentionGradTorch(MultiheadAttentionModuleGrad):
    """nn.MultiheadAttention differentiated by autograd, as users train it."""


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="the out-projection's weight gradient is its transpose (E x E: the shape is right)",
    gradients=True,
)
class MultiheadAttentionGradOutWeightTransposed(MultiheadAttentionModuleGrad):
    """W̄_out transposed."""

    edited = "out_proj.weight"

    def edit(self, g: torch.Tensor) -> torch.Tensor:
        return g.T.contiguous()


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="batches of more than one: the in-projection bias gradient is the batch mean, not sum",
    gradients=True,
)
class MultiheadAttentionGradBiasBatchMean(MultiheadAttentionModuleGrad):
    """b̄_in divided by the batch size (averaged over the batch instead of summed)."""

    edited = "in_proj_bias"
    batch = 1

    def edit(self, g: torch.Tensor) -> torch.Tensor:
        return g / self.batch

    def multi_head_attention(self, query: Any, *a: Any, **kw: Any) -> Any:
        batch_first = kw.get("batch_first", a[7] if len(a) > 7 else True)
        self.batch = int(query.shape[0 if batch_first else 1])
        return super().multi_head_attention(query, *a, **kw)


@chaff(
    "multi_head_attention",
    visible=ALL_DTYPES,
    why="a tenth of W̄_in's entries are 0 and the rest scaled by 1/0.9",
    gradients=True,
)
class MultiheadAttentionGradDropout(MultiheadAttentionModuleGrad):
    """Dropout (p = 0.1) left on the in-projection's weight gradient."""

    edited = "in_proj_weight"

    def edit(self, g: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        keep = (torch.rand(g.shape, generator=gen) >= 0.1).to(g.dtype)
        return g * keep / 0.9


@chaff(
    "encoder_layer",
    visible=ALL_DTYPES,
    why="the identity path of the residual is missing from src's gradient (x̄ = Jᵀȳ − ȳ)",
    gradients=True,
)
class EncoderGradResidualMissing(EncoderModuleGrad):
    """The encoder layer's value, and the backward of (layer(src) − src): the residual
    connection's identity path left out of the backward only."""

    def encoder_layer(self, src: Any, params: Any, *a: Any, **kw: Any) -> Any:
        out = super().encoder_layer(src, params, *a, **kw)
        minus = out - src  # same layout as src, batch first or not
        return out.detach() + minus - minus.detach()


class DecoderModuleGrad(_ModuleGradBase):
    component = "decoder_layer"

    def decoder_layer(self, tgt: Any, memory: Any, params: Any, *a: Any, **kw: Any) -> Any:
        return super().decoder_layer(tgt, memory, self._params(params), *a, **kw)


@chaff(
    "decoder_layer",
    visible=("float64", "float32"),
    why="the memory is the cross-attention's key and value: its gradient misses the value "
    "path's V̄ W_v (the key path's K̄ W_k alone). Not in float16/bfloat16: there the memory "
    "gradient's derived bound is still 12 to 10⁸ times the gradient itself (docs/gradients.md "
    "§9), so no error of it is visible",
    gradients=True,
)
class DecoderGradMemoryKeyPathOnly(DecoderModuleGrad):
    """nn.TransformerDecoderLayer whose cross-attention reads the memory as value detached: the
    value is right, the memory's gradient is not accumulated over the key and value paths (the
    value projection's own weight gradient stays right)."""

    def _build_layer(self, module_class: Any, *a: Any, **kw: Any) -> Any:
        module = super()._build_layer(module_class, *a, **kw)
        cross = module.multihead_attn
        forward = cross.forward

        def value_detached(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            return forward(query, key, value.detach(), *args, **kwargs)

        cross.forward = value_detached
        return module


class SwigluModuleGrad(_ModuleGradBase):
    component = "swiglu_feed_forward"

    def swiglu_feed_forward(self, x: Any, params: Any) -> Any:
        return super().swiglu_feed_forward(x, self._params(params))


@wheat("swiglu_feed_forward", gradients=True)
class SwigluGradTorch(SwigluModuleGrad):
    """F.linear and F.silu differentiated by autograd."""


@chaff(
    "swiglu_feed_forward",
    visible=ALL_DTYPES,
    why="silu'(z) taken as σ(z): off by z·σ(z)(1 − σ(z)), up to 0.28 of the slope",
    gradients=True,
)
class SwigluGradSlopeSigmoidOnly(SwigluModuleGrad):
    """The SwiGLU value, and the backward of the same block with silu(z) = z·σ(z) whose σ is
    held constant: silu'(z) = σ(z)."""

    def swiglu_feed_forward(self, x: Any, params: Any) -> Any:
        out = super().swiglu_feed_forward(x, params)
        f = torch.nn.functional
        a = f.linear(x, params["w1.weight"])
        gate = a * torch.sigmoid(a).detach()
        variant = f.linear(gate * f.linear(x, params["w3.weight"]), params["w2.weight"])
        return out.detach() + variant - variant.detach()
