"""GatherElements: constants and position/mask paths only."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    data, idx = np.asarray(args[0]), np.asarray(args[1]).astype(np.int64)
    axis = node.attr("axis", 0)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    return [np.take_along_axis(data, idx, axis=axis)]


OP = OpSpec("GatherElements", _eval)
