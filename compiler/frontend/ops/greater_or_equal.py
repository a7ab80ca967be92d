"""GreaterOrEqual: elementwise comparison -> bool (IR binary ge); decided symbolically for the past length when
possible."""
import numpy as np

from ._base import binary

OP = binary("GreaterOrEqual", "ge", np.greater_equal, compare_op="ge", bool_out=True)
