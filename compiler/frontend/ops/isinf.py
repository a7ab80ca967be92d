"""IsInf: infinity test (constants and position/mask paths only)."""
import numpy as np

from ._base import unary

OP = unary("IsInf", None, np.isinf, py_fn=None, float_only=False)
