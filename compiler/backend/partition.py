"""Tensor-parallel partitioning by demand over flat indices.

The decoder is split the way Megatron splits it, but found from the graph rather than from names:

- A *region* is the part of the graph between column-split linears (its sources) and a row-split
  linear (its sink): e.g. q/k/v projections -> rotary -> attention -> o_proj, or up/gate -> activation
  -> down. It is found by walking back from each linear's input through local equations (elementwise,
  data movement, attention, per-group reductions) to other linears.
- The sink's input elements fall into *units*: connected components of "these elements are computed
  together" (a query head with its scores and context; one MLP column). KV caches, inputs and tables
  are replicable and do not join units, so GQA heads sharing a kv head stay separate units and the kv
  head is computed on every chip that needs it. A region whose sink input is one unit (e.g. after a
  norm over the whole hidden state) is not split.
- Units are dealt to chips in contiguous balanced blocks; each chip's demand is propagated backwards
  through the region to the columns of the sources it must compute. The sink computes a partial sum
  over the chip's rows; an all-reduce makes it whole again on every chip.
- Linears whose output is a graph output (the LM head) are split by output columns and left sharded:
  the host reads each chip's slice. Large embedding tables are split by rows: each chip gathers the
  row if it owns it (zeros otherwise) and an all-reduce sums the one row that is not zero.
- Everything else is replicated: every chip computes it (norms, residual adds: tiny work).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from isa import VECTOR_LANES as LANES

from ..ir import DATA_MOVEMENT, Graph
from .indexmaps import move_map, operand_map, shape1, size1

# equations a region may contain (besides its sources)
LOCAL = {"unary", "binary", "where", "reduce", "mask_fill", "kv_append", "attn_qk", "attn_pv"} | set(DATA_MOVEMENT)
EMBED_SPLIT_BYTES = 1 << 20  # tables larger than this are split by rows over the chips
ALIGNED_SLACK = 0.0  # pipeline cuts at the layers' phase: at most this much heavier a heaviest stage


@dataclass
class Plan:
    chips: int
    # per chip: var -> sorted flat indices (T = 1) this chip holds; absent = not on this chip
    hold: list[dict[str, np.ndarray]]
    rowsplit: set[str] = field(default_factory=set)  # outputs of row-split linears (partial -> all-reduce)
    embed_rows: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # gathered var -> row range per chip
    sharded_outputs: set[str] = field(default_factory=set)  # graph outputs left split over chips
    regions: list[dict] = field(default_factory=list)  # for reports: sink, units per chip
    mapping: str = "tp"  # tp | pp | hybrid | single
    owner: dict[str, int] = field(default_factory=dict)  # pp, hybrid: the stage that computes each var
    stages: list[tuple[int, int]] = field(default_factory=list)  # pp, hybrid: eqn index range per stage
    group: int = 0  # chips per stage, tensor-parallel among themselves (pp: 1; tp: all; hybrid: chips / stages)
    # pp, hybrid: (var, chip that needs it) -> the chip of an earlier stage that sends it there
    transfers: dict[tuple[str, int], int] = field(default_factory=dict)
    # pp, hybrid: values computed from the graph's inputs and small constants alone (rotary rows, masks), which
    # every stage that needs them computes itself rather than receives (`owner` is the first such stage)
    local: set[str] = field(default_factory=set)

    def has(self, chip: int, var: str) -> bool:
        return var in self.hold[chip]

    @property
    def staged(self) -> bool:
        return self.mapping in ("pp", "hybrid")

    @property
    def per_stage(self) -> int:
        return self.group or self.chips

    def stage_chips(self, stage: int) -> range:
        s = self.per_stage
        return range(stage * s, (stage + 1) * s)

    def chips_of(self, var: str) -> range:
        """The chips that work together on var: its stage's chips (all chips when not staged)."""
        if self.staged and var in self.owner:
            return self.stage_chips(self.owner[var])
        return range(self.chips)

    def source_chip(self, var: str, chip: int) -> int:
        """The chip of var's stage that sends it to `chip` (of a later stage): its counterpart by position."""
        return self.owner[var] * self.per_stage + chip % self.per_stage


class _UF:
    def __init__(self) -> None:
        self.p: dict = {}

    def find(self, a):
        p = self.p
        p.setdefault(a, a)
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.p[rb] = ra


def deps(g: Graph, e) -> list[tuple[int, np.ndarray, list[np.ndarray] | None]]:
    """For each var input k of a local equation: (k, map, groups) where map[o] is the input element read
    by output element o, or groups[o] the input elements (reductions, attention)."""
    out = []
    oshape = shape1(g.vars[e.outputs[0]].shape)
    if e.prim in ("unary",):
        return [(0, np.arange(size1(oshape)), None)]
    if e.prim in ("binary", "where", "mask_fill"):
        return [(k, operand_map(g, e, k), None) for k in range(len(e.inputs))]
    if e.prim in DATA_MOVEMENT:
        which, idx = move_map(g, e)
        for k in range(len(e.inputs)):
            m = np.full(which.shape, -1, dtype=np.int64)
            m[which == k] = idx[which == k]
            out.append((k, m, None))
        return out
    if e.prim == "reduce":
        gsz = shape1(g.shape(e.inputs[0]))[-1]
        n = size1(oshape)
        base = np.arange(n, dtype=np.int64)[:, None] * gsz
        return [(0, None, list(base + np.arange(gsz)))]
    if e.prim == "attn_qk":
        _, hq, _, d = shape1(g.shape(e.inputs[0]))
        grp = e.params["group"]
        hk = hq // grp
        q_groups = [np.arange(h * d, (h + 1) * d) for h in range(hq)]
        kv_groups = [np.arange((h // grp) * d, (h // grp + 1) * d) for h in range(hq)]
        assert hk * grp == hq
        return [(0, None, q_groups), (1, None, kv_groups)]
    if e.prim == "attn_pv":
        _, hq, _, d = shape1(g.vars[e.outputs[0]].shape)
        grp = e.params["group"]
        p_map = np.repeat(np.arange(hq), d)
        kv_map = np.array([(h // grp) * d + k for h in range(hq) for k in range(d)], dtype=np.int64)
        return [(0, p_map, None), (1, kv_map, None)]
    if e.prim == "kv_append":
        return [(0, np.arange(size1(oshape)), None)]
    raise AssertionError(e.prim)


def _replicable(g: Graph, var: str, prod) -> bool:
    """Values that may be held by several chips without joining units: caches, inputs, consts, tables."""
    if var in g.consts or var in g.inputs:
        return True
    e = prod.get(var)
    return e is None or e.prim in ("kv_append", "gather")


def find_regions(g: Graph, reuse: bool = True) -> dict[int, tuple | None]:
    """Every linear's region (see `_find_region`), by equation index. It does not depend on the chip
    count, so the candidates of one compile (tensor-parallel, hybrids) share it. Repeated structure is
    recognised: a region whose cone has the same shape as one already found (the same prims, parameters,
    shapes and wiring: the next layer of a decoder) takes that region's units instead of joining every
    element again (`reuse=False` joins them afresh; a test checks both agree)."""
    prod = {o: e for e in g.eqns for o in e.outputs}
    index = {id(e): i for i, e in enumerate(g.eqns)}
    cons = g.consumers()
    memo: dict | None = {} if reuse else None
    return {li: _find_region(g, L, prod, index, cons, memo) for li, L in enumerate(g.eqns) if L.prim == "linear"}


def plan(g: Graph, chips: int, regions: dict | None = None) -> Plan:
    full = {v: np.arange(size1(var.shape), dtype=np.int64) for v, var in g.vars.items()}
    hold = [dict(full) for _ in range(chips)]
    p = Plan(chips, hold, group=chips)
    if chips == 1:
        return p
    if regions is None:
        regions = find_regions(g)
    prod = {o: e for e in g.eqns for o in e.outputs}
    index = {id(e): i for i, e in enumerate(g.eqns)}
    cons = g.consumers()
    claimed: set[str] = set()  # vars owned by a region

    for li, L in enumerate(g.eqns):
        if L.prim != "linear":
            continue
        region = regions[li]
        if region is None:
            continue
        cone_eqns, sources, units = region
        cone_vars = {o for e in cone_eqns for o in e.outputs} | {e.outputs[0] for e in sources}
        if cone_vars & claimed:
            continue
        claimed |= cone_vars
        p.rowsplit.add(L.outputs[0])
        # deal units to chips in contiguous balanced blocks
        owner = [min(k * chips // len(units), chips - 1) for k in range(len(units))]
        p.regions.append({"sink": L.outputs[0], "units": len(units),
                          "per_chip": [owner.count(c) for c in range(chips)]})
        x = L.inputs[0]
        for c in range(chips):
            mine = [u for u, o in zip(units, owner) if o == c]
            demand: dict[str, set] = {v: set() for v in cone_vars}
            demand[x] = set(np.concatenate(mine).tolist()) if mine else set()
            for e in sorted(cone_eqns, key=lambda e: -index[id(e)]):
                dout = demand.get(e.outputs[0], set())
                if not dout:
                    continue
                o = np.fromiter(sorted(dout), dtype=np.int64)
                for k, m, groups in deps(g, e):
                    inp = e.inputs[k]
                    if inp not in g.vars or inp in g.inputs:
                        continue
                    need = np.concatenate([groups[i] for i in o]) if groups is not None else m[o]
                    need = need[need >= 0]
                    demand.setdefault(inp, set()).update(need.tolist())
            for v in cone_vars:
                hold[c][v] = np.fromiter(sorted(demand.get(v, ())), dtype=np.int64)
            # replicable vars feeding the region (caches) are held only where demanded
            for e in cone_eqns:
                if e.prim == "kv_append":
                    hold[c][e.outputs[0]] = np.fromiter(sorted(demand.get(e.outputs[0], ())), dtype=np.int64)
    # LM head and other linears producing graph outputs: split by output columns
    outs = set(g.outputs.values())
    for li, L in enumerate(g.eqns):
        if L.prim != "linear" or L.outputs[0] in p.rowsplit:
            continue
        # follow reshapes (flat order unchanged) from the linear to a graph output
        chain = [L.outputs[0]]
        while chain[-1] not in outs:
            us = cons.get(chain[-1], [])
            if len(us) != 1 or us[0].prim != "reshape":
                break
            chain.append(us[0].outputs[0])
        if chain[-1] not in outs or cons.get(chain[-1]):
            continue
        n = size1(g.vars[chain[0]].shape)
        # whole vectors per chip when there are enough of them
        cuts = _balanced_cuts(n, chips, align=LANES if n >= LANES * chips else 1)
        for v in chain:
            for c in range(chips):
                hold[c][v] = np.arange(cuts[c], cuts[c + 1], dtype=np.int64)
        p.sharded_outputs.add(chain[-1])
    # big embedding tables: split by rows, all-reduce the gathered row
    for gi, e in enumerate(g.eqns):
        if e.prim == "gather" and source_input(g, e.inputs[1], prod) == "input_ids":
            table = g.consts[e.inputs[0]]
            if table.size * 2 > EMBED_SPLIT_BYTES:
                cuts = _balanced_cuts(table.shape[0], chips, align=1)
                p.embed_rows[e.outputs[0]] = [(cuts[c], cuts[c + 1]) for c in range(chips)]
    # drop empty holdings: a var with no elements on a chip is not on that chip
    for c in range(chips):
        for v in [v for v, idx in hold[c].items() if idx.size == 0]:
            del hold[c][v]
    return p


def source_input(g: Graph, var: str, prod=None) -> str | None:
    """The graph input a value is (through reshapes and casts), or None."""
    prod = prod if prod is not None else {o: e for e in g.eqns for o in e.outputs}
    while var not in g.inputs:
        e = prod.get(var)
        if e is None or e.prim not in ("reshape", "cast", "transpose") or len(e.inputs) != 1:
            return None
        var = e.inputs[0]
    return var


def _balanced_cuts(n: int, parts: int, align: int) -> list[int]:
    blocks = -(-n // align)
    cuts = [min(n, (blocks * c // parts) * align) for c in range(parts)] + [n]
    return cuts


def _pkey(v):
    if isinstance(v, np.ndarray):
        return ("nd", v.shape, str(v.dtype), v.tobytes())
    if isinstance(v, (list, tuple)):
        return tuple(_pkey(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _pkey(x)) for k, x in v.items()))
    return v


def _eqn_key(g: Graph, e, prod, index) -> tuple:
    """An equation's shape within a region: prim, parameters, shapes, and for each input where it comes
    from (how many equations back, replicable or not; a graph input by name; a constant by shape), so the
    same equation of the next layer has the same key."""
    ins = []
    for inp in e.inputs:
        if inp in g.consts:
            ins.append(("k", g.shape(inp)))
        elif inp in g.inputs or inp not in prod:
            ins.append(("i", inp))
        else:
            ins.append(("d", index[id(e)] - index[id(prod[inp])], _replicable(g, inp, prod), g.vars[inp].shape))
    return (e.prim, _pkey(e.params), tuple(ins), tuple(g.vars[o].shape for o in e.outputs))


def _find_region(g: Graph, L, prod, index, cons, memo: dict | None = None):
    """(cone equations, source linears, units of L's input) if L can be a row-split sink, else None.

    The cone is walked back from L's input (latest equation first) to the source linears, joining the
    input's elements into units as it goes; once they are all one unit the walk stops (nothing to
    split). With `memo`, walks already made are recognised by their equations' keys (`_eqn_key`): a
    prefix that joined everything ends the walk at once, and a whole cone seen before takes its units."""
    x = L.inputs[0]
    if x not in g.vars or x in g.inputs:
        return None
    nx = size1(g.vars[x].shape)
    uf = _UF()
    for i in range(nx):
        uf.find((x, i))
    cone, sources, seen, keys = [], [], set(), []
    joined = memo.setdefault("joined", {}) if memo is not None else None
    h = hash((g.vars[x].shape,))
    unions = 0
    work = [prod[x]] if x in prod else []
    lazy = memo is not None  # unions deferred while the walk may still match a memo entry
    while work:
        work.sort(key=lambda e: index[id(e)])
        e = work.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.prim == "linear":
            sources.append(e)
            continue
        if e.prim == "gather":
            continue
        if e.prim not in LOCAL:
            return None
        cone.append(e)
        if memo is not None:
            k = _eqn_key(g, e, prod, index)
            keys.append(k)
            h = hash((h, k))
            hit = joined.get((h, len(keys)))
            if hit is not None and hit == (g.vars[x].shape, tuple(keys)):
                return None  # this prefix joined every element before
        for inp in e.inputs:
            if inp in g.vars and inp not in g.inputs and inp in prod:
                work.append(prod[inp])
        if not lazy:
            unions += _join(g, e, uf, prod)
            if unions >= nx:  # amortised: look whether everything is one unit
                unions = 0
                if len({uf.find((x, i)) for i in range(nx)}) == 1:
                    return None
    if not sources:
        return None
    full = (g.vars[x].shape, tuple(g.shape(e.inputs[1]) for e in sources), tuple(keys)) if memo is not None else None
    if full is not None and full in memo:
        units = memo[full]
    else:
        if lazy:  # join in walk order, noting the prefix after which everything was one unit
            for n, e in enumerate(cone):
                unions += _join(g, e, uf, prod)
                if unions >= nx or n == len(cone) - 1:
                    unions = 0
                    if len({uf.find((x, i)) for i in range(nx)}) == 1:
                        hp = hash((g.vars[x].shape,))
                        for k in keys[:n + 1]:
                            hp = hash((hp, k))
                        joined[(hp, n + 1)] = (g.vars[x].shape, tuple(keys[:n + 1]))
                        memo[full] = None
                        return None
        units = _components(uf, x, nx)
        if full is not None:
            memo[full] = units
    if units is None:
        return None
    # the region's values (and its sources' outputs) must not be used outside it
    members = {id(e) for e in cone} | {id(e) for e in sources} | {id(L)}
    for e in cone + sources:
        for o in e.outputs:
            if o in g.outputs.values():
                return None
            for u in cons.get(o, []):
                if id(u) not in members:
                    return None
    return cone, sources, units


def _join(g: Graph, e, uf, prod) -> int:
    """Join the elements one equation computes together; returns the number of unions made."""
    out, n = e.outputs[0], 0
    for k, m, groups in deps(g, e):
        inp = e.inputs[k]
        if inp not in g.vars or inp in g.inputs or _replicable(g, inp, prod):
            continue
        if groups is not None:
            for o, grp in enumerate(groups):
                for j in grp:
                    uf.union((out, o), (inp, int(j)))
                n += len(grp)
        else:
            nz = np.nonzero(m >= 0)[0]
            for o in nz:
                uf.union((out, int(o)), (inp, int(m[o])))
            n += len(nz)
    return n


def _components(uf, x: str, nx: int):
    comps: dict = {}
    for i in range(nx):
        comps.setdefault(uf.find((x, i)), []).append(i)
    if len(comps) < 2:
        return None
    return sorted((np.array(v, dtype=np.int64) for v in comps.values()), key=lambda a: int(a[0]))


def plan_pp(g: Graph, chips: int, topo=None, cuts: list[int] | None = None) -> Plan:
    """Pipeline mapping: the equations in order, cut into `chips` contiguous stages of about equal weight
    bytes, each cut placed where the fewest values cross it (between layers: the residual stream). A
    value needed on a later chip is sent over the link between the two chips."""
    full = {v: np.arange(size1(var.shape), dtype=np.int64) for v, var in g.vars.items()}
    n = len(g.eqns)
    if chips == 1:
        return Plan(1, [dict(full)], mapping="single")
    weight = np.zeros(n)
    counted: set[str] = set()  # an expert table read by k expert_linears is held once
    for i, e in enumerate(g.eqns):
        for x in e.inputs:
            if x in g.consts and e.prim in ("linear", "gather", "expert_linear") and x not in counted:
                weight[i] += g.consts[x].size
                if e.prim == "expert_linear":
                    counted.add(x)
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    # elements alive across each boundary k (between eqn k-1 and eqn k)
    last_use: dict[str, int] = {}
    for i, e in enumerate(g.eqns):
        for x in e.inputs:
            last_use[x] = i
    produced_at = {o: i for i, e in enumerate(g.eqns) for o in e.outputs}
    live = np.zeros(n + 1)
    for v, i in produced_at.items():
        lu = last_use.get(v, i)
        if v in g.outputs.values():
            lu = n
        if lu > i:
            # a KV cache cannot leave its chip: never cut while one is in use
            live[i + 1:lu + 1] += np.inf if g.eqns[i].prim == "kv_append" else size1(g.vars[v].shape)
    # more stages than places to cut (a KV cache in use at every other boundary): the rest of the chips
    # stay unused
    finite = np.isfinite(live)
    finite[0] = finite[n] = False
    after = np.concatenate([np.cumsum(finite[::-1])[::-1][1:], [0]])  # cuttable boundaries after each one
    requested, chips = chips, min(chips, 1 + int(finite.sum()))
    if chips == 1:
        return Plan(requested, [dict(full)] + [dict() for _ in range(requested - 1)], mapping="single")
    def choose(aligned: bool) -> list[int]:
        out, phase = [0], None  # phase: what follows the first cut (aligned: the later cuts look for it)
        for k in range(1, chips):
            target = cum[-1] * k / chips
            centre = int(np.searchsorted(cum, target))
            window = max(1, n // (4 * chips))
            lo, hi = max(out[-1] + 1, centre - window), min(n - (chips - k), centre + window)
            if lo > hi:
                lo = hi = max(out[-1] + 1, min(centre, n - (chips - k)))
            # a boundary where no KV cache is in use, leaving enough such boundaries for the cuts after it
            cand = [b for b in range(lo, hi + 1) if finite[b] and after[b] >= chips - k - 1]
            if not cand:  # none in the window: the nearest that can be cut
                cand = [b for b in range(out[-1] + 1, n) if finite[b] and after[b] >= chips - k - 1]
            # fewest live elements; among those, closest to the weight target
            best = min(cand, key=lambda b: (live[b], abs(cum[b] - target), b))
            if aligned and phase is not None:
                # as cheap a boundary within a stage's length at the same place of the repeated layer as the
                # first cut: stages then hold whole layers alike, and identical stages share one schedule
                span = max(1, n // chips)
                same = [b for b in range(max(out[-1] + 1, centre - span), min(n - (chips - k), centre + span) + 1)
                        if finite[b] and after[b] >= chips - k - 1 and live[b] <= live[best] and _phase(g, b) == phase]
                if same:
                    best = min(same, key=lambda b: (abs(cum[b] - target), b))
            elif aligned:
                phase = _phase(g, best)
            out.append(best)
        return out

    def heaviest(c: list[int]) -> float:
        return max(cum[b] - cum[a] for a, b in zip(c, c[1:] + [n]))

    if cuts is not None:  # given (tests): the boundaries between stages
        chips, cuts = len(cuts) + 1, [0] + list(cuts)
    else:
        # cuts at the same place of every layer when that costs the heaviest stage at most ALIGNED_SLACK more
        # weight than cuts anywhere (a stage must still fit its chips' SRAM: Llama-2-70B's 80 layers on 72
        # stages cannot be whole layers; with 0.125 some stages held two and no longer fit 576 chips)
        cuts, free = choose(True), choose(False)
        if heaviest(cuts) > (1 + ALIGNED_SLACK) * heaviest(free):
            cuts = free
    cuts.append(n)
    owner_eqn = np.zeros(n, dtype=np.int64)
    for c in range(chips):
        owner_eqn[cuts[c]:cuts[c + 1]] = c
    hold: list[dict[str, np.ndarray]] = [dict() for _ in range(requested)]  # chips past `chips` unused
    owner: dict[str, int] = {}
    for i, e in enumerate(g.eqns):
        c = int(owner_eqn[i])
        for o in e.outputs:
            owner[o] = c
            hold[c][o] = full[o]
    p = Plan(requested, hold, mapping="pp", owner=owner, stages=[(cuts[c], cuts[c + 1]) for c in range(chips)], group=1)
    computed_locally(g, p)
    p.transfers = stage_transfers(g, p, topo)
    return p


def _phase(g: Graph, b: int, width: int = 16) -> tuple:
    """The kinds of the equations around boundary b: the same at the same place of every repeated layer."""
    return tuple((e.prim, e.params.get("op") if isinstance(e.params, dict) else None)
                 for e in g.eqns[max(0, b - width):b + width])


def plan_hybrid(g: Graph, chips: int, stages: int, regions: dict | None = None, topo=None) -> Plan:
    """Pipeline of `stages` stages, each on chips / stages chips that split their layers tensor-parallel:
    the pipeline cuts of `plan_pp` for `stages` chips, inside each stage the tensor-parallel holdings of
    `plan` for chips / stages chips. A value crossing a cut goes from each chip to its counterpart (the
    chip at the same position) in the next stage; all-reduces stay within a stage."""
    if chips % stages or not 1 < stages < chips:
        raise ValueError(f"a hybrid mapping needs 1 < stages < chips and stages dividing chips (got {stages} of {chips})")
    per = chips // stages
    tp = plan(g, per, regions)
    pp = plan_pp(g, stages)
    stages = len(pp.stages) or 1  # fewer places to cut than stages: the last chips stay unused
    hold: list[dict[str, np.ndarray]] = [dict() for _ in range(chips)]
    for v, k in pp.owner.items():
        for j in range(per):
            idx = tp.hold[j].get(v)
            if idx is not None:
                hold[k * per + j][v] = idx
    embed = {v: [rows[c % per] for c in range(chips)] for v, rows in tp.embed_rows.items()}
    p = Plan(chips, hold, rowsplit=set(tp.rowsplit), embed_rows=embed, sharded_outputs=set(tp.sharded_outputs),
             regions=tp.regions, mapping="hybrid", owner=dict(pp.owner), stages=list(pp.stages), group=per)
    computed_locally(g, p)
    p.transfers = stage_transfers(g, p, topo)
    return p


LOCAL_PRIMS = {"gather", "unary", "binary", "where"} | set(DATA_MOVEMENT)


def computed_locally(g: Graph, plan: Plan) -> None:
    """Values made from the graph's inputs and constants of at most EMBED_SPLIT_BYTES each (the rotary rows
    gathered by position, masks), by elementwise work, gathers and data movement alone, are computed by every
    stage that needs them instead of being sent there: in a long pipeline every stage needs the rotary rows,
    and sending them from the first stage put one transfer per stage on the first stage's links and routes
    through other stages' chips. Adds them (and the like values they are made from) to the holdings of the
    needing chips (the elements its counterpart in the owning stage holds) and to `plan.local`."""
    made = {o: e for e in g.eqns for o in e.outputs}
    ok: dict[str, bool] = {}

    def local(v: str) -> bool:
        if v in ok:
            return ok[v]
        e = made.get(v)
        res = (e is not None and e.prim in LOCAL_PRIMS and v not in plan.rowsplit and v not in plan.embed_rows
               and v not in g.outputs.values()
               and all(x in g.inputs or (x in g.consts and g.consts[x].size * 4 <= EMBED_SPLIT_BYTES)
                       or (x in made and local(x)) for x in e.inputs))
        ok[v] = res
        return res

    def hold(v: str, c: int) -> None:
        if v in plan.hold[c]:
            return
        plan.hold[c][v] = plan.hold[plan.source_chip(v, c)][v]
        plan.local.add(v)
        for x in made[v].inputs:
            if x in made and x not in g.consts:
                hold(x, c)

    for e in g.eqns:
        for c in lowered_on(plan, e.outputs[0]):
            for v in e.inputs:
                if v in plan.owner and v not in plan.hold[c] and plan.owner[v] < plan.owner[e.outputs[0]] \
                        and local(v) and v in plan.hold[plan.source_chip(v, c)]:
                    hold(v, c)


def lowered_on(plan: Plan, var: str) -> list[int]:
    """The chips that run the equation producing `var`: a row-split linear or a split table's gather
    on every chip of its stage (each contributes a partial to the all-reduce), anything else where
    its output is held."""
    if var in plan.rowsplit or var in plan.embed_rows:
        return list(plan.chips_of(var))
    return [c for c in range(plan.chips) if var in plan.hold[c]]


def stage_transfers(g: Graph, plan: Plan, topo=None) -> dict[tuple[str, int], int]:
    """Every value a chip needs that an earlier pipeline stage computes: (var, chip) -> the chip that
    sends it: a chip of the owning stage holding the same elements as the receiver's counterpart (the
    chip at the same position), the one the topology's route reaches in the fewest hops (ties: the
    counterpart, then the lowest chip), so a value replicated over a stage leaves from the chip nearest
    its receiver."""
    needs: dict[str, list[int]] = {}  # value -> the chips that receive it, in the order they first need it
    for e in g.eqns:
        for c in lowered_on(plan, e.outputs[0]):
            for k, v in enumerate(e.inputs):
                if v not in g.vars or v in g.inputs or v in plan.hold[c]:
                    continue
                if k == 0 and e.prim == "linear" and e.outputs[0] in plan.rowsplit and \
                        not (v in plan.owner and v in plan.hold[plan.source_chip(v, c)]):
                    continue  # a row-split linear whose part of the input is nowhere contributes zeros
                if v in plan.owner and plan.owner[v] < plan.owner[e.outputs[0]] and c not in needs.get(v, ()):
                    needs.setdefault(v, []).append(c)
    out: dict[tuple[str, int], int] = {}
    for v, cs in needs.items():
        for c in cs:
            out[(v, c)] = _nearest_source(plan, v, c, topo, cs)
    return out


def _nearest_source(plan: Plan, v: str, c: int, topo, receivers=()) -> int:
    """The chip that sends v to c: the nearest chip of v's stage holding what c's counterpart holds; or, when
    that is more than one hop away, a chip of c's own stage that receives v itself (`receivers`) and is one
    hop from c (its gateway: the one nearest v's stage, which receives v first), so a value replicated over a
    stage crosses between nodes once and fans out over the local links instead of every chip taking a route
    of its own. A gateway no farther than c's own route is taken: a route through it would carry v over the
    same inter-node link once more for every chip behind it."""
    cp = plan.source_chip(v, c)
    if topo is None or plan.per_stage == 1:
        return cp
    want = plan.hold[cp].get(v)
    owners = plan.stage_chips(plan.owner[v])

    def nearest(to: int, need) -> int:
        same = [o for o in owners
                if o == plan.source_chip(v, to) or (need is not None and (h := plan.hold[o].get(v)) is not None
                                                    and np.array_equal(h, need))]
        return min(same, key=lambda o: (topo.hops(o, to), o != plan.source_chip(v, to), o))

    src = nearest(c, want)
    if topo.hops(src, c) <= 1 or want is None:
        return src
    here = plan.stage_chips(c // plan.per_stage)
    gates = [b for b in here if b != c and b in receivers and topo.port_to(b, c) is not None
             and np.array_equal(plan.hold[plan.source_chip(v, b)].get(v, np.empty(0, np.int64)), want)]
    if not gates:
        return src
    # a gateway strictly nearer v's stage than c (by its own source's route): gateways never form a cycle
    gate = min(gates, key=lambda b: (topo.hops(nearest(b, want), b), b))
    if topo.hops(nearest(gate, want), gate) + 1 > topo.hops(src, c):
        return src
    return gate
