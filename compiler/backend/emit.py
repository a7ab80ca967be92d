"""Emission: scheduled instructions become per-queue streams (NOPs fill the gaps), buffers become the
SRAM image, and the header, regions and symbols complete the program file."""
from __future__ import annotations

import numpy as np

from isa import FORMAT_VERSION, Hardware, Instr, Program, RegionNumbering, encode_many, hw_hash
from isa.program import np_dtype
from isa.table import parse_queue

from .buffers import LANES


def streams_for(bucket: int, sched, nop_max: int, numbering: RegionNumbering, table=None, provenance=None) -> dict:
    """(bucket, chip, queue) -> uint64 words, each queue's instructions in issue order with NOP padding,
    their region operands numbered chip-locally by `numbering` (the program's regions). With a provenance
    `table` (compiler/backend/provenance.Table), `provenance[(bucket, chip, queue)]` gets each word's
    operation (-1 for the NOPs)."""
    byq: dict = {}
    for i, n in enumerate(sched.nodes):
        byq.setdefault((n.chip, sched.queue[i]), []).append(i)
    out = {}
    for (chip, q) in sorted(byq):
        fam, qi = parse_queue(q)
        seq, t, ops = [], 0, []
        for i in sorted(byq[(chip, q)], key=lambda i: (int(sched.issue[i]), i)):
            gap = int(sched.issue[i]) - t
            while gap > 0:
                k = min(gap, nop_max)
                seq.append(Instr("NOP", count=k))
                ops.append(-1)
                gap -= k
            if table is not None:
                ops.append(table.of_node(sched.nodes[i]))
            ins = sched.nodes[i].instr
            if ins.op in ("VXM",) or (ins.op in ("COPY", "GATHER", "SCATTER", "SCATCOL")):
                ins = ins.replace(queue=qi)
            seq.append(ins)
            t = int(sched.issue[i]) + int(sched.busy[i])
        out[(bucket, chip, q)] = encode_many(seq, chip, numbering)
        if table is not None:
            provenance[(bucket, chip, q)] = table.array(ops)
    return out


def build_program(hw: Hardware, lowered, regions, streams, buckets, meta: dict, provenance=None) -> Program:
    """The program file from the stage products: lowering's buffers (their initial data becomes the SRAM
    image) and symbols, placement's regions, the scheduled streams, the buckets and the header facts.
    A timing-only program (meta["timing_only"]) has no image at all: its weights were never loaded, and
    the few constants the compiler made itself would not make it runnable."""
    hwd = hw.to_dict()
    header = {
        "format_version": FORMAT_VERSION,
        "hw": hwd,
        "hw_sha256": hw_hash(hwd),
        "chips": hw.system.chips,
        "queues": list(hw.queues),
        "topology": hw.topology.table(),
        "buckets": buckets,
        **meta,
    }
    image = []
    for b in lowered.buffers:
        if b.data is None or meta.get("timing_only"):
            continue
        # in the region's own element type, exactly as the file stores it (no copy when it already is)
        dt = np_dtype(b.dtype)
        if b.data.dtype == dt and b.data.size == b.vectors * LANES:
            full = b.data.reshape(-1)
        else:
            full = np.zeros(b.vectors * LANES, dtype=dt)
            full[:b.data.size] = b.data
        image.append((b.id, 0, full))
    return Program(header, list(regions), dict(lowered.symbols), streams, image, dict(provenance or {}))
