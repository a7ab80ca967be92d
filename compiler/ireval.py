"""Reference semantics of the IR: a plain numpy evaluator (float32), decoding token by token.

This is the meaning the backend must preserve; tests compare it with ONNX Runtime (so the frontend is
checked independently of the backend) and the emulator with both.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import IrError
from .ir import T, Graph

try:  # vectorised erf without scipy
    _erf = np.frompyfunc(math.erf, 1, 1)
except Exception:  # pragma: no cover
    _erf = None


def _sub_t(shape, t: int) -> tuple:
    return tuple(t if d == T else d for d in shape)


def _unary(op: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "neg":
            return -x
        if op == "abs":
            return np.abs(x)
        if op == "relu":
            return np.maximum(x, 0)
        if op == "exp":
            return np.exp(x)
        if op == "tanh":
            return np.tanh(x)
        if op == "sigmoid":
            return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(x.dtype)
        if op == "sqrt":
            return np.sqrt(x)
        if op == "rsqrt":
            return 1.0 / np.sqrt(x)
        if op == "recip":
            return 1.0 / x
        if op == "erf":
            return _erf(x.astype(np.float64)).astype(np.float32)
        if op == "isnan":
            return np.isnan(x)
        if op == "sin":
            return np.sin(x)
        if op == "cos":
            return np.cos(x)
        if op == "log":
            return np.log(x)
        if op == "not":
            return np.logical_not(x)
    raise IrError(f"unary op {op!r} has no meaning")


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum, "min": np.minimum,
    "pow": np.power, "eq": np.equal, "gt": np.greater, "ge": np.greater_equal, "lt": np.less,
    "le": np.less_equal, "and": np.logical_and, "or": np.logical_or,
}


def _binary(op: str, x, y):
    if op in ("add", "sub", "mul", "div", "max", "min", "pow"):  # booleans count as 0.0 / 1.0
        x = np.asarray(x).astype(np.float32) if np.asarray(x).dtype == bool else x
        y = np.asarray(y).astype(np.float32) if np.asarray(y).dtype == bool else y
    with np.errstate(all="ignore"):
        if op == "div":
            if np.issubdtype(np.result_type(x, y), np.integer):
                return np.floor_divide(x, y)
            return np.divide(x, y)
        fn = _BINARY.get(op)
        if fn is None:
            raise IrError(f"binary op {op!r} has no meaning")
        return fn(x, y)


def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a


def eval_eqn(e, args: list, t: int, states: dict, position: int, graph: Graph):
    """The value of one equation given its input values (the IR's reference semantics)."""
    p = e.params
    prim = e.prim
    if prim == "gather":
        table, idx = args
        idx = np.asarray(idx).astype(np.int64)
        if np.any(idx < 0) or np.any(idx >= table.shape[0]):
            raise IrError(f"gather index {idx.tolist()} outside table of {table.shape[0]} rows")
        return _f32(table[idx])
    if prim == "linear":
        y = np.matmul(args[0].astype(np.float32), args[1].astype(np.float32))
        return y + args[2] if len(args) == 3 else y
    if prim == "unary":
        return _unary(p["op"], args[0])
    if prim == "binary":
        return _binary(p["op"], args[0], args[1])
    if prim == "where":
        return np.where(np.asarray(args[0]).astype(bool), args[1], args[2])
    if prim == "reduce":
        fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[p["op"]]
        return fn(args[0], axis=tuple(p["axes"]), keepdims=p.get("keepdims", True)).astype(args[0].dtype)
    if prim == "softmax":
        x = args[0].astype(np.float32)
        with np.errstate(all="ignore"):
            m = np.max(x, axis=p.get("axis", -1), keepdims=True)
            ex = np.exp(x - m)
            return ex / np.sum(ex, axis=p.get("axis", -1), keepdims=True)
    if prim == "layernorm":
        x = args[0].astype(np.float32)
        ax = p.get("axis", -1) % x.ndim
        axes = tuple(range(ax, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(var + np.float32(p["eps"]))
        y = y * args[1]
        return y + args[2] if len(args) == 3 else y
    if prim == "rmsnorm":
        x = args[0].astype(np.float32)
        ax = p.get("axis", -1) % x.ndim
        axes = tuple(range(ax, x.ndim))
        ms = (x * x).mean(axis=axes, keepdims=True)
        return x / np.sqrt(ms + np.float32(p["eps"])) * args[1]
    if prim == "reshape":
        return args[0].reshape(_sub_t(p["shape"], t))
    if prim == "transpose":
        return np.transpose(args[0], p["perm"])
    if prim == "slice":
        x = args[0]
        sl = [slice(None)] * x.ndim
        steps = p.get("steps") or [1] * len(p["axes"])
        for st, en, ax, sp in zip(p["starts"], p["ends"], p["axes"], steps):
            sl[ax % x.ndim] = slice(st, en, sp)
        return x[tuple(sl)]
    if prim == "concat":
        return np.concatenate(args, axis=p["axis"])
    if prim == "expand":
        return np.broadcast_to(args[0], np.broadcast_shapes(args[0].shape, _sub_t(p["shape"], t))).copy()
    if prim == "take":
        return np.take(args[0], np.asarray(p["indices"]), axis=p["axis"])
    if prim == "cast":
        to = p["to"]
        if to == "f32":
            return np.asarray(args[0]).astype(np.float32)
        if to == "i64":
            return np.asarray(args[0]).astype(np.int64)
        if to == "bool":
            return np.asarray(args[0]).astype(bool)
        raise IrError(f"cast to {to!r} has no meaning")
    if prim == "kv_append":
        st = states[p["state"]]
        if position >= st.shape[1]:
            raise IrError(f"position {position} is past the KV cache's {st.shape[1]} positions")
        st[:, position, :] = args[0][0, :, 0, :]
        return st[None, :, :t, :].copy()
    if prim == "attn_qk":
        q, kv = args
        g = p["group"]
        k = np.repeat(kv, g, axis=1)  # head h reads kv head h // g
        return np.matmul(q, np.swapaxes(k, 2, 3))
    if prim == "attn_pv":
        pr, kv = args
        v = np.repeat(kv, p["group"], axis=1)
        return np.matmul(pr.astype(np.float32), v)
    if prim == "mask_fill":
        s, m = args
        return np.where(np.asarray(m) != 0, s, np.float32(p["fill"])).astype(np.float32)
    if prim == "topk":
        x = np.asarray(args[0], dtype=np.float32)
        # stable sort of -x: the largest first, equal values in index order (ONNX TopK, sorted=1)
        order = np.argsort(-x, axis=-1, kind="stable")[..., :p["k"]]
        return order.astype(np.int64) if p["part"] == "indices" else np.take_along_axis(x, order, axis=-1)
    if prim == "expert_linear":
        x, w, idx = args
        e = int(np.asarray(idx).reshape(-1)[0])
        if not 0 <= e < w.shape[0]:
            raise IrError(f"expert index {e} outside 0..{w.shape[0] - 1}")
        return np.matmul(x.astype(np.float32), w[e].astype(np.float32))
    raise IrError(f"prim {prim!r} has no meaning")


class IrDecoder:
    """Greedy token-by-token decoding of an IR graph with numpy, carrying the KV states."""

    def __init__(self, graph: Graph, max_context: int) -> None:
        self.g = graph
        self.max_context = max_context
        self.reset()

    def reset(self) -> None:
        self.position = 0
        self.states = {n: np.zeros((s.heads, self.max_context, s.head_dim), dtype=np.float32)
                       for n, s in self.g.states.items()}

    def step(self, token: int, return_env: bool = False):
        p = self.position
        t = p + 1
        env: dict = dict(self.g.consts)
        env["input_ids"] = np.array([token], dtype=np.int64)
        env["position_ids"] = np.array([p], dtype=np.int64)
        env["attention_mask"] = np.ones((t,), dtype=np.float32)
        for e in self.g.eqns:
            val = eval_eqn(e, [env[i] for i in e.inputs], t, self.states, p, self.g)
            env[e.outputs[0]] = np.asarray(val)
        self.position += 1
        logits = np.asarray(env[self.g.outputs["logits"]], dtype=np.float32).reshape(-1)
        return (logits, env) if return_env else logits

    def greedy(self, prompt, n_tokens: int):
        self.reset()
        logits = None
        for tok in prompt:
            logits = self.step(int(tok))
        out, rows = [], []
        for i in range(n_tokens):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            rows.append(logits)
            if i + 1 < n_tokens:
                logits = self.step(nxt)
        return out, np.stack(rows) if rows else np.zeros((0, 0), np.float32)
