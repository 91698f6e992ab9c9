"""The precision the NumPy adapter computes in, one rule for every component and its backward."""

from __future__ import annotations

from typing import Any

import numpy as np


def work_dtype(dtype: Any) -> np.dtype:
    """float32 for the two-byte floats (float16, and bfloat16 as ``ml_dtypes.bfloat16``: NumPy
    has no half-precision arithmetic of its own worth the name), the dtype itself otherwise; the
    result is rounded to the input dtype once, at the end (the adapter's declared precision)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize == 2 else dtype
