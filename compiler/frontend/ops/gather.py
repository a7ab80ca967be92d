"""Gather: rows of a constant table indexed at runtime -> IR gather (embeddings); a matrix of a constant
table of matrices [E, K, N] by a runtime expert number -> a GW value that the MatMul reading it turns into
IR expert_linear (mixture-of-experts); runtime data with constant indices -> IR take; on the KV cache, a GQA
head repeat (repeat_interleave) with constant indices."""
import numpy as np

from .. import attention
from ..sym import Sym, has_sym
from ..values import GW, K, M
from ._base import OpSpec, norm_axis


def _eval(node, args):
    data, idx = np.asarray(args[0]), np.asarray(args[1])
    if idx.dtype == object:
        raise ValueError("symbolic Gather indices")
    return [np.take(data, idx.astype(np.int64), axis=node.attr("axis", 0))]


def _translate(ctx, node, vals):
    data, idx = vals
    shape = ctx.shape(data)
    axis = norm_axis(ctx, node.attr("axis", 0), len(shape))
    if isinstance(data, K) and not has_sym(data.value):
        if axis != 0:
            raise ctx.unsupported(f"gathers a constant table along axis {axis} with runtime indices")
        ishape = ctx.shape(idx)
        if data.value.ndim >= 3:  # a table of matrices: one expert's weights, read by a MatMul
            if int(np.prod([d for d in ishape], dtype=np.int64)) != 1:
                raise ctx.unsupported(f"gathers {list(ishape)} expert matrices at once (one index per Gather "
                                      "is supported)")
            iv = ctx.reshape(M(ctx.var(idx, dtype="i64")), (1,))
            return [GW(data, iv, tuple(ishape) + tuple(data.value.shape[1:]))]
        table = ctx.weight(data)
        return [M(ctx.emit("gather", [table, ctx.var(idx, dtype="i64")], ctx.dtype(data), out=node.outputs[0]))]
    if isinstance(idx, K) and not has_sym(idx.value):
        d = shape[axis]
        if isinstance(d, Sym):
            raise ctx.unsupported("gathers along the KV length")
        ind = np.asarray(idx.value).astype(np.int64)
        ind = np.where(ind < 0, ind + d, ind)
        return [M(ctx.emit("take", [ctx.var(data)], ctx.dtype(data), out=node.outputs[0], indices=ind, axis=axis))]
    raise ctx.unsupported("gathers with runtime indices from a runtime tensor")


def _kv(ctx, node, vals):
    if not isinstance(vals[0], attention.KVView):
        raise ctx.unsupported("indexes with values read from the KV cache")
    return [attention.v_gather(ctx, vals[0], vals[1], node.attr("axis", 0))]


OP = OpSpec("Gather", _eval, _translate, kv=_kv)
