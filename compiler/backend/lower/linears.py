"""Linears: weight tiles (tile rows x 320 columns) stream into the MXM units, the activation passes
through each installed tile, the fp32 accumulators are emitted. Column blocks go to the units in turn,
each unit's blocks in one weight buffer next to it; column-split linears reading one input are fused
on each chip (one pass of tiles, each output emitted from its accumulator lanes); a row-split linear
leaves a partial sum on every chip, summed by an all-reduce.

8-bit weights (`--weights int8|fp8`, L.weights): the weight regions are i8 (or fp8 e4m3) with one fp32
scale per output column (max |W[:, c]| / 127, or / 448), quantised at compile time; the activation is
quantised at run time on the VXM and SXM, one scale per token for the whole input vector of the linear
(on each chip, its share of it): s_x = max(max|x|, 2**-100) * (1/127) (a lane max: |x|, a lane-wise max
over its vectors, two SXM rounds), x * (1/s_x) stored into an i8 region (which rounds to nearest even
and saturates); the MXM multiplies i8 by i8 into exact integer accumulators (int32: isa ACC), and the
VXM rescales in fp32, y = acc * (s_x * s_w[c]) (+ bias). An 8-bit tile has hw.tile_rows('i8') rows."""
from __future__ import annotations

import numpy as np

from isa.numerics import FP8_MAX, I8_MAX, round_fp8, round_i8
from isa.program import np_dtype

from ...errors import UnsupportedError
from ...ir import is_shaped
from isa.table import MODE_REP

from ..buffers import LANES, Buf, Val
from .collectives import allreduce
from .core import vecs
from .reductions import lane_max

W8 = {"int8": "i8", "fp8": "fp8"}  # --weights -> the regions' element type
QMAX = {"i8": I8_MAX, "fp8": FP8_MAX}
S_FLOOR = 2.0 ** -100  # the smallest activation scale (an all-zero input quantises to zeros)


def w8(L) -> str | None:
    """The 8-bit element type of the linears' weights, or None (the precision's type)."""
    return W8.get(L.weights)


def quantise_weights(Wl: np.ndarray, dt: str) -> tuple[np.ndarray, np.ndarray]:
    """(W quantised per output column, as the region's numpy type; the fp32 column scales)."""
    W = np.asarray(Wl, np.float32)
    amax = np.abs(W).max(axis=0) if W.shape[0] else np.zeros(W.shape[1], np.float32)
    scale = np.where(amax > 0, amax / np.float32(QMAX[dt]), np.float32(1.0)).astype(np.float32)
    q = (round_i8 if dt == "i8" else round_fp8)(W / scale[None, :])
    return q.astype(np_dtype(dt)), scale


def quantise_x(L, chip, x: Val, dt: str) -> tuple[Val, Buf]:
    """x quantised for the MXM (an i8/fp8 buffer) and its scale s_x (one fp32 vector, every lane)."""
    memo = L.__dict__.setdefault("_xq", {})
    key = (chip, x.buf.id, x.off, x.n, dt)
    if key in memo:
        return memo[key]
    n = x.vectors
    src = (x.buf, x.off)
    parts = L.parts.get((chip, x.buf.id))
    if parts:  # a sum of parts (the V-cache shares): this path needs its values
        tot = L.buf(chip, "xsum", n)
        L.vxm(chip, "add", (tot, 0), (parts[0][0], x.off + parts[0][1]), (parts[1][0], x.off + parts[1][1]), n=n)
        for b, d in parts[2:]:
            L.vxm(chip, "add", (tot, 0), (tot, 0), (b, x.off + d), n=n)
        src = (tot, 0)
    rem = x.n % LANES
    mask = {"period": n, "valid": rem} if rem else {}
    ab = L.buf(chip, "xabs", n)
    L.vxm(chip, "abs", (ab, 0), src, n=n, tag="quant", **mask)
    if n > 1:
        m = L.buf(chip, "xabsmax", 1)
        L.vxm(chip, "rmax", (m, 0), (ab, 0), n=1, group=n, tag="quant")
        ab = m
    amax = L.buf(chip, "xamax", 1)
    lane_max(L, chip, ab, amax, 1)
    sx = L.buf(chip, "xscale", 1)
    L.vxm(chip, "max", (sx, 0), (amax, 0), ("imm", S_FLOOR), tag="quant")
    L.vxm(chip, "mul", (sx, 0), (sx, 0), ("imm", float(np.float32(1.0) / np.float32(QMAX[dt]))), tag="quant")
    inv = L.buf(chip, "xinv", 1)
    L.vxm(chip, "recip", (inv, 0), (sx, 0), tag="quant")
    xq = L.buf(chip, "xq", n, dt)
    L.vxm(chip, "mul", (xq, 0), src, (inv, 0, MODE_REP, 1), n=n, tag="quant")
    out = (Val(xq, x.idx, "flat"), sx)
    memo[key] = out
    return out


def rescale(L, chip, raw: Buf, plan: dict, lo: int, hi: int, sx: Buf, dst, n: int, bias=None, mask=None):
    """dst = raw * (s_x * s_w[lo:hi]) (+ bias): the accumulators of columns lo..hi-1 back to real values."""
    mask = mask or {}
    if plan["scale"] is None:  # timing-only: a region for the scales, no values
        sw = L.pool.new(chip, "wscale", n, "fp32", "const", key=("wscale", plan["key"], lo, hi))
    else:
        sdata = np.zeros(n * LANES, np.float32)
        sdata[:hi - lo] = plan["scale"][lo:hi]
        sw = L.const_buf(chip, sdata, "fp32", "wscale")
    comb = L.buf(chip, "xwscale", n)
    L.vxm(chip, "mul", (comb, 0), (sw, 0), (sx, 0, MODE_REP, 1), n=n, tag="quant")
    if bias is None:
        L.vxm(chip, "mul", dst, (raw, 0), (comb, 0), n=n, tag="quant", **mask)
        return
    t = L.buf(chip, "mv", n)
    L.vxm(chip, "mul", (t, 0), (raw, 0), (comb, 0), n=n, tag="quant")
    L.vxm(chip, "add", dst, (t, 0), bias, n=n, **mask)


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
    dt8 = w8(L)
    if dt8 is None:
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
    wkey = ("w", wname, chip, dt8 or L.wdtype, "rows" if rowsplit else "cols",
            (x.idx if rowsplit else cols).tobytes())
    plan = weight_plan(L, chip, wname, Wl, wkey, dtype=dt8)
    if dt8 is not None:
        xq, sx = quantise_x(L, chip, x, dt8)
        raw = L.buf(chip, "acc8", plan["ncb"])
        matvec(L, chip, xq, plan, raw, 0)
        if rowsplit:
            part = L.buf(chip, "partial", vecs(N), L.wdtype)
            rescale(L, chip, raw, plan, 0, N, sx, (part, 0), vecs(N))
            return _rowsplit_out(L, chip, e, part, N)
        out = L.new_out(chip, y)
        b = None if bias is None else L.operand(chip, e.inputs[2], cols, out)
        rescale(L, chip, raw, plan, 0, cols.size, sx, (out.buf, out.off), out.vectors, b, L.mask_args(out))
        return
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
    dt8 = w8(L)
    if dt8 is None:
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
    wkey = ("wgroup", chip, dt8 or L.wdtype) + tuple((e.inputs[1], c.tobytes()) for _, _, e, c in colsets)
    plan = weight_plan(L, chip, "+".join(e.inputs[1] for e in eqns)[:120], Wl, wkey, row_halves=False, dtype=dt8)
    sinks, post = [], []
    if dt8 is not None:  # each output's accumulators into a buffer of its own, then rescaled
        xq, sx = quantise_x(L, chip, x, dt8)
        for lo, hi, e, cols in colsets:
            tmp = L.buf(chip, "acc8", vecs(hi - lo))
            sinks.append((lo, hi, tmp, 0))
        matvec(L, chip, xq, plan, None, 0, sinks=sinks)
        for (lo, hi, e, cols), (_, _, tmp, _) in zip(colsets, sinks):
            out = L.new_out(chip, e.outputs[0])
            b = L.operand(chip, e.inputs[2], cols, out) if len(e.inputs) == 3 else None
            rescale(L, chip, tmp, plan, lo, hi, sx, (out.buf, out.off), out.vectors, b, L.mask_args(out))
        return
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


def weight_plan(L, chip, name, Wl: np.ndarray, key, row_halves: bool = True, dtype: str | None = None) -> dict:
    """Weight buffers for a local matrix Wl [K, N], one per MXM unit, each in that unit's hemisphere
    (next to the unit: a tile arrives a few hops after it is read). Column blocks go to units in
    turn; a single column block of many rows is split by rows instead (two halves, added after), unless
    `row_halves` is off (fused linears, batched kernels: their outputs are emitted column block by block)."""
    K, N = Wl.shape
    wdt = dtype or L.wdtype  # `dtype` i8/fp8: quantised per output column (plan["scale"])
    tr = L.hw.tile_rows(wdt) if dtype else L.tile_rows
    nrb, ncb = -(-K // tr), vecs(N)
    U = L.units
    scale = None
    if is_shaped(Wl):  # a timing-only compile: the same buffers, no contents
        full = None
    else:
        if dtype:
            Wl, scale = quantise_weights(Wl, dtype)
        full = np.zeros((K, ncb * LANES), Wl.dtype if dtype else np.float32)
        full[:, :N] = Wl
    plan = {"K": K, "N": N, "ncb": ncb, "nrb": nrb, "blocks": {}, "halves": None, "tr": tr, "scale": scale,
            "key": key}
    if ncb == 1 and nrb >= 2 and U >= 2 and row_halves:
        split = (nrb + 1) // 2
        halves = []
        for h, (r0, r1) in enumerate(((0, split * tr), (split * tr, K))):
            b = L.pool.new(chip, f"{name}.h{h}", r1 - r0, wdt, "weight", row_vectors=1,
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
        b = L.pool.new(chip, f"{name}.u{u}", K, wdt, "weight", row_vectors=len(cbs),
                       data=data, zone="weight", width=16, key=key + ("unit", u))
        b.hemi = L.hw.mxm_hemisphere(u)
        for j, cb in enumerate(cbs):
            plan["blocks"][cb] = (u, b, j)
    return plan


def matvec(L, chip, x: Val, plan: dict, dst: Buf | None, dst_off: int, sinks=None):
    """dst = x @ W over tiles: column block cb on unit cb % units; with `sinks`
    [(col_lo, col_hi, buf, element offset)] each column range is emitted into its own buffer."""
    tr = plan.get("tr", L.tile_rows)  # expert plans (experts.py) are in the precision's type
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
