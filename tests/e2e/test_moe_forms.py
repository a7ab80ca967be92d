"""Mixture-of-experts models in both forms (the onnxruntime-genai builder's com.microsoft MoE / QMoE, and MoE
written out in standard operators: gpt-oss, Mixtral-style, Qwen2-MoE-style with a shared expert) against
ONNX Runtime, and the acceptance point on cycles: a token
runs k experts, so the cycles per token grow with k and not with the number of experts. (tests/e2e/
test_forms.py decodes every fixture, these included, to ONNX Runtime's tokens at fp32 and fp16.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from lpu import cli
from lpu.reference import OrtDecoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"
PROMPT = [1, 2, 3, 4, 5]
N = 12


def decode(path, tmp_path, capsys, chips=1, precision="fp32", tokens=N):
    logits = tmp_path / f"{Path(path).stem}-{chips}-{precision}.npy"
    rc = cli.main(["decode", str(path), "--precision", precision, "--json", "--chips", str(chips),
                   "--prompt", ",".join(map(str, PROMPT)), "--tokens", str(tokens), "--logits", str(logits)])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out), np.load(logits)


def with_k(tmp_path, k: int) -> Path:
    """gpt_oss_genai with every MoE node choosing k experts instead of 2."""
    m = onnx.load(str(FIX / "gpt_oss_genai.onnx"))
    for node in m.graph.node:
        if node.op_type == "MoE":
            for a in node.attribute:
                if a.name == "k":
                    a.CopyFrom(helper.make_attribute("k", k))
    path = tmp_path / f"gpt_oss_k{k}.onnx"
    onnx.save(m, str(path))
    return path


def test_8_and_16_experts_cost_the_same_cycles_at_k2(tmp_path, capsys):
    """The acceptance test: the same decoder with 8 and with 16 experts (top-2 of each): the 16-expert model
    holds twice the expert weights, its tokens still match ONNX Runtime, and its cycles per token are within
    2% of the 8-expert model's, while one more expert per token (k 2 -> 3) costs far more than that."""
    out8, _ = decode(FIX / "gpt_oss_moe.onnx", tmp_path, capsys, tokens=3)
    out16, logits16 = decode(FIX / "gpt_oss_moe_e16.onnx", tmp_path, capsys, tokens=3)
    ref_tokens, _ = OrtDecoder(FIX / "gpt_oss_moe_e16.onnx", threads=1).greedy(PROMPT, 3)
    assert out16["tokens"] == ref_tokens
    c8, c16 = out8["cycles_per_token"][-1], out16["cycles_per_token"][-1]
    out3, _ = decode(with_k(tmp_path, 3), tmp_path, capsys, tokens=3)
    c2_fused = decode(FIX / "gpt_oss_genai.onnx", tmp_path, capsys, tokens=3)[0]["cycles_per_token"][-1]
    more_k = out3["cycles_per_token"][-1] - c2_fused
    assert abs(c16 - c8) <= 0.02 * c8, (c8, c16)
    assert more_k > 5 * abs(c16 - c8), (c8, c16, more_k)


@pytest.mark.parametrize("k", [1, 4])
def test_moe_with_other_k_gives_onnxruntime_tokens(k, tmp_path, capsys):
    """The same MoE model choosing 1 or 4 experts per token: ONNX Runtime's tokens and logits, and more
    experts cost more cycles."""
    path = with_k(tmp_path, k)
    tokens, ref = OrtDecoder(path, threads=1).greedy(PROMPT, N)
    out, logits = decode(path, tmp_path, capsys, chips=2)
    assert out["tokens"] == tokens
    for i in range(N):
        assert np.abs(logits[i] - ref[i]).max() / np.abs(ref[i]).max() <= 1e-3, i


def test_cycles_grow_with_k(tmp_path, capsys):
    cycles = [decode(with_k(tmp_path, k), tmp_path, capsys, tokens=2)[0]["cycles_per_token"][-1] for k in (1, 2, 4)]
    assert cycles[0] < cycles[1] < cycles[2], cycles


def test_moe_with_fc3_is_refused(tmp_path, capsys):
    """A separate gate matrix (fc3) is not supported: one line naming it, exit 1."""
    m = onnx.load(str(FIX / "gpt_oss_genai.onnx"))
    for node in m.graph.node:
        if node.op_type == "MoE":
            ins = list(node.input) + [""] * (8 - len(node.input))
            ins[6] = ins[2]
            del node.input[:]
            node.input.extend(ins)
            break
    path = tmp_path / "fc3.onnx"
    onnx.save(m, str(path))
    rc = cli.main(["compile", str(path), "-o", str(tmp_path / "fc3.lpu")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "fc3" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "fc3.lpu").exists()


@pytest.mark.parametrize("name, family, experts, context", [
    ("gpt_oss_genai", "gpt_oss", 8, 128), ("gpt_oss_moe", "gpt_oss", 8, 128), ("gpt_oss_moe_e16", "gpt_oss", 16, 128),
    ("gpt_oss_genai_int4", "gpt_oss", 8, 128), ("mixtral_moe", "mixtral", 8, 512), ("qwen2_moe", "qwen2_moe", 8, 512)])
def test_check_reports_the_experts(name, family, experts, context, capsys):
    """lpu check names the family, the experts and k, and the default context (gpt-oss: its sliding window)."""
    assert cli.main(["check", str(FIX / f"{name}.onnx"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["family"] == family
    assert rep["experts"] == {"experts": experts, "k": 2, "layers": 2}
    assert rep["default_max_context"] == context
