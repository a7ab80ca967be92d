"""The compiler's IR: one decode step of a decoder, as equations over named tensors.

Small and explicit, in the spirit of JAX's autodidax: a Graph is a list of equations (prim, inputs,
params, outputs) in topological order, over variables with a logical shape and a dtype. Shapes are
tuples of ints and the symbol T, the number of KV-cache positions visible at this step (position + 1).
Weights and constants are named numpy arrays. Every prim has a shape rule (checked by `verify`, which
runs between passes) and a numpy meaning (compiler/ireval.py), which is the IR's reference semantics.

Batch is 1 and one token is decoded per step. The step's runtime inputs are:
    input_ids       int, shape (1,)  the token
    position_ids    int, shape (1,)  its position p (0-based)
    attention_mask  f32, shape (T,)  1 for visible cache positions, 0 for hidden ones (T = p + 1)
KV caches are *states*: per layer, a key and a value cache of `heads` x max_context x `head_dim`.

Prims (see PRIMS for shape rules, ireval for meaning):
    gather(table, idx)            row table[idx] (embeddings; position tables made by the frontend)
    linear(x, w[, b])             x @ w (+ b): w const [K, N]
    unary(x) op=                  neg abs relu exp tanh sigmoid sqrt rsqrt recip erf isnan sin cos log
    binary(x, y) op=              add sub mul div max min pow eq gt ge lt le and or (numpy broadcasting)
    where(c, x, y)                numpy.where
    reduce(x) op= axes= keepdims= sum mean max min
    softmax(x) axis=
    layernorm(x, g[, b]) eps= axis=   (ONNX LayerNormalization)
    rmsnorm(x, g) eps= axis=          x / sqrt(mean(x^2) + eps) * g
    reshape(x) shape=   transpose(x) perm=   slice(x) starts= ends= axes= steps=
    concat(xs...) axis=   expand(x) shape=   take(x) indices= axis=   (data movement; const indices)
    cast(x) to=                   float<->float is numerically the identity here; to int truncates
    kv_append(new) state=         writes new [1,H,1,D] at position p of the state; yields the present
                                  cache [1,H,T,D]
    attn_qk(q, present) group=    q [1,Hq,1,D] . present^T -> scores [1,Hq,1,T]; head h reads kv head h//group
    attn_pv(p, present) group=    p [1,Hq,1,T] . present -> [1,Hq,1,D]
    mask_fill(s, mask) fill=      s where mask != 0 else fill; mask [T] broadcast over s [..., T]
    topk(x) k= part=              the k largest of x's last axis, largest first (ties: the lower index
                                  first): part "values" gives them, part "indices" their positions (i64)
    expert_linear(x, w, idx)      x @ w[idx]: w const [E, K, N] (one matrix per expert), x [..., K] one row,
                                  idx i64 (1,) a runtime expert number (mixture-of-experts: only the
                                  chosen expert's weights are read)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import CompileError, IrError

class ShapeOnlyError(CompileError):
    """A timing-only compile needed the values of a weight it does not load."""


class Shaped(np.lib.mixins.NDArrayOperatorsMixin):
    """A constant known by its shape and dtype only: a weight of a timing-only compile (`lpu compile
    --timing-only`), whose values are never loaded.

    It is not an array of zeros: numpy functions that only move or re-type elements (reshape, transpose,
    slicing and fancy indexing, take, concatenate, split, astype) and elementwise arithmetic give another
    Shaped, computed from the shapes alone (no memory in proportion to the weight), and anything that reads
    a value (np.asarray, tobytes, bool(), reductions, comparisons used as conditions, ...) raises
    ShapeOnlyError naming the weight. Passes that decide from values (is this constant all ones?) ask
    `is_shaped` first and take the answer a real model's weights give (no)."""

    __slots__ = ("shape", "dtype", "name")
    __hash__ = object.__hash__  # the mixin's __eq__ would leave it unhashable

    def __init__(self, shape, dtype, name: str = "") -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.name = name

    # ---------------------------------------------------------------- what an array tells without its values
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Shaped({list(self.shape)}, {self.dtype}{', ' + repr(self.name) if self.name else ''})"

    def _like(self, shape, dtype=None) -> "Shaped":
        return Shaped(shape, self.dtype if dtype is None else dtype, self.name)

    def _dummy(self) -> np.ndarray:
        """An array of this shape whose elements take no memory (zero itemsize): numpy's own shape rules."""
        return np.empty(self.shape, dtype=_NO_BYTES)

    # ---------------------------------------------------------------- data movement: shapes only
    def reshape(self, *shape, order="C") -> "Shaped":
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._like(self._dummy().reshape(shape, order=order).shape)

    def transpose(self, *axes) -> "Shaped":
        axes = axes[0] if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))) else axes
        return self._like(self._dummy().transpose(*(() if axes in (None, ()) else (axes,))).shape)

    @property
    def T(self) -> "Shaped":  # noqa: N802
        return self._like(self.shape[::-1])

    def ravel(self, order="C") -> "Shaped":
        return self._like((self.size,))

    flatten = ravel

    def copy(self, order="C") -> "Shaped":
        return self._like(self.shape)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True) -> "Shaped":
        return self._like(self.shape, dtype)

    def view(self, dtype=None, *a, **k):
        raise ShapeOnlyError(self._needs("a view of its bytes"))

    def __getitem__(self, idx) -> "Shaped":
        if isinstance(idx, Shaped) or (isinstance(idx, tuple) and any(isinstance(i, Shaped) for i in idx)):
            raise ShapeOnlyError(self._needs("indexing by the values of a shape-only constant"))
        return self._like(self._dummy()[idx].shape)

    # ---------------------------------------------------------------- reading values: refused
    def _needs(self, what: str) -> str:
        name = f"{self.name!r} " if self.name else ""
        return (f"the timing-only compile needs the values of the weight {name}{list(self.shape)} ({what}), which it "
                "does not load; compile without --timing-only")

    def __array__(self, dtype=None, copy=None):
        raise ShapeOnlyError(self._needs("converted to an array"))

    def tobytes(self, order="C"):
        raise ShapeOnlyError(self._needs("its bytes"))

    def tolist(self):
        raise ShapeOnlyError(self._needs("its elements"))

    def __bool__(self):
        raise ShapeOnlyError(self._needs("a truth value"))

    def __float__(self):
        raise ShapeOnlyError(self._needs("a number"))

    __int__ = __index__ = __complex__ = __float__

    def __iter__(self):
        raise ShapeOnlyError(self._needs("its elements"))

    def __setitem__(self, idx, value):
        raise ShapeOnlyError(self._needs("written to"))

    def __getattr__(self, name):  # sum, max, all, any, mean, nonzero, ...: every other ndarray method reads values
        if name.startswith("__"):
            raise AttributeError(name)
        raise ShapeOnlyError(self._needs(f".{name}()"))

    # ---------------------------------------------------------------- numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or "out" in kwargs or "where" in kwargs:
            raise ShapeOnlyError(_first_shaped(inputs)._needs(f"np.{ufunc.__name__}.{method}"))
        shapes = [np.shape(x) if not isinstance(x, Shaped) else x.shape for x in inputs]
        shape = np.broadcast_shapes(*shapes)
        probe = [np.zeros((), x.dtype) if isinstance(x, (Shaped, np.ndarray)) else x for x in inputs]
        with np.errstate(all="ignore"):
            res = ufunc(*probe, **kwargs)
        name = _first_shaped(inputs).name
        if isinstance(res, tuple):
            return tuple(Shaped(shape, np.asarray(r).dtype, name) for r in res)
        return Shaped(shape, np.asarray(res).dtype, name)

    def __array_function__(self, func, types, args, kwargs):
        if func not in _SHAPE_FUNCS:
            raise ShapeOnlyError(_first_shaped(args)._needs(f"np.{func.__name__}"))
        seq = func in _SEQUENCE_FUNCS  # the first argument is a sequence of arrays: every one is data
        name = _first_shaped(args).name
        dtypes = []

        def dummy(a, data: bool):
            if isinstance(a, Shaped):
                dtypes.append(a.dtype)
                return a._dummy()
            if data and isinstance(a, (np.ndarray, np.generic)):
                dtypes.append(a.dtype)
                return np.empty(a.shape, dtype=_NO_BYTES)
            return a

        if seq:
            args = ([dummy(a, True) for a in args[0]],) + tuple(args[1:])
        else:
            args = tuple(dummy(a, i == 0) for i, a in enumerate(args))
        kwargs = {k: dummy(v, False) for k, v in kwargs.items() if k != "dtype"}
        out = func(*args, **kwargs)
        dt = np.result_type(*dtypes)

        def wrap(o):
            if isinstance(o, np.ndarray) and o.dtype == _NO_BYTES:
                return Shaped(o.shape, dt, name)
            if isinstance(o, (list, tuple)):
                return type(o)(wrap(x) for x in o)
            return o
        return wrap(out)


_NO_BYTES = np.dtype([])  # a structured dtype without fields: itemsize 0
_SEQUENCE_FUNCS = {np.concatenate, np.stack, np.hstack, np.vstack}
_SHAPE_FUNCS = _SEQUENCE_FUNCS | {
    np.reshape, np.transpose, np.squeeze, np.expand_dims, np.moveaxis, np.swapaxes, np.ravel, np.broadcast_to,
    np.take, np.split, np.array_split, np.flip, np.copy, np.shape, np.ndim, np.size,
    np.atleast_1d, np.atleast_2d, np.tile, np.repeat}


def _first_shaped(xs) -> Shaped:
    for x in xs:
        if isinstance(x, Shaped):
            return x
        if isinstance(x, (list, tuple)):
            for y in x:
                if isinstance(y, Shaped):
                    return y
    return Shaped((), np.float32)


def is_shaped(a) -> bool:
    """A constant known by its shape only (a timing-only compile's weight)."""
    return isinstance(a, Shaped)


def contiguous(a, dtype=None):
    """np.ascontiguousarray, or the Shaped itself (re-typed) for a shape-only constant."""
    if isinstance(a, Shaped):
        return a if dtype is None else a.astype(dtype)
    return np.ascontiguousarray(a, dtype=dtype)


T = "T"  # the symbolic KV length
INPUTS = ("input_ids", "position_ids", "attention_mask")


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    shape: tuple
    dtype: str = "f32"  # f32 | i64 | bool

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True, slots=True)
class Eqn:
    prim: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict = field(default_factory=dict, hash=False, compare=False)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items()))
        return f"{', '.join(self.outputs)} = {self.prim}({', '.join(self.inputs)}{'; ' + ps if ps else ''})"


def _short(v):
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    return repr(v)


@dataclass(frozen=True, slots=True)
class State:
    """A KV cache: `kind` is 'k' or 'v', `layer` the decoder layer, heads x max_context x head_dim."""

    name: str
    layer: int
    kind: str
    heads: int
    head_dim: int


@dataclass
class Graph:
    vars: dict[str, Var]
    consts: dict[str, np.ndarray]
    eqns: list[Eqn]
    inputs: tuple[str, ...]  # runtime inputs present, names from INPUTS
    outputs: dict[str, str]  # 'logits' -> var
    states: dict[str, State]
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def shape(self, name: str) -> tuple:
        if name in self.vars:
            return self.vars[name].shape
        if name in self.consts:
            return tuple(self.consts[name].shape)
        raise IrError(f"unknown tensor {name!r}")

    def dtype(self, name: str) -> str:
        if name in self.vars:
            return self.vars[name].dtype
        c = self.consts[name]
        return "f32" if c.dtype.kind == "f" else ("bool" if c.dtype == bool else "i64")

    def producers(self) -> dict[str, Eqn]:
        return {o: e for e in self.eqns for o in e.outputs}

    def consumers(self) -> dict[str, list[Eqn]]:
        out: dict[str, list[Eqn]] = {}
        for e in self.eqns:
            for i in e.inputs:
                out.setdefault(i, []).append(e)
        return out

    def weight_bytes(self, bytes_per_elem: int = 2) -> int:
        return sum(c.size for c in self.consts.values()) * bytes_per_elem

    def __str__(self) -> str:
        lines = [f"graph inputs={list(self.inputs)} outputs={self.outputs}"]
        for s in self.states.values():
            lines.append(f"  state {s.name}: layer {s.layer} {s.kind} {s.heads}x{s.head_dim}")
        for c, a in self.consts.items():
            lines.append(f"  const {c}: {a.dtype}{list(a.shape)}")
        for e in self.eqns:
            lines.append("  " + repr(e) + "   # " + ", ".join(f"{o}:{list(self.vars[o].shape)}" for o in e.outputs))
        return "\n".join(lines)

    # ------------------------------------------------------------------ checks
    def verify(self) -> "Graph":
        """Every tensor defined once before use, every prim known, every shape rule satisfied."""
        defined = set(self.consts) | set(self.inputs)
        for name in self.inputs:
            if name not in INPUTS or name not in self.vars:
                raise IrError(f"input {name!r}: inputs are {INPUTS} and must have a Var")
        for e in self.eqns:
            spec = PRIMS.get(e.prim)
            if spec is None:
                raise IrError(f"{e!r}: unknown prim {e.prim!r}; prims are {', '.join(sorted(PRIMS))}")
            for i in e.inputs:
                if i not in defined:
                    raise IrError(f"{e!r}: input {i!r} is not defined before use")
            for o in e.outputs:
                if o in defined:
                    raise IrError(f"{e!r}: {o!r} is defined twice")
                if o not in self.vars:
                    raise IrError(f"{e!r}: output {o!r} has no Var")
            if e.prim in ("kv_append",):
                st = e.params.get("state")
                if st not in self.states:
                    raise IrError(f"{e!r}: state {st!r} is not declared")
            try:
                shapes = spec.infer(self, e)
            except IrError:
                raise
            except Exception as exc:  # a shape rule that cannot even be evaluated
                raise IrError(f"{e!r}: shape rule failed ({exc})") from None
            for o, s in zip(e.outputs, shapes):
                if tuple(self.vars[o].shape) != tuple(s):
                    raise IrError(f"{e!r}: output {o} has shape {self.vars[o].shape}, the rule gives {tuple(s)}")
            defined.update(e.outputs)
        for k, v in self.outputs.items():
            if v not in defined:
                raise IrError(f"output {k!r} -> {v!r} is never defined")
        return self


# ---------------------------------------------------------------------- shape rules
def broadcast(*shapes) -> tuple:
    """numpy broadcasting over dims that are ints or T."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        ds = {d for d in dims if d != 1}
        if len(ds) > 1:
            raise IrError(f"shapes {shapes} do not broadcast")
        out.append(ds.pop() if ds else 1)
    return tuple(out)


def _norm_axis(a: int, rank: int) -> int:
    if not -rank <= a < rank:
        raise IrError(f"axis {a} out of range for rank {rank}")
    return a % rank


def _numel(shape) -> int | None:
    n = 1
    for d in shape:
        if d == T:
            return None
        n *= d
    return n


def _reshape_rule(g, e):
    src = g.shape(e.inputs[0])
    dst = tuple(e.params["shape"])
    if any(d == -1 or d == 0 for d in dst):
        raise IrError("reshape shapes in the IR are explicit (no -1 or 0)")
    if src.count(T) != dst.count(T):
        raise IrError(f"reshape {src} -> {dst} must keep T as a dim of its own")
    if _numel(tuple(d for d in src if d != T)) != _numel(tuple(d for d in dst if d != T)):
        raise IrError(f"reshape {src} -> {dst} changes the element count")
    return [dst]


def _slice_rule(g, e):
    s = list(g.shape(e.inputs[0]))
    p = e.params
    steps = p.get("steps") or [1] * len(p["axes"])
    for st, en, ax, sp in zip(p["starts"], p["ends"], p["axes"], steps):
        ax = _norm_axis(ax, len(s))
        if s[ax] == T:
            raise IrError("slicing along T is not supported")
        s[ax] = len(range(*slice(st, en, sp).indices(s[ax])))
    return [tuple(s)]


def _concat_rule(g, e):
    shapes = [g.shape(i) for i in e.inputs]
    ax = _norm_axis(e.params["axis"], len(shapes[0]))
    out = list(shapes[0])
    if any(len(s) != len(out) for s in shapes):
        raise IrError("concat of different ranks")
    for s in shapes[1:]:
        for k, (a, b) in enumerate(zip(out, s)):
            if k != ax and a != b:
                raise IrError(f"concat shapes {shapes} differ off axis {ax}")
    if any(s[ax] == T for s in shapes):
        raise IrError("concat along T is not supported (the KV cache is kv_append)")
    out[ax] = sum(s[ax] for s in shapes)
    return [tuple(out)]


def _reduce_rule(g, e):
    s = g.shape(e.inputs[0])
    axes = sorted(_norm_axis(a, len(s)) for a in e.params["axes"])
    if e.params.get("keepdims", True):
        return [tuple(1 if k in axes else d for k, d in enumerate(s))]
    return [tuple(d for k, d in enumerate(s) if k not in axes)]


def _take_rule(g, e):
    s = g.shape(e.inputs[0])
    ax = _norm_axis(e.params["axis"], len(s))
    idx = np.asarray(e.params["indices"])
    return [tuple(s[:ax]) + tuple(idx.shape) + tuple(s[ax + 1:])]


def _attn_qk_rule(g, e):
    q, kv = g.shape(e.inputs[0]), g.shape(e.inputs[1])
    if len(q) != 4 or len(kv) != 4 or q[0] != 1 or q[2] != 1 or kv[2] != T or q[3] != kv[3]:
        raise IrError(f"attn_qk wants q [1,Hq,1,D] and present [1,Hkv,T,D], got {q} and {kv}")
    if q[1] != kv[1] * e.params["group"]:
        raise IrError(f"attn_qk: {q[1]} query heads != {kv[1]} kv heads x group {e.params['group']}")
    return [(1, q[1], 1, T)]


def _attn_pv_rule(g, e):
    p, kv = g.shape(e.inputs[0]), g.shape(e.inputs[1])
    if len(p) != 4 or len(kv) != 4 or p[2] != 1 or p[3] != T or kv[2] != T:
        raise IrError(f"attn_pv wants p [1,Hq,1,T] and present [1,Hkv,T,D], got {p} and {kv}")
    if p[1] != kv[1] * e.params["group"]:
        raise IrError(f"attn_pv: {p[1]} query heads != {kv[1]} kv heads x group {e.params['group']}")
    return [(1, p[1], 1, kv[3])]


def _kv_append_rule(g, e):
    st = g.states[e.params["state"]]
    s = g.shape(e.inputs[0])
    if s != (1, st.heads, 1, st.head_dim):
        raise IrError(f"kv_append into {st.name}: new entry must be [1,{st.heads},1,{st.head_dim}], got {s}")
    return [(1, st.heads, T, st.head_dim)]


def _linear_rule(g, e):
    x, w = g.shape(e.inputs[0]), g.shape(e.inputs[1])
    if e.inputs[1] not in g.consts or len(w) != 2 or x[-1] != w[0]:
        raise IrError(f"linear wants x [..., K] and a const w [K, N], got {x} and {w}")
    if len(e.inputs) == 3 and g.shape(e.inputs[2]) != (w[1],):
        raise IrError(f"linear bias must be [{w[1]}]")
    return [tuple(x[:-1]) + (w[1],)]


def _gather_rule(g, e):
    t = g.shape(e.inputs[0])
    if e.inputs[0] not in g.consts:
        raise IrError("gather's table must be a const")
    return [tuple(g.shape(e.inputs[1])) + tuple(t[1:])]


def _mask_fill_rule(g, e):
    s, m = g.shape(e.inputs[0]), g.shape(e.inputs[1])
    if m != (T,) or not s or s[-1] != T:
        raise IrError(f"mask_fill wants scores [..., T] and mask [T], got {s} and {m}")
    return [s]


def _topk_rule(g, e):
    s = g.shape(e.inputs[0])
    k = e.params["k"]
    if not s or s[-1] == T or not 1 <= k <= s[-1] or e.params.get("part") not in ("values", "indices"):
        raise IrError(f"topk wants x [..., n] (not T), 1 <= k <= n and part values|indices, got {s}, k={k}")
    return [tuple(s[:-1]) + (k,)]


def _expert_linear_rule(g, e):
    x, w, i = (g.shape(n) for n in e.inputs)
    if e.inputs[1] not in g.consts or len(w) != 3 or not x or x[-1] != w[1] or _numel(x) != w[1] or i != (1,):
        raise IrError(f"expert_linear wants x [..., K] (one row), a const w [E, K, N] and idx (1,), got {x}, {w}, {i}")
    return [tuple(x[:-1]) + (w[2],)]


def _expand_rule(g, e):
    return [broadcast(g.shape(e.inputs[0]), tuple(e.params["shape"]))]


@dataclass(frozen=True, slots=True)
class PrimSpec:
    name: str
    infer: Callable
    doc: str = ""


_same = lambda g, e: [g.shape(e.inputs[0])]  # noqa: E731
PRIMS = {p.name: p for p in (
    PrimSpec("gather", _gather_rule),
    PrimSpec("linear", _linear_rule),
    PrimSpec("unary", _same),
    PrimSpec("binary", lambda g, e: [broadcast(g.shape(e.inputs[0]), g.shape(e.inputs[1]))]),
    PrimSpec("where", lambda g, e: [broadcast(*(g.shape(i) for i in e.inputs))]),
    PrimSpec("reduce", _reduce_rule),
    PrimSpec("softmax", _same),
    PrimSpec("layernorm", _same),
    PrimSpec("rmsnorm", _same),
    PrimSpec("reshape", _reshape_rule),
    PrimSpec("transpose", lambda g, e: [tuple(g.shape(e.inputs[0])[k] for k in e.params["perm"])]),
    PrimSpec("slice", _slice_rule),
    PrimSpec("concat", _concat_rule),
    PrimSpec("expand", _expand_rule),
    PrimSpec("take", _take_rule),
    PrimSpec("cast", _same),
    PrimSpec("kv_append", _kv_append_rule),
    PrimSpec("attn_qk", _attn_qk_rule),
    PrimSpec("attn_pv", _attn_pv_rule),
    PrimSpec("mask_fill", _mask_fill_rule),
    PrimSpec("topk", _topk_rule),
    PrimSpec("expert_linear", _expert_linear_rule),
)}

UNARY_OPS = ("neg", "abs", "relu", "exp", "tanh", "sigmoid", "sqrt", "rsqrt", "recip", "erf", "isnan",
             "sin", "cos", "log", "not")
BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "pow", "eq", "gt", "ge", "lt", "le", "and", "or")
DATA_MOVEMENT = ("reshape", "transpose", "slice", "concat", "expand", "take", "cast")


class Builder:
    """Convenience for passes and tests: fresh names, shape inference on append."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self._n = 0

    def fresh(self, hint: str = "t") -> str:
        while True:
            self._n += 1
            name = f"{hint}.{self._n}"
            if name not in self.g.vars and name not in self.g.consts:
                return name

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.g.consts[name] = value if isinstance(value, Shaped) else np.asarray(value)
        return name

    def eqn(self, prim: str, inputs, dtype: str = "f32", hint: str = "t", **params) -> str:
        out = self.fresh(hint)
        e = Eqn(prim, tuple(inputs), (out,), params)
        shape = PRIMS[prim].infer(self.g, e)[0]
        self.g.vars[out] = Var(out, tuple(shape), dtype)
        self.g.eqns.append(e)
        return out
