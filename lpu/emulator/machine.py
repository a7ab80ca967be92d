"""The emulator: loads a program into one float32 memory, checks each bucket program once, runs tokens.

    emu = Emulator(program)          # validate, lay out memory, copy the SRAM image in
    emu.write("input_ids", ids)      # host writes a symbol (rounded to its region types)
    cycles = emu.run(bucket)         # check (first time), then one token in one Numba call
    logits = emu.read("logits")      # host reads a symbol (float32)
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import mmap
import os
import time

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import isa
from isa import DTYPES, HardwareError, IsaError, Machine, Program, ProgramError, Topology, VECTOR_LANES
from isa.table import VXM_BY_NAME, SXM_BY_NAME

from . import check as C
from . import kernels as K
from .errors import EmulationError
from .layout import Layout, round_to
from .schedule import Profiler, Schedule, build_schedule

# The kernels hard-code the instruction set's numbers; fail at import if the table ever moves.
assert K.compiled_lanes() == VECTOR_LANES, "stale Numba cache: delete lpu/emulator/__pycache__"
assert {m: isa.BY_MNEMONIC[m].opcode for m in ("NOP", "SYNC", "VXM", "SXM", "LW", "IW", "ACC", "EMIT", "COPY", "GATHER",
                                               "SCATTER", "SCATCOL", "SEND", "RECV", "DESKEW")} == {
    "NOP": K.OP_NOP, "SYNC": K.OP_SYNC, "VXM": K.OP_VXM, "SXM": K.OP_SXM, "LW": K.OP_LW, "IW": K.OP_IW, "ACC": K.OP_ACC,
    "EMIT": K.OP_EMIT, "COPY": K.OP_COPY, "GATHER": K.OP_GATHER, "SCATTER": K.OP_SCATTER, "SCATCOL": K.OP_SCATCOL,
    "SEND": K.OP_SEND, "RECV": K.OP_RECV, "DESKEW": K.OP_DESKEW}
assert {n: f.code for n, f in VXM_BY_NAME.items()} == {
    "copy": K.FN_COPY, "neg": K.FN_NEG, "abs": K.FN_ABS, "relu": K.FN_RELU, "exp": K.FN_EXP, "tanh": K.FN_TANH,
    "rsqrt": K.FN_RSQRT, "recip": K.FN_RECIP, "isnan": K.FN_ISNAN, "add": K.FN_ADD, "sub": K.FN_SUB, "mul": K.FN_MUL,
    "max": K.FN_MAX, "min": K.FN_MIN, "cmpgt": K.FN_CMPGT, "cmpge": K.FN_CMPGE, "cmpeq": K.FN_CMPEQ,
    "select": K.FN_SELECT, "rsum": K.FN_RSUM, "rmax": K.FN_RMAX}
assert SXM_BY_NAME["rot"].code == K.SXM_ROT and SXM_BY_NAME["shuf"].code == K.SXM_SHUF
assert {name: code for code, (name, _) in DTYPES.items()} == {"fp32": K.DT_FP32, "fp16": K.DT_FP16, "i32": K.DT_I32,
                                                            "i8": K.DT_I8, "fp8": K.DT_FP8}
assert (isa.MODE_SEQ, isa.MODE_REP, isa.MODE_GRP, isa.MODE_IMM) == (K.MODE_SEQ, K.MODE_REP, K.MODE_GRP, K.MODE_IMM)

_IMAGE_PIECE_VECTORS = 4096  # image copy granularity: bounds the temporaries of a conversion


def default_threads() -> int:
    """Threads an Emulator uses by default: $LPU_THREADS, else the CPUs this process may run on."""
    env = os.environ.get("LPU_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise EmulationError(f"LPU_THREADS={env!r} is not a number of threads") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _release_file_pages(a: np.ndarray) -> None:
    """Drop the pages of `a` from this process's resident set if `a` is a view of a read-only file mapping
    (Program.load's np.memmap): they stay in the page cache and are read again from there if touched.
    Loading copies the image into the emulator memory, so without this the file would be resident twice."""
    base = a
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None) if base is not None else None
    if mm is None or getattr(base, "mode", "") != "r" or not hasattr(mm, "madvise") or not a.nbytes:
        return
    try:
        start = np.frombuffer(mm, dtype=np.uint8).ctypes.data  # the mapping's first byte
    except (TypeError, ValueError):
        return
    lo = a.ctypes.data - start
    hi = lo + a.nbytes
    if lo < 0 or hi > len(mm):
        return
    lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the piece only
    hi = hi // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo:
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            pass


class _Bucket:
    """A checked bucket program, ready for run_bucket (serial) or run_phases (one thread per chip group)."""

    def __init__(self, sched: Schedule, report: C.CheckReport, links: int, chips: int, layout: Layout,
                 threads: int) -> None:
        regs = layout.table
        keep = np.nonzero((sched.opcode != K.OP_SYNC) & (sched.opcode != K.OP_DESKEW))[0]
        self.sched = sched
        self.report = report
        rows = keep  # schedule index of each instruction row
        ins = np.ascontiguousarray(sched.ins[keep])
        imm = np.ascontiguousarray(sched.imm[keep], dtype=np.float32)
        ndl = max(chips * links, 1)
        cap = np.bincount(sched.sends["dlink"], weights=sched.sends["count"], minlength=ndl).astype(np.int64)
        self.link_cap = cap
        self.link_base = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
        self.linkbuf = np.zeros(max(int(cap.sum()), 1) * VECTOR_LANES, dtype=np.float32)
        self.link_head = np.zeros(ndl, dtype=np.int64)
        self.link_tail = np.zeros(ndl, dtype=np.int64)
        op = ins[:, K.C_OPCODE]
        n = ins[:, K.C_N].astype(np.int64)
        table_rv = regs[ins[:, K.C_TABLE_REG], K.R_RV] if regs.shape[0] else np.ones(len(op), np.int64)
        # scratch vectors each instruction stages its results in (kernels.exec_range)
        packed = -(-ins[:, K.C_ELEMS].astype(np.int64) // VECTOR_LANES)
        need = np.select([(op == K.OP_VXM) | (op == K.OP_SXM) | (op == K.OP_COPY) | (op == K.OP_RECV),
                          (op == K.OP_GATHER) | (op == K.OP_SCATTER),
                          op == K.OP_SCATCOL],
                         [n, np.maximum(table_rv, packed), -(-ins[:, K.C_ROWS].astype(np.int64) // VECTOR_LANES)], 1)
        self.scratch_vectors = max(1, int(need.max()) if need.size else 1)
        # every LW's tile rows, computed once: aux[i] = where LW i's rows start in `tiles`
        lw_rows = np.where(op == K.OP_LW, ins[:, K.C_ROWS].astype(np.int64), 0)
        aux = np.concatenate([[0], np.cumsum(lw_rows)[:-1]]).astype(np.int64)
        self.tiles = np.zeros(max(int(lw_rows.sum()), 1), dtype=np.int64)
        K.tile_rows(ins, regs, layout.mem_bank_base, layout.banks, aux, self.tiles)
        # parallel plan: contiguous chip groups, one per thread; RECVs wait for other groups' SENDs
        self.starts = None
        plan = _plan(ins, chips, threads) if threads > 1 and chips > 1 else None
        if plan is not None:
            order, self.starts, self.wait_grp, self.wait_row = plan
            ins, imm, aux, rows = ins[order], imm[order], aux[order], rows[order]
        self.rows, self.ins, self.imm, self.aux = rows, np.ascontiguousarray(ins), imm, np.ascontiguousarray(aux)
        groups = 1 if self.starts is None else len(self.starts) - 1
        self.groups = groups
        self.scratch = np.zeros((groups, self.scratch_vectors * VECTOR_LANES), dtype=np.float32)
        self.err = np.zeros((groups, 2), dtype=np.int64)
        self.errval = np.zeros((groups, 1), dtype=np.float64)
        self.progress = np.zeros(groups, dtype=np.int64)
        self.flag = np.zeros(1, dtype=np.int64)


def _chip_groups(ins: np.ndarray, chips: int, threads: int) -> np.ndarray:
    """Group of each chip: `threads` contiguous runs of chips of about equal work (ACCs weigh a tile)."""
    op = ins[:, K.C_OPCODE]
    work = np.where(op == K.OP_ACC, 160, np.maximum(ins[:, K.C_N].astype(np.int64), 1))
    per_chip = np.bincount(ins[:, K.C_CHIP], weights=work, minlength=chips)[:chips]
    cum = np.cumsum(per_chip) - per_chip / 2  # each chip's middle
    total = float(per_chip.sum()) or 1.0
    g = np.minimum((cum / total * threads).astype(np.int64), threads - 1)
    # contiguous and non-empty: renumber the groups that got chips
    _, g = np.unique(g, return_inverse=True)
    return g.astype(np.int64)


def _plan(ins: np.ndarray, chips: int, threads: int):
    """How kernels.run_group runs a bucket on `threads` threads, or None (fewer than two groups, or a RECV
    not fed by SENDs earlier in execution order: the serial run then reports it as it would on its own).
    Returns (order, starts, wait_grp, wait_row): rows regrouped (group g's rows, in execution order, are
    starts[g]..starts[g+1]-1 of ins[order]); per regrouped row, for a RECV fed by another group, that
    group and the regrouped row just past the last SEND it receives from (else -1, -1)."""
    gof = _chip_groups(ins, chips, min(threads, chips))
    T = int(gof.max()) + 1
    if T < 2:
        return None
    op = ins[:, K.C_OPCODE]
    grp = gof[ins[:, K.C_CHIP].astype(np.int64)]
    sent: dict[int, tuple[list, list]] = {}  # dlink -> cumulative vectors sent, row of each SEND
    head: dict[int, int] = {}
    dep = {}  # RECV row -> last SEND row it receives from (another group's)
    for i in np.nonzero((op == K.OP_SEND) | (op == K.OP_RECV))[0].tolist():
        dl, cnt = int(ins[i, K.C_DLINK]), int(ins[i, K.C_N])
        if op[i] == K.OP_SEND:
            cum, who = sent.setdefault(dl, ([], []))
            cum.append((cum[-1] if cum else 0) + cnt)
            who.append(i)
            continue
        h = head.get(dl, 0) + cnt
        head[dl] = h
        cum, who = sent.get(dl, ([], []))
        if not cum or cum[-1] < h:
            return None
        j = who[bisect.bisect_left(cum, h)]  # the SEND holding vector h-1 (earlier ones precede it)
        if grp[j] != grp[i]:
            dep[i] = j
    order = np.concatenate([np.nonzero(grp == g)[0] for g in range(T)])
    starts = np.concatenate([[0], np.cumsum(np.bincount(grp, minlength=T))]).astype(np.int64)
    new = np.empty(len(op), dtype=np.int64)
    new[order] = np.arange(len(op))
    wait_grp = np.full(len(op), -1, dtype=np.int64)
    wait_row = np.full(len(op), -1, dtype=np.int64)
    for i, j in dep.items():
        wait_grp[new[i]] = grp[j]
        wait_row[new[i]] = new[j] + 1
    return order, starts, wait_grp, wait_row


class Emulator:
    """Runs a program's bucket programs token by token on an emulated multi-chip LPU node."""

    def __init__(self, program: Program, threads: int | None = None) -> None:
        """`threads`: how many threads run a token (groups of chips in parallel); default default_threads()."""
        try:
            program.validate()
        except ProgramError as exc:
            raise EmulationError(f"invalid program: {exc}") from exc
        h = program.header
        self.program = program
        try:
            self.machine = Machine(h["hw"], program.regions)
        except IsaError as exc:
            raise EmulationError(f"invalid program: {exc}") from exc
        m = self.machine
        self.chips = int(h["chips"])
        if self.chips != m.chips:
            raise EmulationError(f"invalid program: header says {self.chips} chips, its hardware config {m.chips}")
        for q in h["queues"]:
            try:
                isa.parse_queue(q)
            except IsaError as exc:
                raise EmulationError(f"invalid program: header queues: {exc}") from exc
        self.topo = self._topology(h.get("topology"))
        self.layout = Layout(program.regions, self.chips, m.banks)
        self.units = m.mxm_units
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise EmulationError(f"threads={threads}: at least 1")
        self._profiler = Profiler(m)
        self._buckets: dict[int, _Bucket] = {}

        t = time.perf_counter()
        self._warmup()
        self.warmup_seconds = time.perf_counter() - t

        cu = self.chips * self.units
        # float64: holds fp32 values (fp16/fp32 tiles round every add to fp32) or the exact integers of
        # the int8 path's int32 accumulation (kernels._acc)
        self._acc = np.zeros((cu, m.acc_slots, VECTOR_LANES), dtype=np.float64)
        self._tile = np.zeros((K.TILE_STATE, cu), dtype=np.int64)  # MXM tile state per unit (kernels.T_*)
        self._pool = None  # worker threads for the chip groups past the first (created on first use)
        self._cells: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        # a timing-only program has no weights: its schedules can be checked (check), not run on numbers
        self.timing_only = program.timing_only
        self.memory = self.memory16 = None
        if not self.timing_only:
            self._allocate()
            self._load_image()

    def _numbers(self, what: str) -> None:
        if self.timing_only:
            name = self.program.header.get("model", {}).get("source") or self.program.header.get("source", {}).get("file")
            raise EmulationError(f"{name + ': ' if name else ''}a timing-only program (no weights) cannot {what}: "
                                 "use check() / `lpu estimate`, or compile without --timing-only")

    def _allocate(self) -> None:
        # np.zeros: pages are mapped on first touch, so rows no region of that store uses cost nothing
        self.memory = np.zeros((self.layout.vectors32, VECTOR_LANES), dtype=np.float32)
        self.memory16 = np.zeros((self.layout.vectors16, VECTOR_LANES), dtype=np.uint16)

    # ---------------------------------------------------------------- set-up
    def _topology(self, table) -> np.ndarray:
        """The header's topology table (chip, port) -> (peer chip, peer port) as an array, checked: every
        link comes back to its port, and it is the topology of the program's hardware description."""
        topo = self.machine.topology
        if table is None:
            table = topo.table()
        L = self.machine.links
        try:
            Topology.from_table(table, topo.classes[0])
            arr = np.array(table, dtype=np.int64).reshape(self.chips, L, 2)
        except HardwareError as exc:
            raise EmulationError(f"invalid program: header {exc}") from None
        except (ValueError, TypeError):
            raise EmulationError(f"invalid program: header topology is not {self.chips} chips x {L} links x (peer, link)") from None
        if arr.tolist() != topo.table():
            raise EmulationError(f"invalid program: header topology is not the {self.machine.hw.system.topology} topology "
                                 f"of its hardware description")
        return arr

    def _warmup(self) -> None:
        """Compile (or load from Numba's on-disk cache) every kernel with the argument types used later."""
        i64 = np.zeros(0, dtype=np.int64)
        one = np.zeros(1, dtype=np.int64)
        regs = np.zeros((1, len(K.REGION_COLUMNS)), dtype=np.int64)
        mem = np.zeros((1, VECTOR_LANES), dtype=np.float32)
        mem16 = np.zeros((1, VECTOR_LANES), dtype=np.uint16)
        ins = np.zeros((0, len(K.COLUMNS)), np.int32)
        f32 = np.zeros(VECTOR_LANES, np.float32)
        acc = np.zeros((1, 1, VECTOR_LANES), np.float64)
        aux = np.zeros(0, np.int64)
        tile = np.zeros((K.TILE_STATE, 1), np.int64)
        K.run_bucket(ins, aux, np.zeros(0, np.float32), mem, mem16, regs, one, 1, 1, one, acc, tile, f32, one, one, one,
                     one, f32, np.zeros(2, np.int64), np.zeros(1, np.float64))
        K.run_group(ins, aux, np.zeros(0, np.float32), 0, 0, mem, mem16, regs, one, 1, 1, one, acc, tile, f32, one, one,
                    one, one, f32, np.zeros(2, np.int64), np.zeros(1, np.float64), 0, one, one, one.copy(), one.copy())
        K.tile_rows(ins, regs, one, 1, i64, i64)
        b = np.zeros(1, dtype=np.uint32)
        K.round_f16_array(b, b.copy())
        K.load_f16_vectors(mem, i64, np.zeros(0, np.uint16))
        C._mxm_pass(i64, i64, i64, i64, i64, i64, 1, 1, np.zeros(4, np.int64))
        C._bookings(i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, regs, np.zeros(1, np.int64), 1)
        C._bank_scan(i64, i64, i64, i64, i64, i64, i64, np.zeros(4, np.int64))
        C._hazard_pass(i64, np.zeros(1, np.int64), i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64,
                       i64, i64, regs, np.zeros(1, np.int64), 1, 0, 1, 1, 1, np.zeros(9, np.int64))

    def _load_image(self) -> None:
        lay = self.layout
        for reg_id, off, data in self.program.image:
            r = self.program.regions[reg_id]
            flat = np.asarray(data).reshape(-1)  # a view of the (memory-mapped) file: no copy
            nvec = flat.size // VECTOR_LANES
            for p in range(0, nvec, _IMAGE_PIECE_VECTORS):
                q = min(p + _IMAGE_PIECE_VECTORS, nvec)
                rows = lay.rows(reg_id, np.arange(off + p, off + q))
                piece = flat[p * VECTOR_LANES:q * VECTOR_LANES]
                if lay.store[reg_id] == K.ST_F16:
                    self.memory16[rows] = piece.view(np.uint16).reshape(-1, VECTOR_LANES)
                elif r.dtype == "fp16":
                    K.load_f16_vectors(self.memory, rows, piece.view(np.uint16))
                else:  # fp32 copy; i32, i8 and fp8 (their values, exactly) -> float32
                    self.memory[rows] = piece.astype(np.float32).reshape(-1, VECTOR_LANES)
                _release_file_pages(piece)

    def reset(self) -> None:
        """Back to the state just after loading: the SRAM image, everything else zero."""
        self._numbers("be reset")
        self._allocate()
        self._acc[:] = 0
        self._load_image()

    # ---------------------------------------------------------------- host access
    def _symbol(self, name: str):
        sym = self.program.symbols.get(name)
        if sym is None:
            raise EmulationError(f"no symbol {name!r}; symbols: {', '.join(sorted(self.program.symbols)) or '(none)'}")
        return sym

    def _shard_cells(self, sh):
        """(memory rows, lanes) of a shard's elements (cached: the host reads and writes the same every token)."""
        key = (sh.region, sh.offset, sh.count)
        cells = self._cells.get(key)
        if cells is None:
            e = sh.offset + np.arange(sh.count, dtype=np.int64)
            cells = self._cells[key] = (self.layout.rows(sh.region, e // VECTOR_LANES), e % VECTOR_LANES)
        return cells

    def write(self, symbol: str, values: np.ndarray) -> None:
        """Write a symbol's flat elements into every shard that holds them, rounded to each region's type."""
        self._numbers("be written")
        sym = self._symbol(symbol)
        vals = np.asarray(values).reshape(-1)
        size = math.prod(sym.shape)
        if vals.size != size:
            raise EmulationError(f"symbol {symbol!r} has {size} elements (shape {tuple(sym.shape)}); got {vals.size}")
        for sh in sym.shards:
            rows, lanes = self._shard_cells(sh)
            v = round_to(vals[sh.start:sh.start + sh.count], self.program.regions[sh.region].dtype)
            if self.layout.store[sh.region] == K.ST_F16:
                self.memory16[rows, lanes] = v.astype(np.float16).view(np.uint16)
            else:
                self.memory[rows, lanes] = v

    def read(self, symbol: str) -> np.ndarray:
        """A symbol's flat elements (float32), gathered from its shards (the first shard holding an element wins)."""
        self._numbers("be read")
        sym = self._symbol(symbol)
        size = math.prod(sym.shape)
        out = np.zeros(size, dtype=np.float32)
        covered = np.zeros(size, dtype=bool)
        for sh in reversed(sym.shards):
            rows, lanes = self._shard_cells(sh)
            if self.layout.store[sh.region] == K.ST_F16:
                out[sh.start:sh.start + sh.count] = self.memory16[rows, lanes].view(np.float16).astype(np.float32)
            else:
                out[sh.start:sh.start + sh.count] = self.memory[rows, lanes]
            covered[sh.start:sh.start + sh.count] = True
        if not covered.all():
            raise EmulationError(f"symbol {symbol!r}: element {int(np.argmin(covered))} is in no shard")
        return out

    # ---------------------------------------------------------------- check and run
    def _bucket(self, bucket: int) -> _Bucket:
        b = self._buckets.get(bucket)
        if b is not None:
            return b
        nb = len(self.program.header["buckets"])
        if not isinstance(bucket, (int, np.integer)) or not 0 <= bucket < nb:
            raise EmulationError(f"bucket {bucket!r} does not exist; the program has buckets 0..{nb - 1}")
        t = time.perf_counter()
        sched = build_schedule(self.program, self._profiler, int(bucket), self.topo, self.machine.links)
        report = C.Checker(sched, self.layout, self.machine, self.chips, self.topo).run()
        report = dataclasses.replace(report, check_seconds=time.perf_counter() - t)
        sched.runs = None  # the access runs are only needed by the checker
        b = _Bucket(sched, report, self.machine.links, self.chips, self.layout, self.threads)
        sched.ins = sched.imm = None  # _Bucket holds the rows it runs; error messages decode from the streams
        self._buckets[int(bucket)] = b
        return b

    def schedule(self, bucket: int) -> Schedule:
        """A bucket's checked schedule: every instruction's chip, queue, stream position, issue and busy cycles
        (NOPs dropped), and its SENDs and RECVs (what traces and reports read; the access runs are gone)."""
        return self._bucket(bucket).sched

    def schedule_with_accesses(self, bucket: int) -> Schedule:
        """A bucket's schedule built afresh with its access runs (every read and write of every instruction,
        absolute cycles), for tools that follow data from instruction to instruction (lpu report); not cached."""
        self._bucket(bucket)  # checked first: a report is only made of a schedule the checker accepts
        return build_schedule(self.program, self._profiler, int(bucket), self.topo, self.machine.links)

    def check(self, bucket: int) -> C.CheckReport:
        """Check a bucket program's schedule (once; the report is cached)."""
        return self._bucket(bucket).report

    def run(self, bucket: int) -> int:
        """Execute one token of a bucket program; returns its cycles."""
        self._numbers("run")
        b = self._bucket(bucket)
        if b.starts is None:
            bad = self._run_group(b, -1)
            g = 0 if bad >= 0 else -1
        else:
            b.link_head[:] = 0
            b.link_tail[:] = 0
            self._tile[K.T_SH_ROWS] = -1
            self._tile[K.T_AC_ROWS] = -1
            b.progress[:] = b.starts[:-1]
            b.flag[:] = 0
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="lpu-emulator")
            futures = [self._pool.submit(self._run_worker, b, g) for g in range(1, b.groups)]
            try:
                bads = [self._run_group(b, 0)]
            except BaseException:
                b.flag[0] = 1  # let the workers stop waiting for group 0
                raise
            finally:
                bads_rest = [f.result() for f in futures]  # never leave a worker running on this bucket
            bads += bads_rest
            failed = [g for g, x in enumerate(bads) if x >= 0]
            g = failed[0] if failed else -1
            bad = bads[g] if failed else -1
        if g >= 0:
            raise self._runtime_error(b, int(bad), int(b.err[g, 0]), float(b.errval[g, 0]))
        return b.report.cycles

    def _run_worker(self, b: _Bucket, g: int) -> int:
        try:
            return self._run_group(b, g)
        except BaseException:
            b.flag[0] = 1  # the other groups may be waiting for this one
            raise

    def _run_group(self, b: _Bucket, g: int) -> int:
        """Run group g's rows (g = -1: the whole bucket, serially); returns the failing row or a negative."""
        lay = self.layout
        args = (self.memory, self.memory16, lay.table, lay.mem_bank_base, lay.banks, self.units, b.tiles, self._acc,
                self._tile, b.linkbuf, b.link_base, b.link_cap, b.link_head, b.link_tail)
        if g < 0:
            return K.run_bucket(b.ins, b.aux, b.imm, *args, b.scratch[0], b.err[0], b.errval[0])
        return K.run_group(b.ins, b.aux, b.imm, b.starts[g], b.starts[g + 1], *args, b.scratch[g], b.err[g], b.errval[g],
                           g, b.wait_grp, b.wait_row, b.progress, b.flag)

    def _runtime_error(self, b: _Bucket, row: int, code: int, value: float) -> EmulationError:
        s = b.sched
        i = int(b.rows[row])
        ins = b.ins[row]
        reg = lambda col: self.program.regions[int(ins[col])]
        if code == K.E_SCATTER_ROW:
            what = f"SCATTER row {value:g} is outside table {reg(K.C_TABLE_REG).name!r} (rows 0..{reg(K.C_TABLE_REG).rows - 1})"
        elif code == K.E_RECV_EMPTY:
            what = f"RECV of {int(ins[K.C_N])} vectors from a link holding {int(value)}"
        elif code in (K.E_GATHER_INDEX, K.E_SCATTER_INDEX, K.E_SCATCOL_INDEX):
            what = (f"index {value!r} (region {reg(K.C_IDX_REG).name!r} vector {int(ins[K.C_IDX_OFF])} lane "
                    f"{int(ins[K.C_IDX_LANE])}) is not an integer")
        elif code == K.E_SCATCOL_COL:
            t = reg(K.C_TABLE_REG)
            c0 = int(ins[K.C_COL0])
            what = (f"SCATCOL column {value:g} is outside table {t.name!r} (columns {c0}..{c0 + t.row_vectors * VECTOR_LANES - 1})")
        elif code == K.E_SHUF_MAP:
            what = f"shuf map names element {value:g}, outside the window of {int(ins[K.C_WINDOW]) * VECTOR_LANES} elements"
        elif code == K.E_LINK_FULL:
            what = "SEND overflows the link buffer (more vectors sent than the checker counted)"
        elif code == K.E_NO_TILE:
            what = "no tile loaded / installed on this MXM unit"
        else:
            what = f"unknown opcode {int(ins[K.C_OPCODE]):#04x}"
        exc = s.error(i, what, "runtime")
        return exc
