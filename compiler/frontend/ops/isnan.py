"""IsNaN: x != x -> bool (IR unary isnan)."""
import numpy as np

from ._base import unary

OP = unary("IsNaN", "isnan", np.isnan, py_fn=None, float_only=False)
