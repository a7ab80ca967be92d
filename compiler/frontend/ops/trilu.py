"""Trilu: upper/lower triangle (constants and position/mask paths only)."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    x = np.asarray(args[0])
    k = int(np.asarray(args[1]).reshape(())) if len(args) > 1 and args[1] is not None else 0
    return [np.triu(x, k) if node.attr("upper", 1) else np.tril(x, k)]


OP = OpSpec("Trilu", _eval)
