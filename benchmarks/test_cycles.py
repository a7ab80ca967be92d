"""Cycles per token, tokens per second at the modelled clock and bound ratio, for the benchmark models
on both presets, 1/2/4/8 chips and contexts 128/512/2048, with the mapping the compiler chose.

Cycles come from the compiled program's static schedule (the emulator reproduces them exactly; see
tests/e2e and `lpu decode`). Each (model, preset, chips) is compiled once with a 2048-token cache;
the context columns read the program of the bucket serving that position. The acceptance checks of
issue 3 (bound ratio <= 1.25) use programs compiled for exactly that context.

    make bench                  # or: pytest benchmarks/test_cycles.py --benchmark-enable -s
Writes build/bench/cycles.md.
"""
from __future__ import annotations

import json
import time

import pytest

from _common import BENCH_DIR, REPO, model_path, program_key

CONTEXTS = (128, 512, 2048)
MAX_POSITIONS = {"gpt2-small": 1024}  # learned position embeddings: the model cannot go further
CHIPS = (1, 2, 4, 8)
PRESETS = ("groqchip1", "lp30")
MODELS = ("gpt2-small", "qwen2.5-0.5b")
_ROWS: list[dict] = []
_CACHE = BENCH_DIR / "cycles-cache.json"


def _compile_summary(name: str, preset: str, chips: int, max_context: int, partition: str = "auto") -> dict:
    """The header facts of a compiled program (cached by model files, options and compiler sources)."""
    path = model_path(name)
    key = program_key(path, preset=preset, chips=chips, max_context=max_context, partition=partition)
    cache = json.loads(_CACHE.read_text()) if _CACHE.exists() else {}
    if key in cache:
        return cache[key]
    from compiler.driver import Options, compile_model
    from compiler.errors import CapacityError
    from lpu import config

    hw = config.load(preset, chips=chips)
    t = time.perf_counter()
    try:
        prog, rep = compile_model(path, hw, Options(chips=chips, max_context=max_context, partition=partition))
    except CapacityError as exc:
        out = {"fits": False, "why": str(exc)}
    else:
        out = {"fits": True, "buckets": prog.header["buckets"], "mapping": prog.header["partition"] + (
                   f" {prog.header['stages']}x{chips // prog.header['stages']}" if prog.header["partition"] == "hybrid" else ""),
               "estimates": prog.header.get("mapping_estimates", {}), "clock_hz": hw.clock_hz,
               "compile_seconds": round(time.perf_counter() - t, 1)}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    cache = json.loads(_CACHE.read_text()) if _CACHE.exists() else {}
    cache[key] = out
    _CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return out


def _at(summary: dict, position: int) -> dict:
    for b in summary["buckets"]:
        if b["first_position"] <= position <= b["last_position"]:
            return b
    raise AssertionError(position)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("chips", CHIPS)
def test_cycles_table(name, preset, chips):
    s = _compile_summary(name, preset, chips, min(max(CONTEXTS), MAX_POSITIONS.get(name, 1 << 30)))
    row = {"model": name, "preset": preset, "chips": chips}
    if not s["fits"]:
        row["note"] = s["why"].split(";")[0]
        _ROWS.append(row)
        pytest.skip(f"{name} on {chips} x {preset}: does not fit")
    row["mapping"] = s["mapping"]
    for ctx in CONTEXTS:
        if ctx > MAX_POSITIONS.get(name, 1 << 30):
            row[ctx] = None
            continue
        b = _at(s, ctx - 1)
        row[ctx] = (b["cycles"], s["clock_hz"] / b["cycles"], b["cycles"] / b["lower_bound_cycles"])
    _ROWS.append(row)


@pytest.mark.parametrize("ctx", [128, 1024])
def test_gpt2_small_8_chips_reaches_its_bound(ctx):
    s = _compile_summary("gpt2-small", "groqchip1", 8, ctx)
    b = _at(s, ctx - 1)
    ratio = b["cycles"] / b["lower_bound_cycles"]
    print(f"\nGPT-2 small, 8 x groqchip1, context {ctx}: {b['cycles']:,} cycles, bound {b['lower_bound_cycles']:,}, "
          f"ratio {ratio:.3f} ({s['mapping']})")
    assert 1.0 <= ratio <= 1.25, f"bound ratio {ratio:.3f} not in 1.0..1.25 at context {ctx}"


def test_qwen_0_5b_fits_8_chips_with_2048_cache():
    s = _compile_summary("qwen2.5-0.5b", "groqchip1", 8, 2048)
    assert s["fits"], s.get("why")


def test_qwen_0_5b_reaches_its_bound():
    s = _compile_summary("qwen2.5-0.5b", "groqchip1", 8, 2048)
    assert s["fits"], s.get("why")
    b = _at(s, 2047)
    ratio = b["cycles"] / b["lower_bound_cycles"]
    print(f"\nQwen2.5-0.5B config, 8 x groqchip1, context 2048: {b['cycles']:,} cycles, bound "
          f"{b['lower_bound_cycles']:,}, ratio {ratio:.3f} ({s['mapping']})")
    assert 1.0 <= ratio <= 1.25, f"bound ratio {ratio:.3f} not in 1.0..1.25"


def teardown_module(module):
    if not _ROWS:
        return
    header = ["model", "preset", "chips", "mapping"] + [f"ctx {c}: cycles / tok/s / bound ratio" for c in CONTEXTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = {m: i for i, m in enumerate(MODELS)}
    for r in sorted(_ROWS, key=lambda r: (order[r["model"]], r["preset"], r["chips"])):
        if "note" in r:
            cells = [r["model"], r["preset"], str(r["chips"]), "-"] + ["does not fit"] * len(CONTEXTS)
        else:
            cells = [r["model"], r["preset"], str(r["chips"]), r["mapping"]] + [
                f"{r[c][0]:,} / {r[c][1]:,.0f} / {r[c][2]:.2f}" if r[c] else "n/a (1024 positions)" for c in CONTEXTS]
        lines.append("| " + " | ".join(cells) + " |")
    md = ("Cycles per token, tokens/s at the modelled clock, bound ratio (cycles / lower bound); "
          "generated by `pytest benchmarks/test_cycles.py --benchmark-enable -s` (part of `make bench`).\n\n"
          + "\n".join(lines) + "\n")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "cycles.md").write_text(md)
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="cycles per token / tokens per second / bound ratio")
        for h in header:
            t.add_column(h)
        for line in lines[2:]:
            t.add_row(*[c.strip() for c in line.strip("|").split("|")])
        Console(width=200).print(t)
    except ImportError:
        print(md)
    print(f"wrote {BENCH_DIR / 'cycles.md'} ({REPO.name})")
