"""The ONNX -> IR importer: one decode step (batch 1, one new token, past length P symbolic).

The graph is walked once in topological order (only the nodes the logits depend on). Each ONNX tensor
gets a value (values.py):

* all inputs known (K)            -> the operator's numpy `eval` folds it (shapes fold to ints and
                                     `Sym`s; if that is impossible it becomes lazy)
* inputs known or lazy (K, L)     -> lazy (L): recorded, evaluated with numpy for given positions and
                                     masks; its shape is found by evaluating it at a few past lengths
* a main-path input (M)           -> the operator's `translate` emits IR equations; lazy inputs are
                                     tabulated over positions 0..max_context-1 (`gather(table,
                                     position_ids)`) or, where they meet the attention scores, verified
                                     and replaced by `mask_fill` (attention.py)
* a past KV input / KV view       -> the operator's `kv` hook (attention.py): kv_append, layout views of
                                     the cache, attn_qk / attn_pv
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx

from ..errors import CompileError, ContextLimitError, IrError, ModelError, UnsupportedError
from ..ir import _NO_BYTES, INPUTS, PRIMS, T, Eqn, Graph, Shaped, ShapeOnlyError, Var
from . import attention
from .fused_attention import attention_window, expand_fused_attention
from .loader import Node, Roles, find_roles, onnx_dtype_to_numpy, shape_only, to_numpy
from .ops import REGISTRY, describe_unsupported, spec_of, supported_ops, unsupported_nodes
from .sym import P, T_SYM, Sym, fit_dim, fmt_shape, has_sym, normalize, obj_array, subst
from .values import GW, K, L, M, Past, ir_dtype

PROBE_PS = (2, 3, 5)  # past lengths at which lazy tensors are evaluated to find their shapes


NP_OF_IR = {"f32": np.float32, "i64": np.int64, "bool": np.bool_}


def short_name(onnx_name: str) -> str:
    n = onnx_name.lstrip("/")
    if n.endswith("_output_0"):
        n = n[: -len("_output_0")]
    return n or "t"


class Importer:
    def __init__(self, model: onnx.ModelProto, max_context: int, source: str = "<memory>",
                 require_past: bool = True, base_dir: str = "", timing_only: bool = False) -> None:
        if not isinstance(max_context, (int, np.integer)) or int(max_context) < 1:
            raise ModelError(f"max_context must be a positive integer, got {max_context!r}")
        self.window = attention_window(model)
        model = expand_fused_attention(model)  # before the roles: the rewrite makes the cache's Concat
        self.model = model
        self.max_ctx = int(max_context)
        self.source = source
        self.base_dir = base_dir
        # timing-only: big initialisers (and any whose external data is absent) become Shaped constants
        self.timing_only = bool(timing_only)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.roles: Roles = find_roles(model, source, require_past)
        self.g = Graph(vars={}, consts={}, eqns=[], inputs=(), outputs={}, states={}, meta={})
        self.values: dict = {}
        self.init_protos = {t.name: t for t in model.graph.initializer}
        self.lazy_nodes: dict[str, tuple] = {}
        self.envs: dict = {}
        self.masks: dict = {}
        self.used_names: set[str] = set(INPUTS) | {T}
        self.const_memo: dict = {}
        self.table_memo: dict = {}
        self.table_by_content: dict = {}
        self.lazy_cse: dict = {}
        self.lazy_alias: dict[str, str] = {}  # ONNX output -> the identical lazy tensor computed first
        self.kv: dict[str, dict] = {}  # provisional state -> info
        self.cur: Node | None = None
        self._n = 0
        self._mask_cases = None
        self.dequantised: dict[str, int] = {}  # quantised weight kind -> count folded to float

    # ================================================================== naming / emission
    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}.{k}"
        self.used_names.add(name)
        return name

    def fresh(self, hint: str = "t") -> str:
        self._n += 1
        return self._unique(f"{hint}.{self._n}")

    def ir_name(self, onnx_name: str) -> str:
        return self._unique(short_name(onnx_name))

    def emit(self, prim: str, inputs, dtype: str = "f32", out: str | None = None, hint: str = "t", **params) -> str:
        name = self.ir_name(out) if out else self.fresh(hint)
        e = Eqn(prim, tuple(inputs), (name,), dict(params))
        try:
            shape = PRIMS[prim].infer(self.g, e)[0]
        except IrError as exc:
            raise UnsupportedError(f"{self.where()}: cannot be expressed as IR {prim} ({exc})") from None
        self.g.vars[name] = Var(name, tuple(shape), dtype)
        self.g.eqns.append(e)
        return name

    def where(self) -> str:
        return repr(self.cur) if self.cur is not None else "import"

    def unsupported(self, msg: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where()}: {msg}")

    # ================================================================== value queries
    def value(self, name: str):
        v = self.values.get(name)
        if v is None and name in self.init_protos:
            t = self.init_protos[name]
            shaped = shape_only(t, self.base_dir) if self.timing_only else None
            v = K(shaped if shaped is not None else to_numpy(t, self.base_dir), name)
            self.values[name] = v
        if v is None:
            raise ModelError(f"{self.source}: tensor {name!r} is used before it is defined")
        return v

    def shape(self, v) -> tuple:
        if isinstance(v, M):
            return tuple(T_SYM if d == T else d for d in self.g.vars[v.var].shape)
        if isinstance(v, K):
            return tuple(v.value.shape)
        if isinstance(v, (L, Past, attention.KVView, GW)):
            return tuple(v.shape)
        raise TypeError(v)

    def dtype(self, v) -> str:
        if isinstance(v, M):
            return self.g.vars[v.var].dtype
        if isinstance(v, K):
            return "i64" if v.value.dtype == object else ir_dtype(v.value.dtype)
        if isinstance(v, L):
            return ir_dtype(v.dtype)
        return "f32"

    def ir_shape(self, shape) -> tuple:
        out = []
        for d in shape:
            if isinstance(d, Sym):
                if d != T_SYM:
                    raise self.unsupported(f"a runtime tensor of shape {fmt_shape(shape)}: only the KV length "
                                           "T = P + 1 may be symbolic")
                out.append(T)
            else:
                out.append(int(d))
        return tuple(out)

    def has_t(self, v) -> bool:
        return any(isinstance(d, Sym) for d in self.shape(v))

    def const(self, array, hint: str = "c", dtype: str | None = None) -> str:
        """A new IR constant (no dedupe by name)."""
        a = _ir_array(array if isinstance(array, Shaped) else np.asarray(array), dtype)
        name = self.fresh(hint)
        self.g.consts[name] = a
        return name

    def weight(self, k: K, array=None, suffix: str = "", dtype: str | None = None) -> str:
        """The IR constant for a known value (memoised by ONNX name + variant; no copy of float32 data)."""
        key = (k.name, suffix, dtype)
        hit = self.const_memo.get(key) if k.name is not None else None
        if hit is not None:
            return hit
        a = _ir_array(k.value if array is None else array if isinstance(array, Shaped) else np.asarray(array), dtype)
        name = self._unique(short_name(k.name) + suffix) if k.name is not None else self.fresh("c")
        self.g.consts[name] = a
        if k.name is not None:
            self.const_memo[key] = name
        return name

    def var(self, v, dtype: str | None = None) -> str:
        """The IR tensor holding value v: a var, a constant, or a table gathered by position."""
        if isinstance(v, M):
            if dtype is not None and self.g.vars[v.var].dtype != dtype:
                return self.emit("cast", [v.var], dtype, hint="cast", to=dtype)
            return v.var
        if isinstance(v, K):
            if has_sym(v.value):
                return self.tabulate(v)
            return self.weight(v, dtype=dtype)
        if isinstance(v, L):
            if "mask" in v.deps:
                raise self.unsupported(f"the attention_mask-dependent tensor {v.name!r} {fmt_shape(v.shape)} feeds "
                                       "the main computation; the mask may only hide attention scores")
            if v.has_t:
                raise self.unsupported(f"the position-dependent tensor {v.name!r} {fmt_shape(v.shape)} spans the KV "
                                       "length and feeds the main computation")
            return self.tabulate(v)
        if isinstance(v, (Past, attention.KVView)):
            raise self.unsupported("reads the KV cache outside the attention matmuls")
        if isinstance(v, GW):
            raise self.unsupported("uses a weight matrix gathered by a runtime expert index other than as a MatMul "
                                   "operand (supported: Gather(expert table, index) -> MatMul)")
        raise TypeError(v)

    def reshape(self, v, shape, out: str | None = None) -> str:
        """v reshaped to `shape` (ints/Syms); no equation when the shape is already right."""
        x = self.var(v)
        target = self.ir_shape(shape)
        if self.g.vars.get(x) is not None and tuple(self.g.vars[x].shape) == target and out is None:
            return x
        return self.emit("reshape", [x], self.g.vars[x].dtype if x in self.g.vars else ir_dtype(self.g.consts[x].dtype),
                         out=out, hint="reshape", shape=target)

    # ================================================================== lazy evaluation
    def mask_array(self, case) -> np.ndarray | None:
        p, mid = case
        if mid is None:
            return np.ones((1, p + 1), dtype=self._mask_np())
        return self.masks[mid]

    def _mask_np(self):
        return onnx_dtype_to_numpy(self.roles.attention_mask_dtype) if self.roles.attention_mask else np.int64

    def add_mask(self, mid: str, mask: np.ndarray) -> tuple:
        self.masks[mid] = mask.reshape(1, -1).astype(self._mask_np())
        return (mask.size - 1, mid)

    def eval_value(self, v, case, env: dict | None = None) -> np.ndarray:
        if isinstance(v, K):
            return subst(v.value, case[0])
        if isinstance(v, L):
            return self.eval_lazy(v.name, case, env)
        raise TypeError(v)

    def eval_lazy(self, name: str, case, env: dict | None = None) -> np.ndarray:
        """The value of a lazy tensor at past length case[0] with mask case[1] (numpy; memoised per case in
        self.envs, or in the given scratch env)."""
        if env is None:
            env = self.envs.get(case)
            if env is None:
                env = self.envs[case] = {}
        p = case[0]
        stack = [name]
        while stack:
            n = stack[-1]
            if n in env:
                stack.pop()
                continue
            if n == self.roles.position_ids:
                env[n] = np.array([[p]], dtype=np.int64)
            elif n == self.roles.attention_mask:
                env[n] = self.mask_array(case)
            elif n in self.lazy_alias:
                target = self.lazy_alias[n]
                if target not in env:
                    stack.append(target)
                    continue
                env[n] = env[target]
            elif n not in self.lazy_nodes:
                v = self.value(n)
                if not isinstance(v, K):
                    raise UnsupportedError(f"{self.where()}: {n!r} is not a position/mask tensor")
                env[n] = subst(v.value, p)
            else:
                node, spec = self.lazy_nodes[n]
                missing = [i for i in node.inputs if i and i not in env]
                if missing:
                    stack.extend(missing)
                    continue
                args = [env[i] if i else None for i in node.inputs]
                try:
                    outs = eval_node(node, spec, args)
                except CompileError:
                    raise
                except IndexError as exc:
                    if node.op_type.startswith("Gather") and p > 0:
                        raise ContextLimitError(f"{node} reads a table by position that ends at position {p}",
                                                limit=p) from None
                    raise UnsupportedError(f"{node}: evaluating it at past length {p} failed "
                                           f"(IndexError: {exc})") from None
                except Exception as exc:
                    raise UnsupportedError(f"{node}: evaluating it at past length {p} failed "
                                           f"({type(exc).__name__}: {exc})") from None
                for o, a in zip(node.outputs, outs):
                    if o:
                        env[o] = a if isinstance(a, Shaped) else np.asarray(a)
                if n not in env:
                    raise ModelError(f"{node}: produced no value for {n!r}")
            stack.pop()
        return env[name]

    def _lazy_key(self, node: Node, vals):
        """Structural identity of a lazy node (same operator, attributes and inputs): per-layer copies of one
        position computation (e.g. the rotary Unsqueeze of every layer) share one value and one table."""
        def attr(v):
            if isinstance(v, np.ndarray):
                return ("a", v.dtype.str, v.shape, v.tobytes() if v.dtype != object else repr(v.tolist()))
            return ("v", repr(v))

        ins = []
        for v in vals:
            if v is None:
                ins.append(None)
            elif isinstance(v, L):
                ins.append(("L", v.name))
            elif v.value.size <= 4096 and not isinstance(v.value, Shaped):
                a = v.value
                ins.append(("K", a.dtype.str, a.shape, a.tobytes() if a.dtype != object else repr(a.tolist())))
            else:
                ins.append(("Kn", v.name, id(v)))
        return (node.op_type, node.domain, len(node.outputs), tuple(sorted((k, attr(a)) for k, a in node.attrs.items())),
                tuple(ins))

    def make_lazy(self, node: Node, spec, vals) -> list:
        key = self._lazy_key(node, vals)
        hit = self.lazy_cse.get(key)
        if hit is not None:
            for o, v in zip(node.outputs, hit):
                if o and v is not None:
                    self.lazy_alias[o] = v.name
            return list(hit)
        outs = self._make_lazy(node, spec, vals)
        self.lazy_cse[key] = outs
        return outs

    def _make_lazy(self, node: Node, spec, vals) -> list:
        deps = set()
        for v in vals:
            if isinstance(v, L):
                deps |= v.deps
            elif isinstance(v, K) and has_sym(v.value):
                deps.add("pos")
        for o in node.outputs:
            if o:
                self.lazy_nodes[o] = (node, spec)
        outs = []
        for o in node.outputs:
            if not o:
                outs.append(None)
                continue
            samples = [(p, self.eval_lazy(o, (p, None))) for p in PROBE_PS]
            a0 = samples[0][1]
            ranks = {a.ndim for _, a in samples}
            if len(ranks) != 1:
                raise self.unsupported(f"output {o!r} changes rank with the past length")
            shape = []
            for k in range(a0.ndim):
                d = fit_dim([(p, a.shape[k]) for p, a in samples])
                if d is None:
                    raise self.unsupported(f"output {o!r} has a dimension that is not affine in the past length "
                                           f"({[a.shape for _, a in samples]})")
                shape.append(d)
            outs.append(L(o, tuple(shape), a0.dtype, frozenset(deps)))
        return outs

    def tabulate(self, v) -> str:
        """gather(table, position_ids) for a tensor that depends only on the position."""
        key = ("K", v.name) if isinstance(v, K) else ("L", v.name)
        hit = self.table_memo.get(key) if v.name is not None else None
        if hit is not None:
            return hit
        shape = tuple(v.value.shape) if isinstance(v, K) else tuple(v.shape)
        if any(isinstance(d, Sym) for d in shape):
            raise self.unsupported(f"position-dependent tensor of shape {fmt_shape(shape)} spans the KV length")
        rows = []
        for p in range(self.max_ctx):
            case = (p, None)
            try:  # positions not otherwise needed are evaluated in a scratch environment (memory ~ max_context)
                a = self.eval_value(v, case, None if case in self.envs else {})
            except ContextLimitError as exc:
                raise ContextLimitError(f"--max-context {self.max_ctx}: the model supports at most {exc.limit} "
                                        f"positions: {exc}; use --max-context {exc.limit} or less, or leave it out",
                                        limit=exc.limit) from None
            except CompileError as exc:
                raise UnsupportedError(f"{self.where()}: tabulating {v.name!r} for max_context {self.max_ctx} "
                                       f"failed at position {p}: {exc}") from None
            if tuple(a.shape) != shape:
                raise self.unsupported(f"position-dependent tensor {v.name!r} changes shape with the position")
            rows.append(a)
        table = np.stack(rows)  # (a Shaped table when the rows come from a shape-only weight: GPT-2's wpe)
        if table.dtype.kind == "f":
            table = table.astype(np.float32, copy=False)
        elif table.dtype.kind in "iu":
            table = table.astype(np.int64, copy=False)
        direct = len(shape) >= 1 and shape[0] == 1
        if direct:
            table = table.reshape((self.max_ctx,) + shape[1:])
        if isinstance(table, Shaped):  # no content to compare: one table per source tensor
            digest = ("shaped", v.name, table.dtype.str, table.shape)
        else:
            digest = (table.dtype.str, table.shape, hashlib.sha1(np.ascontiguousarray(table).tobytes()).hexdigest())
        cname = self.table_by_content.get(digest)
        if cname is None:
            cname = self._unique("table." + short_name(v.name or "pos"))
            self.g.consts[cname] = table
            self.table_by_content[digest] = cname
        dt = ir_dtype(table.dtype)
        out = self.emit("gather", [cname, "position_ids"], dt, hint="pos")
        if not direct:
            out = self.emit("reshape", [out], dt, hint="pos", shape=self.ir_shape(shape))
        if v.name is not None:
            self.table_memo[key] = out
        return out

    def mask_cases(self) -> list:
        """(past length, mask id) pairs on which mask paths are verified."""
        if self._mask_cases is None:
            n = self.max_ctx
            # small positions, powers of two and their neighbours (window / chunk boundaries), the last one
            cand = {0, 1, 2, 3, 5, 7, n // 2, n - 1}
            k = 8
            while k < n:
                cand |= {k - 1, k, k + 1}
                k *= 2
            ps = sorted(p for p in cand if 0 <= p < n)
            cases = [(p, None) for p in ps]
            if self.roles.attention_mask:
                rng = np.random.default_rng(1234)
                for p in sorted({p for p in (3, 7, n - 1) if 1 <= p < n}):
                    m = np.ones(p + 1, dtype=np.int64)
                    hide = rng.random(p) < 0.4
                    hide[0] = True  # always some hidden position (left padding)
                    m[:p][hide] = 0
                    cases.append(self.add_mask(f"z{p}", m))
            self._mask_cases = cases
        return self._mask_cases

    # ================================================================== the walk
    def needed_nodes(self) -> list[Node]:
        """The nodes the logits depend on, in graph order (what the import translates)."""
        g = self.model.graph
        producer = {}
        for i, n in enumerate(g.node):
            for o in n.output:
                if o:
                    producer[o] = i
        need, stack = set(), [self.roles.logits]
        seen = set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            i = producer.get(t)
            if i is None or i in need:
                continue
            need.add(i)
            stack.extend(x for x in g.node[i].input if x)
        return [Node(g.node[i], i, self.base_dir) for i in sorted(need)]

    def _init_inputs(self) -> None:
        r = self.roles
        g = self.g
        g.vars["input_ids"] = Var("input_ids", (1,), "i64")
        g.vars["position_ids"] = Var("position_ids", (1,), "i64")
        g.vars["attention_mask"] = Var("attention_mask", (T,), "f32")
        if r.input_ids_rank == 2:
            ids = self.emit("reshape", ["input_ids"], "i64", hint="input_ids", shape=(1, 1))
        else:
            ids = "input_ids"
        self.values[r.input_ids] = M(ids)
        if r.position_ids:
            self.values[r.position_ids] = L(r.position_ids, (1, 1), np.dtype(np.int64), frozenset({"pos"}))
        if r.attention_mask:
            self.values[r.attention_mask] = L(r.attention_mask, (1, T_SYM), np.dtype(self._mask_np()),
                                              frozenset({"mask"}))
        if r.cache_position:
            self.values[r.cache_position] = K(obj_array([P]), r.cache_position)
        for pi in r.past:
            self.values[pi.name] = Past(pi.name, pi.heads, pi.head_dim)
        self.past_info = {pi.name: pi for pi in r.past}

    def process(self, node: Node, spec, vals) -> list:
        present = [v for v in vals if v is not None]
        if spec.known is not None:
            return spec.known(self, node, vals)
        if any(isinstance(v, (Past, attention.KVView)) for v in present):
            if spec.kv is None:
                raise self.unsupported("reads the KV cache; only layout operators (Transpose, Reshape, Unsqueeze, "
                                       "Expand, ...), a scalar scale and the attention MatMuls may")
            return spec.kv(self, node, vals)
        if all(isinstance(v, K) for v in present):
            arrays = [v.value if v is not None else None for v in vals]
            try:
                outs = eval_node(node, spec, arrays)
            except CompileError:
                raise
            except Exception as exc:
                if any(has_sym(a) for a in arrays if a is not None):
                    return self.make_lazy(node, spec, vals)
                raise ModelError(f"{self.source}: {node} fails on its constant inputs "
                                 f"({type(exc).__name__}: {exc})") from None
            return [K(o if isinstance(o, Shaped) else normalize(np.asarray(o)), name) if name else None
                    for o, name in zip(outs, node.outputs)]
        if any(isinstance(v, GW) for v in present):
            if node.op_type != "MatMul":
                raise self.unsupported("uses a weight matrix gathered by a runtime expert index; only a MatMul "
                                       "may read one")
            return spec.translate(self, node, vals)
        if not any(isinstance(v, M) for v in present):
            return self.make_lazy(node, spec, vals)
        # ---- the main path
        mains_t = [v for v in present if isinstance(v, M) and self.has_t(v)]
        lazies = [v for v in present if isinstance(v, L)]
        if mains_t and any("mask" in v.deps or v.has_t for v in lazies):
            return attention.mask_boundary(self, node, spec, vals)
        for v in lazies:
            if "mask" in v.deps:
                raise self.unsupported(f"the attention_mask-dependent tensor {v.name!r} feeds the main computation "
                                       "(only attention scores may be masked)")
        if mains_t and not spec.t_ok:
            raise self.unsupported(f"touches a tensor spanning the KV length ({fmt_shape(self.shape(mains_t[0]))}); "
                                   "only elementwise ops on the attention scores, Softmax over the last axis, Cast, "
                                   "the mask and the attention MatMuls may")
        if spec.translate is None:
            raise self.unsupported("is only supported on constants and shape computations, not on the runtime "
                                   "tensors of the main path")
        return spec.translate(self, node, vals)

    def run(self) -> Graph:
        w = self.window
        if w is not None and self.max_ctx > w:
            raise ContextLimitError(f"--max-context {self.max_ctx}: the model supports at most {w} positions here: "
                                    f"its sliding-window attention is not implemented beyond its {w}-position "
                                    f"window yet; use --max-context {w} or less, or leave it out", limit=w)
        self._init_inputs()
        nodes = self.needed_nodes()
        missing = unsupported_nodes(nodes)
        if missing:
            raise UnsupportedError(describe_unsupported(missing))
        for node in nodes:
            self._run_node(node)
        self.cur = None
        logits = self.values.get(self.roles.logits)
        if not isinstance(logits, M):
            raise ModelError(f"{self.source}: the logits output {self.roles.logits!r} does not depend on input_ids")
        self.g.outputs = {"logits": logits.var}
        attention.finalize_states(self)
        self._set_inputs()
        return self.g

    def _run_node(self, node: Node) -> None:
        self.cur = node
        spec = spec_of(node)
        vals = [self.value(i) if i else None for i in node.inputs]
        if spec.expand is not None:  # a fused operator: the standard operators it stands for, one by one
            try:
                subs = spec.expand(self, node, vals)
            except CompileError:
                raise
            except Exception as exc:
                raise UnsupportedError(f"{node}: cannot be expanded ({type(exc).__name__}: {exc})") from exc
            for sub in subs:
                self._run_node(sub)
            return
        try:
            outs = self.process(node, spec, vals)
        except CompileError:
            raise
        except Exception as exc:  # an operator's numpy/translation code failed: say where, in one line
            raise UnsupportedError(f"{node}: cannot be translated ({type(exc).__name__}: {exc})") from exc
        if len(outs) < len([o for o in node.outputs if o]):
            raise ModelError(f"{node}: translation produced {len(outs)} outputs for {len(node.outputs)}")
        for name, v in zip(node.outputs, outs):
            if name:
                self.values[name] = v
        if node.op_type == "DequantizeLinear" and all(isinstance(v, K) for v in vals if v is not None):
            self.note_dequantised("DequantizeLinear")

    def note_dequantised(self, what: str) -> None:
        """A quantised weight folded to float at compile time (reported: the int8 path does not exist yet)."""
        self.dequantised[what] = self.dequantised.get(what, 0) + 1

    def _set_inputs(self) -> None:
        used = {i for e in self.g.eqns for i in e.inputs}
        self.g.inputs = tuple(n for n in INPUTS if n in used)
        for n in INPUTS:
            if n not in self.g.inputs:
                self.g.vars.pop(n, None)


# ONNX operators a shape-only weight may pass through on its way to a MatMul or a Gather (and their output
# shapes from numpy's own rules, on arrays of zero-byte elements): data movement, casts, elementwise
# arithmetic (a dequantisation, a scale folded into a weight). Any other operator on one needs its values.
_SHAPED_MOVES = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Slice", "Gather", "Split",
                 "Concat", "Expand", "Tile", "Dropout"}
_SHAPED_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Neg", "DequantizeLinear"}


def eval_node(node: Node, spec, args: list) -> list:
    """spec.eval on known values; with a shape-only (Shaped) input, the output shapes and types only."""
    shaped = [a for a in args if isinstance(a, Shaped)]
    if not shaped:
        return spec.eval(node, args)
    name = shaped[0].name
    if node.op_type in _SHAPED_MOVES:
        data = range(len(args)) if node.op_type == "Concat" else (0,)
        dtypes = [args[i].dtype for i in data if args[i] is not None]
        dummies = [np.empty(np.shape(a) if not isinstance(a, Shaped) else a.shape, _NO_BYTES)
                   if (i in data and a is not None) else a for i, a in enumerate(args)]
        outs = spec.eval(node, dummies)
        dt = np.result_type(*dtypes)
        return [Shaped(o.shape, dt, name) if isinstance(o, np.ndarray) and o.dtype == _NO_BYTES else o for o in outs]
    if node.op_type == "Cast":
        from .ops.cast import target

        return [Shaped(shaped[0].shape, NP_OF_IR[target(node.attr("to"))], name)]
    if node.op_type in _SHAPED_ELEMENTWISE:
        data = args[:1] if node.op_type == "DequantizeLinear" else [a for a in args if a is not None]
        shape = np.broadcast_shapes(*[np.shape(a) if not isinstance(a, Shaped) else a.shape for a in data])
        return [Shaped(shape, np.float32, name)]
    raise ShapeOnlyError(f"{node}: {shaped[0]._needs(f'an input of {node.op_type}')}")


def _ir_array(a: np.ndarray, dtype: str | None) -> np.ndarray:
    """A constant in an IR type: the one asked for, else float32 for floats and int64 for integers."""
    if dtype is not None:
        return a.astype(NP_OF_IR[dtype], copy=False)
    if a.dtype.kind == "f" and a.dtype != np.float32:
        return a.astype(np.float32)
    if a.dtype.kind in "iu" and a.dtype != np.int64:
        return a.astype(np.int64)
    return a
