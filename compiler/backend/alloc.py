"""SRAM placement: every buffer becomes a region (first bank, stripe width, address) on its chip.

Where a tensor lives decides when it arrives (isa/timing.py): weights, caches and tables go to the
slices near the MXM (the outer slices of each hemisphere), activations and constants near the VXM (the
inner slices). Weights stripe over 16 banks so a tile streams at the MXM's install rate; activations
over 4 so fp32 vectors stream one per cycle. The operands of one instruction get disjoint banks, so an
instruction never conflicts with itself. Capacity is counted in bytes per bank; a model that does not
fit raises CapacityError saying how many bytes each chip needs and has.
"""
from __future__ import annotations

from collections import defaultdict

from isa import Region
from isa.program import dtype_bytes

from ..errors import CapacityError
from .buffers import LANES, Buf

INNER_SLICES = 12  # slices per hemisphere (from the centre) reserved first for activations


def _operands(instr) -> list[int]:
    a = instr.args
    return [a[k] for k in ("dst_reg", "a_reg", "b_reg", "src_reg", "map_reg", "table_reg", "idx_reg", "x_reg") if k in a]


def place(bufs: list[Buf], code_by_bucket, hw) -> list[Region]:
    sram = hw.chip.sram
    bps, sph = sram.banks_per_slice, sram.slices_per_hemisphere
    nb = hw.banks
    inner = min(INNER_SLICES, sph)

    def zone_banks(zone: str) -> list[int]:
        # bank order: by distance from the centre (inner) or from the edge (outer), West/East alternating
        order = []
        rng = range(sph) if zone == "act" else range(sph - 1, -1, -1)
        for i in rng:
            for hemi in (0, 1):
                s = hemi * sph + i
                order.extend(range(s * bps, s * bps + bps))
        if zone == "act":
            return order[: 2 * inner * bps] + order[2 * inner * bps:]
        return order

    partners: dict[int, set[int]] = defaultdict(set)
    for code in code_by_bucket:
        for chip_nodes in code:
            for n in chip_nodes:
                ops = [o for o in _operands(n.instr) if o >= 0]
                for o in ops:
                    partners[o].update(x for x in ops if x != o)

    heights = {c: [0] * nb for c in sorted({b.chip for b in bufs})}
    used = {c: [0] * nb for c in heights}
    rank_of = {z: {bank: k for k, bank in enumerate(zone_banks(z))} for z in ("act", "outer")}
    banks_of: dict[int, set[int]] = {}
    regions: list[Region | None] = [None] * len(bufs)
    # big tensors first (weights, caches, tables), then the rest in creation order: deterministic
    order = sorted(bufs, key=lambda b: (0 if b.zone in ("weight", "state", "table") else 1,
                                        -b.vectors if b.zone in ("weight", "state", "table") else 0, b.id))
    for b in order:
        zone = "act" if b.zone == "act" else "outer"
        w = max(1, min(b.width, b.rows))
        h = -(-b.rows // w) * b.row_vectors
        vbytes = LANES * dtype_bytes(b.dtype)
        avoid = set()
        for p in partners.get(b.id, ()):
            avoid |= banks_of.get(p, set())
        best = None
        hc, uc = heights[b.chip], used[b.chip]
        rank = rank_of[zone]
        for start in range(0, nb - w + 1, w):  # aligned stripes: groups never partly overlap
            group = range(start, start + w)
            if avoid.intersection(group):
                continue
            addr = max(hc[start:start + w])
            if zone == "act":  # near the VXM first: the innermost slices, then outwards
                cost = (rank[start] // (4 * bps), addr, rank[start])
            else:
                cost = (max(uc[start:start + w]), rank[start])
            if best is None or cost < best[0]:
                best = (cost, start, addr)
        if best is None:
            raise CapacityError(f"chip {b.chip}: no {w} banks free of the operands of {b.name!r}")
        _, start, addr = best
        for bank in range(start, start + w):
            rows_here = len(range(bank - start, b.rows, w))
            hc[bank] = addr + h
            uc[bank] += rows_here * b.row_vectors * vbytes
        banks_of[b.id] = set(range(start, start + w))
        regions[b.id] = Region(b.id, b.chip, start, w, addr, b.row_vectors, b.rows, b.dtype, b.name)
    cap = sram.bank_bytes
    for c in sorted(used):
        if max(used[c]) > cap:
            need = int(sum(used[c]))
            raise CapacityError(
                f"chip {c} needs {need:,} bytes of SRAM ({need / 2**20:.1f} MiB; fullest bank "
                f"{max(used[c]):,} bytes) but has {nb} banks x {cap:,} = {nb * cap:,} bytes "
                f"({nb * cap / 2**20:.1f} MiB); use more chips (--chips), a shorter --max-context, or fp16")
    return regions  # type: ignore[return-value]


def sram_bytes(bufs: list[Buf]) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for b in bufs:
        out[b.chip] += b.vectors * LANES * dtype_bytes(b.dtype)
    return dict(out)
