"""Equal: elementwise comparison -> bool (IR binary eq); decided symbolically for the past length when
possible."""
import numpy as np

from ._base import binary

OP = binary("Equal", "eq", np.equal, compare_op="eq", bool_out=True)
