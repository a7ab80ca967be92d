"""Erf: the error function, elementwise (IR unary erf)."""
import math

import numpy as np

from ._base import unary

_erf = np.frompyfunc(math.erf, 1, 1)


def _np_erf(a):
    return _erf(a.astype(np.float64)).astype(np.float32)


OP = unary("Erf", "erf", _np_erf)
