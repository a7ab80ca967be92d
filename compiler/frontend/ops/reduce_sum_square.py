"""ReduceSumSquare: sum of squares (constants and position/mask paths only); also the shared reduce helper."""
import numpy as np

from ..sym import Sym
from ..values import M
from ._base import OpSpec, arr_attr_or_input, attr_or_input


def _axes(node, rank, axes):
    if axes is None or len(axes) == 0:
        return None if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


def make(name, ir_op, np_fn, pre=None):
    def ev(node, args):
        x = np.asarray(args[0])
        axes = _axes(node, x.ndim, arr_attr_or_input(node, args, "axes", 1))
        if axes is None:
            return [x]
        if pre is not None:
            x = pre(x)
        return [np_fn(x, axis=tuple(axes), keepdims=bool(node.attr("keepdims", 1))).astype(x.dtype)]

    tr = None
    if ir_op is not None:
        def tr(ctx, node, vals):
            s = ctx.shape(vals[0])
            axes = _axes(node, len(s), attr_or_input(ctx, node, vals, "axes", 1, "axes"))
            if axes is None:
                return [vals[0]]
            t_axes = [a for a, d in enumerate(s) if isinstance(d, Sym)]
            if t_axes and not (ir_op in ("sum", "max") and axes == t_axes == [len(s) - 1]):
                # attention scores may be reduced over the KV length alone (a hand-written softmax, head sinks)
                raise ctx.unsupported("reduces a tensor spanning the KV length other than by a sum or max over "
                                      "that length alone")
            out = ctx.emit("reduce", [ctx.var(vals[0])], ctx.dtype(vals[0]), out=node.outputs[0], op=ir_op,
                           axes=axes, keepdims=bool(node.attr("keepdims", 1)))
            return [M(out)]

    return OpSpec(name, ev, tr, t_ok=ir_op in ("sum", "max"))


OP = make("ReduceSumSquare", None, np.sum, pre=lambda x: x * x)
