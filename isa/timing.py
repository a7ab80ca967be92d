"""Instruction timing: when each instruction reads, writes and occupies what, relative to its issue cycle.

This is the one place where the latency of an instruction is computed from the hardware description
(isa.hw.Hardware, which a program header stores as a dict). The compiler's scheduler and the emulator's
schedule checker both call `profile`, so they cannot disagree.

Model (one chip):
- Floorplan (isa.hw.Floorplan): MEM slices lie on a line, the VXM and the chip-to-chip ports at its
  centre, each hemisphere's SXM and MXM unit at its edge. A vector moves one position per `hop_cycles`
  on a stream, so where a tensor lives decides when it arrives.
- SRAM: each bank serves one access of `access_bytes` per cycle, read or write. A vector of e bytes per
  lane (fp16: 2, fp32: 4) holds its bank for e cycles. Data read at t reaches the stream at t + read
  latency; data written at t is readable at t + write latency + (e - 1).
- C2C: a vector on a link takes the link's class bandwidth, plus its hop latency to arrive
  (isa.hw.Topology: which port joins which chip, and each link's class).
- A queue issues its next instruction exactly `busy` cycles after this one (NOP pads the gaps), so a
  program's stream fixes every issue cycle.
- MXM state (shadow tile, active tile, accumulator slots) is tracked like memory, as pseudo-locations.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil

from .errors import IsaError
from .hw import as_hardware
from .table import (BY_MNEMONIC, MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, SXM_BY_CODE, VECTOR_LANES, VXM_BY_CODE,
                    parse_queue)

# Pseudo-regions for MXM state: (kind, unit) -> a location id below zero, so they never meet SRAM.
PSEUDO_SHADOW, PSEUDO_ACTIVE, PSEUDO_ACC = -1, -2, -3


@dataclass(slots=True)
class Access:
    """A run of `count` accesses to vectors of one region (or MXM pseudo-location).

    Vector k of the run is index off + stride * f(k) with f(k) = k (seq), k % m (rep) or k // m (grp);
    it is accessed at cycle t0 + (k * num) // den relative to issue, and holds its bank `hold` cycles.
    A write becomes readable `ready` cycles after it happens. `whole` marks a runtime-indexed access:
    the checker treats it as touching every vector of the region, and every bank of its stripe.
    """

    region: int
    off: int
    count: int
    t0: int
    write: bool
    stride: int = 1
    mode: int = MODE_SEQ
    m: int = 1
    num: int = 1
    den: int = 1
    hold: int = 1
    ready: int = 0
    whole: bool = False
    unit: int = 0  # MXM unit for pseudo-locations

    def vector(self, k: int) -> int:
        if self.mode == MODE_REP:
            f = k % self.m
        elif self.mode == MODE_GRP:
            f = k // self.m
        else:
            f = k
        return self.off + self.stride * f

    def time(self, k: int) -> int:
        return self.t0 + (k * self.num) // self.den

    @property
    def last_time(self) -> int:
        return self.time(self.count - 1) if self.count else self.t0


@dataclass(slots=True)
class LinkUse:
    """Vectors sent or received on a link: vector k at cycle t0 + k * per_vector (relative to issue);
    for a send, `arrive` is the extra delay until the vector can be stored by the peer."""

    link: int
    count: int
    t0: int
    per_vector: int
    arrive: int = 0


@dataclass(slots=True)
class Profile:
    """`commit`: the cycle (relative to issue) at which the instruction's effects are applied when a
    program is executed one instruction at a time (the emulator's execution order is by issue + commit,
    then chip, queue, stream position). It is where the instruction meets the state others share: an LW
    when its first row reaches the shadow buffer, an ACC when its activation reaches the array. The
    schedule checker proves that executing in this order equals the timed hardware."""

    busy: int
    accesses: list[Access] = field(default_factory=list)
    send: LinkUse | None = None
    recv: LinkUse | None = None
    commit: int = 0


class Machine:
    """Timing parameters of one chip and the facts of the system it is in, read from a hardware
    description (isa.hw.Hardware, or the dict a program header stores)."""

    def __init__(self, hw, regions) -> None:
        hw = as_hardware(hw)
        self.hw = hw
        chip = hw.chip
        sram = chip.sram
        self.read_latency = sram.read_latency_cycles
        self.write_latency = sram.write_latency_cycles
        self.access_bytes = sram.access_bytes
        self.banks = hw.banks
        self.floorplan = hw.floorplan
        self.hop = chip.streams.hop_cycles
        mxm = chip.mxm
        self.mxm_units = hw.mxm_units
        self.tile_rows = mxm.fp16_tile_rows
        self.tile_rows_of = hw.tile_rows  # rows of a tile of a region's element type (8-bit: more)
        self.install_bpc = mxm.install_bytes_per_cycle
        self.iw_cycles = mxm.iw_cycles
        self.mxm_latency = mxm.latency_cycles
        self.emit_cycles = mxm.emit_cycles
        self.acc_slots = mxm.acc_slots
        self.vxm_lat = dataclasses.asdict(chip.vxm.latency_cycles)
        self.vxm_queues = chip.vxm.alus
        self.sxm_lat = dataclasses.asdict(chip.sxm.latency_cycles)
        self.sxm_units = chip.sxm.units
        self.mem_queues = chip.mem.queues
        self.deskew_cycles = chip.c2c.deskew_cycles
        self.sync_cycles = chip.icu.sync_cycles
        self.nop_max = chip.icu.nop_max_repeat
        self.chips = hw.system.chips
        self.topology = hw.topology
        self.links = hw.links_per_chip
        self.regions = regions
        self._transit: dict[tuple[int, int], int] = {}

    # -------------------------------------------------------------- floorplan
    def bank_pos(self, bank: int) -> int:
        return self.floorplan.bank_pos(bank)

    def unit_pos(self, family: str, index: int) -> int:
        return self.floorplan.unit_pos(family, index)

    def transit(self, region: int, pos: int) -> int:
        """Cycles for a vector between the farthest bank of a region's stripe and position pos."""
        key = (region, pos)
        t = self._transit.get(key)
        if t is None:
            r = self.regions[region]
            banks = range(r.bank, r.bank + min(r.width, r.rows))
            t = max(abs(self.bank_pos(b) - pos) for b in banks) * self.hop
            self._transit[key] = t
        return t

    def region_transit(self, src: int, dst: int) -> int:
        a, b = self.regions[src], self.regions[dst]
        pa = [self.bank_pos(x) for x in range(a.bank, a.bank + min(a.width, a.rows))]
        pb = [self.bank_pos(x) for x in range(b.bank, b.bank + min(b.width, b.rows))]
        return max(abs(x - y) for x in pa for y in pb) * self.hop

    # -------------------------------------------------------------- per-region facts
    def hold(self, region: int) -> int:
        return max(1, self.regions[region].vector_bytes // self.access_bytes)

    def parallel(self, region: int) -> int:
        """Banks a run of consecutive vectors of this region rotates over."""
        r = self.regions[region]
        return min(r.width, r.rows) if r.row_vectors == 1 else 1

    def need_interval(self, region: int, spacing: int = 1) -> int:
        return max(1, ceil(ceil(self.hold(region) / self.parallel(region)) / max(1, spacing)))

    def ready(self, region: int) -> int:
        return self.write_latency + self.hold(region) - 1

    def link_cycles_per_vector(self, region: int, port: int) -> int:
        """Cycles one vector of `region` takes on port `port` of the region's chip (its link's class)."""
        r = self.regions[region]
        return max(1, ceil(r.vector_bytes / self.topology.link_class(r.chip, port).bytes_per_cycle))

    # -------------------------------------------------------------- profiles
    def profile(self, ins, queue: str) -> Profile:
        """Timing profile of instruction `ins` (an isa.Instr) issued from `queue`."""
        family, qidx = parse_queue(queue)
        op = ins.op
        spec = BY_MNEMONIC[op]
        if spec.family not in (family, "any"):
            raise IsaError(f"{op} cannot issue from queue {queue} (it belongs to {spec.family} queues)")
        a = ins.args
        fn = getattr(self, "_p_" + op.lower())
        return fn(a, family, qidx)

    def _p_nop(self, a, fam, q):
        if a["count"] < 1:
            raise IsaError("NOP count must be >= 1")
        return Profile(busy=a["count"])

    def _p_sync(self, a, fam, q):
        return Profile(busy=self.sync_cycles)

    def _p_deskew(self, a, fam, q):
        return Profile(busy=self.deskew_cycles)

    def _operand(self, a, name):
        return a[f"{name}_reg"], a[f"{name}_off"], a.get(f"{name}_mode", MODE_SEQ), a.get(f"{name}_m", 1)

    def _p_vxm(self, a, fam, q):
        fn = VXM_BY_CODE.get(a["fn"])
        if fn is None:
            raise IsaError(f"VXM fn code {a['fn']} is not a VXM function")
        if q != a["queue"]:
            raise IsaError(f"VXM names queue {a['queue']} but sits in vxm{q}")
        n, group = a["n"], max(1, a["group"]) if fn.reduce else 1
        if n < 1:
            raise IsaError("VXM n must be >= 1")
        steps = n * group
        srcs = [("a",)] + ([("b",)] if fn.arity >= 2 else [])
        dst = a["dst_reg"]
        interval = self.need_interval(dst, group)  # a reduction writes one vector per `group` steps
        ops = []
        for (name,) in srcs:
            reg, off, mode, m = self._operand(a, name)
            if mode == MODE_IMM:
                if name == "a":
                    raise IsaError("VXM source a cannot be an immediate")
                continue
            if mode in (MODE_REP, MODE_GRP) and m < 1:
                raise IsaError(f"VXM operand {name}: mode {mode} needs m >= 1")
            spacing = m if mode == MODE_GRP else 1
            interval = max(interval, self.need_interval(reg, spacing))
            if (reg, off, mode, m) not in ops:  # a source named twice is read once
                ops.append((reg, off, mode, m))
        vpos = 0
        t_in = max((self.transit(reg, vpos) for reg, *_ in ops), default=0)
        lat = self.read_latency + t_in + self.vxm_lat[fn.latency] + self.transit(dst, vpos)
        acc = []
        for reg, off, mode, m in ops:
            if mode == MODE_SEQ:
                acc.append(Access(reg, off, steps, 0, False, num=interval, hold=self.hold(reg)))
            elif mode == MODE_REP:  # the m distinct vectors are read once, then held on the stream
                acc.append(Access(reg, off, min(m, steps), 0, False, num=interval, hold=self.hold(reg)))
            else:  # grp: distinct vector j is first needed at step j*m
                acc.append(Access(reg, off, -(-steps // m), 0, False, num=interval * m, hold=self.hold(reg)))
        t_w = (group - 1) * interval + lat
        acc.append(Access(dst, a["dst_off"], n, t_w, True, num=interval * group, hold=self.hold(dst), ready=self.ready(dst)))
        return Profile(busy=steps * interval, accesses=acc)

    def _p_sxm(self, a, fam, q):
        fn = SXM_BY_CODE.get(a["fn"])
        if fn is None:
            raise IsaError(f"SXM fn code {a['fn']} is not an SXM function")
        if q != a["queue"]:
            raise IsaError(f"SXM names queue {a['queue']} but sits in sxm{q}")
        n = a["n"]
        if n < 1:
            raise IsaError("SXM n must be >= 1")
        pos = self.unit_pos("sxm", q)
        src, dst = a["src_reg"], a["dst_reg"]
        acc = []
        if fn.name == "rot":
            pre = 0
            interval = max(self.need_interval(src), self.need_interval(dst))
            acc.append(Access(src, a["src_off"], n, 0, False, num=interval, hold=self.hold(src)))
            t_in = self.transit(src, pos)
        else:
            w = a["window"]
            if w < 1:
                raise IsaError("SXM shuf needs window >= 1")
            mp = a["map_reg"]
            interval = max(self.need_interval(dst), self.need_interval(mp))
            win = self.need_interval(src)
            acc.append(Access(src, a["src_off"], w, 0, False, num=win, hold=self.hold(src)))
            pre = w * win  # the window is taken in before the first output leaves
            acc.append(Access(mp, a["map_off"], n, pre, False, num=interval, hold=self.hold(mp)))
            t_in = max(self.transit(src, pos), self.transit(mp, pos))
        lat = self.read_latency + t_in + self.sxm_lat[fn.latency] + self.transit(dst, pos)
        acc.append(Access(dst, a["dst_off"], n, pre + lat, True, num=interval, hold=self.hold(dst), ready=self.ready(dst)))
        return Profile(busy=pre + n * interval, accesses=acc)

    def _unit_check(self, a, q):
        if a["unit"] != q or not 0 <= q < self.mxm_units:
            raise IsaError(f"MXM instruction names unit {a['unit']} but sits in the queue of unit {q} (units 0..{self.mxm_units - 1})")

    def _p_lw(self, a, fam, q):
        self._unit_check(a, q)
        reg, rows = a["src_reg"], a["rows"]
        r = self.regions[reg]
        tr = self.tile_rows_of(r.dtype)
        if not 1 <= rows <= tr:
            raise IsaError(f"LW rows {rows} not in 1..{tr}")
        if a["row0"] + rows > r.rows or a["col"] >= r.row_vectors:
            raise IsaError(f"LW reads rows {a['row0']}..{a['row0'] + rows - 1}, column {a['col']} outside region {r.name!r} ({r.rows}x{r.row_vectors})")
        # cycles per row: the unit's share of the install bandwidth, and the banks the rows rotate over
        cpr = max(Fraction(r.vector_bytes * self.mxm_units, self.install_bpc),
                  Fraction(self.hold(reg), min(r.width, r.rows)))
        pos = self.unit_pos("mxmw", q)
        arrive = self.read_latency + self.transit(reg, pos)
        acc = [Access(reg, a["row0"] * r.row_vectors + a["col"], rows, 0, False, stride=r.row_vectors,
                      num=cpr.numerator, den=cpr.denominator, hold=self.hold(reg))]
        t_last = ((rows - 1) * cpr.numerator) // cpr.denominator
        # the shadow buffer is overwritten from the first row's arrival and complete after the last's
        acc.append(Access(PSEUDO_SHADOW, 0, 1, arrive, True, ready=t_last + 1, unit=q))
        return Profile(busy=ceil(rows * cpr), accesses=acc, commit=arrive)

    def _p_iw(self, a, fam, q):
        self._unit_check(a, q)
        return Profile(busy=self.iw_cycles, accesses=[
            Access(PSEUDO_SHADOW, 0, 1, 0, False, unit=q),
            Access(PSEUDO_ACTIVE, 0, 1, 0, True, ready=self.iw_cycles, unit=q)])

    def _p_acc(self, a, fam, q):
        self._unit_check(a, q)
        if a["slot"] >= self.acc_slots:
            raise IsaError(f"ACC slot {a['slot']} not in 0..{self.acc_slots - 1}")
        reg = a["x_reg"]
        arrive = self.read_latency + self.transit(reg, self.unit_pos("mxma", q))
        acc = [Access(reg, a["x_off"], 1, 0, False, hold=self.hold(reg)),
               Access(PSEUDO_ACTIVE, 0, 1, arrive, False, unit=q)]
        if a["accumulate"]:
            acc.append(Access(PSEUDO_ACC, a["slot"], 1, arrive + self.mxm_latency, False, unit=q))
        acc.append(Access(PSEUDO_ACC, a["slot"], 1, arrive + self.mxm_latency, True, ready=1, unit=q))
        return Profile(busy=1, accesses=acc, commit=arrive)

    def _p_emit(self, a, fam, q):
        self._unit_check(a, q)
        if not 1 <= a["lanes"] <= VECTOR_LANES or a["src_lane"] + a["lanes"] > VECTOR_LANES or a["dst_lane"] + a["lanes"] > VECTOR_LANES:
            raise IsaError(f"EMIT lanes {a['src_lane']}+{a['lanes']} -> {a['dst_lane']} exceed {VECTOR_LANES} lanes")
        dst = a["dst_reg"]
        t_w = self.emit_cycles + self.transit(dst, self.unit_pos("mxma", q))
        return Profile(busy=1, accesses=[
            Access(PSEUDO_ACC, a["slot"], 1, 0, False, unit=q),
            Access(dst, a["dst_off"], 1, t_w, True, hold=self.hold(dst), ready=self.ready(dst))])

    def _mem_move_lat(self, src, dst):
        return self.read_latency + self.region_transit(src, dst)

    def _p_copy(self, a, fam, q):
        src, dst, n = a["src_reg"], a["dst_reg"], a["n"]
        if n < 1:
            raise IsaError("COPY n must be >= 1")
        interval = max(self.need_interval(src), self.need_interval(dst))
        lat = self._mem_move_lat(src, dst)
        return Profile(busy=n * interval, accesses=[
            Access(src, a["src_off"], n, 0, False, num=interval, hold=self.hold(src)),
            Access(dst, a["dst_off"], n, lat, True, num=interval, hold=self.hold(dst), ready=self.ready(dst))])

    def _packed(self, a, tab) -> tuple[int, int]:
        """(table vectors a row touches, source/destination vectors) for row-mode or packed-mode rows."""
        k = a.get("elems", 0)
        if k == 0:
            vpr = self.regions[tab].row_vectors
            return vpr, vpr
        r = self.regions[tab]
        if k > r.n_vectors * VECTOR_LANES:
            raise IsaError(f"packed rows of {k} elements exceed region {r.name!r}")
        nv = -(-k // VECTOR_LANES)
        return nv + (1 if VECTOR_LANES % k and k % VECTOR_LANES else 0), nv

    def _p_gather(self, a, fam, q):
        tab, dst, idx = a["table_reg"], a["dst_reg"], a["idx_reg"]
        vpr, ndst = self._packed(a, tab)
        interval = max(self.hold(tab), self.need_interval(dst))
        t_addr = self.read_latency + self.region_transit(idx, tab)  # the address reaches the table's slices
        lat = self.read_latency + self.region_transit(tab, dst)
        # a packed row that straddles a vector boundary: destination vector j also needs table vector j + 1
        wait = (vpr - ndst) * interval
        return Profile(busy=t_addr + vpr * interval, accesses=[
            Access(idx, a["idx_off"], 1, 0, False, hold=self.hold(idx)),
            Access(tab, 0, vpr, t_addr, False, num=interval, hold=self.hold(tab), whole=True),
            Access(dst, a["dst_off"], ndst, t_addr + wait + lat, True, num=interval, hold=self.hold(dst),
                   ready=self.ready(dst))])

    def _p_scatter(self, a, fam, q):
        tab, src, idx = a["table_reg"], a["src_reg"], a["idx_reg"]
        vpr, nsrc = self._packed(a, tab)
        interval = max(self.hold(tab), self.need_interval(src))
        t_addr = self.read_latency + self.region_transit(idx, tab)
        lat = self.read_latency + self.region_transit(src, tab)
        t0 = max(t_addr - lat, 0)
        return Profile(busy=t0 + vpr * interval, accesses=[
            Access(idx, a["idx_off"], 1, 0, False, hold=self.hold(idx)),
            Access(src, a["src_off"], nsrc, t0, False, num=interval, hold=self.hold(src)),
            Access(tab, 0, vpr, t0 + lat, True, num=interval, hold=self.hold(tab), ready=self.ready(tab), whole=True)])

    def _p_scatcol(self, a, fam, q):
        tab, src, idx, rows = a["table_reg"], a["src_reg"], a["idx_reg"], a["rows"]
        r = self.regions[tab]
        if not 1 <= rows <= r.rows:
            raise IsaError(f"SCATCOL rows {rows} not in 1..{r.rows} of region {r.name!r}")
        # element r of the source goes to row r; rows rotate over the table's banks, so as many rows are
        # written per cycle as the stripe has banks free (each write holds its bank `hold` cycles)
        per_cycle = Fraction(max(1, min(r.width, r.rows)), self.hold(tab))
        cpr = Fraction(1, 1) / per_cycle  # cycles per row
        t_addr = self.read_latency + self.region_transit(idx, tab)
        lat = self.read_latency + self.region_transit(src, tab)
        nsrc = -(-rows // VECTOR_LANES)
        t0 = max(t_addr - lat, 0)
        src_gap = max(1, int(cpr * VECTOR_LANES))
        acc = [Access(idx, a["idx_off"], 1, 0, False, hold=self.hold(idx)),
               Access(src, a["src_off"], nsrc, t0, False, num=src_gap, hold=self.hold(src)),
               Access(tab, 0, rows * r.row_vectors, t0 + lat, True, num=cpr.numerator,
                      den=cpr.denominator * r.row_vectors, hold=self.hold(tab), ready=self.ready(tab), whole=True)]
        return Profile(busy=t0 + max(1, ceil(rows * cpr)), accesses=acc)

    def _p_send(self, a, fam, q):
        src, n = a["src_reg"], a["n"]
        if n < 1 or not 0 <= a["link"] < self.links or a["link"] != q:
            raise IsaError(f"SEND on link {a['link']} from queue c2c{q}t (links 0..{self.links - 1}), n >= 1")
        cpv = self.link_cycles_per_vector(src, q)
        hop = self.topology.link_class(self.regions[src].chip, q).hop_latency_cycles
        t_port = self.read_latency + self.transit(src, self.unit_pos("c2ct", q))
        return Profile(busy=n * cpv, accesses=[
            Access(src, a["src_off"], n, 0, False, num=cpv, hold=self.hold(src))],
            send=LinkUse(a["link"], n, 0, cpv, arrive=t_port + cpv + hop))

    def _p_recv(self, a, fam, q):
        dst, n = a["dst_reg"], a["n"]
        if n < 1 or not 0 <= a["link"] < self.links or a["link"] != q:
            raise IsaError(f"RECV on link {a['link']} from queue c2c{q}r (links 0..{self.links - 1}), n >= 1")
        cpv = self.link_cycles_per_vector(dst, q)
        t_w = self.transit(dst, self.unit_pos("c2cr", q))
        return Profile(busy=n * cpv, accesses=[
            Access(dst, a["dst_off"], n, t_w, True, num=cpv, hold=self.hold(dst), ready=self.ready(dst))],
            recv=LinkUse(a["link"], n, 0, cpv))

