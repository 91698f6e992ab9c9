"""The conventions that real libraries disagree on, as one declared object.

transpec fixes one canonical meaning for every building block and names each choice that real
libraries make differently. An implementation under test *declares* its choices in a
:class:`Conventions`; the oracle then computes the reference under exactly those choices. A
declared variant is conformance; an undeclared deviation is a failure.

This module imports neither sympy nor torch: the oracle and the adapters read it on every run.

Canonical meaning (the default of every field) and the variants seen in the field:

=====================  =================================  ========================================
field                  canonical                          variants
=====================  =================================  ========================================
``bool_mask``          ``"keep"``: True = attend          ``"ignore"``: True = masked out
                       (SDPA, JAX, ONNX)                  (``nn.MultiheadAttention`` masks)
``mask_fill``          ``None``: masked scores are -inf   a finite number that *replaces* masked
                                                          scores (-1e9, ``finfo.min``)
``causal_alignment``   ``"top_left"``: query i sees keys  ``"bottom_right"``: query i sees keys
                       j <= i (SDPA ``is_causal``, JAX)   j <= i + Lk - Lq (FlashAttention >= 2.1,
                                                          KV-cache decode)
``fully_masked_row``   ``"zero"``: a row with no key to   ``"nan"``: the 0/0 of a naive softmax
                       attend to outputs 0 (SDPA >= 2.5,  (``nn.MultiheadAttention``)
                       FlashAttention, ONNX)
``gqa_mapping``        ``"interleave"``: query head h     ``"tile"``: query head h uses kv head
                       uses kv head h // (Hq / Hkv)       h % Hkv (old ONNX)
                       (``repeat_interleave``)
``softcap``            applied to the scaled scores,      --
                       before the mask
``layer_norm_variance``  ``"biased"``: divide by n        ``"unbiased"``: divide by n - 1
                                                          (``torch.std``, Annotated Transformer)
``layer_norm_eps``     ``"inside_sqrt"``:                 ``"added_to_std"``:
                       (x - mu) / sqrt(var + eps)         (x - mu) / (std + eps)
``rms_norm_eps``       ``"inside_sqrt"``:                 ``"added_to_rms"``:
                       x / sqrt(mean(x^2) + eps)          x / (sqrt(mean(x^2)) + eps)
``rms_norm_weight``    ``"w"``: y * w                     ``"one_plus_w"``: y * (1 + w) (Gemma)
``rms_norm_default_eps`` ``"dtype"``: eps=None means      ``"opmath"``: eps=None means the machine
                       the machine epsilon of the input   epsilon of the math type, float32 for
                       dtype (2u)                         float16/bfloat16 inputs (``F.rms_norm``
                                                          since torch 2.6, measured on 2.13)
``sinusoidal_layout``  ``"interleaved"``: PE[p, 2i] =     ``"concatenated"``: PE[p, i] = sin,
                       sin(p w_i), PE[p, 2i+1] = cos      PE[p, d/2 + i] = cos (tensor2tensor,
                       (the paper, the PyTorch tutorial)  fairseq)
``sinusoidal_frequencies`` ``"paper"``: w_i =             ``"tensor2tensor"``: w_i =
                       10000^(-2i/d)                      10000^(-i/(d/2 - 1)) (last one 1/10000)
``rope_pairing``       ``"half_split"``: pair (x[i],      ``"interleaved"``: pair (x[2i], x[2i+1])
                       x[i + d/2]) (GPT-NeoX, HF Llama    (GPT-J, RoFormer, Meta Llama's complex
                       ``rotate_half``)                   form)
=====================  =================================  ========================================

Under a finite ``mask_fill`` a fully masked row is not special: every score of the row equals the
fill, so its weights are uniform and its output is the mean of the value rows. ``fully_masked_row``
only decides what happens when masked scores are -inf.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

BoolMask = Literal["keep", "ignore"]
CausalAlignment = Literal["top_left", "bottom_right"]
FullyMaskedRow = Literal["zero", "nan"]
GQAMapping = Literal["interleave", "tile"]
Variance = Literal["biased", "unbiased"]
NormEps = Literal["inside_sqrt", "added_to_std"]
RMSEps = Literal["inside_sqrt", "added_to_rms"]
RMSWeight = Literal["w", "one_plus_w"]
RMSDefaultEps = Literal["dtype", "opmath"]
SinusoidalLayout = Literal["interleaved", "concatenated"]
SinusoidalFrequencies = Literal["paper", "tensor2tensor"]
RopePairing = Literal["half_split", "interleaved"]

_CHOICES: dict[str, tuple[Any, ...]] = {
    "bool_mask": ("keep", "ignore"),
    "causal_alignment": ("top_left", "bottom_right"),
    "fully_masked_row": ("zero", "nan"),
    "gqa_mapping": ("interleave", "tile"),
    "layer_norm_variance": ("biased", "unbiased"),
    "layer_norm_eps": ("inside_sqrt", "added_to_std"),
    "rms_norm_eps": ("inside_sqrt", "added_to_rms"),
    "rms_norm_weight": ("w", "one_plus_w"),
    "rms_norm_default_eps": ("dtype", "opmath"),
    "sinusoidal_layout": ("interleaved", "concatenated"),
    "sinusoidal_frequencies": ("paper", "tensor2tensor"),
    "rope_pairing": ("half_split", "interleaved"),
}

_DESCRIPTIONS: dict[str, str] = {
    "bool_mask": "meaning of True in a boolean attention mask",
    "mask_fill": "value that replaces masked scores (None: -inf)",
    "causal_alignment": "which corner the causal mask is anchored to when Lq != Lk",
    "fully_masked_row": "output of a query row whose every key is masked (-inf fill)",
    "gqa_mapping": "which kv head a query head reads in grouped-query attention",
    "layer_norm_variance": "LayerNorm variance estimator",
    "layer_norm_eps": "where LayerNorm adds eps",
    "rms_norm_eps": "where RMSNorm adds eps",
    "rms_norm_weight": "how RMSNorm applies its weight",
    "rms_norm_default_eps": "RMSNorm eps for eps=None: epsilon of the dtype or of its math type",
    "sinusoidal_layout": "where the sine and cosine of each frequency sit in the encoding",
    "sinusoidal_frequencies": "the frequency set of the sinusoidal encoding",
    "rope_pairing": "which coordinates RoPE rotates together",
}


@dataclass(frozen=True)
class Conventions:
    """The semantic choices an implementation declares; defaults are transpec's canonical ones.

    See the module docstring for the meaning of every field and who uses each variant.
    """

    bool_mask: BoolMask = "keep"
    mask_fill: float | None = None
    causal_alignment: CausalAlignment = "top_left"
    fully_masked_row: FullyMaskedRow = "zero"
    gqa_mapping: GQAMapping = "interleave"
    layer_norm_variance: Variance = "biased"
    layer_norm_eps: NormEps = "inside_sqrt"
    rms_norm_eps: RMSEps = "inside_sqrt"
    rms_norm_weight: RMSWeight = "w"
    rms_norm_default_eps: RMSDefaultEps = "dtype"
    sinusoidal_layout: SinusoidalLayout = "interleaved"
    sinusoidal_frequencies: SinusoidalFrequencies = "paper"
    rope_pairing: RopePairing = "half_split"

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"convention {name}={value!r} is not one of {', '.join(map(repr, allowed))}"
                )
        if self.mask_fill is not None:
            fill = float(self.mask_fill)
            if fill != fill or fill in (float("inf"), float("-inf")):
                raise ValueError(
                    f"convention mask_fill={self.mask_fill!r} must be finite, or None for -inf"
                )

    def replace(self, **changes: Any) -> Conventions:
        """A copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def differences(self) -> dict[str, Any]:
        """The fields that differ from the canonical conventions."""
        canonical = Conventions()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(canonical, f.name)
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conventions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown convention(s): {', '.join(unknown)}")
        return cls(**data)


CANONICAL = Conventions()


def describe() -> list[tuple[str, str, tuple[Any, ...]]]:
    """(field, description, allowed values) for every convention, canonical value first."""
    rows: list[tuple[str, str, tuple[Any, ...]]] = []
    for f in dataclasses.fields(Conventions):
        allowed = _CHOICES.get(f.name, ("None (-inf)", "any finite float"))
        rows.append((f.name, _DESCRIPTIONS[f.name], allowed))
    return rows
