"""Max: elementwise maximum of 1..N inputs (IR binary max, chained)."""
import numpy as np

from ..sym import sym_max
from ._base import emit_binary, is_obj, normalize, objwise, OpSpec


def _eval(node, args):
    arrs = [np.asarray(a) for a in args if a is not None]
    out = arrs[0]
    for a in arrs[1:]:
        out = normalize(objwise(sym_max, out, a)) if is_obj(out, a) else np.maximum(out, a)
    return [out]


def _translate(ctx, node, vals):
    vals = [v for v in vals if v is not None]
    if len(vals) == 1:
        return [vals[0]]
    acc = vals[0]
    for i, v in enumerate(vals[1:]):
        acc = emit_binary(ctx, "max", acc, v, node.outputs[0] if i == len(vals) - 2 else None)
    return [acc]


OP = OpSpec("Max", _eval, _translate, t_ok=True)
