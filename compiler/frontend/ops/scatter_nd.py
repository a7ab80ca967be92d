"""ScatterND: constants and position/mask paths only (reduction none)."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    data, idx, upd = np.asarray(args[0]).copy(), np.asarray(args[1]).astype(np.int64), np.asarray(args[2])
    if node.attr("reduction", "none") != "none":
        raise ValueError("ScatterND with a reduction is not supported")
    k = idx.shape[-1]
    flat_i = idx.reshape(-1, k)
    flat_u = upd.reshape((-1,) + data.shape[k:])
    for i, u in zip(flat_i, flat_u):
        data[tuple(i)] = u
    return [data]


OP = OpSpec("ScatterND", _eval)
