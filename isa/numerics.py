"""Host-side conversions to the 8-bit element types (isa.table.DTYPES), as float32 values.

The emulator's kernels convert the same way when a value is stored into an i8 or fp8 region
(lpu/emulator/kernels.py: store_lanes); the compiler uses these for the weights it quantises, and the
tests for their references. Both round to nearest, ties to even, and saturate.
"""
from __future__ import annotations

import numpy as np

I8_MAX = 127.0   # symmetric int8: -127..127 (the MXM's int8 operands; -128 is never produced)
FP8_MAX = 448.0  # OCP e4m3fn: the largest finite value (no infinities)


def round_i8(values) -> np.ndarray:
    """Round to nearest even, saturate to -127..127 (NaN gives 0)."""
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        r = np.clip(np.rint(v), -I8_MAX, I8_MAX)
    return np.where(np.isnan(r), np.float32(0.0), r).astype(np.float32)


def round_fp8(values) -> np.ndarray:
    """Round to the nearest e4m3fn value, ties to even, saturating to +-448 (NaN stays NaN): exponent
    bias 7, 3 mantissa bits, subnormals down to 2**-9."""
    v = np.asarray(values, dtype=np.float32).astype(np.float64)
    a = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        _, e = np.frexp(a)  # a = m * 2**e, 0.5 <= m < 1: the leading bit is 2**(e - 1)
        q = np.exp2(np.maximum(e - 1, -6) - 3.0)  # the spacing of e4m3 values at a's binade
        r = np.minimum(np.rint(a / q) * q, FP8_MAX)
    r = np.where(np.isnan(v), np.nan, np.copysign(r, v))
    return r.astype(np.float32)


def round_to(values, dtype: str) -> np.ndarray:
    """Values rounded to a region element type, as float32 (fp16: nearest even; i32: truncated)."""
    v = np.asarray(values)
    if dtype == "fp16":
        with np.errstate(over="ignore"):
            return v.astype(np.float32).astype(np.float16).astype(np.float32)
    if dtype == "i32":
        if np.issubdtype(v.dtype, np.floating):
            return np.trunc(v).astype(np.float32)
        return v.astype(np.float32)
    if dtype == "i8":
        return round_i8(v)
    if dtype == "fp8":
        return round_fp8(v)
    return v.astype(np.float32)
