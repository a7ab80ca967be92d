"""Not: logical not (IR unary not)."""
import numpy as np

from ._base import unary

OP = unary("Not", "not", np.logical_not, py_fn=None, float_only=False)
