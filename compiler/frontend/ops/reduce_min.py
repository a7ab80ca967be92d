"""ReduceMin: IR reduce op=min (axes from the attribute or, in newer opsets, the input)."""
import numpy as np

from .reduce_sum_square import make

OP = make("ReduceMin", "min", np.min)
