"""SRAM placement: every buffer becomes a region (first bank, stripe width, address) on its chip.

Where a tensor lives decides when it arrives (isa/timing.py): weights, caches and tables go to the
slices near the MXM (the outer slices of each hemisphere), activations and constants near the VXM (the
inner slices). Weights stripe over 16 banks so a tile streams at the MXM's install rate; activations
over 8 (4 slices) so fp32 vectors stream one per cycle with banks to spare (2, 4 and 16 were all
slower on the benchmark models). Weights and caches are placed first, from the MXM side inwards; then
every bucket's activations, from the centre outwards; then the tables (row blocks, gathered once per
token) into whatever is left, so that in a nearly full SRAM the activations still sit next to the VXM.
Stripes are aligned to their width unless nothing aligned fits; if the tables do not fit last, the
placement is redone with them first. The operands of one instruction get disjoint banks, so an
instruction never conflicts with itself. Capacity is counted in bytes per bank; a model that does not
fit raises CapacityError saying how many bytes each chip needs and has.
"""
from __future__ import annotations

from collections import defaultdict

from isa import Hardware, Region
from isa.program import dtype_bytes

from ..errors import CapacityError
from .buffers import FORWARDED, LANES, Buf



def _operands(instr) -> list[int]:
    a = instr.args
    return [a[k] for k in ("dst_reg", "a_reg", "b_reg", "src_reg", "map_reg", "table_reg", "idx_reg", "x_reg") if k in a]


def place(bufs: list[Buf], code_by_bucket, hw: Hardware, bucket_of: dict[int, int] | None = None) -> list[Region]:
    """A region for every buffer (regions[i] for buffer i). Reads the buffers' placement hints (zone,
    width, hemisphere) and the code; changes neither."""
    try:
        return _place(bufs, code_by_bucket, hw, bucket_of, tables_last=True)
    except CapacityError:
        # the leftover space is too fragmented for the tables: place them first, before activations
        return _place(bufs, code_by_bucket, hw, bucket_of, tables_last=False)


def _place(bufs: list[Buf], code_by_bucket, hw: Hardware, bucket_of, tables_last: bool) -> list[Region]:
    bucket_of = bucket_of or {}
    sram = hw.chip.sram
    fp = hw.floorplan
    ring = fp.banks_per_distance
    nb = hw.banks

    partners: dict[int, set[int]] = defaultdict(set)
    acc_units: dict[int, set[int]] = defaultdict(set)
    for code in code_by_bucket:
        for chip_nodes in code:
            for n in chip_nodes:
                ops = [o for o in _operands(n.instr) if o >= 0]
                for o in ops:
                    partners[o].update(x for x in ops if x != o)
                if n.instr.op == "ACC":
                    acc_units[n.instr["x_reg"]].add(n.instr["unit"])
    # this placement's zone and hemisphere of each buffer, from its hints: an activation that only one
    # MXM unit streams in lives next to that unit (its ACCs then reach the array within a few cycles, so
    # the unit's tiles can follow each other closely; the producer pays the hops on its write instead)
    zone = [b.zone for b in bufs]
    hemi = [b.hemi for b in bufs]
    for b in bufs:
        us = acc_units.get(b.id)
        if b.zone == "act" and us is not None and len(us) == 1 and b.hemi is None:
            zone[b.id], hemi[b.id] = "near_mxm", hw.mxm_hemisphere(next(iter(us)))

    chips = sorted({b.chip for b in bufs})
    # bank order: by distance from the centre (inner) or from the edge (outer), West/East alternating
    rank_of = {z: {bank: k for k, bank in enumerate(fp.banks_by_distance(from_centre=z == "act"))}
               for z in ("act", "outer")}
    banks_of: dict[int, set[int]] = {}
    regions: list[Region | None] = [None] * len(bufs)
    cap = sram.bank_bytes
    total_need: dict[int, int] = defaultdict(int)
    for b in bufs:
        if b.shared or bucket_of.get(b.id, 0) == 0:
            total_need[b.chip] += b.vectors * LANES * dtype_bytes(b.dtype)

    def put(b: Buf, hc: list[int], uc: list[int]) -> None:
        kind = "act" if zone[b.id] == "act" else "outer"
        vbytes = LANES * dtype_bytes(b.dtype)
        avoid = set()
        for p in partners.get(b.id, ()):
            avoid |= banks_of.get(p, set())
        rank = rank_of[kind]
        best = None
        w = max(1, min(b.width, b.rows))
        aligned = zone[b.id] != "table"
        while best is None:
            per_bank = -(-b.rows // w) * b.row_vectors * vbytes
            h = -(-b.rows // w) * b.row_vectors
            half = len(fp.hemisphere_banks(0))
            hb = range(nb) if hemi[b.id] is None else fp.hemisphere_banks(hemi[b.id])
            lo_b, hi_b = hb.start, hb.stop
            # aligned stripes (groups never partly overlap) first; tables, and whatever does not fit
            # aligned, fill what is left
            for start in range(lo_b, hi_b - w + 1, w if aligned else 1):
                group = range(start, start + w)
                if avoid.intersection(group) or max(uc[start:start + w]) + per_bank > cap:
                    continue
                addr = max(hc[start:start + w])
                if kind == "act":  # near the VXM first: the innermost slices, then outwards
                    cost = (rank[start] // ring, addr, rank[start])
                else:  # next to the MXM first (a tile arrives sooner), then inwards
                    cost = (rank[start] // (2 * w), max(uc[start:start + w]), rank[start])
                if best is None or cost < best[0]:
                    best = (cost, start, addr)
            if best is None and aligned:
                aligned = False
                continue
            aligned = zone[b.id] != "table"
            if best is None and hemi[b.id] is not None and w >= min(half, b.rows):
                hemi[b.id] = None  # does not fit its hemisphere: anywhere, at a transit cost
                w = max(1, min(b.width, b.rows))
                continue
            if best is None:
                if w >= min(nb, b.rows):
                    need = total_need[b.chip]
                    raise CapacityError(
                        f"chip {b.chip} needs {need:,} bytes of SRAM ({need / 2**20:.1f} MiB) but has {nb} banks x "
                        f"{cap:,} = {nb * cap:,} bytes ({nb * cap / 2**20:.1f} MiB): {b.name!r} ({b.vectors * vbytes:,} "
                        f"bytes) does not fit; use more chips (--chips), a shorter --max-context, or fp16")
                w = min(w * 2, nb, b.rows)  # stripe wider until it fits
        _, start, addr = best
        for bank in range(start, start + w):
            rows_here = len(range(bank - start, b.rows, w))
            hc[bank] = addr + h
            uc[bank] += rows_here * b.row_vectors * vbytes
        banks_of[b.id] = set(range(start, start + w))
        regions[b.id] = Region(b.id, b.chip, start, w, addr, b.row_vectors, b.rows, b.dtype, b.name)

    # shared buffers (weights, caches, inputs, outputs, constants): big ones first; tables (gathered
    # by a runtime index, once per token) wait until every bucket's activations have their place
    early = ("weight", "state") if tables_last else ("weight", "state", "table")
    heights = {c: [0] * nb for c in chips}
    used = {c: [0] * nb for c in chips}
    # expert tables first, each in banks of its own: a GATHER by a runtime index may read any bank of its
    # table's stripe, so the schedule must keep every other access off those banks while it runs
    experts = sorted((b for b in bufs if zone[b.id] == "experts"), key=lambda b: (-b.vectors, b.id))
    for b in experts:
        vbytes = LANES * dtype_bytes(b.dtype)
        need = b.vectors * vbytes
        w = 1
        while w < min(nb, b.rows) and -(-b.rows // w) * b.row_vectors * vbytes > cap:
            w += 1  # the fewest banks that hold it
        b_width = min(w, b.rows)
        hu, uu = heights[b.chip], used[b.chip]
        starts = [st for st in range(0, nb - b_width + 1) if max(uu[st:st + b_width]) == 0]
        if not starts:
            tn = total_need[b.chip]
            raise CapacityError(
                f"chip {b.chip} needs {tn:,} bytes of SRAM ({tn / 2**20:.1f} MiB) but has {nb} banks x {cap:,} bytes, "
                f"and the expert table {b.name!r} ({need:,} bytes) needs {b_width} banks of its own; use more chips "
                "(--chips), a shorter --max-context, or fp16")
        st = starts[0]  # packed from one end: the stripes the weights want stay whole
        regions[b.id] = Region(b.id, b.chip, st, b_width, 0, b.row_vectors, b.rows, b.dtype, b.name)
        banks_of[b.id] = set(range(st, st + b_width))
        for bank in range(st, st + b_width):
            hu[bank], uu[bank] = 1 << 40, cap  # the banks are the table's alone
    shared = sorted((b for b in bufs if (b.shared or b.id not in bucket_of) and zone[b.id] not in ("table", "experts")
                     or (zone[b.id] == "table" and not tables_last)),
                    key=lambda b: (0 if zone[b.id] in early else 1, -b.vectors if zone[b.id] in early else 0, b.id))
    # the buffers a chip forwards other stages' transfers through (they depend on the routes those take) go
    # after everything else, so that a stage's own placement is the same wherever it sits
    forwarded = [b for b in shared if b.name.startswith(FORWARDED)]
    shared = [b for b in shared if not b.name.startswith(FORWARDED)]
    tables = sorted((b for b in bufs if (b.shared or b.id not in bucket_of) and zone[b.id] == "table" and tables_last),
                    key=lambda b: (-b.vectors, b.id))
    for b in shared:
        put(b, heights[b.chip], used[b.chip])
    # each bucket's own buffers start from the same place: only one bucket runs at a time
    base_h = {c: list(heights[c]) for c in chips}
    base_u = {c: list(used[c]) for c in chips}
    for bk in sorted({v for v in bucket_of.values() if v is not None}):
        hb = {c: list(base_h[c]) for c in chips}
        ub = {c: list(base_u[c]) for c in chips}
        # a chip's own buffers first, then those it forwards a transfer through (as above)
        own = [b for b in bufs if not b.shared and bucket_of.get(b.id) == bk]
        for b in sorted(own, key=lambda b: b.name.startswith(FORWARDED)):
            put(b, hb[b.chip], ub[b.chip])
        for c in chips:
            heights[c] = [max(x, y) for x, y in zip(heights[c], hb[c])]
            used[c] = [max(x, y) for x, y in zip(used[c], ub[c])]
    for b in tables + forwarded:
        put(b, heights[b.chip], used[b.chip])
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
