"""MatMul: runtime x constant weight -> IR linear; query . K^T and probs . V on the KV cache ->
attn_qk / attn_pv (attention.py)."""
import numpy as np

from .. import attention
from ..sym import has_sym
from ..values import K, M
from ._base import OpSpec


def _eval(node, args):
    return [np.matmul(np.asarray(args[0]), np.asarray(args[1]))]


def _translate(ctx, node, vals):
    x, w = vals
    if not (isinstance(w, K) and not has_sym(w.value)):
        raise ctx.unsupported("multiplies runtime tensors outside attention (the second operand must be a constant "
                              "weight)")
    xs, ws = ctx.shape(x), w.value.shape
    if w.value.ndim < 2 or any(d != 1 for d in ws[:-2]):
        raise ctx.unsupported(f"MatMul with a constant of shape {list(ws)}: expected a [K, N] weight")
    if len(xs) < 1 or xs[-1] != ws[-2]:
        raise ctx.unsupported(f"MatMul of {list(xs)} by {list(ws)}")
    w2 = ctx.weight(w) if w.value.ndim == 2 else ctx.weight(w, array=w.value.reshape(ws[-2:]), suffix=".2d")
    xv = ctx.var(x, dtype="f32")
    if len(xs) == 1:
        xv = ctx.reshape(M(xv), (1, xs[0]))
    out_shape = tuple([1] * (len(ws) - len(xs))) + tuple(xs[:-1]) + (ws[-1],) if len(xs) > 1 else (ws[-1],)
    if len(xs) == 1 or len(ws) > len(xs):
        y = ctx.emit("linear", [xv, w2], "f32", hint="linear")
        return [M(ctx.reshape(M(y), out_shape, out=node.outputs[0]))]
    return [M(ctx.emit("linear", [xv, w2], "f32", out=node.outputs[0]))]


def _kv(ctx, node, vals):
    return attention.matmul(ctx, node, vals[0], vals[1])


OP = OpSpec("MatMul", _eval, _translate, kv=_kv)
