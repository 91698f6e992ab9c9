r"""References and derived tolerances of the layer components.

The components ``multi_head_attention``, ``feed_forward``, ``encoder_layer`` and
``decoder_layer`` have the semantics of ``nn.MultiheadAttention``,
``linear2(activation(linear1(x)))``, ``nn.TransformerEncoderLayer`` and
``nn.TransformerDecoderLayer`` in eval mode (:mod:`transpec.oracle.layers.reference`). This module
computes their float64 reference (:func:`layer_reference`) and a per-element bound on the error of
an implementation that rounds as its declared :class:`~transpec.adapters.base.Precision` says
(:func:`tolerance`), derived, not guessed, by *componentwise forward error propagation* through the
layer (docs/tolerance.md, "Composite layers"). Every intermediate ``z`` carries a first-order
absolute error bound ``δz`` (an array of z's shape); each operation adds its own rounding and
propagates the error of its inputs:

==============  ==========================================================================
operation       δ(output)
==============  ==========================================================================
linear          :math:`|\delta x|\,|W|^T + \gamma_{n+1}(u_{acc})\,(|x|\,|W|^T + |b|) +
                u_{store}|y|` (n = in_features; W and b are exact: the oracle rounded them)
attention head  the core bound of :func:`transpec.oracle.kernels.tolerance.tolerance` for
                ``"attention"`` on the exact per-head Q, K, V (docs §3.2), plus the
                propagation of δQ, δK, δV through the softmax:
                :math:`\sum_j P_{ij}(\delta s_{ij} + \bar s_i)|v_j - o_i|\cdot\mathrm{amp}
                + P\,\delta V` with :math:`\delta s_{ij} = \text{scale}\,(|\delta q_i|\cdot|k_j|
                + |q_i|\cdot|\delta k_j| + |\delta q_i|\cdot|\delta k_j|)`,
                :math:`\bar s_i = \sum_l P_{il}\delta s_{il}`, amp = expm1(2 max_j δs)/(2 max_j δs)
                (the exact factor of the softmax's exponential sensitivity, ≥ 1)
LayerNorm       :math:`|w|/\sigma\,(|\delta x| + \overline{|\delta x|} + |\hat y|\,
                \overline{|\hat y||\delta x|})` (the absolute value of its Jacobian applied to
                δx) plus the core bound for ``"layer_norm"`` (docs §3.3)
activation      :math:`|\phi'(x)|\,\delta x + \tfrac12\max|\phi''|\,\delta x^2` plus
                :math:`(u_{fn} + 3u_{acc})|x| + u_{store}|\phi(x)|` (relu: δx where x > -δx, exact)
residual add    :math:`\delta a + \delta b + u_{store}|a + b|`
==============  ==========================================================================

The output gets :math:`u_{out}|y|` and an underflow floor; the sum is multiplied by the safety
factor c = :data:`transpec.oracle.engine.error_model.SAFETY` (the core bounds enter divided by c, so
c is applied once). A NaN of the reference (a fully masked row under ``fully_masked_row="nan"``)
must be matched exactly (:func:`transpec.oracle.engine.compare.compare`).

``multi_head_attention_weights`` (the weights of ``need_weights=True``, averaged over heads or
per head) reuses the projections and bounds each head's softmax by the softmax rule on scores
carrying the propagated error (:meth:`_Tracker.weights`; docs/tolerance.md §3.7).

Each layer's forward pass (``forward_<component>``) and the text of its derivation are the
``"forward"`` and ``"derivation"`` hooks of its record in :mod:`transpec.oracle.components`;
:func:`layer_reference` and :func:`tolerance` call them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from transpec.oracle import components
from transpec.oracle.engine.dtypes import FloatArray, canonical_dtype, same_bits
from transpec.oracle.engine.error_model import SAFETY, Units, gamma, units
from transpec.oracle.kernels.reference import Reference
from transpec.oracle.layers import reference as rl
from transpec.spec.conventions import CANONICAL, Conventions

if TYPE_CHECKING:
    from transpec.adapters.base import Precision
    from transpec.oracle.kernels.tolerance import Tolerance

#: the layer components (the registry's family "layers")
LAYER_COMPONENTS: tuple[str, ...] = components.names("layers")

#: max |φ''| of GELU (exact and tanh form): φ''(0) = 2·pdf(0) = 0.798 (tanh form: 0.798 too)
_GELU_CURVATURE = 0.8
#: the keys of ``semantics`` (path-dependent behaviour an adapter declares, see
#: :mod:`transpec.adapters.torch.layers`)
SEMANTICS_KEYS: tuple[str, ...] = (
    "fully_masked_row",
    "cross_fully_masked_row",
    "activation",
    "float_attn_mask",
)
#: how a float self-attention mask is read: ``"additive"`` (added to the scores, the modules'
#: documented meaning) or ``"nonzero_is_masked"`` (every nonzero entry hides its key, as the
#: fused kernel of nn.TransformerEncoderLayer's fast path reads it; torch 2.13)
FLOAT_MASK_READINGS: tuple[str, ...] = ("additive", "nonzero_is_masked")


#: one kernel reference of a layer's forward pass: (its inputs, the reference)
KernelCall = tuple[tuple[Any, ...], Reference]


@dataclass(frozen=True)
class LayerReference(Reference):
    """A layer reference: the value, plus the (rounded) arguments and the semantics it was
    computed under, from which :func:`tolerance` propagates the rounding errors."""

    component: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    semantics: Mapping[str, str] = field(default_factory=dict)
    #: the kernel references (attention, layer norm) the forward pass computed, in call order,
    #: each with its inputs: :func:`tolerance` walks the same pass on the same arguments and
    #: takes them back where its inputs are the same bit for bit (:meth:`_Tracker.kernel`)
    kernel_references: tuple[KernelCall, ...] = field(default=(), repr=False, compare=False)


@dataclass
class _Stats:
    """Numbers for the derivation text."""

    max_score_error: float = 0.0
    max_amplification: float = 1.0
    reductions: set[int] = field(default_factory=set)

    def record(self, ds: FloatArray, amp: FloatArray) -> None:
        """Keep the largest score error δs and softmax amplification seen so far."""
        if ds.size:
            self.max_score_error = max(self.max_score_error, float(np.max(ds)))
            self.max_amplification = max(self.max_amplification, float(np.max(amp)))


# -- semantics and arguments -----------------------------------------------------------------


def default_semantics(
    component: str, args: Mapping[str, Any], conventions: Conventions = CANONICAL
) -> dict[str, str]:
    """Semantics without a path declaration: every fully masked row as
    ``conventions.fully_masked_row`` says, the activation as named."""
    fmr = conventions.fully_masked_row
    return {
        "fully_masked_row": fmr,
        "cross_fully_masked_row": fmr,
        "activation": str(args.get("activation", "relu")),
        "float_attn_mask": "additive",
        "mask_fill": "none"
        if conventions.mask_fill is None
        else repr(float(conventions.mask_fill)),
        "mask_fill_mode": conventions.mask_fill_mode,
    }


def _semantics(
    component: str,
    args: Mapping[str, Any],
    conventions: Conventions,
    semantics: Mapping[str, str] | None,
) -> dict[str, str]:
    out = default_semantics(component, args, conventions)
    if semantics:
        unknown = sorted(set(semantics) - set(SEMANTICS_KEYS))
        if unknown:
            raise ValueError(f"unknown layer semantics {', '.join(unknown)}")
        out.update({k: str(v) for k, v in semantics.items()})
    for key in ("fully_masked_row", "cross_fully_masked_row"):
        if out[key] not in ("zero", "nan"):
            raise ValueError(f"{key}={out[key]!r} is not 'zero' or 'nan'")
    if out["float_attn_mask"] not in FLOAT_MASK_READINGS:
        raise ValueError(
            f"float_attn_mask={out['float_attn_mask']!r} is not one of {FLOAT_MASK_READINGS}"
        )
    if out["activation"] not in rl.ACTIVATIONS:
        raise ValueError(f"activation {out['activation']!r} is not one of {rl.ACTIVATIONS}")
    return out


def _additive(mask: Any, filled: bool = False) -> FloatArray | None:
    """A mask in nn.MultiheadAttention polarity -> additive float64 (bool True -> -inf, or NaN
    with ``filled``: a score the declared finite ``mask_fill`` replaces)."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return np.where(arr, np.nan if filled else -np.inf, 0.0)
    return np.asarray(arr, dtype=np.float64)


def _combined_mask(
    attn_mask: Any,
    key_padding_mask: Any,
    batch: int,
    lq: int,
    lk: int,
    filled: bool = False,
    added: float | None = None,
) -> Any:
    """attn_mask (L, S) and key_padding_mask (B, S) -> one additive (B, 1, L, S) mask or None;
    with ``filled`` the boolean masks' entries are NaN, the scores a finite fill replaces; with
    ``added`` (``mask_fill_mode="add"``) a key either boolean mask hides gets the fill once,
    added to its score like a float mask's entry."""
    if added is not None:
        hidden = np.zeros((batch, 1, lq, lk), dtype=bool)
        rest: list[Any] = []
        for mask, shape, lift in (
            (attn_mask, (lq, lk), lambda a: a[None, None]),
            (key_padding_mask, (batch, lk), lambda a: a[:, None, None, :]),
        ):
            if mask is None:
                continue
            arr = np.asarray(mask)
            if arr.shape != shape:
                raise ValueError(f"a layer mask has shape {arr.shape}, expected {shape}")
            if arr.dtype == np.bool_:
                hidden = hidden | lift(arr)
            else:
                rest.append(lift(np.asarray(arr, dtype=np.float64)))
        if attn_mask is None and key_padding_mask is None:
            return None
        return np.where(hidden, added, 0.0) + sum(rest, np.zeros((batch, 1, lq, lk)))
    am, kpm = _additive(attn_mask, filled), _additive(key_padding_mask, filled)
    if am is None and kpm is None:
        return None
    total = np.zeros((batch, 1, lq, lk))
    if am is not None:
        if am.shape != (lq, lk):
            raise ValueError(f"attn_mask has shape {am.shape}, expected {(lq, lk)}")
        total = total + am[None, None]
    if kpm is not None:
        if kpm.shape != (batch, lk):
            raise ValueError(f"key_padding_mask has shape {kpm.shape}, expected {(batch, lk)}")
        total = total + kpm[:, None, None, :]
    return total


def _batch_first(x: FloatArray, batch_first: bool) -> FloatArray:
    if x.ndim != 3:
        raise ValueError(f"expected a 3-D input (B, L, E) or (L, B, E), got shape {x.shape}")
    return x if batch_first else x.transpose(1, 0, 2)


# -- tracked operations ----------------------------------------------------------------------


def _exp_amplification(worst: FloatArray) -> FloatArray:
    """amp = expm1(min(w, 50)) / w for w = 2·max_j δs_ij > 1e-8, else 1: the exact factor of the
    softmax's exponential sensitivity to score errors of at most δs (>= 1; the clip at e^50 makes
    any first-order term larger than the caps)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(
            worst > 1e-8, np.expm1(np.minimum(worst, 50.0)) / np.maximum(worst, 1e-300), 1.0
        )


class _Tracker:
    """Float64 forward pass of a layer with a first-order error bound on every intermediate.
    ``un`` None: the value only (the reference)."""

    def __init__(
        self,
        un: Units | None,
        fill: float | None = None,
        *,
        recorded: list[KernelCall] | None = None,
        known: Sequence[KernelCall] = (),
    ) -> None:
        self.un = un
        self.stats = _Stats()
        #: the declared finite mask_fill (None: masked scores are -inf)
        self.fill = fill
        #: where the kernel references of this pass are appended (None: not kept)
        self.recorded = recorded
        #: the kernel references of an earlier pass over the same arguments, in call order
        self.known = known
        self._calls = 0

    def kernel(self, compute: Callable[[], Reference], *inputs: Any) -> Reference:
        """``compute()``, the kernel reference of ``inputs``; or the reference an earlier pass
        computed at the same step of the same forward pass (``known``) when its inputs were
        the same, bit for bit: the value the computation would give again (it reads nothing
        else), so that the bound pass of :func:`tolerance` does not compute the kernels twice."""
        step = self._calls
        self._calls += 1
        if step < len(self.known) and same_bits(self.known[step][0], inputs):
            found = self.known[step][1]
        else:
            found = compute()
        if self.recorded is not None:
            self.recorded.append((inputs, found))
        return found

    def _filled(
        self, mask: FloatArray | None, fully_masked_row: str
    ) -> tuple[Any, Conventions, FloatArray | None]:
        """The mask and conventions for the attention reference, and the rows (B, H|1, L, 1)
        whose weights the fill makes uniform over the filled keys when they cannot be told to
        the reference directly (None when there are none).

        Boolean-masked scores (NaN in ``mask``) are replaced by the fill: with boolean masks
        alone the reference takes a keep-mask and ``mask_fill`` (exact); with a float mask too
        they count as -inf, which is exact where exp(fill - row max) underflows in float64
        (fills of -1e9 or finfo.min), and a row whose every key is filled or -inf is uniform
        over its filled keys (docs/tolerance.md §3.7)."""
        fmr: Any = fully_masked_row
        if mask is None or self.fill is None or not np.isnan(mask).any():
            hard = None if mask is None else np.where(np.isnan(mask), -np.inf, mask)
            return hard, Conventions(fully_masked_row=fmr), None
        filled = np.isnan(mask)
        rest = np.where(filled, 0.0, mask)
        if not np.any(rest != 0.0):
            conv = Conventions(fully_masked_row=fmr, mask_fill=self.fill, bool_mask="keep")
            return ~filled, conv, None
        hard = np.where(filled, -np.inf, mask)
        dead = np.all(np.isneginf(hard), axis=-1, keepdims=True) & np.any(
            filled, axis=-1, keepdims=True
        )
        return hard, Conventions(fully_masked_row=fmr), dead

    def _check_fill_underflows(self, scores: FloatArray, filled: FloatArray) -> None:
        """ValueError (one line) where a filled key would get a weight float64 can hold."""
        assert self.fill is not None
        live = np.where(np.isfinite(scores), scores, -np.inf)
        top = np.max(live, axis=-1, keepdims=True)
        close = np.isfinite(top) & (self.fill > top - 745.0) & np.any(filled, -1, keepdims=True)
        if np.any(close):
            raise ValueError(
                f"mask_fill={self.fill!r} is within 745 of the scores of a row that also has a "
                "float mask: its weight is not 0 in float64, which the layer reference cannot "
                "combine with a float mask (use boolean masks, or a fill of -1e9 or finfo.min)"
            )

    def gamma(self, n: int) -> float:
        assert self.un is not None
        self.stats.reductions.add(int(n))
        return gamma(n, self.un.acc)

    def linear(
        self, x: FloatArray, dx: FloatArray, w: FloatArray, b: FloatArray | None
    ) -> tuple[FloatArray, FloatArray]:
        y = rl.linear(x, w, b)
        if self.un is None:
            return y, np.zeros_like(y)
        aw = np.abs(w)
        n = w.shape[1]
        local = np.matmul(np.abs(x), aw.T) + (0.0 if b is None else np.abs(b))
        dy = (
            np.matmul(dx, aw.T)
            + self.gamma(n + 1) * local
            + self.un.store * np.abs(y)
            + n * self.un.eta_acc
        )
        return y, dy

    def add(
        self, a: FloatArray, da: FloatArray, b: FloatArray, db: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        y = a + b
        if self.un is None:
            return y, da
        return y, da + db + self.un.store * np.abs(y)

    def layer_norm(
        self, x: FloatArray, dx: FloatArray, norm: Mapping[str, Any], eps: float
    ) -> tuple[FloatArray, FloatArray]:
        from transpec.oracle.kernels import reference
        from transpec.oracle.kernels.tolerance import tolerance

        w = np.asarray(norm["weight"], dtype=np.float64)
        b = norm.get("bias")
        b = None if b is None else np.asarray(b, dtype=np.float64)
        ref = self.kernel(
            lambda: reference.layer_norm(x, (x.shape[-1],), w, b, float(eps)), x, w, b, float(eps)
        )
        y = np.asarray(ref.value, dtype=np.float64)
        if self.un is None:
            return y, np.zeros_like(y)
        own = np.asarray(tolerance("layer_norm", ref, self.un.dtype, self.un.precision).bound)
        mu = np.mean(x, axis=-1, keepdims=True)
        sigma = np.sqrt(np.mean((x - mu) ** 2, axis=-1, keepdims=True) + float(eps))
        yhat = (x - mu) / sigma
        jac = (
            np.abs(w)
            / sigma
            * (
                dx
                + np.mean(dx, axis=-1, keepdims=True)
                + np.abs(yhat) * np.mean(np.abs(yhat) * dx, axis=-1, keepdims=True)
            )
        )
        return y, jac + own / SAFETY

    def activation(self, x: FloatArray, dx: FloatArray, name: str) -> tuple[FloatArray, FloatArray]:
        y = rl.activation(name)(x)
        if self.un is None:
            return y, np.zeros_like(y)
        if name == "relu":
            # 1-Lipschitz; exactly 0 where the whole interval [x - δx, x + δx] is negative
            return y, np.where(x + dx > 0, dx, 0.0)
        h = 1e-6
        fn = rl.activation(name)
        slope = np.abs((fn(x + h) - fn(x - h)) / (2 * h))
        own = (self.un.fn + 3 * self.un.acc) * np.abs(x) + self.un.store * np.abs(y)
        return y, slope * dx + 0.5 * _GELU_CURVATURE * dx * dx + own

    def attention(
        self,
        q: FloatArray,
        dq: FloatArray,
        k: FloatArray,
        dk: FloatArray,
        v: FloatArray,
        dv: FloatArray,
        mask: FloatArray | None,
        fully_masked_row: str,
    ) -> tuple[FloatArray, FloatArray]:
        """Heads (B, H, L, Dh): O = softmax(Q Kᵀ/√Dh + M) V with its error bound."""
        from transpec.oracle.kernels import reference
        from transpec.oracle.kernels.tolerance import tolerance

        scale = 1.0 / math.sqrt(q.shape[-1])
        given, conv, dead = self._filled(mask, fully_masked_row)

        def compute() -> Reference:
            with np.errstate(invalid="ignore"):
                return reference.attention(q, k, v, attn_mask=given, scale=scale, conventions=conv)

        ref = self.kernel(compute, q, k, v, given, scale, conv)
        o = np.asarray(ref.value, dtype=np.float64)
        p = np.nan_to_num(np.asarray(ref.weights, dtype=np.float64), nan=0.0)
        own = (
            np.zeros_like(o)
            if self.un is None
            else np.asarray(tolerance("attention", ref, self.un.dtype, self.un.precision).bound)
        )
        if dead is not None and mask is not None:
            # uniform weights over the filled keys of the rows with no other key
            filled = np.broadcast_to(np.isnan(mask), p.shape)
            self._check_fill_underflows(
                scale * np.matmul(q, np.swapaxes(k, -1, -2)) + given, filled
            )
            uniform = filled / np.maximum(np.sum(filled, axis=-1, keepdims=True), 1)
            rows = np.broadcast_to(dead, (*p.shape[:-1], 1))
            p = np.where(rows, uniform, p)
            o = np.where(rows, np.matmul(p, v), o)
            if self.un is not None:
                un = self.un
                rounding = (self.gamma(k.shape[-2] + 1) + 2.0 * un.acc + un.store) * np.matmul(
                    p, np.abs(v)
                ) + un.out * np.abs(o)
                own = np.where(rows, SAFETY * rounding, np.broadcast_to(own, o.shape))
        if self.un is None:
            return o, np.zeros_like(o)
        ak, aq = np.abs(k), np.abs(q)
        ds = scale * (
            np.matmul(dq, np.swapaxes(ak, -1, -2))
            + np.matmul(aq, np.swapaxes(dk, -1, -2))
            + np.matmul(dq, np.swapaxes(dk, -1, -2))
        )  # (B, H, L, S)
        ds = np.where(p > 0, ds, 0.0)
        sbar = np.sum(p * ds, axis=-1, keepdims=True)
        worst = 2.0 * np.max(ds, axis=-1, keepdims=True)
        amp = _exp_amplification(worst)
        o0 = np.nan_to_num(o, nan=0.0)
        # Σ_j P_ij (δs_ij + s̄_i) |v_j − o_i|, per value column
        spread = np.abs(v[..., None, :, :] - o0[..., :, None, :])  # (B, H, L, S, Dh)
        moved = np.einsum("bhls,bhlsd->bhld", p * (ds + sbar), spread) * amp
        dout = moved + np.matmul(p, dv) + own / SAFETY
        self.stats.record(ds, amp)
        return o, np.where(np.isnan(o), 0.0, dout)

    def weights(
        self,
        q: FloatArray,
        dq: FloatArray,
        k: FloatArray,
        dk: FloatArray,
        mask: FloatArray | None,
        fully_masked_row: str,
    ) -> tuple[FloatArray, FloatArray]:
        """Heads (B, H, L, Dh): P = softmax(Q Kᵀ/√Dh + M) with its error bound, the softmax rule
        (docs §3.1) on scores that carry the propagated error of Q and K plus their own
        rounding: |δP_ij| <= P_ij(δs_ij + Σ_l P_il δs_il)·amp + P_ij(2u_fn + 2u_store + γ_n +
        u_acc)."""
        from transpec.oracle.kernels import reference

        dh = q.shape[-1]
        scale = 1.0 / math.sqrt(dh)
        given, conv, dead = self._filled(mask, fully_masked_row)
        v = np.zeros((*q.shape[:-2], k.shape[-2], 1))

        def compute() -> Reference:
            with np.errstate(invalid="ignore"):
                return reference.attention(q, k, v, attn_mask=given, scale=scale, conventions=conv)

        ref = self.kernel(compute, q, k, v, given, scale, conv)
        w = np.asarray(ref.weights, dtype=np.float64)
        if dead is not None and mask is not None:
            filled = np.broadcast_to(np.isnan(mask), w.shape)
            self._check_fill_underflows(
                scale * np.matmul(q, np.swapaxes(k, -1, -2)) + given, filled
            )
            uniform = filled / np.maximum(np.sum(filled, axis=-1, keepdims=True), 1)
            w = np.where(np.broadcast_to(dead, (*w.shape[:-1], 1)), uniform, w)
        if mask is not None and fully_masked_row == "nan":
            # no visible key: 0/0 of the explicit softmax, as torch's need_weights=True path
            # (a key the fill replaces is not masked: its score is the fill)
            full = np.all(np.isneginf(mask), axis=-1, keepdims=True)
            w = np.where(np.broadcast_to(full, (*w.shape[:-1], 1)), np.nan, w)
        if self.un is None:
            return w, np.zeros_like(w)
        un = self.un
        p = np.nan_to_num(w, nan=0.0)
        ak, aq = np.abs(k), np.abs(q)
        kt = np.swapaxes(ak, -1, -2)
        s = scale * np.matmul(q, np.swapaxes(k, -1, -2))
        if mask is not None:
            filled_scores = np.isnan(np.broadcast_to(mask, s.shape))
            s = np.where(filled_scores, self.fill if self.fill is not None else -np.inf, s + mask)
        with np.errstate(invalid="ignore"):
            m = np.max(np.where(p > 0, s, -np.inf), axis=-1, keepdims=True)
            shift = np.where(p > 0, np.abs(s - m), 0.0)
            s_abs = np.where(p > 0, np.abs(s), 0.0)
        prop = scale * (
            np.matmul(dq, kt)
            + np.matmul(aq, np.swapaxes(dk, -1, -2))
            + np.matmul(dq, np.swapaxes(dk, -1, -2))
        )
        own = (self.gamma(dh + 1) + un.store + un.acc) * scale * np.matmul(aq, kt)
        ds = np.where(p > 0, prop + own + un.store * s_abs + un.acc * shift, 0.0)
        sbar = np.sum(p * ds, axis=-1, keepdims=True)
        worst = 2.0 * np.max(ds, axis=-1, keepdims=True) if ds.size else ds
        amp = _exp_amplification(worst)
        n = k.shape[-2]
        rounding = 2.0 * un.fn + 2.0 * un.store + self.gamma(n) + un.acc
        dp = p * (ds + sbar) * amp + p * rounding + un.eta_acc
        self.stats.record(ds, amp)
        return w, np.where(np.isnan(w), 0.0, dp)

    def project(
        self,
        xq: FloatArray,
        dxq: FloatArray,
        xkv: FloatArray,
        dxkv: FloatArray,
        xv: FloatArray,
        dxv: FloatArray,
        params: Mapping[str, Any],
        num_heads: int,
    ) -> list[tuple[FloatArray, FloatArray]]:
        """The Q, K, V projections of nn.MultiheadAttention, split into heads (B, H, L, Dh)."""
        e = xq.shape[-1]
        h = int(num_heads)
        if h < 1 or e % h:
            raise ValueError(f"embed_dim {e} is not divisible by num_heads {num_heads}")
        if params.get("in_proj_weight") is not None:
            w_in = np.asarray(params["in_proj_weight"], dtype=np.float64)
            ws = [w_in[i * e : (i + 1) * e] for i in range(3)]
        else:  # kdim/vdim != embed_dim: separate q/k/v projections
            ws = [np.asarray(params[f"{n}_proj_weight"], dtype=np.float64) for n in "qkv"]
        b_in = params.get("in_proj_bias")
        b_in = None if b_in is None else np.asarray(b_in, dtype=np.float64)
        parts = []
        for i, (x, dx) in enumerate(((xq, dxq), (xkv, dxkv), (xv, dxv))):
            b = None if b_in is None else b_in[i * e : (i + 1) * e]
            y, dy = self.linear(x, dx, ws[i], b)
            parts.append((rl.split_heads(y, h), rl.split_heads(dy, h)))
        return parts

    def mha(
        self,
        xq: FloatArray,
        dxq: FloatArray,
        xkv: FloatArray,
        dxkv: FloatArray,
        xv: FloatArray,
        dxv: FloatArray,
        params: Mapping[str, Any],
        num_heads: int,
        mask: FloatArray | None,
        fully_masked_row: str,
    ) -> tuple[FloatArray, FloatArray]:
        """nn.MultiheadAttention on batch-first (B, L, E) inputs."""
        parts = self.project(xq, dxq, xkv, dxkv, xv, dxv, params, num_heads)
        (q, dq), (k, dk), (v, dv) = parts
        o, do = self.attention(q, dq, k, dk, v, dv, mask, fully_masked_row)
        w_out = np.asarray(params["out_proj.weight"], dtype=np.float64)
        b_out = params.get("out_proj.bias")
        b_out = None if b_out is None else np.asarray(b_out, dtype=np.float64)
        return self.linear(rl.merge_heads(o), rl.merge_heads(do), w_out, b_out)

    def ffn(
        self, x: FloatArray, dx: FloatArray, params: Mapping[str, Any], activation: str
    ) -> tuple[FloatArray, FloatArray]:
        def p(key: str) -> FloatArray | None:
            value = params.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        w1, w2 = p("linear1.weight"), p("linear2.weight")
        if w1 is None or w2 is None:
            raise ValueError("feed_forward needs linear1.weight and linear2.weight")
        hdn, dh = self.linear(x, dx, w1, p("linear1.bias"))
        act, da = self.activation(hdn, dh, activation)
        return self.linear(act, da, w2, p("linear2.bias"))


def _sublayer(
    t: _Tracker,
    x: FloatArray,
    dx: FloatArray,
    f: Any,
    norm: Mapping[str, Any],
    eps: float,
    norm_first: bool,
) -> tuple[FloatArray, FloatArray]:
    """post-LN: LN(x + f(x)); pre-LN: x + f(LN(x)) (``residual_layer_norm``)."""
    if norm_first:
        n, dn = t.layer_norm(x, dx, norm, eps)
        y, dy = f(n, dn)
        return t.add(x, dx, y, dy)
    y, dy = f(x, dx)
    s, ds = t.add(x, dx, y, dy)
    return t.layer_norm(s, ds, norm, eps)


def _attention_inputs(
    args: Mapping[str, Any], batch_first: bool, filled: bool = False, added: float | None = None
) -> tuple[FloatArray, FloatArray, FloatArray, Any]:
    """query, key, value of nn.MultiheadAttention batch first (B, L, E) and their one additive
    (B, 1, L, S) mask (None without masks)."""
    q = _batch_first(np.asarray(args["query"], dtype=np.float64), batch_first)
    k = _batch_first(np.asarray(args["key"], dtype=np.float64), batch_first)
    v = _batch_first(np.asarray(args["value"], dtype=np.float64), batch_first)
    mask = _combined_mask(
        args.get("attn_mask"),
        args.get("key_padding_mask"),
        q.shape[0],
        q.shape[1],
        k.shape[1],
        filled,
        added,
    )
    return q, k, v, mask


def _fills(sem: Mapping[str, str]) -> bool:
    """Whether the declared ``mask_fill`` is finite and replaces: boolean-masked scores are
    then replaced by it (marked NaN in the combined mask), not -inf."""
    return sem.get("mask_fill", "none") != "none" and sem.get("mask_fill_mode") != "add"


def _added(sem: Mapping[str, str]) -> float | None:
    """The declared finite ``mask_fill`` when it is added (``mask_fill_mode="add"``): the
    boolean masks then become an additive 0 / fill mask, None otherwise."""
    if sem.get("mask_fill", "none") == "none" or sem.get("mask_fill_mode") != "add":
        return None
    return float(sem["mask_fill"])


def _sequence_out(
    y: FloatArray, dy: FloatArray, batch_first: bool
) -> tuple[FloatArray, FloatArray]:
    """A batch-first (B, L, E) output and its bound in the layout of the inputs, contiguous."""
    if not batch_first:
        y, dy = y.transpose(1, 0, 2), dy.transpose(1, 0, 2)
    return np.ascontiguousarray(y), np.ascontiguousarray(dy)


# -- the blocks' forward passes (the "forward" hooks of their records) -----------------------


def forward_multi_head_attention(
    t: _Tracker, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[FloatArray, FloatArray]:
    """nn.MultiheadAttention's output on ``args`` and its error bound, in the inputs' layout."""
    batch_first = bool(args.get("batch_first", True))
    q, k, v, mask = _attention_inputs(args, batch_first, _fills(sem), _added(sem))
    z = np.zeros_like
    y, dy = t.mha(
        q, z(q), k, z(k), v, z(v), args["params"], args["num_heads"], mask, sem["fully_masked_row"]
    )
    return _sequence_out(y, dy, batch_first)


def forward_multi_head_attention_weights(
    t: _Tracker, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[FloatArray, FloatArray]:
    """The attention weights of nn.MultiheadAttention (need_weights=True) on ``args``, averaged
    over heads or per head, and their error bound; batch first whatever ``batch_first`` says."""
    batch_first = bool(args.get("batch_first", True))
    q, k, v, mask = _attention_inputs(args, batch_first, _fills(sem), _added(sem))
    z = np.zeros_like
    (hq, dq), (hk, dk), _ = t.project(q, z(q), k, z(k), v, z(v), args["params"], args["num_heads"])
    w, dw = t.weights(hq, dq, hk, dk, mask, sem["fully_masked_row"])
    if bool(args.get("average_attn_weights", True)):
        heads = w.shape[1]
        w = np.mean(w, axis=1)
        if t.un is None:
            dw = np.zeros_like(w)
        else:  # the mean of the heads' bounds + the rounding of the sum and the division
            dw = np.mean(dw, axis=1) + (t.gamma(heads) + t.un.acc + t.un.store) * np.abs(
                np.nan_to_num(w, nan=0.0)
            )
    # torch returns the weights batch first whatever batch_first says
    return np.ascontiguousarray(w), np.ascontiguousarray(dw)


def forward_feed_forward(
    t: _Tracker, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[FloatArray, FloatArray]:
    """linear2(activation(linear1(x))) on ``args`` and its error bound, in the shape of x."""
    x = np.asarray(args["x"], dtype=np.float64)
    return t.ffn(x, np.zeros_like(x), args["params"], sem["activation"])


def forward_encoder_layer(
    t: _Tracker, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[FloatArray, FloatArray]:
    """nn.TransformerEncoderLayer (eval mode) on ``args`` and its error bound, in the inputs'
    layout; a float ``src_mask`` read as ``sem["float_attn_mask"]`` says."""
    params = args["params"]
    batch_first = bool(args.get("batch_first", True))
    x = _batch_first(np.asarray(args["src"], dtype=np.float64), batch_first)
    b, length = x.shape[:2]
    src_mask = args.get("src_mask")
    if (
        sem["float_attn_mask"] == "nonzero_is_masked"
        and src_mask is not None
        and np.asarray(src_mask).dtype != np.bool_
    ):
        src_mask = np.asarray(src_mask) != 0
    mask = _combined_mask(
        src_mask, args.get("src_key_padding_mask"), b, length, length, _fills(sem), _added(sem)
    )
    sa, h = rl.sub_params(params, "self_attn."), int(args["nhead"])
    ff = rl.feed_forward_params(params)
    eps = float(args.get("layer_norm_eps", 1e-5))
    nf = bool(args.get("norm_first", False))

    def attend(y: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
        return t.mha(y, dy, y, dy, y, dy, sa, h, mask, sem["fully_masked_row"])

    def feed(y: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
        return t.ffn(y, dy, ff, sem["activation"])

    y, dy = _sublayer(t, x, np.zeros_like(x), attend, rl.sub_params(params, "norm1."), eps, nf)
    y, dy = _sublayer(t, y, dy, feed, rl.sub_params(params, "norm2."), eps, nf)
    return _sequence_out(y, dy, batch_first)


def forward_decoder_layer(
    t: _Tracker, args: Mapping[str, Any], sem: Mapping[str, str]
) -> tuple[FloatArray, FloatArray]:
    """nn.TransformerDecoderLayer (eval mode) on ``args`` and its error bound, in the inputs'
    layout; fully masked rows of cross-attention as ``sem["cross_fully_masked_row"]`` says."""
    params = args["params"]
    batch_first = bool(args.get("batch_first", True))
    x = _batch_first(np.asarray(args["tgt"], dtype=np.float64), batch_first)
    mem = _batch_first(np.asarray(args["memory"], dtype=np.float64), batch_first)
    b, lt = x.shape[:2]
    ls = mem.shape[1]
    fills, added = _fills(sem), _added(sem)
    self_mask = _combined_mask(
        args.get("tgt_mask"), args.get("tgt_key_padding_mask"), b, lt, lt, fills, added
    )
    cross_mask = _combined_mask(
        args.get("memory_mask"), args.get("memory_key_padding_mask"), b, lt, ls, fills, added
    )
    sa, ca, h = (
        rl.sub_params(params, "self_attn."),
        rl.sub_params(params, "multihead_attn."),
        int(args["nhead"]),
    )
    ff = rl.feed_forward_params(params)
    eps = float(args.get("layer_norm_eps", 1e-5))
    nf = bool(args.get("norm_first", False))
    zm = np.zeros_like(mem)

    def self_attend(y: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
        return t.mha(y, dy, y, dy, y, dy, sa, h, self_mask, sem["fully_masked_row"])

    def cross(y: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
        return t.mha(y, dy, mem, zm, mem, zm, ca, h, cross_mask, sem["cross_fully_masked_row"])

    def feed(y: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
        return t.ffn(y, dy, ff, sem["activation"])

    y, dy = _sublayer(t, x, np.zeros_like(x), self_attend, rl.sub_params(params, "norm1."), eps, nf)
    y, dy = _sublayer(t, y, dy, cross, rl.sub_params(params, "norm2."), eps, nf)
    y, dy = _sublayer(t, y, dy, feed, rl.sub_params(params, "norm3."), eps, nf)
    return _sequence_out(y, dy, batch_first)


def _forward(
    component: str,
    args: Mapping[str, Any],
    sem: Mapping[str, str],
    un: Units | None,
    *,
    recorded: list[KernelCall] | None = None,
    known: Sequence[KernelCall] = (),
) -> tuple[FloatArray, FloatArray, _Stats]:
    """The value of layer ``component`` on ``args``, its error bound under the units ``un``
    (zero without) and the numbers of the derivation: the record's ``"forward"`` hook.
    ``recorded``/``known``: the kernel references kept from this pass / taken back from an
    earlier one (:meth:`_Tracker.kernel`)."""
    if component not in LAYER_COMPONENTS:
        raise ValueError(f"{component} is not one of the layers {', '.join(LAYER_COMPONENTS)}")
    fill = None if not _fills(sem) else float(sem["mask_fill"])
    t = _Tracker(un, fill, recorded=recorded, known=known)
    y, dy = components.get(component).hook("forward")(t, args, sem)
    return y, dy, t.stats


# -- the blocks' derivation texts (the "derivation" hooks of their records) ------------------


def weights_derivation(
    component: str,
    args: Mapping[str, Any],
    sem: Mapping[str, str],
    un: Units,
    stats: _Stats,
    rel: float,
) -> str:
    """How the bound on the attention weights was derived (docs/tolerance.md §3.7), with the
    numbers of this call."""
    return (
        f"{component}: c·(per head the softmax rule (§3.1) on scores carrying "
        "δs = scale(|δq||k|ᵀ + |q||δk|ᵀ + |δq||δk|ᵀ) from the projections (linear |δx||W|ᵀ + "
        "γ_(n+1)(|x||W|ᵀ+|b|) + u_store|y|) + (γ_(Dh+1) + u_store + u_acc)scale|q||k|ᵀ + "
        "u_store|s| + u_acc|s−m|: P(δs + Σ_l P δs)·amp + P(2u_fn + 2u_store + γ_n + u_acc)"
        + (
            "; averaged over heads: mean of the bounds + (γ_H + u_acc + u_store)|P̄|"
            if bool(args.get("average_attn_weights", True))
            else ""
        )
        + f") + u_out|P|; c={SAFETY:g}, u_acc={un.acc:.3g}, u_store={un.store:.3g}, "
        f"u_out={un.out:.3g}, max score error δs={stats.max_score_error:.3g}, max softmax "
        f"amplification {stats.max_amplification:.4g}; rows with no visible key "
        f"{sem.get('fully_masked_row')} (docs/tolerance.md §3.7, attention weights)"
    )


def _propagation_derivation(
    component: str, sem: Mapping[str, str], un: Units, stats: _Stats, rel: float, rows: str
) -> str:
    """The text of the componentwise forward error propagation, ``rows`` saying how fully
    masked rows are read."""
    return (
        f"{component}: c·(componentwise forward error propagation: linear |δx||W|ᵀ + "
        "γ_(n+1)(|x||W|ᵀ+|b|) + u_store|y|; per head the attention core bound (§3.2) + "
        "Σ_j P_ij(δs_ij + s̄_i)|v_j−o_i|·amp + P·δV; LayerNorm |w|/σ·(|δx| + mean|δx| + "
        "|ŷ|·mean(|ŷ||δx|)) + its core bound (§3.3); activation |φ'|δx + ½·0.8·δx² + "
        f"(u_fn+3u_acc)|x| + u_store|φ|; residual δa+δb+u_store|a+b|) + u_out|y|; c={SAFETY:g}, "
        f"u_acc={un.acc:.3g}, u_store={un.store:.3g}, u_out={un.out:.3g}, u_fn={un.fn:.3g}, "
        f"reductions n+1 in {sorted(n + 1 for n in stats.reductions)}, max score error "
        f"δs={stats.max_score_error:.3g}, max softmax amplification {stats.max_amplification:.4g}, "
        f"max first-order bound / max(|y|,1) = {rel:.3g}; activation {sem.get('activation')}, "
        f"fully masked rows {rows} (docs/tolerance.md, composite layers)"
    )


def propagation_derivation(
    component: str,
    args: Mapping[str, Any],
    sem: Mapping[str, str],
    un: Units,
    stats: _Stats,
    rel: float,
) -> str:
    """How the bound of a layer with one kind of attention was derived (docs/tolerance.md,
    composite layers), with the numbers of this call."""
    return _propagation_derivation(component, sem, un, stats, rel, f"{sem.get('fully_masked_row')}")


def decoder_derivation(
    component: str,
    args: Mapping[str, Any],
    sem: Mapping[str, str],
    un: Units,
    stats: _Stats,
    rel: float,
) -> str:
    """How the bound of the decoder layer was derived: :func:`propagation_derivation`, with how
    the fully masked rows of self- and of cross-attention are read."""
    rows = f"{sem.get('fully_masked_row')}/{sem.get('cross_fully_masked_row')} (cross)"
    return _propagation_derivation(component, sem, un, stats, rel, rows)


# -- public ----------------------------------------------------------------------------------


def layer_reference(
    component: str,
    args: Mapping[str, Any],
    *,
    conventions: Conventions = CANONICAL,
    dtype: str = "float64",
    semantics: Mapping[str, str] | None = None,
) -> LayerReference:
    """The float64 reference of a layer component on ``args`` (keyed by the adapter method's
    parameters, masks in nn.MultiheadAttention polarity), under ``semantics``: the declared
    ``fully_masked_row`` of self-attention (and of cross-attention, ``cross_fully_masked_row``)
    and the ``activation`` the implementation computes (default: as named in ``args``)."""
    if component not in LAYER_COMPONENTS:
        components.get(component)  # the message for an unknown name
        raise ValueError(f"{component} is not one of the layers {', '.join(LAYER_COMPONENTS)}")
    if not isinstance(args, Mapping) or not isinstance(args.get("params"), Mapping):
        raise TypeError(f"{component} needs args with a dict of parameter arrays 'params'")
    sem = _semantics(component, args, conventions, semantics)
    kernels: list[KernelCall] = []
    with np.errstate(invalid="ignore"):
        value, _, _ = _forward(component, args, sem, None, recorded=kernels)
    return LayerReference(
        value=value,
        abs_value=np.abs(np.nan_to_num(value, nan=0.0)),
        terms={},
        component=component,
        args=dict(args),
        semantics=sem,
        kernel_references=tuple(kernels),
    )


def tolerance(component: str, reference: Reference, dtype: str, precision: Precision) -> Tolerance:
    """The per-element bound for a layer component computed in ``dtype`` under ``precision``
    (componentwise forward error propagation; see the module docstring)."""
    from transpec.oracle.kernels.tolerance import Tolerance

    if not isinstance(reference, LayerReference) or reference.component != component:
        raise TypeError(f"{component}: reference must be the LayerReference of that component")
    dtype = canonical_dtype(dtype)
    un = units(dtype, precision)
    with np.errstate(invalid="ignore", over="ignore"):
        value, delta, stats = _forward(
            component, reference.args, reference.semantics, un, known=reference.kernel_references
        )
        first_order = delta + un.out * np.abs(np.nan_to_num(value, nan=0.0)) + un.eta_out
        bound = SAFETY * first_order
    bound = np.where(np.isnan(bound), np.inf, bound)
    sem = reference.semantics
    rel = (
        float(np.max(first_order / np.maximum(np.abs(np.nan_to_num(value)), 1.0)))
        if value.size
        else 0.0
    )
    derive = components.get(component).hook("derivation")
    derivation = derive(component, reference.args, sem, un, stats, rel)
    return Tolerance(
        bound=np.array(bound),
        derivation=derivation,
        parts={"first_order": first_order},
        dtype=dtype,
    )
