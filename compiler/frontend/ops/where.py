"""Where: numpy.where(cond, x, y) (IR where)."""
import numpy as np

from ..values import M
from ._base import OpSpec, out_dtype


def _eval(node, args):
    c, x, y = (np.asarray(a) for a in args)
    return [np.where(c.astype(bool), x, y)]


def _translate(ctx, node, vals):
    c, x, y = vals
    dt = out_dtype(ctx, x, y)
    cast = "f32" if dt == "f32" else None
    cv = ctx.var(c, dtype="bool")
    xv = ctx.var(x, dtype=cast if ctx.dtype(x) != dt else None)
    yv = ctx.var(y, dtype=cast if ctx.dtype(y) != dt else None)
    return [M(ctx.emit("where", [cv, xv, yv], dt, out=node.outputs[0]))]


OP = OpSpec("Where", _eval, _translate, t_ok=True)
