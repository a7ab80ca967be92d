"""Add: elementwise sum with numpy broadcasting (IR binary add)."""
import numpy as np

from ._base import binary

OP = binary("Add", "add", np.add, py_fn=lambda x, y: x + y)
