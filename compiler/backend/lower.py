"""Lowering: the partitioned IR becomes instructions per chip, in program order, on buffers.

Each IR prim has one lowering method here (`_<prim>`). The machine's ways of doing things:
- elementwise ops are VXM instructions over whole tensors (repeat counts), operands addressed seq /
  rep / grp so that broadcasts cost nothing; a broadcast the modes cannot express is materialised by an
  SXM shuffle first;
- a reduction over the last axis is a lane-wise VXM reduction over the vectors of each group, then a
  cross-lane step: sums on the MXM against a tile of ones (the sum arrives broadcast to every lane),
  maxima by an SXM rotate / VXM max tree; small groups inside a vector use a block-diagonal ones tile;
- data movement that keeps element order is free (a view); anything else is one SXM shuffle per source;
- a linear streams weight tiles (tile rows x 320 columns) into the MXM units, activations pass through,
  and the accumulators are emitted; attention does the same with the KV cache as the weights (K stored
  transposed, one row per (head, dim), columns over positions; V one row per position);
- the KV append is a scatter at the token's position (a transposed column write for K);
- an all-reduce exchanges partial sums over the direct chip links and adds them in chip order, so every
  chip ends with bit-identical values.
"""
from __future__ import annotations

import numpy as np

from isa import Instr
from isa.program import dtype_bytes
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, SXM_BY_NAME, VXM_BY_NAME

from ..errors import CompileError, UnsupportedError
from ..ir import DATA_MOVEMENT, Graph, T
from .buffers import LANES, Buf, Node, Val
from .indexmaps import move_map, operand_map, shape1, size1
from .partition import Plan, source_input


_IR_TO_VXM = {"gt": "cmpgt", "ge": "cmpge", "eq": "cmpeq"}


def _vecs(n: int) -> int:
    return -(-n // LANES)


class BufferPool:
    """All buffers of a program. Shared ones (weights, caches, inputs, outputs) are created once and
    reused by every bucket; the others belong to the bucket that made them."""

    def __init__(self) -> None:
        self.bufs: list[Buf] = []
        self.shared: dict = {}
        self.bucket_of: dict[int, int] = {}
        self._uid = 0
        self.replay: dict = {}  # eqn index -> (nodes per chip, vals per chip) of context-independent equations

    def next_uid(self) -> int:
        self._uid += 1
        return self._uid

    def new(self, chip, name, rows, dtype, kind, row_vectors=1, data=None, zone="act", width=8, key=None, bucket=None):
        if key is not None and key in self.shared:
            return self.shared[key]
        if data is not None and dtype == "fp16":
            data = data.astype(np.float16)  # kept in the region's type: half the compiler's memory for weights
        b = Buf(len(self.bufs), chip, name, rows, row_vectors, dtype, kind, data, zone, width, shared=key is not None)
        self.bufs.append(b)
        if key is not None:
            self.shared[key] = b
        else:
            self.bucket_of[b.id] = bucket
        return b


class Lowerer:
    def __init__(self, g: Graph, plan: Plan, hw, precision: str, ctx: int, max_context: int,
                 pool: BufferPool, bucket: int) -> None:
        self.g, self.plan, self.hw = g, plan, hw
        self.ctx = ctx  # positions visible in this bucket (a multiple of 320)
        self.max_context = max_context
        self.kv_cols = _vecs(max_context) * LANES
        self.pool, self.bucket = pool, bucket
        self.wdtype = "fp16" if precision == "fp16" else "fp32"
        self.chips = plan.chips
        self.units = hw.mxm_units
        self.tile_rows = hw.chip.mxm.fp16_tile_rows
        self.acc_slots = hw.chip.mxm.acc_slots
        self.code: list[list[Node]] = [[] for _ in range(self.chips)]
        self.vals: list[dict[str, Val]] = [dict() for _ in range(self.chips)]
        self._slot = [[0] * self.units for _ in range(self.chips)]
        self._unit = [0] * self.chips
        self._load = [[0.0] * self.units for _ in range(self.chips)]
        self._grp = [[0] * self.units for _ in range(self.chips)]
        self._sxm = [0] * self.chips
        self.f16 = self._mxm_only_vars()
        self.links = _link_table(hw)
        self._invariant = False
        # buffer -> the buffers whose sum it stands for (never written itself): a linear reading it
        # streams each through its tiles into one accumulator, which adds them for free
        self.parts: dict[tuple[int, int], list[tuple[Buf, int]]] = {}

    # ------------------------------------------------------------------ buffers and instructions
    def buf(self, chip, name, vectors, dtype="fp32", kind="act", **kw) -> Buf:
        if self._invariant:  # reused by every bucket: an address of its own
            return self.pool.new(chip, name, max(1, vectors), dtype, kind, key=("inv", self.pool.next_uid()), **kw)
        return self.pool.new(chip, name, max(1, vectors), dtype, kind, bucket=self.bucket, **kw)

    def emit(self, chip, family, ins: Instr, queue=None, tag="") -> Node:
        n = Node(chip, family, ins, queue, tag, uid=self.pool.next_uid())
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
        nvec = _vecs(mapping.size)
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

    def _linear_input_only(self, v: str) -> bool:
        """Every use of v (through reshapes, which are views) is the input of a linear."""
        cons = self.__dict__.setdefault("_cons", self.g.consumers())
        us = cons.get(v, [])
        if not us or v in self.g.outputs.values():
            return False
        return all((e.prim == "linear" and e.inputs[0] == v and v not in e.inputs[1:])
                   or (e.prim == "reshape" and self._linear_input_only(e.outputs[0])) for e in us)

    def out_dtype(self, var) -> str:
        return "fp16" if var in self.f16 else "fp32"

    # ------------------------------------------------------------------ entry
    def run(self) -> None:
        # every token starts with a chip-wide barrier (the host's inputs are in; chips aligned), and
        # with more than one chip each link re-aligns its clocks (the scheduler repeats this every
        # deskew interval of a long program)
        for c in range(self.chips):
            self.emit(c, "icu", Instr("SYNC"), "icu0", tag="token start")
            if self.chips > 1:
                for l in range(len(self.links[c]) and hw_links(self.hw)):
                    self.emit(c, "c2ct", Instr("DESKEW", link=l), f"c2c{l}t", tag="deskew")
        self._inputs()
        # column-split linears reading the same input are fused on each chip (one weight buffer, one
        # pass of tiles; each output is emitted from its lanes of the accumulators)
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.g.eqns):
            if e.prim == "linear" and i not in self.plan.rowsplit:
                groups.setdefault(e.inputs[0], []).append(i)
        self._fuse = {i: g for g in groups.values() if len(g) > 1 for i in g}
        self._fused_done: set = set()
        cache = self.pool.replay  # equations that do not depend on the context length are lowered once
        for i, e in enumerate(self.g.eqns):
            invariant = not any(T in self.g.vars[v].shape for v in list(e.inputs) + list(e.outputs) if v in self.g.vars)
            if invariant and i in cache:
                nodes, vals, counters = cache[i]
                for c, lst in enumerate(nodes):
                    for n in lst:
                        self.code[c].append(Node(n.chip, n.family, n.instr, n.queue, n.tag, uid=self.pool.next_uid(),
                                                 grp=n.grp))
                    self.vals[c].update(vals[c])
                # unit and slot choices continue exactly as in the bucket that lowered it
                self._slot, self._load, self._sxm = [list(x) for x in counters[0]], [list(x) for x in counters[1]], list(counters[2])
                continue
            before = [len(cd) for cd in self.code]
            seen = [dict(v) for v in self.vals] if invariant else None
            self._invariant = invariant
            self._lower_eqn(i, e)
            self._invariant = False
            if invariant:
                cache[i] = ([list(self.code[c][before[c]:]) for c in range(self.chips)],
                            [{k: v for k, v in self.vals[c].items() if seen[c].get(k) is not v} for c in range(self.chips)],
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
            if not dup:
                continue
            out = []
            for n in nodes:
                a = n.instr.args
                if n.instr.op == "ACC" and a["x_reg"] in dup and a["unit"] % 2 == 1:
                    n = Node(n.chip, n.family, n.instr.replace(x_reg=dup[a["x_reg"]][1].id), n.queue, n.tag, uid=n.uid, grp=n.grp)
                out.append(n)
                for reg, (w, copy) in dup.items():
                    if n is w:
                        out.append(Node(n.chip, n.family, n.instr.replace(dst_reg=copy.id), n.queue, n.tag + ".u1",
                                        uid=n.uid + 0.5, grp=None))
            self.code[chip] = out

    def _lower_eqn(self, i, e) -> None:
        if True:
            if i in self.plan.rowsplit or i in self.plan.embed_rows:
                # partial results on every chip, one all-reduce, then what follows on every chip:
                # each chip's program order must see the exchange before its uses
                post = [getattr(self, "_" + e.prim)(c, e, i) for c in self.plan.chips_of(e.outputs[0])]
                for fn in post:
                    if fn is not None:
                        fn()
                return
            for c in range(self.chips):
                if e.outputs[0] not in self.plan.hold[c]:
                    continue
                getattr(self, "_" + e.prim)(c, e, i)

    def hold(self, chip, var) -> np.ndarray:
        return self.plan.hold[chip][var]

    def tlen(self, var) -> int:
        shp = self.g.vars[var].shape if var in self.g.vars else ()
        return self.ctx if T in shp else 1

    def _inputs(self) -> None:
        for name in self.g.inputs:
            for c in range(self.chips):
                if name == "attention_mask":
                    b = self.pool.new(c, name, _vecs(self.kv_cols), "fp32", "input", key=("in", name, c))
                    self.vals[c][name] = Val(b, np.array([0]), "flat", tlen=self.ctx)
                else:
                    b = self.pool.new(c, name, 1, "i32", "input", key=("in", name, c))
                    self.vals[c][name] = Val(b, np.array([0]), "flat")

    # ------------------------------------------------------------------ operands
    def val(self, chip, name) -> Val:
        v = self.vals[chip].get(name)
        if v is None and self.plan.staged and name in self.plan.owner:
            v = self.transfer(name, self.plan.source_chip(name, chip), chip)
        if v is None:
            raise UnsupportedError(f"chip {chip}: {name!r} is needed but not held (partitioning gap)")
        return v

    def transfer(self, name: str, src: int, dst: int) -> Val:
        """Pipeline: send a value computed on chip src to chip dst over their direct link."""
        v = self.vals[src].get(name)
        if v is None:
            raise UnsupportedError(f"chip {src}: {name!r} should have been computed there (pipeline stage gap)")
        if v.layout == "state":
            raise UnsupportedError(f"{name!r}: a KV cache cannot move between pipeline stages")
        nv = v.vectors
        key = ("xfer", name, dst) if T not in self.g.vars[name].shape else None
        b = self.pool.new(dst, name, nv, v.buf.dtype, "act", key=key) if key else self.buf(dst, name, nv, v.buf.dtype)
        link_s, link_r = self.links[src][dst], self.links[dst][src]
        self.emit(src, "c2ct", Instr("SEND", link=link_s, src_reg=v.buf.id, src_off=v.off, n=nv), f"c2c{link_s}t", tag=f"pp {name}")
        self.emit(dst, "c2cr", Instr("RECV", link=link_r, dst_reg=b.id, dst_off=0, n=nv), f"c2c{link_r}r", tag=f"pp {name}")
        out = Val(b, v.idx, v.layout, v.tlen, v.g, off=0)
        self.vals[dst][name] = out
        return out

    def const_buf(self, chip, data: np.ndarray, dtype="fp32", name="k") -> Buf:
        data = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
        return self.pool.new(chip, name, _vecs(data.size), dtype, "const", data=data,
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
        b = self.buf(chip, f"mat", _vecs(mapping.size), dt)
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

    # ------------------------------------------------------------------ elementwise
    def _ew_out(self, chip, e) -> Val:
        out = e.outputs[0]
        oshape = self.g.vars[out].shape
        for i in e.inputs:
            if i in self.g.vars and i in self.vals[chip]:
                v = self.vals[chip][i]
                if v.layout in ("bvec", "exp") and tuple(self.g.vars[i].shape) == tuple(oshape):
                    return self.new_out(chip, out, v.layout, v.g)
        return self.new_out(chip, out)

    def _unary(self, chip, e, i):
        out = self._ew_out(chip, e)
        a = self.operand(chip, e.inputs[0], out.idx, out)
        if a[0] == "imm":
            raise UnsupportedError(f"{e!r}: a unary op on a constant should have been folded")
        self.vxm(chip, e.params["op"], (out.buf, out.off), a, n=out.vectors, tag=e.outputs[0], **self.mask_args(out))

    def _binary(self, chip, e, i):
        out = self._ew_out(chip, e)
        op = e.params["op"]
        x, y = e.inputs
        mx = operand_map(self.g, e, 0)[out.idx]
        my = operand_map(self.g, e, 1)[out.idx]
        a = self.operand(chip, x, mx, out)
        b = self.operand(chip, y, my, out)
        if a[0] == "imm":
            if op in ("add", "mul", "max", "min", "eq"):
                a, b = b, a
            else:
                a = (self.const_buf(chip, np.full(LANES, a[1], np.float32)), 0, MODE_GRP, out.vectors)
        self.vxm(chip, op, (out.buf, out.off), a, b, n=out.vectors, tag=e.outputs[0], **self.mask_args(out))

    def _where(self, chip, e, i):
        out = self._ew_out(chip, e)
        c, x, y = e.inputs
        fill = self.g.consts[y].reshape(-1)[0]
        a = self.operand(chip, c, operand_map(self.g, e, 0)[out.idx], out)
        b = self.operand(chip, x, operand_map(self.g, e, 1)[out.idx], out)
        if a[0] == "imm":  # constant condition
            a = (self.const_buf(chip, np.full(LANES, a[1], np.float32)), 0, MODE_GRP, out.vectors)
        if b[0] == "imm":
            b = (self.const_buf(chip, np.full(LANES, b[1], np.float32)), 0, MODE_GRP, out.vectors)
        self.vxm(chip, "select", (out.buf, out.off), a, b, n=out.vectors, imm=float(fill), tag=e.outputs[0],
                 **self.mask_args(out))

    def _mask_fill(self, chip, e, i):
        out = self.new_out(chip, e.outputs[0])
        s, m = e.inputs
        a = self.operand(chip, m, operand_map(self.g, e, 1)[out.idx], out)
        b = self.operand(chip, s, operand_map(self.g, e, 0)[out.idx], out)
        self.vxm(chip, "select", (out.buf, out.off), a, b, n=out.vectors, imm=float(e.params["fill"]),
                 tag=e.outputs[0], **self.mask_args(out))

    # ------------------------------------------------------------------ reductions
    def _reduce(self, chip, e, i):
        op = e.params["op"]
        x = self.val(chip, e.inputs[0])
        if x.layout != "flat":
            raise UnsupportedError(f"{e!r}: reducing a reduced value is not supported")
        last = shape1(self.g.shape(e.inputs[0]))[-1]
        gp = last * x.tlen  # positions per group
        out_idx = self.hold(chip, e.outputs[0])
        ng = out_idx.size
        if x.n != ng * last:
            raise UnsupportedError(f"chip {chip}: {e!r} would need elements held elsewhere")
        rfn = "rsum" if op == "sum" else "rmax"
        sum_dt = self.wdtype  # the MXM's input type
        if gp % LANES == 0 and x.off == 0 or ng == 1:
            m = gp // LANES if gp % LANES == 0 else x.vectors
            src = x
            if op == "max" and gp % LANES:
                # padding lanes hold 0: lift them to -3e38 so they cannot win
                pad = np.zeros(x.vectors * LANES, np.float32)
                pad[x.positions:] = -3.0e38
                tmp = self.buf(chip, "padmax", x.vectors)
                self.vxm(chip, "add", (tmp, 0), (x.buf, x.off), (self.const_buf(chip, pad), 0), n=x.vectors)
                src = Val(tmp, x.idx, "flat", x.tlen)
            part = self.buf(chip, f"{rfn}", ng, sum_dt if op == "sum" else "fp32")
            if m == 1:
                self.vxm(chip, "copy", (part, 0), (src.buf, src.off), n=ng)
            else:
                self.vxm(chip, rfn, (part, 0), (src.buf, src.off), n=ng, group=m)
            out = self.new_out(chip, e.outputs[0], "bvec", dtype="fp32")
            if op == "sum":
                self.lane_sum(chip, part, out.buf, ng, LANES)
            else:
                self.lane_max(chip, part, out.buf, ng)
            return
        if LANES % gp == 0 and op == "sum" and x.off == 0:
            src = self.as_dtype(chip, x, sum_dt)
            out = self.new_out(chip, e.outputs[0], "exp", g=gp, dtype="fp32")
            self.lane_sum(chip, src.buf, out.buf, src.vectors, gp)
            return
        raise UnsupportedError(f"{e!r}: a {op} over groups of {gp} elements is not supported "
                               f"(supported: groups that are multiples of 320, one group, or sums over divisors of 320)")

    def as_dtype(self, chip, v: Val, dtype: str) -> Val:
        if v.buf.dtype == dtype:
            return v
        b = self.buf(chip, "cvt", v.vectors, dtype)
        self.vxm(chip, "copy", (b, 0), (v.buf, v.off), n=v.vectors)
        return Val(b, v.idx, v.layout, v.tlen, v.g)

    def ones_tiles(self, chip, g: int, u: int) -> list[Buf]:
        """The two halves (rows 0..159, 160..319) of the 320x320 block-diagonal ones matrix with blocks
        of g lanes: x @ M gives every lane the sum of its block. One copy next to each MXM unit."""
        key = ("ones", chip, g, self.wdtype, u)
        if key in self.pool.shared:
            return [self.pool.shared[key], self.pool.shared[key + ("b",)]]
        r = np.arange(LANES)
        full = (r[:, None] // g == r[None, :] // g).astype(np.float32)
        tr = self.tile_rows
        tiles = []
        for h, sub in ((0, ()), (1, ("b",))):
            t = full[h * tr:(h + 1) * tr]
            tiles.append(self.pool.new(chip, f"ones{g}{'ab'[h]}", t.shape[0], self.wdtype, "const", data=t.reshape(-1),
                                       zone="weight", width=16, key=key + sub))
            tiles[-1].hemi = u % 2
        return tiles

    def lane_sum(self, chip, src: Buf, dst: Buf, n: int, g: int):
        """dst vector k = src vector k times the block-ones matrix (both halves), on one MXM unit. When
        the halves are equal (one block of 320) one installed tile serves both."""
        u = self.next_unit(chip)
        tiles = self.ones_tiles(chip, g, u)
        tr = self.tile_rows
        slots = [self.slot(chip, u) for _ in range(n)]
        same = tiles[0].data is not None and np.array_equal(tiles[0].data, tiles[1].data)
        for h, t in enumerate(tiles):
            if h == 0 or not same:
                self.lw(chip, u, t, 0, 0, t.rows)
                self.iw(chip, u)
            for k in range(n):
                self.acc(chip, u, src, k, h * tr, slots[k], accumulate=h > 0)
        for k in range(n):
            self.emit_acc(chip, u, slots[k], dst, k)

    def lane_max(self, chip, src: Buf, dst: Buf, n: int):
        """Every lane gets the max over its vector, in two rounds (320 = 16 x 20): an SXM shuffle makes
        16 rotations of the vector (by 0..15 lanes) and a VXM reduction takes their lane-wise max, then
        20 rotations by multiples of 16. Two trips to the SXM instead of a nine-step rotate tree; one
        chain per vector, so the queues work on several heads at once."""
        lanes = np.arange(LANES)
        for k in range(n):
            cur = Val(src, np.arange(1), "flat", off=k)
            for r, (count, step) in enumerate(((16, 1), (20, 16))):
                mapping = np.concatenate([(lanes + j * step) % LANES for j in range(count)])
                rots = self.buf(chip, f"rots{count}", count)
                self.shuf(chip, rots, 0, Val(cur.buf, cur.idx, "flat", off=cur.off), mapping.astype(np.int32), tag="lanemax")
                if r == 1:
                    self.vxm(chip, "rmax", (dst, k), (rots, 0), n=1, group=count, tag="lanemax")
                else:
                    nxt = self.buf(chip, "lmax", 1)
                    self.vxm(chip, "rmax", (nxt, 0), (rots, 0), n=1, group=count, tag="lanemax")
                    cur = Val(nxt, np.arange(1), "flat")

    # ------------------------------------------------------------------ data movement
    def _dm(self, chip, e, i):
        out_name = e.outputs[0]
        O = self.hold(chip, out_name)
        which, gidx = move_map(self.g, e)
        which, gidx = which[O], gidx[O]
        ins = [self.val(chip, n) if n in self.g.vars or n in self.g.inputs else None for n in e.inputs]
        if any(v is None for v in ins):
            raise UnsupportedError(f"{e!r}: data movement of a constant should have been folded")
        locs = []
        for k, v in enumerate(ins):
            sel = which == k
            loc = np.searchsorted(v.idx, gidx[sel])
            if np.any(loc >= v.n) or np.any(v.idx[np.minimum(loc, v.n - 1)] != gidx[sel]):
                raise UnsupportedError(f"chip {chip}: {e!r} needs elements held elsewhere")
            locs.append((sel, loc))
        if len(ins) == 1 or len(set(which.tolist())) == 1:
            k = int(which[0]) if which.size else 0
            v, loc = ins[k], locs[k][1]
            if v.layout in ("flat", "bvec") and loc.size and np.array_equal(loc, np.arange(loc.size) + loc[0]):
                step = v.tlen if v.layout == "flat" else LANES
                start = int(loc[0]) * step
                if start % LANES == 0:  # a view: same buffer, same order
                    self.vals[chip][out_name] = Val(v.buf, O, v.layout, v.tlen, v.g, off=v.off + start // LANES)
                    return
        tls = {v.tlen for v in ins}
        if len(tls) != 1 or any(v.layout == "exp" for v in ins):
            raise UnsupportedError(f"{e!r}: moving data of mixed or expanded layouts is not supported")
        out = self.new_out(chip, out_name)
        tl = out.tlen
        parts = []
        for k, v in enumerate(ins):
            sel, loc = locs[k]
            if not sel.any():
                continue
            mapping = np.full(out.vectors * LANES, -1, dtype=np.int64)
            dst_pos = np.nonzero(sel)[0]
            src_phys = v.phys()[loc]
            for t in range(tl):
                mapping[dst_pos * tl + t] = src_phys + t
            parts.append((v, mapping))
        if len(parts) == 1:
            self.shuf(chip, out.buf, out.off, parts[0][0], parts[0][1].astype(np.int32), tag=out_name)
            return
        acc = None
        for j, (v, mapping) in enumerate(parts):
            tgt = out.buf if j == len(parts) - 1 and len(parts) == 1 else self.buf(chip, "part", out.vectors)
            self.shuf(chip, tgt, 0, v, mapping.astype(np.int32), tag=out_name)
            if acc is None:
                acc = tgt
            else:
                dst = out.buf if j == len(parts) - 1 else self.buf(chip, "cat", out.vectors)
                self.vxm(chip, "add", (dst, out.off if dst is out.buf else 0), (acc, 0), (tgt, 0), n=out.vectors)
                acc = dst

    _reshape = _transpose = _slice = _concat = _expand = _take = _cast = _dm

    # ------------------------------------------------------------------ tables
    def _gather(self, chip, e, i):
        """One table row by a runtime index. A large table is stored as row blocks of at most
        TABLE_BLOCK_BANKS banks' worth each (the placer fits them into what the weights leave; one
        block would need a wide stripe of nearly empty banks): a GATHER per block (a row outside a
        block gives zeros) and an add tree join them."""
        tname, iname = e.inputs
        table = self.g.consts[tname]
        rows_all = table.shape[0]
        flat = table.reshape(rows_all, -1)
        width = flat.shape[1]
        rv = _vecs(width)
        lo, hi = self.plan.embed_rows.get(i, [(0, rows_all)] * self.chips)[chip]
        row_bytes = rv * LANES * dtype_bytes(self.wdtype)
        per_block = max(1, int(TABLE_BLOCK_BANKS * self.hw.chip.sram.bank_bytes // row_bytes))
        blocks = []
        for b0 in range(lo, max(hi, lo + 1), per_block):  # (a chip holding no rows: one empty block)
            b1 = min(hi, b0 + per_block)
            key = ("table", tname, chip, b0, b1, self.wdtype)
            tb = self.pool.shared.get(key)
            if tb is None:
                data = np.zeros((b1 - b0, rv * LANES), np.float32)
                data[:, :width] = flat[b0:b1]
                # embeddings are weights (fp16 on the hardware)
                tb = self.pool.new(chip, tname if b1 - b0 == hi - lo else f"{tname}[{b0}:{b1}]", b1 - b0, self.wdtype,
                                   "weight", row_vectors=rv, data=data.reshape(-1), zone="table", width=8, key=key)
            blocks.append((tb, b0, b1))
        idx = self.val(chip, iname)
        split = i in self.plan.embed_rows
        out = self.new_out(chip, e.outputs[0], dtype="fp32")
        if out.n != width:
            raise UnsupportedError(f"chip {chip}: {e!r} holds part of a table row" if not split
                                   else f"{e!r}: a split table row must be held whole")
        if split:
            dst = self.buf(chip, "gpart", rv)
            doff = 0
        else:
            dst, doff = out.buf, out.off
        parts = []
        for tb, b0, b1 in blocks:
            pb, po = (dst, doff) if len(blocks) == 1 else (self.buf(chip, "gblock", rv), 0)
            self.emit(chip, "mem", Instr("GATHER", dst_reg=pb.id, dst_off=po, table_reg=tb.id, idx_reg=idx.buf.id,
                                         idx_off=idx.off, base=b0, rows=b1 - b0), tag=e.outputs[0])
            parts.append(pb)
        if len(parts) > 1:
            self.add_tree(chip, parts, dst, doff, rv, "gsum", tag=e.outputs[0])
        if split:
            self.allreduce(e.outputs[0], chip, dst, out, rv)

    # ------------------------------------------------------------------ collectives
    def allreduce(self, var, chip, part: Buf, out: Val, nvec: int):
        """Called once per chip; the exchange is emitted when the last chip's partial is ready."""
        pend = self.__dict__.setdefault("_ar", {})
        pend.setdefault(var, {})[chip] = (part, out, nvec)
        group = self.plan.chips_of(var)  # the chips of var's stage (all chips unless pipelined)
        if len(pend[var]) < len(group):
            return
        parts = pend.pop(var)
        recv: dict = {}
        for c in group:
            for o in group:
                if o == c:
                    continue
                link = self.links[c][o]
                pb, _, nv = parts[c]
                self.emit(c, "c2ct", Instr("SEND", link=link, src_reg=pb.id, src_off=0, n=nv), f"c2c{link}t", tag=f"ar {var}")
        for c in group:
            for o in group:
                if o == c:
                    continue
                link = self.links[c][o]
                nv = parts[c][2]
                rb = self.buf(c, f"ar{o}", nv, parts[c][0].dtype)
                self.emit(c, "c2cr", Instr("RECV", link=link, dst_reg=rb.id, dst_off=0, n=nv), f"c2c{link}r", tag=f"ar {var}")
                recv[(c, o)] = rb
        for c in group:
            _, out, nv = parts[c]
            terms = [parts[c][0] if o == c else recv[(c, o)] for o in group]
            # the same tree on every chip, in chip order: bit-identical sums everywhere
            self.add_tree(c, terms, out.buf, out.off, nv, "arsum", tag=f"ar {var}", mask=self.mask_args(out))

    # ------------------------------------------------------------------ matrices
    def _linear(self, chip, e, i):
        if i in self._fuse:
            return self._linear_group(chip, [j for j in self._fuse[i] if self.g.eqns[j].outputs[0] in self.plan.hold[chip]])
        xname, wname = e.inputs[0], e.inputs[1]
        W = self.g.consts[wname]
        K, N = W.shape
        if i in self.plan.rowsplit and xname not in self.vals[chip] and xname not in self.plan.hold[chip]:
            # this chip holds no part of the region: it contributes zeros (a buffer never written)
            part = self.buf(chip, "zeros", _vecs(N), self.wdtype)
            return self._rowsplit_out(chip, e, part, N)
        x = self.val(chip, xname)
        if x.layout != "flat" or x.tlen != 1:
            raise UnsupportedError(f"{e!r}: the input of a linear must be a plain vector")
        x = self.as_dtype(chip, x, self.wdtype)
        rowsplit = i in self.plan.rowsplit
        y = e.outputs[0]
        if rowsplit:
            cols = np.arange(N)
            Wl = W[x.idx]
        else:
            if x.n != K:
                raise UnsupportedError(f"chip {chip}: {e!r} needs the whole input")
            cols = self.hold(chip, y) % N
            Wl = W[:, cols]
        bias = self.g.consts[e.inputs[2]] if len(e.inputs) == 3 else None
        wkey = ("w", wname, chip, self.wdtype, "rows" if rowsplit else "cols",
                (x.idx if rowsplit else cols).tobytes())
        plan = self.weight_plan(chip, wname, Wl, wkey)
        if rowsplit:
            # partial sums cross the links in the MXM's type (fp16 on the hardware), added in fp32
            part = self.buf(chip, "partial", _vecs(N), self.wdtype)
            self.matvec(chip, x, plan, part, 0)
            return self._rowsplit_out(chip, e, part, N)
        out = self.new_out(chip, y)
        if bias is None:
            self.matvec(chip, x, plan, out.buf, out.off)
        else:
            tmp = self.buf(chip, "mv", out.vectors)
            self.matvec(chip, x, plan, tmp, 0)
            b = self.operand(chip, e.inputs[2], cols, out)
            self.vxm(chip, "add", (out.buf, out.off), (tmp, 0), b, n=out.vectors, **self.mask_args(out))

    def _linear_group(self, chip, members: list[int]):
        """Several linears of one input on one chip: their local columns side by side in one weight
        buffer, one matvec, each output emitted from its own lanes."""
        if (chip, members[0]) in self._fused_done or not members:
            return
        for j in members:
            self._fused_done.add((chip, j))
        eqns = [self.g.eqns[j] for j in members]
        xname = eqns[0].inputs[0]
        x = self.val(chip, xname)
        if x.layout != "flat" or x.tlen != 1:
            raise UnsupportedError(f"{eqns[0]!r}: the input of a linear must be a plain vector")
        x = self.as_dtype(chip, x, self.wdtype)
        K = self.g.consts[eqns[0].inputs[1]].shape[0]
        if x.n != K:
            raise UnsupportedError(f"chip {chip}: {eqns[0]!r} needs the whole input")
        parts, colsets, off = [], [], 0
        for e in eqns:
            W = self.g.consts[e.inputs[1]]
            cols = self.hold(chip, e.outputs[0]) % W.shape[1]
            parts.append(W[:, cols])
            colsets.append((off, off + cols.size, e, cols))
            off += cols.size
        Wl = np.concatenate(parts, axis=1)
        wkey = ("wgroup", chip, self.wdtype) + tuple((e.inputs[1], c.tobytes()) for _, _, e, c in colsets)
        plan = self.weight_plan(chip, "+".join(e.inputs[1] for e in eqns)[:120], Wl, wkey, fused=True)
        sinks, post = [], []
        for lo, hi, e, cols in colsets:
            if len(e.inputs) == 3:
                tmp = self.buf(chip, "mv", _vecs(hi - lo))
                sinks.append((lo, hi, tmp, 0))
                post.append((e, tmp, cols))
            else:
                out = self.new_out(chip, e.outputs[0], partial=True)
                sinks.append((lo, hi, out.buf, out.off * LANES))
        self.matvec(chip, x, plan, None, 0, sinks=sinks)
        for e, tmp, cols in post:
            out = self.new_out(chip, e.outputs[0])
            b = self.operand(chip, e.inputs[2], cols, out)
            self.vxm(chip, "add", (out.buf, out.off), (tmp, 0), b, n=out.vectors, **self.mask_args(out))

    def _rowsplit_out(self, chip, e, part: Buf, N: int):
        """Join the all-reduce of a row-split linear; returns what to emit after it (the bias add)."""
        y = e.outputs[0]
        out = self.new_out(chip, y, dtype="fp32")
        if len(e.inputs) < 3:
            self.allreduce(y, chip, part, out, _vecs(N))
            return None
        summed = self.buf(chip, "ar", _vecs(N))
        self.allreduce(y, chip, part, Val(summed, out.idx, "flat"), _vecs(N))

        def bias():
            b = self.operand(chip, e.inputs[2], np.asarray(out.idx) % N, out)
            self.vxm(chip, "add", (out.buf, out.off), (summed, 0), b, n=out.vectors, **self.mask_args(out))
        return bias

    def weight_plan(self, chip, name, Wl: np.ndarray, key, fused: bool = False) -> dict:
        """Weight buffers for a local matrix Wl [K, N], one per MXM unit, each in that unit's hemisphere
        (next to the unit: a tile arrives a few hops after it is read). Column blocks go to units in
        turn; a single column block of many rows is split by rows instead (two halves, added after)."""
        K, N = Wl.shape
        tr = self.tile_rows
        nrb, ncb = -(-K // tr), _vecs(N)
        U = self.units
        full = np.zeros((K, ncb * LANES), np.float32)
        full[:, :N] = Wl
        plan = {"K": K, "N": N, "ncb": ncb, "nrb": nrb, "blocks": {}, "halves": None}
        if ncb == 1 and nrb >= 2 and U >= 2 and not fused:
            split = (nrb + 1) // 2
            halves = []
            for h, (r0, r1) in enumerate(((0, split * tr), (split * tr, K))):
                b = self.pool.new(chip, f"{name}.h{h}", r1 - r0, self.wdtype, "weight", row_vectors=1,
                                  data=full[r0:r1].reshape(-1), zone="weight", width=16, key=key + ("half", h))
                b.hemi = h % 2
                halves.append((h, b, r0, r1))
            plan["halves"] = halves
            return plan
        for u in range(U):
            cbs = [cb for cb in range(ncb) if cb % U == u]
            if not cbs:
                continue
            data = np.concatenate([full[:, cb * LANES:(cb + 1) * LANES] for cb in cbs], axis=1)
            b = self.pool.new(chip, f"{name}.u{u}", K, self.wdtype, "weight", row_vectors=len(cbs),
                              data=data.reshape(-1), zone="weight", width=16, key=key + ("unit", u))
            b.hemi = u % 2
            for j, cb in enumerate(cbs):
                plan["blocks"][cb] = (u, b, j)
        return plan

    def matvec(self, chip, x: Val, plan: dict, dst: Buf | None, dst_off: int, sinks=None):
        """dst = x @ W over tiles: column block cb on unit cb % units; with `sinks`
        [(col_lo, col_hi, buf, element offset)] each column range is emitted into its own buffer."""
        tr = self.tile_rows
        K = plan["K"]
        xv = lambda rb: (x.off + (rb * tr) // LANES, (rb * tr) % LANES)  # noqa: E731
        if plan["halves"] is not None:
            parts = []
            for h, b, r0, r1 in plan["halves"]:
                u = h % self.units
                s = self.slot(chip, u)
                for k, rb in enumerate(range(r0 // tr, -(-r1 // tr))):
                    self.lw(chip, u, b, k * tr, 0, min(tr, r1 - rb * tr))
                    self.iw(chip, u)
                    off, lane = xv(rb)
                    self.acc_x(chip, u, x, off, lane, s, k > 0)
                hb = self.buf(chip, "half", 1)
                self.emit_acc(chip, u, s, hb, 0)
                parts.append(hb)
            rem = plan["N"] % LANES
            mask = {"period": 1, "valid": rem} if rem else {}
            self.vxm(chip, "add", (dst, dst_off), (parts[0], 0), (parts[1], 0), n=1, **mask)
            return
        for cb in range(plan["ncb"]):
            u, b, col = plan["blocks"][cb]
            s = self.slot(chip, u)
            for rb in range(plan["nrb"]):
                self.lw(chip, u, b, rb * tr, col, min(tr, K - rb * tr))
                self.iw(chip, u)
                off, lane = xv(rb)
                self.acc_x(chip, u, x, off, lane, s, rb > 0)
            if sinks is None:
                # weight columns past N are zero, so the padding lanes come out 0
                self.emit_acc(chip, u, s, dst, dst_off + cb)
                continue
            for lo, hi, buf, eoff in sinks:
                c0, c1 = max(lo, cb * LANES), min(hi, (cb + 1) * LANES)
                c = c0
                while c < c1:
                    dvec, dlane = divmod(eoff + c - lo, LANES)
                    n = min(c1 - c, LANES - dlane)
                    self.emit_acc(chip, u, s, buf, dvec, dst_lane=dlane, src_lane=c - cb * LANES, lanes=n)
                    c += n

    # ------------------------------------------------------------------ attention
    def _attn_pv_packed(self, chip, e, p: Val, kv: Val, heads, D, grp, qheads, out: Val):
        """P = 320 / W positions per V-cache vector, in blocks: position q at row q % R, lanes
        (q // R) * W (R rows, a multiple of the tile rows). Group j (positions jR .. jR + R - 1) is then
        a contiguous run of the probabilities: each streams straight from them through the tiles into
        its own accumulator, and each accumulator gives its positions' share of the result from its
        lanes. P times fewer tile rows to stream than one position per vector (and P times less SRAM),
        and no shuffle."""
        W = len(heads) * D
        P = self.v_pack(W)
        tr = self.tile_rows
        L = self.ctx
        R = kv.buf.rows
        nh = len(qheads)
        u = kv.state[3]
        active = [j for j in range(P) if j * R < L]  # the groups this bucket can see
        slots = {(li, j): self.slot(chip, u) for li in range(nh) for j in active}
        for rb in range(-(-min(L, R) // tr)):
            self.lw(chip, u, kv.buf, rb * tr, 0, min(tr, R - rb * tr))
            self.iw(chip, u)
            for li in range(nh):
                for j in active:
                    q0 = j * R + rb * tr  # the first position of group j in this row block
                    if q0 < L:  # (L and q0 are multiples of the tile rows: the whole block is visible)
                        vec, lane = divmod(p.off * LANES + li * L + q0, LANES)
                        self.acc(chip, u, p.buf, vec, lane, slots[(li, j)], accumulate=rb > 0)
        into_linear = self._linear_input_only(e.outputs[0])
        # (read by the linear's code, which is lowered once for all buckets: then the same buffers in each)
        shares = [self.pool.new(chip, "pvshare", out.vectors, out.buf.dtype if into_linear else "fp32", "act",
                                key=("pvshare", e.outputs[0], chip, j) if into_linear else
                                ("pvshare", e.outputs[0], chip, self.bucket, j))
                  for j in range(P)]
        for li, h in enumerate(qheads):
            jj = heads.index(h // grp)
            for j in active:
                dvec, dlane = divmod(li * D, LANES)
                c, left = j * W + jj * D, D
                while left:
                    n = min(left, LANES - dlane)
                    self.emit_acc(chip, u, slots[(li, j)], shares[j], dvec, dst_lane=dlane, src_lane=c, lanes=n)
                    c, left = c + n, left - n
                    dvec, dlane = dvec + 1, 0
        if into_linear:
            # the next linear adds the shares in its accumulator: no add tree, no trip to the VXM (its
            # code serves every bucket: the groups this one cannot see are zeros)
            for j in range(P):
                if j not in active:
                    self.vxm(chip, "copy", (shares[j], 0), (self.zeros(chip), 0, MODE_REP, 1), n=out.vectors)
            self.parts[(chip, out.buf.id)] = [(b, -out.off) for b in shares]
            return
        self.add_tree(chip, [shares[j] for j in active], out.buf, out.off, out.vectors, "pvsum", mask=self.mask_args(out))

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

    def v_rows(self, pack: int) -> int:
        """Rows of a packed V cache: a block of positions per lane group, a whole number of tiles."""
        rows = -(-self.kv_cols // pack)
        return -(-rows // self.tile_rows) * self.tile_rows

    def v_index(self, chip, pos: Val, R: int, P: int) -> Buf:
        """The packed index of position p in a V cache of R rows and P lane groups, (p % R) * P + p // R,
        so that a packed-rows SCATTER (flat element k * W) puts p at row p % R, lanes (p // R) * W.
        A few VXM operations on the position, once per token (they wait for nothing else)."""
        key = (chip, R, P)
        memo = self.__dict__.setdefault("_v_index", {})
        if key in memo:
            return memo[key]
        p = (pos.buf, pos.off)
        d = self.buf(chip, "vblk", 1)
        self.vxm(chip, "cmpge", (d, 0), p, ("imm", float(R)), n=1)
        for j in range(2, P):
            t = self.buf(chip, "vblk", 1)
            self.vxm(chip, "cmpge", (t, 0), p, ("imm", float(j * R)), n=1)
            d2 = self.buf(chip, "vblk", 1)
            self.vxm(chip, "add", (d2, 0), (d, 0), (t, 0), n=1)
            d = d2
        t = self.buf(chip, "vrow", 1)
        self.vxm(chip, "mul", (t, 0), (d, 0), ("imm", float(R)), n=1)
        r = self.buf(chip, "vrow", 1)
        self.vxm(chip, "sub", (r, 0), p, (t, 0), n=1)
        k0 = self.buf(chip, "vidx", 1)
        self.vxm(chip, "mul", (k0, 0), (r, 0), ("imm", float(P)), n=1)
        k = self.buf(chip, "vidx", 1, "i32")
        self.vxm(chip, "add", (k, 0), (k0, 0), (d, 0), n=1)
        memo[key] = k
        return k

    def zeros(self, chip) -> Buf:
        """A vector that is never written (zero), with an address of its own."""
        return self.pool.new(chip, "zeros", 1, self.wdtype, "const", key=("zeros", chip, self.wdtype))

    def v_pack(self, width: int) -> int:
        """Positions per V-cache vector. Packing saves SRAM and streaming for long caches but costs the
        append index (a few VXM operations) and one accumulator per lane group, so short caches keep one
        position per row."""
        return v_pack(width) if self.max_context > PACK_V_FROM else 1

    def state_unit(self, st_name) -> int:
        """The MXM unit that serves a layer's attention: layers alternate units; the caches sit next to it."""
        return self.g.states[st_name].layer % self.units

    def _state_buf(self, chip, st_name, heads: list[int]) -> Buf:
        b = self._state_buf_new(chip, st_name, heads)
        b.hemi = self.state_unit(st_name) % 2
        return b

    def _state_buf_new(self, chip, st_name, heads: list[int]) -> Buf:
        st = self.g.states[st_name]
        key = ("state", st_name, chip)
        if key in self.pool.shared:
            return self.pool.shared[key]
        D = st.head_dim
        if st.kind == "k":  # transposed: a row per (head, dim), columns over positions, a region per block
            return self.kcol(chip, st_name, heads, 0)
        pack = self.v_pack(len(heads) * D)
        if pack > 1:  # `pack` positions per vector in blocks: position p at row p % R, lanes (p // R) * W
            return self.pool.new(chip, st_name, self.v_rows(pack), self.wdtype, "state", row_vectors=1,
                                 zone="state", width=16, key=key)
        return self.pool.new(chip, st_name, self.kv_cols, self.wdtype, "state", row_vectors=_vecs(len(heads) * D),
                             zone="state", width=16, key=key)

    def kcol(self, chip, st_name, heads: list[int], cb: int) -> Buf:
        """Column block cb (positions 320cb .. 320cb+319) of a K cache, a region of its own: a token's
        append writes only the block of its position, so the tiles of the other blocks can stream into
        the MXM before it (one region for the whole cache would make every tile wait for the append)."""
        if not 0 <= cb < _vecs(self.kv_cols):
            raise AssertionError(f"K cache block {cb} outside the cache")
        b = self.pool.new(chip, f"{st_name}.c{cb}", len(heads) * self.g.states[st_name].head_dim, self.wdtype, "state",
                          row_vectors=1, zone="state", width=16, key=("state", st_name, chip, "col", cb))
        b.hemi = self.kcol_unit(st_name, cb) % 2
        return b

    def kcol_unit(self, st_name, cb: int) -> int:
        """The MXM unit that streams K block cb: the blocks alternate between the units, so the tiles of
        a long cache are installed side by side; each block sits next to its unit."""
        return (self.state_unit(st_name) + cb) % self.units

    def _kv_append(self, chip, e, i):
        st = self.g.states[e.params["state"]]
        pres = self.hold(chip, e.outputs[0])
        D = st.head_dim
        heads = sorted(set((pres // D).tolist()))
        new = self.val(chip, e.inputs[0])
        expect = np.array([h * D + d for h in heads for d in range(D)])
        if new.layout != "flat" or not np.array_equal(new.idx, expect):
            raise UnsupportedError(f"chip {chip}: {e!r}: the new entry must hold whole heads in order")
        sb = self._state_buf(chip, st.name, heads)
        pos = self.val(chip, "position_ids")
        if st.kind == "k":
            # buckets are 320 positions wide: every token of this bucket writes its last column block
            cb = self.ctx // LANES - 1
            blk = self.kcol(chip, st.name, heads, cb)
            self.emit(chip, "mem", Instr("SCATCOL", table_reg=blk.id, src_reg=new.buf.id, src_off=new.off,
                                         idx_reg=pos.buf.id, idx_off=0, rows=len(heads) * D, col0=cb * LANES),
                      tag=e.outputs[0])
        elif self.v_pack(len(heads) * D) > 1:  # packed rows: the W elements of packed index k at flat k * W
            k = self.v_index(chip, pos, sb.rows, self.v_pack(len(heads) * D))
            self.emit(chip, "mem", Instr("SCATTER", table_reg=sb.id, src_reg=new.buf.id, src_off=new.off,
                                         idx_reg=k.id, idx_off=0, elems=len(heads) * D), tag=e.outputs[0])
        else:
            src = new
            if new.vectors != sb.row_vectors:
                raise UnsupportedError(f"{e!r}: value row size mismatch")
            self.emit(chip, "mem", Instr("SCATTER", table_reg=sb.id, src_reg=src.buf.id, src_off=src.off,
                                         idx_reg=pos.buf.id, idx_off=0), tag=e.outputs[0])
        self.vals[chip][e.outputs[0]] = Val(sb, pres, "state", state=(st.kind, heads, D, self.state_unit(st.name), st.name))

    def _attn_qk(self, chip, e, i):
        q = self.val(chip, e.inputs[0])
        kv = self.val(chip, e.inputs[1])
        _, heads, D, ku, st_name = kv.state
        grp = e.params["group"]
        qheads = sorted(set((q.idx // D).tolist()))
        out = self.new_out(chip, e.outputs[0])
        if out.n != len(qheads) or q.n != len(qheads) * D:
            raise UnsupportedError(f"chip {chip}: {e!r} must hold whole query heads")
        tr = self.tile_rows
        R = len(heads) * D
        nrb = -(-R // tr)
        q = self.as_dtype(chip, q, self.wdtype)
        if D <= tr and all((li * D) % LANES + D <= LANES for li in range(len(qheads))):
            # each kv head's rows form a tile by themselves; each query head streams straight from q
            ncb = self.ctx // LANES
            for cb in range(ncb):
                u = self.kcol_unit(st_name, cb)
                for jj, kh in enumerate(heads):
                    users = [li for li, h in enumerate(qheads) if h // grp == kh]
                    if not users:
                        continue
                    self.lw(chip, u, self.kcol(chip, st_name, heads, cb), jj * D, 0, D)
                    self.iw(chip, u)
                    slots = {li: self.slot(chip, u) for li in users}
                    for li in users:
                        pos = q.off * LANES + li * D
                        self.acc(chip, u, q.buf, pos // LANES, pos % LANES, slots[li], accumulate=False)
                    for li in users:
                        self.emit_acc(chip, u, slots[li], out.buf, out.off + li * ncb + cb)
            return
        # otherwise one activation vector per (query head, row block) it meets: q placed at its kv
        # head's rows by an SXM shuffle
        pairs, mapping = {}, []
        for li, h in enumerate(qheads):
            j = heads.index(h // grp)
            r0, r1 = j * D, (j + 1) * D
            for rb in range(r0 // tr, (r1 - 1) // tr + 1):
                vec = np.full(LANES, -1, dtype=np.int64)
                for r in range(max(r0, rb * tr), min(r1, rb * tr + tr)):
                    vec[r - rb * tr] = li * D + (r - r0)
                pairs.setdefault(rb, []).append((li, len(mapping)))
                mapping.append(vec)
        qx = self.buf(chip, "qx", len(mapping), self.wdtype)
        qsrc = Val(q.buf, q.idx, "flat", off=q.off)
        self.shuf(chip, qx, 0, qsrc, np.concatenate(mapping).astype(np.int32), tag="qx")
        ncb = self.ctx // LANES
        for cb in range(ncb):
            u = self.kcol_unit(st_name, cb)
            slots, first = {}, {}
            for rb in range(nrb):
                if rb not in pairs:
                    continue
                self.lw(chip, u, self.kcol(chip, st_name, heads, cb), rb * tr, 0, min(tr, R - rb * tr))
                self.iw(chip, u)
                for li, pv in pairs[rb]:
                    if li not in slots:
                        slots[li] = self.slot(chip, u)
                    self.acc(chip, u, qx, pv, 0, slots[li], accumulate=li in first)
                    first[li] = True
            for li in sorted(slots):
                self.emit_acc(chip, u, slots[li], out.buf, out.off + li * ncb + cb)

    def _attn_pv(self, chip, e, i):
        p = self.val(chip, e.inputs[0])
        kv = self.val(chip, e.inputs[1])
        _, heads, D, ku, st_name = kv.state
        grp = e.params["group"]
        out = self.new_out(chip, e.outputs[0], partial=True)
        qheads = sorted(set((out.idx // D).tolist()))
        if out.n != len(qheads) * D or p.n != len(qheads):
            raise UnsupportedError(f"chip {chip}: {e!r} must hold whole query heads")
        p = self.as_dtype(chip, p, self.wdtype)
        if self.v_pack(len(heads) * D) > 1:
            return self._attn_pv_packed(chip, e, p, kv, heads, D, grp, qheads, out)
        tr = self.tile_rows
        ncb = kv.buf.row_vectors
        nrb = self.ctx // tr
        pv_per_head = self.ctx // LANES
        for cb in range(ncb):
            users = []
            for li, h in enumerate(qheads):
                j = heads.index(h // grp)
                c0, c1 = max(j * D, cb * LANES), min((j + 1) * D, (cb + 1) * LANES)
                if c0 < c1:
                    users.append((li, j, c0, c1))
            if not users:
                continue
            u = ku
            slots = {li: self.slot(chip, u) for li, *_ in users}
            for rb in range(nrb):
                self.lw(chip, u, kv.buf, rb * tr, cb, tr)
                self.iw(chip, u)
                for li, *_ in users:
                    pos = rb * tr
                    self.acc(chip, u, p.buf, p.off + li * pv_per_head + pos // LANES, pos % LANES, slots[li],
                             accumulate=rb > 0)
            for li, j, c0, c1 in users:
                # accumulator lanes c0..c1 (relative to cb) -> out positions li*D + (c - j*D)
                c = c0
                while c < c1:
                    dpos = out.off * LANES + li * D + (c - j * D)
                    dvec, dlane = divmod(dpos, LANES)
                    n = min(c1 - c, LANES - dlane)
                    self.emit_acc(chip, u, slots[li], out.buf, dvec, dst_lane=dlane, src_lane=c - cb * LANES, lanes=n)
                    c += n


PACK_V_FROM = 1024  # max_context above which the V cache is packed
TABLE_BLOCK_BANKS = 2  # a gathered table is stored in row blocks of at most this many banks' bytes


def v_pack(width: int) -> int:
    """Positions per vector in the V cache: whole positions of `width` elements when they tile a vector."""
    return LANES // width if width <= LANES // 2 and LANES % width == 0 else 1


def hw_links(hw) -> int:
    return (hw.system.chips - 1) * hw.system.links_per_chip_pair


def _link_table(hw) -> list[list[int]]:
    """links[c][o] = the first link of chip c that goes to chip o."""
    from isa import topology

    topo = topology(hw.to_dict())
    out = []
    for c, row in enumerate(topo):
        m = {}
        for l, (peer, _) in enumerate(row):
            m.setdefault(peer, l)
        out.append([m.get(o, -1) for o in range(len(topo))])
    return out
