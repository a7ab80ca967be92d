"""Hand-scheduled programs: place instructions at chosen cycles; NOP padding comes from the timing profiles.

For tests and experiments, not for the compiler:

    b = ProgramBuilder(chips=2)
    x = b.region("x", chip=0, bank=0, rows=4)
    y = b.region("y", chip=0, bank=2, rows=4)
    t = b.seq(0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, n=4))   # as soon as everything is done
    b.at(t + 50, 0, "vxm0", Instr("VXM", ...))                                  # at an exact cycle
    program = b.build()

`seq` serialises: an instruction issues when its queue is free and every earlier-placed instruction has
finished (its writes readable, its sent vectors arrived), so a program built only with `seq` is
hazard-free by construction. `at` places exactly, for building deliberately broken schedules.
"""
from __future__ import annotations

import math

import numpy as np

import isa
from isa import FORMAT_VERSION, Instr, Machine, Program, Region, Shard, Symbol, VECTOR_LANES
from lpu import config


class ProgramBuilder:
    def __init__(self, chips: int = 1, hw: dict | None = None, buckets: int = 1) -> None:
        self.hw = hw if hw is not None else config.load().with_chips(chips).to_dict()
        self.chips = int(self.hw["system"]["chips"])
        self.buckets = buckets
        self.regions: list[Region] = []
        self.symbols: dict[str, Symbol] = {}
        self.image: list[tuple[int, int, np.ndarray]] = []
        self.placed: dict[tuple[int, int, str], list[tuple[int, Instr]]] = {}
        self.queue_free: dict[tuple[int, int, str], int] = {}
        self.done = [0] * buckets
        self._next_addr: dict[tuple[int, int], int] = {}
        self._machine: Machine | None = None

    # ---------------------------------------------------------------- data
    def region(self, name: str, chip: int = 0, bank: int = 0, rows: int = 1, row_vectors: int = 1, width: int = 1,
               dtype: str = "fp32", addr: int | None = None, symbol: bool = True) -> int:
        """A region (and, by default, a symbol of the same name covering it); returns its id."""
        touched = range(bank, bank + min(width, rows))
        if addr is None:
            addr = max(self._next_addr.get((chip, b), 0) for b in touched)
        r = Region(len(self.regions), chip, bank, width, addr, row_vectors, rows, dtype, name)
        for b in touched:
            self._next_addr[(chip, b)] = max(self._next_addr.get((chip, b), 0), addr + r.addresses_per_bank())
        self.regions.append(r)
        self._machine = None
        if symbol:
            n = r.n_vectors * VECTOR_LANES
            self.symbols[name] = Symbol(name, "state", dtype, (n,), (Shard(chip, r.id, 0, n, 0),))
        return r.id

    def fill(self, region: int, values: np.ndarray, off: int = 0) -> None:
        """Initial SRAM image of a region from vector `off` (values of the region's element type)."""
        dt = {"fp32": np.float32, "fp16": np.float16, "i32": np.int32}[self.regions[region].dtype]
        self.image.append((region, off, np.asarray(values, dtype=dt).reshape(-1)))

    # ---------------------------------------------------------------- timing
    @property
    def machine(self) -> Machine:
        if self._machine is None:
            self._machine = Machine(self.hw, self.regions)
        return self._machine

    def profile(self, chip: int, queue: str, ins: Instr):
        return self.machine.profile(ins, queue)

    def finish(self, issue: int, queue: str, ins: Instr) -> int:
        """The cycle by which everything the instruction does is over: busy, writes readable, sends arrived."""
        p = self.machine.profile(ins, queue)
        end = issue + p.busy
        for a in p.accesses:
            end = max(end, issue + a.last_time + (a.ready if a.write else a.hold))
        if p.send is not None:
            end = max(end, issue + p.send.t0 + (p.send.count - 1) * p.send.per_vector + p.send.arrive)
        return end

    def at(self, cycle: int, chip: int, queue: str, ins: Instr, bucket: int = 0) -> int:
        """Issue `ins` on (chip, queue) at exactly `cycle`; returns the cycle."""
        key = (bucket, chip, queue)
        free = self.queue_free.get(key, 0)
        if cycle < free:
            raise ValueError(f"chip {chip} queue {queue}: cycle {cycle} is before the queue is free (cycle {free})")
        self.placed.setdefault(key, []).append((cycle, ins))
        self.queue_free[key] = cycle + self.machine.profile(ins, queue).busy
        self.done[bucket] = max(self.done[bucket], self.finish(cycle, queue, ins))
        return cycle

    def seq(self, chip: int, queue: str, ins: Instr, bucket: int = 0) -> int:
        """Issue `ins` once its queue is free and everything placed before has finished; returns the cycle."""
        cycle = max(self.queue_free.get((bucket, chip, queue), 0), self.done[bucket])
        return self.at(cycle, chip, queue, ins, bucket)

    # ---------------------------------------------------------------- output
    def header(self) -> dict:
        hw = self.hw
        return {"format_version": FORMAT_VERSION, "hw": hw, "hw_sha256": isa.hw_hash(hw), "chips": self.chips,
                "buckets": [{"first_position": 0, "last_position": 0, "context": 320} for _ in range(self.buckets)],
                "queues": list(isa.as_hardware(hw).queues), "topology": isa.as_hardware(hw).topology.table()}

    def streams(self) -> dict[tuple[int, int, str], np.ndarray]:
        nop_max = int(self.hw["chip"]["icu"]["nop_max_repeat"])
        numbering = isa.RegionNumbering.of(self.regions, self.chips)
        out = {}
        for key in sorted(self.placed):
            t = 0
            body: list[Instr] = []
            for cycle, ins in self.placed[key]:  # placement order is issue order (at() checks the queue is free)
                gap = cycle - t
                while gap > 0:
                    c = min(gap, nop_max)
                    body.append(Instr("NOP", count=c))
                    gap -= c
                body.append(ins)
                t = cycle + self.machine.profile(ins, key[2]).busy
            out[key] = isa.encode_many(body, key[1], numbering)
        return out

    def build(self) -> Program:
        return Program(self.header(), list(self.regions), dict(self.symbols), self.streams(), list(self.image))


def cycles_of(program: Program, bucket: int = 0) -> dict[tuple[int, str], list[int]]:
    """Issue cycle of every instruction of every stream of a bucket (NOPs included), from the profiles."""
    m = Machine(program.header["hw"], program.regions)
    out = {}
    for (b, c, q), words in sorted(program.streams.items()):
        if b != bucket:
            continue
        t, cyc = 0, []
        for ins in isa.decode_many(words, c, program.numbering()):
            cyc.append(t)
            t += m.profile(ins, q).busy
        out[(c, q)] = cyc
    return out


def vectors(values, dtype=np.float32) -> np.ndarray:
    """values as [k, VECTOR_LANES] (padding the last vector with zeros)."""
    v = np.asarray(values, dtype=dtype).reshape(-1)
    k = math.ceil(v.size / VECTOR_LANES)
    out = np.zeros(k * VECTOR_LANES, dtype=dtype)
    out[:v.size] = v
    return out.reshape(k, VECTOR_LANES)
