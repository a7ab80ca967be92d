"""Greater: elementwise comparison -> bool (IR binary gt); decided symbolically for the past length when
possible."""
import numpy as np

from ._base import binary

OP = binary("Greater", "gt", np.greater, compare_op="gt", bool_out=True)
