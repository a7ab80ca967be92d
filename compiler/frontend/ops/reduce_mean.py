"""ReduceMean: IR reduce op=mean (axes from the attribute or, in newer opsets, the input)."""
import numpy as np

from .reduce_sum_square import make

OP = make("ReduceMean", "mean", np.mean)
