"""Floating-point formats as the oracle sees them: names, unit roundoffs, rounding.

transpec names dtypes by strings (``"float64"``, ``"float32"``, ``"float16"``, ``"bfloat16"``)
so that no framework has to be imported to talk about them. For each format this module gives
the unit roundoff u (half the distance from 1 to the next float; Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., §2.1) and a function that rounds float64 values to
the format and back, so that the oracle can (a) compute its reference on exactly the values an
implementation received and (b) emulate a correct low-precision kernel.

======== ============ =========== ====================
name     significand  u           smallest normal
======== ============ =========== ====================
float64  53 bits      2^-53       2^-1022
float32  24 bits      2^-24       2^-126
float16  11 bits      2^-11       2^-14
bfloat16  8 bits      2^-8        2^-126
======== ============ =========== ====================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: a float64 NumPy array: the type of every reference, bound and output the oracle compares
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: ``digits`` significand bits (implicit bit included)."""

    name: str
    digits: int
    min_exponent: int  # exponent of the smallest normal number
    max_value: float

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-digits: the largest relative error of rounding to nearest."""
        return 2.0 ** (-self.digits)

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.min_exponent

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.min_exponent - self.digits + 1)


FORMATS: dict[str, Format] = {
    "float64": Format("float64", 53, -1022, float(np.finfo(np.float64).max)),
    "float32": Format("float32", 24, -126, float(np.finfo(np.float32).max)),
    "float16": Format("float16", 11, -14, 65504.0),
    "bfloat16": Format("bfloat16", 8, -126, float.fromhex("0x1.fep127")),
}

DTYPES: tuple[str, ...] = tuple(FORMATS)

_ALIASES = {
    "fp64": "float64",
    "f64": "float64",
    "double": "float64",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}


def canonical_dtype(name: str) -> str:
    """The canonical name of a dtype given by name or alias; ``ValueError`` for anything else."""
    key = str(name).strip().lower()
    key = key.removeprefix("torch.").removeprefix("numpy.")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return key


def numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a dtype name: NumPy's own for float64/32/16, ``ml_dtypes.bfloat16``
    for bfloat16 (NumPy has none; ml_dtypes, imported here on first use, adds it with
    round-to-nearest-even conversion and arithmetic rounded to bfloat16)."""
    name = canonical_dtype(dtype)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def unit_roundoff(dtype: str) -> float:
    """u for a dtype name: 2^-53, 2^-24, 2^-11 or 2^-8."""
    return FORMATS[canonical_dtype(dtype)].unit_roundoff


def round_to(x: npt.ArrayLike, dtype: str) -> FloatArray:
    """Round float64 values to ``dtype`` (nearest, ties to even) and return them as float64.

    float32 and float16 use NumPy's own conversion. bfloat16 is float32 with its low 16 bits
    rounded away, done here with integer arithmetic on the float32 bit pattern (after a first,
    exact-enough rounding to float32; double rounding float64 -> float32 -> bfloat16 can differ
    from a direct rounding only on ties that float32 itself created, which frameworks share:
    torch also converts float64 to bfloat16 through float32 on CPU).
    """
    fmt = canonical_dtype(dtype)
    arr = np.asarray(x, dtype=np.float64)
    if fmt == "float64":
        return arr.copy()
    if fmt == "float32":
        return arr.astype(np.float32).astype(np.float64)
    if fmt == "float16":
        with np.errstate(over="ignore"):
            return arr.astype(np.float16).astype(np.float64)
    # bfloat16
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = np.ascontiguousarray(arr, dtype=np.float32)
    bits = f32.view(np.uint32).astype(np.uint64)
    is_nan = np.isnan(f32)
    rounding_bias = ((bits >> 16) & 1) + 0x7FFF
    rounded = ((bits + rounding_bias) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32).astype(np.float64)
    out[is_nan] = np.nan
    return out.reshape(arr.shape)


def ulp(x: npt.ArrayLike, dtype: str) -> FloatArray:
    """The spacing of ``dtype`` floats at |x| (subnormal spacing below the normal range)."""
    fmt = FORMATS[canonical_dtype(dtype)]
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(np.where(ax > 0, ax, fmt.smallest_normal)))
    exponent = np.maximum(exponent, fmt.min_exponent)
    return np.asarray(2.0 ** (exponent - fmt.digits + 1), dtype=np.float64)


def same_bits(first: Any, second: Any) -> bool:
    """Whether two values are the same bit for bit: arrays of the same dtype, shape, memory
    layout (strides: a reduction's last bits depend on it) and bytes (NaN payloads and signed
    zeros included); mappings with the same keys in the same order and tuples of the same
    length, item by item; other values equal and of the same type."""
    if isinstance(first, np.ndarray) or isinstance(second, np.ndarray):
        return (
            isinstance(first, np.ndarray)
            and isinstance(second, np.ndarray)
            and first.dtype == second.dtype
            and first.shape == second.shape
            and first.strides == second.strides
            and first.tobytes() == second.tobytes()
        )
    if isinstance(first, Mapping) or isinstance(second, Mapping):
        return (
            isinstance(first, Mapping)
            and isinstance(second, Mapping)
            and list(first) == list(second)
            and all(same_bits(first[key], second[key]) for key in first)
        )
    if isinstance(first, tuple) or isinstance(second, tuple):
        return (
            isinstance(first, tuple)
            and isinstance(second, tuple)
            and len(first) == len(second)
            and all(same_bits(a, b) for a, b in zip(first, second, strict=True))
        )
    if type(first) is not type(second):
        return False
    try:
        return bool(first == second)
    except Exception:
        return False
