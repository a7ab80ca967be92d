"""The trained fixtures (tools/train_fixtures.py: small decoders trained on the standard library's docstrings):
intact, decoding as PyTorch did when they were made, and on the emulator as ONNX Runtime does."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from compiler.driver import Options, compile_model
from lpu import config
from lpu.decode import Decoder
from lpu.reference import OrtDecoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RECORD = json.loads((FIX / "trained.json").read_text())
TRAINED = {r["name"]: r for r in RECORD["fixtures"]}
N = 16  # the record's greedy decodes are 16 tokens (PyTorch's, at generation time)


@functools.lru_cache(maxsize=None)
def ort(name):
    return OrtDecoder(FIX / f"{name}.onnx", threads=1).greedy(TRAINED[name]["text_prompt"], N)


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_files_are_the_recorded_ones(name):
    for f, digest in TRAINED[name]["sha256"].items():
        assert hashlib.sha256((FIX / f).read_bytes()).hexdigest() == digest, f


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_onnxruntime_decodes_as_pytorch_did(name):
    """The independent record: the greedy tokens PyTorch produced from the same ids when the fixture was made."""
    tokens, _ = ort(name)
    assert list(tokens) == TRAINED[name]["text_greedy_tokens"]


@pytest.mark.parametrize("name, chips", [("trained_llama", 8), ("trained_gpt2", 4), ("trained_qwen2", 2)])
def test_emulated_fp16_decode_equals_onnxruntime(name, chips):
    tokens, logits = ort(name)
    prog, _ = compile_model(FIX / f"{name}.onnx", config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision="fp16", max_context=256))
    res = Decoder(prog).generate(TRAINED[name]["text_prompt"], N)
    assert list(res.tokens) == list(tokens)
    for got, want in zip(res.logits, logits):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 3e-2
