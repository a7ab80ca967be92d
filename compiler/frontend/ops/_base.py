"""The operator registry's building blocks.

An operator is an `OpSpec`:

eval(node, arrays) -> list of arrays
    numpy semantics on known values. Used to fold constants -- arrays may be object arrays of ints and
    `Sym`s (shape computations with the past length P); raising any exception on a symbolic input makes
    the node a lazy runtime tensor instead -- and to evaluate the position / mask subgraphs.
translate(ctx, node, values) -> list of values      (None: only constants / lazy tensors)
    emits IR equations when an input is on the main path (ctx is the Importer).
kv(ctx, node, values) -> list of values             (None: may not touch the KV cache)
    the operator applied to a past KV input or a view of the cache (attention.py).
t_ok
    whether the operator may touch a runtime tensor spanning the KV length T (the attention scores).
known(ctx, node, values) -> list of values          (Shape, Size)
    a known result computed from the symbolic input shapes only, whatever kind the inputs are.
expand(ctx, node, values) -> list of Nodes          (fused operators)
    the standard operators a fused one means (Expansion below builds them); they are imported in its
    place, so the fused operator inherits their folding, lazy evaluation and translation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..sym import Sym, SymbolicError, compare, has_sym, normalize
from ..values import K, M


@dataclass(frozen=True)
class OpSpec:
    name: str
    eval: Callable
    translate: Callable | None = None
    kv: Callable | None = None
    t_ok: bool = False
    domains: tuple = ()
    known: Callable | None = None  # value from the (symbolic) input shapes alone, whatever the inputs are
    # a fused operator (ONNX Runtime's contrib ops, ONNX functions): expand(ctx, node, values) -> the
    # standard-operator nodes it stands for, processed in its place (Expansion builds them)
    expand: Callable | None = None


# ---------------------------------------------------------------------- helpers
def objwise(fn, *arrays):
    """Elementwise python function with numpy broadcasting (for object arrays of ints and Syms)."""
    return np.frompyfunc(fn, len(arrays), 1)(*arrays)


def is_obj(*arrays) -> bool:
    return any(a is not None and np.asarray(a).dtype == object for a in arrays)


def norm_axis(ctx_or_none, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        msg = f"axis {axis} out of range for rank {rank}"
        if ctx_or_none is not None:
            raise ctx_or_none.unsupported(msg)
        raise ValueError(msg)
    return axis % rank if rank else 0


def ints(ctx, v, what: str, allow_sym: bool = True) -> list:
    """The values of a known integer tensor (ints, and Syms if allowed)."""
    if not isinstance(v, K):
        raise ctx.unsupported(f"its {what} must be known at compile time (it depends on runtime values)")
    a = np.asarray(v.value)
    if a.dtype == object:
        if not allow_sym and has_sym(a):
            raise ctx.unsupported(f"its {what} {a.tolist()} depends on the past length")
        return [x if isinstance(x, Sym) else int(x) for x in a.reshape(-1)]
    return [int(x) for x in a.reshape(-1)]


def attr_or_input(ctx, node, vals, attr: str, index: int, what: str):
    """Opset-dependent operands (Squeeze axes, ReduceMean axes, Split sizes...): attribute or input."""
    if attr in node.attrs:
        a = node.attrs[attr]
        return list(a) if isinstance(a, (list, tuple)) else [a]
    if index < len(vals) and vals[index] is not None:
        return ints(ctx, vals[index], what, allow_sym=False)
    return None


def arr_attr_or_input(node, args, attr: str, index: int):
    """Same as attr_or_input, for eval (plain arrays)."""
    if attr in node.attrs:
        a = node.attrs[attr]
        return [int(x) for x in (a if isinstance(a, (list, tuple)) else [a])]
    if index < len(args) and args[index] is not None:
        return [int(x) for x in np.asarray(args[index]).reshape(-1)]
    return None


def out_dtype(ctx, *vals) -> str:
    ds = [ctx.dtype(v) for v in vals if v is not None]
    if "f32" in ds:
        return "f32"
    if ds and all(d == "bool" for d in ds):
        return "bool"
    return "i64"


def emit_binary(ctx, op: str, x, y, out: str, bool_out: bool = False) -> M:
    dt = out_dtype(ctx, x, y)
    cast_to = "f32" if dt == "f32" else None
    a = ctx.var(x, dtype=cast_to if ctx.dtype(x) != "f32" and cast_to else None)
    b = ctx.var(y, dtype=cast_to if ctx.dtype(y) != "f32" and cast_to else None)
    return M(ctx.emit("binary", [a, b], "bool" if bool_out else dt, out=out, op=op))


def binary(name: str, ir_op: str | None, np_fn: Callable, py_fn: Callable | None = None,
           compare_op: str | None = None, bool_out: bool = False, kv: Callable | None = None) -> OpSpec:
    """An elementwise binary operator with numpy broadcasting."""

    def ev(node, args):
        a, b = np.asarray(args[0]), np.asarray(args[1])
        if is_obj(a, b):
            if compare_op is not None:
                return [objwise(lambda x, y: compare(x, y, compare_op), a, b).astype(bool)]
            if py_fn is None:
                raise SymbolicError(f"{name} of symbolic values")
            return [normalize(objwise(py_fn, a, b))]
        return [np.asarray(np_fn(a, b))]

    tr = None
    if ir_op is not None:
        def tr(ctx, node, vals):
            return [emit_binary(ctx, ir_op, vals[0], vals[1], node.outputs[0], bool_out)]

    return OpSpec(name, ev, tr, kv=kv, t_ok=True)


def variadic(name: str, ir_op: str, np_fn: Callable, py_fn: Callable) -> OpSpec:
    """An elementwise operator of 1..N inputs (Max, Min): the IR binary op, chained left to right."""

    def ev(node, args):
        arrs = [np.asarray(a) for a in args if a is not None]
        out = arrs[0]
        for a in arrs[1:]:
            out = normalize(objwise(py_fn, out, a)) if is_obj(out, a) else np_fn(out, a)
        return [out]

    def tr(ctx, node, vals):
        vals = [v for v in vals if v is not None]
        acc = vals[0]
        for i, v in enumerate(vals[1:]):
            acc = emit_binary(ctx, ir_op, acc, v, node.outputs[0] if i == len(vals) - 2 else None)
        return [acc]

    return OpSpec(name, ev, tr, t_ok=True)


def unary(name: str, ir_op: str | None, np_fn: Callable, py_fn: Callable | None = None,
          float_only: bool = True) -> OpSpec:
    """An elementwise unary operator."""

    def ev(node, args):
        a = np.asarray(args[0])
        if a.dtype == object:
            if py_fn is None:
                raise SymbolicError(f"{name} of a symbolic value")
            return [normalize(objwise(py_fn, a))]
        with np.errstate(all="ignore"):
            return [np.asarray(np_fn(a))]

    tr = None
    if ir_op is not None:
        def tr(ctx, node, vals):
            x = vals[0]
            dt = ctx.dtype(x)
            if float_only and dt != "f32":
                src = ctx.var(x, dtype="f32")
                dt = "f32"
            else:
                src = ctx.var(x)
            out_dt = "bool" if ir_op in ("isnan", "not") else dt
            return [M(ctx.emit("unary", [src], out_dt, out=node.outputs[0], op=ir_op))]

    return OpSpec(name, ev, tr, t_ok=True)


def identity_kv(ctx, node, vals):
    return [vals[0]]


def reshape_shape(in_shape, target, allowzero: int = 0):
    """ONNX Reshape's output shape (0 copies a dim unless allowzero, -1 is inferred); dims may be Syms."""
    target = list(target)
    out = []
    for i, d in enumerate(target):
        if not isinstance(d, Sym) and d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"Reshape: dim {i} copies a dimension the input {list(in_shape)} does not have")
            out.append(in_shape[i])
        else:
            out.append(d)
    if sum(1 for d in out if not isinstance(d, Sym) and d == -1) > 1:
        raise ValueError("Reshape: more than one -1")
    if any(not isinstance(d, Sym) and d == -1 for d in out):
        src_syms = [d for d in in_shape if isinstance(d, Sym)]
        src_int = int(np.prod([d for d in in_shape if not isinstance(d, Sym)], dtype=np.int64))
        dst_syms = [d for d in out if isinstance(d, Sym)]
        dst_int = int(np.prod([d for d in out if not isinstance(d, Sym) and d != -1], dtype=np.int64))
        rest = list(src_syms)
        for s in dst_syms:
            if s in rest:
                rest.remove(s)
            else:
                raise SymbolicError(f"Reshape {list(in_shape)} -> {target}: cannot infer -1")
        if len(rest) > 1:
            raise SymbolicError(f"Reshape {list(in_shape)} -> {target}: cannot infer -1")
        if dst_int == 0 or src_int % dst_int:
            raise ValueError(f"Reshape {list(in_shape)} -> {target}: sizes do not divide")
        q = src_int // dst_int
        inferred = q if not rest else (rest[0] * q if q != 1 else rest[0])
        out = [inferred if (not isinstance(d, Sym) and d == -1) else d for d in out]
    return tuple(out)


def broadcast_shapes(*shapes) -> tuple:
    """numpy broadcasting over dims that are ints or Syms (structurally)."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        ds = []
        for d in dims:
            if not (not isinstance(d, Sym) and d == 1) and d not in ds:
                ds.append(d)
        if len(ds) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(ds[0] if ds else 1)
    return tuple(out)



class Expansion:
    """Builds the standard-operator nodes a fused node stands for. Constants become known values of the
    importer; the last node writes the fused node's own output names."""

    def __init__(self, ctx, node) -> None:
        self.ctx, self.node, self.nodes, self.n = ctx, node, [], 0

    def _name(self, what: str) -> str:
        self.n += 1
        return f"{self.node.name}/{what}_{self.n}"

    def const(self, value) -> str:
        name = self._name("const")
        from ...ir import Shaped

        self.ctx.values[name] = K(value if isinstance(value, Shaped) else normalize(np.asarray(value)), name)
        return name

    def op(self, op_type: str, inputs, outputs=None, n_out: int = 1, **attrs) -> list[str]:
        from onnx import helper

        from ..loader import Node

        outs = list(outputs) if outputs is not None else [self._name(op_type) for _ in range(n_out)]
        proto = helper.make_node(op_type, [i or "" for i in inputs], outs, name=self._name(op_type), **attrs)
        self.nodes.append(Node(proto, self.node.index))
        return outs

    def one(self, op_type: str, inputs, output=None, **attrs) -> str:
        return self.op(op_type, inputs, [output] if output else None, **attrs)[0]
