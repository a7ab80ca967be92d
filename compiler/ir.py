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

from .errors import IrError

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
        self.g.consts[name] = np.asarray(value)
        return name

    def eqn(self, prim: str, inputs, dtype: str = "f32", hint: str = "t", **params) -> str:
        out = self.fresh(hint)
        e = Eqn(prim, tuple(inputs), (out,), params)
        shape = PRIMS[prim].infer(self.g, e)[0]
        self.g.vars[out] = Var(out, tuple(shape), dtype)
        self.g.eqns.append(e)
        return out
