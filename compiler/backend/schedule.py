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
"""
from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right
from collections import defaultdict

import numpy as np

from isa import Hardware, Machine
from isa.table import parse_queue, queue_name

from ..errors import CompileError
from .buffers import Node


class Scheduled:
    def __init__(self, nodes, issue, queue, profiles, cycles, why=None, tail=None) -> None:
        self.nodes = nodes
        self.issue = issue
        self.queue = queue
        self.profiles = profiles
        self.cycles = cycles
        self.why = why  # per node: the predecessor that decided its earliest start (-1: none)
        self.tail = tail  # per node: cycles from issue to its last effect

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


def schedule(code: list[list], regions, hw: Hardware) -> Scheduled:
    """code[chip] = nodes in program order. Returns issue cycles and queues for all nodes."""
    mach = Machine(hw, regions)
    nodes = [n for chip in code for n in chip]
    # program order per chip, but a global topological order is creation order: nodes were created
    # producer-first across chips; sort by the id the lowerer gave them
    nodes.sort(key=lambda n: n.uid)
    nodes = _with_deskews(nodes, hw)
    N = len(nodes)
    prof = []
    for n in nodes:
        q = n.queue or queue_name(n.family, 0)
        try:
            prof.append(mach.profile(n.instr, q))
        except Exception as exc:
            raise CompileError(f"chip {n.chip}: cannot time {n.instr!r} on {q}: {exc}") from None
    # dependencies: SRAM in program order; MXM state (shadow, active, accumulators) in each unit's
    # order, which is program order at first and then the order its tile groups' activations are
    # ready in an unconstrained as-soon-as-possible pass (a unit then serves groups as they become
    # ready, not as the lowering happened to emit them)
    sram = _sram_dependencies(nodes, prof, regions)
    deps = _with_state(sram, nodes, prof, _unit_order(nodes, None))
    asap = _asap(N, deps, prof, nodes, regions)
    deps = _with_state(sram, nodes, prof, _unit_order(nodes, asap))
    succ: list[list[tuple[int, int]]] = [[] for _ in range(N)]
    npred = np.zeros(N, dtype=np.int64)

    def edge(a: int, b: int, delay: int) -> None:
        succ[a].append((b, int(delay)))
        npred[b] += 1

    for i, d in enumerate(deps):
        for j, dd in d.items():
            # execution order (issue + commit) must follow the dependency, strictly
            edge(j, i, max(dd, prof[j].commit - prof[i].commit + 1))
    # --- links: the k-th send on a directed link meets the k-th receive on the other end
    topo = hw.topology
    sends = defaultdict(list)
    recvs = defaultdict(list)
    for i, n in enumerate(nodes):
        if n.instr.op == "SEND":
            sends[(n.chip, n.instr["link"])].append(i)
        elif n.instr.op == "RECV":
            recvs[(n.chip, n.instr["link"])].append(i)
    for (c, l), lst in sends.items():
        peer, pl = topo.peer(c, l)
        rl = recvs.get((peer, pl), [])
        if len(rl) != len(lst):
            raise CompileError(f"chip {c} link {l}: {len(lst)} sends but chip {peer} link {pl} has {len(rl)} receives")
        for k, (s, r) in enumerate(zip(lst, rl)):
            if prof[s].send.count != prof[r].recv.count:
                raise CompileError(f"chip {c} link {l}: send {k} has {prof[s].send.count} vectors, the receive {prof[r].recv.count}")
            t_w = prof[r].accesses[0].t0
            edge(s, r, prof[s].send.arrive - t_w)
            if k:
                edge(lst[k - 1], s, 0)  # link order is program order
                edge(rl[k - 1], r, 0)
    # the token-start barrier: nothing else on the chip issues before it completes; the k-th periodic
    # deskew of a link comes k intervals after it
    sync_of = {}
    for i, n in enumerate(nodes):
        if n.instr.op == "SYNC":
            sync_of[n.chip] = i
    interval = hw.chip.c2c.deskew_interval_cycles
    for i, n in enumerate(nodes):
        j = sync_of.get(n.chip)
        if j is None or j == i:
            continue
        k = getattr(n, "deskew_k", 0)
        edge(j, i, prof[j].busy + k * interval)
    attached = _attach_installs(nodes, prof, succ, npred, edge)
    # --- priorities: longest path to the end
    busy = np.array([p.busy for p in prof], dtype=np.int64)
    tail = np.array([max([busy[i]] + [a.t0 + ((a.count - 1) * a.num) // a.den + a.ready for a in prof[i].accesses if a.write])
                     for i in range(N)], dtype=np.int64)
    prio = tail.copy()
    for i in range(N - 1, -1, -1):
        best = tail[i]
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
    est = np.zeros(N, dtype=np.int64)
    why = np.full(N, -1, dtype=np.int64)
    issue = np.full(N, -1, dtype=np.int64)
    qname = [None] * N
    heap = [(0, -int(prio[i]), i) for i in range(N) if npred[i] == 0]
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

    def place(i, t, q):
        nonlocal done
        issue[i] = t
        qname[i] = q
        qfree[(nodes[i].chip, q)] = max(qfree[(nodes[i].chip, q)], t + prof[i].busy)
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
        n = nodes[i]
        cands = [n.queue] if n.queue else queues[n.family]
        q_ok = [q for q in cands if qfree[(n.chip, q)] <= t]
        if not q_ok:
            heapq.heappush(heap, (min(qfree[(n.chip, q)] for q in cands), negp, i))
            continue
        runs = runs_of.get(i)
        if runs is None:
            runs = runs_of[i] = _bank_runs(prof[i], regions)
        clash = _clash(bank_busy, n.chip, runs, t)
        if clash is not None:
            heapq.heappush(heap, (max(t + 1, clash), negp, i))
            continue
        w = install_of.get(i)
        if w is not None:
            # the group's install goes with its first ACC: after the tile is loaded and the previous
            # tile's activations have passed, before this ACC's activation reaches the array
            _, arrive, ready = attached[i]
            lo = max([issue[j] + d for (j, d) in pred_of[w]] + [qfree[(n.chip, nodes[w].queue)]])
            if nodes[w].queue == n.queue and t - prof[w].busy < lo <= t:
                lo = t + 1  # one queue: the install goes right after this ACC
            hi = t + arrive - ready
            if lo > hi:
                heapq.heappush(heap, (t + (lo - hi), negp, i))
                continue
            place(w, int(lo), nodes[w].queue)
            why[w] = max(pred_of[w], key=lambda jd: issue[jd[0]] + jd[1])[0] if pred_of[w] else -1
        q = q_ok[0]
        _book(bank_busy, n.chip, runs, t)
        del runs_of[i]
        place(i, t, q)
    if done != N:
        raise CompileError(f"scheduler: {N - done} instructions could not be scheduled (dependency cycle)")
    # periodic deskews past the program's end are not needed: drop them (their queues just idle)
    periodic = np.array([getattr(n, "deskew_k", 0) > 0 for n in nodes], dtype=bool)
    end = int((issue + tail)[~periodic].max()) if (~periodic).any() else 0
    keep = ~periodic | (issue < end)
    if not keep.all():
        idx = np.nonzero(keep)[0]
        remap = np.full(N, -1, dtype=np.int64)
        remap[idx] = np.arange(idx.size)
        nodes = [nodes[i] for i in idx]
        prof = [prof[i] for i in idx]
        issue, tail, asap = issue[idx], tail[idx], asap[idx]
        qname = [qname[i] for i in idx]
        why = np.where(why[idx] >= 0, remap[np.maximum(why[idx], 0)], -1)
        N = idx.size
    cycles = int(max((issue + tail).max(), 0)) if N else 0
    out = Scheduled(nodes, issue, qname, prof, cycles, why, tail)
    out.asap_cycles = int((asap + tail).max()) if N else 0  # unlimited resources, same dependencies
    return out


def _with_deskews(nodes, hw: Hardware) -> list:
    """The links' DESKEWs (this pass owns them: lowering emits none). A link re-aligns its clocks at the
    start of every token, right after the chip's barrier (SYNC), and then every
    `deskew_interval_cycles` of a long program (each chip's counters drift; [ISCA22]): DESKEW nodes for
    each interval it may span are appended, and the ones past the program's end dropped later."""
    from isa import Instr as _I

    chips = hw.system.chips
    if chips < 2:
        return nodes
    topo = hw.topology
    links = hw.links_per_chip
    out = []
    for n in nodes:
        out.append(n)
        if n.instr.op == "SYNC":
            for l in range(links):
                if topo.connected(n.chip, l):  # an unconnected port has no clocks to realign
                    out.append(Node(n.chip, "c2ct", _I("DESKEW", link=l), f"c2c{l}t", tag="deskew", uid=n.uid))
    nodes = out
    interval = hw.chip.c2c.deskew_interval_cycles
    # a generous horizon: every instruction's busy time in a row is more than any schedule needs
    horizon = sum(1 for _ in nodes) * 4 + 200_000
    extra = []
    top = max((n.uid for n in nodes), default=0)
    k = 1
    while k * interval < horizon and k <= 64:
        for c in range(chips):
            for l in range(links):
                if not topo.connected(c, l):
                    continue
                top += 1
                n = Node(c, "c2ct", _I("DESKEW", link=l), f"c2c{l}t", tag=f"deskew {k}", uid=top)
                n.deskew_k = k
                extra.append(n)
        k += 1
    return nodes + extra


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
