"""End to end: real exported decoders, compiled for the chips and decoded on the emulator, against
ONNX Runtime (the independent reference: it never sees our compiler or emulator)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from compiler.driver import Options, compile_model
from lpu import config
from lpu.decode import Decoder
from lpu.facts import relays
from lpu.reference import OrtDecoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = ["gpt2_optimum", "gpt2_dynamo", "llama_optimum", "llama_dynamo"]
PROMPT = [1, 2, 3]
N = 12
CTX = 256  # the GPT-2 fixtures have 256 learned positions


@functools.lru_cache(maxsize=None)
def ort(name):
    return OrtDecoder(FIX / f"{name}.onnx", threads=1).greedy(PROMPT, N)


@functools.lru_cache(maxsize=None)
def run(name, chips, precision, partition="auto", stages=0):
    prog, _ = compile_model(FIX / f"{name}.onnx", config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision=precision, max_context=CTX, partition=partition, stages=stages))
    res = Decoder(prog).generate(PROMPT, N)
    return prog, res


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", MODELS)
def test_fp32_gives_onnxruntime_tokens_and_logits_within_a_thousandth(name):
    tokens, logits = ort(name)
    _, res = run(name, 1, "fp32")
    assert res.tokens == tokens
    # every row within 1e-3 relative error of ONNX Runtime's logits
    for i in range(N):
        err = np.abs(res.logits[i] - logits[i]).max() / np.abs(logits[i]).max()
        assert err < 1e-3, (i, err)


@pytest.mark.parametrize("name", MODELS)
def test_fp16_logits_within_3_percent_before_the_first_differing_token(name):
    tokens, logits = ort(name)
    _, res = run(name, 1, "fp16")
    first = next((i for i, (a, b) in enumerate(zip(res.tokens, tokens)) if a != b), N)
    # the steps up to and including the first differing token saw the same inputs as ORT
    for i in range(min(first + 1, N)):
        assert rel_l2(res.logits[i], logits[i]) < 3e-2, (i, rel_l2(res.logits[i], logits[i]))
    assert first >= 1  # at least the first token agrees


@pytest.mark.parametrize("name", ["gpt2_optimum", "llama_dynamo"])
@pytest.mark.parametrize("chips, partition, stages", [
    (2, "tp", 0), (4, "tp", 0), (8, "tp", 0), (2, "pp", 0), (4, "pp", 0), (8, "pp", 0),
    (4, "hybrid", 2), (8, "hybrid", 2), (8, "hybrid", 4)])
def test_every_chip_count_and_mapping_gives_the_same_tokens(name, chips, partition, stages):
    tokens, logits = ort(name)
    prog, res = run(name, chips, "fp32", partition, stages)
    assert prog.header["partition"] == partition
    assert prog.header["stages"] == {"tp": 1, "pp": chips, "hybrid": stages}[partition]
    assert res.tokens == tokens
    # the lower bound of every mapping is below what its schedule takes
    assert all(0 < lb <= c for lb, c in zip(res.lower_bound_cycles, res.cycles_per_token))
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3


def test_compiling_twice_gives_identical_bytes_and_decoding_twice_identical_results():
    name = "llama_optimum"
    hw = config.load("groqchip1", chips=2)
    opts = Options(chips=2, precision="fp16", max_context=CTX)
    a, _ = compile_model(FIX / f"{name}.onnx", hw, opts)
    b, _ = compile_model(FIX / f"{name}.onnx", hw, opts)
    assert a.to_bytes() == b.to_bytes()
    r1 = Decoder(a).generate(PROMPT, 6)
    r2 = Decoder(b).generate(PROMPT, 6)
    assert r1.tokens == r2.tokens
    assert r1.cycles_per_token == r2.cycles_per_token and r1.prefill_cycles == r2.prefill_cycles
    assert np.array_equal(r1.logits, r2.logits)


@pytest.mark.parametrize("chips", [1, 2])
def test_a_cache_longer_than_1024_packs_v_and_still_gives_onnxruntime_tokens(chips):
    """Above 1024 positions the V cache packs several positions per vector (position q at row q % R,
    lane group q // R): 400 tokens cross into the next lane groups (R = 320 rows on one chip, 160 on
    two), and each group's share
    of the result is summed by the next linear's accumulator."""
    from compiler.backend.lower import PACK_V_FROM

    name, n = "llama_optimum", 400
    tokens, logits = OrtDecoder(FIX / f"{name}.onnx", threads=1).greedy(PROMPT, n)
    prog, _ = compile_model(FIX / f"{name}.onnx", config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision="fp32", max_context=PACK_V_FROM + 64, partition="tp"))
    names = {r.name for r in prog.regions}
    assert "pvshare" in names and "pvsum" not in names  # packed, and no add tree on the VXM
    rows = {r.rows for r in prog.regions if r.name == "kv.0.v"}
    assert rows and max(rows) < len(PROMPT) + n  # the tokens reach the second lane group (the third on 2 chips)
    res = Decoder(prog).generate(PROMPT, n)
    assert res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3


@pytest.mark.parametrize("chips", [1, 2])
def test_tables_in_row_blocks_give_onnxruntime_tokens(chips, monkeypatch):
    """A large table is stored as row blocks (one GATHER each, an add tree joins them); the fixtures'
    tables are small, so the block size is shrunk here to make several."""
    import compiler.backend.lower.tables as tables

    monkeypatch.setattr(tables, "TABLE_BLOCK_BANKS", 0.02)  # about 26 KB: a few dozen rows per block
    name = "gpt2_optimum"
    tokens, logits = ort(name)
    prog, _ = compile_model(FIX / f"{name}.onnx", config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision="fp32", max_context=CTX))
    blocks = [r for r in prog.regions if r.name.startswith("transformer.wte.weight[")]
    assert len(blocks) >= 3 * chips
    res = Decoder(prog).generate(PROMPT, N)
    assert res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3


def test_a_value_crosses_a_link_once():
    """A value replicated over a stage goes to the next stage once per link: a chip the previous stage
    cannot reach in one hop gets it from a gateway of its own stage that received it, not on a route of its
    own through that gateway (which sent the same vectors over the inter-node link once more per chip)."""
    prog, _ = run("gpt2_optimum", 64, "fp32", "auto")
    numbering = prog.numbering()
    for key in prog.streams:
        if key[2].startswith("c2c") and key[2].endswith("t"):
            sent = [(i["src_reg"], i["src_off"], i["n"]) for i in prog.instrs(key, numbering) if i.op == "SEND"]
            assert len(sent) == len(set(sent)), f"bucket {key[0]} chip {key[1]} {key[2]}: a region sent twice"


@pytest.mark.parametrize("chips, partition", [(16, "pp"), (64, "auto")])
def test_nodes_joined_by_routes_give_onnxruntime_tokens(chips, partition):
    # 16: two GroqNodes, a stage per chip; 64: eight nodes of one rack, the mapping the compiler picks.
    # Stages sit on different nodes, and some chips reach the next stage only through another chip: on a
    # route of two hops (a stage per chip), or from a gateway of their own stage that received the value
    name = "gpt2_optimum"
    tokens, logits = ort(name)
    prog, res = run(name, chips, "fp32", partition)
    assert prog.header["chips"] == chips and prog.header["partition"] in ("hybrid", "pp")
    assert relays(prog)["forwarded" if partition == "pp" else "gateway"] > 0
    assert res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3
    assert all(0 < lb <= c for lb, c in zip(res.lower_bound_cycles, res.cycles_per_token))
    _, r16 = run(name, chips, "fp16", partition)
    first = next((i for i, (a, b) in enumerate(zip(r16.tokens, tokens)) if a != b), N)
    for i in range(min(first + 1, N)):
        assert rel_l2(r16.logits[i], logits[i]) < 3e-2


@pytest.mark.slow
@pytest.mark.parametrize("hw, chips", [("groqchip1", 144), ("lp30", 256)])
def test_racks_give_onnxruntime_tokens(hw, chips):
    # 144: two GroqRacks joined by global links; 256: a whole LPX rack
    name = "llama_optimum"
    tokens, logits = ort(name)
    prog, _ = compile_model(FIX / f"{name}.onnx", config.load(hw, chips=chips),
                            Options(chips=chips, precision="fp32", max_context=CTX))
    res = Decoder(prog).generate(PROMPT, N)
    assert relays(prog)["forwarded"] > 0 and res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3
