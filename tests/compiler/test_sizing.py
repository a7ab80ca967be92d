"""Sizing from a Hugging Face config.json (compiler/sizing.py, `lpu check CONFIG.json`): parameter counts
against the published counts of real checkpoints and against the Hugging Face models behind the test
fixtures, chip counts against a hand calculation, and the command line's one-line errors."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from compiler.sizing import chips_needed, kv_bytes, shape, stored_bytes
from lpu import cli, config

FIX = Path(__file__).resolve().parents[1] / "fixtures"

# public config.json values of real checkpoints, and their published parameter counts
REAL = {
    "Llama-2-7b": (dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
                        tie_word_embeddings=False), 6_738_415_616),
    "Llama-2-70b": (dict(model_type="llama", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, intermediate_size=28672, vocab_size=32000, max_position_embeddings=4096,
                         tie_word_embeddings=False), 68_976_648_192),
    "Meta-Llama-3-8B": (dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                             max_position_embeddings=8192, tie_word_embeddings=False), 8_030_261_248),
    "Mistral-7B-v0.1": (dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=8, intermediate_size=14336, vocab_size=32000,
                             max_position_embeddings=32768, tie_word_embeddings=False), 7_241_732_096),
    "gpt2": (dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024), 124_439_808),
    "Qwen2.5-0.5B": (dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                          num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                          max_position_embeddings=32768, tie_word_embeddings=True), 494_032_768),
    "opt-125m": (dict(model_type="opt", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                      vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768,
                      do_layer_norm_before=True), 125_239_296),
    "pythia-160m": (dict(model_type="gpt_neox", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, vocab_size=50304, max_position_embeddings=2048,
                         tie_word_embeddings=False), 162_322_944),
    "Phi-3-mini-4k": (dict(model_type="phi3", hidden_size=3072, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, intermediate_size=8192, vocab_size=32064,
                           max_position_embeddings=4096, tie_word_embeddings=False), 3_821_079_552),
    "gemma-2b": (dict(model_type="gemma", hidden_size=2048, num_hidden_layers=18, num_attention_heads=8,
                      num_key_value_heads=1, head_dim=256, intermediate_size=16384, vocab_size=256000,
                      max_position_embeddings=8192), 2_506_172_416),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_parameters_of_real_checkpoints(name):
    cfg, published = REAL[name]
    assert shape(cfg)["params"] == published


def _fixture_configs():
    """(name, config dict, parameters Hugging Face counted) for the dense fixtures' models (manifest.json)."""
    out = []
    for r in json.loads((FIX / "manifest.json").read_text())["fixtures"]:
        if r["exporter"] != "optimum" or r["name"] == "default" or "extdata" in r["name"]:
            continue
        call = ast.parse(r["config"], mode="eval").body
        # the manifest writes `Cls(k=v, ...)` with strings unquoted (hidden_activation=gelu_pytorch_tanh)
        cfg = {kw.arg: kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
               for kw in call.keywords}
        cfg["model_type"] = r["family"]
        out.append((r["name"], cfg, r["params"]))
    return out


@pytest.mark.parametrize("name, cfg, params", _fixture_configs(), ids=[c[0] for c in _fixture_configs()])
def test_parameters_of_the_fixture_models(name, cfg, params):
    """Every dense family at the fixtures' small shapes (the count PyTorch gave when they were made)."""
    assert shape(cfg)["params"] == params


# The README's table: the fewest chips whose SRAM holds weights + a 4096-position fp16 KV cache.
# Hand calculation: bytes = (params - V * H) * (2 fp16 | 1 int8 / fp8) + V * H * 2 (the embedding is gathered, not
# multiplied: fp16 whatever the linears' format) + 2 (K and V) * layers * kv_heads * head_dim * 4096 * 2;
# SRAM per chip: groqchip1 176 banks x 1,310,720 B = 230,686,720 B; lp30 312 banks x 1,602,564 B = 499,999,968 B.
HAND = {  # model: (params, layers, kv heads, head dim, vocabulary x hidden)
    "Llama-2-7b": (6_738_415_616, 32, 32, 128, 32_000 * 4096),
    "Meta-Llama-3-8B": (8_030_261_248, 32, 8, 128, 128_256 * 4096),
    "Llama-2-70b": (68_976_648_192, 80, 8, 128, 32_000 * 8192),
}
EXPECTED = {  # (groqchip1 fp16, int8, lp30 fp16, fp8), from the arithmetic above done by hand
    "Llama-2-7b": (68, 40, 32, 19),  # e.g. fp16: (13,476,831,232 + 2,147,483,648) / 230,686,720 = 67.7
    "Meta-Llama-3-8B": (72, 40, 34, 19),  # int8: (7,504,924,672 + 1,050,673,152 + 536,870,912) / 230,686,720 = 39.4
    "Llama-2-70b": (604, 306, 279, 142),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_chip_counts_match_the_hand_calculation(name):
    params, layers, kvh, hd, emb = HAND[name]
    kv = 2 * layers * kvh * hd * 4096 * 2
    hand = tuple(math.ceil(((params - emb) * b + emb * 2 + kv) / sram) for sram in (230_686_720, 499_999_968)
                 for b in (2, 1))
    assert hand == EXPECTED[name]
    s = shape(REAL[name][0])
    g, lp = config.load("groqchip1"), config.load("lp30")
    got = (chips_needed(s, 4096, "fp16", g.sram_bytes_per_chip), chips_needed(s, 4096, "int8", g.sram_bytes_per_chip),
           chips_needed(s, 4096, "fp16", lp.sram_bytes_per_chip), chips_needed(s, 4096, "fp8", lp.sram_bytes_per_chip))
    assert got == EXPECTED[name]


@pytest.mark.parametrize("cfg, weights", [("default", "int8"), ("default", "fp16"), ("llama_optimum", "int8"),
                                          ("gpt2_optimum", "int8")])
def test_the_sized_bytes_are_a_lower_bound_of_a_compiled_programs(cfg, weights):
    """What a compile stores (every chip's buffers) is at least what sizing counts: weights in the format, tables
    at fp16, a tied head's copy, the KV cache."""
    from compiler.driver import Options, compile_config

    path = FIX / "configs" / f"{cfg}.json"
    s = shape(json.loads(path.read_text()))
    hw = config.load("groqchip1", chips=2)
    ctx = min(320, s["positions"])
    prog, rep = compile_config(path, hw, Options(chips=2, max_context=ctx, weights=weights))
    stored = sum(rep.sram_bytes.values())
    assert stored >= stored_bytes(s, weights) + kv_bytes(s, ctx)


def test_check_of_a_config_json(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(REAL["Llama-2-70b"][0]))
    assert cli.main(["check", str(path), "--json", "--context", "4096"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params"] == 68_976_648_192 and rep["context"] == 4096
    assert rep["fits"]["groqchip1"]["chips_at_least"] == {"fp16": 604, "int8": 306}
    assert rep["fits"]["lp30"]["chips_at_least"] == {"fp16": 279, "fp8": 142}
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert ">= 604 chip(s) at fp16" in out and "lower bound" in out


@pytest.mark.parametrize("text, args, needle", [
    ("{", [], "not a JSON file"),
    ('{"model_type": "bert"}', [], "model_type 'bert'"),
    ('{"hidden_size": 8}', [], "no model_type"),
    ('{"model_type": "llama", "hidden_size": 64}', [], "lacks 'num_hidden_layers'"),
    (json.dumps(REAL["gpt2"][0]), ["--context", "0"], "--context 0"),
])
def test_bad_configs_get_one_line(text, args, needle, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(text)
    rc = cli.main(["check", str(path)] + args)
    err = capsys.readouterr().err
    assert rc != 0 and needle in err and len(err.strip().splitlines()) == 1, err


def test_context_flag_is_for_configs(capsys):
    rc = cli.main(["check", str(FIX / "gpt2_optimum.onnx"), "--context", "5"])
    assert rc == 2 and "--context" in capsys.readouterr().err
