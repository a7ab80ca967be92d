"""Sin: sine (IR unary sin)."""
import numpy as np

from ._base import unary

OP = unary("Sin", "sin", np.sin, py_fn=None, float_only=True)
