"""LayerNormalization: IR layernorm over axes [axis, rank) (only the normalized output is supported)."""
import numpy as np

from ..values import M
from ._base import OpSpec


def _eval(node, args):
    x = np.asarray(args[0], dtype=np.float32)
    axis = node.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + np.float32(node.attr("epsilon", 1e-5))) * args[1]
    if len(args) > 2 and args[2] is not None:
        y = y + args[2]
    return [y.astype(np.float32)]


def _translate(ctx, node, vals):
    if any(node.outputs[1:]):
        raise ctx.unsupported("uses the Mean / InvStdDev outputs of LayerNormalization")
    ins = [ctx.var(vals[0], dtype="f32"), ctx.var(vals[1], dtype="f32")]
    if len(vals) > 2 and vals[2] is not None:
        ins.append(ctx.var(vals[2], dtype="f32"))
    rank = len(ctx.shape(vals[0]))
    out = ctx.emit("layernorm", ins, "f32", out=node.outputs[0], eps=float(node.attr("epsilon", 1e-5)),
                   axis=node.attr("axis", -1) % rank)
    return [M(out)]


OP = OpSpec("LayerNormalization", _eval, _translate)
