"""Differential test of the backend: the emulated program against the IR evaluator (compiler.ireval, the
IR's numpy meaning, which never sees the backend) over graph styles and shapes: with and without the
attention mask, head_dim 16/32/64/128, query and key/value head counts, hidden sizes that are and are not
multiples of 320 lanes, query width != hidden (Gemma-style), chip counts and mappings.

A fast subset runs in `make test`; the whole grid in `make test-slow`."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tinyir import gpt2_like, llama_like

from compiler.driver import Options, compile_graph
from compiler.ireval import IrDecoder
from lpu import config
from lpu.decode import Decoder

PROMPT = [3, 1, 4]
N = 5
CTX = 320


@functools.lru_cache(maxsize=None)
def graph(family, hidden, heads, kv_heads, head_dim, masked):
    if family == "gpt2":
        assert kv_heads == heads and head_dim == hidden // heads
        return gpt2_like(hidden=hidden, heads=heads, masked=masked, max_context=CTX)
    return llama_like(hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim, inter=2 * hidden,
                      masked=masked, max_context=CTX)


def check(family, hidden, heads, kv_heads, head_dim, masked, chips, partition, stages=0):
    g = graph(family, hidden, heads, kv_heads, head_dim, masked)
    assert ("attention_mask" in g.inputs) == masked
    prog, _ = compile_graph(g, config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision="fp32", max_context=CTX, partition=partition, stages=stages))
    if chips > 1:
        assert prog.header["partition"] == partition
    res = Decoder(prog).generate(PROMPT, N)
    tokens, logits = IrDecoder(g, CTX).greedy(PROMPT, N)
    assert res.tokens == tokens
    err = np.abs(res.logits - logits).max() / np.abs(logits).max()
    assert err < 1e-4, err


# family, hidden, heads, kv heads, head_dim, masked, chips, mapping, stages
FAST = [
    ("llama", 64, 4, 2, 16, False, 1, "tp", 0),     # the mask-less dynamo Llama's shape
    ("llama", 128, 4, 2, 32, False, 8, "tp", 0),
    ("gpt2", 96, 4, 4, 24, False, 2, "pp", 0),
    ("llama", 320, 5, 5, 64, True, 2, "tp", 0),     # hidden = one vector of lanes
    ("llama", 256, 2, 1, 128, False, 4, "hybrid", 2),
    ("llama", 200, 4, 2, 64, False, 1, "tp", 0),    # query width 256 != hidden 200
]


def _slow_grid():
    shapes = {16: [("llama", 64, 4, 2), ("llama", 336, 6, 3)], 32: [("llama", 128, 4, 1), ("gpt2", 320, 10, 10)],
              64: [("llama", 320, 5, 5), ("llama", 448, 8, 2)], 128: [("llama", 256, 2, 1), ("llama", 640, 8, 4)]}
    maps = [(1, "tp", 0), (2, "tp", 0), (2, "pp", 0), (8, "tp", 0), (4, "hybrid", 2), (8, "hybrid", 4)]
    out = []
    for d, fams in shapes.items():
        for i, (fam, hidden, heads, kv) in enumerate(fams):
            for masked in (False, True):
                for j, m in enumerate(maps):
                    if (i + j + masked) % 2 == 0:  # half the combinations, every mapping for each head_dim
                        out.append((fam, hidden, heads, kv, d, masked) + m)
    return [c for c in out if c not in FAST]


def _id(c):
    fam, hidden, heads, kv, d, masked, chips, part, stages = c
    return f"{fam}-h{hidden}-q{heads}-kv{kv}-d{d}-{'mask' if masked else 'nomask'}-{chips}c-{part}{stages or ''}"


@pytest.mark.parametrize("case", FAST, ids=_id)
def test_emulated_program_equals_the_ir(case):
    check(*case)


@pytest.mark.slow
@pytest.mark.parametrize("case", _slow_grid(), ids=_id)
def test_emulated_program_equals_the_ir_over_the_grid(case):
    check(*case)


def test_a_pipeline_cut_inside_a_tensor_parallel_region(monkeypatch):
    # A hybrid whose cut falls right before a row-split linear (an MLP's down projection or an attention
    # output projection), so its input is split over the previous stage's chips: the next stage's chips
    # must receive their parts and multiply them, not contribute zeros (many stages over few layers put
    # cuts there; this once gave wrong tokens without an error)
    import compiler.backend.partition as P

    plan_pp, seen = P.plan_pp, []

    def cut_before_a_row_split(gg, chips, topo=None, cuts=None, which=0):
        rows = P.plan(gg, 2).rowsplit
        made = {o: i for i, e in enumerate(gg.eqns) for o in e.outputs}
        at = [i for i, e in enumerate(gg.eqns) if e.outputs[0] in rows and made.get(e.inputs[0]) == i - 1]
        seen.append(at[which])
        return plan_pp(gg, chips, topo, cuts=[at[which]])

    for which in (0, 1):
        monkeypatch.setattr(P, "plan_pp", lambda *a, which=which, **k: cut_before_a_row_split(*a, which=which, **k))
        check("llama", 128, 4, 2, 32, False, 4, "hybrid", 2)
    assert len(set(seen)) == 2
