"""Reciprocal: 1 / x (IR unary recip)."""
import numpy as np

from ._base import unary

OP = unary("Reciprocal", "recip", lambda a: (1.0 / a).astype(a.dtype), py_fn=None, float_only=True)
