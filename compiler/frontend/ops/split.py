"""Split: IR slices along one axis (sizes from the `split` input/attribute or num_outputs)."""
import numpy as np

from ..sym import Sym
from ..values import M
from ._base import OpSpec, arr_attr_or_input, attr_or_input


def _sizes(node, dim, split):
    n = len(node.outputs)
    if split is not None:
        return list(split)
    n = node.attr("num_outputs", n)
    q = -(-dim // n)
    return [q] * (n - 1) + [dim - q * (n - 1)]


def _eval(node, args):
    x = np.asarray(args[0])
    axis = node.attr("axis", 0) % x.ndim
    sizes = _sizes(node, x.shape[axis], arr_attr_or_input(node, args, "split", 1))
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _translate(ctx, node, vals):
    s = ctx.shape(vals[0])
    axis = node.attr("axis", 0) % len(s)
    if isinstance(s[axis], Sym):
        raise ctx.unsupported("splits along the KV length")
    sizes = _sizes(node, s[axis], attr_or_input(ctx, node, vals, "split", 1, "split sizes"))
    x = ctx.var(vals[0])
    outs, start = [], 0
    for name, n in zip(node.outputs, sizes):
        outs.append(M(ctx.emit("slice", [x], ctx.dtype(vals[0]), out=name or None, hint="split", starts=[start],
                               ends=[start + n], axes=[axis], steps=[1])))
        start += n
    return outs


OP = OpSpec("Split", _eval, _translate)
