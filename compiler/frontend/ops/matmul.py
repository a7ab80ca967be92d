"""MatMul: runtime x constant weight -> IR linear; runtime x a weight gathered by a runtime expert number
(either side) -> IR expert_linear; query . K^T and probs . V on the KV cache -> attn_qk / attn_pv
(attention.py)."""
import numpy as np

from ...ir import contiguous
from .. import attention
from ..sym import Sym, has_sym
from ..values import GW, K, M
from ._base import OpSpec


def _eval(node, args):
    return [np.matmul(np.asarray(args[0]), np.asarray(args[1]))]


def matmul_shape(a, b) -> tuple:
    """numpy.matmul's output shape for operand shapes a and b (ints)."""
    a1, b1 = len(a) == 1, len(b) == 1
    a = (1,) + tuple(a) if a1 else tuple(a)
    b = tuple(b) + (1,) if b1 else tuple(b)
    out = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    if a1:
        out = out[:-2] + out[-1:]
    if b1:
        out = out[:-1]
    return out


def _expert(ctx, node, vals):
    """x @ W[e] (W[e] on the right) or W[e] @ x (on the left, x a column): one row times one expert's matrix."""
    left = isinstance(vals[0], GW)
    gw, x = (vals[0], vals[1]) if left else (vals[1], vals[0])
    if isinstance(x, GW) or not isinstance(x, M):
        raise ctx.unsupported("multiplies a gathered expert matrix by something other than a runtime activation")
    table = gw.table.value
    if table.ndim < 3 or any(d != 1 for d in table.shape[1:-2]):
        raise ctx.unsupported(f"an expert table of shape {list(table.shape)}: expected [E, K, N]")
    xs = ctx.shape(x)
    mat = table.reshape(table.shape[0], table.shape[-2], table.shape[-1])
    if left:  # W[e] [N, K] @ x [..., K, 1]
        if len(xs) < 2 or xs[-1] != 1 or xs[-2] != mat.shape[2]:
            raise ctx.unsupported(f"MatMul of an expert matrix {list(mat.shape[1:])} by {list(xs)}")
        mat = contiguous(np.swapaxes(mat, 1, 2))
        kdim = xs[-2]
    else:
        if not xs or xs[-1] != mat.shape[1]:
            raise ctx.unsupported(f"MatMul of {list(xs)} by an expert matrix {list(mat.shape[1:])}")
        kdim = xs[-1]
    if any(isinstance(d, Sym) for d in xs) or int(np.prod(xs)) != kdim:
        raise ctx.unsupported(f"MatMul of {list(xs)} rows by an expert matrix (one row is supported)")
    w = ctx.weight(gw.table, array=mat, suffix=".experts_t" if left else ".experts")
    row = ctx.reshape(M(ctx.var(x, dtype="f32")), (1, kdim))
    y = ctx.emit("expert_linear", [row, w, gw.idx], "f32", hint="expert")
    a, b = (gw.shape, xs) if left else (xs, gw.shape)
    out = matmul_shape(a, b)
    return [M(ctx.reshape(M(y), out, out=node.outputs[0]))]


def _translate(ctx, node, vals):
    if any(isinstance(v, GW) for v in vals):
        return _expert(ctx, node, vals)
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
