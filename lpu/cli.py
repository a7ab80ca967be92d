"""The `lpu` command: compile an ONNX decoder, decode on the emulated chips, disassemble a program.

    lpu compile MODEL.onnx|CONFIG.json -o OUT.lpu [--chips N] [--hw PRESET|FILE] [--max-context T]
                [--precision fp16|fp32] [--weights fp16|int8|fp8] [--partition tp|pp|hybrid|auto] [--stages K]
                [--timing-only]
    lpu decode [OUT.lpu|MODEL.onnx] --prompt 3,14,15|--text "..." --tokens N [--json] [--logits FILE.npy]
    lpu estimate OUT.lpu|MODEL.onnx [--context N] [--json] [compile options]
    lpu sweep GRID.toml -o RESULTS.csv [--address ADDR] [--workers N]
    lpu disasm OUT.lpu
    lpu --version

Any problem with the input (a malformed model, an unsupported operator, a model too big for SRAM, a
corrupt program, a wrong flag) ends with one line on stderr naming it and a non-zero exit status.
This module is the only place that joins the compiler and the emulator.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

EXIT_USAGE, EXIT_INPUT, EXIT_INTERNAL = 2, 1, 70


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def default_model() -> Path:
    return Path(str(resources.files("lpu").joinpath("data", "default.onnx")))


def _compile_opts(p: argparse.ArgumentParser, decode: bool) -> None:
    p.add_argument("--chips", type=int, default=None,
                   help="chips to use, from 1 to the system's size (default: all of the system's chips)")
    p.add_argument("--hw", default="groqchip1", help="hardware preset (groqchip1, lp30) or a .toml/.json file")
    p.add_argument("--topology", default=None, metavar="FILE",
                   help="a .toml/.json file listing the links that join the chips (replaces the preset's wiring; "
                        "see the README's 'Topology files')")
    p.add_argument("--max-context", type=int, default=None,
                   help="KV-cache positions to reserve (default: 1024 for compile, enough for the request for decode; "
                        "never more than the model supports)")
    p.add_argument("--precision", default="fp16", choices=("fp16", "fp32"),
                   help="fp16: the hardware's own (fp16 weights and matrix inputs, fp32 accumulation); fp32: for validation")
    p.add_argument("--weights", default="fp16", choices=("fp16", "int8", "fp8"),
                   help="the linears' weights: fp16 (default; in the --precision type), int8 (groqchip1) or fp8 e4m3 "
                        "(lp30): per-column scales, activations quantised per token, 8-bit MXM")
    p.add_argument("--partition", default="auto", choices=("tp", "pp", "hybrid", "auto"),
                   help="mapping over chips: tensor-parallel, pipeline, hybrid (pipeline stages of tensor-parallel "
                        "chips), or auto (the fastest by the compiler's estimate; default)")
    p.add_argument("--stages", type=int, default=0,
                   help="with --partition hybrid: the number of pipeline stages (default: the compiler's choice)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check each compiler pass's product before the next pass (default: on; $LPU_VERIFY=0 turns "
                        "the default off)")
    if not decode:
        p.add_argument("--timing-only", action="store_true",
                       help="compile without the weights (never loaded; an ONNX file's external data may be absent): "
                            "the same schedule and cycles, a program `lpu estimate` reads and `lpu decode` refuses; "
                            "implied for a Hugging Face config.json")


def _trace_opts(p: argparse.ArgumentParser, decode: bool) -> None:
    what = "the decoded tokens" if decode else "one token of the first context bucket reported"
    p.add_argument("--trace", default=None, metavar="FILE",
                   help=f"write an instruction-level trace of {what} (Trace Event Format JSON: open it in Perfetto or "
                        "chrome://tracing)")
    if decode:
        p.add_argument("--trace-tokens", default=None, metavar="A:B",
                       help="trace generated tokens A..B-1 only (numbered from 0; A: or A also work)")
    p.add_argument("--trace-chips", default=None, metavar="LIST", help="trace these chips only, e.g. 0,3,8:16")
    p.add_argument("--trace-layers", default=None, metavar="LIST",
                   help="trace only instructions on these layers' tensors, e.g. 0 or 2:4")
    p.add_argument("--trace-cycles", default=None, metavar="A:B",
                   help="trace the cycle window A..B-1 of the trace's time line (token 0 starts at cycle 0)")
    p.add_argument("--trace-limit", type=float, default=200.0, metavar="MB",
                   help="refuse to write a trace bigger than this (default 200 MB, which Perfetto opens comfortably)")


def build_parser() -> argparse.ArgumentParser:
    from lpu import __version__

    ap = _Parser(prog="lpu", description="Compile ONNX decoders for LPU chips and emulate decoding, cycle by cycle.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("compile", help="compile an ONNX decoder into a program file")
    c.add_argument("model", help="ONNX decoder (Optimum text-generation-with-past, dynamo export, ...), or a Hugging "
                                 "Face config.json (a timing-only compile)")
    c.add_argument("-o", "--output", required=True, help="program file to write (.lpu)")
    _compile_opts(c, decode=False)
    c.add_argument("--json", action="store_true", help="print a JSON summary")
    d = sub.add_parser("decode", help="decode greedily on the emulated chips (compiles an ONNX model first)")
    d.add_argument("model", nargs="?", default=None, help="program (.lpu) or ONNX model; default: the bundled model")
    d.add_argument("--prompt", default=None, help="comma-separated token ids (default 1,2,3)")
    d.add_argument("--text", default=None, help="the prompt as text, for a model that ships a tokenizer (a tokenizer.json "
                                                "beside the ONNX file, carried into its program); instead of --prompt")
    d.add_argument("--tokens", type=int, default=16, help="tokens to generate (default 16)")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--logits", default=None, help="save the logits of each generated token as float32 [N, vocab] .npy")
    _compile_opts(d, decode=True)
    _trace_opts(d, decode=True)
    k = sub.add_parser("check", help="what an ONNX model is and whether it is supported, or the size of a Hugging "
                                     "Face config.json and the chips it needs (no compile)")
    k.add_argument("model", help="ONNX decoder, or a Hugging Face config.json")
    k.add_argument("--context", type=int, default=None,
                   help="config.json: KV-cache positions to size for (default: the model's, at most 4096)")
    k.add_argument("--hw", action="append", default=None,
                   help="hardware preset or file to size the model for (repeatable; default: every preset)")
    k.add_argument("--json", action="store_true", help="print one JSON object")
    e = sub.add_parser("estimate", help="cycles per token of a program or ONNX model at each context bucket, every "
                                        "bucket's schedule checked (no decode)")
    e.add_argument("model", help="program (.lpu), ONNX model or Hugging Face config.json (compiled first; a "
                                 "config.json timing-only)")
    e.add_argument("--context", type=int, default=None,
                   help="report only the bucket serving this many positions (default: every bucket)")
    e.add_argument("--bucket-only", action="store_true",
                   help="with --context, on a model or config: lower and schedule only that bucket (and the last, "
                        "which sizes SRAM), for models too big to compile every bucket; the figures are those of a "
                        "program for that context alone (SRAM placed for its buckets only), not of the whole program")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _compile_opts(e, decode=False)
    _trace_opts(e, decode=False)
    r = sub.add_parser("report", help="where the cycles of one token go: by layer and kind, the critical path, "
                                      "unit utilisation, SRAM per chip, link bytes, the lower bound's terms")
    r.add_argument("model", help="program (.lpu), ONNX model or Hugging Face config.json (compiled first, with the "
                                 "compile options below)")
    r.add_argument("--context", type=int, default=None,
                   help="report the bucket serving this many positions (default: the program's last bucket)")
    r.add_argument("--steps", type=int, default=12, help="critical-path steps to print, the longest (default 12)")
    r.add_argument("--json", action="store_true", help="print one JSON object (every step, chip and bank)")
    _compile_opts(r, decode=False)
    w = sub.add_parser("sweep", help="estimate every cell of a grid (models x presets x chips x weights x contexts) "
                                     "as Ray tasks, one CSV row per cell")
    w.add_argument("grid", help="grid file (.toml) with the lists models, presets, chips, weights, contexts")
    w.add_argument("-o", "--output", required=True, help="CSV to append to; cells already ok in it are skipped")
    w.add_argument("--address", default=None, help="Ray cluster to run on (default: a local Ray for this run)")
    w.add_argument("--workers", type=int, default=None, help="cells run at once (default: the CPU count)")
    s = sub.add_parser("disasm", help="the program as text (the assembler's form), or with --bucket/--chip/--queue/"
                                      "--cycles a timed listing of those streams")
    s.add_argument("program", help="program file (.lpu)")
    s.add_argument("--bucket", default=None, metavar="LIST", help="context buckets to list, e.g. 0 or 0,2")
    s.add_argument("--chip", default=None, metavar="LIST", help="chips to list, e.g. 0 or 0,3,8:16")
    s.add_argument("--queue", default=None, metavar="NAMES", help="queues to list, e.g. vxm0,mxm1a or a family: mxm, c2c")
    s.add_argument("--cycles", default=None, metavar="A:B", help="instructions busy in cycles A..B-1 of the token")
    g = sub.add_parser("plot", help="PNGs (matplotlib) of a program (cycles against context, SRAM per chip, unit "
                                    "utilisation, the critical path) or of a sweep's CSV (cycles against chips and context)")
    g.add_argument("input", help="program (.lpu), ONNX model or config.json (compiled first), or a CSV of `lpu sweep`")
    g.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the PNGs to (made if absent)")
    g.add_argument("--context", type=int, default=None, help="the bucket the utilisation and critical path are of")
    _compile_opts(g, decode=False)
    n = sub.add_parser("info", help="what a program file is: model, hardware, chips, topology, mapping, weights, "
                                    "buckets, sizes, how it was compiled")
    n.add_argument("program", help="program file (.lpu)")
    n.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def _parse_prompt(text: str) -> list[int]:
    try:
        toks = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise UsageError(f"--prompt {text!r}: expected comma-separated integers, e.g. --prompt 3,14,15") from None
    if not toks:
        raise UsageError("--prompt is empty: give at least one token id, e.g. --prompt 1,2,3")
    if any(t < 0 for t in toks):
        raise UsageError(f"--prompt {text!r}: token ids are non-negative")
    return toks


def _prompt_of_text(tok, text: str) -> list[int]:
    ids = tok.encode(text)
    if not ids:
        raise UsageError(f"--text {text!r} encodes to no tokens")
    return ids


def _load_hw(args):
    from lpu import config

    return config.load(args.hw, chips=args.chips, topology=getattr(args, "topology", None))


def _is_config(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _compile(model: Path, args, max_context: int | None, quiet: bool, default_context: int | None = None):
    from compiler.driver import DEFAULT_MAX_CONTEXT, Options, compile_config, compile_model

    hw = _load_hw(args)
    config = _is_config(model)
    opts = Options(chips=hw.system.chips, precision=args.precision, weights=getattr(args, "weights", "fp16"),
                   max_context=max_context, partition=args.partition,
                   stages=args.stages, verify=args.verify, default_context=default_context or DEFAULT_MAX_CONTEXT,
                   timing_only=config or bool(getattr(args, "timing_only", False)),
                   only_context=getattr(args, "only_context", None))
    t0 = time.perf_counter()
    from .progress import Bar, enabled

    with Bar(enabled(quiet), f"compiling {model.name}") as bar:
        prog, rep = (compile_config if config else compile_model)(model, hw, opts, progress=bar.stage)
    from lpu import __version__

    prog.header["compiled_by"] = f"lpu {__version__}"
    _attach_tokenizer(prog, model)
    return prog, rep, time.perf_counter() - t0, hw


def _attach_tokenizer(prog, model: Path) -> None:
    """A model that ships a tokenizer.json gives it to its program (lpu/text.py)."""
    from . import text

    path = None if _is_config(model) else text.tokenizer_file(model)
    if path is not None:
        raw = text.read_tokenizer_json(path)
        text.check_fits(text.Tokenizer(raw, path.name), int(prog.header.get("vocab_size", 0)), path.name)
        prog.header[text.HEADER_KEY] = raw


def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give an .onnx or .lpu file")


def _peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def cmd_compile(args) -> int:
    model = Path(args.model)
    _check_model_path(model)
    prog, rep, secs, hw = _compile(model, args, args.max_context, args.json)
    args.max_context = prog.header["max_context"]  # without the flag: what the model supports, at most 1024
    deq = _dequantised_note(prog, args.precision)
    prog.save(args.output)
    size = Path(args.output).stat().st_size
    summary = {"timing_only": prog.timing_only, "output": args.output, "bytes": size, "chips": hw.system.chips, "hw": hw.name, "precision": args.precision,
               "weights": prog.header.get("weights", "fp16"),
               "max_context": args.max_context, "buckets": len(prog.header["buckets"]),
               "cycles_per_bucket": rep.cycles, "lower_bound_cycles": rep.bounds,
               "bound_ratio": [round(c / b, 4) for c, b in zip(rep.cycles, rep.bounds)],
               "instructions": rep.instructions, "compile_seconds": round(secs, 3),
               "sram_bytes_per_chip": {str(k): v for k, v in sorted(rep.sram_bytes.items())},
               "partition": prog.header.get("partition"), "stages": prog.header.get("stages", 1),
               "mapping_estimates": {k: v for k, v in rep.mappings.items() if v is not None},
               "dequantised": prog.header.get("model", {}).get("dequantised", ""),
               "pass_seconds": {k: round(v, 3) for k, v in rep.seconds.items()},
               "stages_scheduled": rep.stages_scheduled, "stages_reused": rep.stages_reused,
               "peak_rss_bytes": _peak_rss_bytes()}
    if args.json:
        print(json.dumps(summary))
    else:
        if deq:
            print(deq)
        w8 = prog.header.get("weights", "fp16")
        print(f"compiled {model.name} for {hw.system.chips} x {hw.name} ({args.precision}"
              f"{', ' + w8 + ' weights' if w8 != 'fp16' else ''}, max context {args.max_context}"
              f"{', timing-only: no weights' if prog.timing_only else ''}) in {secs:.2f} s -> {args.output} "
              f"({size / 2**20:.1f} MiB)")
        print(f"  {rep.instructions:,} instructions in {len(rep.cycles)} context bucket(s); "
              f"cycles per token by bucket: {', '.join(f'{c:,}' for c in rep.cycles)}")
        print(f"  lower bound by bucket: {', '.join(f'{b:,}' for b in rep.bounds)}; bound ratio "
              f"{', '.join(f'{c / b:.3f}' for c, b in zip(rep.cycles, rep.bounds))}")
        est = {k: v for k, v in rep.mappings.items() if v is not None}
        if est:
            print(f"  mapping: {_mapping_text(prog.header)} (estimated cycles: "
                  f"{', '.join(f'{k} {v:,}' for k, v in sorted(est.items(), key=lambda kv: (kv[1], kv[0])))})")
        if any(rep.stages_scheduled):
            print(f"  schedule: {sum(rep.stages_reused):,} of {sum(rep.stages_scheduled):,} pipeline stages (all "
                  f"buckets) took an earlier identical stage's schedule")
        top = max(rep.sram_bytes.values()) if rep.sram_bytes else 0
        print(f"  SRAM: up to {top / 2**20:.1f} MiB of {hw.sram_bytes_per_chip / 2**20:.0f} MiB per chip")
    return 0


def cmd_check(args) -> int:
    from compiler.check import check_model
    from lpu import config

    model = Path(args.model)
    _check_model_path(model)
    hws = [config.load(h) for h in (args.hw or config.PRESETS)]
    if model.suffix == ".json":
        return _check_config(model, hws, args)
    if args.context is not None:
        raise UsageError("--context sizes a config.json; for an ONNX model the context is --max-context of compile")
    rep = check_model(model, hws)
    if args.json:
        print(json.dumps(rep))
    else:
        _print_check(rep)
    if not rep["supported"]:
        print(f"lpu: error: {rep['error']}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def cmd_estimate(args) -> int:
    """Per context bucket: the cycles the schedule checker proves, the lower bound, tokens/s (lpu/estimate.py)."""
    from .estimate import estimate_with_header

    traced = {}
    if args.trace is not None:
        from . import trace as T

        _trace_limit(args)
        T.check_path(args.trace)

    def trace(prog, em, buckets, cycles):
        from . import trace as T

        if args.trace is not None:
            sel = T.selection(prog, args.trace_chips, args.trace_cycles, args.trace_layers)
            traced.update(T.trace_tokens(prog, em, buckets[:1], cycles[:1], args.trace, sel,
                                         limit_bytes=_trace_limit(args), labels=[f"token (bucket {buckets[0]})"]))

    out, h = estimate_with_header(args.model, args.hw, args.chips, args.precision, args.context, args.max_context,
                                  args.partition, args.stages, args.verify, args.timing_only, args.weights,
                                  args.topology, args.bucket_only, on_checked=trace, quiet=args.json)
    if traced:
        out["trace"] = traced
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"model    {out['model']}: {out['chips']} chip(s), {out['precision']}, max context {h['max_context']}, "
          f"{_mapping_text(h)}" + (" (timing-only: no weights)" if out["timing_only"] else ""))
    clock = out["clock_hz"]
    for ctx, cyc, tps, lb, br in zip(out["context"], out["cycles_per_token"], out["tokens_per_second"],
                                     out["lower_bound_cycles"], out["bound_ratio"]):
        print(f"context  {ctx:>7,}: {cyc:,} cycles/token = {tps:,.0f} tokens/s at {clock / 1e6:,.0f} MHz; "
              f"lower bound {lb:,}" + (f", ratio {br:.3f}" if br else ""))
    if out["sram_bytes_per_chip"]:
        print(f"sram     up to {max(out['sram_bytes_per_chip']) / 2**20:.1f} MiB per chip")
    if traced:
        _print_trace(traced)
    if out.get("bucket_only"):
        print("note     --bucket-only: a program for this context alone; the whole program's bucket (SRAM placed "
              "for every bucket) may take a few percent more cycles")
    return 0


def _trace_limit(args) -> int:
    if not args.trace_limit > 0:
        raise UsageError(f"--trace-limit {args.trace_limit}: give a size in MB above 0")
    return int(args.trace_limit * 2**20)


def _print_trace(t: dict) -> None:
    print(f"trace    {t['path']}: {t['tokens']} token(s), {t['slices']:,} slices, {t['flows']:,} SEND->RECV arrows, "
          f"{t['bytes'] / 2**20:.1f} MB (open in https://ui.perfetto.dev or chrome://tracing)")


def cmd_report(args) -> int:
    from isa import Program

    from .emulator import Emulator
    from .report import render, report

    model = Path(args.model)
    _check_model_path(model)
    if args.steps < 0:
        raise UsageError(f"--steps {args.steps}: give 0 or more")
    if model.suffix.lower() == ".lpu" or _is_program(model):
        prog = Program.load(model)
    else:
        from compiler.driver import DEFAULT_MAX_CONTEXT

        default = max(DEFAULT_MAX_CONTEXT, args.context) if args.context is not None else None
        prog, _, _, _ = _compile(model, args, args.max_context, args.json, default)
    from .progress import Bar, enabled

    with Bar(enabled(args.json), "following the critical path") as bar:
        bar.stage("checking the schedule")
        out = report(prog, Emulator(prog), args.context)
    if args.json:
        print(json.dumps(out))
        return 0
    render(out, steps=args.steps)
    return 0


def cmd_sweep(args) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("lpu sweep needs Ray: pip install 'lpu-toolchain[sweep]'", file=sys.stderr)
        return EXIT_INPUT
    from .sweep import sweep

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    try:
        summary = sweep(args.grid, args.output, args.address, args.workers)
    except KeyboardInterrupt:
        print(f"lpu: interrupted; {args.output} holds every cell finished so far, and the same command resumes",
              file=sys.stderr)
        return 130
    print(f"{summary} -> {args.output}")
    return 0


def _check_config(path: Path, hws, args) -> int:
    from compiler.sizing import size_config

    if args.context is not None and args.context < 1:
        raise UsageError(f"--context {args.context}: must be at least 1")
    rep = size_config(path, hws, args.context)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(f"config     {rep['config']}: {rep['family']}, {rep['layers']} layers, hidden {rep['hidden']:,}, "
          f"{rep['heads']} heads ({rep['kv_heads']} KV) of {rep['head_dim']}, vocabulary {rep['vocab']:,}"
          + (", tied embeddings" if rep["tied"] else ""))
    wb = rep["weight_bytes"]
    print(f"weights    {rep['params']:,} parameters; stored {wb['fp16'] / 2**30:.2f} GiB at fp16, {wb['int8'] / 2**30:.2f} GiB "
          "with 8-bit linears (embeddings stay fp16" + ("; the tied LM head is a copy of its own" if rep["tied"] else "")
          + ")")
    print(f"kv cache   {rep['kv_cache_bytes'] / 2**30:.3f} GiB at {rep['context']:,} positions (fp16)")
    for name, f in rep["fits"].items():
        cells = ", ".join(f">= {n:,} chip(s) at {fmt}" for fmt, n in f["chips_at_least"].items())
        beyond = max(f["chips_at_least"].values()) > f["max_chips"]
        print(f"fits       {name}: {cells} (weights + KV cache; {f['sram_bytes_per_chip'] / 2**20:.0f} MiB SRAM per chip"
              + (f"; the {name} system joins at most {f['max_chips']:,} chips" if beyond else "") + ")")
    print("note       a lower bound from bytes alone; `lpu estimate CONFIG.json --chips N [--weights int8|fp8]` "
          "compiles it timing-only")
    return 0


def _print_check(rep: dict) -> None:
    ops = rep["operators"]
    bad = sum(1 for o in ops if not o["supported"])
    head = f"{rep['model']}: {rep.get('family') or 'decoder'}; {rep['form']}; opset {rep['opset']}"
    print(f"model      {head}")
    print(f"operators  {len(ops)} kinds in {rep['nodes']:,} nodes, "
          + (f"{bad} unsupported" if bad else "all supported"))
    for o in ops:
        dom = "" if o["domain"] == "ai.onnx" else f" ({o['domain']})"
        print(f"  {'  ' if o['supported'] else '! '}{o['op']}{dom} x{o['count']}")
    for u in rep["unsupported"]:
        dom = "" if u["domain"] == "ai.onnx" else f" ({u['domain']})"
        shown = ", ".join(u["nodes"][:5]) + (", ..." if len(u["nodes"]) > 5 else "")
        print(f"unsupported {u['op']}{dom} x{u['count']}: {shown}")
    if not rep["supported"]:
        return
    sh = rep["shape"]
    print(f"shape      {sh['num_layers']} layers, hidden {sh['hidden_size']}, {sh['heads']} heads "
          f"({sh['kv_heads']} KV) of {sh['head_dim']}, vocabulary {sh['vocab_size']:,}")
    print(f"fused      " + (", ".join(f"{k} x{v}" for k, v in rep["fused"].items()) or "none"))
    if rep.get("experts"):
        ex = rep["experts"]
        print(f"experts    {ex['layers']} mixture-of-experts layer(s): top-{ex['k']} of {ex['experts']} experts per token "
              "(only the chosen experts' weights are read)")
    wb = rep["weight_bytes"]
    print(f"weights    {rep['weights']:,} elements, position tables included ({wb['fp16'] / 2**20:.1f} MiB at fp16, "
          f"{wb['fp32'] / 2**20:.1f} MiB at fp32)")
    lim = rep["position_limit"]
    print(f"context    default --max-context {rep['default_max_context']:,}"
          + (f" (the model's limit: {rep.get('position_limit_reason', 'a table it reads by position ends there')})"
             if lim else ""))
    for name, f in rep["fits"].items():
        cells = ", ".join(f">= {n} chip(s) at {fmt}" if n else f"more than {f['max_chips']} chips at {fmt}"
                          for fmt, n in f["chips_at_least"].items())
        print(f"fits       {name}: {cells} (weights + KV cache; {f['sram_bytes_per_chip'] / 2**20:.0f} MiB SRAM "
              "per chip)")


def _dequantised_note(prog, precision: str) -> str:
    """One line when quantised weights were turned into the program's float precision at compile time."""
    what = prog.header.get("model", {}).get("dequantised", "")
    if not what:
        return ""
    return (f"note: quantised weights ({what}) dequantised to {precision} at compile time "
            "(no int8 weight path yet)")


def _save_npy_atomic(path: str, arr) -> None:
    import numpy as np

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_decode(args) -> int:
    from isa import Program

    from .decode import DecodeError, Decoder

    if args.text is not None and args.prompt is not None:
        raise UsageError("--text and --prompt both give the prompt: use one")
    if args.text is not None and not args.text:
        raise UsageError("--text is empty: give the prompt's text, e.g. --text \"Return the number of\"")
    prompt = _parse_prompt(args.prompt or "1,2,3") if args.text is None else None
    if args.tokens < 1:
        raise UsageError(f"--tokens {args.tokens}: generate at least 1 token")
    model = Path(args.model) if args.model else default_model()
    _check_model_path(model)
    compile_secs = None
    if model.suffix.lower() == ".lpu" or _is_program(model):
        prog = Program.load(model)
        if prog.timing_only:
            raise DecodeError(f"{model.name} is a timing-only program (no weights): use `lpu estimate`, or compile "
                              "without --timing-only")
        if args.max_context is not None and args.max_context > prog.header.get("max_context", 0):
            raise UsageError(f"--max-context {args.max_context}: {model.name} was compiled for "
                             f"{prog.header.get('max_context')}; recompile to change it")
    else:
        from compiler.driver import context_for

        if _is_config(model):
            raise UsageError(f"{model.name}: a config.json has no weights to decode with; `lpu estimate` gives its "
                             "cycles per token")
        if prompt is None:  # the tokenizer is beside the model: encode before compiling, to size the context
            from . import text as _text

            where = _text.tokenizer_file(model)
            if where is None:
                raise UsageError(f"--text: {model.name} ships no tokenizer (a {model.stem}.tokenizer.json or "
                                 "tokenizer.json beside it); give token ids with --prompt")
            prompt = _prompt_of_text(_text.Tokenizer(_text.read_tokenizer_json(where), where.name), args.text)
        need = len(prompt) + args.tokens
        prog, _, compile_secs, _ = _compile(model, args, args.max_context, args.json, default_context=context_for(need))
        deq = _dequantised_note(prog, prog.header.get("precision"))
        if deq and not args.json:
            print(deq)
        if args.max_context is None and prog.header["max_context"] < need:
            raise UsageError(f"{len(prompt)} prompt tokens + {args.tokens} new tokens need {need} positions; "
                             f"{model.name} supports at most {prog.header['max_context']}")
    from . import text as _text

    tok = _text.of_program(prog.header)
    if prompt is None:
        if tok is None:
            raise UsageError(f"--text: {model.name} carries no tokenizer (compile a model that ships a tokenizer.json); "
                             "give token ids with --prompt")
        prompt = _prompt_of_text(tok, args.text)
    if args.trace is not None:  # bad selections fail before the decode
        from . import trace as T

        sel = T.selection(prog, args.trace_chips, args.trace_cycles, args.trace_layers)
        tok_range = None if args.trace_tokens is None else T.parse_range(args.trace_tokens, "--trace-tokens")
        _trace_limit(args)
        T.check_path(args.trace)
        if tok_range is not None and tok_range[0] >= args.tokens:
            raise UsageError(f"--trace-tokens {args.trace_tokens}: only {args.tokens} token(s) are generated, "
                             "numbered from 0")
    elif any(v is not None for v in (args.trace_tokens, args.trace_chips, args.trace_cycles, args.trace_layers)):
        raise UsageError("--trace-tokens, --trace-chips, --trace-layers and --trace-cycles select what --trace FILE "
                         "writes: give --trace FILE")
    dec = Decoder(prog)
    from .progress import Bar, enabled

    with Bar(enabled(args.json), "decoding") as bar:
        bar.total(len(prompt) + args.tokens)
        res = dec.generate(prompt, args.tokens, on_step=bar.advance)
    traced = None
    if args.trace is not None:
        buckets = [dec.bucket_of(p) for p in res.positions[: len(res.cycles_per_token)]]
        traced = T.trace_tokens(prog, dec.em, buckets, res.cycles_per_token, args.trace, sel, tok_range,
                                limit_bytes=_trace_limit(args), labels=[f"token {i} (position {p})" for i, p in enumerate(res.positions)])
    texts = (tok.decode(prompt), tok.decode(res.tokens)) if tok is not None else None
    if args.logits:
        _save_npy_atomic(args.logits, res.logits)
    if args.json:
        out = res.to_json()
        out.update(model=model.name, prompt=prompt, precision=prog.header.get("precision"),
                   weights=prog.header.get("weights", "fp16"),
                   dequantised=prog.header.get("model", {}).get("dequantised", ""),
                   max_context=prog.header.get("max_context"), partition=prog.header.get("partition"),
                   stages=prog.header.get("stages", 1))
        if texts is not None:
            out.update(prompt_text=texts[0], text=texts[1])
        if compile_secs is not None:
            out["compile_seconds"] = round(compile_secs, 3)
        if traced:
            out["trace"] = traced
        print(json.dumps(out))
        return 0
    mean = sum(res.cycles_per_token) / len(res.cycles_per_token)
    print(f"model    {model.name}: {res.chips} chip(s), {prog.header.get('precision')}, "
          f"max context {prog.header.get('max_context')}, {_mapping_text(prog.header)}"
          + (f" (compiled in {compile_secs:.2f} s)" if compile_secs is not None else ""))
    print(f"prompt   {','.join(map(str, prompt))}  prefill {res.prefill_cycles:,} cycles")
    print(f"tokens   {','.join(map(str, res.tokens))}")
    if texts is not None:  # quoted as JSON strings: newlines and other control characters stay on the line
        print(f"text     {json.dumps(texts[0], ensure_ascii=False)} -> {json.dumps(texts[1], ensure_ascii=False)}")
    print(f"cycles   per token: {', '.join(f'{c:,}' for c in res.cycles_per_token)}")
    print(f"         mean {mean:,.0f} cycles = {mean / res.clock_hz * 1e6:.2f} us at {res.clock_hz / 1e6:.0f} MHz "
          f"-> {res.tokens_per_second:,.0f} tokens/s")
    if res.lower_bound_cycles and res.lower_bound_cycles[-1]:
        print(f"bound    lower bound {res.lower_bound_cycles[-1]:,} cycles; bound ratio {res.bound_ratio[-1]:.3f}")
    print(f"emulator {res.emulator_seconds:.2f} s wall ({res.warmup_seconds:.2f} s JIT warm-up)")
    if traced:
        _print_trace(traced)
    return 0


_MAPPING = {"tp": "tensor-parallel", "pp": "pipeline"}


def _mapping_text(header: dict) -> str:
    part = header.get("partition")
    used = header.get("chips_used")
    idle = f" ({used} of {header.get('chips')} chips used: more chips than places to cut)" if used else ""
    if part == "hybrid":
        k = int(header.get("stages", 1))
        return f"hybrid: {k} pipeline stages x {(used or header.get('chips', k)) // k} tensor-parallel chips" + idle
    return _MAPPING.get(part, "tensor-parallel") + idle


def _is_program(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"LPUPROG\0"
    except OSError:
        return False


def _listing_filters(prog, args):
    from .trace import TraceError, parse_list, parse_range

    h = prog.header
    try:
        buckets = None if args.bucket is None else parse_list(args.bucket, "--bucket", len(h["buckets"]))
        chips = None if args.chip is None else parse_list(args.chip, "--chip", int(h["chips"]))
        cycles = None if args.cycles is None else parse_range(args.cycles, "--cycles")
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    queues = None
    if args.queue is not None:
        names = [q.strip() for q in args.queue.split(",") if q.strip()]
        queues = set()
        for q in names:
            hit = [x for x in h["queues"] if x == q or (x.rstrip("0123456789atrw").rstrip("0123456789") == q)]
            if not hit:
                raise UsageError(f"--queue {q}: this program's queues are {', '.join(h['queues'][:8])}, ... "
                                 "(or a family: icu, mem, vxm, sxm, mxm, c2c)")
            queues.update(hit)
    return buckets, chips, queues, cycles


def cmd_disasm(args) -> int:
    from isa import Program, disassemble
    from isa.asm import listing

    path = Path(args.program)
    _check_model_path(path)
    prog = Program.load(path)
    filtered = any(v is not None for v in (args.bucket, args.chip, args.queue, args.cycles))
    if filtered:
        text = "\n".join(listing(prog, *_listing_filters(prog, args))) + "\n"
    else:
        text = disassemble(prog)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `lpu disasm x.lpu | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def cmd_plot(args) -> int:
    from . import plot as P

    src = Path(args.input)
    _check_model_path(src)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: is a file; give a directory for the PNGs")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: the directory {out.parent} does not exist")
    P._plt()  # matplotlib present, before any work
    if src.suffix.lower() == ".csv":
        files = P.plot_sweep(src, out)
    else:
        from isa import Program

        from .emulator import Emulator

        if src.suffix.lower() == ".lpu" or _is_program(src):
            prog = Program.load(src)
        else:
            prog, _, _, _ = _compile(src, args, args.max_context, False)
        files = P.plot_program(prog, Emulator(prog), out, src.name, args.context)
    for f in files:
        print(f)
    return 0


def cmd_info(args) -> int:
    from isa import Program

    from .info import info, render

    path = Path(args.program)
    _check_model_path(path)
    d = info(Program.load(path), path)
    print(json.dumps(d) if args.json else render(d), end="\n" if args.json else "")
    return 0


def _known_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input: their message is the one line to print."""
    from isa import IsaError, ProgramError

    known = [UsageError, IsaError, ProgramError]
    try:
        from compiler.errors import CompileError
        from lpu.config import ConfigError

        from .decode import DecodeError
        from .emulator import EmulationError
        from .text import TextError
        from .plot import PlotError
        from .report import ReportError
        from .trace import TraceError
        known += [CompileError, ConfigError, DecodeError, EmulationError, TextError, TraceError, ReportError,
                  PlotError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(known)


def main(argv=None) -> int:
    known = _known_errors()
    try:
        args = build_parser().parse_args(argv)
        return {"compile": cmd_compile, "decode": cmd_decode, "check": cmd_check, "estimate": cmd_estimate,
                "sweep": cmd_sweep, "disasm": cmd_disasm,
                "report": cmd_report, "info": cmd_info, "plot": cmd_plot}[args.cmd](args)
    except known as exc:
        print(f"lpu: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_INPUT
    except BrokenPipeError:  # the reader went away (`lpu ... | head`): stop quietly, as cat and grep do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        print("lpu: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("lpu: error: out of memory (try fewer tokens, a shorter --max-context or a smaller model)", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        print(f"lpu: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # never a traceback unless asked for
        if os.environ.get("LPU_DEBUG"):
            raise
        print(f"lpu: internal error: {type(exc).__name__}: {_one_line(exc)} (set LPU_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    # `python -m lpu.cli`: run the imported lpu.cli, whose UsageError is the one lpu/estimate.py and lpu/sweep.py
    # raise (this __main__ module's is another class)
    from lpu.cli import main as _main

    sys.exit(_main())
