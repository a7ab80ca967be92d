"""Clip: min/max bounds (inputs, or attributes before opset 11) -> IR binary max / min."""
import numpy as np

from ..values import K
from ._base import OpSpec, emit_binary


def _bounds(node, items):
    lo = items[1] if len(items) > 1 and items[1] is not None else node.attrs.get("min")
    hi = items[2] if len(items) > 2 and items[2] is not None else node.attrs.get("max")
    return lo, hi


def _eval(node, args):
    x = np.asarray(args[0])
    lo, hi = _bounds(node, args)
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, dtype=x.dtype))
    return [x]


def _translate(ctx, node, vals):
    lo, hi = _bounds(node, vals)
    x = vals[0]
    if lo is not None:
        lo = lo if not isinstance(lo, (int, float)) else K(np.float32(lo))
        x = emit_binary(ctx, "max", x, lo, node.outputs[0] if hi is None else None)
    if hi is not None:
        hi = hi if not isinstance(hi, (int, float)) else K(np.float32(hi))
        x = emit_binary(ctx, "min", x, hi, node.outputs[0])
    return [x]


OP = OpSpec("Clip", _eval, _translate, t_ok=True)
