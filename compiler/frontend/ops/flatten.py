"""Flatten: reshape to 2-D at `axis` (IR reshape)."""
import numpy as np

from ..sym import Sym
from ..values import M
from ._base import OpSpec


def _prod(ctx, dims):
    n, syms = 1, []
    for d in dims:
        if isinstance(d, Sym):
            syms.append(d)
        else:
            n *= int(d)
    if not syms:
        return n
    if len(syms) == 1 and n == 1:
        return syms[0]
    raise ctx.unsupported("flattens the KV length together with other dims")


def _eval(node, args):
    x = np.asarray(args[0])
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    axis = node.attr("axis", 1)
    axis = axis + len(s) if axis < 0 else axis
    return [M(ctx.reshape(vals[0], (_prod(ctx, s[:axis]), _prod(ctx, s[axis:])), out=node.outputs[0]))]


OP = OpSpec("Flatten", _eval, _translate, t_ok=True)
