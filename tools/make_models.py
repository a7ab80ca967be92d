#!/usr/bin/env python3
"""Export the benchmark models (dev-only: torch, transformers, optimum-onnx), randomly initialised
from the real configurations, by Optimum (`text-generation-with-past`), into build/models/<name>/.

    python tools/make_models.py                 # gpt2-small and qwen2.5-0.5b (skips what exists)
    python tools/make_models.py --only gpt2-small --force

gpt2-small:   GPT-2 124M (12 layers, 768 hidden, 12 heads, vocab 50257, 1024 positions)
qwen2.5-0.5b: the Qwen2.5-0.5B configuration (24 layers, 896 hidden, 14 query / 2 kv heads, MLP 4864,
              vocab 151936, tied embeddings, rope theta 1e6, q/k/v biases): 494M parameters
Weights are Hugging Face's random init (seeded); the files are large (0.5 and 2 GB of fp32) and are
not committed. `make bench` runs this first.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "models"

MODELS = {
    "gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "qwen2.5-0.5b": ("qwen2", dict(num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                                   num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                                   max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                                   rms_norm_eps=1e-6, use_sliding_window=False)),
}


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                yield
        finally:
            logging.disable(logging.NOTSET)


def build(family: str, cfg: dict, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(**cfg, attn_implementation="sdpa"))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**cfg, attn_implementation="sdpa"))
    model = model.eval().float()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export(name: str, force: bool) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model

    family, cfg = MODELS[name]
    dst = OUT / name
    if (dst / "model.onnx").exists() and not force:
        print(f"{name}: {dst / 'model.onnx'} exists (use --force to re-export)")
        return dst / "model.onnx"
    model = build(family, cfg)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n / 1e6:.1f}M parameters, exporting with Optimum ...", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=OUT.parent if OUT.parent.exists() else None))
    try:
        with quiet():
            onnx_export_from_model(model, str(tmp), task="text-generation-with-past", do_validation=False)
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"{name}: wrote {dst} ({size / 2**20:.0f} MiB)")
    return dst / "model.onnx"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(MODELS):
        export(name, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
