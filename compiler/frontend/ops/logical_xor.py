"""Xor: elementwise logical xor (constants and position/mask paths only)."""
import numpy as np

from ._base import binary

OP = binary("Xor", None, np.logical_xor)
