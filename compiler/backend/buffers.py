"""Buffers (tensors on one chip, before placement) and the local values that live in them.

A Buf becomes one isa Region when it is placed; its index in the program's buffer list is the region id,
so instructions can name buffers before the allocator has chosen banks and addresses.

A Val is one IR variable on one chip: which of the variable's flat elements the chip holds (`idx`,
global flat indices with T = 1, sorted) and where they sit in the buffer (`layout`):
    flat  element k at positions off*320 + k*tlen ... + tlen - 1 (tlen = positions along T, 1 if none)
    bvec  element k is vector off + k, its value in every lane (what a cross-lane reduction gives)
    exp   element k at positions off*320 + k*g ... + g - 1 (a small-group reduction, expanded in place)
Padding lanes of flat values are 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isa import VECTOR_LANES as LANES

FORWARDED = "fwd "  # the name prefix of a buffer a chip forwards a pipeline transfer through


@dataclass(eq=False)
class Buf:
    id: int
    chip: int
    name: str
    rows: int
    row_vectors: int
    dtype: str  # fp32 | fp16 | i32
    kind: str  # act | const | weight | input | output | state | scratch
    data: np.ndarray | None = None  # initial contents, flat, rows*row_vectors*320 elements (or fewer)
    zone: str = "act"  # placement preference: act (near the VXM), weight (near the MXM), state, table
    width: int = 4  # banks to stripe over
    shared: bool = False  # the same region in every bucket (weights, caches, inputs, outputs)
    hemi: int | None = None  # 0 West / 1 East: placed next to that hemisphere's MXM unit

    @property
    def vectors(self) -> int:
        return self.rows * self.row_vectors


@dataclass(eq=False)
class Val:
    buf: Buf
    idx: np.ndarray
    layout: str = "flat"
    tlen: int = 1
    g: int = 1
    off: int = 0  # first vector in the buffer
    state: tuple | None = None  # (kind 'k'|'v', heads [global kv heads held], head_dim) for a KV cache view

    @property
    def n(self) -> int:
        return int(self.idx.size)

    @property
    def positions(self) -> int:
        if self.layout == "bvec":
            return self.n * LANES
        if self.layout == "exp":
            return self.n * self.g
        return self.n * self.tlen

    @property
    def vectors(self) -> int:
        if self.layout == "bvec":
            return self.n
        return -(-self.positions // LANES)

    def phys(self) -> np.ndarray:
        """Physical position (relative to off*320) of each element's first copy."""
        k = np.arange(self.n, dtype=np.int64)
        if self.layout == "bvec":
            return k * LANES
        if self.layout == "exp":
            return k * self.g
        return k * self.tlen


@dataclass(slots=True)
class Node:
    """One instruction before scheduling: region ids are buffer ids; `queue` is fixed for units bound to
    data (MXM, SXM, links, ICU) and None for VXM/MEM, whose queues are interchangeable."""

    chip: int
    family: str
    instr: object  # isa.Instr
    queue: str | None = None
    tag: str = ""
    uid: int = 0  # creation number: a topological order over all chips
    grp: tuple | None = None  # MXM: (chip, unit, n) of the tile group (an LW and what uses its tile)
    # a SEND or RECV of a pipeline transfer (any hop of its route): the chip the value is going to
    xfer: int | None = None
    op: int = -1  # the operation it lowers (an id of the pool's operation table; -1: none, e.g. a barrier)
