"""Gelu (opset 20, and com.microsoft Gelu): translated faithfully into elementwise IR ops, erf form or (approximate="tanh") tanh form."""
import math

import numpy as np

from ..values import K, M
from ._base import OpSpec, emit_binary

_erf = np.frompyfunc(math.erf, 1, 1)


def _eval(node, args):
    x = np.asarray(args[0], dtype=np.float32)
    if node.attr("approximate", "none") == "tanh":
        y = 0.5 * x * (1 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))
    else:
        y = 0.5 * x * (1 + _erf((x / np.float32(math.sqrt(2))).astype(np.float64)).astype(np.float32))
    return [y.astype(np.float32)]


def _translate(ctx, node, vals):
    x = vals[0]
    f = lambda v: K(np.float32(v))
    un = lambda op, v: M(ctx.emit("unary", [ctx.var(v)], "f32", hint="gelu", op=op))
    if node.attr("approximate", "none") == "tanh":
        x3 = emit_binary(ctx, "mul", emit_binary(ctx, "mul", x, x, None), x, None)
        inner = emit_binary(ctx, "add", x, emit_binary(ctx, "mul", x3, f(0.044715), None), None)
        t = un("tanh", emit_binary(ctx, "mul", inner, f(math.sqrt(2 / math.pi)), None))
    else:
        t = un("erf", emit_binary(ctx, "mul", x, f(1 / math.sqrt(2)), None))
    one_plus = emit_binary(ctx, "add", t, f(1.0), None)
    half_x = emit_binary(ctx, "mul", x, f(0.5), None)
    return [emit_binary(ctx, "mul", half_x, one_plus, node.outputs[0])]


OP = OpSpec("Gelu", _eval, _translate, domains=("com.microsoft",))  # the contrib Gelu: the erf form
