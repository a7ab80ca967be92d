"""Slice: IR slice with explicit, clamped bounds (negative steps become an IR take); slicing the KV length
is only allowed when it keeps everything."""
import numpy as np

from ..sym import Sym, compare
from ..values import M
from ._base import OpSpec, ints

INT_MAX = 2**62


def onnx_range(start: int, end: int, step: int, dim: int) -> range:
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return range(start, end, step)


def _params(node, args_or_vals, getter):
    if node.attrs.get("starts") is not None:  # opset < 10
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = node.attrs.get("axes")
        steps = None
    else:
        starts, ends = getter(1), getter(2)
        axes, steps = getter(3), getter(4)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    return starts, ends, axes, steps


def _eval(node, args):
    x = np.asarray(args[0])
    get = lambda i: [int(v) for v in np.asarray(args[i]).reshape(-1)] if i < len(args) and args[i] is not None else None
    starts, ends, axes, steps = _params(node, args, get)
    idx = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        r = onnx_range(st, en, sp, x.shape[ax % x.ndim])
        idx[ax % x.ndim] = slice(r.start, r.stop if r.stop >= 0 else None, r.step)
    return [x[tuple(idx)]]


def _translate(ctx, node, vals):
    x = vals[0]
    s = ctx.shape(x)
    get = lambda i: ints(ctx, vals[i], "slice bounds") if i < len(vals) and vals[i] is not None else None
    starts, ends, axes, steps = _params(node, vals, get)
    cur = ctx.var(x)
    dt = ctx.dtype(x)
    pos = {"starts": [], "ends": [], "axes": [], "steps": []}
    takes = []
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = ax % len(s)
        d = s[ax]
        if isinstance(d, Sym):  # the KV length: only the full range
            full_end = (isinstance(en, Sym) and compare(en, d, "ge")) or (not isinstance(en, Sym) and en >= INT_MAX)
            if st == 0 and sp == 1 and full_end:
                continue
            raise ctx.unsupported("slices along the KV length")
        if isinstance(st, Sym) or isinstance(en, Sym) or isinstance(sp, Sym):
            if isinstance(en, Sym) and st == 0 and sp == 1 and compare(en, d, "ge"):
                continue
            raise ctx.unsupported(f"slice bounds depend on the past length on an axis of size {d}")
        r = onnx_range(st, en, sp, d)
        if r.step == 1 and r.start == 0 and r.stop == d:
            continue
        if r.step > 0:
            for k, v in zip(("starts", "ends", "axes", "steps"), (r.start, r.stop, ax, r.step)):
                pos[k].append(v)
        else:
            takes.append((ax, np.array(list(r), dtype=np.int64)))
    if not pos["axes"] and not takes:
        return [x]
    last = len(takes) - 1
    if pos["axes"]:
        cur = ctx.emit("slice", [cur], dt, out=node.outputs[0] if last < 0 else None, hint="slice", **pos)
    for i, (ax, ind) in enumerate(takes):
        cur = ctx.emit("take", [cur], dt, out=node.outputs[0] if i == last else None, hint="take", indices=ind, axis=ax)
    return [M(cur)]


OP = OpSpec("Slice", _eval, _translate)
