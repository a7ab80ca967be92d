"""Concat: IR concat; Concat(past_kv, new, axis=seq) is the KV cache append (kv_append)."""
import numpy as np

from .. import attention
from ..sym import normalize
from ..values import M, Past
from ._base import OpSpec, norm_axis, out_dtype


def _eval(node, args):
    arrs = [np.asarray(a) for a in args if a is not None]
    if any(a.dtype == object for a in arrs):
        arrs = [a.astype(object) for a in arrs]
    return [normalize(np.concatenate(arrs, axis=node.attr("axis")))]


def _translate(ctx, node, vals):
    vals = [v for v in vals if v is not None]
    shapes = [ctx.shape(v) for v in vals]
    axis = norm_axis(ctx, node.attr("axis"), len(shapes[0]))
    vals = [v for v, s in zip(vals, shapes) if not (s[axis] == 0)]  # empty pieces
    if len(vals) == 1:
        return [vals[0]]
    dt = out_dtype(ctx, *vals)
    ins = [ctx.var(v, dtype=dt if ctx.dtype(v) != dt else None) for v in vals]
    return [M(ctx.emit("concat", ins, dt, out=node.outputs[0], axis=axis))]


def _kv(ctx, node, vals):
    if len(vals) == 2 and isinstance(vals[0], Past):
        return [attention.kv_append(ctx, node, vals[0], vals[1], node.attr("axis"))]
    raise ctx.unsupported("concatenates the KV cache in an unsupported way (expected Concat(past, new, axis=2))")


OP = OpSpec("Concat", _eval, _translate, kv=_kv)
