"""Speed of the checker and of the ACC kernel on synthetic programs (the numbers the emulator is sized by).

The fast tests here use small sizes; the `slow` ones are the full-size measurements:
`pytest -m slow tests/lpu/test_emulator_perf.py -s` prints them.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import isa
from isa import Instr, VECTOR_LANES
from lpu.emulator import Emulator
from builder import ProgramBuilder

LANES = VECTOR_LANES


def synthetic(chips: int = 8, per_queue: int = 800, accs: int = 3000, link_vectors: int = 50, n: int = 1) -> isa.Program:
    """A dense, valid multi-chip program: 8 VXM, 2 MEM, 1 SXM queue (n vectors per instruction) and an ACC
    stream busy every cycle on each chip, plus SEND/RECV on every link. Operand offsets vary, so most
    instruction words differ."""
    b = ProgramBuilder(chips=chips)
    m = b.machine
    R = 64
    topo = b.header()["topology"]
    streams: dict[tuple[int, int, str], list[Instr]] = {}
    regions = {}
    for c in range(chips):
        bank = 0

        def reg(name, rows, dtype="fp16", width=1):
            nonlocal bank
            r = b.region(f"{name}{c}", chip=c, bank=bank, rows=rows, dtype=dtype, width=width)
            bank += width
            return r

        for q in range(8):
            a, d = reg("va", R), reg("vd", R)
            streams[(0, c, f"vxm{q}")] = [Instr("VXM", fn=16, queue=q, dst_reg=d, dst_off=k % (R - n + 1), a_reg=a,
                                                a_off=(k * 7) % (R - n + 1), b_mode=3, n=n, group=1, imm=float(k % 5)) for k in range(per_queue)]
        for q in range(2):
            s, d = reg("ms", R), reg("md", R)
            streams[(0, c, f"mem{q}")] = [Instr("COPY", queue=q, dst_reg=d, dst_off=k % (R - n + 1), src_reg=s,
                                                src_off=(k * 3) % (R - n + 1), n=n)
                                          for k in range(per_queue)]
        s, d = reg("ss", R), reg("sd", R)
        streams[(0, c, "sxm0")] = [Instr("SXM", fn=0, queue=0, dst_reg=d, dst_off=k % (R - n + 1), src_reg=s,
                                         src_off=(k * 5) % (R - n + 1), n=n,
                                         shift=k % 320) for k in range(per_queue)]
        w = reg("w", 160, width=8)
        x = reg("x", 1000, width=2)
        regions[("s", c)] = [reg(f"ls{l}_", 8) for l in range(chips - 1)]
        regions[("r", c)] = [reg(f"lr{l}_", link_vectors) for l in range(chips - 1)]
        lw = Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=160)
        t_iw = b.finish(0, "mxm0w", lw)  # the shadow tile is complete
        iw = Instr("IW", unit=0)
        start = b.finish(t_iw, "mxm0a", iw)  # the active tile is readable
        gap = start - t_iw - m.profile(iw, "mxm0a").busy
        streams[(0, c, "mxm0w")] = [lw]
        streams[(0, c, "mxm0a")] = [Instr("NOP", count=t_iw), iw] + ([Instr("NOP", count=gap)] if gap > 0 else []) + [
            Instr("ACC", unit=0, x_reg=x, x_off=k % 1000, slot=k % 1024, accumulate=0) for k in range(accs)]
    for c in range(chips):
        for l in range(chips - 1):
            peer, pl = topo[c][l]
            streams[(0, c, f"c2c{l}t")] = [Instr("SEND", link=l, src_reg=regions[("s", c)][l], src_off=k % 8, n=1)
                                           for k in range(link_vectors)]
            streams[(0, peer, f"c2c{pl}r")] = [Instr("NOP", count=300)] + [
                Instr("RECV", link=pl, dst_reg=regions[("r", peer)][pl], dst_off=k, n=1) for k in range(link_vectors)]
    p = b.build()
    numbering = p.numbering()
    for k, v in streams.items():
        p.set_instrs(k, v, numbering)
    return p


def test_synthetic_program_is_valid_and_matches_its_size():
    p = synthetic(chips=2, per_queue=50, accs=100, link_vectors=5)
    emu = Emulator(p)
    rep = emu.check(0)
    n = sum(w.shape[0] for w in p.streams.values())
    assert rep.instructions == n
    emu.run(0)


@pytest.mark.slow
@pytest.mark.parametrize("vectors", [1, 8])
def test_checker_speed_100k_instructions(vectors):
    p = synthetic(n=vectors)
    n = sum(w.shape[0] for w in p.streams.values())
    emu = Emulator(p)
    t = time.perf_counter()
    rep = emu.check(0)
    dt = time.perf_counter() - t
    sched = emu._buckets[0].sched
    print(f"\nchecker: {n} instructions, {rep.cycles} cycles, {dt:.2f} s ({n / dt / 1e3:.0f}k instructions/s)")
    t = time.perf_counter()
    emu.run(0)
    print(f"run: {time.perf_counter() - t:.3f} s")
    assert n >= 100_000 and dt < 10
