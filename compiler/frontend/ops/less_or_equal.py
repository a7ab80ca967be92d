"""LessOrEqual: elementwise comparison -> bool (IR binary le); decided symbolically for the past length when
possible."""
import numpy as np

from ._base import binary

OP = binary("LessOrEqual", "le", np.less_equal, compare_op="le", bool_out=True)
