"""Log: natural logarithm (IR unary log)."""
import numpy as np

from ._base import unary

OP = unary("Log", "log", np.log, py_fn=None, float_only=True)
