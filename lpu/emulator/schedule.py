"""A bucket program as flat arrays: every instruction's issue cycle, execution order and timing profile.

Issue cycles come from the streams alone (a queue's next instruction issues `busy` cycles after the
previous one, isa.timing.Machine.profile); the execution order of the whole machine is the sort by
(issue cycle + the profile's commit cycle, chip, queue index in header['queues'], position in stream).
Profiles are computed once per template (see Profiler) and expanded with numpy, so 100k instructions cost
well under a second of Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isa import BY_OPCODE, IsaError, Machine, Program, decode_fields, decode_many, disasm_instr, parse_queue
from isa.table import FAMILIES
from isa.timing import PSEUDO_ACC, PSEUDO_ACTIVE, PSEUDO_SHADOW

from . import kernels as K
from .errors import EmulationError

# Columns of an access run (one isa.timing.Access, shifted to absolute cycles)
RUN_FIELDS = ("region", "off", "count", "t0", "write", "stride", "mode", "m", "num", "den", "hold", "ready", "whole", "unit")
PSEUDO_NAMES = {PSEUDO_SHADOW: "shadow tile", PSEUDO_ACTIVE: "active tile", PSEUDO_ACC: "accumulator slot"}
_FIELD_COLUMNS = K.COLUMNS[3:]


class _Ins:
    """The two attributes Machine.profile reads from an instruction (cheaper than isa.Instr)."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, args: dict) -> None:
        self.op = op
        self.args = args


# Fields that only move an access (Access.off = a linear function of them) in the current timing model.
# The Profiler does not trust that: it measures the dependence by probing and falls back to one profile
# per distinct instruction word when a class does not behave linearly.
OFFSET_FIELDS = ("dst_off", "a_off", "b_off", "src_off", "map_off", "x_off", "idx_off", "slot", "row0", "col")
_EXACT = -1


def _commit(p) -> int:
    """Cycle after issue at which the instruction takes effect in execution order (0 before isa had it)."""
    return int(getattr(p, "commit", 0))
_PROFILE_ERRORS = (IsaError, IndexError, KeyError, ValueError, ZeroDivisionError)


class Profiler:
    """Memoised Machine.profile over one program.

    Instructions that differ only in offset fields share a *template*: the profile at offsets 0 plus, per
    access, how far each offset field moves it (measured with probe values 1 and 2, checked linear, and
    checked against the exact profile of the first instruction of the class). Classes that fail any of
    those checks get one exact profile per distinct instruction word.
    """

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.templates: dict[tuple[str, int], dict[tuple, int]] = {}
        self.exact: dict[tuple[str, int], dict[tuple, int]] = {}
        self.busy: list[int] = []
        self.commit: list[int] = []
        self.runs: list[list[tuple]] = []
        self.coef: list[list[tuple]] = []
        self.send: list[tuple | None] = []
        self.recv: list[tuple | None] = []

    def _profile(self, op: str, names, vals, queue: str):
        return self.machine.profile(_Ins(op, dict(zip(names, vals))), queue)

    @staticmethod
    def _shape(p) -> tuple:
        """Everything of a profile except the access offsets."""
        return (p.busy, _commit(p), tuple((a.region, a.count, a.t0, a.write, a.stride, a.mode, a.m, a.num, a.den, a.hold, a.ready,
                               a.whole, a.unit) for a in p.accesses),
                None if p.send is None else (p.send.link, p.send.count, p.send.t0, p.send.per_vector, p.send.arrive),
                None if p.recv is None else (p.recv.link, p.recv.count, p.recv.t0, p.recv.per_vector))

    def _add(self, p, coef) -> int:
        self.busy.append(int(p.busy))
        self.commit.append(_commit(p))
        self.runs.append([(a.region, a.off, a.count, a.t0, int(a.write), a.stride, a.mode, a.m, a.num, a.den, a.hold,
                           a.ready, int(a.whole), a.unit) for a in p.accesses])
        zero = (0,) * len(OFFSET_FIELDS)
        self.coef.append([tuple(c) for c in coef] if coef is not None else [zero] * len(p.accesses))
        self.send.append(None if p.send is None else (p.send.link, p.send.count, p.send.t0, p.send.per_vector, p.send.arrive))
        self.recv.append(None if p.recv is None else (p.recv.link, p.recv.count, p.recv.t0, p.recv.per_vector))
        return len(self.busy) - 1

    def _template(self, op: str, names, norm: tuple, vals: tuple, offs, fcols, queue: str) -> int:
        real = self._profile(op, names, vals, queue)  # errors here belong to the instruction
        if not offs:
            return self._add(real, None)
        try:
            p0 = self._profile(op, names, norm, queue)
            shape = self._shape(p0)
            coef = [[0] * len(OFFSET_FIELDS) for _ in p0.accesses]
            for k, fc in zip(offs, fcols):
                probes = []
                for v in (1, 2):
                    pv = list(norm)
                    pv[k] = v
                    p = self._profile(op, names, tuple(pv), queue)
                    if self._shape(p) != shape:
                        return _EXACT
                    probes.append(p)
                for j, a in enumerate(p0.accesses):
                    d1 = probes[0].accesses[j].off - a.off
                    if probes[1].accesses[j].off - a.off != 2 * d1:
                        return _EXACT
                    coef[j][fc] = d1
        except _PROFILE_ERRORS:
            return _EXACT
        if self._shape(real) != shape:
            return _EXACT
        for j, a in enumerate(p0.accesses):
            if a.off + sum(coef[j][fc] * vals[k] for k, fc in zip(offs, fcols)) != real.accesses[j].off:
                return _EXACT
        return self._add(p0, coef)

    def group(self, queue: str, opc: int, op: str, names, rows):
        """Profile ids of a run of instructions of one opcode; stops at the first that the timing model
        rejects, returning (ids so far, message) — message None when all were accepted."""
        offs = [k for k, nm in enumerate(names) if nm in OFFSET_FIELDS]
        fcols = [OFFSET_FIELDS.index(names[k]) for k in offs]
        tmpl = self.templates.setdefault((queue, opc), {})
        exact = self.exact.setdefault((queue, opc), {})
        out = []
        for vals in rows:
            if offs:
                norm = list(vals)
                for k in offs:
                    norm[k] = 0
                norm = tuple(norm)
            else:
                norm = vals
            try:
                cid = tmpl.get(norm)
                if cid is None:
                    cid = self._template(op, names, norm, vals, offs, fcols, queue)
                    tmpl[norm] = cid
                if cid == _EXACT:
                    cid = exact.get(vals)
                    if cid is None:
                        cid = self._add(self._profile(op, names, vals, queue), None)
                        exact[vals] = cid
            except IsaError as exc:
                return out, str(exc)
            except IndexError:
                return out, f"names a region that does not exist (the program has regions 0..{len(self.machine.regions) - 1})"
            except (KeyError, ValueError, ZeroDivisionError) as exc:
                return out, f"cannot be timed ({type(exc).__name__}: {exc})"
            out.append(cid)
        return out, None

    def tables(self):
        n = len(self.busy)
        nruns = np.array([len(r) for r in self.runs], dtype=np.int64)
        flat = [x for r in self.runs for x in r]
        runs = np.array(flat, dtype=np.int64).reshape(len(flat), len(RUN_FIELDS))
        coef = np.array([c for r in self.coef for c in r], dtype=np.int64).reshape(len(flat), len(OFFSET_FIELDS))
        has_send = np.array([s is not None for s in self.send], dtype=bool)
        has_recv = np.array([s is not None for s in self.recv], dtype=bool)
        send = np.array([s if s is not None else (0, 0, 0, 0, 0) for s in self.send], dtype=np.int64).reshape(n, 5)
        recv = np.array([s if s is not None else (0, 0, 0, 0) for s in self.recv], dtype=np.int64).reshape(n, 4)
        return (np.array(self.busy, dtype=np.int64), np.array(self.commit, dtype=np.int64), nruns, runs, coef, has_send,
                send, has_recv, recv)


@dataclass
class Schedule:
    """One bucket's instructions (NOPs dropped) in execution order, with their access runs."""

    program: Program
    bucket: int
    queues: list[str]
    chip: np.ndarray
    qidx: np.ndarray
    pos: np.ndarray
    issue: np.ndarray
    busy: np.ndarray
    opcode: np.ndarray
    ins: np.ndarray  # int32 [N, len(kernels.COLUMNS)]
    imm: np.ndarray  # float32 [N]
    runs: dict[str, np.ndarray]  # RUN_FIELDS + "instr", t0 absolute
    run_start: np.ndarray  # runs of instruction i: run_start[i]..run_start[i+1]
    sends: dict[str, np.ndarray]
    recvs: dict[str, np.ndarray]
    end_cycle: int  # max issue + busy over every instruction, NOPs included
    instructions: int  # every instruction, NOPs included
    busy_by_family: dict[str, int] = field(default_factory=dict)
    queues_by_family: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.opcode.size)

    def queue(self, i: int) -> str:
        return self.queues[int(self.qidx[i])]

    def disasm(self, i: int) -> str:
        chip = int(self.chip[i])
        words = self.program.streams[(self.bucket, chip, self.queue(i))]
        p = int(self.pos[i])
        return disasm_instr(decode_many(words[p:p + 1], chip, self.program.numbering())[0])

    def where(self, i: int) -> str:
        return (f"chip {int(self.chip[i])}, cycle {int(self.issue[i])}, queue {self.queue(i)}, "
                f"instruction #{int(self.pos[i])} `{self.disasm(i)}`")

    def party(self, i: int) -> dict:
        return {"chip": int(self.chip[i]), "cycle": int(self.issue[i]), "queue": self.queue(i),
                "index": int(self.pos[i]), "instr": self.disasm(i)}

    def error(self, i: int, what: str, kind: str, other: int | None = None) -> EmulationError:
        return EmulationError(f"bucket {self.bucket}: {self.where(i)}: {what}", chip=int(self.chip[i]),
                              cycle=int(self.issue[i]), queue=self.queue(i), index=int(self.pos[i]),
                              instr=self.disasm(i), kind=kind, other=None if other is None else self.party(other))


def build_schedule(program: Program, profiler: Profiler, bucket: int, topo: np.ndarray, links: int) -> Schedule:
    """Decode and profile every stream of a bucket; raise EmulationError on an instruction the timing model rejects."""
    h = program.header
    queues = list(h["queues"])
    qindex = {q: i for i, q in enumerate(queues)}
    keys = sorted((c, q) for (b, c, q) in program.streams if b == bucket)
    per_stream = []
    busy_by_family = {f: 0 for f in FAMILIES}
    queues_by_family = {f: 0 for f in FAMILIES}
    for q in queues:
        queues_by_family[parse_queue(q)[0]] += 1
    numbering = program.numbering()  # the words name regions chip-locally; the emulator works on program-wide ids
    for chip, queue in keys:
        words = program.streams[(bucket, chip, queue)]
        if queue not in qindex:
            raise EmulationError(f"bucket {bucket}: chip {chip}: stream for queue {queue!r}, which is not in the header's "
                                 f"queues ({', '.join(queues)})", chip=chip, queue=queue, kind="structure")
        try:
            fam = parse_queue(queue)[0]
            fields = decode_fields(words, chip, numbering)
        except IsaError as exc:
            raise EmulationError(f"bucket {bucket}: chip {chip}, queue {queue}: {exc}", chip=chip, queue=queue,
                                 kind="decode") from None
        opcode = fields["opcode"]
        n = opcode.size
        pids = np.full(n, -1, dtype=np.int64)
        first_bad, bad_msg = n, ""
        for opc in np.unique(opcode).tolist():
            spec = BY_OPCODE[opc]
            sel = np.nonzero(opcode == opc)[0]
            names = [f.name for f in spec.fmt.fields]
            rows = zip(*[fields[nm][sel].tolist() for nm in names]) if names else [()] * sel.size
            got, msg = profiler.group(queue, opc, spec.mnemonic, names, rows)
            pids[sel[:len(got)]] = got
            if msg is not None and sel[len(got)] < first_bad:
                first_bad, bad_msg = int(sel[len(got)]), msg
        pbusy = np.array(profiler.busy, dtype=np.int64)
        if first_bad < n:
            cyc = int(pbusy[pids[:first_bad]].sum())
            ins = decode_many(words[first_bad:first_bad + 1], chip, numbering)[0]
            text = disasm_instr(ins)
            raise EmulationError(f"bucket {bucket}: chip {chip}, cycle {cyc}, queue {queue}, instruction #{first_bad} "
                                 f"`{text}`: {bad_msg}", chip=chip, cycle=cyc, queue=queue, index=first_bad, instr=text,
                                 kind="structure")
        busy = pbusy[pids]
        issue = np.concatenate([[0], np.cumsum(busy)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
        mat = np.zeros((n, len(K.COLUMNS)), dtype=np.int32)
        mat[:, K.C_OPCODE] = opcode
        mat[:, K.C_CHIP] = chip
        for c, name in enumerate(_FIELD_COLUMNS, start=3):
            if name in fields:
                mat[:, c] = fields[name]
        imm = fields["imm"] if "imm" in fields else np.zeros(n, dtype=np.float32)
        real = opcode != K.OP_NOP
        busy_by_family[fam] += int(busy[real].sum())
        per_stream.append((chip, qindex[queue], np.arange(n), issue, busy, opcode, mat, imm, pids))

    ptab_busy, ptab_commit, ptab_nruns, ptab_runs, ptab_coef, has_send, ptab_send, has_recv, ptab_recv = profiler.tables()
    ptab_start = np.concatenate([[0], np.cumsum(ptab_nruns)]).astype(np.int64)
    cat = lambda k: np.concatenate([s[k] for s in per_stream]) if per_stream else np.zeros(0, np.int64)
    chip = np.concatenate([np.full(s[2].size, s[0], np.int64) for s in per_stream]) if per_stream else np.zeros(0, np.int64)
    qidx = np.concatenate([np.full(s[2].size, s[1], np.int64) for s in per_stream]) if per_stream else np.zeros(0, np.int64)
    pos, issue, busy, opcode = cat(2), cat(3), cat(4), cat(5)
    pids = cat(8)
    mat = np.concatenate([s[6] for s in per_stream]) if per_stream else np.zeros((0, len(K.COLUMNS)), np.int32)
    imm = np.concatenate([s[7] for s in per_stream]).astype(np.float32) if per_stream else np.zeros(0, np.float32)
    end_cycle = int((issue + busy).max()) if issue.size else 0
    total = int(issue.size)

    keep = np.nonzero(opcode != K.OP_NOP)[0]
    effect = issue + ptab_commit[pids] if pids.size else issue
    order = keep[np.lexsort((pos[keep], qidx[keep], chip[keep], effect[keep]))]
    chip, qidx, pos, issue, busy, opcode, pids = (a[order] for a in (chip, qidx, pos, issue, busy, opcode, pids))
    mat, imm = np.ascontiguousarray(mat[order]), imm[order]
    # directed link of SEND (this chip, link) and of RECV (the peer's link that feeds this one)
    L = max(links, 1)
    is_send = opcode == K.OP_SEND
    is_recv = opcode == K.OP_RECV
    mat[is_send, K.C_DLINK] = chip[is_send] * L + mat[is_send, K.C_LINK]
    if is_recv.any():
        peer = topo[chip[is_recv], mat[is_recv, K.C_LINK]]
        mat[is_recv, K.C_DLINK] = peer[:, 0] * L + peer[:, 1]

    # access runs, in execution order
    nr = ptab_nruns[pids]
    run_start = np.concatenate([[0], np.cumsum(nr)]).astype(np.int64)
    total_runs = int(run_start[-1])
    run_instr = np.repeat(np.arange(order.size, dtype=np.int64), nr)
    src = np.repeat(ptab_start[pids] - run_start[:-1], nr) + np.arange(total_runs, dtype=np.int64)
    rt = ptab_runs[src] if total_runs else np.zeros((0, len(RUN_FIELDS)), np.int64)
    runs = {name: np.ascontiguousarray(rt[:, k]) for k, name in enumerate(RUN_FIELDS)}
    for f, name in enumerate(OFFSET_FIELDS):  # templates: move each access by its instruction's offsets
        c = ptab_coef[src, f] if total_runs else np.zeros(0, np.int64)
        if c.any():
            runs["off"] += c * mat[run_instr, K.COLUMNS.index(name)]
    runs["t0"] = runs["t0"] + issue[run_instr]
    runs["instr"] = run_instr

    si = np.nonzero(has_send[pids])[0]
    s = ptab_send[pids[si]]
    sends = {"instr": si, "dlink": mat[si, K.C_DLINK].astype(np.int64), "count": s[:, 1], "t0": issue[si] + s[:, 2],
             "per_vector": s[:, 3], "arrive": s[:, 4], "region": mat[si, K.C_SRC_REG].astype(np.int64)}
    ri = np.nonzero(has_recv[pids])[0]
    r = ptab_recv[pids[ri]]
    recvs = {"instr": ri, "dlink": mat[ri, K.C_DLINK].astype(np.int64), "count": r[:, 1], "t0": issue[ri] + r[:, 2],
             "per_vector": r[:, 3], "region": mat[ri, K.C_DST_REG].astype(np.int64)}
    return Schedule(program, bucket, queues, chip, qidx, pos, issue, busy, opcode, mat, imm, runs, run_start, sends,
                    recvs, end_cycle, total, busy_by_family, queues_by_family)


def link_partners(sched, from_sends: bool) -> list[tuple[int, int, int]]:
    """SENDs and RECVs paired by the vectors they carry: on each directed link the vectors arrive in the order
    they were sent, so the k-th vector sent is the k-th received. For every SEND (from_sends) or RECV, the run
    on the other side that holds its first vector: (index into sched.sends, index into sched.recvs, that
    vector's position within the other run). Traces draw SEND -> RECV arrows from it, reports follow a RECV
    back to its SEND."""
    s, r = sched.sends, sched.recvs
    out = []
    if not len(s["instr"]) or not len(r["instr"]):
        return out
    for dl in np.unique(s["dlink"]):
        si = np.nonzero(s["dlink"] == dl)[0]
        ri = np.nonzero(r["dlink"] == dl)[0]
        si = si[np.argsort(s["t0"][si], kind="stable")]
        ri = ri[np.argsort(r["t0"][ri], kind="stable")]
        a, b = (si, ri) if from_sends else (ri, si)
        ca, cb = (s, r) if from_sends else (r, s)
        first = np.concatenate([[0], np.cumsum(ca["count"][a])[:-1]])
        start = np.concatenate([[0], np.cumsum(cb["count"][b])])
        j = np.searchsorted(start, first, side="right") - 1
        for k, jj in enumerate(j.tolist()):
            if 0 <= jj < b.size:
                pair = (int(a[k]), int(b[jj])) if from_sends else (int(b[jj]), int(a[k]))
                out.append((*pair, int(first[k] - start[jj])))
    return out
