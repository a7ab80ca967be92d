"""Min: elementwise minimum of 1..N inputs (IR binary min, chained)."""
import numpy as np

from ..sym import sym_min
from ._base import emit_binary, is_obj, normalize, objwise, OpSpec


def _eval(node, args):
    arrs = [np.asarray(a) for a in args if a is not None]
    out = arrs[0]
    for a in arrs[1:]:
        out = normalize(objwise(sym_min, out, a)) if is_obj(out, a) else np.minimum(out, a)
    return [out]


def _translate(ctx, node, vals):
    vals = [v for v in vals if v is not None]
    if len(vals) == 1:
        return [vals[0]]
    acc = vals[0]
    for i, v in enumerate(vals[1:]):
        acc = emit_binary(ctx, "min", acc, v, node.outputs[0] if i == len(vals) - 2 else None)
    return [acc]


OP = OpSpec("Min", _eval, _translate, t_ok=True)
