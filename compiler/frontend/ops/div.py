"""Div: elementwise quotient; integers truncate toward zero (ONNX). The KV cache divided by a scalar
constant scales the view."""
import numpy as np

from .. import attention
from ..sym import Sym
from ..values import K
from ._base import binary


def _div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) ^ (b < 0), -q, q).astype(np.result_type(a, b))
    return np.divide(a, b)


def _py(x, y):
    if isinstance(x, Sym) or isinstance(y, Sym):
        return x // y  # exact or SymbolicError
    if isinstance(x, float) or isinstance(y, float):
        return x / y
    q = abs(int(x)) // abs(int(y))
    return -q if (x < 0) != (y < 0) else q


def _kv(ctx, node, vals):
    a, b = vals
    if isinstance(a, attention.KVView) and isinstance(b, K):
        return [attention.v_scale(ctx, a, b, divide=True)]
    raise ctx.unsupported("divides the KV cache by something other than a scalar constant")


OP = binary("Div", "div", _div, py_fn=_py, kv=_kv)
