"""ConstantOfShape: a tensor of the given shape filled with `value` (default float 0)."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    value = node.attr("value")
    v = np.asarray(value).reshape(-1)[0] if value is not None else np.float32(0)
    shape = tuple(int(d) for d in np.asarray(args[0]).reshape(-1))  # a symbolic dim raises: lazy
    return [np.full(shape, v, dtype=np.asarray(v).dtype)]


OP = OpSpec("ConstantOfShape", _eval)
