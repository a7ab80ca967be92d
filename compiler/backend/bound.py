"""A lower bound on the cycles of one decode token, from the model and the hardware parameters alone.

Never from the schedule. For a mapping of the model onto the chips (which linears are split how, which
chip holds what: a property of the partition, not of the instruction order) it takes the largest of:

- **weight streaming**: the bytes a chip must move from SRAM into its MXM units for one token (its
  weights and the KV cache it reads at this context) over the chip's install bandwidth;
- **compute**: the activation passes through the matrix units, one per cycle per unit;
- **links**: the bytes the busiest link must carry (all-reduce partials), over the link bandwidth;
- **dependency latency**: the longest chain of dependent operations through the token, each costing
  the least the hardware allows: a VXM function its pipeline latency; a step between units the SRAM read
  and write latencies plus the stream hops between them (the VXM sits at the centre, the SXM and MXM at
  the edges); a cross-lane sum one pass through an MXM unit; a cross-lane max two SXM permute rounds (the
  algorithm this compiler uses); a matrix product the MXM latency plus the tiles that cannot have been
  loaded ahead of its input (a unit holds two: the active tile and the shadow buffer), and where an
  operation needs several products of one input (q/k/v, gate/up) the tiles of all of them, densely
  packed, through the chip's units after that input is ready; an all-reduce the way from the MXM to the
  link port, one hop, the partial's serialisation on a link and the additions; data movement nothing
  at all (it may be a view).

Pipelined mappings (pp, and hybrids: stages of tensor-parallel chips) add a link hop wherever a value
crosses a stage boundary, and a token's streaming and compute are summed over the stages (the busiest
chip of each).

`bound(...)` returns the terms; the bound is their maximum. The compiler's schedule is then judged by
cycles / bound (the bound ratio).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, log2

import numpy as np

from isa import VECTOR_LANES as LANES
from isa import Hardware, LinkClass

from ..ir import DATA_MOVEMENT, Graph, T
from .indexmaps import shape1, size1
from .partition import Plan


@dataclass
class Bound:
    cycles: int
    terms: dict = field(default_factory=dict)
    chain: list = field(default_factory=list)  # (eqn, start, finish) along the critical chain

    @property
    def limiter(self) -> str:
        return max(self.terms, key=self.terms.get)


def _vec(n: int) -> int:
    return -(-n // LANES)


def bound(g: Graph, plan: Plan, hw: Hardware, precision: str, ctx: int, weights: str = "fp16") -> Bound:
    """Lower bound for one token whose attention sees `ctx` cache positions, on `plan.chips` chips.
    `weights` int8/fp8: the linears' tiles are 8-bit (hw.tile_rows: more rows per tile, one byte each),
    and each linear's input is quantised on the VXM/SXM before its first tile and rescaled after."""
    ch = hw.chip
    R, W = ch.sram.read_latency_cycles, ch.sram.write_latency_cycles
    hop = ch.streams.hop_cycles
    units = hw.mxm_units
    ebytes = 2 if precision == "fp16" else 4
    vbytes = LANES * ebytes
    tile_rows = ch.mxm.fp16_tile_rows
    tile_cycles = tile_rows * vbytes * units / ch.mxm.install_bytes_per_cycle  # one tile into one unit
    eight = weights in ("int8", "fp8")
    # the linears' tiles (the attention and expert tiles stay in the precision's type)
    ltr = hw.tile_rows("i8") if eight else tile_rows
    lvb = LANES if eight else vbytes
    ltc = ltr * lvb * units / ch.mxm.install_bytes_per_cycle
    lat = ch.vxm.latency_cycles
    fp = hw.floorplan
    pos = {u: fp.unit_distance(u) for u in ("vxm", "mem", "c2c", "sxm", "mxm")}  # from the centre
    link = _fastest_link(hw)
    link_cpv = ceil(vbytes / link.bytes_per_cycle)  # a partial on a link, in the MXM's type
    chips = plan.chips
    group = plan.per_stage  # chips that share a stage's work (and its all-reduces)

    hold32 = max(1, 4 * LANES // ch.sram.access_bytes)  # an fp32 vector holds its bank this long

    def move(a: str, b: str) -> int:
        """From one unit's result in SRAM to the next unit's input: write (an fp32 vector takes `hold32`
        bank cycles to land), hops, read."""
        return W + hold32 - 1 + R + max(2, abs(pos[a] - pos[b])) * hop

    def vxm_lat(op: str) -> int:
        return {"exp": lat.exp, "tanh": lat.tanh, "rsqrt": lat.rsqrt, "recip": lat.recip,
                "mul": lat.mul}.get(op, lat.add)

    # per-chip work of every matrix product under this mapping
    def local(var, c) -> int:
        h = plan.hold[c].get(var)
        return 0 if h is None else int(h.size)

    def tiles_linear(e, c) -> int:
        K, N = g.consts[e.inputs[1]].shape
        rows = local(e.inputs[0], c) if e.outputs[0] in plan.rowsplit else K
        cols = N if e.outputs[0] in plan.rowsplit else local(e.outputs[0], c)
        if not rows or not cols:
            return 0
        return ceil(rows / ltr) * _vec(cols)


    def _shared_units(e, unit, lam, start, f, chain):
        """Sibling linears (one input) that this operation depends on: all their tiles go through the
        units after the input is ready (a unit holds two ahead: active and shadow), and the last of them
        still has to reach this operation (the shortest of their paths to it)."""
        joined: dict[str, dict[str, float]] = {}
        for i in e.inputs:
            if i not in track:
                continue
            u_i = finish[i][1]
            mv = move(u_i, unit) if unit is not None and u_i is not None else 0
            for x, dd in track[i].items():
                got = joined.setdefault(x, {})
                for lin, d in dd.items():
                    got[lin] = max(got.get(lin, 0.0), d + mv + lam)
        if e.prim == "linear" and e.inputs[0] in siblings and e.outputs[0] not in plan.rowsplit:
            lin_start[e.outputs[0]] = start
            joined.setdefault(e.inputs[0], {})[e.outputs[0]] = 0.0
        for x, dd in joined.items():
            if len(dd) < 2:
                continue
            rows = ceil(wrows[next(iter(dd))] / ltr)
            t = max(rows * _vec(sum(local(lin, c) for lin in dd)) for c in range(chips))
            group = ch.mxm.latency_cycles + ch.mxm.emit_cycles + max(0, ceil(t / units) - 2) * ltc
            v = min(lin_start[lin] for lin in dd) + group + min(dd.values())
            if v > f:
                f, chain = v, best_chain.get(x, [])
        track[e.outputs[0]] = {x: dd for x, dd in joined.items() if len(dd) < len(siblings[x])}
        return f, chain

    # linears that read one input (q/k/v, gate/up) share the chip's MXM units: the tiles of those a
    # later operation needs all pass through the units after that input is ready
    readers: dict[str, list[str]] = {}
    wrows: dict[str, int] = {}
    for e in g.eqns:
        if e.prim == "linear" and e.outputs[0] not in plan.rowsplit:
            readers.setdefault(e.inputs[0], []).append(e.outputs[0])
            wrows[e.outputs[0]] = g.consts[e.inputs[1]].shape[0]
    siblings = {x: set(v) for x, v in readers.items() if len(v) > 1}
    lin_start: dict[str, float] = {}
    track: dict[str, dict[str, dict[str, float]]] = {}  # var -> input -> {linear: its finish to var's}

    stream_bytes = np.zeros(chips)
    passes = np.zeros(chips)
    # bytes on the busiest link: an all-reduce crosses its stage's links, a stage boundary the route
    # between two stages (different stages, different links)
    link_use: dict = {}
    topo = hw.topology
    min_hops: dict[tuple[int, int], int] = {}

    def boundary_hops(a: int, b: int) -> int:
        """The fewest hops between any chip of stage a and any of stage b (a lower bound on every route)."""
        h = min_hops.get((a, b))
        if h is None:
            h = min_hops[(a, b)] = min(topo.hops(i, j) for i in plan.stage_chips(a) for j in plan.stage_chips(b))
        return h
    finish: dict[str, tuple[float, str]] = {}
    best_chain: dict[str, list] = {}
    for e in g.eqns:
        prim = e.prim
        unit = "vxm"
        lam = 0.0
        if prim == "linear":
            unit = "mxm"
            per_chip = [tiles_linear(e, c) for c in range(chips)]
            for c, t in enumerate(per_chip):
                stream_bytes[c] += t * ltr * lvb
                passes[c] += t
            tu = ceil(max(per_chip) / units) if per_chip else 0
            lam = ch.mxm.latency_cycles + ch.mxm.emit_cycles + max(0, tu - 2) * ltc
            if eight:
                # before the first tile: |x|, its lane max (two SXM rounds), the scale and its
                # reciprocal, x times it into the 8-bit region; after the last: the rescale (a multiply)
                lam += (lat.add + 2 * (move("vxm", "sxm") + ch.sxm.latency_cycles.permute + move("sxm", "vxm") + lat.add)
                        + 3 * move("vxm", "vxm") + lat.add + lat.mul + lat.recip + lat.mul + lat.mul)
            if e.outputs[0] in plan.rowsplit and group > 1:
                n = size1(g.vars[e.outputs[0]].shape)
                key = ("ar", plan.owner.get(e.outputs[0], 0) if plan.staged else 0)
                link_use[key] = link_use.get(key, 0.0) + _vec(n) * vbytes
                # the partial leaves the MXM for the link port at the centre, crosses, and is added
                lam += (move("mxm", "c2c") + link.hop_latency_cycles + _vec(n) * link_cpv
                        + ceil(log2(group)) * (lat.add + move("vxm", "vxm")))
        elif prim == "expert_linear":  # one expert's tiles, gathered then streamed like a linear's
            unit = "mxm"
            _, K, N = g.consts[e.inputs[1]].shape
            per_chip = [ceil(K / tile_rows) * _vec(N) if local(e.outputs[0], c) else 0 for c in range(chips)]
            for c, t in enumerate(per_chip):
                stream_bytes[c] += t * tile_rows * vbytes
                passes[c] += t
            tu = ceil(max(per_chip) / units) if per_chip else 0
            # the first tile is gathered (one table row: one bank, one access per cycle) before it streams
            gather = min(tile_rows, K) * max(1, vbytes // ch.sram.access_bytes)
            lam = gather + ch.mxm.latency_cycles + ch.mxm.emit_cycles + max(0, tu - 2) * tile_cycles
        elif prim in ("attn_qk", "attn_pv"):
            unit = "mxm"
            kv = e.inputs[1]
            per_chip = []
            for c in range(chips):
                held = local(kv, c)  # (kv head, dim) elements of the cache this chip reads
                if not held:
                    per_chip.append(0)
                    continue
                if prim == "attn_qk":
                    t = ceil(held / tile_rows) * _vec(ctx)
                else:
                    pack = max(1, LANES // held) if held <= LANES // 2 and LANES % held == 0 else 1  # the densest
                    t = ceil(ceil(ctx / pack) / tile_rows) * _vec(held * pack)
                per_chip.append(t)
                stream_bytes[c] += t * tile_rows * vbytes
                passes[c] += t
            tu = ceil(max(per_chip) / units) if per_chip else 0
            lam = ch.mxm.latency_cycles + ch.mxm.emit_cycles + max(0, tu - 2) * tile_cycles
        elif prim == "reduce":
            x = e.inputs[0]
            shp = g.vars[x].shape
            gp = shape1(shp)[-1] * (ctx if shp[-1] == T else 1)
            pre = lat.add + move("vxm", "vxm") if gp > LANES else 0  # lane-wise over the group's vectors
            if e.params["op"] == "sum":
                unit = "mxm"
                lam = pre + ch.mxm.latency_cycles + ch.mxm.emit_cycles
            else:  # two rounds of SXM rotations and VXM maxima
                lam = pre + 2 * (move("vxm", "sxm") + ch.sxm.latency_cycles.permute + move("sxm", "vxm") + lat.add)
        elif prim in ("unary", "binary"):
            lam = vxm_lat(e.params["op"])
        elif prim in ("where", "mask_fill", "topk"):
            lam = lat.add
        elif prim in ("gather", "kv_append"):
            unit = "mem"
            lam = 0
        elif prim in DATA_MOVEMENT:
            unit = None  # free: a view, as far as a bound can tell
        start, chain = 0.0, []
        here = plan.owner.get(e.outputs[0]) if plan.staged else None
        for i in e.inputs:
            if i in finish:
                t, u = finish[i]
                if unit is not None and u is not None:
                    t += move(u, unit)
                if here is not None and plan.owner.get(i, here) != here and i not in plan.local:
                    # a pipeline stage boundary: the value crosses a link
                    # (each chip of the stage sends its own part to its counterpart, side by side)
                    nv = _vec(max((local(i, c) for c in range(chips)), default=0) or size1(g.vars[i].shape))
                    src = plan.owner.get(i, here)
                    t += boundary_hops(src, here) * link.hop_latency_cycles + nv * ceil(LANES * 4 / link.bytes_per_cycle)
                    key = ("xfer", src, here)
                    link_use[key] = link_use.get(key, 0.0) + nv * LANES * 4
                if t > start:
                    start, chain = t, best_chain[i]
        f = start + lam
        f, chain = _shared_units(e, unit, lam, start, f, chain)
        finish[e.outputs[0]] = (f, unit if unit is not None else (finish[e.inputs[0]][1] if e.inputs and e.inputs[0] in finish else None))
        best_chain[e.outputs[0]] = chain + [(e, start, f)]
    out = g.outputs["logits"]
    # the token-start barrier (Sync/Notify) precedes everything
    latency = (finish[out][0] + W if out in finish else 0.0) + ch.icu.sync_cycles
    bpc = ch.mxm.install_bytes_per_cycle
    # a token visits pipeline stages one after another; tensor-parallel chips stream side by side
    stages = len(plan.stages) if plan.staged else 1
    streaming = sum(stream_bytes[list(plan.stage_chips(k))].max() for k in range(stages)) if plan.staged else stream_bytes.max()
    compute = sum(passes[list(plan.stage_chips(k))].max() for k in range(stages)) if plan.staged else passes.max()
    terms = {
        "weight_streaming": float(streaming / bpc) if chips else 0.0,
        "compute": float(compute / units),
        "links": float(max(link_use.values(), default=0.0) / link.bytes_per_cycle) if chips > 1 else 0.0,
        "latency": float(latency),
    }
    return Bound(int(ceil(max(terms.values()))), {k: int(ceil(v)) for k, v in terms.items()}, best_chain.get(out, []))


def _fastest_link(hw) -> LinkClass:
    """The most favourable link the system has (the highest bandwidth, the shortest hop): what a lower
    bound may assume of any transfer between chips."""
    classes = hw.topology.classes
    return LinkClass("fastest", max(c.bytes_per_cycle for c in classes), min(c.hop_latency_cycles for c in classes))

