"""Softmax: IR softmax along one axis (opset >= 13 semantics; older opsets only on the last axis)."""
import numpy as np

from ..values import M
from ._base import OpSpec


def softmax(x, axis):
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def _axis(node, opset, rank):
    return node.attr("axis", -1 if opset >= 13 else 1) % rank


def _eval(node, args):
    x = np.asarray(args[0])
    return [softmax(x, node.attr("axis", -1))]


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    axis = _axis(node, ctx.opset, len(s))
    if ctx.opset < 13 and axis != len(s) - 1:
        raise ctx.unsupported("Softmax (opset < 13) over several axes")
    if ctx.has_t(vals[0]) and axis != len(s) - 1:
        raise ctx.unsupported("Softmax of attention scores over an axis other than the KV length")
    return [M(ctx.emit("softmax", [ctx.var(vals[0], dtype="f32")], "f32", out=node.outputs[0], axis=axis))]


OP = OpSpec("Softmax", _eval, _translate, t_ok=True)
