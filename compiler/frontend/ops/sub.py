"""Sub: elementwise difference (IR binary sub)."""
import numpy as np

from ._base import binary

OP = binary("Sub", "sub", np.subtract, py_fn=lambda x, y: x - y)
