"""Constant: a known tensor from the node's attribute."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    a = node.attrs
    if "value" in a:
        v = np.asarray(a["value"])
    elif "value_float" in a:
        v = np.array(a["value_float"], dtype=np.float32)
    elif "value_floats" in a:
        v = np.array(a["value_floats"], dtype=np.float32)
    elif "value_int" in a:
        v = np.array(a["value_int"], dtype=np.int64)
    elif "value_ints" in a:
        v = np.array(a["value_ints"], dtype=np.int64)
    else:
        raise ValueError(f"Constant with attributes {sorted(a)} is not supported")
    return [v]


OP = OpSpec("Constant", _eval)
