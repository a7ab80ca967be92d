"""RMSNormalization (opset 23): IR rmsnorm, x / sqrt(mean(x^2) + eps) * scale."""
import numpy as np

from ..values import M
from ._base import OpSpec


def rms_eval(node, args):
    x = np.asarray(args[0], dtype=np.float32)
    axis = node.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    ms = (x * x).mean(axis=axes, keepdims=True)
    return [(x / np.sqrt(ms + np.float32(node.attr("epsilon", 1e-5))) * args[1]).astype(np.float32)]


def rms_translate(ctx, node, vals):
    if any(node.outputs[1:]):
        raise ctx.unsupported("uses the extra outputs of the normalization")
    rank = len(ctx.shape(vals[0]))
    out = ctx.emit("rmsnorm", [ctx.var(vals[0], dtype="f32"), ctx.var(vals[1], dtype="f32")], "f32",
                   out=node.outputs[0], eps=float(node.attr("epsilon", 1e-5)), axis=node.attr("axis", -1) % rank)
    return [M(out)]


OP = OpSpec("RMSNormalization", rms_eval, rms_translate)
