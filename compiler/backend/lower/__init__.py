"""Lowering: the partitioned IR becomes instructions per chip, in program order, on buffers.

One module per family of IR primitives, each a dict `LOWERINGS` of prim -> function(lowerer, chip, eqn,
eqn index), all sharing the core (core.py: buffers, instruction builders, operand addressing, the
loop over equations). The machine's ways of doing things:
- elementwise.py: VXM instructions over whole tensors (repeat counts), operands addressed seq / rep /
  grp so that broadcasts cost nothing; a broadcast the modes cannot express is an SXM shuffle first;
- reductions.py: over the last axis, a lane-wise VXM reduction over the vectors of each group, then a
  cross-lane step: sums on the MXM against a tile of ones, maxima by SXM shuffles and VXM maxima;
- movement.py: data movement that keeps element order is free (a view), anything else one SXM
  shuffle per source;
- tables.py: a gathered table (embeddings) as row blocks, one GATHER each, joined by an add tree;
- collectives.py: the all-reduce of partial sums over the direct chip links (the same tree on every
  chip, so every chip ends with bit-identical values) and the pipeline transfer between stages;
- linears.py: weight tiles stream into the MXM units, activations pass through, accumulators are
  emitted;
- experts.py: mixture-of-experts: the router's top-k on the VXM/SXM, and a linear whose weights are
  the runtime-chosen expert's, gathered by the MEM unit at an address computed from the expert number;
- attention.py: the KV cache as the MXM's weights (K transposed, V one row per position or packed),
  the append a scatter at the token's position.
Adding a prim is a function in the module of its family and a line in that module's LOWERINGS.

`lower(...)` lowers every context bucket and returns a `Lowered` record: the code, the buffers and
the host-visible symbols. Later stages read only that record.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import numpy as np

from isa import Hardware, Shard, Symbol

from ..buffers import LANES, Buf, Node
from .attention import PACK_V_FROM
from .core import REGISTRY, BufferPool, Lowerer

MODULES = ("elementwise", "reductions", "movement", "tables", "collectives", "linears", "attention", "experts")

for _m in MODULES:
    for _prim, _fn in import_module(f"{__name__}.{_m}").LOWERINGS.items():
        if _prim in REGISTRY:  # pragma: no cover - a registry bug
            raise AssertionError(f"prim {_prim!r} is lowered by two modules")
        REGISTRY[_prim] = _fn


def lowered_prims() -> list[str]:
    return sorted(REGISTRY)


@dataclass(frozen=True)
class Lowered:
    """What lowering hands to placement, scheduling and emission.

    code[b][c]: bucket b's nodes for chip c, in program order (region ids are buffer ids);
    buffers: every buffer of the program, buffers[i].id == i (the region id it will get);
    bucket_of: buffer id -> the bucket that owns it (buffers absent here are shared by all buckets);
    symbols: the host-visible tensors (inputs, outputs, weights, caches) as shards of buffers."""

    code: tuple
    buffers: tuple
    bucket_of: dict
    symbols: dict
    ops: tuple = ()  # operation id -> (primitive, name, function, layer, kind): what each Node.op names


def lower(g, plan, hw: Hardware, precision: str, buckets: list[dict], max_context: int, weights: str = "fp16") -> Lowered:
    """Lower every context bucket of the partitioned graph `g` (one Lowerer per bucket, one pool)."""
    pool = BufferPool()
    code, first = [], None
    for b, bk in enumerate(buckets):
        low = Lowerer(g, plan, hw, precision, bk["context"], max_context, pool, b, weights)
        low.run()
        low.duplicate_shared_inputs()
        code.append(low.code)
        if first is None:
            first = low
    symbols = _symbols(g, pool, first.vals, plan.chips)
    return Lowered(tuple(code), tuple(pool.bufs), dict(pool.bucket_of), symbols, tuple(pool.ops))


def _symbols(g, pool: BufferPool, vals_by_chip, chips: int) -> dict[str, Symbol]:
    """Inputs (a copy on every chip), outputs (each chip's slice), weights and caches (for tools)."""
    symbols: dict[str, Symbol] = {}
    for name in g.inputs:
        shards = []
        for c in range(chips):
            b = pool.shared[("in", name, c)]
            count = b.vectors * LANES if name == "attention_mask" else 1
            shards.append(Shard(c, b.id, 0, count, 0))
        shape = [shards[0].count]
        symbols[name] = Symbol(name, "input", "fp32" if name == "attention_mask" else "i32", tuple(shape), tuple(shards))
    for oname, var in g.outputs.items():
        shards = []
        total = int(np.prod([d for d in g.vars[var].shape if d != "T"]))
        for c in range(chips):
            v = vals_by_chip[c].get(var)
            if v is None:
                continue
            idx = v.idx
            if not np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
                raise AssertionError(f"output {var} is not contiguous on chip {c}")
            shards.append(Shard(c, v.buf.id, v.off * LANES, int(idx.size), int(idx[0])))
        symbols[oname] = Symbol(oname, "output", "fp32", (total,), tuple(shards))
    for b in pool.bufs:
        if b.kind in ("weight", "state"):
            key = f"{b.kind}:{b.name}@{b.chip}"
            symbols[key] = Symbol(key, b.kind, b.dtype, (b.rows, b.row_vectors * LANES),
                                  (Shard(b.chip, b.id, 0, b.vectors * LANES, 0),))
    return symbols


__all__ = ["BufferPool", "Buf", "Lowered", "Lowerer", "MODULES", "Node", "PACK_V_FROM", "REGISTRY", "lower",
           "lowered_prims"]
