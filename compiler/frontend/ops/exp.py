"""Exp: exponential (IR unary exp)."""
import numpy as np

from ._base import unary

OP = unary("Exp", "exp", np.exp, py_fn=None, float_only=True)
