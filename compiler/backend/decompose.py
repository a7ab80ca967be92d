"""Decompose the IR into the prims the machine has (a pass: Graph -> Graph, verified after).

After this pass the graph uses only:
    gather, linear, kv_append, attn_qk, attn_pv, mask_fill, data movement (reshape transpose slice
    concat expand take), unary {neg abs relu exp tanh rsqrt recip isnan}, binary {add sub mul max min
    gt ge eq}, where(c, x, y) with y a scalar const, reduce {sum max} over the last axis (keepdims).
The machine holds every tensor with a T axis over the whole context bucket: the lanes past the visible
positions hold whatever the cache and the arithmetic leave there. The IR means T = p + 1 entries, so
before anything mixes the lanes of a T axis (a reduction over T, softmax, attn_pv) the pass makes sure
the padding is neutral: it follows what each tensor's padding holds (`-inf` after a large negative
mask_fill, 0 after a softmax of such, ...) and, where that is not known, inserts
`mask_fill(x, attention_mask, fill)` with the reduction's identity (-inf for max, 0 for sum and attn_pv),
adding the `attention_mask` input when the model had none (the host writes it every step).
Each rewrite is an identity of real arithmetic built from the VXM's functions (isa.table.VXM_FNS):
e.g. sigmoid(x) = 0.5 tanh(x/2) + 0.5, sqrt(x) = 1/rsqrt(x), erf by Abramowitz-Stegun 7.1.26
(|error| < 1.5e-7). Anything else (log, sin, cos, pow with an unusual exponent on the data path)
raises UnsupportedError naming the equation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Builder, Eqn, Graph, T, Var, contiguous, is_shaped
from .provenance import origin_of

MACHINE_UNARY = ("neg", "abs", "relu", "exp", "tanh", "rsqrt", "recip", "isnan")
MACHINE_BINARY = ("add", "sub", "mul", "max", "min", "gt", "ge", "eq")


class _Rewriter:
    def __init__(self, g: Graph) -> None:
        self.src = g
        self.out = Graph(dict(g.vars), dict(g.consts), [], g.inputs, dict(g.outputs), dict(g.states), dict(g.meta))
        self.b = Builder(self.out)
        self.alias: dict[str, str] = {}
        self.pad: dict[str, str] = {}  # var with a T axis -> what its padding lanes hold: "neg" (-inf) | "zero"

    # helpers that append to the output graph -------------------------------------------------
    def name(self, n: str) -> str:
        while n in self.alias:
            n = self.alias[n]
        return n

    def scalar(self, name: str):
        """The value of a scalar (size-1) const, or None."""
        c = self.out.consts.get(name)
        if c is not None and c.size == 1 and c.dtype.kind in "fiub":
            return float(c.reshape(()))
        return None

    def emit(self, prim, inputs, hint="d", **params):
        out = self.b.eqn(prim, inputs, hint=hint, **params)
        self.note_padding(self.out.eqns[-1])
        return out

    # the padding lanes of T axes -----------------------------------------------------------------
    def _has_t(self, name) -> bool:
        v = self.out.vars.get(name)
        return v is not None and T in v.shape

    def note_padding(self, e: Eqn) -> None:
        """Record what the padding lanes of `e`'s output hold, where the rules below know it."""
        out = e.outputs[0]
        if not self._has_t(out):
            return
        ins = e.inputs
        pads = [self.pad.get(i) for i in ins]
        kind = None
        if e.prim == "mask_fill" and ins[1] == "attention_mask":
            f = float(e.params["fill"])
            kind = "neg" if f <= -1e30 else "zero" if f == 0.0 else None
        elif e.prim in ("reshape", "expand") and self.out.vars[out].shape[-1] == T:
            kind = pads[0]
        elif e.prim == "unary" and e.params["op"] == "exp" and pads[0] == "neg":
            kind = "zero"
        elif e.prim == "binary" and len(ins) == 2:
            op = e.params["op"]
            a, b = ins
            finite = [self.scalar(i) is not None or (i in self.out.vars and not self._has_t(i)) for i in ins]
            if op == "sub" and pads[0] == "neg" and finite[1]:
                kind = "neg"  # -inf - m
            elif op == "add" and "neg" in pads and (finite[0] or finite[1]):
                kind = "neg"
            elif op == "mul" and "zero" in pads and (finite[0] or finite[1]):
                kind = "zero"  # 0 * finite
            elif op == "mul" and "neg" in pads:
                other = b if pads[0] == "neg" else a
                k = self.scalar(other)
                kind = "neg" if k is not None and k > 0 else None
        elif e.prim == "where" and pads[1] == "zero" and self.scalar(ins[2]) == 0.0:
            kind = "zero"  # either branch is 0 in the padding
        if kind is not None:
            self.pad[out] = kind

    def visible(self, x: str, kind: str) -> str:
        """x with its padding lanes known to hold `kind` ("neg": -inf, "zero": 0)."""
        if self.pad.get(x) == kind or not self._has_t(x):
            return x
        if "attention_mask" not in self.out.inputs:
            self.out.inputs = tuple(self.out.inputs) + ("attention_mask",)
            self.out.vars["attention_mask"] = Var("attention_mask", (T,), "f32")
        return self.emit("mask_fill", [x, "attention_mask"], hint="visible",
                         fill=float("-inf") if kind == "neg" else 0.0)

    def un(self, op, x):
        return self.emit("unary", [x], op=op)

    def bi(self, op, x, y):
        return self.emit("binary", [x, y], op=op)

    def k(self, value: float) -> str:
        return self.b.const(np.array(value, dtype=np.float32), hint="k")

    def mul_k(self, x, value):
        return self.bi("mul", x, self.k(value))

    def add_k(self, x, value):
        return self.bi("add", x, self.k(value))

    def bind(self, out: str, value: str) -> None:
        """Make the source graph's tensor `out` refer to `value` (same shape)."""
        if self.out.vars[value].shape != self.src.vars[out].shape:
            value = self.emit("reshape", [value], shape=self.src.vars[out].shape)
        self.alias[out] = value

    def reduce_last(self, op, x, axes, keepdims=True):
        """sum/max over `axes` of x, keepdims: moved to the end, merged, reduced over the last axis."""
        shape = self.out.vars[x].shape if x in self.out.vars else tuple(self.out.consts[x].shape)
        rank = len(shape)
        axes = sorted(a % rank for a in axes)
        rest = [a for a in range(rank) if a not in axes]
        y = x
        if axes != list(range(rank - len(axes), rank)):
            y = self.emit("transpose", [y], perm=tuple(rest + axes))
        if len(axes) > 1:
            if any(shape[a] == T for a in axes):
                raise UnsupportedError(f"reducing over T together with other axes is not supported ({shape})")
            merged = tuple(shape[a] for a in rest) + (int(np.prod([shape[a] for a in axes])),)
            y = self.emit("reshape", [y], shape=merged)
        if any(shape[a] == T for a in axes):  # the padding must not take part
            y = self.visible(y, "neg" if op == "max" else "zero")
        y = self.emit("reduce", [y], op=op, axes=(-1,), keepdims=True)
        if keepdims:
            kshape = tuple(1 if a in axes else d for a, d in enumerate(shape))
        else:
            kshape = tuple(d for a, d in enumerate(shape) if a not in axes)
        if self.out.vars[y].shape != kshape:
            y = self.emit("reshape", [y], shape=kshape)
        dims = [shape[a] for a in axes]
        return y, (None if T in dims else int(np.prod(dims)))

    # the rewrite ---------------------------------------------------------------------------------
    def run(self) -> Graph:
        for e in self.src.eqns:
            ins = [self.name(i) for i in e.inputs]
            handler = getattr(self, "_" + e.prim, None)
            first = len(self.out.eqns)
            if handler is None:
                self.copy(e, ins)
            else:
                handler(e, ins)
            origin = origin_of(e)  # each primitive made remembers the operation it came from (provenance)
            for q in self.out.eqns[first:]:
                q.params.setdefault("origin", origin)
        self.out.outputs = {k: self.name(v) for k, v in self.out.outputs.items()}
        # variables of the source that were rewritten away stay declared but unused: drop them
        used = set(self.out.inputs) | {o for q in self.out.eqns for o in q.outputs}
        self.out.vars = {n: v for n, v in self.out.vars.items() if n in used}
        return self.out.verify()

    def copy(self, e: Eqn, ins) -> None:
        self.out.eqns.append(Eqn(e.prim, tuple(ins), e.outputs, dict(e.params)))
        self.note_padding(self.out.eqns[-1])

    def _attn_pv(self, e, ins):
        return self.copy(e, [self.visible(ins[0], "zero"), ins[1]])

    def _unary(self, e, ins):
        op, x = e.params["op"], ins[0]
        if op in MACHINE_UNARY:
            return self.copy(e, ins)
        if op == "sqrt":  # 1/rsqrt(x): rsqrt(0) = inf gives sqrt(0) = 0
            return self.bind(e.outputs[0], self.un("recip", self.un("rsqrt", x)))
        if op == "sigmoid":
            return self.bind(e.outputs[0], self.add_k(self.mul_k(self.un("tanh", self.mul_k(x, 0.5)), 0.5), 0.5))
        if op == "erf":
            return self.bind(e.outputs[0], self.erf(x))
        if op == "not":
            return self.bind(e.outputs[0], self.bi("eq", x, self.k(0.0)))
        raise UnsupportedError(f"{e!r}: {op} has no VXM equivalent on the data path (only position-dependent "
                               f"subgraphs may use it: those are tabulated by the frontend)")

    def erf(self, x):
        # Abramowitz & Stegun 7.1.26 on |x|, sign restored: |error| <= 1.5e-7
        p, a = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
        ax = self.un("abs", x)
        t = self.un("recip", self.add_k(self.mul_k(ax, p), 1.0))
        poly = self.mul_k(t, a[4])
        for c in (a[3], a[2], a[1], a[0]):
            poly = self.mul_k(self.add_k(poly, c / 1.0), 1.0) if False else self.bi("mul", self.add_k(poly, c), t)
        e = self.un("exp", self.un("neg", self.bi("mul", x, x)))
        y = self.add_k(self.un("neg", self.bi("mul", poly, e)), 1.0)  # 1 - poly * exp(-x^2), for |x|
        sign = self.bi("sub", self.bi("gt", x, self.k(0.0)), self.bi("gt", self.k(0.0), x))
        return self.bi("mul", y, sign)

    def _binary(self, e, ins):
        op, (x, y) = e.params["op"], ins
        out = e.outputs[0]
        if op in MACHINE_BINARY:
            return self.copy(e, ins)
        if op == "lt":
            return self.bind(out, self.bi("gt", y, x))
        if op == "le":
            return self.bind(out, self.bi("ge", y, x))
        if op == "and":
            return self.bind(out, self.bi("mul", x, y))
        if op == "or":
            return self.bind(out, self.bi("max", x, y))
        if op == "div":
            s = self.scalar(y)
            if y in self.out.consts:
                c = self.out.consts[y]
                return self.bind(out, self.bi("mul", x, self.b.const((1.0 / c.astype(np.float64)).astype(np.float32), "k")))
            return self.bind(out, self.bi("mul", x, self.un("recip", y)))
        if op == "pow":
            s = self.scalar(y)
            if s is None:
                raise UnsupportedError(f"{e!r}: pow with a runtime or non-scalar exponent is not supported")
            if s == 1.0:
                return self.bind(out, x)
            if s == 2.0:
                return self.bind(out, self.bi("mul", x, x))
            if s == 3.0:
                return self.bind(out, self.bi("mul", self.bi("mul", x, x), x))
            if s == 0.5:
                return self.bind(out, self.un("recip", self.un("rsqrt", x)))
            if s == -0.5:
                return self.bind(out, self.un("rsqrt", x))
            if s == -1.0:
                return self.bind(out, self.un("recip", x))
            raise UnsupportedError(f"{e!r}: pow with exponent {s} is not supported (1, 2, 3, 0.5, -0.5, -1 are)")
        raise UnsupportedError(f"{e!r}: binary {op} is not supported on the data path")

    def _where(self, e, ins):
        c, x, y = ins
        sy, sx = self.scalar(y), self.scalar(x)
        out = e.outputs[0]
        shape = self.src.vars[out].shape
        if sy is not None:
            return self.bind(out, self._sel(c, x, sy, shape))
        if sx is not None:
            return self.bind(out, self._sel(self.bi("eq", c, self.k(0.0)), y, sx, shape))
        a = self._sel(c, x, 0.0, shape)
        b = self._sel(self.bi("eq", c, self.k(0.0)), y, 0.0, shape)
        return self.bind(out, self.bi("add", a, b))

    def _sel(self, c, x, fill, shape):
        """where(c, x, fill) with x expanded to the output shape when c is the larger operand."""
        xs = self.out.vars[x].shape if x in self.out.vars else tuple(self.out.consts[x].shape)
        if tuple(xs) != tuple(shape):
            x = self.emit("expand", [x], shape=shape)
        return self.emit("where", [c, x, self.k(fill)])

    def _reduce(self, e, ins):
        op, x = e.params["op"], ins[0]
        axes, keep = e.params["axes"], e.params.get("keepdims", True)
        if op in ("sum", "max"):
            y, _ = self.reduce_last(op, x, axes, keep)
            return self.bind(e.outputs[0], y)
        if op == "mean":
            y, count = self.reduce_last("sum", x, axes, keep)
            return self.bind(e.outputs[0], self.mul_k(y, 1.0 / count))
        if op == "min":
            y, _ = self.reduce_last("max", self.un("neg", x), axes, keep)
            return self.bind(e.outputs[0], self.un("neg", y))
        raise UnsupportedError(f"{e!r}: reduce {op} is not supported")

    def _softmax(self, e, ins):
        x = ins[0]
        ax = e.params.get("axis", -1)
        m, _ = self.reduce_last("max", x, (ax,))
        ex = self.un("exp", self.bi("sub", x, m))
        s, _ = self.reduce_last("sum", ex, (ax,))
        return self.bind(e.outputs[0], self.bi("mul", ex, self.un("recip", s)))

    def _norm_axes(self, e, x):
        rank = len(self.out.vars[x].shape)
        ax = e.params.get("axis", -1) % rank
        return tuple(range(ax, rank))

    def _layernorm(self, e, ins):
        x, gam = ins[0], ins[1]
        axes = self._norm_axes(e, x)
        s, count = self.reduce_last("sum", x, axes)
        xc = self.bi("sub", x, self.mul_k(s, 1.0 / count))
        v, _ = self.reduce_last("sum", self.bi("mul", xc, xc), axes)
        r = self.un("rsqrt", self.add_k(self.mul_k(v, 1.0 / count), float(np.float32(e.params["eps"]))))
        y = self.bi("mul", self.bi("mul", xc, r), gam)
        if len(ins) == 3:
            y = self.bi("add", y, ins[2])
        return self.bind(e.outputs[0], y)

    def _rmsnorm(self, e, ins):
        x, gam = ins
        axes = self._norm_axes(e, x)
        s, count = self.reduce_last("sum", self.bi("mul", x, x), axes)
        r = self.un("rsqrt", self.add_k(self.mul_k(s, 1.0 / count), float(np.float32(e.params["eps"]))))
        return self.bind(e.outputs[0], self.bi("mul", self.bi("mul", x, r), gam))

    def _cast(self, e, ins):
        to = e.params["to"]
        src_dtype = self.out.dtype(ins[0])
        if to == "f32" or to == src_dtype or (to == "bool" and src_dtype == "f32"):
            return self.bind(e.outputs[0], ins[0])
        if to == "i64" and ins[0] in self.out.consts:
            return self.copy(e, ins)
        raise UnsupportedError(f"{e!r}: cast to {to} on the data path is not supported")


def decompose(g: Graph) -> Graph:
    """Rewrite composite prims into machine prims; the result is verified and means the same."""
    return _Rewriter(g).run()


def split_linears(g: Graph) -> Graph:
    """A linear whose output is used only by slices along its last axis (possibly after a reshape that
    keeps the last axis) becomes one linear per slice (e.g. GPT-2's fused c_attn -> q, k, v). Fewer data
    moves, and tensor parallelism can place the pieces independently."""
    cons = g.consumers()
    replaced: dict[int, list[Eqn]] = {}  # id(eqn) -> equations that take its place
    dropped: set[int] = set()
    b = Builder(g)

    def last_axis_slices(v, rank_n):
        users = cons.get(v, [])
        rank = len(g.vars[v].shape)
        ok = bool(users) and v not in g.outputs.values() and all(
            u.prim == "slice" and len(u.params["axes"]) == 1 and u.params["axes"][0] % rank == rank - 1
            and (u.params.get("steps") or [1])[0] == 1 for u in users)
        return users if ok else None

    for e in g.eqns:
        if e.prim != "linear":
            continue
        y = e.outputs[0]
        n = g.consts[e.inputs[1]].shape[1]
        reshape = None
        users = last_axis_slices(y, n)
        if users is None:
            us = cons.get(y, [])
            if (len(us) == 1 and us[0].prim == "reshape" and g.vars[us[0].outputs[0]].shape[-1] == n
                    and y not in g.outputs.values()):
                reshape = us[0]
                users = last_axis_slices(reshape.outputs[0], n)
        if users is None:
            continue
        w = g.consts[e.inputs[1]]
        bias = g.consts[e.inputs[2]] if len(e.inputs) == 3 else None
        new = []
        for u in users:
            lo, hi, _ = slice(u.params["starts"][0], u.params["ends"][0]).indices(n)
            wn = b.const(contiguous(w[:, lo:hi]), hint=e.inputs[1] + f"[{lo}:{hi}]")
            ins = [e.inputs[0], wn]
            if bias is not None:
                ins.append(b.const(contiguous(bias[lo:hi]), hint=e.inputs[2] + f"[{lo}:{hi}]"))
            if reshape is None:
                new.append(Eqn("linear", tuple(ins), u.outputs, {}))
            else:
                mid = b.fresh("lin")
                g.vars[mid] = Var(mid, tuple(g.vars[y].shape[:-1]) + (hi - lo,))
                new.append(Eqn("linear", tuple(ins), (mid,), {}))
                new.append(Eqn("reshape", (mid,), u.outputs, {"shape": tuple(g.vars[u.outputs[0]].shape)}))
            dropped.add(id(u))
        replaced[id(e)] = new
        if reshape is not None:
            dropped.add(id(reshape))
    eqns = []
    for e in g.eqns:
        if id(e) in dropped:
            continue
        eqns.extend(replaced.get(id(e), [e]))
    g2 = Graph(dict(g.vars), dict(g.consts), _toposort(eqns, g), g.inputs, dict(g.outputs), dict(g.states), dict(g.meta))
    used = {i for q in g2.eqns for i in q.inputs} | set(g2.outputs.values())
    g2.consts = {k: v for k, v in g2.consts.items() if k in used}
    defined = {o for q in g2.eqns for o in q.outputs}
    g2.vars = {k: v for k, v in g2.vars.items() if k in g2.inputs or k in defined}
    return g2.verify()


def _toposort(eqns, g: Graph):
    """Topological order that keeps the given order wherever dependencies allow (stable)."""
    import networkx as nx

    producer = {o: k for k, e in enumerate(eqns) for o in e.outputs}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(eqns)))
    for k, e in enumerate(eqns):
        for i in e.inputs:
            if i in producer:
                dag.add_edge(producer[i], k)
    try:
        order = list(nx.lexicographical_topological_sort(dag))
    except nx.NetworkXUnfeasible:
        raise UnsupportedError("cyclic equations after split_linears") from None
    return [eqns[k] for k in order]


@dataclass(frozen=True)
class Folded:
    """The fold pass's product: the graph, and how many linears it made with permuted columns (step 4
    of fold_movement; 0 when turned off or when nothing qualified)."""

    graph: Graph
    permuted_linears: int


def fold(g: Graph, permute_linears: bool = True) -> Folded:
    """fold_movement on a copy of g (g itself stays as it is, so it can be folded again another way)."""
    copy = Graph(dict(g.vars), dict(g.consts), list(g.eqns), g.inputs, dict(g.outputs), dict(g.states), dict(g.meta))
    made: list[str] = []
    out = fold_movement(copy, permute_linears, made)
    return Folded(out, sum(1 for w in made if w in out.consts))


def fold_movement(g: Graph, permute_linears: bool = True, made: list | None = None) -> Graph:
    """Data movement as one permutation where possible (a pass: Graph -> Graph, same meaning).

    1. A negation feeding a concatenation moves after it as a multiplication by a sign vector (exact:
       x * -1 == -x), so a rotate-half (concat(-x2, x1) of two slices of x) becomes one permutation of x.
    2. Chains of data movement from a single source become reshape -> take -> reshape: one shuffle
       instead of one per step.
    3. (p * s) * b with s a vector of +-1 becomes p * (s * b): the sign meets b (often a table row ready
       long before) off the critical chain; exact, since multiplying by +-1 does not round.
    4. A permutation of a linear's output (RoPE's rotate-half of q and k) becomes a second linear with
       the weight columns (and bias) permuted: the MXM computes it beside the first, in parallel, where
       the shuffle would cost a round trip through the SXM on the critical chain (`permute_linears`:
       the compiler turns it off when the copies do not fit in SRAM).
    """
    from .indexmaps import move_map, shape1

    cons = g.consumers()
    prod = g.producers()
    b = Builder(g)
    out: list[Eqn] = []
    rename: dict[str, str] = {}
    movement = set(("reshape", "transpose", "slice", "concat", "expand", "take"))

    def nm(v):
        while v in rename:
            v = rename[v]
        return v

    # 1. neg -> concat
    for e in g.eqns:
        e = Eqn(e.prim, tuple(nm(i) for i in e.inputs), e.outputs, dict(e.params))
        if e.prim == "concat" and T not in g.vars[e.outputs[0]].shape:
            negs = [k for k, i in enumerate(e.inputs)
                    if i in prod and prod[i].prim == "unary" and prod[i].params["op"] == "neg" and len(cons.get(i, [])) == 1]
            if negs:
                shapes = [shape1(g.shape(i)) for i in e.inputs]
                ax = e.params["axis"] % len(shapes[0])
                sign = np.concatenate([np.full(s, -1.0 if k in negs else 1.0, np.float32) for k, s in enumerate(shapes)], axis=ax)
                ins = tuple(prod[i].inputs[0] if k in negs else i for k, i in enumerate(e.inputs))
                raw = b.fresh("cat")
                g.vars[raw] = Var(raw, g.vars[e.outputs[0]].shape)
                out.append(Eqn("concat", ins, (raw,), dict(e.params)))
                sc = b.const(sign, "sign")
                out.append(Eqn("binary", (raw, sc), e.outputs, {"op": "mul"}))
                continue
        out.append(e)
    g = Graph(g.vars, g.consts, _dce(out, g), g.inputs, g.outputs, g.states, g.meta)
    # 2. movement chains from one source -> reshape, take, reshape
    prod = g.producers()
    cons = g.consumers()
    root: dict[str, tuple[str, np.ndarray]] = {}  # var -> (source var, flat index of the source per element)
    out = []
    for e in g.eqns:
        if e.prim in movement and all(T not in g.shape(i) for i in e.inputs) and T not in g.vars[e.outputs[0]].shape \
                and all(i in g.vars for i in e.inputs):
            which, idx = move_map(g, e)
            srcs = []
            for k, i in enumerate(e.inputs):
                r = root.get(i, (i, np.arange(int(np.prod(shape1(g.shape(i)))))))
                srcs.append(r)
            names = {s for s, _ in srcs}
            if len(names) == 1:
                src = names.pop()
                flat = np.empty(which.size, dtype=np.int64)
                for k in range(len(e.inputs)):
                    sel = which == k
                    flat[sel] = srcs[k][1][idx[sel]]
                root[e.outputs[0]] = (src, flat)
        out.append(e)
    final = []
    for e in out:
        o = e.outputs[0]
        if o in root and e.prim in movement:
            # keep it only where something other than movement uses it (the others are folded)
            users = cons.get(o, [])
            if users and all(u.prim in movement and u.outputs[0] in root for u in users) and o not in g.outputs.values():
                continue
            src, flat = root[o]
            n_src = int(np.prod(shape1(g.shape(src))))
            if np.array_equal(flat, np.arange(n_src)) and flat.size == n_src:
                final.append(Eqn("reshape", (src,), (o,), {"shape": tuple(g.vars[o].shape)}))
                continue
            f1 = b.fresh("flat")
            g.vars[f1] = Var(f1, (n_src,))
            f2 = b.fresh("perm")
            g.vars[f2] = Var(f2, (flat.size,))
            final.append(Eqn("reshape", (src,), (f1,), {"shape": (n_src,)}))
            final.append(Eqn("take", (f1,), (f2,), {"indices": flat.astype(np.int64), "axis": 0}))
            final.append(Eqn("reshape", (f2,), (o,), {"shape": tuple(g.vars[o].shape)}))
            continue
        final.append(e)
    g = Graph(g.vars, g.consts, _dce(final, g), g.inputs, g.outputs, g.states, g.meta)
    # 3. (p * sign) * b -> p * (sign * b)
    prod = g.producers()
    cons = g.consumers()
    out = []
    for e in g.eqns:
        if e.prim == "binary" and e.params["op"] == "mul":
            for k in (0, 1):
                inner = prod.get(e.inputs[k])
                if inner is None or inner.prim != "binary" or inner.params["op"] != "mul" or len(cons.get(e.inputs[k], [])) != 1:
                    continue
                # a sign vector (+-1): the frontend's and fold's own constants; a shape-only weight is not one
                c = [i for i in inner.inputs if i in g.consts and not is_shaped(g.consts[i])
                     and np.all(np.abs(g.consts[i]) == 1.0)]
                if len(c) != 1:
                    continue
                p = inner.inputs[0] if inner.inputs[1] == c[0] else inner.inputs[1]
                other = e.inputs[1 - k]
                if other in g.consts:
                    continue
                sb = b.fresh("signed")
                g.vars[sb] = Var(sb, _bshape(g.shape(c[0]), g.shape(other)))
                out.append(Eqn("binary", (c[0], other), (sb,), {"op": "mul"}))
                out.append(Eqn("binary", (p, sb), e.outputs, {"op": "mul"}))
                break
            else:
                out.append(e)
            continue
        out.append(e)
    g = Graph(g.vars, g.consts, _dce(out, g), g.inputs, g.outputs, g.states, g.meta)
    # 4. a permutation of a linear's output is a linear with permuted columns
    prod = g.producers()
    out = []
    for e in g.eqns:
        if permute_linears and e.prim == "take" and e.params.get("axis", 0) == 0 and e.inputs[0] in prod:
            flat = prod[e.inputs[0]]
            lin = prod.get(flat.inputs[0]) if flat.prim == "reshape" else None
            if lin is not None and lin.prim == "linear":
                w = g.consts[lin.inputs[1]]
                idx = np.asarray(e.params["indices"]).reshape(-1)
                K, N = w.shape
                if (int(np.prod(shape1(g.shape(flat.inputs[0])))) == N and idx.size <= N
                        and idx.size * K * 2 <= PERMUTED_WEIGHT_BYTES and idx.min() >= 0 and idx.max() < N):
                    ins = [lin.inputs[0], b.const(contiguous(w[:, idx]), hint=lin.inputs[1] + "[perm]")]
                    if made is not None:
                        made.append(ins[1])
                    if len(lin.inputs) == 3:
                        ins.append(b.const(contiguous(g.consts[lin.inputs[2]].reshape(-1)[idx]),
                                           hint=lin.inputs[2] + "[perm]"))
                    mid = b.fresh("lin")
                    g.vars[mid] = Var(mid, tuple(g.vars[flat.inputs[0]].shape[:-1]) + (idx.size,))
                    out.append(Eqn("linear", tuple(ins), (mid,), {}))
                    out.append(Eqn("reshape", (mid,), e.outputs, {"shape": tuple(g.vars[e.outputs[0]].shape)}))
                    continue
        out.append(e)
    g = Graph(g.vars, g.consts, _toposort(_dce(out, g), g), g.inputs, g.outputs, g.states, g.meta)
    used = {i for q in g.eqns for i in q.inputs} | set(g.outputs.values())
    g.consts = {k: v for k, v in g.consts.items() if k in used}
    defined = {o for q in g.eqns for o in q.outputs}
    g.vars = {k: v for k, v in g.vars.items() if k in g.inputs or k in defined}
    return g.verify()


# a permuted copy of a linear's weights (rotate-half of q and k) replaces a lane shuffle up to this size
PERMUTED_WEIGHT_BYTES = 64 << 20


def _bshape(a, b):
    from ..ir import broadcast
    return broadcast(tuple(a), tuple(b))


def _dce(eqns, g: Graph) -> list:
    """Drop equations whose outputs nothing uses (kv_append always stays: it writes the cache)."""
    need = set(g.outputs.values())
    keep = []
    for e in reversed(eqns):
        if e.prim == "kv_append" or any(o in need for o in e.outputs):
            keep.append(e)
            need.update(e.inputs)
    return keep[::-1]
