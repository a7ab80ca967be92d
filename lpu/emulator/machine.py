"""The emulator: loads a program into one float32 memory, checks each bucket program once, runs tokens.

    emu = Emulator(program)          # validate, lay out memory, copy the SRAM image in
    emu.write("input_ids", ids)      # host writes a symbol (rounded to its region types)
    cycles = emu.run(bucket)         # check (first time), then one token in one Numba call
    logits = emu.read("logits")      # host reads a symbol (float32)
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

import isa
from isa import DTYPES, IsaError, Machine, Program, ProgramError, VECTOR_LANES
from isa.table import VXM_BY_NAME, SXM_BY_NAME

from . import check as C
from . import kernels as K
from .errors import EmulationError
from .layout import Layout, round_to
from .schedule import Profiler, Schedule, build_schedule

# The kernels hard-code the instruction set's numbers; fail at import if the table ever moves.
assert K.LANES == VECTOR_LANES
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
assert {name: code for code, (name, _) in DTYPES.items()} == {"fp32": K.DT_FP32, "fp16": K.DT_FP16, "i32": K.DT_I32}
assert (isa.MODE_SEQ, isa.MODE_REP, isa.MODE_GRP, isa.MODE_IMM) == (K.MODE_SEQ, K.MODE_REP, K.MODE_GRP, K.MODE_IMM)

_IMAGE_PIECE_VECTORS = 4096  # image copy granularity: bounds the temporaries of a conversion


class _Bucket:
    """A checked bucket program, ready for run_bucket."""

    def __init__(self, sched: Schedule, report: C.CheckReport, links: int, chips: int, regs: np.ndarray) -> None:
        keep = np.nonzero((sched.opcode != K.OP_SYNC) & (sched.opcode != K.OP_DESKEW))[0]
        self.sched = sched
        self.report = report
        self.rows = keep  # schedule index of each instruction row
        self.ins = np.ascontiguousarray(sched.ins[keep])
        self.imm = np.ascontiguousarray(sched.imm[keep], dtype=np.float32)
        ndl = max(chips * links, 1)
        cap = np.bincount(sched.sends["dlink"], weights=sched.sends["count"], minlength=ndl).astype(np.int64)
        self.link_cap = cap
        self.link_base = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
        self.linkbuf = np.zeros((max(int(cap.sum()), 1), VECTOR_LANES), dtype=np.float32)
        self.link_head = np.zeros(ndl, dtype=np.int64)
        self.link_tail = np.zeros(ndl, dtype=np.int64)
        op = self.ins[:, K.C_OPCODE]
        n = self.ins[:, K.C_N].astype(np.int64)
        table_rv = regs[self.ins[:, K.C_TABLE_REG], K.R_RV] if regs.shape[0] else np.ones(len(op), np.int64)
        # scratch vectors each instruction stages its results in (kernels.run_bucket)
        packed = -(-self.ins[:, K.C_ELEMS].astype(np.int64) // VECTOR_LANES)
        need = np.select([(op == K.OP_VXM) | (op == K.OP_SXM) | (op == K.OP_COPY) | (op == K.OP_RECV),
                          (op == K.OP_GATHER) | (op == K.OP_SCATTER),
                          op == K.OP_SCATCOL],
                         [n, np.maximum(table_rv, packed), -(-self.ins[:, K.C_ROWS].astype(np.int64) // VECTOR_LANES)], 1)
        need = [1, int(need.max()) if need.size else 1]
        self.scratch_vectors = max(need)


class Emulator:
    """Runs a program's bucket programs token by token on an emulated multi-chip LPU node."""

    def __init__(self, program: Program) -> None:
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
        self.topo = self._topology(h.get("topology", isa.topology(h["hw"])))
        self.layout = Layout(program.regions, self.chips, m.banks)
        self.units = m.mxm_units
        self._profiler = Profiler(m)
        self._buckets: dict[int, _Bucket] = {}

        t = time.perf_counter()
        self._warmup()
        self.warmup_seconds = time.perf_counter() - t

        cu = self.chips * self.units
        self.memory = np.zeros((self.layout.vectors, VECTOR_LANES), dtype=np.float32)
        self._bits = self.memory.view(np.uint32)
        self._acc = np.zeros((cu, m.acc_slots, VECTOR_LANES), dtype=np.float32)
        self._shadow = np.zeros((cu, m.tile_rows), dtype=np.int64)
        self._active = np.zeros((cu, m.tile_rows), dtype=np.int64)
        self._shadow_rows = np.full(cu, -1, dtype=np.int64)
        self._active_rows = np.full(cu, -1, dtype=np.int64)
        self._scratch = np.zeros(VECTOR_LANES, dtype=np.float32)
        self._load_image()

    # ---------------------------------------------------------------- set-up
    def _topology(self, topo) -> np.ndarray:
        L = self.machine.links
        try:
            arr = np.array(topo, dtype=np.int64).reshape(self.chips, L, 2)
        except (ValueError, TypeError):
            raise EmulationError(f"invalid program: header topology is not {self.chips} chips x {L} links x (peer, link)") from None
        for c in range(self.chips):
            for l in range(L):
                p, pl = (int(x) for x in arr[c, l])
                if not (0 <= p < self.chips and p != c and 0 <= pl < L and tuple(arr[p, pl]) == (c, l)):
                    raise EmulationError(f"invalid program: header topology: link {l} of chip {c} goes to chip {p} link "
                                         f"{pl}, which is not a link back to it")
        return arr

    def _warmup(self) -> None:
        """Compile (or load from Numba's on-disk cache) every kernel with the argument types used later."""
        i64 = np.zeros(0, dtype=np.int64)
        regs = np.zeros((1, len(K.REGION_COLUMNS)), dtype=np.int64)
        mem = np.zeros((1, VECTOR_LANES), dtype=np.float32)
        K.run_bucket(np.zeros((0, len(K.COLUMNS)), np.int32), np.zeros(0, np.float32), mem, mem.view(np.uint32), regs,
                     np.zeros(1, np.int64), 1, 1, np.zeros((1, 1, VECTOR_LANES), np.float32), np.zeros((1, 1), np.int64),
                     np.zeros(1, np.int64), np.zeros((1, 1), np.int64), np.zeros(1, np.int64), mem.copy(),
                     np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                     np.zeros(1, np.float32), np.zeros(1, np.uint32), np.zeros(2, np.int64), np.zeros(1, np.float64))
        b = np.zeros(1, dtype=np.uint32)
        K.round_f16_array(b, b.copy())
        K.load_f16_vectors(mem.view(np.uint32), i64, np.zeros(0, np.uint16))
        C._mxm_pass(i64, i64, i64, i64, i64, i64, 1, 1, np.zeros(4, np.int64))
        C._bookings(i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, regs, np.zeros(1, np.int64), 1)
        C._bank_scan(i64, i64, i64, i64, i64, i64, i64, np.zeros(4, np.int64))
        C._hazard_pass(np.zeros(1, np.int64), i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64,
                       i64, i64, regs, np.zeros(1, np.int64), 1, 1, 1, 1, np.zeros(9, np.int64))

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
                if r.dtype == "fp16":
                    K.load_f16_vectors(self._bits, rows, piece.view(np.uint16))
                else:
                    self.memory[rows] = piece.reshape(-1, VECTOR_LANES)  # fp32 copy, i32 -> float32

    def reset(self) -> None:
        """Back to the state just after loading: the SRAM image, everything else zero."""
        self.memory[:] = 0
        self._acc[:] = 0
        self._load_image()

    # ---------------------------------------------------------------- host access
    def _symbol(self, name: str):
        sym = self.program.symbols.get(name)
        if sym is None:
            raise EmulationError(f"no symbol {name!r}; symbols: {', '.join(sorted(self.program.symbols)) or '(none)'}")
        return sym

    def _shard_cells(self, sh):
        e = sh.offset + np.arange(sh.count, dtype=np.int64)
        return self.layout.rows(sh.region, e // VECTOR_LANES), e % VECTOR_LANES

    def write(self, symbol: str, values: np.ndarray) -> None:
        """Write a symbol's flat elements into every shard that holds them, rounded to each region's type."""
        sym = self._symbol(symbol)
        vals = np.asarray(values).reshape(-1)
        size = math.prod(sym.shape)
        if vals.size != size:
            raise EmulationError(f"symbol {symbol!r} has {size} elements (shape {tuple(sym.shape)}); got {vals.size}")
        for sh in sym.shards:
            rows, lanes = self._shard_cells(sh)
            self.memory[rows, lanes] = round_to(vals[sh.start:sh.start + sh.count], self.program.regions[sh.region].dtype)

    def read(self, symbol: str) -> np.ndarray:
        """A symbol's flat elements (float32), gathered from its shards (the first shard holding an element wins)."""
        sym = self._symbol(symbol)
        size = math.prod(sym.shape)
        out = np.zeros(size, dtype=np.float32)
        covered = np.zeros(size, dtype=bool)
        for sh in reversed(sym.shards):
            rows, lanes = self._shard_cells(sh)
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
        b = _Bucket(sched, report, self.machine.links, self.chips, self.layout.table)
        sched.ins = sched.imm = None  # _Bucket holds the rows it runs; error messages decode from the streams
        if b.scratch_vectors * VECTOR_LANES > self._scratch.size:
            self._scratch = np.zeros(b.scratch_vectors * VECTOR_LANES, dtype=np.float32)
        self._buckets[int(bucket)] = b
        return b

    def check(self, bucket: int) -> C.CheckReport:
        """Check a bucket program's schedule (once; the report is cached)."""
        return self._bucket(bucket).report

    def run(self, bucket: int) -> int:
        """Execute one token of a bucket program; returns its cycles."""
        b = self._bucket(bucket)
        self._shadow_rows[:] = -1
        self._active_rows[:] = -1
        err = np.zeros(2, dtype=np.int64)
        errval = np.zeros(1, dtype=np.float64)
        bad = K.run_bucket(b.ins, b.imm, self.memory, self._bits, self.layout.table, self.layout.bank_base,
                           self.layout.banks, self.units, self._acc, self._shadow, self._shadow_rows, self._active,
                           self._active_rows, b.linkbuf, b.link_base, b.link_cap, b.link_head, b.link_tail,
                           self._scratch, self._scratch.view(np.uint32), err, errval)
        if bad >= 0:
            raise self._runtime_error(b, int(bad), int(err[0]), float(errval[0]))
        return b.report.cycles

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
            what = f"SCATCOL column {value:g} is outside table {t.name!r} (columns 0..{t.row_vectors * VECTOR_LANES - 1})"
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
