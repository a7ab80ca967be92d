"""Ceil: ceil (constants and position/mask paths only)."""
import numpy as np

from ._base import unary

OP = unary("Ceil", None, np.ceil, py_fn=None, float_only=True)
