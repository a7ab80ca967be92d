#!/usr/bin/env python3
"""Compile a corpus of models at the chip counts, mappings and contexts the tests and benchmarks use, and
record what each compile produced: the SHA-256 of the program file, the cycles and lower bound of
every bucket, and (with --decode) the greedy tokens, the logits' SHA-256 and the cycles of a short
decode. A refactoring that must not change behaviour is checked by writing a record before it and
comparing after:

    python tools/program_hashes.py --write build/hashes-before.json            # fixtures + tiny IR graphs
    python tools/program_hashes.py --write build/hashes-before.json --bench    # + the benchmark models
    python tools/program_hashes.py --check build/hashes-before.json [--bench]

--check prints one line per configuration (same bytes / same behaviour / DIFFERENT) and exits 1 if any
differs. "Same behaviour" means the bytes differ but the cycles, bounds, tokens and logits do not (a
deliberate change of the file format). The benchmark models come from `tools/make_models.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "support")]  # this tree's packages, not an installed copy

FIX = REPO / "tests" / "fixtures"
DEFAULT = REPO / "lpu" / "data" / "default.onnx"
BENCH = Path(os.environ.get("LPU_BENCH_MODELS", REPO / "build" / "models"))  # the benchmark models (the
# header records the model's path: compare two trees' compiles with the same one)


def corpus(bench: bool) -> list[dict]:
    out = []

    def add(model, chips, ctx, precision="fp16", partition="auto", stages=0, preset="groqchip1", decode=True):
        stem = model if model.startswith("ir:") else Path(model).parent.name if Path(model).stem == "model" \
            else Path(model).stem
        name = f"{stem}-{preset}-{chips}c-{partition}" \
               f"{stages or ''}-{precision}-ctx{ctx}"
        out.append(dict(name=name, model=model, chips=chips, max_context=ctx, precision=precision,
                        partition=partition, stages=stages, preset=preset, decode=decode))

    onnx = [str(FIX / f"{n}.onnx") for n in ("gpt2_optimum", "gpt2_dynamo", "llama_optimum", "llama_dynamo",
                                                "llama_optimum_extdata")] + [str(DEFAULT)]
    for m in onnx:  # every fixture at every chip count, both precisions, the default mapping
        for chips in (1, 2, 4, 8):
            add(m, chips, 256, "fp16")
            add(m, chips, 256, "fp32")
    for m in (onnx[0], onnx[3]):  # the e2e test's mappings
        for chips, part, st in ((2, "tp", 0), (4, "tp", 0), (8, "tp", 0), (2, "pp", 0), (4, "pp", 0), (8, "pp", 0),
                                (4, "hybrid", 2), (8, "hybrid", 2), (8, "hybrid", 4)):
            add(m, chips, 256, "fp32", part, st)
    for chips in (1, 2):  # packed V cache (contexts over 1024)
        add(onnx[2], chips, 1088, "fp32", "tp")
    add(str(DEFAULT), 8, 320, "fp16")  # make run
    add(onnx[2], 8, 640, "fp16")  # the README's worked example
    add(onnx[2], 2, 320, "fp16")  # the CLI test
    add(onnx[2], 8, 640, "fp16", "hybrid", 2)
    add(onnx[2], 4, 320, "fp16", preset="lp30")
    add(onnx[0], 8, 256, "fp16", preset="lp30")
    for g in ("ir:gpt2_like", "ir:llama_like"):  # the backend tests' IR graphs
        for chips in (1, 2, 8):
            add(g, chips, 640, "fp32")
        add(g, 2, 320, "fp16")
    add("ir:llama_like", 1, 960, "fp16")
    if bench:
        g2, qw = str(BENCH / "gpt2-small" / "model.onnx"), str(BENCH / "qwen2.5-0.5b" / "model.onnx")
        add(g2, 8, 128, decode=True)
        add(qw, 8, 128, decode=True)
        add(g2, 8, 1024, decode=False)
        add(qw, 8, 2048, decode=False)
        for preset in ("groqchip1", "lp30"):
            for chips in (1, 2, 4, 8):
                add(g2, chips, 1024, preset=preset, decode=False)
                if (preset, chips) != ("groqchip1", 8):
                    add(qw, chips, 2048, preset=preset, decode=False)
    return out


def _graph(model: str, ctx: int):
    import tinyir

    return getattr(tinyir, model[3:])(max_context=max(ctx, 640))


def run_one(cfg: dict) -> dict:
    import numpy as np

    from compiler.driver import Options, compile_graph, compile_model
    from compiler.errors import CompileError
    from lpu import config
    from lpu.decode import Decoder

    hw = config.load(cfg["preset"], chips=cfg["chips"])
    opts = Options(chips=cfg["chips"], precision=cfg["precision"], max_context=cfg["max_context"],
                   partition=cfg["partition"], stages=cfg["stages"])
    t = time.perf_counter()
    try:
        if cfg["model"].startswith("ir:"):
            prog, rep = compile_graph(_graph(cfg["model"], cfg["max_context"]), hw, opts)
        else:
            prog, rep = compile_model(cfg["model"], hw, opts)
    except CompileError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    secs = time.perf_counter() - t
    blob = prog.to_bytes()
    out = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
           "cycles": [b["cycles"] for b in prog.header["buckets"]],
           "bounds": [b.get("lower_bound_cycles") for b in prog.header["buckets"]],
           "partition": prog.header.get("partition"), "stages": prog.header.get("stages"),
           "compile_seconds": round(secs, 2)}
    if cfg["decode"]:
        res = Decoder(prog).generate([1, 2, 3], 4)
        out["tokens"] = res.tokens
        out["decode_cycles"] = res.cycles_per_token
        out["prefill_cycles"] = res.prefill_cycles
        out["logits_sha256"] = hashlib.sha256(np.ascontiguousarray(res.logits).tobytes()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", help="record the corpus into this JSON file")
    g.add_argument("--check", help="compare the corpus against this JSON record")
    ap.add_argument("--bench", action="store_true", help="include the benchmark models (build/models)")
    ap.add_argument("--only", default="", help="only configurations whose name contains this")
    args = ap.parse_args()
    cfgs = [c for c in corpus(args.bench) if args.only in c["name"]]
    if args.write:
        path = Path(args.write)
        rec = json.loads(path.read_text()) if path.exists() else {}
        for c in cfgs:
            rec[c["name"]] = {"config": c, **run_one(c)}
            print(c["name"], rec[c["name"]].get("sha256", rec[c["name"]].get("error")), flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec, indent=1, sort_keys=True))
        return 0
    rec = json.loads(Path(args.check).read_text())
    bad = 0
    keys = ("cycles", "bounds", "partition", "stages", "tokens", "decode_cycles", "prefill_cycles", "logits_sha256",
            "error")
    for c in cfgs:
        old = rec.get(c["name"])
        if old is None:
            print(f"{c['name']}: not in the record")
            continue
        new = run_one(c)
        if old.get("sha256") and old.get("sha256") == new.get("sha256"):
            verdict = "same bytes"
        elif all(old.get(k) == new.get(k) for k in keys):
            verdict = "same behaviour (bytes differ)" if old.get("sha256") else "same error"
        else:
            verdict = "DIFFERENT: " + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k))
            bad += 1
        print(f"{c['name']}: {verdict}", flush=True)
    print(f"{len(cfgs)} configurations, {bad} different")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
