"""Sigmoid: 1 / (1 + exp(-x)) (IR unary sigmoid)."""
import numpy as np

from ._base import unary

OP = unary("Sigmoid", "sigmoid", lambda a: (1.0 / (1.0 + np.exp(-a))).astype(a.dtype), py_fn=None, float_only=True)
