"""Round: round half to even (constants and position/mask paths only)."""
import numpy as np

from ._base import unary

OP = unary("Round", None, np.round, py_fn=None, float_only=True)
