"""Min: elementwise minimum of 1..N inputs (IR binary min, chained)."""
import numpy as np

from ..sym import sym_min
from ._base import variadic

OP = variadic("Min", "min", np.minimum, sym_min)
