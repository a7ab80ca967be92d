"""Shape: the (symbolic) shape of any tensor, as a known int64 vector; start/end select a range."""
import numpy as np

from ..sym import obj_array
from ..values import K
from ._base import OpSpec


def _range(node, rank):
    start = node.attr("start", 0)
    end = node.attr("end", rank)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = max(0, min(rank, end + rank if end < 0 else end))
    return start, end


def _eval(node, args):
    s = np.shape(args[0])
    a, b = _range(node, len(s))
    return [np.array(s[a:b], dtype=np.int64)]


def _known(ctx, node, vals):
    s = ctx.shape(vals[0])
    a, b = _range(node, len(s))
    return [K(obj_array(list(s[a:b])), node.outputs[0])]


OP = OpSpec("Shape", _eval, known=_known, t_ok=True)
