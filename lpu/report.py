"""Where the cycles go (`lpu report PROGRAM`): one token of one context bucket, from the program and the
emulator's checked schedule (no compiler).

- The critical path through the token: from its last result back to its start, each step an instruction and
  what it waited for: the data of an earlier instruction (``latency``: the producer's write became readable
  just before this read), its queue (``busy unit``: the previous instruction of the same queue ended as it
  issued), a link (``link``: a RECV waiting for its SEND's vectors), a location still being read (``location
  in use``: it overwrites a vector, a tile or an accumulator another instruction reads until just before) or
  none of those exactly (``bank or slot``: the schedule held it back further, for a bank port or an MXM slot,
  the resources the checker proves free; its predecessor is then the constraint that came closest). Steps
  tile the path: each step runs from the moment its predecessor released it to the moment it released its
  successor, so their cycles add up to the path's length, which is the token's cycles (the program's last
  result is the token's end; a remainder, if any, is reported as ``tail``).
- Cycles per token by layer and by kind of operation: the critical path's steps, grouped by the operation each
  instruction belongs to (the program's provenance: header ``ops`` and one entry per stream word, from
  compiler/backend/provenance.py), so they add up to the cycles per token.
- Busy cycles and utilisation per unit (queue family) per chip, bytes per link, the SRAM map per chip
  (weights, KV cache, activations, tables, free; per bank), the lower bound's terms and the one that binds,
  and a sentence on what the gap to the bound is made of.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from isa import VECTOR_LANES, disasm_instr
from isa.program import dtype_bytes
from isa.table import MODE_GRP, MODE_REP, parse_queue

REASONS = ("latency", "busy unit", "link", "location in use", "bank or slot", "start", "tail")


class ReportError(ValueError):
    """A report that cannot be made as asked."""


@dataclass
class Step:
    instr: int  # schedule index (-1: the tail)
    start: int
    end: int
    reason: str
    waits_for: int  # schedule index of the predecessor (-1: none)
    wait: int = 0  # of its cycles, those it issued later than its closest constraint allowed ("bank or slot")

    @property
    def cycles(self) -> int:
        return self.end - self.start


def _vectors(runs: dict, sel: np.ndarray):
    """Expand access runs `sel` into per-vector rows: (run, vector index, cycle)."""
    cnt = runs["count"][sel].astype(np.int64)
    cnt = np.maximum(cnt, 0)
    rep = np.repeat(sel, cnt)
    k = np.arange(cnt.sum(), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    mode, m = runs["mode"][rep], np.maximum(runs["m"][rep], 1)
    f = np.where(mode == MODE_REP, k % m, np.where(mode == MODE_GRP, k // m, k))
    vec = runs["off"][rep] + runs["stride"][rep] * f
    t = runs["t0"][rep] + (k * runs["num"][rep]) // np.maximum(runs["den"][rep], 1)
    return rep, vec, t


def _key(runs, rep, vec, chip_of_run):
    # (chip, region or pseudo-location, MXM unit, vector) as one int64; regions are program-wide ids
    region = runs["region"][rep] + 8
    return ((chip_of_run[rep] * (1 << 22) + region) * 64 + runs["unit"][rep]) * (1 << 24) + vec


class CriticalPath:
    """The critical path of one bucket's token, from a schedule with its access runs."""

    def __init__(self, sched) -> None:
        self.s = sched
        runs = sched.runs
        n = sched.n
        self.end = sched.issue + sched.busy
        instr = runs["instr"]
        chip_of_run = sched.chip[instr]
        w = np.nonzero(runs["write"] != 0)[0]
        rep, vec, t = _vectors(runs, w)
        ready = t + runs["ready"][rep]
        self.finish = self.end.copy()
        if rep.size:
            np.maximum.at(self.finish, instr[rep], ready)
        key = _key(runs, rep, vec, chip_of_run)
        order = np.lexsort((ready, key))
        self.w_key, self.w_ready, self.w_instr = key[order], ready[order], instr[rep][order]
        # whole-region accesses (runtime-indexed): per (chip, region), every write of it
        rkey = chip_of_run[rep] * (1 << 22) + runs["region"][rep] + 8
        o2 = np.lexsort((ready, rkey))
        self.r_key, self.r_ready, self.r_instr = rkey[o2], ready[o2], instr[rep][o2]
        self.chip_of_run = chip_of_run
        rd = np.nonzero(runs["write"] == 0)[0]
        rep, vec, t = _vectors(runs, rd)
        key = _key(runs, rep, vec, chip_of_run)
        order = np.lexsort((t, key))
        self.rd_key, self.rd_t, self.rd_instr = key[order], t[order], instr[rep][order]
        # queue predecessor: the previous instruction of the same (chip, queue)
        order = np.lexsort((sched.pos, sched.qidx, sched.chip))
        prev = np.full(n, -1, dtype=np.int64)
        same = (sched.chip[order][1:] == sched.chip[order][:-1]) & (sched.qidx[order][1:] == sched.qidx[order][:-1])
        prev[order[1:][same]] = order[:-1][same]
        self.prev = prev
        self.send_of = self._match_links()

    def _match_links(self) -> dict[int, tuple[int, int]]:
        """RECV schedule index -> (SEND schedule index, cycle its first vector can be stored by the RECV)."""
        from .emulator.schedule import link_partners

        s, r = self.s.sends, self.s.recvs
        out = {}
        for a, z, k in link_partners(self.s, from_sends=False):
            arrive = int(s["t0"][a] + k * s["per_vector"][a] + s["arrive"][a])
            out[int(r["instr"][z])] = (int(s["instr"][a]), arrive)
        return out

    def _data_pred(self, x: int):
        """The producer whose data x waited for least: (producer, readable cycle, slack) or None."""
        runs = self.s.runs
        lo, hi = self.s.run_start[x], self.s.run_start[x + 1]
        sel = np.arange(lo, hi)
        sel = sel[runs["write"][sel] == 0]
        if not sel.size:
            return None
        best = None
        whole = runs["whole"][sel] != 0
        if (~whole).any():
            rep, vec, t = _vectors(runs, sel[~whole])
            key = _key(runs, rep, vec, self.chip_of_run)
            # the latest write of the same location readable by the read's cycle
            pos = np.searchsorted(self.w_key, key, side="right")
            # step back past writes readable after the read (sorted by readable within a key)
            for i in range(key.size):
                p = pos[i]
                lo_k = np.searchsorted(self.w_key, key[i], side="left")
                if p == lo_k:
                    continue
                rd = self.w_ready[lo_k:p]
                q = lo_k + np.searchsorted(rd, t[i], side="right") - 1
                if q < lo_k:
                    continue
                if self.w_instr[q] == x:
                    q -= 1
                    if q < lo_k:
                        continue
                slack = int(t[i] - self.w_ready[q])
                if best is None or slack < best[2]:
                    best = (int(self.w_instr[q]), int(self.w_ready[q]), slack)
        for r in sel[whole]:
            rk = int(self.chip_of_run[r]) * (1 << 22) + int(runs["region"][r]) + 8
            lo_k, p = np.searchsorted(self.r_key, rk, side="left"), np.searchsorted(self.r_key, rk, side="right")
            t = int(runs["t0"][r])
            q = lo_k + np.searchsorted(self.r_ready[lo_k:p], t, side="right") - 1
            while q >= lo_k and self.r_instr[q] == x:
                q -= 1
            if q >= lo_k:
                slack = t - int(self.r_ready[q])
                if best is None or slack < best[2]:
                    best = (int(self.r_instr[q]), int(self.r_ready[q]), slack)
        return best

    def _war_pred(self, x: int):
        """The reader of a location x overwrites that read it last before the write: (reader, cycle, slack)."""
        runs = self.s.runs
        lo, hi = self.s.run_start[x], self.s.run_start[x + 1]
        sel = np.arange(lo, hi)
        sel = sel[(runs["write"][sel] != 0) & (runs["whole"][sel] == 0)]
        if not sel.size:
            return None
        rep, vec, t = _vectors(runs, sel)
        key = _key(runs, rep, vec, self.chip_of_run)
        best = None
        for i in range(key.size):
            lo_k = np.searchsorted(self.rd_key, key[i], side="left")
            p = np.searchsorted(self.rd_key, key[i], side="right")
            if p == lo_k:
                continue
            q = lo_k + np.searchsorted(self.rd_t[lo_k:p], t[i], side="left") - 1  # the last read before the write
            while q >= lo_k and self.rd_instr[q] == x:
                q -= 1
            if q < lo_k:
                continue
            slack = int(t[i] - self.rd_t[q] - 1)
            if best is None or slack < best[2]:
                best = (int(self.rd_instr[q]), int(self.rd_t[q]) + 1, slack)
        return best

    def walk(self, cycles: int) -> list[Step]:
        s = self.s
        x = int(np.argmax(self.finish))
        cursor = int(self.finish[x])
        steps: list[Step] = []
        if cycles > cursor:
            steps.append(Step(-1, cursor, int(cycles), "tail", x))
        seen = set()
        while x >= 0 and x not in seen:
            seen.add(x)
            issue = int(s.issue[x])
            cands = []  # (slack, preference, reason, predecessor, release cycle)
            q = int(self.prev[x])
            if q >= 0:
                e = int(self.end[q])
                cands.append((issue - e, 2, "busy unit" if issue == e else "bank or slot", q, e))
            d = self._data_pred(x)
            if d is not None:
                cands.append((d[2], 0, "latency", d[0], d[1]))
            w = self._war_pred(x)
            if w is not None:
                cands.append((w[2], 3, "location in use", w[0], w[1]))
            link = self.send_of.get(x)
            if link is not None:
                a, arrive = link
                rt0 = int(s.recvs["t0"][np.searchsorted(s.recvs["instr"], x)])
                cands.append((rt0 - arrive, 1, "link", a, arrive))
            cands = [c for c in cands if c[3] not in seen]  # an ACC reads the tile an IW issued after it installs
            if not cands:
                steps.append(Step(x, 0, cursor, "start", -1))
                break
            slack, _, reason, p, release = min(cands, key=lambda c: (c[0], c[1]))
            if slack > 0:  # no constraint is tight: something the candidates do not model held it
                reason = "bank or slot"
            start = max(min(release, cursor), 0)
            steps.append(Step(x, start, cursor, reason, p, min(max(slack, 0), cursor - start)))
            cursor = max(start, 0)
            x = p
            if cursor == 0:
                break
        if steps and steps[-1].start > 0:  # the walk ended early (a cycle of predecessors): close the path
            steps.append(Step(-1, 0, steps[-1].start, "start", -1))
        steps.reverse()
        return steps


def sram_map(program) -> list[dict]:
    """Per chip: SRAM bytes by use (weights, KV cache, activations, tables: constants the compiler made, inputs
    and outputs), the free bytes, and the bytes per bank. A region's use comes from the program's symbols
    (weights, caches, inputs, outputs); a region with initial contents that is none of those is a table; the
    rest are activations (in a timing-only program, which has no contents, tables count as activations)."""
    from isa import as_hardware

    h = program.header
    hw = as_hardware(h["hw"])
    banks, cap = int(hw.banks), int(hw.sram_bytes_per_chip)
    use_of = {}
    for sym in program.symbols.values():
        use = {"weight": "weights", "state": "kv cache", "input": "inputs/outputs", "output": "inputs/outputs"}.get(sym.kind)
        for sh in sym.shards if use else ():
            use_of[sh.region] = use
    with_data = {reg for reg, _, _ in program.image}
    n = int(h["chips"])
    uses = ("weights", "kv cache", "activations", "tables", "inputs/outputs")
    per = np.zeros((n, len(uses)), dtype=np.int64)
    per_bank = np.zeros((n, banks), dtype=np.int64)
    for r in program.regions:
        use = use_of.get(r.id) or ("tables" if r.id in with_data else "activations")
        b = r.rows * r.row_vectors * VECTOR_LANES * dtype_bytes(r.dtype)
        per[r.chip, uses.index(use)] += b
        w = max(1, r.width)
        for k in range(w):
            if 0 <= r.bank + k < banks:
                per_bank[r.chip, r.bank + k] += b // w
    out = []
    for c in range(n):
        used = int(per[c].sum())
        out.append({"chip": c, **{u: int(per[c, k]) for k, u in enumerate(uses)}, "used": used,
                    "free": max(cap - used, 0), "capacity": cap, "bytes_per_bank": per_bank[c].tolist()})
    return out


def _bucket_for(h: dict, context: int | None) -> int:
    buckets = h["buckets"]
    if context is None:
        return len(buckets) - 1
    if context < 1 or context > h["max_context"]:
        raise ReportError(f"--context {context}: the program holds 1..{h['max_context']} positions")
    for b, bk in enumerate(buckets):
        if bk["first_position"] <= context - 1 <= bk["last_position"]:
            return b
    raise ReportError(f"--context {context}: no bucket of this program serves it (compiled for one context only?)")


def report(program, emulator, context: int | None = None) -> dict:
    """The report of one token of the bucket serving `context` positions (default: the program's last
    bucket), as the dict `lpu report --json` prints."""
    h = program.header
    b = _bucket_for(h, context)
    bk = h["buckets"][b]
    cycles = int(emulator.check(b).cycles)
    sched = emulator.schedule_with_accesses(b)
    cp = CriticalPath(sched)
    steps = cp.walk(cycles)
    ops = h.get("ops") or []
    prov = program.provenance
    queues = sched.queues

    # each scheduled instruction's operation (-1: none), read once from the provenance of its stream
    op_ids = np.full(sched.n, -1, dtype=np.int64)
    if ops:
        for qi, q in enumerate(queues):
            for c in np.unique(sched.chip[sched.qidx == qi]).tolist():
                a = prov.get((b, c, q))
                if a is not None:
                    sel = np.nonzero((sched.chip == c) & (sched.qidx == qi))[0]
                    op_ids[sel] = a[sched.pos[sel]]

    def op_of(i: int):
        k = int(op_ids[i]) if i >= 0 else -1
        return ops[k] if k >= 0 else None

    def where(i: int) -> dict:
        return {"chip": int(sched.chip[i]), "queue": queues[int(sched.qidx[i])], "issue_cycle": int(sched.issue[i]),
                "instr": sched.disasm(i)}

    by_kind, by_layer, by_reason = defaultdict(int), defaultdict(int), defaultdict(int)
    rows = []
    for st in steps:
        op = op_of(st.instr)
        kind = "tail" if st.instr < 0 and st.reason == "tail" else (op["kind"] if op else "unattributed")
        layer = op.get("layer") if op else None
        by_kind[kind] += st.cycles
        by_layer["none" if layer is None else str(layer)] += st.cycles
        by_reason[st.reason] += st.cycles
        row = {"start": st.start, "end": st.end, "cycles": st.cycles, "wait": st.wait, "reason": st.reason, "kind": kind,
               "layer": layer, "operation": op["name"] if op else None}
        if st.instr >= 0:
            row.update(where(st.instr))
        if st.waits_for >= 0:
            row["waits_for"] = where(st.waits_for)
        rows.append(row)
    # busy cycles per unit family per chip, and per kind (all instructions, every unit)
    fam = np.array([parse_queue(q)[0] for q in queues])
    fams = sorted(set(fam.tolist()), key=lambda f: ["icu", "mem", "vxm", "sxm", "mxmw", "mxma", "c2ct", "c2cr"].index(f)
                  if f in ["icu", "mem", "vxm", "sxm", "mxmw", "mxma", "c2ct", "c2cr"] else 99)
    nq = {f: int((fam == f).sum()) for f in fams}
    n = int(h["chips"])
    busy = np.zeros((n, len(fams)), dtype=np.int64)
    fi = np.array([fams.index(f) for f in fam])
    np.add.at(busy, (sched.chip, fi[sched.qidx]), sched.busy)
    util = [{"chip": c, **{f: round(float(busy[c, k]) / (nq[f] * cycles), 4) for k, f in enumerate(fams)}}
            for c in range(n)]
    busy_kind = defaultdict(int)
    has = op_ids >= 0
    if has.any():
        per_op = np.bincount(op_ids[has], weights=sched.busy[has], minlength=len(ops))
        for k in np.nonzero(per_op)[0].tolist():
            busy_kind[ops[k]["kind"]] += int(per_op[k])
    # bytes per directed link
    links = []
    sends = sched.sends
    if len(sends["instr"]):
        L = max(1, int(emulator.machine.links))  # how the schedule numbers directed links
        regions = program.regions
        nbytes = np.array([VECTOR_LANES * dtype_bytes(regions[int(r)].dtype) for r in sends["region"]], dtype=np.int64)
        vol = defaultdict(int)
        for dl, cnt, nb in zip(sends["dlink"].tolist(), sends["count"].tolist(), nbytes.tolist()):
            vol[dl] += cnt * nb
        topo = emulator.topo  # (chip, link) -> (peer chip, peer link)
        for dl in sorted(vol):
            c, l = divmod(dl, L)
            peer = int(topo[c, l, 0])
            links.append({"chip": c, "link": l, "to_chip": peer if peer >= 0 else None, "bytes": int(vol[dl])})
    terms = dict(bk.get("lower_bound_terms") or {})
    lb = int(bk.get("lower_bound_cycles", 0))
    binding = max(terms, key=terms.get) if terms else None
    out = {"model": h.get("source") or "", "chips": n, "partition": h.get("partition"), "stages": h.get("stages", 1),
           "bucket": b, "context": bk["last_position"] + 1, "clock_hz": int(h["hw"]["clock_hz"]),
           "cycles_per_token": cycles, "tokens_per_second": float(h["hw"]["clock_hz"]) / cycles,
           "lower_bound_cycles": lb, "bound_ratio": round(cycles / lb, 4) if lb else None,
           "lower_bound_terms": terms, "binding_term": binding,
           "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
           "by_layer": dict(sorted(by_layer.items(), key=lambda kv: (kv[0] == "none", int(kv[0]) if kv[0].isdigit() else 0))),
           "critical_path": {"cycles": sum(r["cycles"] for r in rows), "steps": rows,
                             "wait_cycles": sum(r["wait"] for r in rows),
                             "by_reason": {r: by_reason.get(r, 0) for r in REASONS if by_reason.get(r)}},
           "busy_cycles_by_kind": dict(sorted(busy_kind.items(), key=lambda kv: -kv[1])),
           "utilisation": util, "queues_per_unit": nq, "link_bytes": links, "sram": sram_map(program),
           "provenance": bool(ops and prov)}
    out["gap"] = gap_sentence(out)
    return out


def gap_sentence(r: dict) -> str:
    """What the gap between the token's cycles and the lower bound is made of, in one sentence."""
    cyc, lb, term = r["cycles_per_token"], r["lower_bound_cycles"], r["binding_term"]
    if not lb:
        return "No lower bound was recorded for this bucket."
    gap = cyc - lb
    cp = r["critical_path"]
    by = cp["by_reason"]
    parts = {"waits no dependency explains (a bank port or an MXM slot the schedule gave it later)": cp["wait_cycles"],
             "queue turns (steps waiting for their unit's previous instruction)": by.get("busy unit", 0),
             "link transfers (RECVs waiting for their SENDs)": by.get("link", 0)}
    rest = gap - sum(parts.values())
    label = {"latency": "the dependency chain at the hardware's least latencies", "weight_streaming":
             "weight streaming into the MXMs", "compute": "the MXM passes", "links": "the busiest link's bytes"}.get(
                 term, term)
    parts["the path's latencies beyond the bound's" if term == "latency" else
          f"the path's latencies, which the {term} term does not count"] = rest
    big = max(parts, key=parts.get)
    listed = "; ".join(f"{v:,} cycles of {k}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v)
    return (f"The bound binds on {term} ({label}: {lb:,} cycles); the token takes {cyc:,}, {gap:,} more "
            f"({gap / lb:.1%}). Along the critical path that gap is {listed or 'nothing'}"
            + (" (negative: the path's steps cost less there than the bound's chain)" if rest < 0 else "")
            + f"; the largest contributor is {big.split(' (')[0]}.")


def _mib(b: int) -> str:
    return f"{b / 2**20:,.2f}"


def render(r: dict, steps: int = 12, console=None) -> None:
    """`lpu report`'s text: rich tables (plain text when the output is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    con = console or Console(highlight=False, width=probe.width if probe.is_terminal else 160)
    cyc = r["cycles_per_token"]
    model = r["model"].get("file", "") if isinstance(r["model"], dict) else str(r["model"])
    con.print(f"[bold]{model}[/]: {r['chips']} chip(s), {r['partition']}"
              + (f" ({r['stages']} stages)" if r.get("stages", 1) > 1 else "")
              + f", bucket {r['bucket']} (context {r['context']:,}): {cyc:,} cycles/token = "
              f"{r['tokens_per_second']:,.0f} tokens/s at {r['clock_hz'] / 1e6:,.0f} MHz; lower bound "
              f"{r['lower_bound_cycles']:,}" + (f", ratio {r['bound_ratio']:.3f}" if r["bound_ratio"] else ""),
              soft_wrap=True)
    if not r["provenance"]:
        con.print("note: this program has no provenance (compiled before it was recorded): kinds and layers are "
                  "'unattributed'; recompile for them")

    def split(title, d):
        con.print(f"\n[bold]{title}[/]", soft_wrap=True)
        t = Table()
        t.add_column(title.split(" by ")[-1].split(" ")[0])
        t.add_column("cycles", justify="right")
        t.add_column("share", justify="right")
        for k, v in d.items():
            t.add_row(str(k), f"{v:,}", f"{v / cyc:.1%}")
        t.add_row("[bold]total[/]", f"[bold]{sum(d.values()):,}[/]", f"{sum(d.values()) / cyc:.1%}")
        return t

    con.print(split("Cycles per token (critical path) by kind", r["by_kind"]))
    con.print(split("Cycles per token (critical path) by layer", r["by_layer"]))
    cp = r["critical_path"]
    con.print(f"\n[bold]Critical path[/]: {len(cp['steps'])} steps, {cp['cycles']:,} cycles; waiting for: "
              + ", ".join(f"{k} {v:,}" for k, v in cp["by_reason"].items())
              + f" (of which {cp['wait_cycles']:,} issued later than any constraint needed)", soft_wrap=True)
    con.print(f"Its {min(steps, len(cp['steps']))} longest steps (`--steps N`; `--json` has them all):"
              if steps < len(cp["steps"]) else "Its steps:", soft_wrap=True)
    t = Table()
    for col in ("start", "cycles", "wait", "waits for", "chip", "queue", "kind", "layer", "operation", "instruction"):
        t.add_column(col, justify="right" if col in ("start", "cycles", "wait", "chip", "layer") else "left",
                     overflow="ellipsis", no_wrap=True, min_width=len(col) if col not in ("operation", "instruction") else None,
                     max_width=40 if col in ("operation", "instruction") else None)
    pick = sorted(cp["steps"], key=lambda s: -s["cycles"])[:steps] if steps < len(cp["steps"]) else cp["steps"]
    for s in sorted(pick, key=lambda s: s["start"]):
        t.add_row(f"{s['start']:,}", f"{s['cycles']:,}", f"{s['wait']:,}", s["reason"], str(s.get("chip", "")), s.get("queue", ""),
                  s["kind"], "" if s["layer"] is None else str(s["layer"]), s["operation"] or "",
                  s.get("instr", ""))
    con.print(t)
    fams = list(r["queues_per_unit"])
    con.print("\n[bold]Utilisation per unit[/] (busy cycles / (queues x cycles per token))", soft_wrap=True)
    t = Table()
    t.add_column("chip", justify="right")
    for f in fams:
        t.add_column(f"{f} x{r['queues_per_unit'][f]}", justify="right")
    rows = r["utilisation"]
    if len(rows) > 16:  # many chips: the spread, not every chip
        for name, fn in (("min", min), ("mean", lambda v: sum(v) / len(v)), ("max", max)):
            t.add_row(name, *[f"{fn([u[f] for u in rows]):.1%}" for f in fams])
    else:
        for u in rows:
            t.add_row(str(u["chip"]), *[f"{u[f]:.1%}" for f in fams])
    con.print(t)
    bk = r["busy_cycles_by_kind"]
    if bk:
        con.print("Busy unit-cycles by kind (every queue): " + ", ".join(f"{k} {v:,}" for k, v in bk.items()),
                  soft_wrap=True)
    con.print("\n[bold]SRAM per chip[/] (MiB)", soft_wrap=True)
    t = Table()
    cols = ("weights", "kv cache", "activations", "tables", "inputs/outputs", "free")
    t.add_column("chip", justify="right")
    for c in cols:
        t.add_column(c, justify="right")
    t.add_column("fullest bank", justify="right")
    srows = r["sram"] if len(r["sram"]) <= 16 else [max(r["sram"], key=lambda s: s["used"])]
    for s in srows:
        bank = max(s["bytes_per_bank"]) if s["bytes_per_bank"] else 0
        t.add_row(str(s["chip"]), *[_mib(s[c]) for c in cols], _mib(bank))
    con.print(t)
    if len(r["sram"]) > 16:
        con.print(f"(the fullest of {len(r['sram'])} chips; `--json` has every chip and bank)")
    if r["link_bytes"]:
        lb = r["link_bytes"]
        top = max(lb, key=lambda x: x["bytes"])
        con.print(f"Links: {len(lb)} directed links carry {sum(x['bytes'] for x in lb):,} bytes per token; the "
                  f"busiest, chip {top['chip']} link {top['link']} -> chip {top['to_chip']}, {top['bytes']:,}",
                  soft_wrap=True)
    con.print("\n[bold]Lower bound terms[/]", soft_wrap=True)
    t = Table()
    t.add_column("term")
    t.add_column("cycles", justify="right")
    for k, v in sorted(r["lower_bound_terms"].items(), key=lambda kv: -kv[1]):
        t.add_row(k + (" (binds)" if k == r["binding_term"] else ""), f"{v:,}")
    con.print(t)
    con.print("\n" + r["gap"], soft_wrap=True)
