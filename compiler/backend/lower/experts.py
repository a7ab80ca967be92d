"""Mixture-of-experts: the router's top-k on the VXM and SXM, and a linear whose weights are one expert's
matrix chosen at runtime.

topk: the router's scores in one vector; k rounds of: the lane maximum (SXM rotations, VXM maxima) to
every lane, the lowest lane holding it (a lane minimum over the lanes that equal it: ties go to the lower
index), that lane masked out; each round writes its value and index into lane j of the outputs.

expert_linear: every expert's matrix lives in SRAM as a table, one row per (expert, row block, column
block) tile. The expert number (a runtime value, from topk) is scaled to the expert's first tile row on
the VXM and feeds the MEM unit's GATHER as its address: the chosen expert's tiles are copied into a
staging weight buffer next to the MXM unit, then streamed through it like any linear's. A token always
runs k experts whatever their number: the program is static and only the chosen experts' bytes move."""
from __future__ import annotations

import numpy as np

from isa import Instr

from ...errors import UnsupportedError
from ...ir import is_shaped
from ..buffers import LANES
from .core import vecs
from .linears import matvec
from .reductions import lane_max

NEG = -3.0e38  # below every score: a lane out of the running


def topk(L, chip, e):
    xname, k = e.inputs[0], e.params["k"]
    memo = L.topk_memo
    key = (chip, xname, k)
    if key not in memo:
        memo[key] = _topk(L, chip, e, k)
    vals, idx = memo[key]
    out = L.new_out(chip, e.outputs[0], dtype="fp32")
    if out.n != k:
        raise UnsupportedError(f"chip {chip}: {e!r} holds part of the top-k")
    L.vxm(chip, "copy", (out.buf, out.off), (vals if e.params["part"] == "values" else idx, 0), n=1, tag=e.outputs[0])


def _topk(L, chip, e, k):
    x = L.val(chip, e.inputs[0])
    n = x.n
    if x.layout != "flat" or x.tlen != 1 or x.vectors != 1:
        raise UnsupportedError(f"{e!r}: top-k of {n} scores (supported: one row of at most {LANES}, the router's)")
    lanes = np.arange(LANES, dtype=np.float32)
    pad = np.where(lanes < n, 0.0, NEG).astype(np.float32)
    tag = e.outputs[0]
    work = L.buf(chip, "topk.work", 1)
    L.vxm(chip, "add", (work, 0), (x.buf, x.off), (L.const_buf(chip, pad), 0), n=1, tag=tag)
    iota = L.const_buf(chip, lanes, name="iota")
    vals = idx = None
    for j in range(k):
        m = L.buf(chip, "topk.max", 1)
        lane_max(L, chip, work, m, 1)
        eq = L.buf(chip, "topk.eq", 1)
        L.vxm(chip, "cmpeq", (eq, 0), (work, 0), (m, 0), tag=tag)
        # -lane where the maximum is, -1e9 elsewhere: the lane maximum of that is minus the first lane
        cand = L.buf(chip, "topk.cand", 1)
        L.vxm(chip, "select", (cand, 0), (eq, 0), (L.const_buf(chip, -lanes, name="negiota"), 0), imm=-1.0e9, tag=tag)
        nfirst = L.buf(chip, "topk.nfirst", 1)
        lane_max(L, chip, cand, nfirst, 1)
        first = L.buf(chip, "topk.first", 1)
        L.vxm(chip, "neg", (first, 0), (nfirst, 0), tag=tag)
        onehot = L.const_buf(chip, (lanes == j).astype(np.float32), name=f"lane{j}")
        for which, src in (("v", m), ("i", first)):
            t = L.buf(chip, f"topk.{which}{j}", 1)
            L.vxm(chip, "select", (t, 0), (onehot, 0), (src, 0), imm=0.0, tag=tag)
            prev = vals if which == "v" else idx
            if prev is not None:
                s = L.buf(chip, f"topk.{which}", 1)
                L.vxm(chip, "add", (s, 0), (prev, 0), (t, 0), tag=tag)
                t = s
            if which == "v":
                vals = t
            else:
                idx = t
        if j + 1 < k:  # the chosen lane leaves the running
            keep = L.buf(chip, "topk.keep", 1)
            L.vxm(chip, "cmpeq", (keep, 0), (iota, 0), (first, 0), tag=tag)
            nk = L.buf(chip, "topk.notchosen", 1)
            L.vxm(chip, "cmpeq", (nk, 0), (keep, 0), ("imm", 0.0), tag=tag)
            nxt = L.buf(chip, "topk.work", 1)
            L.vxm(chip, "select", (nxt, 0), (nk, 0), (work, 0), imm=NEG, tag=tag)
            work = nxt
    return vals, idx


def expert_linear(L, chip, e):
    xname, wname, iname = e.inputs
    W = L.g.consts[wname]
    n_exp, K, N = W.shape
    x = L.val(chip, xname)
    if x.layout != "flat" or x.tlen != 1 or x.n != K:
        raise UnsupportedError(f"chip {chip}: {e!r} needs the whole input row as a plain vector")
    x = L.as_dtype(chip, x, L.wdtype)
    idx = L.val(chip, iname)
    if idx.layout != "flat" or idx.n != 1:
        raise UnsupportedError(f"chip {chip}: {e!r}: the expert number must be one plain element")
    out = L.new_out(chip, e.outputs[0])
    if out.n != N:
        raise UnsupportedError(f"chip {chip}: {e!r} holds part of an expert's output (experts are not split yet)")
    plan = expert_tiles(L, chip, wname, W, idx, tag=e.outputs[0])
    matvec(L, chip, x, plan, out.buf, out.off)


def expert_tiles(L, chip, wname, W: np.ndarray, idx, tag="") -> dict:
    """Gather the chosen expert's tiles into staging weight buffers (one per column block, next to the
    unit that streams it) and return the matvec plan over them."""
    n_exp, K, N = W.shape
    tr = L.tile_rows
    nrb, ncb = -(-K // tr), vecs(N)
    blk = min(tr, K)  # rows of one tile row block
    srows = K if nrb == 1 else nrb * tr
    plan = {"K": K, "N": N, "ncb": ncb, "nrb": nrb, "blocks": {}, "halves": None}
    for u in range(L.units):
        cbs = [cb for cb in range(ncb) if cb % L.units == u]
        if not cbs:
            continue
        per = nrb * len(cbs)  # table rows (tiles) per expert
        key = ("experts", wname, chip, L.wdtype, u)
        table = L.pool.shared.get(key)
        if table is None:
            data = None  # a timing-only compile's expert table: its region, no contents
            if not is_shaped(W):
                data = np.zeros((n_exp, nrb, len(cbs), blk, LANES), np.float32)
                for rb in range(nrb):
                    r0, r1 = rb * tr, min(K, rb * tr + blk)
                    for j, cb in enumerate(cbs):
                        c0, c1 = cb * LANES, min(N, (cb + 1) * LANES)
                        data[:, rb, j, :r1 - r0, :c1 - c0] = W[:, r0:r1, c0:c1]
                data = data.reshape(-1)
            table = L.pool.new(chip, f"{wname}.u{u}", n_exp * per, L.wdtype, "weight", row_vectors=blk,
                               data=data, zone="experts", width=1, key=key)
        # expert e's first tile is table row e * per; the MEM unit takes its address as an integer
        ibuf, ioff = L.buf(chip, "expert.row", 1, "i32"), 0
        L.vxm(chip, "mul", (ibuf, 0), (idx.buf, idx.off), ("imm", float(per)), tag=tag)
        for j, cb in enumerate(cbs):
            stage = L.buf(chip, f"{wname}.stage{cb}", srows, L.wdtype, zone="weight", width=16)
            stage.hemi = L.hw.mxm_hemisphere(u)
            for rb in range(nrb):
                L.emit(chip, "mem", Instr("GATHER", dst_reg=stage.id, dst_off=rb * tr, table_reg=table.id,
                                          idx_reg=ibuf.id, idx_off=ioff, idx_lane=0, base=-(rb * len(cbs) + j),
                                          rows=n_exp * per), tag=tag)
            plan["blocks"][cb] = (u, stage, 0)
    return plan


LOWERINGS = {"topk": topk, "expert_linear": expert_linear}
