"""Data movement (reshape, transpose, slice, concat, expand, take, cast): a view when the elements keep
their order (same buffer, an offset), else one SXM shuffle per source (several sources are shuffled
into zero-padded parts and added)."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ..buffers import LANES, Val
from ..indexmaps import move_map


def move(L, chip, e):
    out_name = e.outputs[0]
    O = L.hold(chip, out_name)
    which, gidx = move_map(L.g, e)
    which, gidx = which[O], gidx[O]
    ins = [L.val(chip, n) if n in L.g.vars or n in L.g.inputs else None for n in e.inputs]
    if any(v is None for v in ins):
        raise UnsupportedError(f"{e!r}: data movement of a constant should have been folded")
    locs = []
    for k, v in enumerate(ins):
        sel = which == k
        loc = np.searchsorted(v.idx, gidx[sel])
        if np.any(loc >= v.n) or np.any(v.idx[np.minimum(loc, v.n - 1)] != gidx[sel]):
            raise UnsupportedError(f"chip {chip}: {e!r} needs elements held elsewhere")
        locs.append((sel, loc))
    if len(ins) == 1 or len(set(which.tolist())) == 1:
        k = int(which[0]) if which.size else 0
        v, loc = ins[k], locs[k][1]
        if v.layout in ("flat", "bvec") and loc.size and np.array_equal(loc, np.arange(loc.size) + loc[0]):
            step = v.tlen if v.layout == "flat" else LANES
            start = int(loc[0]) * step
            if start % LANES == 0:  # a view: same buffer, same order
                L.vals[chip][out_name] = Val(v.buf, O, v.layout, v.tlen, v.g, off=v.off + start // LANES)
                return
    tls = {v.tlen for v in ins}
    if len(tls) != 1 or any(v.layout == "exp" for v in ins):
        raise UnsupportedError(f"{e!r}: moving data of mixed or expanded layouts is not supported")
    out = L.new_out(chip, out_name)
    tl = out.tlen
    parts = []
    for k, v in enumerate(ins):
        sel, loc = locs[k]
        if not sel.any():
            continue
        mapping = np.full(out.vectors * LANES, -1, dtype=np.int64)
        dst_pos = np.nonzero(sel)[0]
        src_phys = v.phys()[loc]
        for t in range(tl):
            mapping[dst_pos * tl + t] = src_phys + t
        parts.append((v, mapping))
    if len(parts) == 1:
        L.shuf(chip, out.buf, out.off, parts[0][0], parts[0][1].astype(np.int32), tag=out_name)
        return
    acc = None
    for j, (v, mapping) in enumerate(parts):
        tgt = out.buf if j == len(parts) - 1 and len(parts) == 1 else L.buf(chip, "part", out.vectors)
        L.shuf(chip, tgt, 0, v, mapping.astype(np.int32), tag=out_name)
        if acc is None:
            acc = tgt
        else:
            dst = out.buf if j == len(parts) - 1 else L.buf(chip, "cat", out.vectors)
            L.vxm(chip, "add", (dst, out.off if dst is out.buf else 0), (acc, 0), (tgt, 0), n=out.vectors)
            acc = dst


LOWERINGS = {p: move for p in ("reshape", "transpose", "slice", "concat", "expand", "take", "cast")}
