"""Instruction-level traces in the Trace Event Format (Perfetto, chrome://tracing).

One process per chip, one thread (track) per issue queue of the program (ICU, MEM, VXM, SXM, each MXM unit's
weight and activation queues, each link's send and receive queues); one complete ("X") slice per instruction,
runs of identical instructions back to back on a queue merged into one slice (``args.count``); a flow arrow
from every SEND to the RECV that takes its first vector; instant markers per token, per pipeline stage (where
a stage's chips start the token) and per layer (the first instruction of an operation of that layer, by the
program's provenance). Times are microseconds at the program's clock; every slice's
``args.cycles`` holds its exact cycles (the durations of a queue's slices add up to its busy cycles). Each slice
is named by its mnemonic (and ALU function), with the instruction's operands (``args.instr``, the first of a
merged run), its tensor (``args.tensor``: the region it writes, or for LW/ACC/SEND the one it reads) and, from
the program's provenance, the operation it belongs to (``args.operation``: the ONNX node's output name, with
its ``kind`` and ``layer``); a merged run never crosses operations.

Everything comes from the program's streams and the emulator's checked schedule (lpu/emulator), not from
the compiler: a trace of a program file is the program's.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isa import BY_OPCODE, decode_fields, decode_many, disasm_instr
from isa.table import SXM_BY_CODE, VXM_BY_CODE

DEFAULT_LIMIT_BYTES = 200 * 2**20
EVENT_BYTES = 260  # a slice's JSON with its args, measured on GPT-2 small's traces (for the size check)
_TENSOR_FIELD = {"VXM": "dst_reg", "SXM": "dst_reg", "EMIT": "dst_reg", "COPY": "dst_reg", "GATHER": "dst_reg",
                 "SCATTER": "table_reg", "SCATCOL": "table_reg", "RECV": "dst_reg", "SEND": "src_reg",
                 "LW": "src_reg", "ACC": "x_reg"}


class TraceError(ValueError):
    """A trace that cannot be written as asked (too big, an empty selection, a bad range)."""


@dataclass(frozen=True)
class Selection:
    """What to trace: chips (None: all), a cycle window [lo, hi) on the trace's time line (None: all), layers
    (None: all; otherwise only slices whose tensor belongs to one of these layers)."""

    chips: frozenset[int] | None = None
    cycles: tuple[int, int] | None = None
    layers: frozenset[int] | None = None


def parse_range(text: str, what: str) -> tuple[int, int]:
    """'A:B' -> (A, B), half-open; 'A:' -> (A, huge); a single 'A' -> (A, A + 1)."""
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            lo, hi = int(a or 0), (int(b) if b else 2**62)
        else:
            lo = int(text)
            hi = lo + 1
    except ValueError:
        raise TraceError(f"{what} {text!r}: expected A:B (half-open), A: or A, with integers") from None
    if lo < 0 or hi <= lo:
        raise TraceError(f"{what} {text!r}: expected 0 <= A < B")
    return lo, hi


def parse_list(text: str, what: str, n: int) -> frozenset[int]:
    """'0,2,5:8' -> {0, 2, 5, 6, 7}, each below n."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, hi = parse_range(part, what)
        out.update(range(lo, min(hi, n)))
        if lo >= n:
            raise TraceError(f"{what} {text!r}: {lo} is outside 0..{n - 1}")
    if not out:
        raise TraceError(f"{what} {text!r}: selects nothing")
    return frozenset(out)


def _fn_name(op: str, fn: int) -> str:
    table = VXM_BY_CODE if op == "VXM" else SXM_BY_CODE if op == "SXM" else None
    if table is None:
        return op
    f = table.get(int(fn))
    return f"{op} {f.name if f else fn}"


class TraceBuilder:
    """Collects the events of successive tokens (each a bucket's checked schedule) on one time line."""

    def __init__(self, program, selection: Selection = Selection(), limit_bytes: int = DEFAULT_LIMIT_BYTES):
        h = program.header
        self.program = program
        self.sel = selection
        self.limit = int(limit_bytes)
        self.clock = float(h["hw"]["clock_hz"])
        self.queues = list(h["queues"])
        self.chips = int(h["chips"])
        self.numbering = program.numbering()
        self.names = [r.name for r in program.regions]
        stages = int(h.get("stages", 1) or 1)
        used = int(h.get("chips_used") or self.chips)
        self.per_stage = max(1, used // stages) if stages > 1 else self.chips
        self.stages = stages
        self.events: list[dict] = []
        self.offset = 0  # cycles of the tokens already added
        self.tokens = 0
        self.flow_id = 0
        self._fields: dict = {}
        self._meta()

    def us(self, cycles) -> float:
        return float(cycles) * 1e6 / self.clock

    def _meta(self) -> None:
        for c in range(self.chips):
            if self.sel.chips is not None and c not in self.sel.chips:
                continue
            label = f"chip {c}" + (f" (stage {c // self.per_stage})" if self.stages > 1 else "")
            self.events.append({"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": label}})
            self.events.append({"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}})
            for qi, q in enumerate(self.queues):
                self.events.append({"ph": "M", "name": "thread_name", "pid": c, "tid": qi, "args": {"name": q}})
                self.events.append({"ph": "M", "name": "thread_sort_index", "pid": c, "tid": qi,
                                    "args": {"sort_index": qi}})

    def _stream_fields(self, bucket: int, chip: int, queue: str) -> dict:
        key = (bucket, chip, queue)
        f = self._fields.get(key)
        if f is None:
            f = decode_fields(self.program.streams[key], chip, self.numbering)
            self._fields[key] = f
        return f

    def add_token(self, sched, cycles: int, label: str) -> None:
        """One token: the bucket's schedule `sched`, lasting `cycles`, placed after the tokens before it."""
        lo, hi = self.sel.cycles or (0, 2**62)
        t0, t1 = self.offset, self.offset + int(cycles)
        self.tokens += 1
        if t1 <= lo or t0 >= hi:
            self.offset = t1
            return
        b = int(sched.bucket)
        chip, qidx, pos = sched.chip, sched.qidx, sched.pos
        issue = sched.issue + t0
        busy = sched.busy
        keep = (issue + busy > lo) & (issue < hi)
        if self.sel.chips is not None:
            keep &= np.isin(chip, np.fromiter(self.sel.chips, dtype=np.int64))
        sel = np.nonzero(keep)[0]
        # the size check before any event is made: slices are at most the instructions selected
        budget = (self.limit - len(self.events) * EVENT_BYTES) // EVENT_BYTES
        self.events.append({"ph": "i", "s": "g", "name": label, "pid": 0, "tid": 0, "ts": self.us(t0),
                            "cat": "token", "args": {"bucket": b, "cycles": int(cycles)}})
        slice_of = np.full(sched.n, -1, dtype=np.int64)  # schedule index -> (its slice's first) schedule index
        stage_first: dict[int, int] = {}
        layer_first: dict[int, int] = {}
        n_slices = 0
        order = sel[np.lexsort((pos[sel], qidx[sel], chip[sel]))]
        if order.size:
            cq = chip[order] * len(self.queues) + qidx[order]
            cuts = np.nonzero(np.diff(cq))[0] + 1
            groups = np.split(order, cuts)
        else:
            groups = []
        pending = []
        for g in groups:
            c, q = int(chip[g[0]]), self.queues[int(qidx[g[0]])]
            f = self._stream_fields(b, c, q)
            p = pos[g]
            opc = f["opcode"][p]
            fn = f["fn"][p] if "fn" in f else np.zeros(p.size, np.int64)
            prov = self.program.provenance.get((b, c, q))
            opid = prov[p].astype(np.int64) if prov is not None else np.full(p.size, -1, np.int64)
            key = (opid + 1) * 4096 + opc * 64 + fn  # a merged run stays within one operation
            st, du = issue[g], busy[g]
            brk = np.ones(g.size, dtype=bool)
            brk[1:] = (key[1:] != key[:-1]) | (st[1:] != st[:-1] + du[:-1])
            starts = np.nonzero(brk)[0]
            n_slices += starts.size
            if n_slices > budget:
                raise TraceError(f"the trace would pass {self.limit / 2**20:.3g} MB within {self.tokens} traced "
                                 f"token(s) (about {EVENT_BYTES} bytes a slice): narrow it with --trace-tokens, --trace-chips, "
                                 "--trace-layers or --trace-cycles, or raise --trace-limit")
            ends = np.append(starts[1:], g.size)
            slice_of[g] = g[np.repeat(starts, ends - starts)]
            pending.append((c, q, g, p, opc, fn, st, du, starts, ends, f, opid))
            s0 = c // self.per_stage
            if self.stages > 1 and (s0 not in stage_first or st[0] < issue[stage_first[s0]]):
                stage_first[s0] = int(g[0])
        ops = self.program.header.get("ops") or []
        for c, q, g, p, opc, fn, st, du, starts, ends, f, opid in pending:
            qi = self.queues.index(q)
            words = self.program.streams[(b, c, q)]
            firsts = decode_many(words[p[starts]], c, self.numbering) if starts.size else []
            for k, (a, e) in enumerate(zip(starts, ends)):
                ins = firsts[k]
                op = BY_OPCODE[int(opc[a])].mnemonic
                name = _fn_name(op, fn[a])
                cyc = int(st[e - 1] + du[e - 1] - st[a])
                args = {"instr": disasm_instr(ins), "cycles": cyc, "count": int(e - a), "issue_cycle": int(st[a])}
                tf = _TENSOR_FIELD.get(op)
                layer = None
                if tf is not None:
                    tensor = self.names[int(f[tf][p[a]])]
                    args["tensor"] = tensor
                o = int(opid[a])
                if 0 <= o < len(ops):  # the program's provenance: the operation, its kind and layer
                    args["operation"], args["kind"] = ops[o]["name"], ops[o]["kind"]
                    layer = ops[o]["layer"]
                if layer is not None:
                    args["layer"] = layer
                if self.sel.layers is not None and layer not in self.sel.layers:
                    slice_of[g[a:e]] = -1  # not traced: no flow arrow ends on it
                    continue
                if layer is not None and (layer not in layer_first or st[a] < issue[layer_first[layer]]):
                    layer_first[layer] = int(g[a])
                self.events.append({"ph": "X", "name": name, "cat": op.lower(), "pid": c, "tid": qi,
                                    "ts": self.us(st[a]), "dur": self.us(cyc), "args": args})
        for s, i in sorted(stage_first.items()):
            self.events.append({"ph": "i", "s": "p", "name": f"stage {s}", "cat": "stage", "pid": int(chip[i]),
                                "tid": int(qidx[i]), "ts": self.us(issue[i])})
        for layer, i in sorted(layer_first.items()):
            self.events.append({"ph": "i", "s": "p", "name": f"layer {layer}", "cat": "layer", "pid": int(chip[i]),
                                "tid": int(qidx[i]), "ts": self.us(issue[i])})
        self._flows(sched, issue, slice_of)
        self.offset = t1

    def _flows(self, sched, issue, slice_of) -> None:
        """SEND -> RECV arrows: each SEND's to the RECV that takes its first vector (links keep their order)."""
        from .emulator.schedule import link_partners

        s, r = sched.sends, sched.recvs
        for si, ri, _ in link_partners(sched, from_sends=True):
            a, z = int(s["instr"][si]), int(r["instr"][ri])
            if slice_of[a] < 0 or slice_of[z] < 0:  # an end outside the selection
                continue
            self.flow_id += 1
            for ph, i, extra in (("s", a, {}), ("f", z, {"bp": "e"})):
                self.events.append({"ph": ph, "id": self.flow_id, "name": "link", "cat": "c2c",
                                    "pid": int(sched.chip[i]), "tid": int(sched.qidx[i]), "ts": self.us(issue[i]),
                                    **extra})

    def document(self, **info) -> dict:
        return {"traceEvents": self.events, "displayTimeUnit": "ns",
                "otherData": {"clock_hz": self.clock, "chips": self.chips, "tokens": self.tokens, **info}}

    def write(self, path, **info) -> int:
        """Write the trace atomically (a temporary file renamed into place); returns its bytes."""
        path = Path(path)
        text = json.dumps(self.document(**info), separators=(",", ":"))
        if len(text) > self.limit:
            raise TraceError(f"the trace is {len(text) / 2**20:.3g} MB, over {self.limit / 2**20:.3g} MB: narrow it "
                             "with --trace-tokens, --trace-chips, --trace-layers or --trace-cycles, or raise "
                             "--trace-limit")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(text)


def selection(program, chips: str | None = None, cycles: str | None = None, layers: str | None = None) -> Selection:
    """The CLI's --trace-chips / --trace-cycles / --trace-layers, checked against the program."""
    n = int(program.header["chips"])
    return Selection(chips=None if chips is None else parse_list(chips, "--trace-chips", n),
                     cycles=None if cycles is None else parse_range(cycles, "--trace-cycles"),
                     layers=None if layers is None else parse_list(layers, "--trace-layers", 1 << 30))


def check_path(path) -> None:
    """Fail before the work if the trace cannot be written where asked."""
    parent = Path(path).parent
    if Path(path).is_dir():
        raise TraceError(f"--trace {path}: is a directory; give a file name, e.g. {Path(path) / 'trace.json'}")
    if not parent.is_dir():
        raise TraceError(f"--trace {path}: the directory {parent} does not exist")


def trace_tokens(program, emulator, buckets: list[int], cycles: list[int], path, sel: Selection = Selection(),
                 tokens: tuple[int, int] | None = None, limit_bytes: int = DEFAULT_LIMIT_BYTES,
                 labels: list[str] | None = None) -> dict:
    """Trace tokens i in `tokens` (half-open; None: all) of a run whose token i ran bucket `buckets[i]` for
    `cycles[i]` cycles, from the emulator's checked schedules; write it to `path`. Returns a summary."""
    lo, hi = tokens or (0, len(buckets))
    if lo >= len(buckets):
        raise TraceError(f"--trace-tokens {lo}:{hi}: the run has {len(buckets)} token(s), numbered from 0")
    hi = min(hi, len(buckets))
    tb = TraceBuilder(program, sel, limit_bytes)
    for i in range(lo, hi):
        tb.add_token(emulator.schedule(buckets[i]), cycles[i], labels[i] if labels else f"token {i}")
    slices = sum(1 for e in tb.events if e["ph"] == "X")
    flows = sum(1 for e in tb.events if e["ph"] == "s")
    if not slices:
        raise TraceError("the selection traces no instruction: widen --trace-chips, --trace-cycles or --trace-layers")
    size = tb.write(path, first_token=lo)
    return {"path": os.fspath(path), "bytes": size, "tokens": hi - lo, "slices": slices, "flows": flows}
