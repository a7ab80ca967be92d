"""Transpose: IR transpose (default perm reverses the axes); a layout view of the KV cache."""
import numpy as np

from .. import attention
from ..values import M
from ._base import OpSpec


def _perm(node, rank):
    p = node.attr("perm")
    return list(range(rank))[::-1] if p is None else [int(a) for a in p]


def _eval(node, args):
    x = np.asarray(args[0])
    return [np.transpose(x, _perm(node, x.ndim))]


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    perm = _perm(node, len(s))
    if perm == list(range(len(s))):
        return [vals[0]]
    return [M(ctx.emit("transpose", [ctx.var(vals[0])], ctx.dtype(vals[0]), out=node.outputs[0], perm=perm))]


def _kv(ctx, node, vals):
    return [attention.v_transpose(ctx, vals[0], _perm(node, vals[0].rank))]


OP = OpSpec("Transpose", _eval, _translate, kv=_kv)
