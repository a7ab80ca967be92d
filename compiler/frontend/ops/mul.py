"""Mul: elementwise product (IR binary mul); a scalar constant times the KV cache scales the view."""
import numpy as np

from .. import attention
from ..values import K
from ._base import binary


def _kv(ctx, node, vals):
    a, b = vals
    if isinstance(a, attention.KVView) and isinstance(b, K):
        return [attention.v_scale(ctx, a, b)]
    if isinstance(b, attention.KVView) and isinstance(a, K):
        return [attention.v_scale(ctx, b, a)]
    raise ctx.unsupported("multiplies the KV cache by something other than a scalar constant")


OP = binary("Mul", "mul", np.multiply, py_fn=lambda x, y: x * y, kv=_kv)
