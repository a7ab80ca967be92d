"""Relative L2 logit error of `--weights int8|fp8` (and fp16) programs against fp32 ONNX Runtime, per fixture:
the README's tables. Each fixture is compiled for the preset and chips given, decoded greedily from the prompt
1,2,3 for 12 tokens (a trained fixture of tests/fixtures/trained.json, made by tools/train_fixtures.py: from
the token ids of its text prompt, `text_prompt`), and every step up to and including the first token that
differs from ONNX Runtime's (the steps that saw the same inputs) is compared; the worst step's error is
reported, with the cycles per token of the first bucket.

    python tools/weights_error.py [--fixtures gpt2_optimum,llama_optimum,...] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compiler.driver import Options, compile_model  # noqa: E402
from lpu import config  # noqa: E402
from lpu.decode import Decoder  # noqa: E402
from lpu.reference import OrtDecoder  # noqa: E402

FIX = ROOT / "tests" / "fixtures"
TRAINED = {r["name"]: r for r in json.loads((FIX / "trained.json").read_text())["fixtures"]} \
    if (FIX / "trained.json").exists() else {}
DEFAULT = ["gpt2_optimum", "llama_optimum", "qwen2_optimum", "mistral_optimum", "phi3_optimum", "gpt_neox_optimum",
           "opt_optimum", "gemma_optimum"] + list(TRAINED)
CASES = [("groqchip1", 1, "fp16"), ("groqchip1", 1, "int8"), ("groqchip1", 2, "int8"), ("lp30", 1, "fp8")]
PROMPT, N, CTX = [1, 2, 3], 12, 256


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def prompt_of(name: str) -> list[int]:
    return TRAINED[name]["text_prompt"] if name in TRAINED else PROMPT


def measure(name: str, preset: str, chips: int, weights: str, ref) -> dict:
    tokens, logits = ref
    prog, rep = compile_model(FIX / f"{name}.onnx", config.load(preset, chips=chips),
                              Options(chips=chips, precision="fp16", weights=weights, max_context=CTX))
    res = Decoder(prog).generate(prompt_of(name), N)
    first = next((i for i, (a, b) in enumerate(zip(res.tokens, tokens)) if a != b), N)
    steps = min(first + 1, N)
    errs = [rel_l2(res.logits[i], logits[i]) for i in range(steps)]
    return {"fixture": name, "preset": preset, "chips": chips, "weights": weights, "max_rel_l2": max(errs),
            "steps_compared": steps, "same_tokens": first, "cycles": rep.cycles[0], "lower_bound": rep.bounds[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=",".join(DEFAULT))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for name in a.fixtures.split(","):
        ref = OrtDecoder(FIX / f"{name}.onnx", threads=1).greedy(prompt_of(name), N)
        for preset, chips, weights in CASES:
            r = measure(name, preset, chips, weights, ref)
            rows.append(r)
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"{name:18s} {preset:9s} {chips} chip(s) {weights:5s}: rel L2 {r['max_rel_l2']:.2e} over "
                      f"{r['steps_compared']} step(s) ({r['same_tokens']} same tokens), {r['cycles']:,} cycles "
                      f"(bound {r['lower_bound']:,})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
