"""Linears: weight tiles (tile rows x 320 columns) stream into the MXM units, the activation passes
through each installed tile, the fp32 accumulators are emitted. Column blocks go to the units in turn,
each unit's blocks in one weight buffer next to it; column-split linears reading one input are fused
on each chip (one pass of tiles, each output emitted from its accumulator lanes); a row-split linear
leaves a partial sum on every chip, summed by an all-reduce."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ...ir import is_shaped
from ..buffers import LANES, Buf, Val
from .collectives import allreduce
from .core import vecs


def linear(L, chip, e):
    if e.outputs[0] in L.fuse:
        return linear_group(L, chip, [m for m in L.fuse[e.outputs[0]] if m.outputs[0] in L.plan.hold[chip]])
    xname, wname = e.inputs[0], e.inputs[1]
    W = L.g.consts[wname]
    K, N = W.shape
    if e.outputs[0] in L.plan.rowsplit and xname not in L.vals[chip] and xname not in L.plan.hold[chip] \
            and (xname, chip) not in L.plan.transfers:
        # this chip holds no part of the region: it contributes zeros (a buffer never written)
        part = L.buf(chip, "zeros", vecs(N), L.wdtype)
        return _rowsplit_out(L, chip, e, part, N)
    x = L.val(chip, xname)
    if x.layout != "flat" or x.tlen != 1:
        raise UnsupportedError(f"{e!r}: the input of a linear must be a plain vector")
    x = L.as_dtype(chip, x, L.wdtype)
    rowsplit = e.outputs[0] in L.plan.rowsplit
    y = e.outputs[0]
    if rowsplit:
        cols = np.arange(N)
        Wl = W[x.idx]
    else:
        if x.n != K:
            raise UnsupportedError(f"chip {chip}: {e!r} needs the whole input")
        cols = L.hold(chip, y) % N
        Wl = W[:, cols]
    bias = L.g.consts[e.inputs[2]] if len(e.inputs) == 3 else None
    wkey = ("w", wname, chip, L.wdtype, "rows" if rowsplit else "cols",
            (x.idx if rowsplit else cols).tobytes())
    plan = weight_plan(L, chip, wname, Wl, wkey)
    if rowsplit:
        # partial sums cross the links in the MXM's type (fp16 on the hardware), added in fp32
        part = L.buf(chip, "partial", vecs(N), L.wdtype)
        matvec(L, chip, x, plan, part, 0)
        return _rowsplit_out(L, chip, e, part, N)
    out = L.new_out(chip, y)
    if bias is None:
        matvec(L, chip, x, plan, out.buf, out.off)
    else:
        tmp = L.buf(chip, "mv", out.vectors)
        matvec(L, chip, x, plan, tmp, 0)
        b = L.operand(chip, e.inputs[2], cols, out)
        L.vxm(chip, "add", (out.buf, out.off), (tmp, 0), b, n=out.vectors, **L.mask_args(out))


def linear_group(L, chip, eqns: list):
    """Several linears of one input on one chip: their local columns side by side in one weight
    buffer, one matvec, each output emitted from its own lanes."""
    if not eqns or (chip, eqns[0].outputs[0]) in L.fused_done:
        return
    for e in eqns:
        L.fused_done.add((chip, e.outputs[0]))
    xname = eqns[0].inputs[0]
    x = L.val(chip, xname)
    if x.layout != "flat" or x.tlen != 1:
        raise UnsupportedError(f"{eqns[0]!r}: the input of a linear must be a plain vector")
    x = L.as_dtype(chip, x, L.wdtype)
    K = L.g.consts[eqns[0].inputs[1]].shape[0]
    if x.n != K:
        raise UnsupportedError(f"chip {chip}: {eqns[0]!r} needs the whole input")
    parts, colsets, off = [], [], 0
    for e in eqns:
        W = L.g.consts[e.inputs[1]]
        cols = L.hold(chip, e.outputs[0]) % W.shape[1]
        parts.append(W[:, cols])
        colsets.append((off, off + cols.size, e, cols))
        off += cols.size
    Wl = np.concatenate(parts, axis=1)
    wkey = ("wgroup", chip, L.wdtype) + tuple((e.inputs[1], c.tobytes()) for _, _, e, c in colsets)
    plan = weight_plan(L, chip, "+".join(e.inputs[1] for e in eqns)[:120], Wl, wkey, row_halves=False)
    sinks, post = [], []
    for lo, hi, e, cols in colsets:
        if len(e.inputs) == 3:
            tmp = L.buf(chip, "mv", vecs(hi - lo))
            sinks.append((lo, hi, tmp, 0))
            post.append((e, tmp, cols))
        else:
            out = L.new_out(chip, e.outputs[0], partial=True)
            sinks.append((lo, hi, out.buf, out.off * LANES))
    matvec(L, chip, x, plan, None, 0, sinks=sinks)
    for e, tmp, cols in post:
        out = L.new_out(chip, e.outputs[0])
        b = L.operand(chip, e.inputs[2], cols, out)
        L.vxm(chip, "add", (out.buf, out.off), (tmp, 0), b, n=out.vectors, **L.mask_args(out))


def _rowsplit_out(L, chip, e, part: Buf, N: int):
    """Join the all-reduce of a row-split linear; returns what to emit after it (the bias add)."""
    y = e.outputs[0]
    out = L.new_out(chip, y, dtype="fp32")
    if len(e.inputs) < 3:
        allreduce(L, y, chip, part, out, vecs(N))
        return None
    summed = L.buf(chip, "ar", vecs(N))
    allreduce(L, y, chip, part, Val(summed, out.idx, "flat"), vecs(N))

    def bias():
        b = L.operand(chip, e.inputs[2], np.asarray(out.idx) % N, out)
        L.vxm(chip, "add", (out.buf, out.off), (summed, 0), b, n=out.vectors, **L.mask_args(out))
    return bias


def weight_plan(L, chip, name, Wl: np.ndarray, key, row_halves: bool = True) -> dict:
    """Weight buffers for a local matrix Wl [K, N], one per MXM unit, each in that unit's hemisphere
    (next to the unit: a tile arrives a few hops after it is read). Column blocks go to units in
    turn; a single column block of many rows is split by rows instead (two halves, added after), unless
    `row_halves` is off (fused linears, batched kernels: their outputs are emitted column block by block)."""
    K, N = Wl.shape
    tr = L.tile_rows
    nrb, ncb = -(-K // tr), vecs(N)
    U = L.units
    if is_shaped(Wl):  # a timing-only compile: the same buffers, no contents
        full = None
    else:
        full = np.zeros((K, ncb * LANES), np.float32)
        full[:, :N] = Wl
    plan = {"K": K, "N": N, "ncb": ncb, "nrb": nrb, "blocks": {}, "halves": None}
    if ncb == 1 and nrb >= 2 and U >= 2 and row_halves:
        split = (nrb + 1) // 2
        halves = []
        for h, (r0, r1) in enumerate(((0, split * tr), (split * tr, K))):
            b = L.pool.new(chip, f"{name}.h{h}", r1 - r0, L.wdtype, "weight", row_vectors=1,
                           data=None if full is None else full[r0:r1].reshape(-1), zone="weight", width=16, key=key + ("half", h))
            b.hemi = L.hw.mxm_hemisphere(h % U)  # half h is streamed by unit h % units (matvec)
            halves.append((h, b, r0, r1))
        plan["halves"] = halves
        return plan
    for u in range(U):
        cbs = [cb for cb in range(ncb) if cb % U == u]
        if not cbs:
            continue
        data = None if full is None else np.concatenate([full[:, cb * LANES:(cb + 1) * LANES] for cb in cbs],
                                                        axis=1).reshape(-1)
        b = L.pool.new(chip, f"{name}.u{u}", K, L.wdtype, "weight", row_vectors=len(cbs),
                       data=data, zone="weight", width=16, key=key + ("unit", u))
        b.hemi = L.hw.mxm_hemisphere(u)
        for j, cb in enumerate(cbs):
            plan["blocks"][cb] = (u, b, j)
    return plan


def matvec(L, chip, x: Val, plan: dict, dst: Buf | None, dst_off: int, sinks=None):
    """dst = x @ W over tiles: column block cb on unit cb % units; with `sinks`
    [(col_lo, col_hi, buf, element offset)] each column range is emitted into its own buffer."""
    tr = L.tile_rows
    K = plan["K"]
    xv = lambda rb: (x.off + (rb * tr) // LANES, (rb * tr) % LANES)  # noqa: E731
    if plan["halves"] is not None:
        parts = []
        for h, b, r0, r1 in plan["halves"]:
            u = h % L.units
            s = L.slot(chip, u)
            for k, rb in enumerate(range(r0 // tr, -(-r1 // tr))):
                L.lw(chip, u, b, k * tr, 0, min(tr, r1 - rb * tr))
                L.iw(chip, u)
                off, lane = xv(rb)
                L.acc_x(chip, u, x, off, lane, s, k > 0)
            hb = L.buf(chip, "half", 1)
            L.emit_acc(chip, u, s, hb, 0)
            parts.append(hb)
        rem = plan["N"] % LANES
        mask = {"period": 1, "valid": rem} if rem else {}
        L.vxm(chip, "add", (dst, dst_off), (parts[0], 0), (parts[1], 0), n=1, **mask)
        return
    for cb in range(plan["ncb"]):
        u, b, col = plan["blocks"][cb]
        s = L.slot(chip, u)
        for rb in range(plan["nrb"]):
            L.lw(chip, u, b, rb * tr, col, min(tr, K - rb * tr))
            L.iw(chip, u)
            off, lane = xv(rb)
            L.acc_x(chip, u, x, off, lane, s, rb > 0)
        if sinks is None:
            # weight columns past N are zero, so the padding lanes come out 0
            L.emit_acc(chip, u, s, dst, dst_off + cb)
            continue
        for lo, hi, buf, eoff in sinks:
            c0, c1 = max(lo, cb * LANES), min(hi, (cb + 1) * LANES)
            c = c0
            while c < c1:
                dvec, dlane = divmod(eoff + c - lo, LANES)
                n = min(c1 - c, LANES - dlane)
                L.emit_acc(chip, u, s, buf, dvec, dst_lane=dlane, src_lane=c - cb * LANES, lanes=n)
                c += n


LOWERINGS = {"linear": linear}
