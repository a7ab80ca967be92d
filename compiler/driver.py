"""The compiler's one entry point: an ONNX decoder in, a program (isa.Program) out."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isa import VECTOR_LANES as LANES

from .backend.alloc import place, sram_bytes
from .backend.bound import bound
from .backend.decompose import decompose, fold_movement, split_linears
from .backend.emit import build_program, streams_for
from .backend.lower import lower
from .backend.partition import find_regions, plan as make_plan, plan_hybrid, plan_pp
from .backend.schedule import schedule
from .errors import CapacityError, CompileError
from .ir import Graph

PRECISIONS = ("fp16", "fp32")
PARTITIONS = ("tp", "pp", "hybrid", "auto")


@dataclass
class Options:
    chips: int = 8
    precision: str = "fp16"
    max_context: int = 1024
    partition: str = "auto"
    stages: int = 0  # hybrid: pipeline stages (0: the compiler chooses)

    def check(self) -> "Options":
        if self.precision not in PRECISIONS:
            raise CompileError(f"--precision {self.precision}: valid values are {', '.join(PRECISIONS)}")
        if not 1 <= self.max_context <= 1 << 16:
            raise CompileError(f"--max-context {self.max_context}: valid values are 1..65536")
        if self.partition not in PARTITIONS:
            raise CompileError(f"--partition {self.partition}: valid values are {', '.join(PARTITIONS)}")
        if self.stages:
            valid = hybrid_stages(self.chips)
            if self.partition != "hybrid":
                raise CompileError(f"--stages {self.stages} applies to --partition hybrid only")
            if self.stages not in valid:
                raise CompileError(f"--stages {self.stages} with --chips {self.chips}: valid values are "
                                   f"{', '.join(map(str, valid)) if valid else 'none (a hybrid needs 4, 6 or 8 chips)'} "
                                   f"(stages of at least 2 chips each, all the same size)")
        return self


@dataclass
class Report:
    seconds: dict = field(default_factory=dict)
    cycles: list = field(default_factory=list)
    instructions: int = 0
    sram_bytes: dict = field(default_factory=dict)
    bounds: list = field(default_factory=list)
    mappings: dict = field(default_factory=dict)  # candidate mapping -> estimated cycles


def hybrid_stages(chips: int) -> list[int]:
    """Stage counts of the hybrid mappings of `chips` chips: each stage has the same number of chips (>= 2)."""
    return [k for k in range(2, chips) if chips % k == 0 and chips // k >= 2]


def choose_mapping(g, hw, opts: Options):
    """Tensor-parallel, pipeline or a hybrid (pipeline stages of tensor-parallel chips): each candidate
    is estimated by its lower bound at the largest context (the same model of the machine the bound
    uses: streaming, links, dependency latency), and the fastest is taken; --partition tp|pp|hybrid
    restricts the candidates."""
    if opts.chips == 1:
        return make_plan(g, 1), {"single": None}
    cands: dict = {}
    regions = find_regions(g) if opts.partition != "pp" else None  # shared by the tensor-parallel plans
    if opts.partition in ("tp", "auto"):
        cands["tp"] = lambda: make_plan(g, opts.chips, regions)
    if opts.partition in ("pp", "auto"):
        cands["pp"] = lambda: plan_pp(g, opts.chips)
    if opts.partition in ("hybrid", "auto"):
        for k in [opts.stages] if opts.stages else hybrid_stages(opts.chips):
            cands[f"hybrid {k}x{opts.chips // k}"] = lambda k=k: plan_hybrid(g, opts.chips, k, regions)
    if not cands:
        raise CompileError(f"--partition hybrid needs stages of at least 2 chips each: {opts.chips} chip(s) have none "
                           f"(valid chip counts: 4, 6, 8)")
    plans, est = {}, {}
    for name, fn in cands.items():
        plans[name] = fn()
        est[name] = bound(g, plans[name], hw, opts.precision, opts.max_context).cycles
    best = min(est, key=lambda k: (est[k], k))
    return plans[best], est


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


def compile_graph(graph, hw, opts: Options, source: dict | None = None):
    """IR graph -> (Program, Report)."""
    opts.check()
    if opts.chips != hw.system.chips:
        raise CompileError(f"--chips {opts.chips}, but the hardware description {hw.name!r} uses {hw.system.chips} "
                           f"chip(s); load it with that many (valid: 1..{hw.max_chips})")
    t0 = time.perf_counter()
    g0 = split_linears(decompose(graph))

    def fold(permute: bool):
        return fold_movement(Graph(dict(g0.vars), dict(g0.consts), list(g0.eqns), g0.inputs, dict(g0.outputs),
                                   dict(g0.states), dict(g0.meta)), permute_linears=permute)
    g = fold(True)
    permuted = any("[perm]" in k for k in g.consts)
    t_dec = time.perf_counter() - t0
    try:
        prog, rep = _compile(g, graph, hw, opts, source, permuted)
    except CapacityError:
        if not permuted:
            raise
        # the permuted weight copies (rotate-half as a second linear) cost SRAM: try without them
        prog, rep = _compile(fold(False), graph, hw, opts, source, False)
    rep.seconds = {"decompose": t_dec, **rep.seconds}
    return prog, rep


def _compile(g, graph, hw, opts: Options, source: dict | None, permuted: bool):
    rep = Report()
    t0 = time.perf_counter()
    plan, rep.mappings = choose_mapping(g, hw, opts)
    rep.seconds["partition"] = time.perf_counter() - t0
    buckets = buckets_for(opts.max_context)
    t0 = time.perf_counter()
    lowered = lower(g, plan, hw, opts.precision, buckets, opts.max_context)
    rep.seconds["lower"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    regions = place(list(lowered.buffers), list(lowered.code), hw, lowered.bucket_of)
    rep.seconds["place"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    streams = {}
    for b, code in enumerate(lowered.code):
        sched = schedule(code, regions, hw)
        buckets[b]["cycles"] = sched.cycles
        # the lower bound for the smallest context this bucket serves: valid for all its tokens
        lb = bound(g, plan, hw, opts.precision, buckets[b]["first_position"] + 1)
        buckets[b]["lower_bound_cycles"] = lb.cycles
        buckets[b]["lower_bound_terms"] = lb.terms
        rep.bounds.append(lb.cycles)
        rep.cycles.append(sched.cycles)
        rep.instructions += len(sched.nodes)
        streams.update(streams_for(b, sched, hw.chip.icu.nop_max_repeat))
    rep.seconds["schedule"] = time.perf_counter() - t0
    meta = {
        "precision": opts.precision,
        "max_context": opts.max_context,
        "partition": plan.mapping,
        "stages": len(plan.stages) if plan.staged else 1,
        "permuted_linears": permuted,
        "mapping_estimates": {k: v for k, v in sorted(rep.mappings.items()) if v is not None},
        "model": {k: v for k, v in sorted((graph.meta or {}).items()) if isinstance(v, (int, float, str, bool))},
        "source": source or {},
        "vocab_size": int(np.prod([d for d in g.vars[g.outputs["logits"]].shape if d != "T"])),
    }
    prog = build_program(hw, lowered, regions, streams, buckets, meta)
    rep.sram_bytes = sram_bytes(lowered.buffers)
    return prog, rep


def compile_model(path: str | os.PathLike, hw, opts: Options):
    """ONNX file -> (Program, Report). Raises CompileError (and subclasses) with one clear line."""
    from .frontend import import_onnx

    opts.check()
    t0 = time.perf_counter()
    graph = import_onnx(path, max_context=opts.max_context)
    t_import = time.perf_counter() - t0
    p = Path(path)
    source = {"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
    prog, rep = compile_graph(graph, hw, opts, source)
    rep.seconds = {"import": t_import, **rep.seconds}
    return prog, rep


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
