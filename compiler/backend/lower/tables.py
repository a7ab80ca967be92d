"""Gathered tables (embeddings, position tables): one row by a runtime index."""
from __future__ import annotations

import numpy as np

from isa import Instr
from isa.program import dtype_bytes

from ...errors import UnsupportedError
from ...ir import is_shaped
from ..buffers import LANES, Val
from .collectives import allreduce
from .core import vecs

TABLE_BLOCK_BANKS = 2  # a gathered table is stored in row blocks of at most this many banks' bytes


def gather(L, chip, e):
    """One table row by a runtime index. A large table is stored as row blocks of at most
    TABLE_BLOCK_BANKS banks' worth each (the placer fits them into what the weights leave; one
    block would need a wide stripe of nearly empty banks): a GATHER per block (a row outside a
    block gives zeros) and an add tree join them."""
    tname, iname = e.inputs
    table = L.g.consts[tname]
    rows_all = table.shape[0]
    flat = table.reshape(rows_all, -1)
    width = flat.shape[1]
    rv = vecs(width)
    lo, hi = L.plan.embed_rows.get(e.outputs[0], [(0, rows_all)] * L.chips)[chip]
    row_bytes = rv * LANES * dtype_bytes(L.wdtype)
    per_block = max(1, int(TABLE_BLOCK_BANKS * L.hw.chip.sram.bank_bytes // row_bytes))
    blocks = []
    for b0 in range(lo, max(hi, lo + 1), per_block):  # (a chip holding no rows: one empty block)
        b1 = min(hi, b0 + per_block)
        key = ("table", tname, chip, b0, b1, L.wdtype)
        tb = L.pool.shared.get(key)
        if tb is None:
            data = None  # a timing-only compile's table: its region, no contents
            if not is_shaped(flat):
                def block(b0=b0, b1=b1):
                    d = np.zeros((b1 - b0, rv * LANES), np.float32)
                    d[:, :width] = flat[b0:b1]
                    return d.reshape(-1)
                data = L.pool.blob(("table", tname, id(table), b0, b1), L.wdtype, block)
            # embeddings are weights (fp16 on the hardware)
            tb = L.pool.new(chip, tname if b1 - b0 == hi - lo else f"{tname}[{b0}:{b1}]", b1 - b0, L.wdtype,
                            "weight", row_vectors=rv, data=data, zone="table", width=8, key=key)
        blocks.append((tb, b0, b1))
    idx = L.val(chip, iname)
    if idx.buf.dtype != "i32":  # an index computed on the chip (a router's choice): the address is an integer
        ib = L.buf(chip, "gidx", 1, "i32")
        L.vxm(chip, "copy", (ib, 0), (idx.buf, idx.off), n=1, tag=e.outputs[0])
        idx = Val(ib, idx.idx, "flat")
    split = e.outputs[0] in L.plan.embed_rows
    out = L.new_out(chip, e.outputs[0], dtype="fp32")
    if out.n != width:
        raise UnsupportedError(f"chip {chip}: {e!r} holds part of a table row" if not split
                               else f"{e!r}: a split table row must be held whole")
    if split:
        dst = L.buf(chip, "gpart", rv)
        doff = 0
    else:
        dst, doff = out.buf, out.off
    parts = []
    for tb, b0, b1 in blocks:
        pb, po = (dst, doff) if len(blocks) == 1 else (L.buf(chip, "gblock", rv), 0)
        L.emit(chip, "mem", Instr("GATHER", dst_reg=pb.id, dst_off=po, table_reg=tb.id, idx_reg=idx.buf.id,
                                  idx_off=idx.off, base=b0, rows=b1 - b0), tag=e.outputs[0])
        parts.append(pb)
    if len(parts) > 1:
        L.add_tree(chip, parts, dst, doff, rv, "gsum", tag=e.outputs[0])
    if split:
        allreduce(L, e.outputs[0], chip, dst, out, rv)


LOWERINGS = {"gather": gather}
