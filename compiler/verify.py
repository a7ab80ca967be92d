"""Verifiers that run between the compiler's passes (compiler/driver.py): each checks one stage's
product and raises VerifyError naming the pass whose product is at fault and the thing that is wrong.

- machine_dialect: after decompose (and split, fold): every equation is a primitive the backend
  lowers, with the parameters its lowering handles;
- plan: every equation has a home (a chip that computes it) and every value a chip needs is held
  there or sent to it by a planned transfer from a chip that holds it;
- buffers: sizes, element types, kinds and initial data fit, ids are positions, each buffer belongs to
  one bucket or to all of them;
- instructions: every instruction sits on a queue of its family that the chip has, names buffers that
  exist on its chip and in its bucket, and stays inside them;
- placement: every buffer has a region of its own shape on its chip, inside the SRAM, and no two
  regions that can be live together share a bank address;
- schedule: each queue's instructions issue in order without overlapping (NOPs can fill the gaps).
The IR's own verifier (Graph.verify) runs inside the graph passes.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from isa import BY_MNEMONIC, VECTOR_LANES, IsaError, parse_queue
from isa.program import np_dtype
from isa.table import region_used

from .errors import IrError

KINDS = ("act", "const", "weight", "input", "output", "state", "scratch")
ZONES = ("act", "weight", "state", "table", "experts")
_NP = {"fp32": np.float32, "fp16": np.float16, "i32": np.int32, "i8": np.int8, "fp8": np_dtype("fp8")}


class VerifyError(IrError):
    """A pass left a product that breaks an invariant the next pass relies on (a compiler bug)."""


def _fail(pass_name: str, msg: str):
    raise VerifyError(f"after pass {pass_name}: {msg}")


# ------------------------------------------------------------------------------------------- graph
def machine_dialect(pass_name: str, g, lowered_prims) -> None:
    """Only primitives the backend lowers, each in the form its lowering takes."""
    from .backend.decompose import MACHINE_BINARY, MACHINE_UNARY

    lowered = set(lowered_prims)
    for e in g.eqns:
        if e.prim not in lowered:
            _fail(pass_name, f"{e!r}: prim {e.prim!r} is not in the machine dialect (the backend lowers: "
                  f"{', '.join(sorted(lowered))})")
        if e.prim == "unary" and e.params.get("op") not in MACHINE_UNARY:
            _fail(pass_name, f"{e!r}: unary op {e.params.get('op')!r} has no VXM function (valid: "
                  f"{', '.join(MACHINE_UNARY)})")
        if e.prim == "binary" and e.params.get("op") not in MACHINE_BINARY:
            _fail(pass_name, f"{e!r}: binary op {e.params.get('op')!r} has no VXM function (valid: "
                  f"{', '.join(MACHINE_BINARY)})")
        if e.prim == "reduce" and (e.params.get("op") not in ("sum", "max") or tuple(e.params.get("axes", ())) != (-1,)
                                   or not e.params.get("keepdims", True)):
            _fail(pass_name, f"{e!r}: the machine reduces by sum or max over the last axis, keeping it")
        if e.prim == "where":
            y = e.inputs[2]
            if y not in g.consts or g.consts[y].size != 1:
                _fail(pass_name, f"{e!r}: where's third operand must be a scalar constant (the select's fill)")
        if e.prim == "linear" and (e.inputs[1] not in g.consts or (len(e.inputs) == 3 and e.inputs[2] not in g.consts)):
            _fail(pass_name, f"{e!r}: a linear's weight and bias must be constants")


# ------------------------------------------------------------------------------------------- plan
def plan(pass_name: str, g, p) -> None:
    """Every equation has a home; every value that crosses chips has a transfer."""
    from .backend.partition import lowered_on

    if len(p.hold) != p.chips:
        _fail(pass_name, f"the plan holds values for {len(p.hold)} chips but maps onto {p.chips}")
    for v in sorted(p.rowsplit):
        if v not in g.vars:
            _fail(pass_name, f"row-split value {v!r} is not a value of the graph")
    for e in g.eqns:
        out = e.outputs[0]
        chips = lowered_on(p, out)
        if not chips:
            _fail(pass_name, f"{e!r}: no chip computes {out!r} (it has no home)")
        if p.staged and out not in p.owner:
            _fail(pass_name, f"{e!r}: {out!r} belongs to no pipeline stage")
        for c in chips:
            for k, v in enumerate(e.inputs):
                if v not in g.vars or v in g.inputs or v in p.hold[c]:
                    continue
                if k == 0 and e.prim == "linear" and out in p.rowsplit:
                    continue  # a row-split linear's chip without its part of the input adds zeros
                src = p.transfers.get((v, c))
                if src is None:
                    _fail(pass_name, f"{e!r} runs on chip {c}, which neither holds {v!r} nor receives it (no transfer)")
                if v not in p.hold[src] and (v, src) not in p.transfers:
                    _fail(pass_name, f"the transfer of {v!r} to chip {c} comes from chip {src}, which neither holds "
                                     f"it nor receives it")
                if p.staged and not p.owner.get(v, -1) < p.owner[out]:
                    _fail(pass_name, f"the transfer of {v!r} to chip {c} goes from stage {p.owner.get(v)} to stage "
                          f"{p.owner[out]}: a value only moves to a later stage")
    for (v, c), src in sorted(p.transfers.items()):
        if not (0 <= c < p.chips and 0 <= src < p.chips) or src == c:
            _fail(pass_name, f"the transfer of {v!r} from chip {src} to chip {c} names no pair of chips")
        seen = {c}
        while v not in p.hold[src]:  # a gateway: it receives v itself, from a chip that has it in the end
            if src in seen or (v, src) not in p.transfers:
                _fail(pass_name, f"the transfer of {v!r} to chip {c} passes gateways {sorted(seen)} that never reach "
                                 f"a chip holding it")
            seen.add(src)
            src = p.transfers[(v, src)]


# ------------------------------------------------------------------------------------------- buffers
def buffers(pass_name: str, lowered, hw) -> None:
    """Sizes, types, one owner each."""
    chips = hw.system.chips
    nb = len(lowered.code)
    for i, b in enumerate(lowered.buffers):
        what = f"buffer {i} ({b.name!r})"
        if b.id != i:
            _fail(pass_name, f"{what} has id {b.id}; a buffer's id is its position (the region it becomes)")
        if not 0 <= b.chip < chips:
            _fail(pass_name, f"{what} is on chip {b.chip}; the program has chips 0..{chips - 1}")
        if b.rows < 1 or b.row_vectors < 1 or b.width < 1:
            _fail(pass_name, f"{what} has {b.rows} rows of {b.row_vectors} vectors striped over {b.width} banks; all "
                  f"must be at least 1")
        if b.dtype not in _NP:
            _fail(pass_name, f"{what} has element type {b.dtype!r}; valid: {', '.join(_NP)}")
        if b.kind not in KINDS:
            _fail(pass_name, f"{what} is of kind {b.kind!r}; valid: {', '.join(KINDS)}")
        if b.zone not in ZONES:
            _fail(pass_name, f"{what} asks for zone {b.zone!r}; valid: {', '.join(ZONES)}")
        if b.hemi is not None and b.hemi not in (0, 1):
            _fail(pass_name, f"{what} asks for hemisphere {b.hemi}; valid: 0 (West), 1 (East) or none")
        if b.data is not None:
            if b.data.size > b.vectors * VECTOR_LANES:
                _fail(pass_name, f"{what} has {b.data.size} initial elements but room for {b.vectors * VECTOR_LANES}")
            if b.dtype in ("fp16", "i8", "fp8") and b.data.dtype != _NP[b.dtype]:
                _fail(pass_name, f"{what} is {b.dtype} but its initial data is {b.data.dtype}")
        owner = lowered.bucket_of.get(i)
        if b.shared and i in lowered.bucket_of:
            _fail(pass_name, f"{what} is shared by every bucket but also owned by bucket {owner}")
        if not b.shared and (owner is None or not 0 <= owner < nb):
            _fail(pass_name, f"{what} belongs to no bucket of the program (owner {owner}; buckets 0..{nb - 1})")


# ------------------------------------------------------------------------------------------- instructions
def _operands(ins) -> list[str]:
    """The region fields an instruction really reads or writes (isa.table.region_used says which)."""
    return [f.name for f in ins.spec.fmt.fields if f.region and region_used(ins.op, f.name, ins.args)]


def instructions(pass_name: str, lowered, hw) -> None:
    """Queues valid, operands existing on the instruction's chip and bucket, offsets inside them."""
    queues = set(hw.queues)
    bufs = lowered.buffers
    for b, code in enumerate(lowered.code):
        if len(code) != hw.system.chips:
            _fail(pass_name, f"bucket {b} has code for {len(code)} chips, the program has {hw.system.chips}")
        for chip, nodes in enumerate(code):
            for n in nodes:
                ins = n.instr
                where = f"bucket {b} chip {chip}: {ins.op} ({n.tag or 'untagged'})"
                if n.chip != chip:
                    _fail(pass_name, f"{where}: the node says chip {n.chip} but sits in chip {chip}'s code")
                spec = BY_MNEMONIC.get(ins.op)
                if spec is None or spec.family != n.family:
                    _fail(pass_name, f"{where}: an instruction of family {spec.family if spec else '?'} given to the "
                          f"{n.family} family")
                if ins.op == "DESKEW":
                    _fail(pass_name, f"{where}: lowering emits no DESKEW (the scheduler owns the links' deskews)")
                if n.queue is None:
                    if n.family not in ("vxm", "mem"):
                        _fail(pass_name, f"{where}: a {n.family} instruction must name its queue (only VXM and MEM "
                              f"queues are interchangeable)")
                else:
                    try:
                        fam, _ = parse_queue(n.queue)
                    except IsaError as exc:
                        _fail(pass_name, f"{where}: {exc}")
                    if fam != n.family or n.queue not in queues:
                        _fail(pass_name, f"{where}: queue {n.queue!r} is not a {n.family} queue of this chip "
                              f"(queues: {', '.join(q for q in hw.queues if parse_queue(q)[0] == n.family)})")
                for k in _operands(ins):
                    r = ins[k]
                    if not 0 <= r < len(bufs):
                        _fail(pass_name, f"{where}: {k} = {r} names no buffer (buffers 0..{len(bufs) - 1})")
                    buf = bufs[r]
                    if buf.chip != chip:
                        _fail(pass_name, f"{where}: {k} names {buf.name!r}, which is on chip {buf.chip}")
                    owner = lowered.bucket_of.get(r)
                    if not buf.shared and owner != b:
                        _fail(pass_name, f"{where}: {k} names {buf.name!r}, which belongs to bucket {owner}")
                _extent(pass_name, where, ins, bufs)


def _extent(pass_name, where, ins, bufs) -> None:
    """Direct (not runtime-indexed) accesses stay inside their buffers."""
    a = ins.args
    def need(ok, msg):
        if not ok:
            _fail(pass_name, f"{where}: {msg}")
    if ins.op in ("VXM", "SXM", "COPY"):
        d = bufs[a["dst_reg"]]
        need(a["dst_off"] + a["n"] <= d.vectors, f"writes vectors {a['dst_off']}..{a['dst_off'] + a['n'] - 1} of "
             f"{d.name!r}, which has {d.vectors}")
    elif ins.op == "ACC":
        x = bufs[a["x_reg"]]
        need(a["x_off"] < x.vectors, f"reads vector {a['x_off']} of {x.name!r}, which has {x.vectors}")
    elif ins.op == "EMIT":
        d = bufs[a["dst_reg"]]
        need(a["dst_off"] < d.vectors, f"writes vector {a['dst_off']} of {d.name!r}, which has {d.vectors}")
    elif ins.op == "LW":
        w = bufs[a["src_reg"]]
        need(a["row0"] + a["rows"] <= w.rows and a["col"] < w.row_vectors,
             f"loads rows {a['row0']}..{a['row0'] + a['rows'] - 1}, column {a['col']} of {w.name!r} "
             f"({w.rows} x {w.row_vectors})")
    elif ins.op in ("SEND", "RECV"):
        r = bufs[a["src_reg" if ins.op == "SEND" else "dst_reg"]]
        off = a["src_off" if ins.op == "SEND" else "dst_off"]
        need(off + a["n"] <= r.vectors, f"moves vectors {off}..{off + a['n'] - 1} of {r.name!r}, which has {r.vectors}")


# ------------------------------------------------------------------------------------------- placement
def placement(pass_name: str, lowered, regions, hw) -> None:
    """One region per buffer, of its shape, inside the SRAM; live regions never share a bank address."""
    bufs = lowered.buffers
    if len(regions) != len(bufs):
        _fail(pass_name, f"{len(regions)} regions for {len(bufs)} buffers")
    per_bank: dict[tuple[int, int], list] = defaultdict(list)
    for b, r in zip(bufs, regions):
        what = f"region {getattr(r, 'id', b.id)} ({getattr(r, 'name', b.name)!r})"
        if r is None or r.id != b.id or r.chip != b.chip or r.rows != b.rows or r.row_vectors != b.row_vectors \
                or r.dtype != b.dtype:
            _fail(pass_name, f"{what} does not have the id, chip, shape and type of buffer {b.id} ({b.name!r})")
        if not (0 <= r.bank and r.bank + min(r.width, r.rows) <= hw.banks and r.width >= 1 and r.addr >= 0):
            _fail(pass_name, f"{what} spans banks {r.bank}..{r.bank + min(r.width, r.rows) - 1}; the chip has "
                  f"0..{hw.banks - 1}")
        for k in range(min(r.width, r.rows)):  # addresses count vectors
            per_bank[(r.chip, r.bank + k)].append((r.addr, r.addr + r.addresses_per_bank(), r.id,
                                                   lowered.bucket_of.get(r.id)))
    for (chip, bank), spans in sorted(per_bank.items()):
        # a bucket's regions and the shared ones are live together; two buckets' regions never are
        owners = sorted({o for *_, o in spans if o is not None}) or [None]
        for owner in owners:
            live = sorted(x for x in spans if x[3] is None or x[3] == owner)
            for (lo0, hi0, r0, _), (lo1, hi1, r1, _) in zip(live, live[1:]):
                if lo1 < hi0:
                    _fail(pass_name, f"regions {r0} ({regions[r0].name!r}) and {r1} ({regions[r1].name!r}) share "
                          f"addresses {lo1}..{min(hi0, hi1) - 1} of bank {bank} on chip {chip}")


# ------------------------------------------------------------------------------------------- schedule
def schedule(pass_name: str, scheduled) -> None:
    """Each queue issues its instructions in order, each after the previous one's busy time."""
    for b, s in enumerate(scheduled):
        last: dict = {}
        order = sorted(range(len(s.nodes)), key=lambda i: (s.nodes[i].chip, s.queue[i] or "", int(s.issue[i]), i))
        for i in order:
            if s.issue[i] < 0 or s.queue[i] is None:
                _fail(pass_name, f"bucket {b}: {s.nodes[i].instr.op} on chip {s.nodes[i].chip} was never scheduled")
            key = (s.nodes[i].chip, s.queue[i])
            if key in last:
                j = last[key]
                if s.issue[j] + int(s.busy[j]) > s.issue[i]:
                    _fail(pass_name, f"bucket {b} chip {key[0]} queue {key[1]}: {s.nodes[i].instr.op} issues at cycle "
                          f"{int(s.issue[i])}, before the previous {s.nodes[j].instr.op} (cycle {int(s.issue[j])}, "
                          f"busy {int(s.busy[j])}) frees the queue")
            last[key] = i


__all__ = ["VerifyError", "buffers", "instructions", "machine_dialect", "placement", "plan", "schedule"]
