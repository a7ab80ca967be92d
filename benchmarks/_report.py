"""The emulator speed report: one rich table for the terminal, the same as markdown (build/bench/speed.md,
pasted into the README)."""
from __future__ import annotations

import sys

from _common import machine

# (header, key, format); targets in the headers
COLUMNS = [
    ("model", "model", "{}"),
    ("chips", "chips", "{}"),
    ("ctx / past", "ctx_past", "{}"),
    ("threads", "threads", "{}"),
    ("ORT ms/token", "ort_ms", "{:.1f}"),
    ("emulator ms/token", "emu_ms", "{:.1f}"),
    ("emu / ORT", "ratio", "{:.2f}x"),
    ("target", "ratio_target", "<= {:.1f}x"),
    ("cycles/token", "cycles", "{:,}"),
    ("emulated Mcycles/s", "mcycles_per_s", "{:.2f}"),
    ("peak RSS MiB", "rss_mib", "{:,.0f}"),
    ("fp16 weights + KV MiB", "wkv_mib", "{:,.0f}"),
    ("RSS / (w+KV)", "rss_ratio", "{:.2f}x (<= 3x)"),
    ("JIT cold s", "jit_cold", "{:.1f}"),
    ("JIT 2nd process s", "jit_warm", "{:.2f} (< 2 s)"),
    ("first token s", "first_token", "{:.2f}"),
]


def _cells(row: dict) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        v = row.get(key)
        out.append("-" if v is None else fmt.format(v))
    return out


def command() -> str:
    args = " ".join(a for a in sys.argv[1:] if not a.startswith("/"))
    return "make bench" if "--benchmark-enable" in args else f"pytest {args}".strip()


def speed_table(rows: dict[str, dict]):
    from rich.table import Table

    t = Table(title="Emulator speed per decoded token vs ONNX Runtime (CPUExecutionProvider), same threads",
              caption=f"{machine()}\ncommand: {command()}")
    for head, _, _ in COLUMNS:
        t.add_column(head, justify="left" if head == "model" else "right")
    for row in rows.values():
        t.add_row(*_cells(row))
    return t


def speed_markdown(rows: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|" + "|".join("---" if h == "model" else "---:" for h, _, _ in COLUMNS) + "|"]
    for row in rows.values():
        lines.append("| " + " | ".join(_cells(row)) + " |")
    notes = [
        "",
        f"Machine: {machine()}. Command: `{command()}`.",
        "",
        "Per decoded token: medians of 15 steps each, in alternating blocks of ONNX Runtime and emulator steps "
        "(same past length, same thread count, one process; ORT runs the same ONNX file). "
        "Peak RSS: a separate process that only loads the program and decodes (benchmarks/_emulate.py). "
        "fp16 weights: 2 bytes per element of the ONNX model's float initializers; KV: the model's cache at "
        "the program's context, in fp16. JIT: `lpu decode` twice with a fresh Numba cache directory "
        "(cold: compiling every kernel; 2nd process: loading them from the on-disk cache).",
    ]
    return "\n".join(lines + notes) + "\n"
