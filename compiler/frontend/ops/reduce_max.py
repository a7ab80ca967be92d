"""ReduceMax: IR reduce op=max (axes from the attribute or, in newer opsets, the input)."""
import numpy as np

from .reduce_sum_square import make

OP = make("ReduceMax", "max", np.max)
