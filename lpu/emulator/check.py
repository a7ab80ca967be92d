"""The schedule checker: proves that running each instruction's full effect at once, in execution order,
gives what the timed hardware would compute. Run once per bucket program, before its first execution.

From the timing profiles of isa.timing (see schedule.py) it rejects, naming chip, cycle, queue,
instruction and the other party:
1. structure (a region the stream's chip does not have is a decode error: words name regions chip-locally):
   an access outside its region, an i32 index/map
   region of another type, a GATHER with more rows than its table, an EMIT slot past the accumulators,
   ACC with x_lane + tile rows > VECTOR_LANES, IW/ACC with no tile, MXM state read before it is written;
2. links: SEND vectors matched in order to RECV vectors on each directed link; a RECV that stores a
   vector before it arrives, receives nothing, or a sent vector never received; vector size mismatch;
3. banks: one access per bank per cycle (an access holds its bank `hold` cycles; whole-region accesses
   book every bank of the stripe over their window);
4. hazards per location (SRAM vector or MXM pseudo-location), in execution order: RAW, WAR, WAW.
   An LW's tile rows count as read until the last ACC that uses the tile (the executor reads tiles from
   SRAM at ACC time), and no write may execute between the LW and that ACC.

Flat numpy arrays in, Numba loops over runs and vectors; no Python per vector.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from isa import VECTOR_LANES, Machine
from isa.timing import PSEUDO_ACC, PSEUDO_ACTIVE, PSEUDO_SHADOW

from . import kernels as K
from .layout import Layout
from .schedule import PSEUDO_NAMES, Schedule

_NEVER = -(1 << 62)

# checker verdict codes (out[0])
H_OK, H_RAW, H_WAR, H_WAW, H_PIN, H_UNINIT = 0, 1, 2, 3, 4, 5
M_OK, M_IW_EMPTY, M_ACC_EMPTY, M_XLANE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the checker learned about a bucket program."""

    bucket: int
    cycles: int  # max over every instruction of issue + busy, and over every write of its readable cycle
    instructions: int  # NOPs included
    busy_by_family: dict  # family -> busy cycles of its non-NOP instructions, summed over chips and queues
    queues_by_family: dict  # family -> queues per chip
    chips: int
    check_seconds: float

    def utilisation(self, family: str) -> float:
        """Busy fraction of the family's queues over the program's cycles (all chips)."""
        q = self.queues_by_family.get(family, 0) * self.chips
        return self.busy_by_family.get(family, 0) / (q * self.cycles) if q and self.cycles else 0.0


# ----------------------------------------------------------------------------- numba loops
# Region.locate, repeated here (not imported from kernels) so that Numba's on-disk cache of this file
# is invalidated whenever the code it runs changes.
@njit(cache=True, inline="always")
def _vec_row(regs, bank_base, nbanks, r, v):
    rv = np.int64(regs[r, 4])
    row = v // rv
    j = v - row * rv
    w = np.int64(regs[r, 2])
    q = row // w
    return bank_base[np.int64(regs[r, 0]) * nbanks + regs[r, 1] + (row - q * w)] + regs[r, 3] + q * rv + j


@njit(cache=True, inline="always")
def _run_vector(off, stride, mode, m, k):
    if mode == 1:
        return off + stride * (k % m)
    if mode == 2:
        return off + stride * (k // m)
    return off + stride * k


@njit(cache=True)
def _mxm_pass(opcode, chip, unit, x_lane, rows, t_active, chips, units, out):
    """Which LW's tile each ACC multiplies by; last ACC (order index, active-read cycle) of each LW."""
    n = opcode.size
    shadow = np.full(chips * units, -1, dtype=np.int64)
    active = np.full(chips * units, -1, dtype=np.int64)
    last_acc = np.full(n, -1, dtype=np.int64)
    last_acc_t = np.full(n, _NEVER, dtype=np.int64)
    for i in range(n):
        op = opcode[i]
        if op != 0x30 and op != 0x31 and op != 0x32:
            continue
        cu = chip[i] * units + unit[i]
        if op == 0x30:
            shadow[cu] = i
        elif op == 0x31:
            if shadow[cu] < 0:
                out[0] = M_IW_EMPTY
                out[1] = i
                return last_acc, last_acc_t
            active[cu] = shadow[cu]
        else:
            lw = active[cu]
            if lw < 0:
                out[0] = M_ACC_EMPTY
                out[1] = i
                return last_acc, last_acc_t
            if x_lane[i] + rows[lw] > K.LANES:
                out[0] = M_XLANE
                out[1] = i
                out[2] = lw
                return last_acc, last_acc_t
            last_acc[lw] = i
            if t_active[i] > last_acc_t[lw]:
                last_acc_t[lw] = t_active[i]
    return last_acc, last_acc_t


@njit(cache=True)
def _bookings(r_region, r_off, r_count, r_t0, r_write, r_stride, r_mode, r_m, r_num, r_den, r_hold, r_whole, r_instr,
              regs, bank_base, nbanks):
    """Every bank booking [start, end) of every SRAM access; whole-region accesses book the stripe."""
    nr = r_region.size
    total = 0
    for ri in range(nr):
        reg = r_region[ri]
        if reg < 0:
            continue
        if r_whole[ri]:
            total += min(regs[reg, 2], regs[reg, 5])
        else:
            total += r_count[ri]
    bank = np.empty(total, dtype=np.int64)
    start = np.empty(total, dtype=np.int64)
    end = np.empty(total, dtype=np.int64)
    instr = np.empty(total, dtype=np.int64)
    loc = np.empty(total, dtype=np.int64)
    write = np.empty(total, dtype=np.int64)
    j = 0
    for ri in range(nr):
        reg = r_region[ri]
        if reg < 0:
            continue
        cb = regs[reg, 0] * nbanks + regs[reg, 1]
        if r_whole[ri]:
            last = r_t0[ri] + ((r_count[ri] - 1) * r_num[ri]) // r_den[ri]
            for b in range(min(regs[reg, 2], regs[reg, 5])):
                bank[j] = cb + b
                start[j] = r_t0[ri]
                end[j] = last + r_hold[ri]
                instr[j] = r_instr[ri]
                loc[j] = -1 - reg
                write[j] = r_write[ri]
                j += 1
        else:
            for k in range(r_count[ri]):
                v = _run_vector(r_off[ri], r_stride[ri], r_mode[ri], r_m[ri], k)
                t = r_t0[ri] + (k * r_num[ri]) // r_den[ri]
                rv = regs[reg, 4]
                w = regs[reg, 2]
                bank[j] = cb + (v // rv) % w
                start[j] = t
                end[j] = t + r_hold[ri]
                instr[j] = r_instr[ri]
                loc[j] = _vec_row(regs, bank_base, nbanks, reg, v)
                write[j] = r_write[ri]
                j += 1
    return bank, start, end, instr, loc, write


@njit(cache=True)
def _bank_scan(order, bank, start, end, instr, loc, write, out):
    """Overlapping bookings of one bank; reports the conflict that starts earliest."""
    cur = -1
    max_end = _NEVER
    owner = -1
    found = False
    for jj in range(order.size):
        j = order[jj]
        if bank[j] != cur:
            cur = bank[j]
            max_end = _NEVER
            owner = -1
        if owner >= 0 and start[j] < max_end:
            o = owner
            same = (instr[o] == instr[j] and loc[o] == loc[j] and start[o] == start[j] and end[o] == end[j]
                    and write[o] == 0 and write[j] == 0 and loc[j] >= 0)
            if not same and (not found or start[j] < out[3]):
                found = True
                out[0] = 1
                out[1] = j
                out[2] = o
                out[3] = start[j]
        if end[j] > max_end:
            max_end = end[j]
            owner = j


@njit(cache=True)
def _hazard_pass(idx, run_start, r_region, r_off, r_count, r_t0, r_write, r_stride, r_mode, r_m, r_num, r_den, r_ready,
                 r_whole, r_unit, opcode, last_acc, last_acc_t, regs, bank_base, nbanks, row0, nrows, units, slots,
                 out):
    """RAW / WAR / WAW per location, over one chip's instructions `idx` in execution order; each
    instruction's reads come before its writes. Locations are the chip's: its physical rows
    row0..row0+nrows-1 as 0..nrows-1, then its MXM units' pseudo-locations (out[3] is such a location)."""
    nloc = nrows + units * (2 + slots)
    lw_ready = np.full(nloc, _NEVER, dtype=np.int64)
    lw_time = np.full(nloc, _NEVER, dtype=np.int64)
    lw_instr = np.full(nloc, -1, dtype=np.int64)
    lr_time = np.full(nloc, _NEVER, dtype=np.int64)
    lr_instr = np.full(nloc, -1, dtype=np.int64)
    pin_until = np.full(nloc, -1, dtype=np.int64)
    pin_by = np.full(nloc, -1, dtype=np.int64)
    own_t = np.full(nloc, _NEVER, dtype=np.int64)
    own_i = np.full(nloc, -1, dtype=np.int64)
    for ii in range(idx.size):
        i = idx[ii]
        is_lw = opcode[i] == 0x30 and last_acc[i] >= 0
        # phase 0: reads (RAW against earlier writes); 1: writes (WAR, tile pins, WAW); 2: reads join the
        # read record. A write may share its cycle with the instruction's own read (read-modify-write of an
        # accumulator), but not precede it; another instruction's read must be strictly before the write.
        for phase in range(3):
            for ri in range(run_start[i], run_start[i + 1]):
                if (r_write[ri] == 1) != (phase == 1):
                    continue
                reg = r_region[ri]
                cnt = r_count[ri]
                lo = 0
                if reg < 0:
                    base = nrows + r_unit[ri] * (2 + slots)
                    if reg == -1:
                        lo = base
                    elif reg == -2:
                        lo = base + 1
                    else:
                        lo = base + 2 + r_off[ri]
                    nv = 1
                elif r_whole[ri]:
                    nv = regs[reg, 7]
                else:
                    nv = cnt
                t_first = r_t0[ri]
                t_last = r_t0[ri] + ((cnt - 1) * r_num[ri]) // r_den[ri]
                for k in range(nv):
                    if reg < 0:
                        L = lo
                        tf = t_first
                        tl = t_first
                    elif r_whole[ri]:
                        L = _vec_row(regs, bank_base, nbanks, reg, k) - row0
                        tf = t_first
                        tl = t_last
                    else:
                        L = _vec_row(regs, bank_base, nbanks, reg, _run_vector(r_off[ri], r_stride[ri], r_mode[ri], r_m[ri], k)) - row0
                        tf = r_t0[ri] + (k * r_num[ri]) // r_den[ri]
                        tl = tf
                    if phase == 0:
                        if lw_instr[L] < 0:
                            if L >= nrows:
                                out[0] = H_UNINIT
                                out[1] = i
                                out[2] = -1
                                out[3] = L
                                out[4] = tf
                                out[7] = ri
                                return
                        elif tf < lw_ready[L]:
                            out[0] = H_RAW
                            out[1] = i
                            out[2] = lw_instr[L]
                            out[3] = L
                            out[4] = tf
                            out[5] = lw_time[L]
                            out[6] = lw_ready[L]
                            out[7] = ri
                            out[8] = k
                            return
                        if own_i[L] != i or tl > own_t[L]:
                            own_i[L] = i
                            own_t[L] = tl
                    elif phase == 2:
                        ext = tl
                        if is_lw and reg >= 0:
                            if last_acc_t[i] > ext:
                                ext = last_acc_t[i]
                            if last_acc[i] > pin_until[L]:
                                pin_until[L] = last_acc[i]
                                pin_by[L] = i
                        if lr_instr[L] < 0 or ext > lr_time[L]:
                            lr_time[L] = ext
                            lr_instr[L] = i
                    else:
                        if (lr_instr[L] >= 0 and tf <= lr_time[L]) or (own_i[L] == i and tf < own_t[L]):
                            out[0] = H_WAR
                            out[1] = i
                            if own_i[L] == i and tf < own_t[L]:
                                out[2] = i
                                out[5] = own_t[L]
                            else:
                                out[2] = lr_instr[L]
                                out[5] = lr_time[L]
                            out[3] = L
                            out[4] = tf
                            out[7] = ri
                            out[8] = k
                            return
                        if pin_until[L] > i:
                            out[0] = H_PIN
                            out[1] = i
                            out[2] = pin_by[L]
                            out[3] = L
                            out[4] = tf
                            out[5] = pin_until[L]
                            out[7] = ri
                            out[8] = k
                            return
                        if lw_instr[L] >= 0 and tf + r_ready[ri] <= lw_ready[L]:
                            out[0] = H_WAW
                            out[1] = i
                            out[2] = lw_instr[L]
                            out[3] = L
                            out[4] = tf
                            out[5] = lw_time[L]
                            out[6] = lw_ready[L]
                            out[7] = ri
                            out[8] = k
                            return
                        lw_ready[L] = tl + r_ready[ri]
                        lw_time[L] = tf
                        lw_instr[L] = i


# ----------------------------------------------------------------------------- the checker
class Checker:
    """Checks one bucket's Schedule against a Layout and the timing Machine."""

    def __init__(self, sched: Schedule, layout: Layout, machine: Machine, chips: int, topo) -> None:
        self.s = sched
        self.topo = topo
        self.layout = layout
        self.m = machine
        self.chips = chips
        self.regions = layout.regions

    def run(self) -> CheckReport:
        t = time.perf_counter()
        self.structure()
        last_acc, last_acc_t = self.mxm()
        self.links()
        self.banks()
        self.hazards(last_acc, last_acc_t)
        s = self.s
        r = s.runs
        cycles = s.end_cycle
        w = r["write"] == 1
        if w.any():
            last = r["t0"][w] + ((r["count"][w] - 1) * r["num"][w]) // r["den"][w] + r["ready"][w]
            cycles = max(cycles, int(last.max()))
        return CheckReport(s.bucket, int(cycles), s.instructions, dict(s.busy_by_family), dict(s.queues_by_family),
                           self.chips, time.perf_counter() - t)

    # ---------------------------------------------------------------- 1. structure
    def structure(self) -> None:
        s, r = self.s, self.s.runs
        regs = self.layout.table
        first = (s.n, "", None)

        def note(i: int, msg: str, other=None):
            nonlocal first
            if i < first[0]:
                first = (i, msg, other)

        sram = np.nonzero(r["region"] >= 0)[0]
        reg = r["region"][sram]
        # highest vector index of each run (runs are monotone; rep runs cover off..off+count-1)
        off, cnt, stride, mode, m = (r[x][sram] for x in ("off", "count", "stride", "mode", "m"))
        idx = np.where(mode == 2, (cnt - 1) // np.maximum(m, 1), cnt - 1)
        vmax = np.where(r["whole"][sram] == 1, 0, off + stride * idx)
        bad = np.nonzero(vmax >= regs[reg, K.R_NVEC])[0]
        if bad.size:
            k = sram[bad[0]]
            g = self.regions[int(r["region"][k])]
            note(int(r["instr"][k]), f"{'writes' if r['write'][k] else 'reads'} vectors {int(r['off'][k])}.."
                 f"{int(vmax[bad[0]])} of region {g.name!r}, which has vectors 0..{g.n_vectors - 1}")
        acc = np.nonzero((r["region"] == PSEUDO_ACC) & (r["off"] >= self.m.acc_slots))[0]
        if acc.size:
            note(int(r["instr"][acc[0]]), f"accumulator slot {int(r['off'][acc[0]])} not in 0..{self.m.acc_slots - 1}")
        op = s.opcode
        i32 = K.DT_I32

        def need_i32(mask, col, what):
            ii = np.nonzero(mask)[0]
            if ii.size:
                rid = s.ins[ii, col]
                badr = np.nonzero(regs[rid, K.R_DTYPE] != i32)[0]
                if badr.size:
                    i = int(ii[badr[0]])
                    g = self.regions[int(rid[badr[0]])]
                    note(i, f"{what} region {g.name!r} is {g.dtype}; it must be i32")

        need_i32((op == K.OP_GATHER) | (op == K.OP_SCATTER) | (op == K.OP_SCATCOL), K.C_IDX_REG, "index")
        need_i32((op == K.OP_SXM) & (s.ins[:, K.C_FN] == K.SXM_SHUF), K.C_MAP_REG, "map")
        ii = np.nonzero(((op == K.OP_GATHER) | (op == K.OP_SCATTER) | (op == K.OP_SCATCOL))
                        & (s.ins[:, K.C_IDX_LANE] >= VECTOR_LANES))[0]
        if ii.size:
            note(int(ii[0]), f"idx_lane {int(s.ins[ii[0], K.C_IDX_LANE])} is not a lane (0..{VECTOR_LANES - 1})")
        ii = np.nonzero(op == K.OP_LW)[0]  # (the template profiles skip Machine.profile's own range check)
        if ii.size:
            badc = np.nonzero(s.ins[ii, K.C_COL] >= regs[s.ins[ii, K.C_SRC_REG], K.R_RV])[0]
            if badc.size:
                i = int(ii[badc[0]])
                g = self.regions[int(s.ins[i, K.C_SRC_REG])]
                note(i, f"LW column {int(s.ins[i, K.C_COL])} is outside region {g.name!r} (columns 0..{g.row_vectors - 1})")
        ii = np.nonzero(op == K.OP_GATHER)[0]
        if ii.size:
            trows = regs[s.ins[ii, K.C_TABLE_REG], K.R_ROWS]
            k = s.ins[ii, K.C_ELEMS].astype(np.int64)
            packed = regs[s.ins[ii, K.C_TABLE_REG], K.R_NVEC].astype(np.int64) * K.LANES // np.maximum(k, 1)
            trows = np.where(k > 0, packed, trows)  # packed rows: as many as fit the region's elements
            badg = np.nonzero(s.ins[ii, K.C_ROWS] > trows)[0]
            if badg.size:
                i = int(ii[badg[0]])
                g = self.regions[int(s.ins[i, K.C_TABLE_REG])]
                note(i, f"GATHER rows {int(s.ins[i, K.C_ROWS])} exceeds the {int(trows[badg[0]])} rows of table {g.name!r}")
        if first[0] < s.n:
            raise s.error(first[0], first[1], "structure", first[2])

    # ---------------------------------------------------------------- MXM tiles
    def mxm(self):
        s, r = self.s, self.s.runs
        t_active = np.full(s.n, _NEVER, dtype=np.int64)
        sel = (r["region"] == PSEUDO_ACTIVE) & (r["write"] == 0)
        t_active[r["instr"][sel]] = r["t0"][sel]
        out = np.zeros(4, dtype=np.int64)
        last_acc, last_acc_t = _mxm_pass(s.opcode, s.chip, s.ins[:, K.C_UNIT].astype(np.int64),
                                         s.ins[:, K.C_X_LANE].astype(np.int64), s.ins[:, K.C_ROWS].astype(np.int64),
                                         t_active, self.chips, self.m.mxm_units, out)
        code, i = int(out[0]), int(out[1])
        if code == M_IW_EMPTY:
            raise s.error(i, "installs the shadow tile, but no LW loaded one earlier in execution order", "structure")
        if code == M_ACC_EMPTY:
            raise s.error(i, "multiplies by the active tile, but no IW installed one earlier in execution order", "structure")
        if code == M_XLANE:
            lw = int(out[2])
            raise s.error(i, f"x_lane {int(s.ins[i, K.C_X_LANE])} + tile rows {int(s.ins[lw, K.C_ROWS])} exceeds "
                          f"{VECTOR_LANES} lanes (tile loaded by {s.where(lw)})", "structure", lw)
        return last_acc, last_acc_t

    # ---------------------------------------------------------------- 2. links
    def links(self) -> None:
        s = self.s
        S, R = s.sends, s.recvs
        r = s.runs
        L = max(self.m.links, 1)
        vbytes = np.array([g.vector_bytes for g in self.regions], dtype=np.int64)
        for dl in sorted(set(S["dlink"].tolist()) | set(R["dlink"].tolist())):
            si = np.nonzero(S["dlink"] == dl)[0]
            ri = np.nonzero(R["dlink"] == dl)[0]
            sc, rc = S["count"][si], R["count"][ri]
            ns, nr = int(sc.sum()), int(rc.sum())
            src_chip, src_link = divmod(dl, L)
            peer, plink = self.topo[src_chip][src_link]
            link = f"the link from chip {src_chip} link {src_link} to chip {peer} link {plink}"
            # per vector: owning send/recv (index into si/ri) and k within it
            s_own = np.repeat(np.arange(si.size), sc)
            s_k = np.arange(ns) - np.repeat(np.cumsum(sc) - sc, sc)
            r_own = np.repeat(np.arange(ri.size), rc)
            r_k = np.arange(nr) - np.repeat(np.cumsum(rc) - rc, rc)
            m = min(ns, nr)
            if m:
                so, sk, ro, rk = s_own[:m], s_k[:m], r_own[:m], r_k[:m]
                s_instr = S["instr"][si][so]
                r_instr = R["instr"][ri][ro]
                arrive = S["t0"][si][so] + sk * S["per_vector"][si][so] + S["arrive"][si][so]
                wrun = s.run_start[r_instr]  # a RECV's only access run is its destination write
                store = r["t0"][wrun] + (rk * r["num"][wrun]) // r["den"][wrun]
                size_bad = vbytes[S["region"][si][so]] != vbytes[R["region"][ri][ro]]
                late = store < arrive
                early = r_instr < s_instr
                for bad, kind in ((size_bad, "size"), (late, "late"), (early, "order")):
                    b = np.nonzero(bad)[0]
                    if not b.size:
                        continue
                    v = int(b[0])
                    i, o = int(r_instr[v]), int(s_instr[v])
                    if kind == "size":
                        msg = (f"receives {vbytes[R['region'][ri][ro[v]]]}-byte vectors from {link}, whose SEND sends "
                               f"{vbytes[S['region'][si][so[v]]]}-byte vectors")
                    elif kind == "late":
                        msg = (f"stores vector {int(rk[v])} (vector {v} of {link}) at cycle {int(store[v])}, before it "
                               f"arrives at cycle {int(arrive[v])} (sent by {s.where(o)})")
                    else:
                        msg = (f"receives vector {v} of {link} before the SEND that sends it issues ({s.where(o)}); "
                               f"the emulator executes in issue order")
                    raise s.error(i, msg, "link", o)
            if nr > ns:
                i = int(R["instr"][ri][r_own[ns]])
                raise s.error(i, f"receives vector {ns} of {link}, but only {ns} vectors are sent on it in this program",
                              "link")
            if ns > nr:
                i = int(S["instr"][si][s_own[nr]])
                raise s.error(i, f"sends vector {nr} of {link}, which is never received ({nr} vectors are received)",
                              "link")

    # ------------------------------------------------- banks and locations: chip by chip
    def per_chip(self):
        """(chip, its instructions in execution order, their runs): banks and locations belong to one chip,
        so the bank and hazard checks look at one chip at a time (their memory is one chip's, not the
        system's: a 576-chip program has 250 million SRAM rows in use)."""
        s = self.s
        by_chip = np.argsort(s.chip, kind="stable")
        bounds = np.searchsorted(s.chip[by_chip], np.arange(self.chips + 1))
        lay = self.layout
        for c in range(self.chips):
            idx = by_chip[bounds[c]:bounds[c + 1]]
            if not idx.size:
                continue
            nr = s.run_start[idx + 1] - s.run_start[idx]
            first = np.concatenate([[0], np.cumsum(nr)[:-1]]).astype(np.int64)
            runs = np.repeat(s.run_start[idx] - first, nr) + np.arange(int(nr.sum()), dtype=np.int64)
            row0 = int(lay.bank_base[c * lay.banks])
            nrows = int(lay.bank_rows[c * lay.banks:(c + 1) * lay.banks].sum())
            yield c, idx, runs, row0, nrows

    # ---------------------------------------------------------------- 3. banks
    def banks(self) -> None:
        s, r, lay = self.s, self.s.runs, self.layout
        best = None  # the conflict that starts earliest, over the chips (the first chip's on a tie)
        for c, _, runs, _, _ in self.per_chip():
            rr = {k: r[k][runs] for k in ("region", "off", "count", "t0", "write", "stride", "mode", "m", "num", "den",
                                          "hold", "whole", "instr")}
            got = _bookings(rr["region"], rr["off"], rr["count"], rr["t0"], rr["write"], rr["stride"], rr["mode"],
                            rr["m"], rr["num"], rr["den"], rr["hold"], rr["whole"], rr["instr"], lay.table, lay.bank_base,
                            lay.banks)
            bank, start, _, instr, _, _ = got
            if bank.size == 0:
                continue
            order = np.lexsort((instr, start, bank))
            out = np.zeros(4, dtype=np.int64)
            _bank_scan(order, *got, out)
            if out[0] and (best is None or out[3] < best[0][3]):
                best = (out, got)
        if best is None:
            return
        out, (bank, start, end, instr, loc, write) = best
        j, o = int(out[1]), int(out[2])
        chip, b = divmod(int(bank[j]), lay.banks)
        i, io = int(instr[j]), int(instr[o])
        if io > i:  # name the later instruction in execution order, the earlier as the other party
            i, io, j, o = io, i, o, j
        what = lambda x: (self.layout.describe_row(int(loc[x])) if loc[x] >= 0
                          else f"region {self.regions[-1 - int(loc[x])].name!r} (whole)")
        holder = "it already" if io == i else s.where(io)
        msg = (f"books bank {b} of chip {chip} over cycles {int(start[j])}..{int(end[j]) - 1} "
               f"({'writing' if write[j] else 'reading'} {what(j)}), but {holder} holds it over cycles "
               f"{int(start[o])}..{int(end[o]) - 1} ({'writing' if write[o] else 'reading'} {what(o)})")
        raise s.error(i, msg, "bank", io)

    # ---------------------------------------------------------------- 4. hazards
    def hazards(self, last_acc, last_acc_t) -> None:
        s, r, lay = self.s, self.s.runs, self.layout
        per = 2 + self.m.acc_slots
        out, first = np.zeros(9, dtype=np.int64), None  # the hazard earliest in execution order, over the chips
        for c, idx, _, row0, nrows in self.per_chip():
            out[:] = 0
            _hazard_pass(idx, s.run_start, r["region"], r["off"], r["count"], r["t0"], r["write"], r["stride"],
                         r["mode"], r["m"], r["num"], r["den"], r["ready"], r["whole"], r["unit"], s.opcode, last_acc,
                         last_acc_t, lay.table, lay.bank_base, lay.banks, row0, nrows, self.m.mxm_units,
                         self.m.acc_slots, out)
            if out[0] != H_OK and (first is None or out[1] < first[1]):
                first = out.copy()
                L = int(first[3])  # the chip's location as the system's
                first[3] = row0 + L if L < nrows else lay.vectors + c * self.m.mxm_units * per + (L - nrows)
        if first is None:
            return
        out = first
        code = int(out[0])
        i, o, L, t, t_o, t_o2 = (int(x) for x in out[1:7])
        loc = self.describe_loc(L, int(s.chip[i]))
        if code == H_UNINIT:
            raise s.error(i, f"reads {loc} at cycle {t}, which nothing wrote earlier in this program", "hazard")
        if code == H_RAW:
            msg = (f"RAW hazard: reads {loc} at cycle {t}, but {s.where(o)} writes it at cycle {t_o}, readable only "
                   f"from cycle {t_o2}")
        elif code == H_WAR:
            if o == i:
                msg = f"WAR hazard: writes {loc} at cycle {t}, before its own read of it at cycle {t_o}"
            else:
                msg = (f"WAR hazard: writes {loc} at cycle {t}, not after its read at cycle {t_o} by {s.where(o)}, "
                       f"which comes earlier in execution order")
        elif code == H_WAW:
            ready = t + int(r["ready"][int(out[7])])
            msg = (f"WAW hazard: writes {loc} at cycle {t}, readable from cycle {ready}, not after the earlier write by "
                   f"{s.where(o)} at cycle {t_o}, readable from cycle {t_o2}")
        else:
            msg = (f"overwrites {loc} at cycle {t}, a row of the weight tile loaded by {s.where(o)}, before "
                   f"{s.where(t_o)} uses that tile (the emulator reads tiles from SRAM when ACC executes: move this "
                   f"write after the last ACC of the tile)")
        raise s.error(i, msg, "hazard", o)

    def describe_loc(self, L: int, chip: int) -> str:
        if L < self.layout.vectors:
            return self.layout.describe_row(L)
        p = L - self.layout.vectors
        per = 2 + self.m.acc_slots
        cu, kind = divmod(p, per)
        c, u = divmod(cu, self.m.mxm_units)
        if kind == 0:
            return f"the {PSEUDO_NAMES[PSEUDO_SHADOW]} of MXM unit {u} (chip {c})"
        if kind == 1:
            return f"the {PSEUDO_NAMES[PSEUDO_ACTIVE]} of MXM unit {u} (chip {c})"
        return f"{PSEUDO_NAMES[PSEUDO_ACC]} {kind - 2} of MXM unit {u} (chip {c})"

