"""Each backend pass on small graphs: decomposition and linear splitting keep the IR's meaning,
partitioning finds the Megatron regions, lowering + scheduling + emulation equal the IR evaluator."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tinyir import gpt2_like, llama_like

from compiler.backend.alloc import place
from compiler.backend.decompose import decompose, split_linears
from compiler.backend.lower import BufferPool, Lowerer
from compiler.backend.partition import plan, plan_hybrid, plan_pp
from compiler.driver import Options, compile_graph
from compiler.errors import CapacityError
from compiler.frontend import import_onnx
from compiler.ir import Builder, Graph, Var
from compiler.ireval import IrDecoder, eval_eqn
from lpu import config
from lpu.decode import Decoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _unary_graph(op, x):
    g = Graph({"x": Var("x", (x.size,))}, {"x0": x.astype(np.float32)}, [], (), {}, {}, {})
    g.vars = {}
    b = Builder(g)
    y = b.eqn("unary", ["x0"], op=op)
    g.outputs["y"] = y
    return g


@pytest.mark.parametrize("op, ref", [
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))),
    ("erf", lambda x: np.vectorize(math.erf)(x.astype(np.float64))),
    ("sqrt", lambda x: np.sqrt(np.abs(x.astype(np.float64)))),
])
def test_decomposed_functions_match_their_definitions(op, ref):
    x = np.linspace(-6, 6, 2001).astype(np.float32)
    if op == "sqrt":
        x = np.abs(x)
    g = decompose(_unary_graph(op, x))
    assert all(e.prim in ("unary", "binary", "where") for e in g.eqns)
    assert {e.params.get("op") for e in g.eqns} <= {"neg", "abs", "exp", "tanh", "rsqrt", "recip", "add", "sub", "mul", "gt", None}
    env = dict(g.consts)
    for e in g.eqns:
        env[e.outputs[0]] = eval_eqn(e, [env[i] for i in e.inputs], 1, {}, 0, g)
    got = np.asarray(env[g.outputs["y"]], dtype=np.float64)
    assert np.abs(got - ref(x)).max() < 5e-7


@pytest.mark.parametrize("make", [gpt2_like, llama_like])
def test_decompose_and_split_keep_the_meaning(make):
    g = make()
    d = split_linears(decompose(g))
    prims = {e.prim for e in d.eqns}
    assert not prims & {"layernorm", "rmsnorm", "softmax"}
    a = IrDecoder(g, 640).greedy([1, 2, 3], 6)
    b = IrDecoder(d, 640).greedy([1, 2, 3], 6)
    assert a[0] == b[0]
    assert np.abs(a[1] - b[1]).max() < 1e-4 * np.abs(a[1]).max()


def test_split_linears_separates_gpt2_fused_qkv():
    g = import_onnx(FIX / "gpt2_optimum.onnx", max_context=64)
    fused = sum(1 for e in g.eqns if e.prim == "linear")
    d = split_linears(decompose(g))
    assert sum(1 for e in d.eqns if e.prim == "linear") == fused + 2 * 2  # c_attn -> q, k, v in 2 layers
    assert not any(e.prim == "slice" and g.vars.get(e.inputs[0]) is not None and e.inputs[0] in
                   {q.outputs[0] for q in d.eqns if q.prim == "linear"} for e in d.eqns)


def test_partition_finds_attention_and_mlp_regions_and_deals_heads():
    g = split_linears(decompose(import_onnx(FIX / "llama_optimum.onnx", max_context=64)))
    p = plan(g, 4)
    # per layer: o_proj (6 query heads) and down_proj (352 columns) are row-split sinks
    assert sorted(r["units"] for r in p.regions) == [6, 6, 352, 352]
    for r in p.regions:
        assert sum(r["per_chip"]) == r["units"] and max(r["per_chip"]) - min(r["per_chip"]) <= 1
    assert len(p.rowsplit) == 4
    logits = g.outputs["logits"]
    assert logits in p.sharded_outputs
    sizes = [p.hold[c][logits].size for c in range(4)]
    assert sum(sizes) == 700
    # GQA: 6 query heads over 2 kv heads; a chip with query heads 0,1 needs kv head 0 only
    kv = [e.outputs[0] for e in g.eqns if e.prim == "kv_append"][0]
    assert all(p.hold[c][kv].size in (32, 64) for c in range(4))


@pytest.mark.parametrize("chips, stages", [(4, 2), (8, 2), (8, 4)])
def test_hybrid_holds_each_stage_tensor_parallel_on_its_own_chips(chips, stages):
    g = split_linears(decompose(import_onnx(FIX / "llama_optimum.onnx", max_context=64)))
    per = chips // stages
    h, tp, pp = plan_hybrid(g, chips, stages), plan(g, per), plan_pp(g, stages)
    assert h.mapping == "hybrid" and h.per_stage == per and len(h.stages) == stages
    for v, k in pp.owner.items():
        for c in range(chips):
            if c // per != k:
                # computed in one stage only, but for what every stage makes from the inputs alone
                assert v not in h.hold[c] or v in h.local
            elif v in tp.hold[c % per]:
                assert np.array_equal(h.hold[c][v], tp.hold[c % per][v])  # as tensor-parallel over `per` chips
            else:
                assert v not in h.hold[c]
    assert h.rowsplit == tp.rowsplit
    # every layer's two all-reduces and the logits stay within one stage
    logits = g.outputs["logits"]
    assert sorted(c for c in range(chips) if logits in h.hold[c]) == list(h.stage_chips(stages - 1))
    with pytest.raises(ValueError):
        plan_hybrid(g, chips, chips)


@pytest.mark.parametrize("make", [gpt2_like, llama_like])
@pytest.mark.parametrize("chips", [1, 2, 8])
def test_lowered_programs_compute_what_the_ir_means(make, chips):
    g = make()
    prog, rep = compile_graph(g, config.load("groqchip1", chips=chips), Options(chips=chips, precision="fp32", max_context=640))
    assert len(prog.header["buckets"]) == 2  # 640 positions: two buckets of 320
    res = Decoder(prog).generate([1, 2, 3], 5)
    ref = IrDecoder(g, 640).greedy([1, 2, 3], 5)
    assert res.tokens == ref[0]
    assert np.abs(res.logits - ref[1]).max() < 1e-4 * np.abs(ref[1]).max()


def test_context_buckets_cost_more_cycles_as_the_cache_grows():
    g = llama_like()
    prog, rep = compile_graph(g, config.load("groqchip1", chips=1), Options(chips=1, max_context=960))
    assert len(rep.cycles) == 3
    assert rep.cycles[0] < rep.cycles[1] < rep.cycles[2]
    dec = Decoder(prog)
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, 400, 318)]
    res = dec.generate(prompt, 4)  # positions 318..321 cross from bucket 0 into bucket 1
    assert res.cycles_per_token[0] == rep.cycles[0] and res.cycles_per_token[-1] == rep.cycles[1]
    # the numbers stay right across the boundary (each bucket's program reads what it wrote)
    ref = IrDecoder(g, 960).greedy(prompt, 4)
    assert res.tokens == ref[0]
    assert np.abs(res.logits - ref[1]).max() < 3e-2 * np.abs(ref[1]).max()


def test_placement_reports_bytes_needed_and_available():
    g = split_linears(decompose(llama_like()))
    hw = config.load("groqchip1", chips=1)
    d = hw.to_dict()
    d["chip"]["sram"]["bank_bytes"] = 2048
    tiny = config.from_dict(d)
    p = plan(g, 1)
    pool = BufferPool()
    low = Lowerer(g, p, tiny, "fp16", 320, 640, pool, 0)
    low.run()
    with pytest.raises(CapacityError, match=r"chip 0 needs [\d,]+ bytes .* but has 176 banks x 2,048"):
        place(pool.bufs, [low.code], tiny)


def test_operands_of_one_instruction_never_share_a_bank():
    g = split_linears(decompose(gpt2_like()))
    hw = config.load("groqchip1", chips=1)
    pool = BufferPool()
    low = Lowerer(g, plan(g, 1), hw, "fp32", 320, 640, pool, 0)
    low.run()
    regions = place(pool.bufs, [low.code], hw)
    for n in low.code[0]:
        a = n.instr.args
        regs = {a[k] for k in ("dst_reg", "a_reg", "b_reg", "src_reg", "map_reg", "x_reg") if k in a}
        if n.instr.op == "VXM" and a["b_mode"] == 3:
            regs.discard(a["b_reg"])
        banks = [set(range(regions[r].bank, regions[r].bank + regions[r].width)) for r in regs]
        for i in range(len(banks)):
            for j in range(i + 1, len(banks)):
                assert not banks[i] & banks[j], n.instr


def test_rotate_half_of_a_linear_becomes_a_linear_with_permuted_columns():
    from compiler.backend.decompose import fold

    g = import_onnx(FIX / "llama_optimum.onnx", max_context=64)
    d = split_linears(decompose(g))
    with_perm, without = fold(d, True), fold(d, False)
    # the decision is the fold's product: q and k of each of the 2 layers
    assert (with_perm.permuted_linears, without.permuted_linears) == (4, 0)
    with_perm, without = with_perm.graph, without.graph
    lin = {e.outputs[0] for e in without.eqns if e.prim == "linear"}
    # without: q and k of each layer are permuted by a take; with: by two more linears, and no take of one
    takes = [e for e in without.eqns if e.prim == "take"]
    assert len(takes) == 2 * 2
    n_lin = lambda h: sum(e.prim == "linear" for e in h.eqns)  # noqa: E731
    assert n_lin(with_perm) == n_lin(without) + 4
    prod = {o: e for e in with_perm.eqns for o in e.outputs}
    assert not any(e.prim == "take" and prod[e.inputs[0]].prim == "reshape" and prod[e.inputs[0]].inputs[0] in lin
                   for e in with_perm.eqns if e.inputs[0] in prod)
    # the same meaning as the graph before folding (ONNX Runtime's tokens are checked end to end)
    ref = IrDecoder(d, 64).greedy([1, 2, 3], 6)
    for h in (without, with_perm):
        got = IrDecoder(h, 64).greedy([1, 2, 3], 6)
        assert got[0] == ref[0]
        assert np.abs(got[1] - ref[1]).max() < 1e-5 * np.abs(ref[1]).max()


def _regions_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if (x is None) != (y is None):
            return False
        if x is None:
            continue
        if [id(e) for e in x[0]] != [id(e) for e in y[0]] or [id(e) for e in x[1]] != [id(e) for e in y[1]]:
            return False
        if len(x[2]) != len(y[2]) or any(not np.array_equal(u, v) for u, v in zip(x[2], y[2])):
            return False
    return True


@pytest.mark.parametrize("src", ["tinyir-llama6", "tinyir-gpt2-4", "llama_optimum", "gpt2_optimum", "qwen2_genai",
                                 "mixtral_moe", "phi3_optimum", "gemma_optimum"])
def test_repeated_layers_reuse_their_regions_and_get_the_fresh_ones(src):
    # the regions of the tensor-parallel split found with repeated structure recognised (later layers take
    # the first layer's units) are exactly those found by joining every layer's elements afresh
    from compiler.backend.decompose import fold
    from compiler.backend.partition import find_regions

    if src.startswith("tinyir"):
        g0 = llama_like(layers=6) if "llama" in src else gpt2_like(layers=4)
    else:
        g0 = import_onnx(FIX / f"{src}.onnx", max_context=256)
    g = fold(split_linears(decompose(g0))).graph
    reused, fresh = find_regions(g), find_regions(g, reuse=False)
    assert sum(r is not None for r in fresh.values()) >= 2
    assert _regions_equal(reused, fresh)


@pytest.mark.parametrize("chips, stages", [(2, 0), (4, 2), (8, 4)])
def test_every_stage_makes_the_rotary_rows_itself(chips, stages):
    """Values made from the inputs and small constants alone (the rotary rows gathered by position) are
    computed by each stage that needs them: no transfer carries them, and the hidden state still crosses."""
    g = split_linears(decompose(import_onnx(FIX / "llama_optimum.onnx", max_context=64)))
    p = plan_hybrid(g, chips, stages) if stages else plan_pp(g, chips)
    made = {o: e for e in g.eqns for o in e.outputs}
    assert p.local and any(made[v].prim == "gather" for v in p.local)
    assert p.transfers and not any(v in p.local for v, _ in p.transfers)
    for v in p.local:
        assert all(x in g.inputs or x in g.consts or x in p.local for x in made[v].inputs)
        users = {p.owner[e.outputs[0]] for e in g.eqns if v in e.inputs}
        for k in users:  # held on the chips of every stage that uses it
            assert any(v in p.hold[c] for c in p.stage_chips(k))
