"""A batched matrix product on one chip, [M x K] x [K x N]: the MXM's utilisation case.

Decoding multiplies one vector at a time; this kernel streams M activation rows through each
installed weight tile (a tile stays put while M rows pass, so its load hides behind them). Column
blocks of 320 alternate the two units; rows go in chunks that fit the accumulator slots. It reuses
the backend's placement, scheduler and emitter, so the cycles are the same machine's.
"""
from __future__ import annotations

import numpy as np

from isa import Instr

from .alloc import place
from .buffers import LANES, Node
from .emit import build_program, streams_for
from .lower import BufferPool
from .schedule import schedule


def gemm(hw, M: int, K: int, N: int, precision: str = "fp16", x: np.ndarray | None = None,
         w: np.ndarray | None = None, chunk: int | None = None):
    """(Program, cycles, utilisation): the program computes Y = X @ W into symbol 'y' [M, N] from 'x' [M, K]
    (both host-written/read symbols) with W in the SRAM image."""
    dt = "fp16" if precision == "fp16" else "fp32"
    tr = hw.chip.mxm.fp16_tile_rows
    units = hw.mxm_units
    slots = hw.chip.mxm.acc_slots
    chunk = chunk or min(M, slots)
    kv = -(-K // LANES)  # vectors per activation row
    nrb, ncb = -(-K // tr), -(-N // LANES)
    pool = BufferPool()
    xb = pool.new(0, "x", M, dt, "input", row_vectors=kv, key=("x",))
    xb.width = 16
    wdata = np.zeros((K, ncb * LANES), np.float32)
    if w is not None:
        wdata[:, :N] = w
    wbufs = []
    for u in range(units):
        cbs = [cb for cb in range(ncb) if cb % units == u]
        if not cbs:
            wbufs.append(None)
            continue
        data = np.concatenate([wdata[:, cb * LANES:(cb + 1) * LANES] for cb in cbs], axis=1)
        b = pool.new(0, f"w{u}", K, dt, "weight", row_vectors=len(cbs), data=data.reshape(-1), zone="weight",
                     width=16, key=("w", u))
        b.hemi = u % 2
        wbufs.append((b, {cb: j for j, cb in enumerate(cbs)}))
    yb = pool.new(0, "y", M, "fp32", "output", row_vectors=ncb, key=("y",))
    yb.width = 16
    code = [[]]
    uid = [0]

    def emit(family, ins, queue, grp=None):
        uid[0] += 1
        n = Node(0, family, ins, queue, uid=uid[0], grp=grp)
        code[0].append(n)

    gid = 0
    for cb in range(ncb):
        u = cb % units
        wb, col = wbufs[u][0], wbufs[u][1][cb]
        for m0 in range(0, M, chunk):
            rows_m = min(chunk, M - m0)
            for rb in range(nrb):
                gid += 1
                g = (0, u, gid)
                emit("mxmw", Instr("LW", unit=u, src_reg=wb.id, row0=rb * tr, col=col, rows=min(tr, K - rb * tr)),
                     f"mxm{u}w", g)
                emit("mxma", Instr("IW", unit=u), f"mxm{u}a", g)
                for i in range(rows_m):
                    e = (m0 + i) * kv * LANES + rb * tr
                    emit("mxma", Instr("ACC", unit=u, x_reg=xb.id, x_off=e // LANES, x_lane=e % LANES,
                                       slot=i, accumulate=int(rb > 0)), f"mxm{u}a", g)
            for i in range(rows_m):
                emit("mxma", Instr("EMIT", unit=u, slot=i, dst_reg=yb.id, dst_off=(m0 + i) * ncb + cb, lanes=LANES),
                     f"mxm{u}a", (0, u, gid))
    regions = place(pool.bufs, [code], hw)
    s = schedule(code, regions, hw)
    bucket = [{"first_position": 0, "last_position": 0, "context": LANES, "cycles": s.cycles}]
    from isa import Shard, Symbol
    prog = build_program(hw, pool, regions, streams_for(0, s, hw.chip.icu.nop_max_repeat), bucket,
                         _Empty(), None, [{}], {"kernel": "gemm", "M": M, "K": K, "N": N})
    prog.symbols["x"] = Symbol("x", "input", dt, (M, kv * LANES), (Shard(0, xb.id, 0, M * kv * LANES, 0),))
    prog.symbols["y"] = Symbol("y", "output", "fp32", (M, ncb * LANES), (Shard(0, yb.id, 0, M * ncb * LANES, 0),))
    macs = M * K * N
    peak = units * tr * LANES  # fp16 MACs per cycle per chip
    return prog, s.cycles, macs / (s.cycles * peak)


class _Empty:
    """A graph with no inputs or outputs, for build_program (the kernel declares its own symbols)."""

    inputs = ()
    outputs: dict = {}
    vars: dict = {}
