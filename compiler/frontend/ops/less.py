"""Less: elementwise comparison -> bool (IR binary lt); decided symbolically for the past length when
possible."""
import numpy as np

from ._base import binary

OP = binary("Less", "lt", np.less, compare_op="lt", bool_out=True)
