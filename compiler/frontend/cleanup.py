"""Cleanup passes over the imported IR. Each takes and returns a Graph; `run_all` verifies after each."""
from __future__ import annotations

import numpy as np

from ..ir import T, Eqn, Graph, Shaped, broadcast
from ..ireval import eval_eqn

FOLD_LIMIT = 1 << 24  # do not materialise constants bigger than this many elements


def _subst(g: Graph, eqns: list[Eqn], alias: dict[str, str]) -> list[Eqn]:
    def res(n):
        while n in alias:
            n = alias[n]
        return n

    out = []
    for e in eqns:
        ins = tuple(res(i) for i in e.inputs)
        out.append(e if ins == e.inputs else Eqn(e.prim, ins, e.outputs, e.params))
    g.outputs = {k: res(v) for k, v in g.outputs.items()}
    return out


def dce(g: Graph) -> Graph:
    """Drop equations whose results are never used (kv_append writes a state: always kept), then unused
    constants and variables."""
    live = set(g.outputs.values())
    keep = []
    for e in reversed(g.eqns):
        if e.prim == "kv_append" or any(o in live for o in e.outputs):
            keep.append(e)
            live.update(e.inputs)
    g.eqns = keep[::-1]
    used = {i for e in g.eqns for i in e.inputs} | set(g.outputs.values())
    defined = {o for e in g.eqns for o in e.outputs}
    g.inputs = tuple(i for i in g.inputs if i in used)
    g.vars = {k: v for k, v in g.vars.items() if k in defined or k in g.inputs}
    g.consts = {k: v for k, v in g.consts.items() if k in used}
    return g


def fold_constants(g: Graph) -> Graph:
    """Evaluate equations whose inputs are all constants (ireval semantics) into constants."""
    eqns = []
    for e in g.eqns:
        if e.prim != "kv_append" and e.inputs and all(i in g.consts for i in e.inputs) \
                and len(e.outputs) == 1 and T not in g.vars[e.outputs[0]].shape:
            shape = g.vars[e.outputs[0]].shape
            if int(np.prod(shape, dtype=np.int64)) <= FOLD_LIMIT:
                val = eval_eqn(e, [g.consts[i] for i in e.inputs], 0, {}, 0, g)
                val = val if isinstance(val, Shaped) else np.asarray(val)  # a shape-only weight, moved
                if val.dtype.kind == "f" and val.dtype != np.float32:
                    val = val.astype(np.float32)
                out = e.outputs[0]
                del g.vars[out]
                g.consts[out] = val
                continue
        eqns.append(e)
    g.eqns = eqns
    return g


def _is_identity(g: Graph, e: Eqn) -> bool:
    if len(e.inputs) != 1 or len(e.outputs) != 1:
        return False
    src, dst = e.inputs[0], e.outputs[0]
    same_shape = tuple(g.shape(src)) == tuple(g.vars[dst].shape)
    if e.prim in ("reshape", "expand", "slice"):
        steps = e.params.get("steps") or [1]
        return same_shape and all(s == 1 for s in steps) and g.dtype(src) == g.vars[dst].dtype
    if e.prim == "cast":
        return g.dtype(src) == e.params["to"]
    if e.prim == "transpose":
        return list(e.params["perm"]) == list(range(len(e.params["perm"])))
    return False


def remove_identities(g: Graph) -> Graph:
    """Drop reshapes/expands/slices that keep the shape, casts to the same dtype, identity transposes."""
    alias: dict[str, str] = {}
    eqns = []
    for e in _subst(g, g.eqns, {}):
        ins = tuple(alias.get(i, i) for i in e.inputs)
        if ins != e.inputs:
            e = Eqn(e.prim, ins, e.outputs, e.params)
        if _is_identity(g, e) and e.inputs[0] in g.vars:
            alias[e.outputs[0]] = e.inputs[0]
            continue
        eqns.append(e)
    g.eqns = _subst(g, eqns, alias)
    return dce(g)


def merge_reshapes(g: Graph) -> Graph:
    """reshape(reshape(x)) -> reshape(x)."""
    reshape_of: dict[str, str] = {}
    eqns = []
    for e in g.eqns:
        if e.prim == "reshape" and e.inputs[0] in reshape_of:
            e = Eqn("reshape", (reshape_of[e.inputs[0]],), e.outputs, e.params)
        if e.prim == "reshape":
            reshape_of[e.outputs[0]] = e.inputs[0]
        eqns.append(e)
    g.eqns = eqns
    return dce(g)


def _params_key(params: dict) -> tuple:
    out = []
    for k in sorted(params):
        v = params[k]
        if isinstance(v, np.ndarray):
            v = ("array", v.dtype.str, v.shape, v.tobytes())
        elif isinstance(v, (list, tuple)):
            v = ("seq", tuple(v))
        else:
            v = ("val", repr(v))
        out.append((k, v))
    return tuple(out)


def cse(g: Graph) -> Graph:
    """Common subexpressions: equations with the same prim, inputs and params compute the same value once
    (e.g. the per-layer gathers of one rotary table). kv_append has a side effect and is never merged."""
    seen: dict = {}
    alias: dict[str, str] = {}
    eqns = []
    for e in g.eqns:
        ins = tuple(alias.get(i, i) for i in e.inputs)
        if ins != e.inputs:
            e = Eqn(e.prim, ins, e.outputs, e.params)
        if e.prim != "kv_append" and len(e.outputs) == 1:
            key = (e.prim, ins, _params_key(e.params), g.vars[e.outputs[0]].dtype)
            hit = seen.get(key)
            if hit is not None:
                alias[e.outputs[0]] = hit
                continue
            seen[key] = e.outputs[0]
        eqns.append(e)
    g.eqns = eqns
    g.outputs = {k: alias.get(v, v) for k, v in g.outputs.items()}
    return dce(g)


def fold_linear_bias(g: Graph) -> Graph:
    """linear(x, w) followed by `add` of a constant [N] (broadcast over the rows) -> linear(x, w, b)."""
    uses: dict[str, int] = {}
    for e in g.eqns:
        for i in e.inputs:
            uses[i] = uses.get(i, 0) + 1
    for v in g.outputs.values():
        uses[v] = uses.get(v, 0) + 1
    producer = {e.outputs[0]: k for k, e in enumerate(g.eqns)}
    eqns = list(g.eqns)
    drop = set()
    for k, e in enumerate(g.eqns):
        if e.prim != "binary" or e.params.get("op") != "add":
            continue
        for y, c in ((e.inputs[0], e.inputs[1]), (e.inputs[1], e.inputs[0])):
            pk = producer.get(y)
            if pk is None or c not in g.consts or uses.get(y, 0) != 1:
                continue
            lin = eqns[pk]
            if lin.prim != "linear" or len(lin.inputs) != 2:
                continue
            n = g.shape(lin.inputs[1])[1]
            b = g.consts[c]
            ys = g.vars[y].shape
            if b.dtype.kind != "f" or b.size != n or b.shape[-1:] != (n,) or len(b.shape) > len(ys) \
                    or broadcast(ys, b.shape) != tuple(ys) or g.vars[e.outputs[0]].shape != ys:
                continue
            bname = c
            if b.shape != (n,):
                bname = f"{c}.bias"
                while bname in g.consts or bname in g.vars:
                    bname += "_"
                g.consts[bname] = b.reshape(n)
            eqns[pk] = Eqn("linear", (lin.inputs[0], lin.inputs[1], bname), e.outputs, lin.params)
            del g.vars[y]
            drop.add(k)
            break
    g.eqns = [e for k, e in enumerate(eqns) if k not in drop]
    return dce(g)


PASSES = (fold_constants, remove_identities, merge_reshapes, remove_identities, cse, fold_linear_bias, dce)


def run_all(g: Graph) -> Graph:
    g.verify()
    for p in PASSES:
        g = p(g)
        g.verify()
    return g
