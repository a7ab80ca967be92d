"""Pow: elementwise power; the result has the base's type (IR binary pow)."""
import numpy as np

from ._base import binary


def _pow(a, b):
    with np.errstate(all="ignore"):
        return np.power(a, b).astype(np.asarray(a).dtype)


OP = binary("Pow", "pow", _pow)
