"""The compiler's one entry point: an ONNX decoder in, a program (isa.Program) out, as a list of passes.

    import       ONNX file -> the IR of one decode step (compiler/frontend)
    canonicalise constant folding, identities, common subexpressions; the model's facts
    decompose    composite prims -> the VXM's functions (the machine dialect)
    split        fused linears -> one per output slice
    fold         data movement -> one permutation; a permuted linear's output -> permuted weight columns
    map          the mapping onto the chips (tensor-parallel, pipeline, hybrid) -> a Plan
    lower        one program per context bucket: instructions on buffers (compiler/backend/lower)
    place        every buffer a region of SRAM banks
    schedule     every instruction its issue cycle and queue; the lower bound of each bucket
    emit         the program file

Each pass has one entry point and a typed product kept in a `Compilation`; the loop below times every
pass and, with verification on, runs the pass's verifiers (compiler/verify.py) on its product. When
the program does not fit with the permuted weight copies, the passes from `fold` on run again without
them (the header records the decision: `permuted_linears`).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from isa import VECTOR_LANES as LANES
from isa import Hardware, Program, RegionNumbering

from . import verify as V
from .backend.alloc import place, sram_bytes
from .backend.bound import bound
from .backend.decompose import Folded, decompose, fold, split_linears
from .backend.emit import build_program, streams_for
from .backend.provenance import Table as ProvenanceTable
from .backend.lower import Lowered, lower, lowered_prims
from .backend.partition import Plan, find_regions, plan as make_plan, plan_hybrid, plan_pp
from .backend.schedule import Scheduled, schedule
from .errors import CapacityError, CompileError
from .ir import Graph

PRECISIONS = ("fp16", "fp32")
WEIGHTS = ("fp16", "int8", "fp8")  # --weights: fp16 (the precision's type), or an MXM's 8-bit format
PARTITIONS = ("tp", "pp", "hybrid", "auto")
# Verifiers run when Options.verify is None unless LPU_VERIFY says otherwise: they cost about 1% of
# a compile (README "Compile time"), well under the 5% that would justify leaving them off.
VERIFY_DEFAULT = True
# Without --max-context a compile reserves this many KV positions, or the model's own limit if it is
# smaller (a learned position table: GPT-2's wpe, OPT's embed_positions).
DEFAULT_MAX_CONTEXT = 1024
MAX_CONTEXT = 1 << 16


@dataclass
class Options:
    chips: int | None = None  # None: every chip of the hardware description
    precision: str = "fp16"
    weights: str = "fp16"  # the linears' weights: fp16 (in the precision's type), int8 or fp8 (hw.weight_formats)
    max_context: int | None = None  # None: `default_context`, or fewer if the model supports fewer positions
    default_context: int = DEFAULT_MAX_CONTEXT
    partition: str = "auto"
    stages: int = 0  # hybrid: pipeline stages (0: the compiler chooses)
    verify: bool | None = None  # run the verifiers between passes (None: $LPU_VERIFY, else VERIFY_DEFAULT)
    # no weight values: shape-only constants (compiler.ir.Shaped), an empty SRAM image, the same schedule
    timing_only: bool = False
    # lower and schedule only the bucket serving this many positions, and the last bucket (its buffers, the
    # most, size SRAM as the whole program's: buckets overlay): `lpu estimate --context`. None: every bucket
    only_context: int | None = None

    def check(self, hw: Hardware) -> "Options":
        chips = hw.system.chips if self.chips is None else self.chips
        if chips != hw.system.chips:
            raise CompileError(f"--chips {chips}, but the hardware description {hw.name!r} uses {hw.system.chips} "
                               f"chip(s); load it with that many (valid: 1..{hw.max_chips})")
        if self.precision not in PRECISIONS:
            raise CompileError(f"--precision {self.precision}: valid values are {', '.join(PRECISIONS)}")
        if self.weights not in WEIGHTS:
            raise CompileError(f"--weights {self.weights}: valid values are {', '.join(WEIGHTS)}")
        if self.weights not in hw.weight_formats:
            raise CompileError(f"--weights {self.weights}: the {hw.name} MXM multiplies {' and '.join(hw.weight_formats)}, "
                               f"not {self.weights}")
        for what, n in (("--max-context", self.max_context), ("the default context", self.default_context)):
            if n is not None and not 1 <= n <= MAX_CONTEXT:
                raise CompileError(f"{what} {n}: valid values are 1..{MAX_CONTEXT}")
        if self.partition not in PARTITIONS:
            raise CompileError(f"--partition {self.partition}: valid values are {', '.join(PARTITIONS)}")
        if self.stages:
            valid = hybrid_stages(chips, hw)
            if self.partition != "hybrid":
                raise CompileError(f"--stages {self.stages} applies to --partition hybrid only")
            if self.stages not in valid:
                raise CompileError(f"--stages {self.stages} with --chips {chips}: valid values are "
                                   f"{', '.join(map(str, valid)) if valid else 'none'} (stages of at least 2 chips "
                                   f"each, all the same size)")
        return self

    def verifying(self) -> bool:
        if self.verify is not None:
            return self.verify
        env = os.environ.get("LPU_VERIFY", "").strip().lower()
        return VERIFY_DEFAULT if env == "" else env not in ("0", "false", "no", "off")


@dataclass
class Report:
    seconds: dict = field(default_factory=dict)  # pass name -> seconds (and "verify": all verifiers)
    cycles: list = field(default_factory=list)
    instructions: int = 0
    sram_bytes: dict = field(default_factory=dict)
    bounds: list = field(default_factory=list)
    mappings: dict = field(default_factory=dict)  # candidate mapping -> estimated cycles
    # per bucket (pipelines): stages scheduled, and how many of them took an earlier identical stage's schedule
    stages_scheduled: list = field(default_factory=list)
    stages_reused: list = field(default_factory=list)


@dataclass(frozen=True)
class Mapping:
    """The map pass's product: the plan taken and every candidate's estimated cycles."""

    plan: Plan
    estimates: dict
    name: str = ""  # the candidate taken ("tp", "pp", "hybrid 3x8", ...)


@dataclass(frozen=True)
class Schedules:
    """The schedule pass's product: per bucket its schedule, lower bound and instruction streams."""

    schedules: tuple[Scheduled, ...]
    bounds: tuple  # bound.Bound per bucket
    streams: dict  # (bucket, chip, queue) -> uint64 words
    provenance: dict = field(default_factory=dict)  # (bucket, chip, queue) -> int32 per word: its entry of ops
    ops: tuple = ()  # the operation table (header "ops"; compiler/backend/provenance)


@dataclass
class Compilation:
    """Everything one compile knows: its inputs and each pass's product (None until the pass ran)."""

    hw: Hardware
    opts: Options
    report: Report
    path: str | None = None  # the ONNX file (import), or the config.json (from_config)
    from_config: bool = False  # path is a Hugging Face config.json: the graph is built from it (timing-only)
    source: dict = field(default_factory=dict)  # the file's name, size and hash (header)
    permute_linears: bool = True
    imported: tuple | None = None  # (Graph, importer facts)
    canonical: Graph | None = None
    decomposed: Graph | None = None
    split: Graph | None = None
    folded: Folded | None = None
    mapping: Mapping | None = None
    buckets: list | None = None
    lowered: Lowered | None = None
    regions: list | None = None
    scheduled: Schedules | None = None
    program: Program | None = None
    # mappings whose program did not fit SRAM (the next fastest is tried), and the mappings' estimates of the
    # fold's graph with and without the permuted linears (permute_linears -> estimates)
    excluded: set = field(default_factory=set)
    progress: object = None  # called with each pass's name as it starts (the CLI's progress bar), or None
    estimates: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Compilation], object]
    product: str  # the Compilation field the product goes into
    verify: Callable[[Compilation], None] | None = None


# ------------------------------------------------------------------------------------------- the passes
def _import(c: Compilation):
    from .frontend import import_graph, import_graph_within, load_model

    if c.from_config:
        from .frontend.from_config import import_config

        graph, facts, ctx = import_config(c.path, c.opts.max_context, c.opts.default_context)
        c.opts = replace(c.opts, max_context=ctx)
        return graph, facts

    model = load_model(c.path, timing_only=c.opts.timing_only)
    where = dict(source=os.fspath(c.path), base_dir=os.path.dirname(os.path.abspath(c.path)),
                 timing_only=c.opts.timing_only)
    if c.opts.max_context is not None:
        return import_graph(model, c.opts.max_context, **where)  # beyond the model's limit: an error
    graph, facts, limit = import_graph_within(model, c.opts.default_context, **where)
    c.opts = replace(c.opts, max_context=limit or c.opts.default_context)
    return graph, facts


def _canonicalise(c: Compilation) -> Graph:
    from .frontend import canonicalise

    return canonicalise(*c.imported)


def _map(c: Compilation) -> Mapping:
    name, plan, est = choose_mapping(c.folded.graph, c.hw, c.opts, c.excluded, c.estimates.get(c.permute_linears))
    c.report.mappings = c.estimates[c.permute_linears] = est
    return Mapping(plan, est, name)


def _lower(c: Compilation) -> Lowered:
    c.buckets = buckets_for(c.opts.max_context)
    n = c.opts.only_context
    if n is not None:
        if not 1 <= n <= c.opts.max_context:
            raise CompileError(f"--context {n}: the program holds {c.opts.max_context} positions (valid: 1.."
                               f"{c.opts.max_context})")
        last = c.buckets[-1]
        c.buckets = [bk for bk in c.buckets if bk["first_position"] <= n - 1 <= bk["last_position"] or bk is last]
    return lower(c.folded.graph, c.mapping.plan, c.hw, c.opts.precision, c.buckets, c.opts.max_context, c.opts.weights)


def _place(c: Compilation) -> list:
    return place(list(c.lowered.buffers), list(c.lowered.code), c.hw, c.lowered.bucket_of)


def _schedule(c: Compilation) -> Schedules:
    g, plan, rep = c.folded.graph, c.mapping.plan, c.report
    scheds, bounds, streams, provenance = [], [], {}, {}
    table = ProvenanceTable(c.lowered.ops)
    numbering = RegionNumbering.of(c.regions, c.hw.system.chips)  # how the words name regions (chip-locally)
    for b, code in enumerate(c.lowered.code):
        s = schedule(code, c.regions, c.hw, plan.per_stage if plan.staged else 0)
        # the lower bound for the smallest context this bucket serves: valid for all its tokens
        lb = bound(g, plan, c.hw, c.opts.precision, c.buckets[b]["first_position"] + 1, c.opts.weights)
        c.buckets[b].update(cycles=s.cycles, lower_bound_cycles=lb.cycles, lower_bound_terms=lb.terms)
        rep.bounds.append(lb.cycles)
        rep.cycles.append(s.cycles)
        rep.instructions += len(s.nodes)
        rep.stages_scheduled.append(s.stages)
        rep.stages_reused.append(s.reused)
        streams.update(streams_for(b, s, c.hw.chip.icu.nop_max_repeat, numbering, table, provenance))
        scheds.append(s)
        bounds.append(lb)
    return Schedules(tuple(scheds), tuple(bounds), streams, provenance, tuple(table.entries))


def _emit(c: Compilation) -> Program:
    g, plan = c.folded.graph, c.mapping.plan
    meta = {
        "precision": c.opts.precision,
        "weights": c.opts.weights,
        "max_context": c.opts.max_context,
        "partition": plan.mapping,
        "stages": len(plan.stages) if plan.staged else 1,
        "permuted_linears": c.folded.permuted_linears > 0,
        "mapping_estimates": {k: v for k, v in sorted(c.mapping.estimates.items()) if v is not None},
        "model": {k: v for k, v in sorted((c.canonical.meta or {}).items()) if isinstance(v, (int, float, str, bool))},
        "source": c.source,
        "vocab_size": int(np.prod([d for d in g.vars[g.outputs["logits"]].shape if d != "T"])),
    }
    if c.opts.timing_only:  # absent otherwise: a program with weights is byte for byte what it was
        meta["timing_only"] = True
    if c.opts.only_context is not None:  # not every position has its bucket: for estimates, not decoding
        meta["buckets_partial"] = True
    c.report.sram_bytes = sram_bytes(c.lowered.buffers)
    # the bytes of every buffer of each chip (all buckets'): what `lpu estimate` reports of a program file
    meta["sram_bytes_per_chip"] = [int(c.report.sram_bytes.get(k, 0)) for k in range(plan.chips)]
    used = sum(1 for h in plan.hold if h)
    if used < plan.chips:  # more stages than the graph has places to cut: the last chips idle
        meta["chips_used"] = used
    meta["ops"] = list(c.scheduled.ops)
    o = c.opts  # how it was compiled (`lpu info`): the options as given, before the compiler's choices
    meta["options"] = {"chips": o.chips, "precision": o.precision, "weights": o.weights, "max_context": o.max_context,
                       "default_context": o.default_context, "partition": o.partition, "stages": o.stages,
                       "timing_only": o.timing_only, "only_context": o.only_context}
    return build_program(c.hw, c.lowered, c.regions, c.scheduled.streams, c.buckets, meta, c.scheduled.provenance)


def _verify_program(c: Compilation) -> None:
    from isa import ProgramError

    try:
        c.program.validate()
    except ProgramError as exc:
        raise V.VerifyError(f"after pass emit: {exc}") from None


def _dialect(name: str, attr: str):
    def check(c: Compilation) -> None:
        g = getattr(c, attr)
        V.machine_dialect(name, g.graph if isinstance(g, Folded) else g, lowered_prims())
    return check


PASSES = (
    Pass("import", _import, "imported"),
    Pass("canonicalise", _canonicalise, "canonical"),
    Pass("decompose", lambda c: decompose(c.canonical), "decomposed", _dialect("decompose", "decomposed")),
    Pass("split", lambda c: split_linears(c.decomposed), "split", _dialect("split", "split")),
    Pass("fold", lambda c: fold(c.split, c.permute_linears), "folded", _dialect("fold", "folded")),
    Pass("map", _map, "mapping", lambda c: V.plan("map", c.folded.graph, c.mapping.plan)),
    Pass("lower", _lower, "lowered", lambda c: (V.buffers("lower", c.lowered, c.hw),
                                                V.instructions("lower", c.lowered, c.hw))),
    Pass("place", _place, "regions", lambda c: V.placement("place", c.lowered, c.regions, c.hw)),
    Pass("schedule", _schedule, "scheduled", lambda c: V.schedule("schedule", c.scheduled.schedules)),
    Pass("emit", _emit, "program", _verify_program),
)
PASS_NAMES = tuple(p.name for p in PASSES)


def run_passes(c: Compilation, first: str, last: str = "emit") -> Compilation:
    """Run the passes from `first` through `last`, timing each and verifying each product."""
    check = c.opts.verifying()
    names = PASS_NAMES[PASS_NAMES.index(first):PASS_NAMES.index(last) + 1]
    for p in PASSES:
        if p.name not in names:
            continue
        if c.progress is not None:
            c.progress(p.name)
        t0 = time.perf_counter()
        setattr(c, p.product, p.run(c))
        t1 = time.perf_counter()
        c.report.seconds[p.name] = c.report.seconds.get(p.name, 0.0) + t1 - t0
        if check and p.verify is not None:
            p.verify(c)
            c.report.seconds["verify"] = c.report.seconds.get("verify", 0.0) + time.perf_counter() - t1
    return c


def _compile(c: Compilation, first: str) -> tuple[Program, Report]:
    """Every pass from `first`; when the program does not fit SRAM: without the permuted weight copies, then
    (mapping `auto` or `hybrid` without --stages) with the next fastest mapping (with the copies, then without),
    until one fits or none is left, unless the weights and the cache outgrow all the chips' SRAM together (then no
    mapping can fit)."""
    c.opts.check(c.hw)
    try:
        run_passes(c, first)
        return c.program, c.report
    except CapacityError as exc:
        first_error, first_name = exc, c.mapping.name if c.mapping is not None else ""
    while True:
        if c.folded is not None and c.folded.permuted_linears and c.permute_linears:
            # the permuted weight copies (rotate-half as a second linear) cost SRAM: fold again without them
            c.permute_linears, again = False, "fold"
        elif c.mapping is not None and _more_mappings(c):
            c.excluded.add(c.mapping.name)  # the next mapping, first with the permuted copies again
            again = "map" if c.permute_linears else "fold"
            c.permute_linears = True
        else:
            if c.excluded:
                tried = sorted((c.excluded | {c.mapping.name}) - {first_name})
                raise CapacityError(f"{first_error} (with the {first_name} mapping, the fastest by the estimate; "
                                    f"nor with {', '.join(tried)})") from None
            raise first_error
        c.report.bounds, c.report.cycles, c.report.instructions = [], [], 0
        c.report.stages_scheduled, c.report.stages_reused = [], []
        for p in PASSES[PASS_NAMES.index(again):]:
            setattr(c, p.product, None)  # the failed attempt's products go now, not after the next one
        try:
            run_passes(c, again)
            return c.program, c.report
        except CapacityError:
            continue


def _more_mappings(c: Compilation) -> bool:
    """Whether another mapping is left to try, and could fit: the bytes every program stores at least (the
    constants, 8-bit linears at one byte, the rest at two; the KV cache at fp16) within all chips' SRAM."""
    est = c.estimates.get(c.permute_linears) or {}
    if len([k for k in est if k not in c.excluded and k != c.mapping.name]) == 0:
        return False
    g = c.folded.graph
    w8 = c.opts.weights != "fp16"
    lin = {e.inputs[1] for e in g.eqns if e.prim == "linear"}
    need = sum(int(v.size) * (1 if w8 and k in lin else 2) for k, v in g.consts.items())
    need += sum(2 * s.heads * s.head_dim * c.opts.max_context for s in g.states.values())
    return need <= c.hw.system.chips * c.hw.sram_bytes_per_chip


# ------------------------------------------------------------------------------------------- mapping
def hybrid_stages(chips: int, hw: Hardware | None = None) -> list[int]:
    """Stage counts of the hybrid mappings of `chips` chips: each stage has the same number of chips (>= 2),
    contiguous, and (given the hardware) directly linked to each other, since a stage's all-reduces use
    direct links (in a dragonfly: stages within a node)."""
    return [k for k in range(2, chips) if chips % k == 0 and chips // k >= 2
            and (hw is None or _linked_groups(hw, chips // k, k))]


def _linked_groups(hw: Hardware, per: int, groups: int) -> bool:
    """Whether each of `groups` contiguous runs of `per` chips is fully connected by direct links."""
    topo = hw.topology
    return all(topo.port_to(a, b) is not None for s in range(groups) for a in range(s * per, (s + 1) * per)
               for b in range(s * per, (s + 1) * per) if a != b)


def choose_mapping(g: Graph, hw: Hardware, opts: Options, exclude=(), known: dict | None = None):
    """Tensor-parallel, pipeline or a hybrid (pipeline stages of tensor-parallel chips): each candidate
    is estimated by its lower bound at the largest context (the same model of the machine the bound
    uses: streaming, links, dependency latency), and the fastest is taken; --partition tp|pp|hybrid
    restricts the candidates. Tensor-parallel groups must be directly linked (one node of a dragonfly);
    a pipeline crosses nodes and racks over the topology's routes."""
    chips = hw.system.chips
    if chips == 1:
        return "single", make_plan(g, 1), {"single": None}
    cands: dict = {}
    tp_ok = _linked_groups(hw, chips, 1)
    if opts.partition == "tp" and not tp_ok:
        raise CompileError(f"--partition tp on {chips} chips: a tensor-parallel group must be directly linked chips, "
                           f"and the {hw.system.topology} topology links at most {_largest_group(hw)} that way; use "
                           f"--partition pp, hybrid or auto")
    regions = find_regions(g) if opts.partition != "pp" else None  # shared by the tensor-parallel plans
    if opts.partition in ("tp", "auto") and tp_ok:
        cands["tp"] = lambda: make_plan(g, chips, regions)
    if opts.partition in ("pp", "auto"):
        cands["pp"] = lambda: plan_pp(g, chips, hw.topology)
    if opts.partition in ("hybrid", "auto"):
        for k in [opts.stages] if opts.stages else hybrid_stages(chips, hw):
            cands[f"hybrid {k}x{chips // k}"] = lambda k=k: plan_hybrid(g, chips, k, regions, hw.topology)
    if not cands:
        raise CompileError(f"--partition hybrid needs stages of at least 2 directly linked chips each, all the same "
                           f"size: {chips} chip(s) have none (e.g. --chips 4, 8, 16)")
    plans, est = {}, dict(known or {})
    for name, fn in cands.items():
        if name not in est:
            plans[name] = fn()
            est[name] = bound(g, plans[name], hw, opts.precision, opts.max_context, opts.weights).cycles
    left = [k for k in cands if k not in exclude]
    best = min(left, key=lambda k: (est[k], k))
    return best, plans[best] if best in plans else cands[best](), est


def _largest_group(hw: Hardware) -> int:
    n = 1
    while n < hw.system.chips and _linked_groups(hw, n + 1, 1):
        n += 1
    return n


def context_for(positions: int) -> int:
    """The smallest --max-context holding `positions` that fills its last bucket (a multiple of 320)."""
    return max(LANES, -(-positions // LANES) * LANES)


def buckets_for(max_context: int) -> list[dict]:
    """One program per 320 positions of context: the attention work grows with the cache."""
    out = []
    for k in range(-(-max_context // LANES)):
        lo, hi = k * LANES, min((k + 1) * LANES, max_context) - 1
        out.append({"first_position": lo, "last_position": hi, "context": (k + 1) * LANES})
    return out


# ------------------------------------------------------------------------------------------- entry points
def compile_graph(graph: Graph, hw: Hardware, opts: Options, source: dict | None = None, progress=None):
    """IR graph (as the frontend gives it) -> (Program, Report): the passes from decompose on. `progress`, when
    given, is called with each pass's name as it starts."""
    if opts.max_context is None:
        opts = replace(opts, max_context=opts.default_context)
    c = Compilation(hw, opts, Report(), source=source or {}, canonical=graph)
    c.progress = progress
    return _compile(c, "decompose")


def compile_model(path: str | os.PathLike, hw: Hardware, opts: Options, progress=None):
    """ONNX file -> (Program, Report): every pass. Raises CompileError (and subclasses) with one clear line.
    `progress`, when given, is called with each pass's name as it starts."""
    p = Path(path)
    c = Compilation(hw, opts, Report(), path=os.fspath(path))
    c.progress = progress
    c.opts.check(hw)
    c.source = {"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
    return _compile(c, "import")


def compile_config(path: str | os.PathLike, hw: Hardware, opts: Options, progress=None):
    """Hugging Face config.json -> (timing-only Program, Report): the graph of one decode step built from the
    config (compiler/frontend/from_config.py), then every pass from canonicalise on, as for an ONNX file."""
    p = Path(path)
    opts = replace(opts, timing_only=True)
    c = Compilation(hw, opts, Report(), path=os.fspath(path), from_config=True)
    c.progress = progress
    c.opts.check(hw)
    c.source = {"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
    return _compile(c, "import")


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
