"""Neg: negation (IR unary neg)."""
import numpy as np

from ._base import unary

OP = unary("Neg", "neg", np.negative, py_fn=lambda x: -x, float_only=False)
