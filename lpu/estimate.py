"""`lpu estimate` as a function: per context bucket, the cycles the schedule checker proves (the emulator's own
check, so a figure here is what `decode` would report for a token in that bucket), the lower bound and
tokens/s at the modelled clock. `lpu estimate --json` prints what `estimate()` returns; `lpu sweep` calls it
once per cell."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def estimate(model_path: str | os.PathLike, hw: str = "groqchip1", chips: int | None = None,
             precision: str = "fp16", context: int | None = None, max_context: int | None = None,
             partition: str = "auto", stages: int = 0, verify: bool | None = None, timing_only: bool = False,
             weights: str = "fp16", topology: str | os.PathLike | None = None, bucket_only: bool = False) -> dict:
    """The dict `lpu estimate --json` prints: lists with one value per bucket (only the bucket serving
    `context` positions when given). An ONNX model is compiled first with the `lpu compile` options given
    here (a Hugging Face config.json, or `timing_only`, compiles without weights; `topology`, a topology file,
    replaces the preset's wiring); a program (.lpu) is loaded
    and those options are not used. Bad input raises the CLI's errors (UsageError, CompileError, ConfigError,
    ...) with one line."""
    return estimate_with_header(model_path, hw, chips, precision, context, max_context, partition, stages, verify,
                                timing_only, weights, topology, bucket_only)[0]


def estimate_with_header(model_path, hw, chips, precision, context, max_context, partition, stages,
                         verify, timing_only=False, weights="fp16", topology=None,
                         bucket_only=False, on_checked=None, quiet=True) -> tuple[dict, dict]:
    """estimate() and the program's header (`lpu estimate`'s text also prints the max context and the mapping).
    `on_checked(program, emulator, buckets, cycles)`, when given, is called once every bucket is checked (the
    CLI's --trace reads the checked schedules there)."""
    from isa import Program

    from .cli import UsageError, _check_model_path, _compile, _is_program, _peak_rss_bytes

    model = Path(model_path)
    _check_model_path(model)
    if context is not None and context < 1:
        raise UsageError(f"--context {context}: must be at least 1")
    if bucket_only and context is None:
        raise UsageError("--bucket-only needs --context N: the bucket to compile")
    compile_secs = None
    if model.suffix.lower() == ".lpu" or _is_program(model):
        prog = Program.load(model)
    else:
        opts = argparse.Namespace(hw=hw, chips=chips, precision=precision, partition=partition, stages=stages,
                                  verify=verify, timing_only=timing_only, weights=weights,
                                  topology=None if topology is None else os.fspath(topology),
                                  only_context=context if bucket_only else None)
        from compiler.driver import DEFAULT_MAX_CONTEXT

        # without --max-context, a cache that holds the context asked for (if the model supports it)
        default = max(DEFAULT_MAX_CONTEXT, context) if context is not None else None
        prog, _, compile_secs, _ = _compile(model, opts, max_context, quiet, default)
    from .progress import Bar, enabled

    with Bar(enabled(quiet), "checking buckets") as bar:
        out = estimate_program(prog, context, model.name, on_checked, bar=bar)
    if compile_secs is not None:
        out["compile_seconds"] = round(compile_secs, 3)
    out["peak_rss_bytes"] = _peak_rss_bytes()  # the whole command's: compile (when it compiles) and checks
    return out, prog.header


def estimate_program(prog, context: int | None = None, name: str = "", on_checked=None, emulator=None,
                     bar=None) -> dict:
    """estimate()'s figures for a loaded program (isa.Program): every bucket, or the one serving `context`."""
    from .cli import UsageError
    from .emulator import Emulator

    h = prog.header
    buckets = list(enumerate(h["buckets"]))
    if context is not None:
        if context < 1:
            raise UsageError(f"--context {context}: must be at least 1")
        if context > h["max_context"]:
            raise UsageError(f"--context {context}: the program holds {h['max_context']} positions")
        buckets = [(b, bk) for b, bk in buckets if bk["first_position"] <= context - 1 <= bk["last_position"]]
    em = emulator if emulator is not None else Emulator(prog)
    clock = int(h["hw"]["clock_hz"])
    t = time.perf_counter()
    if bar is not None:
        bar.total(len(buckets))
    cycles = []
    for b, _ in buckets:
        cycles.append(int(em.check(b).cycles))
        if bar is not None:
            bar.advance()
    check_secs = time.perf_counter() - t
    if on_checked is not None:
        on_checked(prog, em, [b for b, _ in buckets], cycles)
    bounds = [int(bk.get("lower_bound_cycles", 0)) for _, bk in buckets]
    out = {"model": name, "chips": int(h["chips"]), "partition": h.get("partition"),
           "stages": h.get("stages", 1), "clock_hz": clock, "precision": h.get("precision"),
           "weights": h.get("weights", "fp16"),
           "context": [bk["last_position"] + 1 for _, bk in buckets], "cycles_per_token": cycles,
           "tokens_per_second": [clock / c for c in cycles], "lower_bound_cycles": bounds,
           "bound_ratio": [round(c / lb, 4) if lb else None for c, lb in zip(cycles, bounds)],
           "sram_bytes_per_chip": h.get("sram_bytes_per_chip"), "timing_only": prog.timing_only,
           "chips_used": int(h.get("chips_used", h["chips"]))}
    if h.get("buckets_partial"):
        out["bucket_only"] = True
    out["check_seconds"] = round(check_secs, 3)
    return out
