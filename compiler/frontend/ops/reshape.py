"""Reshape: explicit IR reshape (0 and -1 resolved, T kept as a dim of its own); a layout view of the
KV cache."""
import numpy as np

from .. import attention
from ..values import M
from ._base import OpSpec, ints, reshape_shape


def _eval(node, args):
    x = np.asarray(args[0])
    target = [int(d) for d in np.asarray(args[1]).reshape(-1)]
    return [x.reshape(reshape_shape(x.shape, target, node.attr("allowzero", 0)))]


def _out_shape(ctx, node, vals):
    target = ints(ctx, vals[1], "target shape")
    try:
        return reshape_shape(ctx.shape(vals[0]), target, node.attr("allowzero", 0))
    except Exception as exc:
        raise ctx.unsupported(f"cannot resolve the target shape: {exc}") from None


def _translate(ctx, node, vals):
    return [M(ctx.reshape(vals[0], _out_shape(ctx, node, vals), out=node.outputs[0]))]


def _kv(ctx, node, vals):
    return [attention.v_reshape(ctx, vals[0], _out_shape(ctx, node, vals))]


OP = OpSpec("Reshape", _eval, _translate, kv=_kv, t_ok=True)
