"""Cos: cosine (IR unary cos)."""
import numpy as np

from ._base import unary

OP = unary("Cos", "cos", np.cos, py_fn=None, float_only=True)
