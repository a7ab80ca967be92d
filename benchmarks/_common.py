"""Helpers shared by the benchmark suites: benchmark models, cached compiled programs, machine facts.

Models come from `tools/make_models.py` (build/models/<name>/model.onnx; `make bench` runs it first).
A suite that needs a missing model skips with the command that makes it.

Programs are compiled by the benchmarks themselves and cached under build/bench/, keyed by the model
files' sizes and mtimes, the compile options and a hash of the compiler and ISA sources (so a change
to the compiler recompiles).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "build" / "models"
BENCH_DIR = REPO / "build" / "bench"

# name -> (directory under build/models, what it is)
MODELS = {
    "gpt2-small": ("gpt2-small", "GPT-2 small (124M, real config, random weights, Optimum export)"),
    "qwen2.5-0.5b": ("qwen2.5-0.5b", "Qwen2.5-0.5B configuration (494M, random weights, Optimum export)"),
}


def model_path(name: str) -> Path:
    """build/models/<name>/model.onnx, or skip the calling test (with the command that makes it)."""
    path = MODELS_DIR / MODELS[name][0] / "model.onnx"
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} is missing: run `python tools/make_models.py` (or `make bench`)")
    return path


def _model_files(path: Path) -> list[Path]:
    return [path] + sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "_data")
                           or p.suffix == ".data")


def _source_hash() -> str:
    h = hashlib.sha256()
    for top in ("compiler", "isa"):
        for f in sorted((REPO / top).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    for f in sorted((REPO / "lpu" / "presets").glob("*.toml")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def program_key(path: Path, **options) -> str:
    """Cache key of a compiled program: model files (size, mtime), options, compiler + ISA sources."""
    files = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in _model_files(path)]
    blob = json.dumps({"files": files, "options": options, "sources": _source_hash()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compiled_program(name: str, chips: int = 8, max_context: int = 128, precision: str = "fp16") -> Path:
    """Path of the .lpu program for a benchmark model, compiled (once; cached in build/bench/)."""
    path = model_path(name)
    opts = dict(chips=chips, max_context=max_context, precision=precision, hw="groqchip1")
    key = program_key(path, **opts)
    out = BENCH_DIR / f"{name}-{chips}c-ctx{max_context}-{precision}-{key}.lpu"
    if out.exists():
        return out
    from compiler.driver import Options, compile_model
    from lpu import config

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    for old in BENCH_DIR.glob(f"{name}-{chips}c-ctx{max_context}-{precision}-*.lpu"):
        old.unlink()  # stale: another model file or compiler
    t = time.perf_counter()
    prog, _ = compile_model(path, config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision=precision, max_context=max_context))
    fd, tmp = tempfile.mkstemp(dir=BENCH_DIR, suffix=".lpu.tmp")
    os.close(fd)
    try:
        prog.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"\ncompiled {name} for {chips} chips (max context {max_context}, {precision}) in "
          f"{time.perf_counter() - t:.1f} s -> {out.relative_to(REPO)}")
    return out


def onnx_float_parameters(path: Path) -> int:
    """Elements of the model's floating-point initializers (the weights ONNX Runtime loads)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    n = 0
    for t in model.graph.initializer:
        if t.data_type in floats:
            k = 1
            for d in t.dims:
                k *= int(d)
            n += k
    return n


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine() -> str:
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2 ** 20:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return f"{cpu_model()}, {cores()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def write_table(name: str, title: str, columns: list[str], rows: list[str]) -> None:
    """build/bench/NAME: a title line and a markdown table of the given columns and (already formatted) rows;
    nothing when no row was measured."""
    if not rows:
        return
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    (BENCH_DIR / name).write_text(f"{title}\n\n" + "\n".join(head + rows) + "\n")
