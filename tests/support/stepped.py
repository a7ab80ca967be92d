"""A cycle-stepped reference machine: the timed semantics of isa/timing.py, one vector access at a time.

Why it exists: the emulator executes each instruction's whole effect at once, in execution order (issue +
commit), and its schedule checker (lpu/emulator/check.py) claims that, for every program it accepts, this
equals the timed hardware. naive.py executes in that same order, so it cannot test the claim. This machine
is the timed hardware instead: it takes nothing from the checker, the schedule module or the kernels, only
the timing profiles (isa.timing.Machine.profile, the one timing model) and the instruction semantics of
isa/table.py. For a program the checker accepts, its memory must equal the executor's bit for bit.

What it models, per bucket run (all chips start at cycle 0, each queue issues back to back, `busy` apart):
- every vector an access run names is read or written at its own cycle (issue + Access.time(k));
- a read sees memory as it is at that cycle; a write's data is fixed when it is written (rounded to the
  destination region's type) and becomes visible `ready` cycles later ("lands"); lane-masked writes (EMIT,
  SCATCOL, packed SCATTER) change only their lanes, as they are at landing time;
- a write may only use data its instruction has already read (else: an acausal profile, an error);
- runtime-indexed accesses (GATHER/SCATTER/SCATCOL) touch the vectors the index names, at the cycles of
  their runs (the index vector is read at its own cycle first);
- MXM state is state: an LW takes each tile row from SRAM at the cycle it reads it; the rows stream into
  the shadow buffer, which holds the new tile from the cycle the profile makes it readable; IW copies the
  shadow tile as it is at the IW's read cycle into the active tile; ACC reads x at its cycle, the active tile
  when the activation reaches the array, and read-modify-writes its accumulator slot; EMIT reads the slot;
- SEND reads vector k at its cycle; it departs at LinkUse time k and can be stored by the peer `arrive`
  cycles later; RECV stores, at the cycle of its write k, the oldest vector of the directed link's FIFO
  (an error if that vector has not arrived, or none was sent);
- each SRAM bank serves one access at a time (an access holds its bank `hold` cycles); the one exception,
  as in the timing model, is one instruction reading the same vector twice in the same cycle (one read).

Order of events within one cycle (events are kept in a heap by (cycle, phase, sequence): stepping cycle by
cycle, skipping the empty ones):
  phase 0, LAND:  writes whose ready cycle is this one become visible;
  phase 1, READ:  reads (they see this cycle's landings; SEND vectors are read here);
  phase 2, WRITE: writes (their data may use this cycle's reads: an accumulator's read-modify-write) and
                  SEND departures / RECV stores; every write lands at a later cycle (ready >= 1).
Nothing within a phase depends on the order of its events: reads do not change memory, two landings on the
same lanes of the same location in the same cycle are an error (the result would be undefined), and link
FIFOs are touched by one SEND queue and one RECV queue each. So the result is a function of the timing alone.

Memory: a float32 array per (chip, bank), indexed by address (Region.locate), like naive.py; accumulator
slots persist across runs, as in the executor; tiles and links are empty at the start of each run.
"""
from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

import isa
from isa import VECTOR_LANES, IsaError, Machine, Program
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, SXM_BY_CODE, VXM_BY_CODE
from isa.timing import Profile

from naive import _max, round_to, sram_banks, vxm_fn

F32 = np.float32
LAND, READ, WRITE = 0, 1, 2
_BIG_INDEX = 2.0 ** 31  # an index must be an i32


class SteppedError(RuntimeError):
    """Something the timed model forbids or cannot define. `kind`: structure (an access outside its region
    or chip, a bad field), bank (two accesses hold one bank), land (two writes land on the same lanes in the
    same cycle), state (MXM state used before it exists), link (a RECV before arrival, an empty or a
    never-emptied link, a vector size mismatch), acausal (a write needs data its instruction reads later),
    runtime (an index that is not an integer or out of range)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Issued:
    """One instruction of a stream, with its issue cycle and its timing profile."""

    chip: int
    queue: str
    pos: int  # position in its stream, NOPs included
    cycle: int
    ins: isa.Instr
    prof: Profile

    def where(self) -> str:
        return f"chip {self.chip}, cycle {self.cycle}, queue {self.queue}, instruction #{self.pos} `{isa.disasm_instr(self.ins)}`"


@dataclass(slots=True)
class _Exec:
    """An instruction in flight: what it has read so far, keyed by (access run, k)."""

    at: Issued
    got: dict = field(default_factory=dict)

    def t(self, run: int, k: int) -> int:
        """Absolute cycle of vector k of access run `run`."""
        return self.at.cycle + self.at.prof.accesses[run].time(k)


@dataclass(frozen=True, slots=True)
class _Flit:
    """A vector on a link: when the peer may store it, its value and size, who sent it."""

    arrive: int
    value: np.ndarray
    vector_bytes: int
    sender: str


@dataclass(frozen=True, slots=True)
class _Booking:
    start: int
    end: int
    ex: _Exec
    addr: int
    write: bool


class SteppedMachine:
    """The timed machine; host API as NaiveMachine: write(symbol, values), run(bucket), read(symbol)."""

    def __init__(self, program: Program) -> None:
        self.p = program
        self.regions = program.regions
        self.hw = program.header["hw"]
        self.m = Machine(self.hw, program.regions)
        self.topo = program.header.get("topology") or self.m.topology.table()
        self.mem = sram_banks(self.regions)
        for reg, off, data in program.image:
            flat = np.asarray(data).astype(F32).reshape(-1, VECTOR_LANES)
            for k in range(flat.shape[0]):
                self._poke(reg, off + k, flat[k])
        self.acc: dict[tuple[int, int, int], np.ndarray] = {}  # (chip, unit, slot): persists across runs
        self.cycles = 0  # the last cycle with an event in the last run

    # ---------------------------------------------------------------- host side (between runs)
    def _cell(self, reg: int, v: int) -> tuple[np.ndarray, int]:
        r = self.regions[reg]
        if not 0 <= v < r.n_vectors:
            raise SteppedError(f"vector {v} outside region {r.name!r} (vectors 0..{r.n_vectors - 1})", "structure")
        bank, addr = r.locate(v)
        return self.mem[(r.chip, bank)], addr

    def _peek(self, reg: int, v: int) -> np.ndarray:
        arr, addr = self._cell(reg, v)
        return arr[addr].copy()

    def _poke(self, reg: int, v: int, values: np.ndarray) -> None:
        arr, addr = self._cell(reg, v)
        arr[addr] = round_to(values, self.regions[reg].dtype)

    def write(self, symbol: str, values) -> None:
        s = self.p.symbols[symbol]
        vals = np.asarray(values).reshape(-1)
        for sh in s.shards:
            e = sh.offset + np.arange(sh.count)
            for v in np.unique(e // VECTOR_LANES).tolist():
                sel = e // VECTOR_LANES == v
                row = self._peek(sh.region, v)
                row[e[sel] % VECTOR_LANES] = vals[sh.start + np.nonzero(sel)[0]].astype(F32)
                self._poke(sh.region, v, row)

    def read(self, symbol: str) -> np.ndarray:
        s = self.p.symbols[symbol]
        out = np.zeros(int(np.prod(s.shape)), dtype=F32)
        for sh in reversed(s.shards):  # the first shard holding an element wins
            vecs = self.vectors(sh.region).reshape(-1)
            out[sh.start:sh.start + sh.count] = vecs[sh.offset:sh.offset + sh.count]
        return out

    def vectors(self, reg: int) -> np.ndarray:
        """Every vector of a region, float32 [n_vectors, VECTOR_LANES]."""
        return np.stack([self._peek(reg, v) for v in range(self.regions[reg].n_vectors)])

    def all_vectors(self) -> list[np.ndarray]:
        return [self.vectors(r.id) for r in self.regions]

    # ---------------------------------------------------------------- the run
    def issued(self, bucket: int) -> list[Issued]:
        """Every non-NOP instruction of a bucket with its issue cycle, from the streams alone."""
        out = []
        numbering = self.p.numbering()
        for (b, chip, queue), words in sorted(self.p.streams.items()):
            if b != bucket:
                continue
            t = 0
            for pos, ins in enumerate(isa.decode_many(words, chip, numbering)):
                try:
                    prof = self.m.profile(ins, queue)
                except (IsaError, IndexError) as exc:
                    raise SteppedError(f"bucket {bucket}: chip {chip}, cycle {t}, queue {queue}, instruction #{pos}: "
                                       f"cannot be timed: {exc}", "structure") from None
                if any(a.write and a.ready < 1 for a in prof.accesses):  # the phase order relies on it
                    raise SteppedError(f"bucket {bucket}: chip {chip}, cycle {t}, queue {queue}, instruction #{pos}: "
                                       f"a write readable in the cycle it happens", "structure")
                if ins.op != "NOP":
                    out.append(Issued(chip, queue, pos, t, ins, prof))
                t += prof.busy
        return out

    def run(self, bucket: int = 0) -> int:
        """Step one token of a bucket program to the last event; returns that cycle."""
        self.bucket = bucket
        self._events: list = []
        self._seq = itertools.count()
        self._tiles: dict[tuple[str, int, int], np.ndarray] = {}  # (shadow|active, chip, unit)
        self._links: dict[tuple[int, int], deque] = {}
        self._banks: dict[tuple[int, int], list[_Booking]] = {}
        self._landed: dict[tuple, tuple[int, list]] = {}  # location -> (cycle, [(lo, hi, writer)] landed then)
        for at in self.issued(bucket):
            getattr(self, "_" + at.ins.op.lower())(_Exec(at), at.ins.args)
        cycle = 0
        with np.errstate(all="ignore"):  # inf - inf and the like are data, as on the chip
            while self._events:
                cycle, _, _, fn = heapq.heappop(self._events)
                fn()
        for (chip, link), q in self._links.items():
            if q:
                raise SteppedError(f"bucket {bucket}: {len(q)} vector(s) sent by {q[0].sender} on chip {chip} link {link} "
                                   f"are never received", "link")
        self.cycles = cycle
        return cycle

    # ---------------------------------------------------------------- events
    def _at(self, cycle: int, phase: int, fn) -> None:
        heapq.heappush(self._events, (cycle, phase, next(self._seq), fn))

    def _fail(self, ex: _Exec, what: str, kind: str, cycle: int | None = None) -> SteppedError:
        when = "" if cycle is None else f" (at cycle {cycle})"
        return SteppedError(f"bucket {self.bucket}: {ex.at.where()}: {what}{when}", kind)

    def _need(self, ex: _Exec, run: int, k: int, now: int):
        """What vector k of run `run` read; its write at `now` cannot use data it has not read yet."""
        try:
            return ex.got[(run, k)]
        except KeyError:
            raise self._fail(ex, f"a write at cycle {now} needs vector {k} of access run {run}, read only at cycle "
                                 f"{ex.t(run, k)}", "acausal") from None

    def _locate(self, ex: _Exec, reg: int, v: int) -> tuple[np.ndarray, int, int]:
        r = self.regions[reg]
        if r.chip != ex.at.chip:
            raise self._fail(ex, f"names region {r.name!r} of chip {r.chip}", "structure")
        if not 0 <= v < r.n_vectors:
            raise self._fail(ex, f"accesses vector {v} of region {r.name!r} (vectors 0..{r.n_vectors - 1})", "structure")
        bank, addr = r.locate(v)
        return self.mem[(r.chip, bank)], bank, addr

    def _book(self, ex: _Exec, bank: int, addr: int, t: int, hold: int, write: bool) -> None:
        key = (ex.at.chip, bank)
        live = [b for b in self._banks.get(key, ()) if b.end > t]
        for b in live:
            one_read = b.ex is ex and b.addr == addr and b.start == t and b.end == t + hold and not write and not b.write
            if not one_read:
                raise self._fail(ex, f"{'writes' if write else 'reads'} bank {bank} address {addr} over cycles "
                                     f"{t}..{t + hold - 1}, but {b.ex.at.where()} holds the bank over cycles "
                                     f"{b.start}..{b.end - 1}", "bank", t)
        live.append(_Booking(t, t + hold, ex, addr, write))
        self._banks[key] = live

    def _read(self, ex: _Exec, run: int, k: int, vector=None) -> None:
        """Schedule the read of vector k of an SRAM access run; `vector(t)` gives a runtime-indexed access's
        vector (None: nothing is read)."""
        a = ex.at.prof.accesses[run]
        t = ex.t(run, k)

        def ev():
            v = a.vector(k) if vector is None else vector(t)
            if v is None:
                return
            arr, bank, addr = self._locate(ex, a.region, v)
            self._book(ex, bank, addr, t, a.hold, False)
            ex.got[(run, k)] = arr[addr].copy()
        self._at(t, READ, ev)

    def _write(self, ex: _Exec, run: int, k: int, value, vector=None, lanes=None) -> None:
        """Schedule the write of vector k of an SRAM access run: value(t) is the data (all lanes), lanes(t) the
        lanes written ((lo, hi); None: all); vector(t) a runtime-indexed access's vector (None: nothing written)."""
        a = ex.at.prof.accesses[run]
        t = ex.t(run, k)
        r = self.regions[a.region]

        def ev():
            v = a.vector(k) if vector is None else vector(t)
            if v is None:
                return
            arr, bank, addr = self._locate(ex, a.region, v)
            self._book(ex, bank, addr, t, a.hold, True)
            lo, hi = (0, VECTOR_LANES) if lanes is None else lanes(t)
            data = round_to(value(t), r.dtype)

            def land():
                self._landing(ex, ("sram", ex.at.chip, bank, addr), t + a.ready, lo, hi)
                arr[addr, lo:hi] = data[lo:hi]
            self._at(t + a.ready, LAND, land)
        self._at(t, WRITE, ev)

    def _landing(self, ex: _Exec, key: tuple, cycle: int, lo: int, hi: int) -> None:
        """Record a landing; two writers landing on the same lanes of a location in one cycle is an error."""
        when, landed = self._landed.get(key, (None, []))
        if when != cycle:
            landed = []
        for plo, phi, other in landed:
            if plo < hi and lo < phi and other is not ex:
                raise self._fail(ex, f"its write lands on {key} lanes {lo}..{hi - 1} in the same cycle as a write by "
                                     f"{other.at.where()}", "land", cycle)
        landed.append((lo, hi, ex))
        self._landed[key] = (cycle, landed)

    # MXM state: reads and writes of pseudo-locations, at their own cycles
    def _state_read(self, ex: _Exec, run: int, key: tuple, store: dict, what: str) -> None:
        t = ex.t(run, 0)

        def ev():
            if key not in store:
                raise self._fail(ex, f"reads the {what}, which holds nothing", "state", t)
            ex.got[(run, 0)] = store[key]
        self._at(t, READ, ev)

    def _state_write(self, ex: _Exec, run: int, key: tuple, store: dict, value, at_land: bool = False) -> None:
        """value(t) is the new state; at_land: it is taken when it lands (the LW rows stream in meanwhile)."""
        a = ex.at.prof.accesses[run]
        t = ex.t(run, 0)

        def ev():
            data = None if at_land else value(t)

            def land():
                self._landing(ex, key, t + a.ready, 0, VECTOR_LANES)
                store[key] = value(t + a.ready) if at_land else data
            self._at(t + a.ready, LAND, land)
        self._at(t, WRITE, ev)

    # ---------------------------------------------------------------- instructions
    def _sync(self, ex, a):
        pass

    _deskew = _sync

    @staticmethod
    def _operand_k(mode: int, m: int, i: int) -> int:
        """Which vector of an operand's read run serves step i (the timing model reads rep/grp vectors once)."""
        if mode == MODE_REP:
            return i % m
        if mode == MODE_GRP:
            return i // m
        return i

    def _vxm(self, ex, a):
        fn = VXM_BY_CODE[a["fn"]]
        n = a["n"]
        group = max(1, a["group"]) if fn.reduce else 1
        runs: list[tuple] = []  # distinct (reg, off, mode, m) sources in profile order: a source named twice is read once
        operand = {}
        for name in ("a", "b") if fn.arity >= 2 else ("a",):
            key = (a[f"{name}_reg"], a[f"{name}_off"], a[f"{name}_mode"], a[f"{name}_m"])
            if key[2] == MODE_IMM:
                operand[name] = None
                continue
            if key not in runs:
                runs.append(key)
            operand[name] = (runs.index(key), key[2], key[3])
        dst = len(runs)
        assert len(ex.at.prof.accesses) == dst + 1
        for run in range(dst):
            for k in range(ex.at.prof.accesses[run].count):
                self._read(ex, run, k)

        def src(name, i, t):
            if operand[name] is None:
                return np.full(VECTOR_LANES, a["imm"], dtype=F32)
            run, mode, m = operand[name]
            return self._need(ex, run, self._operand_k(mode, m, i), t)

        def value(d):
            def at(t):
                if fn.reduce:
                    s = src("a", d * group, t)
                    for g in range(1, group):
                        x = src("a", d * group + g, t)
                        s = (s + x) if fn.name == "rsum" else _max(s, x)
                    out = np.asarray(s, dtype=F32).copy()
                else:
                    out = vxm_fn(fn.name, src("a", d, t), src("b", d, t) if fn.arity >= 2 else None, a["imm"])
                if a["period"] > 0 and d % a["period"] == a["period"] - 1:
                    out[a["valid"]:] = 0
                return out
            return at

        for d in range(n):
            self._write(ex, dst, d, value(d))

    def _sxm(self, ex, a):
        fn = SXM_BY_CODE[a["fn"]].name
        n = a["n"]
        if fn == "rot":
            for k in range(n):
                self._read(ex, 0, k)
            shift = a["shift"] % VECTOR_LANES
            for d in range(n):
                self._write(ex, 1, d, lambda t, d=d: np.roll(self._need(ex, 0, d, t), -shift))
            return
        w = a["window"]
        for k in range(w):
            self._read(ex, 0, k)
        for d in range(n):
            self._read(ex, 1, d)

        def value(d):
            def at(t):
                win = np.concatenate([self._need(ex, 0, k, t) for k in range(w)])
                mp = self._need(ex, 1, d, t).astype(np.int64)
                if (mp >= win.size).any():
                    raise self._fail(ex, f"shuf map names element {int(mp.max())}, outside the window of {win.size}",
                                     "runtime", t)
                return np.where(mp < 0, F32(0), win[np.clip(mp, 0, win.size - 1)]).astype(F32)
            return at

        for d in range(n):
            self._write(ex, 2, d, value(d))

    def _lw(self, ex, a):
        rows = a["rows"]
        for k in range(rows):
            self._read(ex, 0, k)
        key = ("shadow", ex.at.chip, a["unit"])
        self._state_write(ex, 1, key, self._tiles,
                          lambda t: np.stack([self._need(ex, 0, k, t) for k in range(rows)]), at_land=True)

    def _iw(self, ex, a):
        u = a["unit"]
        self._state_read(ex, 0, ("shadow", ex.at.chip, u), self._tiles, f"shadow tile of MXM unit {u}")
        self._state_write(ex, 1, ("active", ex.at.chip, u), self._tiles, lambda t: self._need(ex, 0, 0, t))

    def _acc(self, ex, a):
        u, slot = a["unit"], a["slot"]
        key = (ex.at.chip, u, slot)
        self._read(ex, 0, 0)
        self._state_read(ex, 1, ("active", ex.at.chip, u), self._tiles, f"active tile of MXM unit {u}")
        if a["accumulate"]:
            self._state_read(ex, 2, key, self.acc, f"accumulator slot {slot} of MXM unit {u}")

        def value(t):
            x = self._need(ex, 0, 0, t)
            tile = self._need(ex, 1, 0, t)
            if a["x_lane"] + tile.shape[0] > VECTOR_LANES:
                raise self._fail(ex, f"x_lane {a['x_lane']} + tile rows {tile.shape[0]} exceed {VECTOR_LANES} lanes",
                                 "structure", t)
            s = np.zeros(VECTOR_LANES, dtype=F32)
            for r in range(tile.shape[0]):  # row order, multiply and add rounded separately
                s = s + x[a["x_lane"] + r] * tile[r]
            return (self._need(ex, 2, 0, t) + s) if a["accumulate"] else s

        self._state_write(ex, len(ex.at.prof.accesses) - 1, key, self.acc, value)

    def _emit(self, ex, a):
        u, slot = a["unit"], a["slot"]
        if slot >= self.m.acc_slots:
            raise self._fail(ex, f"accumulator slot {slot} not in 0..{self.m.acc_slots - 1}", "structure")
        self._state_read(ex, 0, (ex.at.chip, u, slot), self.acc, f"accumulator slot {slot} of MXM unit {u}")
        lo, n = a["dst_lane"], a["lanes"]

        def value(t):
            out = np.zeros(VECTOR_LANES, dtype=F32)
            out[lo:lo + n] = self._need(ex, 0, 0, t)[a["src_lane"]:a["src_lane"] + n]
            return out

        self._write(ex, 1, 0, value, lanes=lambda t: (lo, lo + n))

    def _copy(self, ex, a):
        for k in range(a["n"]):
            self._read(ex, 0, k)
        for k in range(a["n"]):
            self._write(ex, 1, k, lambda t, k=k: self._need(ex, 0, k, t))

    # runtime-indexed instructions: run 0 reads the index vector, at its own cycle
    def _index(self, ex, a, t) -> int:
        x = float(self._need(ex, 0, 0, t)[a["idx_lane"]])
        if not (np.isfinite(x) and x == int(x) and abs(x) < _BIG_INDEX):
            raise self._fail(ex, f"index {x!r} is not an integer", "runtime", t)
        return int(x)

    def _packed_span(self, row: int, k: int) -> tuple[int, int, int]:
        """Packed rows of k elements: (first table vector of the row, vectors it touches, its first lane)."""
        first = row * k // VECTOR_LANES
        return first, (row * k + k - 1) // VECTOR_LANES - first + 1, row * k - first * VECTOR_LANES

    def _gather(self, ex, a):
        tab = self.regions[a["table_reg"]]
        k_el = a["elems"]
        prof = ex.at.prof

        def row(t):
            r = self._index(ex, a, t) - a["base"]
            return r if 0 <= r < a["rows"] else None  # outside: zeros, and nothing is read

        def table_vector(j):
            def at(t):
                r = row(t)
                if r is None:
                    return None
                if k_el == 0:
                    return r * tab.row_vectors + j
                first, cnt, _ = self._packed_span(r, k_el)
                return first + j if j < cnt else None
            return at

        self._read(ex, 0, 0)
        for j in range(prof.accesses[1].count):
            self._read(ex, 1, j, vector=table_vector(j))

        def value(j):
            def at(t):
                r = row(t)
                out = np.zeros(VECTOR_LANES, dtype=F32)
                if r is None:
                    return out
                if k_el == 0:
                    return self._need(ex, 1, j, t)
                first, cnt, lane0 = self._packed_span(r, k_el)
                lo, hi = j * VECTOR_LANES, min(k_el, (j + 1) * VECTOR_LANES)  # row elements in output vector j
                if lo >= hi:
                    return out
                vs = range((lane0 + lo) // VECTOR_LANES, (lane0 + hi - 1) // VECTOR_LANES + 1)
                flat = np.concatenate([self._need(ex, 1, q, t) for q in vs])
                start = lane0 + lo - vs[0] * VECTOR_LANES
                out[:hi - lo] = flat[start:start + hi - lo]
                return out
            return at

        for j in range(prof.accesses[2].count):
            self._write(ex, 2, j, value(j))

    def _scatter(self, ex, a):
        tab = self.regions[a["table_reg"]]
        k_el = a["elems"]
        prof = ex.at.prof

        def row(t):
            r = self._index(ex, a, t)
            limit = tab.rows if k_el == 0 else tab.n_vectors * VECTOR_LANES // k_el
            if not 0 <= r < limit:
                raise self._fail(ex, f"SCATTER row {r} is outside table {tab.name!r} (rows 0..{limit - 1})", "runtime", t)
            return r

        self._read(ex, 0, 0)
        for k in range(prof.accesses[1].count):
            self._read(ex, 1, k)

        def table_vector(j):
            def at(t):
                r = row(t)
                if k_el == 0:
                    return r * tab.row_vectors + j
                first, cnt, _ = self._packed_span(r, k_el)
                return first + j if j < cnt else None
            return at

        def lanes(j):
            def at(t):
                if k_el == 0:
                    return 0, VECTOR_LANES
                first, cnt, lane0 = self._packed_span(row(t), k_el)
                lo = max(0, lane0 - j * VECTOR_LANES)
                return lo, min(VECTOR_LANES, lane0 + k_el - j * VECTOR_LANES)
            return at

        def value(j):
            def at(t):
                if k_el == 0:
                    return self._need(ex, 1, j, t)
                first, cnt, lane0 = self._packed_span(row(t), k_el)
                lo, hi = lanes(j)(t)
                out = np.zeros(VECTOR_LANES, dtype=F32)
                for lane in range(lo, hi):  # source element e lands at lane0 + e of the row's first vector
                    e = j * VECTOR_LANES + lane - lane0
                    out[lane] = self._need(ex, 1, e // VECTOR_LANES, t)[e % VECTOR_LANES]
                return out
            return at

        for j in range(prof.accesses[2].count):
            self._write(ex, 2, j, value(j), vector=table_vector(j), lanes=lanes(j))

    def _scatcol(self, ex, a):
        tab = self.regions[a["table_reg"]]
        prof = ex.at.prof

        def column(t):
            c = self._index(ex, a, t) - a["col0"]
            if not 0 <= c < tab.row_vectors * VECTOR_LANES:
                raise self._fail(ex, f"SCATCOL column {c + a['col0']} is outside table {tab.name!r}", "runtime", t)
            return c

        self._read(ex, 0, 0)
        for k in range(prof.accesses[1].count):
            self._read(ex, 1, k)
        # the table run times row r's write as its access r * row_vectors (the others only book banks)
        rv = tab.row_vectors
        for r in range(a["rows"]):
            def vec(t, r=r):
                return r * rv + column(t) // VECTOR_LANES

            def lane(t):
                c = column(t) % VECTOR_LANES
                return c, c + 1

            def value(t, r=r):
                out = np.zeros(VECTOR_LANES, dtype=F32)
                out[column(t) % VECTOR_LANES] = self._need(ex, 1, r // VECTOR_LANES, t)[r % VECTOR_LANES]
                return out

            self._write(ex, 2, r * rv, value, vector=vec, lanes=lane)

    def _send(self, ex, a):
        s = ex.at.prof.send
        src = self.regions[a["src_reg"]]
        key = (ex.at.chip, a["link"])
        for k in range(a["n"]):
            self._read(ex, 0, k)
            depart = ex.at.cycle + s.t0 + k * s.per_vector

            def ev(k=k, depart=depart):
                flit = _Flit(depart + s.arrive, self._need(ex, 0, k, depart), src.vector_bytes, ex.at.where())
                self._links.setdefault(key, deque()).append(flit)
            self._at(depart, WRITE, ev)

    def _recv(self, ex, a):
        peer = tuple(self.topo[ex.at.chip][a["link"]])
        dst = self.regions[a["dst_reg"]]

        def value(k):
            def at(t):
                q = self._links.get(peer)
                if not q:
                    raise self._fail(ex, f"stores vector {k} from chip {peer[0]} link {peer[1]}, but nothing was sent "
                                         f"that has not been received", "link", t)
                flit = q[0]
                if flit.arrive > t:
                    raise self._fail(ex, f"stores vector {k} at cycle {t}, before it arrives at cycle {flit.arrive} "
                                         f"(sent by {flit.sender})", "link", t)
                if flit.vector_bytes != dst.vector_bytes:
                    raise self._fail(ex, f"stores a {flit.vector_bytes}-byte vector in {dst.vector_bytes}-byte vectors",
                                     "link", t)
                q.popleft()
                return flit.value
            return at

        for k in range(a["n"]):
            self._write(ex, 0, k, value(k))
