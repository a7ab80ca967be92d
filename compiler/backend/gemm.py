"""A batched matrix product on one chip, [M x K] x [K x N]: the MXM's utilisation case.

Decoding multiplies one vector at a time; this kernel streams M activation rows through each
installed weight tile (a tile stays put while M rows pass, so its load hides behind them). The weights
are laid out by the linear lowering (column blocks of 320 dealt to the units in turn, each unit's
blocks in one buffer next to it); rows go in chunks that fit the accumulator slots. It reuses the
backend's placement, scheduler and emitter, so the cycles are the same machine's.
"""
from __future__ import annotations

import numpy as np

from isa import Hardware, RegionNumbering, Shard, Symbol

from .alloc import place
from .buffers import LANES
from .emit import build_program, streams_for
from .lower import BufferPool, Lowered
from .lower.core import Emitter
from .lower.linears import weight_plan
from .schedule import schedule


def gemm(hw: Hardware, M: int, K: int, N: int, precision: str = "fp16", x: np.ndarray | None = None,
         w: np.ndarray | None = None, chunk: int | None = None):
    """(Program, cycles, utilisation): the program computes Y = X @ W into symbol 'y' [M, N] from 'x' [M, K]
    (both host-written/read symbols) with W in the SRAM image."""
    dt = "fp16" if precision == "fp16" else "fp32"
    pool = BufferPool()
    em = Emitter(hw, 1, precision, pool)
    tr, slots = em.tile_rows, em.acc_slots
    chunk = chunk or min(M, slots)
    kv = -(-K // LANES)  # vectors per activation row
    xb = pool.new(0, "x", M, dt, "input", row_vectors=kv, key=("x",))
    xb.width = 16
    wdata = np.zeros((K, N), np.float32) if w is None else np.asarray(w, np.float32)
    plan = weight_plan(em, 0, "w", wdata, ("w",), row_halves=False)
    ncb = plan["ncb"]
    yb = pool.new(0, "y", M, "fp32", "output", row_vectors=ncb, key=("y",))
    yb.width = 16
    for cb in range(ncb):
        u, wb, col = plan["blocks"][cb]
        for m0 in range(0, M, chunk):
            rows_m = min(chunk, M - m0)
            for rb in range(plan["nrb"]):
                em.lw(0, u, wb, rb * tr, col, min(tr, K - rb * tr))
                em.iw(0, u)
                for i in range(rows_m):
                    e = (m0 + i) * kv * LANES + rb * tr
                    em.acc(0, u, xb, e // LANES, e % LANES, i, accumulate=rb > 0)
            for i in range(rows_m):
                em.emit_acc(0, u, i, yb, (m0 + i) * ncb + cb)
    symbols = {"x": Symbol("x", "input", dt, (M, kv * LANES), (Shard(0, xb.id, 0, M * kv * LANES, 0),)),
               "y": Symbol("y", "output", "fp32", (M, ncb * LANES), (Shard(0, yb.id, 0, M * ncb * LANES, 0),))}
    lowered = Lowered((em.code,), tuple(pool.bufs), dict(pool.bucket_of), symbols)
    regions = place(list(lowered.buffers), list(lowered.code), hw)
    s = schedule(em.code, regions, hw)
    bucket = [{"first_position": 0, "last_position": 0, "context": LANES, "cycles": s.cycles}]
    prog = build_program(hw, lowered, regions, streams_for(0, s, hw.chip.icu.nop_max_repeat, RegionNumbering.of(regions, hw.system.chips)), bucket,
                         {"kernel": "gemm", "M": M, "K": K, "N": N})
    macs = M * K * N
    peak = hw.mxm_units * tr * LANES  # fp16 MACs per cycle per chip
    return prog, s.cycles, macs / (s.cycles * peak)
