"""Expand: IR expand to the broadcast shape; on the KV cache, the GQA head repeat."""
import numpy as np

from .. import attention
from ..values import M
from ._base import OpSpec, broadcast_shapes, ints


def _eval(node, args):
    x = np.asarray(args[0])
    shape = tuple(int(d) for d in np.asarray(args[1]).reshape(-1))
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, shape)).copy()]


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    try:
        out = broadcast_shapes(s, tuple(ints(ctx, vals[1], "shape")))
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    if out == s:
        return [vals[0]]
    return [M(ctx.emit("expand", [ctx.var(vals[0])], ctx.dtype(vals[0]), out=node.outputs[0],
                       shape=ctx.ir_shape(out)))]


def _kv(ctx, node, vals):
    return [attention.v_expand(ctx, vals[0], ints(ctx, vals[1], "shape"))]


OP = OpSpec("Expand", _eval, _translate, kv=_kv)
