"""Attention and the KV cache. The cache is the MXM's weights: K stored transposed (one row per
(head, dim), columns over positions, one region per block of 320 positions, the blocks alternating
between the MXM units), V one row per position (or, for caches longer than PACK_V_FROM, several
positions per vector in position blocks); the append is a scatter at the token's position (for K a
column write into the block of the token's bucket, so the other blocks' tiles can stream before it)."""
from __future__ import annotations

import numpy as np

from isa import Instr
from isa.table import MODE_REP

from ...errors import UnsupportedError
from ..buffers import LANES, Buf, Val
from .core import vecs

PACK_V_FROM = 1024  # max_context above which the V cache is packed


def v_pack(width: int) -> int:
    """Positions per vector in the V cache: whole positions of `width` elements when they tile a vector."""
    return LANES // width if width <= LANES // 2 and LANES % width == 0 else 1


def _attn_pv_packed(L, chip, e, p: Val, kv: Val, heads, D, grp, qheads, out: Val):
    """P = 320 / W positions per V-cache vector, in blocks: position q at row q % R, lanes
    (q // R) * W (R rows, a multiple of the tile rows). Group j (positions jR .. jR + R - 1) is then
    a contiguous run of the probabilities: each streams straight from them through the tiles into
    its own accumulator, and each accumulator gives its positions' share of the result from its
    lanes. P times fewer tile rows to stream than one position per vector (and P times less SRAM),
    and no shuffle."""
    W = len(heads) * D
    P = v_pack_of(L, W)
    tr = L.tile_rows
    ctx = L.ctx
    R = kv.buf.rows
    nh = len(qheads)
    u = kv.state[3]
    active = [j for j in range(P) if j * R < ctx]  # the groups this bucket can see
    slots = {(li, j): L.slot(chip, u) for li in range(nh) for j in active}
    for rb in range(-(-min(ctx, R) // tr)):
        L.lw(chip, u, kv.buf, rb * tr, 0, min(tr, R - rb * tr))
        L.iw(chip, u)
        for li in range(nh):
            for j in active:
                q0 = j * R + rb * tr  # the first position of group j in this row block
                if q0 < ctx:  # (ctx and q0 are multiples of the tile rows: the whole block is visible)
                    vec, lane = divmod(p.off * LANES + li * ctx + q0, LANES)
                    L.acc(chip, u, p.buf, vec, lane, slots[(li, j)], accumulate=rb > 0)
    into_linear = L.linear_input_only(e.outputs[0])
    # (read by the linear's code, which is lowered once for all buckets: then the same buffers in each)
    shares = [L.pool.new(chip, "pvshare", out.vectors, out.buf.dtype if into_linear else "fp32", "act",
                            key=("pvshare", e.outputs[0], chip, j) if into_linear else
                            ("pvshare", e.outputs[0], chip, L.bucket, j))
              for j in range(P)]
    for li, h in enumerate(qheads):
        jj = heads.index(h // grp)
        for j in active:
            dvec, dlane = divmod(li * D, LANES)
            c, left = j * W + jj * D, D
            while left:
                n = min(left, LANES - dlane)
                L.emit_acc(chip, u, slots[(li, j)], shares[j], dvec, dst_lane=dlane, src_lane=c, lanes=n)
                c, left = c + n, left - n
                dvec, dlane = dvec + 1, 0
    if into_linear:
        # the next linear adds the shares in its accumulator: no add tree, no trip to the VXM (its
        # code serves every bucket: the groups this one cannot see are zeros)
        for j in range(P):
            if j not in active:
                L.vxm(chip, "copy", (shares[j], 0), (L.zeros(chip), 0, MODE_REP, 1), n=out.vectors)
        L.parts[(chip, out.buf.id)] = [(b, -out.off) for b in shares]
        return
    L.add_tree(chip, [shares[j] for j in active], out.buf, out.off, out.vectors, "pvsum", mask=L.mask_args(out))


def v_rows(L, pack: int) -> int:
    """Rows of a packed V cache: a block of positions per lane group, a whole number of tiles."""
    rows = -(-L.kv_cols // pack)
    return -(-rows // L.tile_rows) * L.tile_rows


def v_index(L, chip, pos: Val, R: int, P: int) -> Buf:
    """The packed index of position p in a V cache of R rows and P lane groups, (p % R) * P + p // R,
    so that a packed-rows SCATTER (flat element k * W) puts p at row p % R, lanes (p // R) * W.
    A few VXM operations on the position, once per token (they wait for nothing else)."""
    key = (chip, R, P)
    memo = L.v_index_memo
    if key in memo:
        return memo[key]
    p = (pos.buf, pos.off)
    d = L.buf(chip, "vblk", 1)
    L.vxm(chip, "cmpge", (d, 0), p, ("imm", float(R)), n=1)
    for j in range(2, P):
        t = L.buf(chip, "vblk", 1)
        L.vxm(chip, "cmpge", (t, 0), p, ("imm", float(j * R)), n=1)
        d2 = L.buf(chip, "vblk", 1)
        L.vxm(chip, "add", (d2, 0), (d, 0), (t, 0), n=1)
        d = d2
    t = L.buf(chip, "vrow", 1)
    L.vxm(chip, "mul", (t, 0), (d, 0), ("imm", float(R)), n=1)
    r = L.buf(chip, "vrow", 1)
    L.vxm(chip, "sub", (r, 0), p, (t, 0), n=1)
    k0 = L.buf(chip, "vidx", 1)
    L.vxm(chip, "mul", (k0, 0), (r, 0), ("imm", float(P)), n=1)
    k = L.buf(chip, "vidx", 1, "i32")
    L.vxm(chip, "add", (k, 0), (k0, 0), (d, 0), n=1)
    memo[key] = k
    return k


def v_pack_of(L, width: int) -> int:
    """Positions per V-cache vector. Packing saves SRAM and streaming for long caches but costs the
    append index (a few VXM operations) and one accumulator per lane group, so short caches keep one
    position per row."""
    return v_pack(width) if L.max_context > PACK_V_FROM else 1


def state_unit(L, st_name) -> int:
    """The MXM unit that serves a layer's attention: the layers of a pipeline stage (of the whole model when
    there are no stages) alternate units, from the stage's first; the caches sit next to it. Counted within
    the stage, so that stages holding the same layers are the same program."""
    units = getattr(L, "_state_units", None)
    if units is None:
        stage_of, first = {}, {}
        for e in L.g.eqns:
            if e.prim == "kv_append":
                k = L.plan.owner.get(e.outputs[0], 0) if L.plan.staged else 0
                stage_of[e.params["state"]] = k
                first[k] = min(first.get(k, L.g.states[e.params["state"]].layer), L.g.states[e.params["state"]].layer)
        units = L._state_units = {n: (st.layer - first.get(stage_of.get(n, 0), 0)) % L.units
                                  for n, st in L.g.states.items()}
    return units[st_name]


def state_buf(L, chip, st_name, heads: list[int]) -> Buf:
    b = _state_buf_new(L, chip, st_name, heads)
    b.hemi = L.hw.mxm_hemisphere(state_unit(L, st_name))
    return b


def _state_buf_new(L, chip, st_name, heads: list[int]) -> Buf:
    st = L.g.states[st_name]
    key = ("state", st_name, chip)
    if key in L.pool.shared:
        return L.pool.shared[key]
    D = st.head_dim
    if st.kind == "k":  # transposed: a row per (head, dim), columns over positions, a region per block
        return kcol(L, chip, st_name, heads, 0)
    pack = v_pack_of(L, len(heads) * D)
    if pack > 1:  # `pack` positions per vector in blocks: position p at row p % R, lanes (p // R) * W
        return L.pool.new(chip, st_name, v_rows(L, pack), L.wdtype, "state", row_vectors=1,
                             zone="state", width=16, key=key)
    return L.pool.new(chip, st_name, L.kv_cols, L.wdtype, "state", row_vectors=vecs(len(heads) * D),
                         zone="state", width=16, key=key)


def kcol(L, chip, st_name, heads: list[int], cb: int) -> Buf:
    """Column block cb (positions 320cb .. 320cb+319) of a K cache, a region of its own: a token's
    append writes only the block of its position, so the tiles of the other blocks can stream into
    the MXM before it (one region for the whole cache would make every tile wait for the append)."""
    if not 0 <= cb < vecs(L.kv_cols):
        raise AssertionError(f"K cache block {cb} outside the cache")
    b = L.pool.new(chip, f"{st_name}.c{cb}", len(heads) * L.g.states[st_name].head_dim, L.wdtype, "state",
                      row_vectors=1, zone="state", width=16, key=("state", st_name, chip, "col", cb))
    b.hemi = L.hw.mxm_hemisphere(kcol_unit(L, st_name, cb))
    return b


def kcol_unit(L, st_name, cb: int) -> int:
    """The MXM unit that streams K block cb: the blocks alternate between the units, so the tiles of
    a long cache are installed side by side; each block sits next to its unit."""
    return (state_unit(L, st_name) + cb) % L.units


def kv_append(L, chip, e):
    st = L.g.states[e.params["state"]]
    pres = L.hold(chip, e.outputs[0])
    D = st.head_dim
    heads = sorted(set((pres // D).tolist()))
    new = L.val(chip, e.inputs[0])
    expect = np.array([h * D + d for h in heads for d in range(D)])
    if new.layout != "flat" or not np.array_equal(new.idx, expect):
        raise UnsupportedError(f"chip {chip}: {e!r}: the new entry must hold whole heads in order")
    sb = state_buf(L, chip, st.name, heads)
    pos = L.val(chip, "position_ids")
    if st.kind == "k":
        # buckets are 320 positions wide: every token of this bucket writes its last column block
        cb = L.ctx // LANES - 1
        blk = kcol(L, chip, st.name, heads, cb)
        L.emit(chip, "mem", Instr("SCATCOL", table_reg=blk.id, src_reg=new.buf.id, src_off=new.off,
                                     idx_reg=pos.buf.id, idx_off=0, rows=len(heads) * D, col0=cb * LANES),
                  tag=e.outputs[0])
    elif v_pack_of(L, len(heads) * D) > 1:  # packed rows: the W elements of packed index k at flat k * W
        k = v_index(L, chip, pos, sb.rows, v_pack_of(L, len(heads) * D))
        L.emit(chip, "mem", Instr("SCATTER", table_reg=sb.id, src_reg=new.buf.id, src_off=new.off,
                                     idx_reg=k.id, idx_off=0, elems=len(heads) * D), tag=e.outputs[0])
    else:
        src = new
        if new.vectors != sb.row_vectors:
            raise UnsupportedError(f"{e!r}: value row size mismatch")
        L.emit(chip, "mem", Instr("SCATTER", table_reg=sb.id, src_reg=src.buf.id, src_off=src.off,
                                     idx_reg=pos.buf.id, idx_off=0), tag=e.outputs[0])
    L.vals[chip][e.outputs[0]] = Val(sb, pres, "state", state=(st.kind, heads, D, state_unit(L, st.name), st.name))


def attn_qk(L, chip, e):
    q = L.val(chip, e.inputs[0])
    kv = L.val(chip, e.inputs[1])
    _, heads, D, ku, st_name = kv.state
    grp = e.params["group"]
    qheads = sorted(set((q.idx // D).tolist()))
    out = L.new_out(chip, e.outputs[0])
    if out.n != len(qheads) or q.n != len(qheads) * D:
        raise UnsupportedError(f"chip {chip}: {e!r} must hold whole query heads")
    tr = L.tile_rows
    R = len(heads) * D
    nrb = -(-R // tr)
    q = L.as_dtype(chip, q, L.wdtype)
    if D <= tr and all((li * D) % LANES + D <= LANES for li in range(len(qheads))):
        # each kv head's rows form a tile by themselves; each query head streams straight from q
        ncb = L.ctx // LANES
        for cb in range(ncb):
            u = kcol_unit(L, st_name, cb)
            for jj, kh in enumerate(heads):
                users = [li for li, h in enumerate(qheads) if h // grp == kh]
                if not users:
                    continue
                L.lw(chip, u, kcol(L, chip, st_name, heads, cb), jj * D, 0, D)
                L.iw(chip, u)
                slots = {li: L.slot(chip, u) for li in users}
                for li in users:
                    pos = q.off * LANES + li * D
                    L.acc(chip, u, q.buf, pos // LANES, pos % LANES, slots[li], accumulate=False)
                for li in users:
                    L.emit_acc(chip, u, slots[li], out.buf, out.off + li * ncb + cb)
        return
    # otherwise one activation vector per (query head, row block) it meets: q placed at its kv
    # head's rows by an SXM shuffle
    pairs, mapping = {}, []
    for li, h in enumerate(qheads):
        j = heads.index(h // grp)
        r0, r1 = j * D, (j + 1) * D
        for rb in range(r0 // tr, (r1 - 1) // tr + 1):
            vec = np.full(LANES, -1, dtype=np.int64)
            for r in range(max(r0, rb * tr), min(r1, rb * tr + tr)):
                vec[r - rb * tr] = li * D + (r - r0)
            pairs.setdefault(rb, []).append((li, len(mapping)))
            mapping.append(vec)
    qx = L.buf(chip, "qx", len(mapping), L.wdtype)
    qsrc = Val(q.buf, q.idx, "flat", off=q.off)
    L.shuf(chip, qx, 0, qsrc, np.concatenate(mapping).astype(np.int32), tag="qx")
    ncb = L.ctx // LANES
    for cb in range(ncb):
        u = kcol_unit(L, st_name, cb)
        slots, first = {}, {}
        for rb in range(nrb):
            if rb not in pairs:
                continue
            L.lw(chip, u, kcol(L, chip, st_name, heads, cb), rb * tr, 0, min(tr, R - rb * tr))
            L.iw(chip, u)
            for li, pv in pairs[rb]:
                if li not in slots:
                    slots[li] = L.slot(chip, u)
                L.acc(chip, u, qx, pv, 0, slots[li], accumulate=li in first)
                first[li] = True
        for li in sorted(slots):
            L.emit_acc(chip, u, slots[li], out.buf, out.off + li * ncb + cb)


def attn_pv(L, chip, e):
    p = L.val(chip, e.inputs[0])
    kv = L.val(chip, e.inputs[1])
    _, heads, D, ku, st_name = kv.state
    grp = e.params["group"]
    out = L.new_out(chip, e.outputs[0], partial=True)
    qheads = sorted(set((out.idx // D).tolist()))
    if out.n != len(qheads) * D or p.n != len(qheads):
        raise UnsupportedError(f"chip {chip}: {e!r} must hold whole query heads")
    p = L.as_dtype(chip, p, L.wdtype)
    if v_pack_of(L, len(heads) * D) > 1:
        return _attn_pv_packed(L, chip, e, p, kv, heads, D, grp, qheads, out)
    tr = L.tile_rows
    ncb = kv.buf.row_vectors
    nrb = L.ctx // tr
    pv_per_head = L.ctx // LANES
    for cb in range(ncb):
        users = []
        for li, h in enumerate(qheads):
            j = heads.index(h // grp)
            c0, c1 = max(j * D, cb * LANES), min((j + 1) * D, (cb + 1) * LANES)
            if c0 < c1:
                users.append((li, j, c0, c1))
        if not users:
            continue
        u = ku
        slots = {li: L.slot(chip, u) for li, *_ in users}
        for rb in range(nrb):
            L.lw(chip, u, kv.buf, rb * tr, cb, tr)
            L.iw(chip, u)
            for li, *_ in users:
                pos = rb * tr
                L.acc(chip, u, p.buf, p.off + li * pv_per_head + pos // LANES, pos % LANES, slots[li],
                         accumulate=rb > 0)
        for li, j, c0, c1 in users:
            # accumulator lanes c0..c1 (relative to cb) -> out positions li*D + (c - j*D)
            c = c0
            while c < c1:
                dpos = out.off * LANES + li * D + (c - j * D)
                dvec, dlane = divmod(dpos, LANES)
                n = min(c1 - c, LANES - dlane)
                L.emit_acc(chip, u, slots[li], out.buf, dvec, dst_lane=dlane, src_lane=c - cb * LANES, lanes=n)
                c += n



LOWERINGS = {"kv_append": kv_append, "attn_qk": attn_qk, "attn_pv": attn_pv}
