"""Max: elementwise maximum of 1..N inputs (IR binary max, chained)."""
import numpy as np

from ..sym import sym_max
from ._base import variadic

OP = variadic("Max", "max", np.maximum, sym_max)
