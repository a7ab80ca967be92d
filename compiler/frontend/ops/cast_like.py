"""CastLike: Cast to the type of the second input."""
import numpy as np

from .cast import cast_array, cast_value
from ._base import OpSpec
from ..values import ir_dtype


def _eval(node, args):
    like = np.asarray(args[1])
    return [cast_array(args[0], "i64" if like.dtype == object else ir_dtype(like.dtype))]


def _translate(ctx, node, vals):
    return cast_value(ctx, node, vals[0], ctx.dtype(vals[1]))


def _kv(ctx, node, vals):
    if ctx.dtype(vals[1]) != "f32":
        raise ctx.unsupported("casts the KV cache to a non-float type")
    return [vals[0]]


OP = OpSpec("CastLike", _eval, _translate, kv=_kv, t_ok=True)
