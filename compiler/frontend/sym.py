"""Symbolic integers for shape folding: affine expressions a*P + b in the past length P.

One decode step has batch 1 and one new token, so every shape of a decoder is made of integers and of
P (the past KV length) or P + 1 (= T in the IR, the number of visible cache positions). Shape
subgraphs (Shape, Gather, Concat, Range, Equal, Where, ...) are folded on numpy object arrays whose
elements are ints or `Sym`s.

`Sym.__eq__` is *structural* (P + 1 == 1 is False), which is what shape bookkeeping wants; the value
comparisons of ONNX operators (Equal, Less, ...) go through `compare`, which decides them for every
P >= 0 or raises `SymbolicError` (the operator then stays a runtime computation).
"""
from __future__ import annotations

import numpy as np


class SymbolicError(Exception):
    """The operation has no symbolic result (e.g. P + 1 == 1 depends on P, or P cast to float)."""


class Sym:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: int = 0) -> None:
        self.a = int(a)
        self.b = int(b)

    # ------------------------------------------------------------ construction
    @staticmethod
    def make(a: int, b: int):
        return int(b) if a == 0 else Sym(a, b)

    # ------------------------------------------------------------ arithmetic
    def __add__(self, o):
        if isinstance(o, Sym):
            return Sym.make(self.a + o.a, self.b + o.b)
        return Sym.make(self.a, self.b + _int(o))

    __radd__ = __add__

    def __neg__(self):
        return Sym.make(-self.a, -self.b)

    def __sub__(self, o):
        return self + (-o)

    def __rsub__(self, o):
        return (-self) + o

    def __mul__(self, o):
        if isinstance(o, Sym):
            raise SymbolicError("product of two symbolic values")
        k = _int(o)
        return Sym.make(self.a * k, self.b * k)

    __rmul__ = __mul__

    def __floordiv__(self, o):
        if isinstance(o, Sym):
            if o.a == self.a and o.b == self.b:
                return 1
            raise SymbolicError("division by a symbolic value")
        k = _int(o)
        if k != 0 and self.a % k == 0 and self.b % k == 0:
            return Sym.make(self.a // k, self.b // k)
        raise SymbolicError(f"({self}) // {k} is not exact")

    def __rfloordiv__(self, o):
        raise SymbolicError("division by a symbolic value")

    def __truediv__(self, o):
        raise SymbolicError("true division of a symbolic value")

    __rtruediv__ = __truediv__

    def __mod__(self, o):
        raise SymbolicError("modulo of a symbolic value")

    def __int__(self):
        raise SymbolicError(f"{self} is not a constant")

    __index__ = __int__

    def __float__(self):
        raise SymbolicError(f"{self} is not a constant")

    def __bool__(self):
        raise SymbolicError(f"truth value of {self} is not a constant")

    # ------------------------------------------------------------ structural identity
    def __eq__(self, o):
        return isinstance(o, Sym) and o.a == self.a and o.b == self.b

    def __ne__(self, o):
        return not self.__eq__(o)

    def __hash__(self):
        return hash(("Sym", self.a, self.b))

    def __lt__(self, o):  # only for sorting/debugging; value comparisons use compare()
        return compare(self, o, "lt")

    def __repr__(self) -> str:
        if self.a == 1 and self.b == 1:
            return "T"
        p = "P" if self.a == 1 else f"{self.a}*P"
        return p if self.b == 0 else f"{p}{self.b:+d}"

    def at(self, p: int) -> int:
        return self.a * p + self.b


P = Sym(1, 0)
T_SYM = Sym(1, 1)


def _int(o) -> int:
    if isinstance(o, (bool, np.bool_)):
        return int(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)) and float(o).is_integer():
        return int(o)
    raise SymbolicError(f"cannot combine a symbolic value with {o!r}")


def _range_of(d) -> tuple[float, float]:
    """Range of an affine value over P >= 0 (ints are a point)."""
    if isinstance(d, Sym):
        if d.a > 0:
            return float(d.b), float("inf")
        return float("-inf"), float(d.b)
    return float(d), float(d)


def compare(x, y, op: str) -> bool:
    """x op y for every P >= 0, op in eq ne lt le gt ge; SymbolicError when it depends on P."""
    if not isinstance(x, Sym) and not isinstance(y, Sym):
        return {"eq": x == y, "ne": x != y, "lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y}[op]
    d = x - y  # d(P) = x - y
    lo, hi = _range_of(d)
    if op == "eq":
        if lo == hi == 0:
            return True
        if lo > 0 or hi < 0:
            return False
    elif op == "ne":
        return not compare(x, y, "eq")
    elif op == "lt":
        if hi < 0:
            return True
        if lo >= 0:
            return False
    elif op == "le":
        if hi <= 0:
            return True
        if lo > 0:
            return False
    elif op == "gt":
        return compare(y, x, "lt")
    elif op == "ge":
        return compare(y, x, "le")
    raise SymbolicError(f"{x!r} {op} {y!r} depends on the past length")


def sym_max(x, y):
    if compare(x, y, "ge"):
        return x
    return y


def sym_min(x, y):
    if compare(x, y, "le"):
        return x
    return y


# ---------------------------------------------------------------- arrays
def has_sym(a) -> bool:
    if getattr(a, "dtype", None) is not None and a.dtype != object:  # a numeric array, or a shape-only weight
        return False
    a = np.asarray(a)
    return a.dtype == object and any(isinstance(v, Sym) for v in a.flat)


def obj_array(values, shape=None) -> np.ndarray:
    """An int64 array if nothing is symbolic, else an object array (ints and Syms)."""
    flat = [v if isinstance(v, Sym) else int(v) for v in values]
    if any(isinstance(v, Sym) for v in flat):
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
    else:
        out = np.array(flat, dtype=np.int64)
    return out.reshape(shape) if shape is not None else out


def normalize(a: np.ndarray) -> np.ndarray:
    """Object arrays without any Sym become int64 (or float/bool as numpy infers)."""
    a = np.asarray(a)
    if a.dtype != object:
        return a
    if has_sym(a):
        return a
    if a.size == 0:
        return a.astype(np.int64)
    if all(isinstance(v, (bool, np.bool_)) for v in a.flat):
        return a.astype(bool)
    if all(isinstance(v, (int, np.integer)) for v in a.flat):
        return a.astype(np.int64)
    return a.astype(np.float32)


def subst(a, p: int) -> np.ndarray:
    """Replace P by the integer p in an array (object arrays become int64)."""
    if getattr(a, "dtype", None) is not None and a.dtype != object:  # numeric, or a shape-only weight
        return a
    a = np.asarray(a)
    if a.dtype != object:
        return a
    flat = [v.at(p) if isinstance(v, Sym) else v for v in a.flat]
    return normalize(np.array(flat, dtype=object).reshape(a.shape))


def dim_at(d, p: int) -> int:
    return d.at(p) if isinstance(d, Sym) else int(d)


def shape_at(shape, p: int) -> tuple:
    return tuple(dim_at(d, p) for d in shape)


def fit_dim(values: list[tuple[int, int]]):
    """An int or Sym matching the (p, value) samples (affine in p), or None."""
    (p0, v0), (p1, v1) = values[0], values[1]
    if p1 == p0:
        return None
    a, r = divmod(v1 - v0, p1 - p0)
    if r:
        return None
    b = v0 - a * p0
    d = Sym.make(a, b)
    if all(dim_at(d, p) == v for p, v in values):
        return d
    return None


def fmt_shape(shape) -> str:
    return "[" + ", ".join(repr(d) for d in shape) + "]"
