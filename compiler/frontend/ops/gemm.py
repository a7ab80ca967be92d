"""Gemm: alpha * A' B' + beta * C with constant B (and C) -> IR linear (transB transposes the weight,
alpha/beta are folded into the constants)."""
import numpy as np

from ..sym import has_sym
from ..values import K, M
from ._base import OpSpec, emit_binary


def _eval(node, args):
    a, b = np.asarray(args[0]), np.asarray(args[1])
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    y = node.attr("alpha", 1.0) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        y = y + node.attr("beta", 1.0) * np.asarray(args[2])
    return [y.astype(np.result_type(a, b))]


def _translate(ctx, node, vals):
    a, b = vals[0], vals[1]
    c = vals[2] if len(vals) > 2 else None
    if node.attr("transA", 0):
        raise ctx.unsupported("Gemm with transA=1 on a runtime operand")
    if not (isinstance(b, K) and not has_sym(b.value)) or b.value.ndim != 2:
        raise ctx.unsupported("Gemm with a runtime B operand")
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    w, suffix = b.value, ""
    if node.attr("transB", 0):
        w, suffix = w.T, ".T"
    if alpha != 1.0:
        w, suffix = (w * np.float32(alpha)).astype(np.float32), suffix + f"*{alpha:g}"
    wv = ctx.weight(b, array=w, suffix=suffix) if suffix else ctx.weight(b)
    n = w.shape[1]
    ins = [ctx.var(a, dtype="f32"), wv]
    post = None
    if c is not None:
        if isinstance(c, K) and not has_sym(c.value) and c.value.size == n and c.value.ndim <= 2 \
                and (c.value.ndim < 2 or c.value.shape[0] == 1):
            bias = c.value.reshape(n) * np.float32(beta) if beta != 1.0 else c.value.reshape(n)
            ins.append(ctx.weight(c, array=bias, suffix=".bias" if (beta != 1.0 or c.value.ndim != 1) else ""))
        else:
            post = c
    if post is None:
        return [M(ctx.emit("linear", ins, "f32", out=node.outputs[0]))]
    y = M(ctx.emit("linear", ins, "f32", hint="gemm"))
    if beta != 1.0:
        post = emit_binary(ctx, "mul", post, K(np.float32(beta)), None)
    return [emit_binary(ctx, "add", y, post, node.outputs[0])]


OP = OpSpec("Gemm", _eval, _translate)
