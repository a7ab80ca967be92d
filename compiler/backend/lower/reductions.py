"""Reductions over the last axis: a lane-wise VXM reduction over the vectors of each group, then a
cross-lane step: sums on the MXM against a tile of ones (the sum arrives broadcast to every lane),
maxima by two rounds of SXM shuffles and VXM maxima; small groups inside a vector use a block-diagonal
ones tile and stay expanded in place."""
from __future__ import annotations

import functools

import numpy as np

from ...errors import UnsupportedError
from ..buffers import LANES, Buf, Val
from ..indexmaps import shape1


def reduce(L, chip, e):
    op = e.params["op"]
    x = L.val(chip, e.inputs[0])
    if x.layout != "flat":
        raise UnsupportedError(f"{e!r}: reducing a reduced value is not supported")
    last = shape1(L.g.shape(e.inputs[0]))[-1]
    gp = last * x.tlen  # positions per group
    out_idx = L.hold(chip, e.outputs[0])
    ng = out_idx.size
    if x.n != ng * last:
        raise UnsupportedError(f"chip {chip}: {e!r} would need elements held elsewhere")
    rfn = "rsum" if op == "sum" else "rmax"
    sum_dt = L.wdtype  # the MXM's input type
    if gp % LANES == 0 and x.off == 0 or ng == 1:
        m = gp // LANES if gp % LANES == 0 else x.vectors
        src = x
        if op == "max" and gp % LANES:
            # padding lanes hold 0: lift them to -3e38 so they cannot win
            pad = np.zeros(x.vectors * LANES, np.float32)
            pad[x.positions:] = -3.0e38
            tmp = L.buf(chip, "padmax", x.vectors)
            L.vxm(chip, "add", (tmp, 0), (x.buf, x.off), (L.const_buf(chip, pad), 0), n=x.vectors)
            src = Val(tmp, x.idx, "flat", x.tlen)
        part = L.buf(chip, f"{rfn}", ng, sum_dt if op == "sum" else "fp32")
        if m == 1:
            L.vxm(chip, "copy", (part, 0), (src.buf, src.off), n=ng)
        else:
            L.vxm(chip, rfn, (part, 0), (src.buf, src.off), n=ng, group=m)
        out = L.new_out(chip, e.outputs[0], "bvec", dtype="fp32")
        if op == "sum":
            lane_sum(L, chip, part, out.buf, ng, LANES)
        else:
            lane_max(L, chip, part, out.buf, ng)
        return
    if LANES % gp == 0 and op == "sum" and x.off == 0:
        src = L.as_dtype(chip, x, sum_dt)
        out = L.new_out(chip, e.outputs[0], "exp", g=gp, dtype="fp32")
        lane_sum(L, chip, src.buf, out.buf, src.vectors, gp)
        return
    raise UnsupportedError(f"{e!r}: a {op} over groups of {gp} elements is not supported "
                           f"(supported: groups that are multiples of {LANES}, one group, or sums over divisors of {LANES})")


@functools.lru_cache(maxsize=None)
def _ones_half(g: int, h: int, tr: int, wdtype: str) -> np.ndarray:
    """Rows h*tr.. of the block-ones matrix, flat, in the tile's type: one read-only array every chip's
    copy of the tile shares (on 576 chips, a copy each was about 1 GiB of the compiler's memory)."""
    r = np.arange(LANES)
    full = (r[:, None] // g == r[None, :] // g)[h * tr:(h + 1) * tr]
    t = full.astype(np.float16 if wdtype == "fp16" else np.float32).reshape(-1)
    t.setflags(write=False)
    return t


def ones_tiles(L, chip, g: int, u: int) -> list[Buf]:
    """The two halves (rows 0..159, 160..319) of the 320x320 block-diagonal ones matrix with blocks
    of g lanes: x @ M gives every lane the sum of its block. One copy next to each MXM unit."""
    key = ("ones", chip, g, L.wdtype, u)
    if key in L.pool.shared:
        return [L.pool.shared[key], L.pool.shared[key + ("b",)]]
    tr = L.tile_rows
    tiles = []
    for h, sub in ((0, ()), (1, ("b",))):
        t = _ones_half(g, h, tr, L.wdtype)
        tiles.append(L.pool.new(chip, f"ones{g}{'ab'[h]}", t.size // LANES, L.wdtype, "const", data=t,
                                zone="weight", width=16, key=key + sub))
        tiles[-1].hemi = L.hw.mxm_hemisphere(u)
    return tiles


def lane_sum(L, chip, src: Buf, dst: Buf, n: int, g: int):
    """dst vector k = src vector k times the block-ones matrix (both halves), on one MXM unit. When
    the halves are equal (one block of 320) one installed tile serves both."""
    u = L.next_unit(chip)
    tiles = ones_tiles(L, chip, g, u)
    tr = L.tile_rows
    slots = [L.slot(chip, u) for _ in range(n)]
    same = tiles[0].data is not None and np.array_equal(tiles[0].data, tiles[1].data)
    for h, t in enumerate(tiles):
        if h == 0 or not same:
            L.lw(chip, u, t, 0, 0, t.rows)
            L.iw(chip, u)
        for k in range(n):
            L.acc(chip, u, src, k, h * tr, slots[k], accumulate=h > 0)
    for k in range(n):
        L.emit_acc(chip, u, slots[k], dst, k)


def lane_max(L, chip, src: Buf, dst: Buf, n: int):
    """Every lane gets the max over its vector, in two rounds (320 = 16 x 20): an SXM shuffle makes
    16 rotations of the vector (by 0..15 lanes) and a VXM reduction takes their lane-wise max, then
    20 rotations by multiples of 16. Two trips to the SXM instead of a nine-step rotate tree; one
    chain per vector, so the queues work on several heads at once."""
    lanes = np.arange(LANES)
    for k in range(n):
        cur = Val(src, np.arange(1), "flat", off=k)
        for r, (count, step) in enumerate(((16, 1), (20, 16))):
            mapping = np.concatenate([(lanes + j * step) % LANES for j in range(count)])
            rots = L.buf(chip, f"rots{count}", count)
            L.shuf(chip, rots, 0, Val(cur.buf, cur.idx, "flat", off=cur.off), mapping.astype(np.int32), tag="lanemax")
            if r == 1:
                L.vxm(chip, "rmax", (dst, k), (rots, 0), n=1, group=count, tag="lanemax")
            else:
                nxt = L.buf(chip, "lmax", 1)
                L.vxm(chip, "rmax", (nxt, 0), (rots, 0), n=1, group=count, tag="lanemax")
                cur = Val(nxt, np.arange(1), "flat")


LOWERINGS = {"reduce": reduce}
