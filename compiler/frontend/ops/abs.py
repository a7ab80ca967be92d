"""Abs: absolute value (IR unary abs)."""
import numpy as np

from ._base import unary

OP = unary("Abs", "abs", np.abs, py_fn=None, float_only=False)
