"""Sqrt: square root (IR unary sqrt)."""
import numpy as np

from ._base import unary

OP = unary("Sqrt", "sqrt", np.sqrt, py_fn=None, float_only=True)
