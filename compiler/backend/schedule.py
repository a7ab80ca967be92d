"""The static scheduler: every instruction gets its issue cycle and queue.

1. Dependencies come from the same timing profiles the emulator checks (isa.timing): for each location
   (SRAM vector or MXM pseudo-location) a reader waits for the last writer's data to be readable (RAW),
   a writer waits until earlier readers have read (WAR) and earlier writers are done (WAW). An edge
   carries the exact cycle distance, so consumers start on the first vector while producers are still
   on the last (software pipelining falls out). A RECV waits for its SEND's vector to arrive.
2. List scheduling in time order, highest priority first (longest latency-weighted path to the end of
   the token, ties by instruction number, so the result is deterministic): an instruction issues at the
   first cycle where its queue is free (queues issue in order) and none of the banks it touches is
   booked by another access in the same cycle.
3. A pipeline is scheduled stage by stage (`schedule(..., stage_chips)`): each stage's work, and before it
   the transfers into it, is one unit, list-scheduled on its own from when its inputs are there; its
   priorities put what later stages wait for first. Stages whose instructions are the same (up to the
   chip numbers, on the same banks) share one schedule, shifted in time: compiled once, not once per
   stage (tests/compiler/test_schedule_reuse.py: the shared schedule is the one computed afresh).
4. Periodic DESKEWs go in the first gap of their link's queue after each interval, once the rest is placed.
"""
from __future__ import annotations

import hashlib
import heapq
import pickle
from array import array
from bisect import bisect_right
from collections import defaultdict

import numpy as np

from isa import Hardware, Instr, Machine
from isa.table import parse_queue, queue_name

from ..errors import CompileError
from .buffers import Node

_SYNC = Instr("SYNC")
_DESKEW0 = Instr("DESKEW", link=0)


class Scheduled:
    def __init__(self, nodes, issue, queue, busy, cycles, why=None, tail=None) -> None:
        self.nodes = nodes
        self.issue = issue
        self.queue = queue
        # per node: the cycles its queue is held from issue (what the emitter pads with NOPs); the timing
        # profiles themselves are the scheduler's own, dropped at its end (millions of objects at scale)
        self.busy = busy
        self.cycles = cycles
        self.why = why  # per node: the predecessor that decided its earliest start (-1: none)
        self.tail = tail  # per node: cycles from issue to its last effect
        self.units = 1  # units scheduled one after another (see schedule())
        self.reused = 0  # of them, pipeline stages that took an earlier identical stage's schedule
        self.stages = 0  # of them, pipeline stages (0: not a pipeline)

    def critical_path(self) -> list[int]:
        """Node indices from the first to the one that finishes last, following deciding predecessors."""
        if not len(self.nodes):
            return []
        i = int(np.argmax(self.issue + self.tail))
        path = [i]
        while self.why[i] >= 0:
            i = int(self.why[i])
            path.append(i)
        return path[::-1]


def _vectors(a) -> np.ndarray:
    k = np.arange(a.count, dtype=np.int64)
    if a.mode == 1:
        f = k % a.m
    elif a.mode == 2:
        f = k // a.m
    else:
        f = k
    return a.off + a.stride * f


def _times(a) -> np.ndarray:
    k = np.arange(a.count, dtype=np.int64)
    return a.t0 + (k * a.num) // a.den


# A pipeline stage's own work starts this many cycles before the last of its inputs from earlier stages is
# there (a scheduling rule, not a hardware fact). 0: a stage's work could load its first weight tiles ahead of
# the activation, but then it shares the stage's banks with the transfers still fanning the activation out,
# and a stage's schedule would depend on how those ran (measured on Llama-3-8B, 64 chips: +0.2% cycles, and
# every identical stage then shares one schedule; with 4,096 half of them clashed and were scheduled again)
STAGE_LEAD_CYCLES = 0
_BIG = 1 << 40  # priority of the work a later stage waits for, over the stage's own tail


def schedule(code: list[list], regions, hw: Hardware, stage_chips: int = 0, reuse: bool = True) -> Scheduled:
    """code[chip] = nodes in program order. Returns issue cycles and queues for all nodes.

    `stage_chips` > 0 (a pipeline: stage k is chips k*stage_chips ...): the program is scheduled in *units*,
    one after the other: the transfers into stage k (every hop of their routes, and a gateway's fan-out),
    then stage k's own work, which starts when the last of its inputs is there and the transfers are done
    with its chips (STAGE_LEAD_CYCLES before that for work that needs none of them). A stage's schedule is then its instructions' alone, shifted to
    when its inputs arrive, so with `reuse` a stage identical to one already scheduled (the same
    instructions on the same banks, up to the chip numbers) takes that schedule, shifted, instead of being
    scheduled again, if it books nothing another unit holds (else it is scheduled around what is booked).
    `reuse=False` gives the same schedule, every unit scheduled afresh."""
    mach = Machine(hw, regions)
    nodes = [n for chip in code for n in chip]
    # program order per chip, but a global topological order is creation order: nodes were created
    # producer-first across chips; sort by the id the lowerer gave them
    nodes.sort(key=lambda n: n.uid)
    nodes = _with_deskews(nodes, hw)
    N = len(nodes)
    topo = hw.topology
    # --- links: the k-th send on a directed link meets the k-th receive on the other end, in program order
    sends, recvs = defaultdict(list), defaultdict(list)
    for i, n in enumerate(nodes):
        if n.instr.op == "SEND":
            sends[(n.chip, n.instr["link"])].append(i)
        elif n.instr.op == "RECV":
            recvs[(n.chip, n.instr["link"])].append(i)
    send_of: dict[int, int] = {}  # receive -> its send
    prev_on_link: dict[int, int] = {}  # send or receive -> the one before it on the same link end
    for (c, l), lst in sends.items():
        peer, pl = topo.peer(c, l)
        rl = recvs.get((peer, pl), [])
        if len(rl) != len(lst):
            raise CompileError(f"chip {c} link {l}: {len(lst)} sends but chip {peer} link {pl} has {len(rl)} receives")
        for k, (a, b) in enumerate(zip(lst, rl)):
            send_of[b] = a
            if k:
                prev_on_link[a], prev_on_link[b] = lst[k - 1], rl[k - 1]
    del sends, recvs
    unit, n_units, boundary, shared = _units(nodes, regions, stage_chips, send_of, prev_on_link)
    receiver = {a: b for b, a in send_of.items()}
    pre = np.array([n.instr.op in ("SYNC", "DESKEW") for n in nodes], dtype=bool)  # the token start
    sync_end = mach.profile(_SYNC, "icu0").busy
    pre_end = sync_end + (mach.profile(_DESKEW0, "c2c0t").busy if hw.system.chips > 1 else 0)
    booked = _Bookings()
    ready_at: dict[int, int] = {}  # a region another unit reads -> when the unit writing it has made it readable
    prof: list = [None] * N
    issue = np.full(N, -1, dtype=np.int64)
    why = np.full(N, -1, dtype=np.int64)
    tail = np.zeros(N, dtype=np.int64)
    qname: list = [None] * N
    order = np.argsort(unit, kind="stable")
    bounds = np.searchsorted(unit[order], np.arange(n_units + 1))
    templates: dict = {}
    reused = 0
    for u in range(n_units):
        idx = order[bounds[u]:bounds[u + 1]]
        gl = idx.tolist()
        base = (nodes[gl[0]].chip // stage_chips) * stage_chips if stage_chips and gl else 0
        # what the unit waits for from earlier ones: (local node, kind, cycle, the node it comes from); kind 0: a
        # receive's vector arrives (before the receive's own offset), 1: the link's previous send or receive
        # issues, 2: a region it reads is readable
        ext = []
        later = []  # the nodes another unit's receives wait for: the first priority
        exported: dict = {}  # the regions this unit writes and others read -> the local nodes naming them
        for j, g in enumerate(gl):
            a = send_of.get(g)
            if a is not None and unit[a] != u:
                ext.append((j, 0, int(issue[a]) + prof[a].send.arrive, a))
            a = prev_on_link.get(g)
            if a is not None and unit[a] != u:
                ext.append((j, 1, int(issue[a]), a))
            b = receiver.get(g)
            if b is not None and unit[b] != u:
                later.append(j)
            if shared:
                for r in _regions_of(nodes[g], regions):
                    w = shared.get(r)
                    if w is not None and w != u:
                        ext.append((j, 2, ready_at[r], -1))
                    elif w == u:
                        exported.setdefault(r, []).append(j)
        last = max((x[2] for x in ext), default=0)
        stage = bool(stage_chips) and not boundary[u]
        if stage and ext:
            # and once the transfers into it are done with its chips (a gateway still reading what it fans
            # out): then nothing another unit booked is in its way
            mine = {nodes[g].chip for g in gl}
            last = max([last] + [b for c in mine for *_, b in booked.by_chip.get(c, ())])
        anchor = max(sync_end, last - STAGE_LEAD_CYCLES) if stage else sync_end
        early = max(0, pre_end - anchor)  # the token start still holds queues after the anchor
        if stage:
            # a stage's work waits for all its inputs: a schedule that does not depend on which came first
            ext = [(j, 1, last, a) for j, _, _, a in ext]
        key = canon = None
        if reuse and stage:
            sig, canon = _signature(nodes, gl, regions, topo, base, stage_chips)
            key = (sig, tuple(later), last - anchor if ext else None, early, anchor if early else None)
        got = templates.get(key) if key is not None else None
        res = None
        if got is not None:
            t_rel, t_q, t_why, t_tail, t_prof, t_pre, t_book, t_canon = got
            cand = np.where(t_pre, t_rel, t_rel + anchor)
            cq = [nodes[g].queue or t_q[j] for j, g in enumerate(gl)]  # a link's queue is the instance's port
            if not booked.clashes(nodes, gl, cand, cq, t_prof, t_tail, regions, t_pre):
                at = {r: k for k, r in enumerate(canon)}
                res = (cand, cq, t_why, t_tail, t_prof, (t_book, anchor - t_book[0]),
                       {r: _readable(js, cand, t_prof, t_canon[at[r]]) for r, js in exported.items()})
                reused += 1
        if res is None:
            uprof = []
            for g in gl:
                n = nodes[g]
                q = n.queue or queue_name(n.family, 0)
                try:
                    uprof.append(mach.profile(n.instr, q))
                except Exception as exc:
                    raise CompileError(f"chip {n.chip}: cannot time {n.instr!r} on {q}: {exc}") from None
            run = (nodes, gl, uprof, regions, hw, ext, anchor, pre[idx], unit, u, send_of, receiver, prev_on_link,
                   exported, base)
            if not stage:
                res = _schedule_unit(*run, booked if boundary[u] else None)
            else:
                res = _schedule_unit(*run, None)
                if booked.clashes(nodes, gl, res[0], res[1], res[4], res[3], regions, pre[idx]):
                    res, key = _schedule_unit(*run, booked), None  # around what is booked: not reusable
            res = res[:5] + ((res[5], 0),) + res[6:]
            if key is not None:
                lp = pre[idx]
                templates[key] = (np.where(lp, res[0], res[0] - anchor), res[1], res[2], res[3], res[4], lp,
                                  res[5][0], canon)
        t_u, q_u, why_u, tail_u, prof_u, (book_u, shift_u), ready_u = res
        issue[idx] = t_u
        tail[idx] = tail_u
        for j, g in enumerate(gl):
            qname[g] = q_u[j]
            prof[g] = prof_u[j]
        w = np.asarray(why_u, dtype=np.int64)
        gw = np.full(w.size, -1, dtype=np.int64)
        gw[w >= 0] = idx[w[w >= 0]]
        if ext:
            gw[w <= -2] = np.array([x[3] for x in ext], dtype=np.int64)[-2 - w[w <= -2]]
        why[idx] = gw
        booked.add(base, book_u, shift_u)
        ready_at.update(ready_u)
    nodes, prof, issue, qname, why, tail = _periodic_deskews(nodes, prof, issue, qname, why, tail, hw, mach)
    N = len(nodes)
    cycles = int(max((issue + tail).max(), 0)) if N else 0
    busy = np.fromiter((p.busy for p in prof), dtype=np.int64, count=N)
    del prof, templates, booked
    out = Scheduled(nodes, issue, qname, busy, cycles, why, tail)
    out.units, out.reused = n_units, reused
    out.stages = sum(1 for u in range(n_units) if not boundary[u]) if stage_chips else 0
    return out


_REG_FIELDS = ("dst_reg", "a_reg", "b_reg", "src_reg", "map_reg", "table_reg", "idx_reg", "x_reg")


def _regions_of(n, regions) -> list[int]:
    """The regions an instruction names on its own chip (an unused operand field names region 0 anywhere)."""
    a = n.instr.args
    return [r for k in _REG_FIELDS if (r := a.get(k)) is not None and 0 <= r < len(regions) and regions[r].chip == n.chip]


def _units(nodes, regions, stage_chips: int, send_of: dict, prev_on_link: dict):
    """Each node's unit (units are scheduled in order), the number of units, which are transfers, and the
    regions more than one unit uses (region -> the unit that writes it). Stage k's own work is unit 2k, the
    transfers into it unit 2k - 1. One unit for everything when there are no stages, or when something
    ties a unit to a later one (a value going backwards, a region written by two units or read by an
    earlier unit than its writer), which scheduling unit by unit could not honour."""
    N = len(nodes)
    one = (np.zeros(N, dtype=np.int64), 1 if N else 0, [False], {})
    if stage_chips <= 0 or N == 0:
        return one
    raw = np.array([2 * (n.xfer // stage_chips) - 1 if n.xfer is not None else 2 * (n.chip // stage_chips)
                    for n in nodes], dtype=np.int64)
    for b, a in list(send_of.items()) + list(prev_on_link.items()):
        if raw[a] > raw[b]:
            return one
    users: dict[int, set] = defaultdict(set)
    writer: dict[int, set] = defaultdict(set)
    for i, n in enumerate(nodes):
        for r in _regions_of(n, regions):
            users[r].add(int(raw[i]))
        a = n.instr.args
        w = a.get("table_reg") if n.instr.op in ("SCATTER", "SCATCOL") else a.get("dst_reg")
        if w is not None:
            writer[w].add(int(raw[i]))
    ids, unit = np.unique(raw, return_inverse=True)
    pos = {int(x): k for k, x in enumerate(ids)}
    shared = {}
    for r, us in users.items():
        if len(us) < 2:
            continue
        ws = writer.get(r, set())
        if len(ws) > 1 or (ws and min(us) not in ws):
            return one
        if ws:
            shared[r] = pos[next(iter(ws))]
    return unit.astype(np.int64), len(ids), [bool(x % 2) for x in ids], shared


def _signature(nodes, gl, regions, topo, base, span):
    """What a stage's schedule depends on, with chips counted from the stage's first and regions and tile
    groups numbered in order of use: every instruction with its queue, the placement (banks, stripe, shape,
    type) of every region it names, the link class of every link it uses and its far end (links out of the
    stage carry only its token-start DESKEWs). Returns (digest, the unit's regions in that order)."""
    reg: dict = {}
    grp: dict = {}
    items = []
    for g in gl:
        n = nodes[g]
        op = n.instr.op
        extra = None
        if op in ("SEND", "RECV", "DESKEW"):
            l = n.instr["link"]
            far = topo.peer(n.chip, l)
            if far is None or not 0 <= far[0] - base < span:
                extra = "out"  # a token-start DESKEW: its own queue, the same cycle, whichever port it is
            else:
                cls = topo.link_class(n.chip, l)
                extra = (far[0] - base, far[1], cls.hop_latency_cycles, cls.bytes_per_cycle)
        args = []
        for k, v in n.instr.args.items():
            if k.endswith("_reg"):
                r = reg.get(v)
                if r is None:
                    R = regions[v] if 0 <= v < len(regions) else None
                    if R is None or R.chip != n.chip:  # an operand the instruction does not use
                        args.append((k, v))
                        continue
                    r = reg[v] = (len(reg), R.chip - base, R.bank, R.width, R.row_vectors, R.rows, R.dtype)
                args.append((k, r[0]))
            elif not (k == "link" and extra == "out"):
                args.append((k, v))
        gk = None
        if n.grp is not None:
            gk = grp.setdefault(n.grp, (len(grp), n.grp[0] - base, n.grp[1]))
        items.append((n.chip - base, n.family, None if extra == "out" else n.queue, op, tuple(args), gk, extra))
    items.append(tuple(sorted(reg.values())))
    digest = hashlib.blake2b(pickle.dumps(items, protocol=5), digest_size=20).digest()
    return digest, sorted(reg, key=lambda v: reg[v][0])


class _Bookings:
    """What every scheduled unit holds: per chip, its queue and bank intervals (each unit's own _Busy objects,
    shared with its template, shifted by `shift` cycles) and the cycles they span."""

    def __init__(self) -> None:
        self.by_chip: dict = defaultdict(list)  # chip -> [(queues {q: _Busy}, banks {bank: _Busy}, shift, lo, hi)]

    def add(self, base, book, shift) -> None:
        for off, (qs, bs, lo, hi) in book[1].items():
            self.by_chip[base + off].append((qs, bs, shift, lo + shift, hi + shift))

    def queue_free(self, chip, q, lo, hi) -> int | None:
        """None if cycles [lo, hi) of queue q are free in every unit's bookings, else a later cycle to try."""
        worst = None
        for qs, _, sh, a, b in self.by_chip.get(chip, ()):
            if b <= lo or a >= hi:
                continue
            occ = qs.get(q)
            if occ is not None:
                f = occ.conflict(lo - sh, hi - sh)
                if f is not None:
                    worst = f + sh if worst is None else max(worst, f + sh)
        return worst

    def bank_free(self, chip, runs, t) -> int | None:
        """None if the bank intervals `runs` of an instruction issued at t are free, else a later issue to try."""
        worst = None
        for _, bs, sh, a, b in self.by_chip.get(chip, ()):
            for bank, s0, h in runs:
                lo = t + s0
                if lo + h <= a or lo >= b:
                    continue
                occ = bs.get(bank)
                if occ is None:
                    continue
                f = occ.conflict(lo - sh, lo - sh + h)
                if f is not None:
                    cand = t + (f + sh - lo)
                    worst = cand if worst is None else max(worst, cand)
        return worst

    def clashes(self, nodes, gl, issue, qnames, prof, tail, regions, pre) -> bool:
        for j, g in enumerate(gl):
            if pre[j]:
                continue
            c = nodes[g].chip
            lst = self.by_chip.get(c)
            if not lst:
                continue
            t, p = int(issue[j]), prof[j]
            lo, hi = t - 64, t + max(int(tail[j]), p.busy) + 64  # the spans are of issue to last effect
            if not any(a < hi and b > lo for _, _, _, a, b in lst):
                continue
            if p.busy > 0 and self.queue_free(c, qnames[j], t, t + p.busy) is not None:
                return True
            if self.bank_free(c, _bank_runs(p, regions), t) is not None:
                return True
        return False


def _schedule_unit(nodes, gl, prof, regions, hw, ext, anchor, pre, unit, u, send_of, receiver, prev_on_link, exported,
                   base, booked):
    """List-schedule one unit: its nodes gl (global indices, program order) with profiles prof, none before
    `anchor` but the token start, each after what `ext` says it waits for. Returns local arrays (issue,
    queue, why, tail, prof), the unit's bookings ((anchor, {chip - base: (queues, banks, lo, hi)})) and when
    the regions in `exported` (region -> the local nodes naming it: what the unit writes and others read) are
    readable; why: a local node, -1 none, or -2 - k for the k-th of `ext`.
    `booked`: other units' bookings to schedule around (None: none)."""
    nodes_u = [nodes[g] for g in gl]
    N = len(gl)
    loc = {g: j for j, g in enumerate(gl)}
    # dependencies: SRAM in program order; MXM state (shadow, active, accumulators) in each unit's
    # order, which is program order at first and then the order its tile groups' activations are
    # ready in an unconstrained as-soon-as-possible pass (a unit then serves groups as they become
    # ready, not as the lowering happened to emit them)
    sram = _sram_dependencies(nodes_u, prof, regions)
    deps = _with_state(sram, nodes_u, prof, _unit_order(nodes_u, None))
    asap = _asap(N, deps, prof, nodes_u, regions)
    deps = _with_state(sram, nodes_u, prof, _unit_order(nodes_u, asap))
    del sram, asap
    succ: list[list[tuple[int, int]]] = [[] for _ in range(N)]
    npred = np.zeros(N, dtype=np.int64)

    def edge(a: int, b: int, delay: int) -> None:
        succ[a].append((b, int(delay)))
        npred[b] += 1

    for i, d in enumerate(deps):
        for j, dd in d.items():
            # execution order (issue + commit) must follow the dependency, strictly
            edge(j, i, max(dd, prof[j].commit - prof[i].commit + 1))
    del deps
    later = np.zeros(N, dtype=bool)  # a node another unit waits for
    for j, g in enumerate(gl):
        a = send_of.get(g)
        if a is not None and unit[a] == u:
            i = loc[a]
            edge(i, j, prof[i].send.arrive - prof[j].accesses[0].t0)
        a = prev_on_link.get(g)
        if a is not None and unit[a] == u:
            edge(loc[a], j, 0)  # link order is program order
        b = receiver.get(g)
        if b is not None and unit[b] != u:
            later[j] = True
    # the token-start barrier: the chip's links realign their clocks after it; everything else waits for
    # the unit's anchor (which is after it)
    sync_of = {n.chip: j for j, n in enumerate(nodes_u) if n.instr.op == "SYNC"}
    for j, n in enumerate(nodes_u):
        if n.instr.op == "DESKEW" and n.chip in sync_of:
            s = sync_of[n.chip]
            edge(s, j, prof[s].busy)
    attached = _attach_installs(nodes_u, prof, succ, npred, edge)
    # --- priorities: longest path to the end of the unit; what a later unit waits for first
    busy = np.array([p.busy for p in prof], dtype=np.int64)
    tail = np.array([max([busy[i]] + [a.t0 + ((a.count - 1) * a.num) // a.den + a.ready for a in prof[i].accesses if a.write])
                     for i in range(N)], dtype=np.int64)
    prio = np.where(later, _BIG, tail)
    for i in range(N - 1, -1, -1):
        best = prio[i]
        for (j, d) in succ[i]:
            v = d + prio[j]
            if v > best:
                best = v
        prio[i] = best
    # --- list scheduling
    queues = defaultdict(list)  # family -> queue names
    for q in hw.queues:
        queues[parse_queue(q)[0]].append(q)
    qfree = defaultdict(int)  # (chip, queue) -> first free cycle
    bank_busy: dict = {}  # (chip, bank) -> _Busy
    est = np.where(pre, 0, anchor).astype(np.int64)
    why = np.full(N, -1, dtype=np.int64)
    for k, (j, kind, raw, _) in enumerate(ext):
        t = raw - prof[j].accesses[0].t0 if kind == 0 else raw
        if t > est[j]:
            est[j], why[j] = t, -2 - k
    issue = np.full(N, -1, dtype=np.int64)
    qname = [None] * N
    heap = [(int(est[i]), -int(prio[i]), i) for i in range(N) if npred[i] == 0]
    heapq.heapify(heap)
    # each node's bank intervals, computed when it first comes off the heap and dropped once it is placed:
    # held for the nodes in flight only (for every node at once they were most of a 70B compile's memory)
    runs_of: dict[int, list] = {}
    done = 0
    install_of = {a: w for a, (w, _, _) in attached.items()}
    is_attached = {w for (w, _, _) in attached.values()}
    pred_of = defaultdict(list)
    for j in range(N):
        for (k, d) in succ[j]:
            if k in is_attached:
                pred_of[k].append((j, d))
    qbusy: dict = {}  # (chip, queue) -> _Busy: the unit's bookings, for the units after it

    def place(i, t, q):
        nonlocal done
        issue[i] = t
        qname[i] = q
        qfree[(nodes_u[i].chip, q)] = max(qfree[(nodes_u[i].chip, q)], t + prof[i].busy)
        if not pre[i] and prof[i].busy > 0:
            occ = qbusy.get((nodes_u[i].chip, q))
            if occ is None:
                occ = qbusy[(nodes_u[i].chip, q)] = _Busy()
            occ.book(t, t + prof[i].busy)
        done += 1
        for (j, d) in succ[i]:
            if t + d >= est[j]:
                est[j] = t + d
                why[j] = i
            npred[j] -= 1
            if npred[j] == 0 and j not in is_attached:
                heapq.heappush(heap, (int(est[j]), -int(prio[j]), j))

    while heap:
        t, negp, i = heapq.heappop(heap)
        n = nodes_u[i]
        cands = [n.queue] if n.queue else queues[n.family]
        q_ok = [q for q in cands if qfree[(n.chip, q)] <= t]
        if not q_ok:
            heapq.heappush(heap, (min(qfree[(n.chip, q)] for q in cands), negp, i))
            continue
        away = booked is not None and n.chip in booked.by_chip
        if away:
            frees = [booked.queue_free(n.chip, q, t, t + max(1, busy[i])) for q in q_ok]
            if all(f is not None for f in frees):
                heapq.heappush(heap, (max(t + 1, min(frees)), negp, i))
                continue
            q_ok = [q for q, f in zip(q_ok, frees) if f is None]
        runs = runs_of.get(i)
        if runs is None:
            runs = runs_of[i] = _bank_runs(prof[i], regions)
        clash = _clash(bank_busy, n.chip, runs, t)
        if away:
            other = booked.bank_free(n.chip, runs, t)
            if other is not None:
                clash = other if clash is None else max(clash, other)
        if clash is not None:
            heapq.heappush(heap, (max(t + 1, clash), negp, i))
            continue
        w = install_of.get(i)
        if w is not None:
            # the group's install goes with its first ACC: after the tile is loaded and the previous
            # tile's activations have passed, before this ACC's activation reaches the array
            _, arrive, ready = attached[i]
            lo = max([issue[j] + d for (j, d) in pred_of[w]] + [qfree[(n.chip, nodes_u[w].queue)]])
            if nodes_u[w].queue == n.queue and t - prof[w].busy < lo <= t:
                lo = t + 1  # one queue: the install goes right after this ACC
            hi = t + arrive - ready
            if lo > hi:
                heapq.heappush(heap, (t + (lo - hi), negp, i))
                continue
            place(w, int(lo), nodes_u[w].queue)
            why[w] = max(pred_of[w], key=lambda jd: issue[jd[0]] + jd[1])[0] if pred_of[w] else -1
        q = q_ok[0]
        _book(bank_busy, n.chip, runs, t)
        del runs_of[i]
        place(i, t, q)
    if done != N:
        raise CompileError(f"scheduler: {N - done} instructions could not be scheduled (dependency cycle)")
    per_chip: dict = {}
    for (c, q), occ in qbusy.items():
        per_chip.setdefault(c - base, ({}, {}))[0][q] = occ
    for (c, b), occ in bank_busy.items():
        per_chip.setdefault(c - base, ({}, {}))[1][b] = occ
    span: dict = {}
    for j, n in enumerate(nodes_u):
        if not pre[j]:
            lo, hi = span.get(n.chip - base, (int(issue[j]), int(issue[j])))
            span[n.chip - base] = (min(lo, int(issue[j])), max(hi, int(issue[j] + max(tail[j], busy[j]))))
    book = {c: (qs, bs) + span.get(c, (0, 0)) for c, (qs, bs) in per_chip.items()}
    ready = {r: _readable(js, issue, prof, r) for r, js in exported.items()}
    return issue, qname, why, tail, prof, (anchor, book), ready


def _readable(js, issue, prof, r) -> int:
    """When the writes of nodes js (issued at issue[j], timed by prof[j]) to region r are all readable."""
    return max([int(issue[j]) + a.t0 + ((a.count - 1) * a.num) // a.den + a.ready
                for j in js for a in prof[j].accesses if a.write and a.region == r] or [0])


def _periodic_deskews(nodes, prof, issue, qname, why, tail, hw, mach):
    """A link re-aligns its clocks at the start of every token (the DESKEWs after SYNC, scheduled with the
    unit) and again every `deskew_interval_cycles` of a long program (each chip's counters drift;
    [ISCA22]): the k-th periodic DESKEW goes in the first gap of the link's send queue from k intervals on
    that holds it, if that is before the program's end."""
    from isa import Instr as _I

    chips = hw.system.chips
    N = len(nodes)
    if chips < 2 or N == 0:
        return nodes, prof, issue, qname, why, tail
    topo = hw.topology
    interval = hw.chip.c2c.deskew_interval_cycles
    end = int((issue + tail).max())
    if end <= interval:
        return nodes, prof, issue, qname, why, tail
    dp = mach.profile(_DESKEW0, "c2c0t")
    busy_q: dict = defaultdict(list)
    for i, n in enumerate(nodes):
        if n.family == "c2ct":
            busy_q[(n.chip, qname[i])].append((int(issue[i]), int(issue[i]) + prof[i].busy))
    top = max(n.uid for n in nodes)
    add_n, add_t = [], []
    for c in range(chips):
        for l in range(hw.links_per_chip):
            if not topo.connected(c, l):
                continue
            q = f"c2c{l}t"
            iv = sorted(busy_q.get((c, q), []))
            k = 1
            while k * interval < end and k <= 64:
                t = k * interval
                for a, b in iv:  # the first gap from t that holds the DESKEW
                    if b <= t:
                        continue
                    if a >= t + dp.busy:
                        break
                    t = b
                if t < end:
                    top += 1
                    n = Node(c, "c2ct", _I("DESKEW", link=l), q, tag=f"deskew {k}", uid=top)
                    add_n.append(n)
                    add_t.append(t)
                    iv = sorted(iv + [(t, t + dp.busy)])
                k += 1
    if not add_n:
        return nodes, prof, issue, qname, why, tail
    m = len(add_n)
    return (nodes + add_n, prof + [dp] * m, np.concatenate([issue, np.array(add_t, dtype=np.int64)]),
            qname + [n.queue for n in add_n], np.concatenate([why, np.full(m, -1, dtype=np.int64)]),
            np.concatenate([tail, np.full(m, dp.busy, dtype=np.int64)]))


def _with_deskews(nodes, hw: Hardware) -> list:
    """The links' token-start DESKEWs (this pass owns them: lowering emits none): right after the chip's
    barrier (SYNC), every connected link re-aligns its clocks. The periodic ones: _periodic_deskews."""
    from isa import Instr as _I

    if hw.system.chips < 2:
        return nodes
    topo = hw.topology
    out = []
    for n in nodes:
        out.append(n)
        if n.instr.op == "SYNC":
            for l in range(hw.links_per_chip):
                if topo.connected(n.chip, l):  # an unconnected port has no clocks to realign
                    out.append(Node(n.chip, "c2ct", _I("DESKEW", link=l), f"c2c{l}t", tag="deskew", uid=n.uid))
    return out


def _attach_installs(nodes, prof, succ, npred, edge) -> dict:
    """Each tile group's IW is scheduled together with the group's first ACC (see the main loop): the
    ACC inherits the IW's constraints, shifted by how long its activation takes to reach the array, so
    an ACC may issue before its tile is installed (a list scheduler in time order could not do that
    through the IW). Returns {first ACC: (IW, activation arrival offset, install ready offset)}."""
    from isa.timing import PSEUDO_ACTIVE

    groups: dict = defaultdict(list)
    for i, n in enumerate(nodes):
        if n.grp is not None:
            groups[n.grp].append(i)
    iw_nodes = {i for i, n in enumerate(nodes) if n.instr.op == "IW"}
    into: dict = defaultdict(list)  # IW -> its incoming edges
    for j in range(len(succ)):
        for (k, d) in succ[j]:
            if k in iw_nodes:
                into[k].append((j, d))
    out = {}
    for g, idx in groups.items():
        iws = [i for i in idx if nodes[i].instr.op == "IW"]
        accs = [i for i in idx if nodes[i].instr.op == "ACC"]
        if len(iws) != 1 or not accs:
            continue
        w, a = iws[0], accs[0]
        arrive = next(x.t0 for x in prof[a].accesses if x.region == PSEUDO_ACTIVE and not x.write)
        ready = next(x.ready for x in prof[w].accesses if x.region == PSEUDO_ACTIVE and x.write)
        # the IW -> ACC edge is met by construction: drop it
        kept = [(j, d) for (j, d) in succ[w] if j != a]
        npred[a] -= len(succ[w]) - len(kept)
        succ[w][:] = kept
        for (j, d) in into[w]:
            edge(j, a, d + ready - arrive)
        out[a] = (w, arrive, ready)
    return out


def _unit_order(nodes, asap) -> dict:
    """Per (chip, unit): MXM node indices in the order their state is used. Groups (an LW and what
    uses its tile, with the EMITs of their op) keep their internal order; groups are ordered by when
    their first ACC could start (asap), ties by program order; without asap, program order."""
    groups: dict = defaultdict(list)
    for i, n in enumerate(nodes):
        if n.grp is not None:
            groups[n.grp].append(i)
    per_unit: dict = defaultdict(list)
    for g, idx in groups.items():
        first = idx[0]
        if asap is None:
            key = (first,)
        else:
            accs = [i for i in idx if nodes[i].instr.op == "ACC"]
            key = (int(min(asap[i] for i in accs)) if accs else int(asap[first]), first)
        per_unit[g[:2]].append((key, idx))
    return {u: [i for _, idx in sorted(lst) for i in idx] for u, lst in per_unit.items()}


def _sram_dependencies(nodes, prof, regions) -> list[dict]:
    """deps[i] = {j: delay} from SRAM locations: node i may issue no earlier than node j's issue + delay."""
    N = len(nodes)
    deps: list[dict] = [dict() for _ in range(N)]

    def need(i, j, d):
        if j != i and (j not in deps[i] or d > deps[i][j]):
            deps[i][j] = d

    writes: dict[int, int] = defaultdict(int)
    for p in prof:
        for a in p.accesses:
            if a.write and a.region >= 0:
                writes[a.region] += 1
    rewritten = {r for r, w in writes.items() if w > 1}
    per_chip = defaultdict(list)
    for i, n in enumerate(nodes):
        per_chip[n.chip].append(i)
    # SRAM locations, in program order
    for chip, idxs in per_chip.items():
        last_w: dict[int, np.ndarray] = {}  # region -> last writer node per vector
        last_wr: dict[int, np.ndarray] = {}  # region -> readable time rel. to that writer's issue
        readers: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for i in idxs:
            for a in prof[i].accesses:
                if a.region < 0:
                    continue
                reg = regions[a.region]
                nv = reg.n_vectors
                if a.region not in last_w:
                    last_w[a.region] = np.full(nv, -1, dtype=np.int64)
                    last_wr[a.region] = np.zeros(nv, dtype=np.int64)
                if a.whole:
                    vecs = np.arange(nv, dtype=np.int64)
                    first, last = a.t0, a.t0 + ((a.count - 1) * a.num) // a.den
                    tr = np.full(nv, first, dtype=np.int64)  # earliest touch
                    te = np.full(nv, last, dtype=np.int64)  # latest touch
                else:
                    vecs = _vectors(a)
                    tr = te = _times(a)
                lw = last_w[a.region][vecs]
                has = lw >= 0
                if a.write:
                    if has.any():  # WAW: this write becomes readable no earlier than the last one
                        d = last_wr[a.region][vecs][has] - (te[has] + a.ready)
                        for j, dd in _group_max(lw[has], d):
                            need(i, j, dd)
                    rd = readers.get(a.region)
                    if rd:
                        for v, t in zip(vecs.tolist(), tr.tolist()):
                            lst = rd.pop(v, None)
                            if lst:
                                for (j, rt) in lst:
                                    need(i, j, rt - t + 1)  # WAR
                    last_w[a.region][vecs] = i
                    last_wr[a.region][vecs] = te + a.ready
                else:
                    if has.any():  # RAW
                        d = last_wr[a.region][vecs][has] - tr[has]
                        for j, dd in _group_max(lw[has], d):
                            need(i, j, dd)
                    if a.region in rewritten:
                        rd = readers[a.region]
                        for v, t in zip(vecs.tolist(), te.tolist()):
                            rd[v].append((i, t))
    return deps


def _with_state(sram: list[dict], nodes, prof, unit_order) -> list[dict]:
    """The SRAM dependencies plus those of MXM state (shadow, active, accumulators) in each unit's order."""
    deps = [dict(d) for d in sram]

    def need(i, j, d):
        if j != i and (j not in deps[i] or d > deps[i][j]):
            deps[i][j] = d

    for order in unit_order.values():
        pseudo_w: dict[tuple, tuple] = {}
        pseudo_r: dict[tuple, list] = defaultdict(list)
        for i in order:
            for a in prof[i].accesses:
                if a.region >= 0:
                    continue
                key = (a.region, a.unit, a.off)
                t = a.t0
                w = pseudo_w.get(key)
                if a.write:
                    if w is not None:
                        need(i, w[0], w[1] + w[2] - (t + a.ready))  # WAW: readable in order
                    for (j, rt) in pseudo_r.pop(key, []):
                        need(i, j, rt - t + 1)  # WAR
                    pseudo_w[key] = (i, t, a.ready)
                else:
                    if w is not None:
                        need(i, w[0], w[1] + w[2] - t)  # RAW
                    pseudo_r[key].append((i, t))
    return deps


def _asap(N, deps, prof, nodes, regions) -> np.ndarray:
    """Earliest issue cycles with unlimited resources and MXM state tracked only inside tile groups
    (the first pass of the unit ordering). Node indices are a topological order."""
    t = np.zeros(N, dtype=np.int64)
    grp_of = [n.grp for n in nodes]
    for i in range(N):
        best = 0
        for j, d in deps[i].items():
            if grp_of[i] is not None and grp_of[j] is not None and grp_of[i] != grp_of[j] \
                    and nodes[i].instr.op in ("LW", "IW") and nodes[j].instr.op in ("IW", "ACC"):
                continue  # tile-state order between groups is what this pass is deciding
            v = t[j] + max(d, prof[j].commit - prof[i].commit + 1)
            if v > best:
                best = v
        t[i] = best
    return t


def _group_max(keys: np.ndarray, vals: np.ndarray):
    order = np.lexsort((vals, keys))
    k, v = keys[order], vals[order]
    last = np.r_[k[1:] != k[:-1], True]
    return zip(k[last].tolist(), v[last].tolist())


def _bank_runs(p, regions) -> list[tuple[int, int, int]]:
    """(bank, start, length) busy intervals of every bank an instruction touches, relative to issue;
    consecutive accesses to one bank are merged."""
    by_bank: dict[int, list] = defaultdict(list)
    for a in p.accesses:
        if a.region < 0:
            continue
        r = regions[a.region]
        if a.whole:
            first, last = a.t0, a.t0 + ((a.count - 1) * a.num) // a.den
            for b in range(r.bank, r.bank + min(r.width, r.rows)):
                by_bank[b].append((first, last + a.hold))
            continue
        vecs = _vectors(a)
        times = _times(a)
        banks = r.bank + (vecs // r.row_vectors) % r.width
        for b, t in zip(banks.tolist(), times.tolist()):
            by_bank[b].append((t, t + a.hold))
    out = []
    for b in sorted(by_bank):
        iv = sorted(by_bank[b])
        lo, hi = iv[0]
        for x, y in iv[1:]:
            if x < hi:
                raise CompileError(f"bank {b}: an instruction's own accesses overlap (cycles {x}..{hi})")
            if x == hi:
                hi = y
            else:
                out.append((b, lo, hi - lo))
                lo, hi = x, y
        out.append((b, lo, hi - lo))
    return out


class _Busy:
    """The cycles a bank is busy: sorted, disjoint, non-adjacent intervals [start, end) (touching ones are
    merged, so an interval's end is the first free cycle after it). Memory grows with the accesses booked,
    not with the length of the schedule or the number of chips (a bytearray per bank did: chips x banks x
    cycles bytes, 8 GB for an 8B model on 96 chips); 16 bytes an interval (machine integers, not Python
    ones in lists)."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts = array("q")
        self.ends = array("q")

    def conflict(self, lo: int, hi: int) -> int | None:
        """The first free cycle after the first busy cycle in [lo, hi), or None if all are free."""
        k = bisect_right(self.ends, lo)
        if k < len(self.starts) and self.starts[k] < hi:
            return self.ends[k]
        return None

    def book(self, lo: int, hi: int) -> None:
        k = bisect_right(self.ends, lo)
        starts, ends = self.starts, self.ends
        if k > 0 and ends[k - 1] == lo:  # touches the interval before: extend it
            ends[k - 1] = hi
            if k < len(starts) and starts[k] == hi:  # and now the one after
                ends[k - 1] = ends[k]
                del starts[k], ends[k]
        elif k < len(starts) and starts[k] == hi:
            starts[k] = lo
        else:
            starts.insert(k, lo)
            ends.insert(k, hi)


def _clash(bank_busy, chip, runs, t) -> int | None:
    """None if every access is free at issue t, else a later issue cycle worth trying."""
    worst = None
    for b, s, h in runs:
        occ = bank_busy.get((chip, b))
        if occ is None:
            continue
        lo = t + s
        free = occ.conflict(lo, lo + h)
        if free is not None:
            cand = t + (free - lo)
            worst = cand if worst is None else max(worst, cand)
    return worst


def _book(bank_busy, chip, runs, t) -> None:
    for b, s, h in runs:
        occ = bank_busy.get((chip, b))
        if occ is None:
            occ = bank_busy[(chip, b)] = _Busy()
        occ.book(t + s, t + s + h)
