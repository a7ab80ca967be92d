"""Cast: float types are all float32 here, integers int64 (IR cast when the IR dtype changes)."""
import numpy as np
from onnx import TensorProto

from ..loader import FLOAT_TYPES, INT_TYPES
from ..sym import Sym, SymbolicError, has_sym
from ..values import M
from ._base import OpSpec, objwise


def target(to: int) -> str:
    if to in FLOAT_TYPES:
        return "f32"
    if to in INT_TYPES:
        return "i64"
    if to == TensorProto.BOOL:
        return "bool"
    raise ValueError(f"Cast to ONNX type {to} is not supported")


def cast_array(a, to: str):
    a = np.asarray(a)
    if a.dtype == object:
        if to != "i64":
            raise SymbolicError("cast of a symbolic value")
        return objwise(lambda v: v if isinstance(v, Sym) else int(v), a) if has_sym(a) else a.astype(np.int64)
    return a.astype({"f32": np.float32, "i64": np.int64, "bool": np.bool_}[to])


def _eval(node, args):
    return [cast_array(args[0], target(node.attr("to")))]


def cast_value(ctx, node, v, to: str):
    if ctx.dtype(v) == to:
        return [v]
    return [M(ctx.emit("cast", [ctx.var(v)], to, out=node.outputs[0], to=to))]


def _translate(ctx, node, vals):
    return cast_value(ctx, node, vals[0], target(node.attr("to")))


def _kv(ctx, node, vals):
    if target(node.attr("to")) != "f32":
        raise ctx.unsupported("casts the KV cache to a non-float type")
    return [vals[0]]


OP = OpSpec("Cast", _eval, _translate, kv=_kv, t_ok=True)
