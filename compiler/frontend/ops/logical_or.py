"""Or: elementwise logical or (IR binary or)."""
import numpy as np

from ._base import binary

OP = binary("Or", "or", np.logical_or, bool_out=True)
