"""GatherND (batch_dims 0): on a runtime tensor with constant indices -> IR reshape + take + reshape."""
import numpy as np

from ..sym import Sym, has_sym
from ..values import K, M
from ._base import OpSpec


def _eval(node, args):
    data, idx = np.asarray(args[0]), np.asarray(args[1]).astype(np.int64)
    b = node.attr("batch_dims", 0)
    if b != 0:
        raise ValueError("GatherND batch_dims != 0 is not supported")
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    out = np.stack([data[tuple(i)] for i in flat]) if flat.shape[0] else np.zeros((0,) + data.shape[k:], data.dtype)
    return [out.reshape(idx.shape[:-1] + data.shape[k:])]


def _translate(ctx, node, vals):
    data, idx = vals
    if node.attr("batch_dims", 0) != 0 or not isinstance(idx, K) or has_sym(idx.value):
        raise ctx.unsupported("GatherND with runtime indices or batch_dims != 0")
    s = ctx.shape(data)
    ind = np.asarray(idx.value).astype(np.int64)
    k = ind.shape[-1]
    lead = s[:k]
    if any(isinstance(d, Sym) for d in lead):
        raise ctx.unsupported("GatherND along the KV length")
    ind = np.where(ind < 0, ind + np.array(lead, dtype=np.int64), ind)
    flat = np.ravel_multi_index(tuple(ind.reshape(-1, k).T), lead) if k else np.zeros(0, np.int64)
    x = ctx.reshape(data, (int(np.prod(lead, dtype=np.int64)),) + tuple(s[k:]))
    t = ctx.emit("take", [x], ctx.dtype(data), hint="gathernd", indices=flat.astype(np.int64), axis=0)
    return [M(ctx.reshape(M(t), tuple(ind.shape[:-1]) + tuple(s[k:]), out=node.outputs[0]))]


OP = OpSpec("GatherND", _eval, _translate)
