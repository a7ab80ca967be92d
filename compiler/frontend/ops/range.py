"""Range: start, start + delta, ... < limit. A symbolic start with a constant length folds (e.g. the
cache position [P]); a symbolic length (e.g. 0..T-1) is a lazy runtime tensor."""
import math

import numpy as np

from ..sym import Sym, SymbolicError, obj_array
from ._base import OpSpec


def _eval(node, args):
    start, limit, delta = (np.asarray(a).reshape(()) for a in args)
    if start.dtype == object or limit.dtype == object or delta.dtype == object:
        s, l, d = start.item(), limit.item(), delta.item()
        if isinstance(d, Sym):
            raise SymbolicError("symbolic Range delta")
        n = l - s
        if isinstance(n, Sym):
            raise SymbolicError("Range of symbolic length")
        count = max(0, math.ceil(n / d))
        return [obj_array([s + i * d for i in range(count)])]
    dt = np.result_type(start, limit, delta)
    count = max(0, int(math.ceil((float(limit) - float(start)) / float(delta))))
    return [(start + np.arange(count, dtype=dt) * delta).astype(dt)]


OP = OpSpec("Range", _eval)
