"""Tanh: hyperbolic tangent (IR unary tanh)."""
import numpy as np

from ._base import unary

OP = unary("Tanh", "tanh", np.tanh, py_fn=None, float_only=True)
