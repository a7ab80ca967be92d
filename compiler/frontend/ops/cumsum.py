"""CumSum: cumulative sum along an axis (constants and position/mask paths only)."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    x = np.asarray(args[0])
    axis = int(np.asarray(args[1]).reshape(()))
    if node.attr("reverse", 0):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if node.attr("exclusive", 0):
        y = y - x
    if node.attr("reverse", 0):
        y = np.flip(y, axis)
    return [y]


OP = OpSpec("CumSum", _eval)
