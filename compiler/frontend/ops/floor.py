"""Floor: floor (constants and position/mask paths only)."""
import numpy as np

from ._base import unary

OP = unary("Floor", None, np.floor, py_fn=None, float_only=True)
