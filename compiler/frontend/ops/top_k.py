"""TopK: the k largest of the last axis of a runtime tensor (a mixture-of-experts router) -> IR topk, once
for the values and once for the indices (largest=1, sorted=1; ties give the lower index first, as ONNX
specifies); on constants, numpy."""
import numpy as np

from ..values import M
from ._base import OpSpec, ints, norm_axis


def _eval(node, args):
    x = np.asarray(args[0])
    if x.dtype == object:
        raise ValueError("symbolic TopK input")
    k = int(np.asarray(args[1]).reshape(-1)[0])
    axis = node.attr("axis", -1)
    largest = node.attr("largest", 1)
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


def _translate(ctx, node, vals):
    x, kv = vals[0], vals[1]
    shape = ctx.shape(x)
    axis = norm_axis(ctx, node.attr("axis", -1), len(shape))
    if axis != len(shape) - 1:
        raise ctx.unsupported(f"TopK along axis {axis} (supported: the last axis)")
    if not node.attr("largest", 1) or not node.attr("sorted", 1):
        raise ctx.unsupported("TopK with largest=0 or sorted=0 (supported: the k largest, sorted)")
    if ctx.has_t(x):
        raise ctx.unsupported("TopK over the KV length")
    k = ints(ctx, kv, "k", allow_sym=False)
    if len(k) != 1:
        raise ctx.unsupported("a TopK k that is not one number")
    src = ctx.var(x, dtype="f32")
    outs = []
    for part, name in zip(("values", "indices"), node.outputs):
        if name:
            outs.append(M(ctx.emit("topk", [src], "f32" if part == "values" else "i64", out=name, k=k[0], part=part)))
        else:
            outs.append(None)
    return outs


OP = OpSpec("TopK", _eval, _translate)
