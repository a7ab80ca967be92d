"""Size: the number of elements, as a known scalar."""
import numpy as np

from ..sym import obj_array
from ..values import K
from ._base import OpSpec


def _eval(node, args):
    return [np.array(np.size(args[0]), dtype=np.int64)]


def _known(ctx, node, vals):
    n = 1
    for d in ctx.shape(vals[0]):
        n = n * d
    return [K(obj_array([n]).reshape(()), node.outputs[0])]


OP = OpSpec("Size", _eval, known=_known, t_ok=True)
