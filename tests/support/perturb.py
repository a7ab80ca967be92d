"""Random small programs and random perturbations of their schedules, for testing the schedule checker.

A schedule is a list of `Placed` instructions (chip, queue, wanted issue cycle); `streams` turns it back
into NOP-padded streams (an instruction whose queue is still busy issues when the queue frees up, so
every perturbed schedule is a well-formed program). `random_program` writes a program with
ProgramBuilder.seq (hazard-free, though an instruction may clash with itself on a bank); `perturb` then changes its timing the ways a compiler could: pulls an instruction
earlier or delays it (alone, or with the rest of its queue: a NOP count changed), moves it to another
interchangeable queue (VXM, SXM, MEM), swaps or changes a VXM's operands or function, moves an operand
offset. Many perturbations make hazards the checker must reject; the others must run identically on
the executor and on the stepped machine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

import isa
from isa import Instr, IsaError, Machine, Program, VECTOR_LANES
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, VXM_FNS

from builder import ProgramBuilder

LANES = VECTOR_LANES
_UNARY = [f.code for f in VXM_FNS if f.arity == 1 and not f.reduce]
_BINARY = [f.code for f in VXM_FNS if f.arity >= 2]
_REDUCE = [f.code for f in VXM_FNS if f.reduce]
_NP = {"fp32": np.float32, "fp16": np.float16, "i32": np.int32}


@dataclass(frozen=True, slots=True)
class Placed:
    """An instruction at a wanted issue cycle; `order` breaks ties on a queue (original stream order)."""

    chip: int
    queue: str
    cycle: int
    ins: Instr
    order: int


def placement(program: Program, bucket: int = 0) -> list[Placed]:
    """A program's bucket as placed instructions (NOPs become gaps)."""
    m = Machine(program.header["hw"], program.regions)
    out = []
    numbering = program.numbering()
    for (b, chip, queue), words in sorted(program.streams.items()):
        if b != bucket:
            continue
        t = 0
        for ins in isa.decode_many(words, chip, numbering):
            if ins.op != "NOP":
                out.append(Placed(chip, queue, t, ins, len(out)))
            t += m.profile(ins, queue).busy
    return out


def streams(placed: list[Placed], m: Machine, nop_max: int, numbering, bucket: int = 0) -> dict:
    """NOP-padded streams: per queue in (cycle, order) order, each instruction at its cycle or when its
    queue frees up, whichever is later."""
    by_queue: dict[tuple[int, str], list[Placed]] = {}
    for p in placed:
        by_queue.setdefault((p.chip, p.queue), []).append(p)
    out = {}
    for (chip, queue), items in sorted(by_queue.items()):
        free, body = 0, []
        for p in sorted(items, key=lambda p: (p.cycle, p.order)):
            gap = max(p.cycle, free) - free
            while gap > 0:
                body.append(Instr("NOP", count=min(gap, nop_max)))
                gap -= min(gap, nop_max)
            body.append(p.ins)
            free = max(p.cycle, free) + m.profile(p.ins, queue).busy
        out[(bucket, chip, queue)] = isa.encode_many(body, chip, numbering)
    return out


def with_placement(program: Program, placed: list[Placed], bucket: int = 0) -> Program:
    """A copy of `program` whose bucket streams are `placed` (header, regions, symbols and image shared)."""
    m = Machine(program.header["hw"], program.regions)
    nop_max = int(program.header["hw"]["chip"]["icu"]["nop_max_repeat"])
    kept = {k: v for k, v in program.streams.items() if k[0] != bucket}
    kept.update(streams(placed, m, nop_max, program.numbering(), bucket))
    return Program(program.header, program.regions, program.symbols, kept, program.image)


# ----------------------------------------------------------------------------------------- programs
class _Gen:
    """Builds one random program (ProgramBuilder.seq) on 1 or 2 chips."""

    def __init__(self, rng: np.random.Generator, chips: int) -> None:
        self.rng = rng
        self.b = ProgramBuilder(chips=chips)
        self.chips = chips
        self.data: dict[int, list[int]] = {}
        self.r: dict[tuple[int, str], int] = {}
        self.packed = int(rng.choice([100, 250, 320, 500]))  # elements per packed row of this program
        self.col0: dict[int, int] = {}  # per chip: the scatcol table's first column
        self.window: dict[int, int] = {}  # per chip: the shuf window the map was made for
        for c in range(chips):
            self._regions(c)

    def _bank(self, width: int) -> int:
        return int(self.rng.integers(0, 176 - width + 1))

    def _fill(self, reg: int, values) -> None:
        with np.errstate(over="ignore"):
            self.b.fill(reg, np.asarray(values).astype(_NP[self.b.regions[reg].dtype]))

    def _values(self, n: int) -> np.ndarray:
        x = (self.rng.standard_normal(n) * 2).astype(np.float32)
        if self.rng.random() < 0.3:  # a few specials: they must propagate identically
            k = self.rng.choice(n, size=4, replace=False)
            x[k] = np.array([np.nan, np.inf, -0.0, 7e4], dtype=np.float32)
        return x

    def _regions(self, c: int) -> None:
        rng, b = self.rng, self.b
        data = []
        for k in range(int(rng.integers(4, 7))):
            width = int(rng.integers(1, 3))
            rv = 1 if rng.random() < 0.8 else 2
            rows = int(rng.integers(2, 7))
            dt = str(rng.choice(["fp32", "fp16", "fp16"]))
            reg = b.region(f"d{k}@{c}", chip=c, bank=self._bank(width), rows=rows, row_vectors=rv, width=width, dtype=dt)
            self._fill(reg, self._values(rows * rv * LANES))
            data.append(reg)
        # the gather/scatter table is a data region too (VXM and COPY read and write it)
        t = b.region(f"t@{c}", chip=c, bank=self._bank(2), rows=int(rng.integers(4, 7)), row_vectors=int(rng.integers(1, 3)),
                     width=int(rng.integers(1, 3)), dtype=str(rng.choice(["fp32", "fp16"])))
        self._fill(t, self._values(b.regions[t].n_vectors * LANES))
        data.append(t)
        if rng.random() < 0.5:  # a region over another's rows, of another type: hazards are per physical row
            under = b.regions[int(rng.choice(data))]
            data.append(b.region(f"alias@{c}", chip=c, bank=under.bank, rows=int(rng.integers(1, under.rows + 1)),
                                 row_vectors=under.row_vectors, width=under.width, addr=under.addr,
                                 dtype=str(rng.choice(["fp32", "fp16"]))))
        self.data[c] = data
        self.r[(c, "t")] = t
        tr = b.regions[t]
        # index vectors: lane 0 a gather row (sometimes outside: zeros), 1 a scatter row, 2 a scatcol column,
        # 3 a packed row; ix2 holds other valid indices (COPY ix2 -> ix makes the index change at runtime)
        col0 = self.col0[c] = int(rng.integers(0, 4))
        packed_rows = tr.n_vectors * LANES // self.packed
        for name in ("ix", "ix2"):
            reg = b.region(f"{name}@{c}", chip=c, bank=self._bank(1), rows=1, dtype="i32")
            v = rng.integers(0, 5, size=LANES)
            v[0] = rng.integers(-1, tr.rows + 1)
            v[1] = rng.integers(0, tr.rows)
            v[2] = col0 + rng.integers(0, tr.row_vectors * LANES)
            v[3] = rng.integers(0, packed_rows)
            self._fill(reg, v)
            self.r[(c, name)] = reg
        window = self.window[c] = int(rng.integers(1, 3))
        mp = b.region(f"map@{c}", chip=c, bank=self._bank(1), rows=2, dtype="i32")
        self._fill(mp, rng.integers(-3, window * LANES, size=2 * LANES))
        self.r[(c, "map")] = mp
        wt = str(rng.choice(["fp16", "fp32"]))
        w = b.region(f"w@{c}", chip=c, bank=self._bank(4), rows=int(rng.integers(2, 25)), row_vectors=int(rng.integers(1, 3)),
                     width=int(rng.integers(1, 5)), dtype=wt)
        self._fill(w, self.rng.standard_normal(b.regions[w].n_vectors * LANES) * 0.5)
        self.r[(c, "w")] = w
        if rng.random() < 0.5:  # others may write the weights too: tile rows must be taken when the LW reads them
            data.append(w)

    def nvec(self, reg: int) -> int:
        return self.b.regions[reg].n_vectors

    def pick(self, c: int, need: int = 1, bytes_like: int | None = None) -> int | None:
        regs = [r for r in self.data[c] if self.nvec(r) >= need
                and (bytes_like is None or self.b.regions[r].vector_bytes == bytes_like)]
        return int(self.rng.choice(regs)) if regs else None

    def off(self, reg: int, span: int) -> int:
        return int(self.rng.integers(0, self.nvec(reg) - span + 1))

    # one random operation: one or a few instructions, placed with seq
    def vxm(self, c: int) -> None:
        rng = self.rng
        kind = rng.choice(["unary", "binary", "reduce"])
        fn = int(rng.choice({"unary": _UNARY, "binary": _BINARY, "reduce": _REDUCE}[kind]))
        dst = self.pick(c)
        n = int(rng.integers(1, min(4, self.nvec(dst)) + 1))
        group = int(rng.integers(1, 4)) if kind == "reduce" else 1
        steps = n * group
        args = dict(fn=fn, queue=int(rng.integers(0, 16)), dst_reg=dst, dst_off=self.off(dst, n), n=n, group=group)
        for name in ("a", "b") if kind == "binary" else ("a",):
            if name == "b" and rng.random() < 0.25:
                args.update(b_mode=MODE_IMM)
                continue
            mode = int(rng.choice([MODE_SEQ, MODE_SEQ, MODE_REP, MODE_GRP]))
            m = int(rng.integers(1, 4)) if mode != MODE_SEQ else 1
            span = steps if mode == MODE_SEQ else min(m, steps) if mode == MODE_REP else -(-steps // m)
            reg = self.pick(c, span)
            if reg is None:
                mode, m, span = MODE_REP, 1, 1
                reg = self.pick(c)
            args.update({f"{name}_reg": reg, f"{name}_off": self.off(reg, span), f"{name}_mode": mode, f"{name}_m": m})
        if rng.random() < 0.2:
            args.update(period=int(rng.integers(1, n + 1)), valid=int(rng.integers(0, LANES + 1)))
        args["imm"] = float(rng.choice([-1.75, 0.5, 3.0]))
        q = args["queue"]
        self.b.seq(c, f"vxm{q}", Instr("VXM", **args))

    def sxm(self, c: int) -> None:
        rng = self.rng
        q = int(rng.integers(0, 2))
        dst = self.pick(c)
        if rng.random() < 0.5:
            n = int(rng.integers(1, min(3, self.nvec(dst)) + 1))
            src = self.pick(c, n)
            if src is None:
                return
            ins = Instr("SXM", fn=0, queue=q, dst_reg=dst, dst_off=self.off(dst, n), src_reg=src, src_off=self.off(src, n),
                        n=n, shift=int(rng.integers(0, 512)))
        else:
            n = int(rng.integers(1, min(2, self.nvec(dst)) + 1))
            w = self.window[c]
            src = self.pick(c, w)
            if src is None:
                return
            mp = self.r[(c, "map")]
            ins = Instr("SXM", fn=1, queue=q, dst_reg=dst, dst_off=self.off(dst, n), src_reg=src, src_off=self.off(src, w),
                        map_reg=mp, map_off=self.off(mp, n), n=n, window=w)
        self.b.seq(c, f"sxm{q}", ins)

    def copy(self, c: int) -> None:
        dst = self.pick(c)
        n = int(self.rng.integers(1, min(3, self.nvec(dst)) + 1))
        src = self.pick(c, n)
        q = int(self.rng.integers(0, 4))
        self.b.seq(c, f"mem{q}", Instr("COPY", queue=q, dst_reg=dst, dst_off=self.off(dst, n), src_reg=src,
                                        src_off=self.off(src, n), n=n))

    def indexed(self, c: int) -> None:
        rng = self.rng
        t, ix = self.r[(c, "t")], self.r[(c, "ix")]
        tr = self.b.regions[t]
        q = int(rng.integers(0, 4))
        kind = rng.choice(["gather", "gather_packed", "scatter", "scatter_packed", "scatcol", "reindex"])
        packed_nv = -(-self.packed // LANES)
        if kind == "reindex":
            self.b.seq(c, f"mem{q}", Instr("COPY", queue=q, dst_reg=ix, src_reg=self.r[(c, "ix2")], n=1))
            return
        if kind == "gather" or kind == "gather_packed":
            packed = kind == "gather_packed"
            nv = packed_nv if packed else tr.row_vectors
            dst = self.pick(c, nv)
            if dst is None:
                return
            rows = tr.n_vectors * LANES // self.packed if packed else tr.rows
            ins = Instr("GATHER", queue=q, dst_reg=dst, dst_off=self.off(dst, nv), table_reg=t, idx_reg=ix,
                        idx_lane=3 if packed else 0, base=0, rows=int(rng.integers(1, rows + 1)) if not packed else rows,
                        elems=self.packed if packed else 0)
        elif kind == "scatter" or kind == "scatter_packed":
            packed = kind == "scatter_packed"
            nv = packed_nv if packed else tr.row_vectors
            src = self.pick(c, nv)
            if src is None:
                return
            ins = Instr("SCATTER", queue=q, table_reg=t, src_reg=src, src_off=self.off(src, nv), idx_reg=ix,
                        idx_lane=3 if packed else 1, elems=self.packed if packed else 0)
        else:
            src = self.pick(c)
            ins = Instr("SCATCOL", queue=q, table_reg=t, src_reg=src, src_off=self.off(src, 1), idx_reg=ix, idx_lane=2,
                        rows=int(rng.integers(1, tr.rows + 1)), col0=self.col0[c])
        self.b.seq(c, f"mem{q}", ins)

    def mxm(self, c: int) -> None:
        rng = self.rng
        u = int(rng.integers(0, 2))
        w = self.b.regions[self.r[(c, "w")]]
        slot = int(rng.integers(0, 8))

        def lw():
            rows = int(rng.integers(1, min(w.rows, 160) + 1))
            self.b.seq(c, f"mxm{u}w", Instr("LW", unit=u, src_reg=w.id, row0=int(rng.integers(0, w.rows - rows + 1)),
                                            col=int(rng.integers(0, w.row_vectors)), rows=rows))
            return rows

        def acc(rows, accumulate):
            x = self.pick(c)
            self.b.seq(c, f"mxm{u}a", Instr("ACC", unit=u, x_reg=x, x_off=self.off(x, 1),
                                            x_lane=int(rng.integers(0, LANES - rows + 1)), slot=slot, accumulate=accumulate))

        rows = lw()
        self.b.seq(c, f"mxm{u}a", Instr("IW", unit=u))
        if rng.random() < 0.4:  # the next tile streams into the shadow while the active one is used
            rows2 = lw()
            acc(rows, 0)
            self.b.seq(c, f"mxm{u}a", Instr("IW", unit=u))
            acc(rows2, int(rng.integers(0, 2)))
        else:
            acc(rows, 0)
            if rng.random() < 0.5:
                acc(rows, 1)
        for _ in range(int(rng.integers(1, 3))):
            dst = self.pick(c)
            lanes = int(rng.integers(1, LANES + 1))
            self.b.seq(c, f"mxm{u}a", Instr("EMIT", unit=u, slot=slot, dst_reg=dst, dst_off=self.off(dst, 1),
                                            dst_lane=int(rng.integers(0, LANES - lanes + 1)),
                                            src_lane=int(rng.integers(0, LANES - lanes + 1)), lanes=lanes))

    def link(self, c: int) -> None:
        if self.chips < 2:
            return
        topo = self.b.header()["topology"]
        ports = [p for p, (o, _) in enumerate(topo[c]) if o >= 0]  # connected ports only
        link = ports[int(self.rng.integers(0, len(ports)))]
        peer, pl = topo[c][link]
        src = self.pick(c)
        n = int(self.rng.integers(1, min(2, self.nvec(src)) + 1))
        dst = self.pick(peer, n, bytes_like=self.b.regions[src].vector_bytes)
        if dst is None:
            return
        self.b.seq(c, f"c2c{link}t", Instr("SEND", link=link, src_reg=src, src_off=self.off(src, n), n=n))
        self.b.seq(peer, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=dst, dst_off=self.off(dst, n), n=n))


def random_program(rng: np.random.Generator, chips: int = 1, ops: tuple[int, int] = (6, 13)) -> Program:
    """A random program, every instruction placed with ProgramBuilder.seq: free of hazards between
    instructions (one may still clash with itself on a bank, e.g. a COPY within one bank)."""
    g = _Gen(rng, chips)
    menu = [g.vxm, g.vxm, g.vxm, g.sxm, g.copy, g.indexed, g.indexed, g.mxm] + ([g.link, g.link] if chips > 1 else [])
    for _ in range(int(rng.integers(*ops))):
        menu[int(rng.integers(0, len(menu)))](int(rng.integers(0, chips)))
    return g.b.build()


# ----------------------------------------------------------------------------------------- perturbations
_SHIFTS = (1, 1, 2, 3, 4, 6, 9, 14, 20, 30, 45, 70, 100, 200)
_OFFSETS = ("dst_off", "a_off", "b_off", "src_off", "x_off", "map_off")


def _in_bounds(m: Machine, ins: Instr, queue: str) -> bool:
    try:
        prof = m.profile(ins, queue)
    except (IsaError, IndexError):
        return False
    for a in prof.accesses:
        if a.region >= 0 and not a.whole and a.count:
            hi = max(a.vector(0), a.vector(a.count - 1))
            if a.vector(0) < 0 or hi >= m.regions[a.region].n_vectors:
                return False
    return True


def perturb(rng: np.random.Generator, placed: list[Placed], m: Machine, n_changes: int = 1) -> tuple[list[Placed], list[str]]:
    """`n_changes` random changes of a schedule; returns the new schedule and what was changed."""
    placed = list(placed)
    done = []
    while len(done) < n_changes:
        i = int(rng.integers(0, len(placed)))
        p = placed[i]
        kind = str(rng.choice(["pull", "pull", "pull", "delay", "tail", "requeue", "swap", "fn", "offset"]))
        fam, q = isa.parse_queue(p.queue)
        if kind in ("pull", "delay", "tail"):
            d = int(rng.choice(_SHIFTS)) * (-1 if kind == "pull" or (kind == "tail" and rng.random() < 0.5) else 1)
            if kind == "tail":  # a NOP count changed: this instruction and the rest of its queue move
                placed = [dataclasses.replace(x, cycle=max(0, x.cycle + d))
                          if (x.chip, x.queue) == (p.chip, p.queue) and x.cycle >= p.cycle else x for x in placed]
            else:
                placed[i] = dataclasses.replace(p, cycle=max(0, p.cycle + d))
            done.append(f"{kind} {d:+d}: {p.queue}@{p.cycle} {p.ins.op}")
        elif kind == "requeue" and fam in ("vxm", "sxm", "mem"):
            n = {"vxm": m.vxm_queues, "sxm": m.sxm_units, "mem": m.mem_queues}[fam]
            q2 = int(rng.integers(0, n))
            if q2 == q:
                continue
            ins = p.ins.replace(queue=q2) if "queue" in p.ins.args else p.ins
            placed[i] = dataclasses.replace(p, queue=f"{fam}{q2}", ins=ins)
            done.append(f"requeue {p.queue}->{fam}{q2}@{p.cycle} {p.ins.op}")
        elif kind == "swap" and p.ins.op == "VXM" and p.ins["b_mode"] != MODE_IMM and p.ins["fn"] in _BINARY:
            a = p.ins.args
            sw = {f"a_{k}": a[f"b_{k}"] for k in ("reg", "off", "mode", "m")}
            sw.update({f"b_{k}": a[f"a_{k}"] for k in ("reg", "off", "mode", "m")})
            ins = p.ins.replace(**sw)
            if not _in_bounds(m, ins, p.queue):
                continue
            placed[i] = dataclasses.replace(p, ins=ins)
            done.append(f"swap a<->b: {p.queue}@{p.cycle}")
        elif kind == "fn" and p.ins.op == "VXM":
            same = next(c for c in (_UNARY, _BINARY, _REDUCE) if p.ins["fn"] in c)
            fn = int(rng.choice(same))
            placed[i] = dataclasses.replace(p, ins=p.ins.replace(fn=fn))
            done.append(f"fn {p.ins['fn']}->{fn}: {p.queue}@{p.cycle}")
        elif kind == "offset":
            names = [k for k in _OFFSETS if k in p.ins.args]
            if not names:
                continue
            name = str(rng.choice(names))
            ins = p.ins.replace(**{name: max(0, p.ins[name] + int(rng.choice([-2, -1, 1, 2])))})
            if ins.args == p.ins.args or not _in_bounds(m, ins, p.queue):
                continue
            placed[i] = dataclasses.replace(p, ins=ins)
            done.append(f"{name} {p.ins[name]}->{ins[name]}: {p.queue}@{p.cycle} {p.ins.op}")
    return placed, done
