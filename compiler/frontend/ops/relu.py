"""Relu: max(x, 0) (IR unary relu)."""
import numpy as np

from ._base import unary

OP = unary("Relu", "relu", lambda a: np.maximum(a, 0).astype(a.dtype), py_fn=None, float_only=False)
