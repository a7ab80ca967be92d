"""And: elementwise logical and (IR binary and)."""
import numpy as np

from ._base import binary

OP = binary("And", "and", np.logical_and, bool_out=True)
