"""The core every lowering shares: buffers, instruction builders, operand addressing, the entry loop.

A `Lowerer` lowers one context bucket: it walks the partitioned graph in order and, for each equation,
calls the lowering registered for its prim (see `REGISTRY`, filled by the family modules) once per
chip that holds the equation's output. The builders here make instructions and name buffers; the
family modules decide what to build.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from isa import Hardware, Instr
from isa.fields import REGION_BITS
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, SXM_BY_NAME, VXM_BY_NAME

from ...errors import CompileError, UnsupportedError
from ...ir import Graph, T, is_shaped
from ..buffers import LANES, Buf, Node, Val
from ..partition import Plan
from ..provenance import annotate

_IR_TO_VXM = {"gt": "cmpgt", "ge": "cmpge", "eq": "cmpeq"}

# prim -> lowering function(lowerer, chip, eqn); filled from the family modules by __init__.py
REGISTRY: dict[str, Callable] = {}


def vecs(n: int) -> int:
    """Vectors that hold n elements."""
    return -(-n // LANES)


class BufferPool:
    """All buffers of a program. Shared ones (weights, caches, inputs, outputs) are created once and
    reused by every bucket; the others belong to the bucket that made them."""

    def __init__(self) -> None:
        self.bufs: list[Buf] = []
        self.on_chip: dict[int, int] = {}  # chip -> buffers on it (an instruction names a region of its chip)
        self.shared: dict = {}
        self.bucket_of: dict[int, int] = {}
        self._uid = 0
        self.replay: dict = {}  # eqn index -> (nodes per chip, vals per chip) of context-independent equations
        self._blobs: dict = {}  # initial contents several chips' regions hold alike (see blob)
        self.ops: list[tuple] = []  # operation id -> (primitive, name, function, layer, kind) (provenance.annotate)
        self._op_ids: dict[tuple, int] = {}

    def op_id(self, origin: tuple) -> int:
        i = self._op_ids.get(origin)
        if i is None:
            i = self._op_ids[origin] = len(self.ops)
            self.ops.append(origin)
        return i

    def blob(self, key, dtype: str, make) -> np.ndarray:
        """The read-only initial contents `make()` gives, in the region type dtype, made once for every chip
        whose region holds the same (a table or a tile on each of 576 chips: one array, not 576)."""
        a = self._blobs.get((key, dtype))
        if a is None:
            a = make()
            if dtype == "fp16":
                a = a.astype(np.float16)
            a.setflags(write=False)
            self._blobs[(key, dtype)] = a
        return a

    def next_uid(self) -> int:
        self._uid += 1
        return self._uid

    def new(self, chip, name, rows, dtype, kind, row_vectors=1, data=None, zone="act", width=8, key=None, bucket=None):
        if key is not None and key in self.shared:
            return self.shared[key]
        if data is not None and dtype == "fp16":
            data = data.astype(np.float16, copy=False)  # kept in the region's type: half the compiler's memory for weights
        mine = self.on_chip.get(chip, 0)
        if mine >= 1 << REGION_BITS:
            raise CompileError(
                f"chip {chip} needs more than {1 << REGION_BITS:,} regions, the most an instruction's "
                f"{REGION_BITS}-bit region field names (every context bucket adds its own): compile fewer "
                f"context buckets (a smaller --max-context) or spread the model over more chips")
        self.on_chip[chip] = mine + 1
        b = Buf(len(self.bufs), chip, name, rows, row_vectors, dtype, kind, data, zone, width, shared=key is not None)
        self.bufs.append(b)
        if key is not None:
            self.shared[key] = b
        else:
            self.bucket_of[b.id] = bucket
        return b


class Emitter:
    """Instructions and buffers on the chips, without a graph: the builders every lowering uses (and
    kernels such as gemm.py that are written directly in instructions)."""

    def __init__(self, hw: Hardware, chips: int, precision: str, pool: BufferPool, bucket: int | None = None,
                 weights: str = "fp16") -> None:
        self.hw = hw
        self.weights = weights  # the linears' weight format (linears.py): fp16 (the precision's type), int8, fp8
        self.chips = chips
        self.pool, self.bucket = pool, bucket
        self.wdtype = "fp16" if precision == "fp16" else "fp32"
        self.units = hw.mxm_units
        self.tile_rows = hw.chip.mxm.fp16_tile_rows
        self.acc_slots = hw.chip.mxm.acc_slots
        self.code: list[list[Node]] = [[] for _ in range(chips)]
        self._slot = [[0] * self.units for _ in range(chips)]
        self._load = [[0.0] * self.units for _ in range(chips)]
        self._grp = [[0] * self.units for _ in range(chips)]
        self._sxm = [0] * chips
        self._invariant = False
        self._op = -1  # the operation being lowered (BufferPool.op_id)
        # buffer -> the buffers whose sum it stands for (never written itself): a linear reading it
        # streams each through its tiles into one accumulator, which adds them for free
        self.parts: dict[tuple[int, int], list[tuple[Buf, int]]] = {}

    # ------------------------------------------------------------------ buffers and instructions
    def buf(self, chip, name, vectors, dtype="fp32", kind="act", **kw) -> Buf:
        if self._invariant:  # reused by every bucket: an address of its own
            return self.pool.new(chip, name, max(1, vectors), dtype, kind, key=("inv", self.pool.next_uid()), **kw)
        return self.pool.new(chip, name, max(1, vectors), dtype, kind, bucket=self.bucket, **kw)

    def emit(self, chip, family, ins: Instr, queue=None, tag="") -> Node:
        n = Node(chip, family, ins, queue, tag, uid=self.pool.next_uid(), op=self._op)
        self.code[chip].append(n)
        return n

    def vxm(self, chip, fn, dst, a, b=None, n=1, group=1, period=0, valid=0, imm=0.0, tag=""):
        """dst, a, b: (buf, off[, mode, m]); b may be ('imm', value). fn: a VXM function or an IR op name."""
        fn = _IR_TO_VXM.get(fn, fn)
        a_buf, a_off, a_mode, a_m = (a + (MODE_SEQ, 1))[:4] if len(a) == 2 else a
        args = dict(fn=VXM_BY_NAME[fn].code, dst_reg=dst[0].id, dst_off=dst[1], a_reg=a_buf.id, a_off=a_off,
                    a_mode=a_mode, a_m=a_m, n=n, group=group, period=period, valid=valid, imm=float(imm))
        if b is not None:
            if b[0] == "imm":
                args.update(b_mode=MODE_IMM, imm=float(b[1]))
            else:
                b_buf, b_off, b_mode, b_m = (b + (MODE_SEQ, 1))[:4] if len(b) == 2 else b
                args.update(b_reg=b_buf.id, b_off=b_off, b_mode=b_mode, b_m=b_m)
        return self.emit(chip, "vxm", Instr("VXM", **args), tag=tag)

    def sxm_unit(self, chip) -> int:
        self._sxm[chip] ^= 1
        return self._sxm[chip]

    def shuf(self, chip, dst: Buf, dst_off, src: Val, mapping: np.ndarray, tag=""):
        """dst positions [dst_off*320, ...) = src window elements mapping[...] (-1 gives 0)."""
        nvec = vecs(mapping.size)
        m = np.full(nvec * LANES, -1, dtype=np.int32)
        m[:mapping.size] = mapping
        mb = self.pool.new(chip, "map", nvec, "i32", "const", data=m, key=("map", chip, m.tobytes()))
        u = self.sxm_unit(chip)
        window = max(1, src.buf.vectors - src.off)
        ins = Instr("SXM", fn=SXM_BY_NAME["shuf"].code, queue=u, dst_reg=dst.id, dst_off=dst_off, src_reg=src.buf.id,
                    src_off=src.off, map_reg=mb.id, map_off=0, n=nvec, window=window)
        return self.emit(chip, "sxm", ins, queue=f"sxm{u}", tag=tag)

    def rot(self, chip, dst: Buf, src: Buf, n, shift, tag=""):
        u = self.sxm_unit(chip)
        ins = Instr("SXM", fn=SXM_BY_NAME["rot"].code, queue=u, dst_reg=dst.id, dst_off=0, src_reg=src.id,
                    src_off=0, n=n, shift=shift)
        return self.emit(chip, "sxm", ins, queue=f"sxm{u}", tag=tag)

    def slot(self, chip, u) -> int:
        s = self._slot[chip][u]
        self._slot[chip][u] = (s + 1) % self.acc_slots
        return s

    def next_unit(self, chip) -> int:
        """The MXM unit with the least work given to it so far (tile rows loaded + activations
        streamed) on this chip; ties to the lower number."""
        load = self._load[chip]
        return min(range(self.units), key=lambda u: (load[u], u))

    def _mxm(self, chip, u, family, ins, tag, new_group=False) -> Node:
        if new_group:
            self._grp[chip][u] = self.pool.next_uid()
        n = self.emit(chip, family, ins, f"mxm{u}{family[-1]}", tag)
        n.grp = (chip, u, self._grp[chip][u])
        return n

    def lw(self, chip, u, w: Buf, row0, col, rows, tag=""):
        self._load[chip][u] += rows / 8
        return self._mxm(chip, u, "mxmw", Instr("LW", unit=u, src_reg=w.id, row0=row0, col=col, rows=rows), tag, True)

    def iw(self, chip, u, tag=""):
        return self._mxm(chip, u, "mxma", Instr("IW", unit=u), tag)

    def acc_x(self, chip, u, x: Val, x_off, x_lane, slot, accumulate):
        """ACC of x's vector x_off; an x that is a sum of parts streams every part into the slot."""
        parts = self.parts.get((chip, x.buf.id))
        if parts is None:
            return self.acc(chip, u, x.buf, x_off, x_lane, slot, accumulate)
        for k, (b, d) in enumerate(parts):
            self.acc(chip, u, b, x_off + d, x_lane, slot, accumulate or k > 0)

    def acc(self, chip, u, x: Buf, x_off, x_lane, slot, accumulate, tag=""):
        if (chip, x.id) in self.parts:
            raise CompileError(f"chip {chip}: {x.name!r} is a sum of parts and has no data of its own")
        self._load[chip][u] += 1
        return self._mxm(chip, u, "mxma", Instr("ACC", unit=u, x_reg=x.id, x_off=x_off, x_lane=x_lane, slot=slot,
                                                accumulate=int(accumulate)), tag)

    def emit_acc(self, chip, u, slot, dst: Buf, dst_off, dst_lane=0, src_lane=0, lanes=LANES, tag=""):
        return self._mxm(chip, u, "mxma", Instr("EMIT", unit=u, slot=slot, dst_reg=dst.id, dst_off=dst_off,
                                                dst_lane=dst_lane, src_lane=src_lane, lanes=lanes), tag)

    def add_tree(self, chip, terms: list[Buf], dst: Buf, dst_off: int, n: int, name: str, tag="", mask=None):
        """dst = the sum of terms (n vectors each, from offset 0), added pairwise in order: a fixed tree, so
        the same sum bit for bit wherever it is computed; one term is copied. `mask`: the padding mask of
        the final write."""
        mask = mask or {}
        if len(terms) == 1:
            self.vxm(chip, "copy", (dst, dst_off), (terms[0], 0), n=n, tag=tag, **mask)
        while len(terms) > 1:
            nxt = []
            for j in range(0, len(terms), 2):
                if j + 1 == len(terms):
                    nxt.append(terms[j])
                    continue
                last = len(terms) == 2
                d = dst if last else self.buf(chip, name, n)
                self.vxm(chip, "add", (d, dst_off if last else 0), (terms[j], 0), (terms[j + 1], 0), n=n, tag=tag,
                         **(mask if last else {}))
                nxt.append(d)
            terms = nxt

    def as_dtype(self, chip, v: Val, dtype: str) -> Val:
        if v.buf.dtype == dtype:
            return v
        b = self.buf(chip, "cvt", v.vectors, dtype)
        self.vxm(chip, "copy", (b, 0), (v.buf, v.off), n=v.vectors)
        return Val(b, v.idx, v.layout, v.tlen, v.g)

    def zeros(self, chip) -> Buf:
        """A vector that is never written (zero), with an address of its own."""
        return self.pool.new(chip, "zeros", 1, self.wdtype, "const", key=("zeros", chip, self.wdtype))


class _Vals(dict):
    """A chip's values by variable name, which can record the names written while `log` is a set (what an
    equation lowered once adds, for its replay in the other buckets)."""

    __slots__ = ("log",)

    def __init__(self) -> None:
        super().__init__()
        self.log: set | None = None

    def __setitem__(self, key, value) -> None:
        if self.log is not None:
            self.log.add(key)
        dict.__setitem__(self, key, value)


class Lowerer(Emitter):
    """Lowers one context bucket of a partitioned graph: the prims' lowerings (REGISTRY) called for
    every equation, once per chip that holds its output."""

    def __init__(self, g: Graph, plan: Plan, hw: Hardware, precision: str, ctx: int, max_context: int,
                 pool: BufferPool, bucket: int, weights: str = "fp16") -> None:
        super().__init__(hw, plan.chips, precision, pool, bucket, weights)
        self.g, self.plan = g, plan
        self.ctx = ctx  # positions visible in this bucket (a multiple of 320)
        self.max_context = max_context
        self.kv_cols = vecs(max_context) * LANES
        self.vals: list[_Vals] = [_Vals() for _ in range(self.chips)]
        self.f16 = self._mxm_only_vars()
        self.pending_allreduce: dict = {}  # var -> {chip: (partial, out, vectors)} until every chip joined
        self.v_index_memo: dict = {}
        self.topk_memo: dict = {}  # (chip, scores, k) -> (values, indices) buffers: one top-k for both of its parts
        self._cons = None

    # ------------------------------------------------------------------ dtype planning
    def _mxm_only_vars(self) -> set[str]:
        """Vars whose every use is as an MXM activation (seeing through data movement): produced in the
        MXM's type directly, so no conversion is needed."""
        if self.wdtype == "fp32":
            return set()
        cons = self.g.consumers()
        memo: dict[str, bool] = {}

        def only(v: str) -> bool:
            if v in memo:
                return memo[v]
            memo[v] = False
            us = cons.get(v, [])
            ok = bool(us) and v not in self.g.outputs.values()
            for e in us:
                if e.prim in ("linear", "attn_qk", "attn_pv") and e.inputs[0] == v and v not in e.inputs[1:]:
                    continue
                if e.prim in ("reshape", "transpose") and only(e.outputs[0]):
                    continue
                ok = False
            memo[v] = ok
            return ok

        return {v for v in self.g.vars if only(v)}

    def linear_input_only(self, v: str) -> bool:
        """Every use of v (through reshapes, which are views) is the input of a linear."""
        if self._cons is None:
            self._cons = self.g.consumers()
        us = self._cons.get(v, [])
        if not us or v in self.g.outputs.values():
            return False
        return all((e.prim == "linear" and e.inputs[0] == v and v not in e.inputs[1:])
                   or (e.prim == "reshape" and self.linear_input_only(e.outputs[0])) for e in us)

    def out_dtype(self, var) -> str:
        return "fp16" if var in self.f16 else "fp32"

    # ------------------------------------------------------------------ entry
    def run(self) -> None:
        # every token starts with a chip-wide barrier (the host's inputs are in; chips aligned); the
        # scheduler adds the links' deskews
        for c in range(self.chips):
            self.emit(c, "icu", Instr("SYNC"), "icu0", tag="token start")
        self._inputs()
        # column-split linears reading the same input are fused on each chip (one weight buffer, one
        # pass of tiles; each output is emitted from its lanes of the accumulators)
        groups: dict[str, list] = {}
        for e in self.g.eqns:
            if e.prim == "linear" and e.outputs[0] not in self.plan.rowsplit:
                groups.setdefault(e.inputs[0], []).append(e)
        self.fuse = {e.outputs[0]: g for g in groups.values() if len(g) > 1 for e in g}
        self.fused_done: set = set()
        cache = self.pool.replay  # equations that do not depend on the context length are lowered once
        annot = annotate(self.g)  # each equation's operation, layer and kind (the program's provenance)
        for i, e in enumerate(self.g.eqns):
            invariant = not any(T in self.g.vars[v].shape for v in list(e.inputs) + list(e.outputs) if v in self.g.vars)
            if invariant and i in cache:
                nodes, vals, counters = cache[i]
                for c, lst in enumerate(nodes):
                    for n in lst:
                        self.code[c].append(Node(n.chip, n.family, n.instr, n.queue, n.tag, uid=self.pool.next_uid(),
                                                 grp=n.grp, xfer=n.xfer, op=n.op))
                    self.vals[c].update(vals[c])
                # unit and slot choices continue exactly as in the bucket that lowered it
                self._slot, self._load, self._sxm = [list(x) for x in counters[0]], [list(x) for x in counters[1]], list(counters[2])
                continue
            before = [len(cd) for cd in self.code]
            if invariant:
                for v in self.vals:
                    v.log = set()
            self._invariant = invariant
            self._op = self.pool.op_id(annot[i])
            self._lower_eqn(e)
            self._op = -1
            self._invariant = False
            if invariant:
                written = []
                for v in self.vals:
                    written.append({k: v[k] for k in v.log})
                    v.log = None
                cache[i] = ([list(self.code[c][before[c]:]) for c in range(self.chips)], written,
                            ([list(x) for x in self._slot], [list(x) for x in self._load], list(self._sxm)))

    def duplicate_shared_inputs(self) -> None:
        """An activation streamed into both MXM units is written twice by its producing VXM instruction
        (two ALUs, the same inputs): each unit then reads a copy placed next to it, so its activation
        arrives within a few cycles and the unit's tiles can follow each other closely."""
        for chip, nodes in enumerate(self.code):
            units_of: dict[int, set] = {}
            writer: dict[int, list] = {}
            for n in nodes:
                a = n.instr.args
                if n.instr.op == "ACC":
                    units_of.setdefault(a["x_reg"], set()).add(a["unit"])
                for k in ("dst_reg", "table_reg"):
                    if k in a and not (n.instr.op in ("GATHER",) and k == "table_reg"):
                        if n.instr.op in ("SCATTER", "SCATCOL") or k == "dst_reg":
                            writer.setdefault(a[k], []).append(n)
            dup = {}
            copies_of: dict[int, list] = {}  # id of a writer node -> the copies it also writes
            for reg, us in units_of.items():
                ws = writer.get(reg, [])
                if len(us) < 2 or len(ws) != 1 or ws[0].instr.op != "VXM" or ws[0].instr["dst_off"] != 0:
                    continue
                src = self.pool.bufs[reg]
                if src.shared and src.kind != "act":
                    continue
                copy = self.pool.new(chip, src.name + ".u1", src.rows, src.dtype, "act",
                                     key=("dup", reg, chip)) if src.shared or src.id not in self.pool.bucket_of \
                    else self.pool.new(chip, src.name + ".u1", src.rows, src.dtype, "act", bucket=self.pool.bucket_of[src.id])
                dup[reg] = (ws[0], copy)
                copies_of.setdefault(id(ws[0]), []).append(copy)
            if not dup:
                continue
            out = []
            for n in nodes:
                a = n.instr.args
                if n.instr.op == "ACC" and a["x_reg"] in dup and self.hw.mxm_hemisphere(a["unit"]) == 1:
                    n = Node(n.chip, n.family, n.instr.replace(x_reg=dup[a["x_reg"]][1].id), n.queue, n.tag, uid=n.uid, grp=n.grp, xfer=n.xfer,
                             op=n.op)
                out.append(n)
                for copy in copies_of.get(id(n), ()):
                    out.append(Node(n.chip, n.family, n.instr.replace(dst_reg=copy.id), n.queue, n.tag + ".u1",
                                    uid=n.uid + 0.5, grp=None, op=n.op))
            self.code[chip] = out

    def _lower_eqn(self, e) -> None:
        fn = REGISTRY.get(e.prim)
        if fn is None:
            raise UnsupportedError(f"{e!r}: the backend has no lowering for prim {e.prim!r}; lowered prims: "
                                   f"{', '.join(sorted(REGISTRY))}")
        out = e.outputs[0]
        if out in self.plan.rowsplit or out in self.plan.embed_rows:
            # partial results on every chip, one all-reduce, then what follows on every chip:
            # each chip's program order must see the exchange before its uses
            post = [fn(self, c, e) for c in self.plan.chips_of(out)]
            for after in post:
                if after is not None:
                    after()
            return
        for c in range(self.chips):
            if out not in self.plan.hold[c]:
                continue
            fn(self, c, e)

    def hold(self, chip, var) -> np.ndarray:
        return self.plan.hold[chip][var]

    def tlen(self, var) -> int:
        shp = self.g.vars[var].shape if var in self.g.vars else ()
        return self.ctx if T in shp else 1

    def _inputs(self) -> None:
        for name in self.g.inputs:
            for c in range(self.chips):
                if name == "attention_mask":
                    b = self.pool.new(c, name, vecs(self.kv_cols), "fp32", "input", key=("in", name, c))
                    self.vals[c][name] = Val(b, np.array([0]), "flat", tlen=self.ctx)
                else:
                    b = self.pool.new(c, name, 1, "i32", "input", key=("in", name, c))
                    self.vals[c][name] = Val(b, np.array([0]), "flat")

    # ------------------------------------------------------------------ operands
    def val(self, chip, name) -> Val:
        v = self.vals[chip].get(name)
        if v is None and (name, chip) in self.plan.transfers:
            from .collectives import transfer

            v = transfer(self, name, self.plan.transfers[(name, chip)], chip)
        if v is None:
            raise UnsupportedError(f"chip {chip}: {name!r} is needed but not held (partitioning gap)")
        return v

    def const_buf(self, chip, data: np.ndarray, dtype="fp32", name="k") -> Buf:
        data = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
        return self.pool.new(chip, name, vecs(data.size), dtype, "const", data=data,
                             key=("const", chip, dtype, data.tobytes()))

    def positions_of(self, out: Val) -> np.ndarray:
        """For each physical position of out (padding excluded), the out element it holds."""
        if out.layout == "bvec":
            return np.repeat(np.arange(out.n), LANES)
        rep = out.g if out.layout == "exp" else out.tlen
        return np.repeat(np.arange(out.n), rep)

    def operand(self, chip, name, emap: np.ndarray, out: Val):
        """Address operand `name` for an elementwise op producing `out`; emap[k] = the operand's global flat
        element read by out element k. Returns (buf, off, mode, m) or ('imm', value)."""
        g = self.g
        if name in g.consts:
            c = g.consts[name].reshape(-1).astype(np.float32)
            if is_shaped(c):  # a timing-only compile's gain or bias: its region, keyed by what it holds
                sel = np.repeat(emap, LANES) if out.layout == "bvec" else emap[self.positions_of(out)]
                buf = self.pool.new(chip, name, vecs(sel.size), "fp32", "const",
                                    key=("const", chip, "fp32", "shaped", name, np.asarray(sel, np.int64).tobytes()))
                return (buf, 0, MODE_SEQ, 1)
            if c.size == 1:
                return ("imm", float(c[0]))
            vals = c[emap]
            if out.layout == "bvec":
                data = np.repeat(vals, LANES)
            else:
                data = vals[self.positions_of(out)]
            return (self.const_buf(chip, data, "fp32", name), 0, MODE_SEQ, 1)
        v = self.val(chip, name)
        local = np.searchsorted(v.idx, emap)
        if np.any(local >= v.n) or np.any(v.idx[np.minimum(local, v.n - 1)] != emap):
            raise UnsupportedError(f"chip {chip}: operand {name} lacks elements it needs (partitioning gap)")
        if v.layout == "bvec":  # one vector per element: only the vector index matters
            if out.layout == "bvec":
                vm = local
            else:
                pos = self.positions_of(out)
                src = local[pos]
                vec_of = np.arange(pos.size) // LANES
                first = np.zeros(out.vectors, dtype=np.int64)
                first[vec_of[::-1]] = src[::-1]
                if np.any(src != first[vec_of]):
                    return self.materialize(chip, v, local, out)
                vm = first
            k = np.arange(vm.size)
            if np.array_equal(vm, k):
                return (v.buf, v.off, MODE_SEQ, 1)
            m = int(np.argmax(vm != vm[0])) if np.any(vm != vm[0]) else vm.size
            if vm[0] == 0 and np.array_equal(vm, k // m):
                return (v.buf, v.off, MODE_GRP, m)
            if np.array_equal(vm, k % v.n):
                return (v.buf, v.off, MODE_REP, v.n)
            return self.materialize(chip, v, local, out)
        if out.layout == "bvec":
            return self.materialize(chip, v, local, out)
        pos = self.positions_of(out)
        elem = local[pos]
        p = np.arange(pos.size)
        if v.layout == "exp":  # a small-group reduction read back in place by the unreduced shape
            if out.layout == "flat" and out.tlen == 1 and np.all((elem * v.g <= p) & (p < (elem + 1) * v.g)):
                return (v.buf, v.off, MODE_SEQ, 1)
            return self.materialize(chip, v, local, out)
        rep = out.g if out.layout == "exp" else out.tlen
        within = p - np.repeat(np.arange(out.n) * rep, rep)
        if v.tlen == rep:
            src = elem * v.tlen + within
        elif v.tlen == 1:
            src = elem  # broadcast along T: every position of the run reads the same element
        else:
            raise UnsupportedError(f"chip {chip}: operand {name} has {v.tlen} positions per element, output {rep}")
        if np.array_equal(src, p):
            return (v.buf, v.off, MODE_SEQ, 1)
        m = v.vectors
        if v.positions == m * LANES and np.array_equal(src, p % (m * LANES)):
            return (v.buf, v.off, MODE_REP, m)
        return self.materialize(chip, v, local, out, src)

    def materialize(self, chip, v: Val, local, out: Val, src=None):
        """Shuffle operand v into out's layout (a fresh buffer), return it as a seq operand."""
        pos = self.positions_of(out)
        if src is None:
            elem = local[pos] if out.layout != "bvec" else np.repeat(local, LANES)
            src = v.phys()[elem]
        if out.layout == "bvec":
            mapping = src
        else:
            mapping = np.full(out.vectors * LANES, -1, dtype=np.int64)
            mapping[:src.size] = src
        dt = "fp32"
        b = self.buf(chip, "mat", vecs(mapping.size), dt)
        self.shuf(chip, b, 0, v, mapping.astype(np.int32), tag="bcast")
        return (b, 0, MODE_SEQ, 1)

    def new_out(self, chip, var, layout="flat", g=1, dtype=None, partial=False) -> Val:
        """A fresh buffer for var on chip. `partial`: written lane-window by lane-window, so it gets an
        address of its own (other buckets' buffers could otherwise leave data in its unwritten lanes)."""
        idx = self.hold(chip, var)
        tl = self.tlen(var)
        v = Val(None, idx, layout, tlen=tl, g=g)
        dt = dtype or ("fp32" if layout != "flat" else self.out_dtype(var))
        if var in self.g.outputs.values():
            v.buf = self.pool.new(chip, var, v.vectors, dt, "output", key=("out", var, chip))
        elif T not in self.g.vars[var].shape:
            # the same buffer in every bucket: code lowered once (replayed in the other buckets) reads it
            v.buf = self.pool.new(chip, var, v.vectors, dt, "act", key=("val", var, chip, layout, g, dt))
        elif partial:
            v.buf = self.pool.new(chip, var, v.vectors, dt, "act", key=("partial", var, chip, self.bucket))
        else:
            v.buf = self.buf(chip, var, v.vectors, dt)
        self.vals[chip][var] = v
        return v

    def mask_args(self, out: Val) -> dict:
        if out.layout == "bvec":
            return {}
        rem = out.positions % LANES
        return {"period": out.vectors, "valid": rem} if rem else {}

