"""Elementwise prims: one VXM instruction over the whole tensor (repeat counts), each operand addressed
seq / rep / grp so that broadcasts cost nothing; a broadcast the modes cannot express is shuffled into
place by the SXM first (core.Lowerer.operand)."""
from __future__ import annotations

import numpy as np

from isa.table import MODE_GRP

from ...errors import UnsupportedError
from ..buffers import LANES, Val
from ..indexmaps import operand_map


def _ew_out(L, chip, e) -> Val:
    out = e.outputs[0]
    oshape = L.g.vars[out].shape
    for i in e.inputs:
        if i in L.g.vars and i in L.vals[chip]:
            v = L.vals[chip][i]
            if v.layout in ("bvec", "exp") and tuple(L.g.vars[i].shape) == tuple(oshape):
                return L.new_out(chip, out, v.layout, v.g)
    return L.new_out(chip, out)


def unary(L, chip, e):
    out = _ew_out(L, chip, e)
    a = L.operand(chip, e.inputs[0], out.idx, out)
    if a[0] == "imm":
        raise UnsupportedError(f"{e!r}: a unary op on a constant should have been folded")
    L.vxm(chip, e.params["op"], (out.buf, out.off), a, n=out.vectors, tag=e.outputs[0], **L.mask_args(out))


def binary(L, chip, e):
    out = _ew_out(L, chip, e)
    op = e.params["op"]
    x, y = e.inputs
    mx = operand_map(L.g, e, 0)[out.idx]
    my = operand_map(L.g, e, 1)[out.idx]
    a = L.operand(chip, x, mx, out)
    b = L.operand(chip, y, my, out)
    if a[0] == "imm":
        if op in ("add", "mul", "max", "min", "eq"):
            a, b = b, a
        else:
            a = (L.const_buf(chip, np.full(LANES, a[1], np.float32)), 0, MODE_GRP, out.vectors)
    L.vxm(chip, op, (out.buf, out.off), a, b, n=out.vectors, tag=e.outputs[0], **L.mask_args(out))


def where(L, chip, e):
    out = _ew_out(L, chip, e)
    c, x, y = e.inputs
    fill = L.g.consts[y].reshape(-1)[0]
    a = L.operand(chip, c, operand_map(L.g, e, 0)[out.idx], out)
    b = L.operand(chip, x, operand_map(L.g, e, 1)[out.idx], out)
    if a[0] == "imm":  # constant condition
        a = (L.const_buf(chip, np.full(LANES, a[1], np.float32)), 0, MODE_GRP, out.vectors)
    if b[0] == "imm":
        b = (L.const_buf(chip, np.full(LANES, b[1], np.float32)), 0, MODE_GRP, out.vectors)
    L.vxm(chip, "select", (out.buf, out.off), a, b, n=out.vectors, imm=float(fill), tag=e.outputs[0],
          **L.mask_args(out))


def mask_fill(L, chip, e):
    out = L.new_out(chip, e.outputs[0])
    s, m = e.inputs
    a = L.operand(chip, m, operand_map(L.g, e, 1)[out.idx], out)
    b = L.operand(chip, s, operand_map(L.g, e, 0)[out.idx], out)
    L.vxm(chip, "select", (out.buf, out.off), a, b, n=out.vectors, imm=float(e.params["fill"]),
          tag=e.outputs[0], **L.mask_args(out))


LOWERINGS = {"unary": unary, "binary": binary, "where": where, "mask_fill": mask_fill}
