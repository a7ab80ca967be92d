"""Text assembler and disassembler, derived from the instruction table.

One instruction per line: the mnemonic, then every field of its format as name=value in table order.
ALU functions print by name (fn=add); floats print in their shortest round-trip form, or as f32:0xXXXXXXXX
when not finite. A program's text also carries its header, regions and symbols (not the SRAM image):

    .header {json}
    .region {json}
    .symbol {json}
    .stream bucket=B chip=C queue=Q
        VXM fn=add queue=0 dst_reg=4 ...

Region operands print as program-wide region ids (the .region lines' ids); the words hold them
chip-locally (isa.encoding), and assembling converts back. Assembling a disassembly gives back the same
instruction words, regions, symbols and header.
"""
from __future__ import annotations

from collections.abc import Iterator

import json
import math
import struct

import numpy as np

from .encoding import Instr, RegionNumbering, encode_many
from .errors import IsaError
from .program import Program, Region, Shard, Symbol
from .table import BY_MNEMONIC, SXM_BY_CODE, SXM_BY_NAME, VXM_BY_CODE, VXM_BY_NAME

_FN_TABLES = {"VXM": (VXM_BY_CODE, VXM_BY_NAME), "SXM": (SXM_BY_CODE, SXM_BY_NAME)}


def _fmt_float(v: float) -> str:
    if math.isfinite(v):
        return repr(float(v))
    return "f32:0x%08x" % struct.unpack("<I", struct.pack("<f", v))[0]


def _parse_float(s: str) -> float:
    if s.startswith("f32:"):
        return struct.unpack("<f", struct.pack("<I", int(s[4:], 16)))[0]
    return float(s)


def disasm_instr(ins: Instr) -> str:
    parts = [ins.op]
    by_code = _FN_TABLES.get(ins.op, (None, None))[0]
    for f in ins.spec.fmt.fields:
        v = ins[f.name]
        if f.name == "fn" and by_code is not None and v in by_code:
            parts.append(f"fn={by_code[v].name}")
        elif f.kind == "f":
            parts.append(f"{f.name}={_fmt_float(v)}")
        else:
            parts.append(f"{f.name}={v}")
    return " ".join(parts)


def asm_instr(line: str, where: str = "") -> Instr:
    toks = line.split()
    if not toks:
        raise IsaError(f"{where}empty instruction")
    op = toks[0].upper()
    spec = BY_MNEMONIC.get(op)
    if spec is None:
        raise IsaError(f"{where}unknown instruction {toks[0]!r}; valid: {', '.join(sorted(BY_MNEMONIC))}")
    kinds = {f.name: f.kind for f in spec.fmt.fields}
    args = {}
    for t in toks[1:]:
        if "=" not in t:
            raise IsaError(f"{where}{op}: expected name=value, got {t!r}")
        k, v = t.split("=", 1)
        if k not in kinds:
            raise IsaError(f"{where}{op}: unknown field {k!r}; fields are {', '.join(kinds)}")
        try:
            if k == "fn" and op in _FN_TABLES and not v.lstrip("-").isdigit():
                fn = _FN_TABLES[op][1].get(v)
                if fn is None:
                    raise IsaError(f"{where}{op}: unknown fn {v!r}; valid: {', '.join(_FN_TABLES[op][1])}")
                args[k] = fn.code
            elif kinds[k] == "f":
                args[k] = _parse_float(v)
            else:
                args[k] = int(v, 0)
        except ValueError:
            raise IsaError(f"{where}{op}: field {k} has a malformed value {v!r}") from None
    try:
        return Instr(op, **args)
    except IsaError as exc:
        raise IsaError(f"{where}{exc}") from None


def disassemble(program: Program) -> str:
    out = ["; LPU program disassembly (`lpu disasm`); assemble with isa.asm.assemble",
           ".header " + json.dumps(program.header, sort_keys=True, separators=(",", ":"))]
    for r in program.regions:
        out.append(".region " + json.dumps({k: getattr(r, k) for k in r.__slots__}, separators=(",", ":")))
    for s in program.symbols.values():
        d = {"name": s.name, "kind": s.kind, "dtype": s.dtype, "shape": list(s.shape),
             "shards": [{k: getattr(x, k) for k in x.__slots__} for x in s.shards]}
        out.append(".symbol " + json.dumps(d, separators=(",", ":")))
    numbering = program.numbering()
    for (b, c, q) in sorted(program.streams):
        out.append(f".stream bucket={b} chip={c} queue={q}")
        out.extend("    " + disasm_instr(i) for i in program.instrs((b, c, q), numbering))
    return "\n".join(out) + "\n"


def listing(program: Program, buckets=None, chips=None, queues=None, cycles=None) -> Iterator[str]:
    """A timed listing of some streams (`lpu disasm` with --bucket/--chip/--queue/--cycles): per instruction
    its issue cycle (each queue issues back to back: the running sum of busy cycles, NOPs included), chip,
    queue and disassembly, and the operation it belongs to when the program records provenance. `cycles`
    (lo, hi) keeps the instructions busy in [lo, hi). Not a form `assemble` reads."""
    from .timing import Machine

    m = Machine(program.header["hw"], program.regions)
    numbering = program.numbering()
    ops = program.header.get("ops") or []
    lo, hi = cycles or (0, 1 << 62)
    yield "; bucket chip queue    cycle  busy  instruction  ; operation"
    for (b, c, q) in sorted(program.streams):
        if (buckets is not None and b not in buckets) or (chips is not None and c not in chips) or \
                (queues is not None and q not in queues):
            continue
        prov = program.provenance.get((b, c, q))
        t = 0
        for k, ins in enumerate(program.instrs((b, c, q), numbering)):
            busy = m.profile(ins, q).busy
            if t >= hi:
                break
            if t + busy > lo:
                note = ""
                if prov is not None and prov[k] >= 0 and int(prov[k]) < len(ops):
                    o = ops[int(prov[k])]
                    note = f"  ; {o['kind']}: {o['name']}"
                yield f"{b:>6} {c:>4} {q:<6} {t:>8} {busy:>5}  {disasm_instr(ins)}{note}"
            t += busy


def assemble(text: str) -> Program:
    """A Program (without an SRAM image) from its text form."""
    header, regions, symbols, streams = None, [], {}, {}
    current, body = None, []

    bodies = {}

    def flush():
        if current is not None:
            bodies[current] = body

    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        where = f"line {no}: "
        try:
            if line.startswith(".header "):
                header = json.loads(line[8:])
            elif line.startswith(".region "):
                regions.append(Region(**json.loads(line[8:])))
            elif line.startswith(".symbol "):
                d = json.loads(line[8:])
                symbols[d["name"]] = Symbol(d["name"], d["kind"], d["dtype"], tuple(d["shape"]),
                                            tuple(Shard(**x) for x in d["shards"]))
            elif line.startswith(".stream "):
                flush()
                kv = dict(t.split("=", 1) for t in line.split()[1:])
                current, body = (int(kv["bucket"]), int(kv["chip"]), kv["queue"]), []
            elif line.startswith("."):
                raise IsaError(f"{where}unknown directive {line.split()[0]!r}")
            else:
                if current is None:
                    raise IsaError(f"{where}instruction outside a .stream")
                body.append(asm_instr(line, where))
        except (ValueError, TypeError, KeyError) as exc:
            raise IsaError(f"{where}malformed directive ({exc})") from None
    flush()
    if header is None:
        raise IsaError("no .header line")
    try:
        numbering = RegionNumbering.of(regions, int(header["chips"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise IsaError(f"malformed .header ({exc})") from None
    for key, body in bodies.items():
        try:
            streams[key] = encode_many(body, key[1], numbering) if body else np.zeros((0, 4), dtype=np.uint64)
        except IsaError as exc:
            raise IsaError(f".stream bucket={key[0]} chip={key[1]} queue={key[2]}: {exc}") from None
    return Program(header, regions, symbols, streams, [])
