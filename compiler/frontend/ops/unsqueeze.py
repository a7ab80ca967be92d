"""Unsqueeze: insert unit dims (IR reshape); a layout view of the KV cache."""
import numpy as np

from .. import attention
from ..values import M
from ._base import OpSpec, arr_attr_or_input, attr_or_input


def unsqueeze_shape(shape, axes):
    r = len(shape) + len(axes)
    out = list(shape)
    for a in sorted(x % r for x in axes):
        out.insert(a, 1)
    return tuple(out)


def _eval(node, args):
    x = np.asarray(args[0])
    return [x.reshape(unsqueeze_shape(x.shape, arr_attr_or_input(node, args, "axes", 1)))]


def _translate(ctx, node, vals):
    axes = attr_or_input(ctx, node, vals, "axes", 1, "axes")
    return [M(ctx.reshape(vals[0], unsqueeze_shape(ctx.shape(vals[0]), axes), out=node.outputs[0]))]


def _kv(ctx, node, vals):
    return [attention.v_unsqueeze(ctx, vals[0], attr_or_input(ctx, node, vals, "axes", 1, "axes"))]


OP = OpSpec("Unsqueeze", _eval, _translate, kv=_kv, t_ok=True)
