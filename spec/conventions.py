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
``layer_norm_variance  ``"two_pass"``: Σ(x - μ)²/n from    ``"one_pass"``: E[x²] - E[x]² (Flax
_algorithm``           the computed μ, or Welford         ``use_fast_variance=True``, Keras'
                       (torch, NumPy)                     numpy backend): the equivalence bound
                                                          gains the cancellation term
                                                          γ·E[x²] (docs/tolerance.md §3.3)
``flush_subnormals``   ``()``: gradual underflow in       dtypes that flush subnormals to zero
                       every format (IEEE 754)            (XLA on CPU, ONNX Runtime's float32
                                                          softmax, GPU kernels under FTZ)
``scalar_attributes``  ``"exact"``: eps, scale, softcap  ``"float32"``: rounded to float32 first
                       used as given                      (ONNX ``epsilon``/``scale`` attributes)
``mask_fill_mode``     ``"replace"``: a finite            ``"add"``: the fill is *added* to the
                       ``mask_fill`` replaces the         masked scores (Hugging Face's masks:
                       masked scores (Flax, JAX)          0 / ``finfo(dtype).min``, added)
``causal_alignment``   (see above)                        ``"top_left_decode_all"``: top-left for
                                                          Lq > 1, but a single query (decode)
                                                          sees every key (Hugging Face's
                                                          ``sdpa_attention_forward``)
=====================  =================================  ========================================

Values per dtype. Any field may instead be a per-dtype mapping (``mask_fill={"float16": -65504.0,
"float32": -1e9}``, ``rms_norm_default_eps={"float32": 1e-6, "bfloat16": 1e-5}``), each value
checked like a plain one; ``mask_fill`` also takes the named rule ``"finfo_min"`` (the most
negative finite number of the dtype under test, as ``jnp.finfo(dtype).min`` in Flax).
:meth:`Conventions.for_dtype` resolves them; a run judges each dtype under the resolved values.
``rms_norm_default_eps`` may also be a number: the eps a library uses for ``eps=None``
(1e-6, 1e-5, 1e-7 ...).

Under a finite ``mask_fill`` a fully masked row is not special: every score of the row equals the
fill, so its weights are uniform and its output is the mean of the value rows. ``fully_masked_row``
only decides what happens when masked scores are -inf.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

BoolMask = Literal["keep", "ignore"]
CausalAlignment = Literal["top_left", "bottom_right", "top_left_decode_all"]
FullyMaskedRow = Literal["zero", "nan"]
GQAMapping = Literal["interleave", "tile"]
Variance = Literal["biased", "unbiased"]
NormEps = Literal["inside_sqrt", "added_to_std"]
RMSEps = Literal["inside_sqrt", "added_to_rms"]
RMSWeight = Literal["w", "one_plus_w"]
RMSDefaultEps = Literal["dtype", "opmath"] | float
SinusoidalLayout = Literal["interleaved", "concatenated"]
SinusoidalFrequencies = Literal["paper", "tensor2tensor"]
RopePairing = Literal["half_split", "interleaved"]
VarianceAlgorithm = Literal["two_pass", "one_pass"]
ScalarAttributes = Literal["exact", "float32"]
MaskFillMode = Literal["replace", "add"]

_CHOICES: dict[str, tuple[Any, ...]] = {
    "bool_mask": ("keep", "ignore"),
    "causal_alignment": ("top_left", "bottom_right", "top_left_decode_all"),
    "fully_masked_row": ("zero", "nan"),
    "gqa_mapping": ("interleave", "tile"),
    "layer_norm_variance": ("biased", "unbiased"),
    "layer_norm_eps": ("inside_sqrt", "added_to_std"),
    "rms_norm_eps": ("inside_sqrt", "added_to_rms"),
    "rms_norm_weight": ("w", "one_plus_w"),
    "sinusoidal_layout": ("interleaved", "concatenated"),
    "sinusoidal_frequencies": ("paper", "tensor2tensor"),
    "rope_pairing": ("half_split", "interleaved"),
    "layer_norm_variance_algorithm": ("two_pass", "one_pass"),
    "scalar_attributes": ("exact", "float32"),
    "mask_fill_mode": ("replace", "add"),
}

_DESCRIPTIONS: dict[str, str] = {
    "bool_mask": "meaning of True in a boolean attention mask",
    "mask_fill": "value that replaces masked scores (None: -inf)",
    "causal_alignment": "which corner the causal mask is anchored to when Lq != Lk "
    "(top_left_decode_all: top-left, but one query sees every key)",
    "fully_masked_row": "output of a query row whose every key is masked (-inf fill)",
    "gqa_mapping": "which kv head a query head reads in grouped-query attention",
    "layer_norm_variance": "LayerNorm variance estimator",
    "layer_norm_eps": "where LayerNorm adds eps",
    "rms_norm_eps": "where RMSNorm adds eps",
    "rms_norm_weight": "how RMSNorm applies its weight",
    "rms_norm_default_eps": "RMSNorm eps for eps=None: epsilon of the dtype or of its math type, "
    "or the library's default eps (a number > 0)",
    "sinusoidal_layout": "where the sine and cosine of each frequency sit in the encoding",
    "sinusoidal_frequencies": "the frequency set of the sinusoidal encoding",
    "rope_pairing": "which coordinates RoPE rotates together",
    "layer_norm_variance_algorithm": "how LayerNorm computes its variance: two-pass (or Welford) "
    "or the one-pass E[x²] − E[x]², judged by that algorithm's bound",
    "flush_subnormals": (
        "dtypes whose subnormal results the implementation flushes to zero (FTZ/DAZ): the "
        "underflow floor of those formats becomes their smallest normal number"
    ),
    "scalar_attributes": (
        "precision of the scalar arguments eps, scale and softcap: as given, or rounded to "
        "float32 first (ONNX float attributes)"
    ),
    "mask_fill_mode": (
        "how a finite mask_fill applies to a masked score: replaces it, or is added to it "
        "(Hugging Face's 0 / finfo(dtype).min masks)"
    ),
}


#: per-dtype values: the note ``transpec list conventions`` prints under the table
PER_DTYPE_NOTE = (
    "any convention may instead be a per-dtype mapping, e.g. mask_fill={'float16': -65504.0, "
    "'float32': -1e9} (every dtype under test needs an entry)"
)

#: the allowed values of the fields that are not a closed set of names, as listed
_OPEN_VALUES: dict[str, tuple[Any, ...]] = {
    "mask_fill": ("None (-inf)", "any finite float"),
    "rms_norm_default_eps": ("dtype", "opmath", "a number > 0"),
    "flush_subnormals": ("() (none)", "dtype names, e.g. float32,bfloat16"),
}

#: conventions that concern every component: they change the tolerance of any call, not one
#: block's reference (the registry's records list the conventions of their own reference)
EVERY_COMPONENT: tuple[str, ...] = ("flush_subnormals", "scalar_attributes")
#: the scalar arguments ``scalar_attributes`` rounds (names of component arguments)
SCALAR_ATTRIBUTE_ARGUMENTS: tuple[str, ...] = ("eps", "scale", "softcap")

#: the dtypes a per-dtype mapping may name (transpec's canonical names)
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

#: the largest finite number of each dtype, for the ``finfo_min`` rule
_FINFO_MAX: dict[str, float] = {
    "float64": 1.7976931348623157e308,
    "float32": 3.4028234663852886e38,
    "float16": 65504.0,
    "bfloat16": float.fromhex("0x1.fep127"),
}

#: named rules a field's value may be: name -> (meaning, the value for a dtype)
_RULES: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "mask_fill": {
        "finfo_min": (
            "finfo(dtype).min, the most negative finite number of the dtype under test",
            lambda dtype: -_FINFO_MAX[dtype],
        ),
    },
}


def _check_value(name: str, value: Any) -> None:
    """A plain value of field ``name``; ``ValueError`` (one line) when it is not allowed."""
    if name in _CHOICES:
        allowed = _CHOICES[name]
        if value not in allowed:
            raise ValueError(
                f"convention {name}={value!r} is not one of {', '.join(map(repr, allowed))}"
            )
        return
    if name == "mask_fill":
        if value is None:
            return
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(
                f"convention mask_fill={value!r} must be finite, or None for -inf"
                + " (or 'finfo_min', or a per-dtype mapping)"
            )
        return
    if name == "rms_norm_default_eps":
        if value in ("dtype", "opmath"):
            return
        if not _is_number(value) or not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(
                f"convention rms_norm_default_eps={value!r} is not 'dtype', 'opmath' or a "
                "finite number > 0"
            )
        return


def _plain(value: Any) -> Any:
    """A convention value as JSON writes it: a per-dtype mapping as a dict, a tuple as a list."""
    if isinstance(value, PerDtype):
        return dict(value)
    return list(value) if isinstance(value, tuple) else value


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


class PerDtype(Mapping[str, Any]):
    """A convention value given per dtype: an immutable mapping of canonical dtype names to
    values of the field (each checked like a plain value), hashable like the other values."""

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = tuple(sorted(items.items()))

    @classmethod
    def checked(cls, name: str, value: Mapping[str, Any]) -> PerDtype:
        """``value`` checked for field ``name``: known dtype names, allowed values, not
        empty; ``ValueError`` (one line) otherwise."""
        if isinstance(value, PerDtype):
            return value
        if not value:
            raise ValueError(f"convention {name}: a per-dtype mapping needs at least one dtype")
        for dtype, item in value.items():
            if dtype not in DTYPE_NAMES:
                raise ValueError(
                    f"convention {name}: {dtype!r} is not a dtype name; expected "
                    f"{', '.join(DTYPE_NAMES)}"
                )
            if isinstance(item, Mapping):
                raise ValueError(f"convention {name}[{dtype!r}]: a mapping cannot be nested")
            if not (isinstance(item, str) and item in _RULES.get(name, {})):
                try:
                    _check_value(name, item)
                except ValueError as exc:
                    raise ValueError(f"{exc} (for {dtype})") from None
        return cls(value)

    def resolve(self, name: str, dtype: str) -> Any:
        """The value for ``dtype``; ``ValueError`` naming the field when it has none."""
        for key, item in self._items:
            if key == dtype:
                return item
        raise ValueError(
            f"convention {name} has no value for {dtype} (it names "
            f"{', '.join(k for k, _ in self._items)})"
        )

    def __getitem__(self, key: str) -> Any:
        for k, item in self._items:
            if k == key:
                return item
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(dict(self._items))


def _check_flush(value: Any) -> tuple[str, ...]:
    """``flush_subnormals`` as a sorted tuple of distinct dtype names; ``ValueError`` otherwise.

    Meaning: in the listed formats the implementation may return 0 for a result whose magnitude
    is below the smallest normal number (flush-to-zero), or treat such an input as 0
    (denormals-are-zero). The error of one such flush is below the smallest normal, so the
    tolerance model's underflow floor η of that format (half the smallest subnormal for a
    format with gradual underflow) becomes its smallest normal number; nothing else widens.
    """
    if isinstance(value, str):
        value = tuple(v.strip() for v in value.split(",") if v.strip())
    if not isinstance(value, (tuple, list, frozenset, set)):
        raise ValueError(f"convention flush_subnormals={value!r} must be a tuple of dtype names")
    names = []
    for item in value:
        if item not in DTYPE_NAMES:
            raise ValueError(
                f"convention flush_subnormals: {item!r} is not one of {', '.join(DTYPE_NAMES)}"
            )
        names.append(item)
    return tuple(sorted(set(names), key=DTYPE_NAMES.index))


@dataclass(frozen=True)
class Conventions:
    """The semantic choices an implementation declares; defaults are transpec's canonical ones.

    See the module docstring for the meaning of every field and who uses each variant.
    """

    bool_mask: BoolMask = "keep"
    mask_fill: float | None = None  # or "finfo_min", or a per-dtype mapping (module docstring)
    causal_alignment: CausalAlignment = "top_left"
    fully_masked_row: FullyMaskedRow = "zero"
    gqa_mapping: GQAMapping = "interleave"
    layer_norm_variance: Variance = "biased"
    layer_norm_eps: NormEps = "inside_sqrt"
    rms_norm_eps: RMSEps = "inside_sqrt"
    rms_norm_weight: RMSWeight = "w"
    rms_norm_default_eps: RMSDefaultEps | Mapping[str, Any] = "dtype"
    sinusoidal_layout: SinusoidalLayout = "interleaved"
    sinusoidal_frequencies: SinusoidalFrequencies = "paper"
    rope_pairing: RopePairing = "half_split"
    layer_norm_variance_algorithm: VarianceAlgorithm = "two_pass"

    #: the dtypes in which the implementation flushes subnormal results to zero (its outputs
    #: and the intermediates it keeps in that format); see :func:`_check_flush`
    flush_subnormals: tuple[str, ...] = ()
    #: the precision of scalar arguments the implementation takes as attributes (``eps``,
    #: ``scale``, ``softcap``): ``"exact"`` (as given) or ``"float32"`` (rounded to float32
    #: first, as ONNX's float attributes are); the reference uses the rounded value
    scalar_attributes: ScalarAttributes = "exact"
    #: how a finite ``mask_fill`` applies to a masked score: ``"replace"`` (the score becomes
    #: the fill) or ``"add"`` (the score plus the fill, as an additive 0 / fill mask: a fully
    #: masked row is then softmax(S + fill), whose rounding at the magnitude of the fill the
    #: tolerance model carries like any additive mask's); meaningless, so refused, with -inf
    mask_fill_mode: MaskFillMode = "replace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "flush_subnormals", _check_flush(self.flush_subnormals))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                object.__setattr__(self, f.name, PerDtype.checked(f.name, value))
            elif not (isinstance(value, str) and value in _RULES.get(f.name, {})):
                _check_value(f.name, value)
        if self.mask_fill_mode == "add" and self.mask_fill is None:
            raise ValueError(
                "convention mask_fill_mode='add' needs a finite mask_fill (an added -inf is the "
                "replacing -inf of mask_fill=None)"
            )

    def causal_offset(self, q_len: int, kv_len: int) -> int | None:
        """The causal rule for Lq = ``q_len`` queries and Lk = ``kv_len`` keys: key j is visible
        to query i iff j <= i + offset; None when the rule hides no key. top_left: offset 0;
        bottom_right: Lk - Lq; top_left_decode_all: 0 for Lq > 1, and None (every key
        visible) for a single query, as ``is_causal`` only applies when Lq > 1."""
        if self.causal_alignment == "bottom_right":
            return kv_len - q_len
        if self.causal_alignment == "top_left_decode_all" and q_len == 1:
            return None
        return 0

    def for_dtype(self, dtype: str) -> Conventions:
        """These conventions with every per-dtype value and named rule resolved for ``dtype``
        (a canonical name): what the reference of a run in that dtype follows. ``ValueError``
        (one line) when a per-dtype mapping has no entry for ``dtype``."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PerDtype):
                value = value.resolve(f.name, dtype)
            if isinstance(value, str) and value in _RULES.get(f.name, {}):
                value = _RULES[f.name][value][1](dtype)
            if value is not getattr(self, f.name):
                changes[f.name] = value
        return dataclasses.replace(self, **changes) if changes else self

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
        """Plain values, JSON-ready (a per-dtype mapping as a dict, a tuple of names as a
        list); :meth:`from_dict` reads it."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conventions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown convention(s): {', '.join(unknown)}")
        return cls(**data)


CANONICAL = Conventions()


def describe() -> list[tuple[str, str, tuple[Any, ...]]]:
    """(field, description, allowed values) for every convention, canonical value first.

    Every field also takes a per-dtype mapping ({"float16": v, "bfloat16": w, ...}, each value
    one of the allowed ones); the named rules of a field (``"finfo_min"``) are listed with its
    values."""
    rows: list[tuple[str, str, tuple[Any, ...]]] = []
    for f in dataclasses.fields(Conventions):
        allowed = _CHOICES.get(f.name) or _OPEN_VALUES.get(f.name, ("see the field's docs",))
        rules = tuple(f"{name!r} ({text})" for name, (text, _) in _RULES.get(f.name, {}).items())
        rows.append((f.name, _DESCRIPTIONS[f.name], (*allowed, *rules)))
    return rows


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"key=value"`` (as ``transpec check --convention`` takes it) -> ``(key, value)``, the
    value typed for its field: a choice's name, ``mask_fill`` a finite float or ``none``.
    ``ValueError`` with one line for anything else; the value itself is validated when the
    :class:`Conventions` is made."""
    key, equals, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    known = [f.name for f in dataclasses.fields(Conventions)]
    if not equals or not key or not raw:
        raise ValueError(f"convention {text!r} is not key=value (keys: {', '.join(known)})")
    if key not in known:
        raise ValueError(f"unknown convention {key!r}; expected one of {', '.join(known)}")
    parse = _VALUE_PARSERS.get(key)
    if parse is None:
        return key, raw
    try:
        return key, parse(raw)
    except ValueError:
        raise ValueError(f"convention {key}={raw!r}: {_VALUE_FORMS[key]}") from None


def _optional_float(raw: str) -> float | None:
    return None if raw.lower() == "none" else float(raw)


#: fields whose value is not a plain name: how ``key=value`` text becomes the value
_VALUE_PARSERS: dict[str, Any] = {
    "mask_fill": _optional_float,
    "flush_subnormals": lambda raw: () if raw.lower() in ("none", "()") else raw,
}
#: the accepted text of those fields, for messages
_VALUE_FORMS: dict[str, str] = {
    "mask_fill": "expected a finite number or none",
    "flush_subnormals": "expected dtype names separated by commas, or none",
}


def with_assignments(conventions: Conventions, assignments: list[str]) -> Conventions:
    """``conventions`` with every ``key=value`` of ``assignments`` applied (later ones win);
    ``ValueError`` with one line for an unknown key or a value the field refuses."""
    changes = dict(parse_assignment(a) for a in assignments)
    return conventions.replace(**changes)
