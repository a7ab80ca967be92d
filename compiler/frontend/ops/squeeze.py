"""Squeeze: drop unit dims (IR reshape); a layout view of the KV cache."""
import numpy as np

from .. import attention
from ..sym import Sym
from ..values import M
from ._base import OpSpec, arr_attr_or_input, attr_or_input


def _eval(node, args):
    x = np.asarray(args[0])
    axes = arr_attr_or_input(node, args, "axes", 1)
    return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    axes = attr_or_input(ctx, node, vals, "axes", 1, "axes")
    if axes is None:
        axes = [i for i, d in enumerate(s) if not isinstance(d, Sym) and d == 1]
    axes = {a % len(s) for a in axes}
    for a in axes:
        if isinstance(s[a], Sym) or s[a] != 1:
            raise ctx.unsupported(f"squeezes axis {a} of size {s[a]!r}")
    out = tuple(d for i, d in enumerate(s) if i not in axes)
    return [M(ctx.reshape(vals[0], out, out=node.outputs[0]))]


def _kv(ctx, node, vals):
    return [attention.v_squeeze(ctx, vals[0], attr_or_input(ctx, node, vals, "axes", 1, "axes"))]


OP = OpSpec("Squeeze", _eval, _translate, kv=_kv, t_ok=True)
