"""`lpu plot PROGRAM|SWEEP.csv -o DIR`: PNGs drawn with matplotlib (its Agg backend: no display needed).

From a program: cycles per token against context (every bucket, checked, with its lower bound), SRAM per chip
by use, unit utilisation per chip, and the critical path's cycles by kind and by what each step waited for
(lpu/report.py). From a sweep's CSV (`lpu sweep`): cycles per token against chip count and against context,
one line per (model, preset, weights) and per context or chip count. The files are named for what they
show; the figures are drawn from the same dicts `lpu estimate --json` and `lpu report --json` print."""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path


class PlotError(ValueError):
    """A plot that cannot be drawn as asked."""


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("lpu plot needs matplotlib: pip install 'lpu-toolchain[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str, written: list) -> None:
    out.mkdir(exist_ok=True)  # only once there is a figure to write
    path = out / name
    tmp = out / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version: same bytes each run
    os.replace(tmp, path)
    written.append(path)


def plot_program(program, emulator, out: Path, name: str = "", context: int | None = None) -> list[Path]:
    from .estimate import estimate_program
    from .report import report

    plt = _plt()
    written: list[Path] = []
    est = estimate_program(program, None, name, emulator=emulator)
    rep = report(program, emulator, context)
    title = f"{name}: {program.header['chips']} x {program.header['hw'].get('name')}, {program.header.get('partition')}"

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(est["context"], est["cycles_per_token"], "o-", label="cycles per token (checked schedule)")
    ax.plot(est["context"], est["lower_bound_cycles"], "s--", label="lower bound")
    ax.set_xlabel("context (positions the bucket serves)")
    ax.set_ylabel("cycles per token")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out, "cycles_vs_context.png", written)
    plt.close(fig)

    sram = rep["sram"]
    uses = ("weights", "kv cache", "activations", "tables", "inputs/outputs")
    fig, ax = plt.subplots(figsize=(max(6.4, len(sram) * 0.25), 4))
    chips = [s["chip"] for s in sram]
    bottom = [0.0] * len(sram)
    for u in uses:
        vals = [s[u] / 2**20 for s in sram]
        ax.bar(chips, vals, bottom=bottom, label=u)
        bottom = [b + v for b, v in zip(bottom, vals)]
    cap = sram[0]["capacity"] / 2**20 if sram else 0
    ax.axhline(cap, color="k", lw=0.8, ls=":", label=f"capacity {cap:,.0f} MiB")
    ax.set_xlabel("chip")
    ax.set_ylabel("SRAM (MiB)")
    ax.set_title(title + ": SRAM per chip", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, out, "sram_per_chip.png", written)
    plt.close(fig)

    fams = list(rep["queues_per_unit"])
    grid = [[u[f] * 100 for f in fams] for u in rep["utilisation"]]
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.3 * len(grid) + 1)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(fams)), [f"{f} x{rep['queues_per_unit'][f]}" for f in fams], fontsize=7, rotation=30)
    ax.set_ylabel("chip")
    fig.colorbar(im, ax=ax, label="busy % of the token (per queue)")
    ax.set_title(title + f": unit utilisation, context {rep['context']:,}", fontsize=9)
    _save(fig, out, "utilisation.png", written)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    kinds = list(rep["by_kind"])
    a1.barh(kinds[::-1], [rep["by_kind"][k] for k in kinds][::-1])
    a1.set_xlabel("cycles on the critical path")
    a1.set_title("by kind", fontsize=9)
    reasons = rep["critical_path"]["by_reason"]
    a2.barh(list(reasons)[::-1], list(reasons.values())[::-1], color="tab:orange")
    a2.set_xlabel("cycles")
    a2.set_title("by what each step waited for", fontsize=9)
    fig.suptitle(f"{title}: the critical path of one token ({rep['cycles_per_token']:,} cycles; bound "
                 f"{rep['lower_bound_cycles']:,})", fontsize=9)
    fig.tight_layout()
    _save(fig, out, "critical_path.png", written)
    plt.close(fig)
    return written


def read_sweep(path: Path) -> list[dict]:
    from .sweep import COLUMNS

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise PlotError(f"{path}: not a results file of `lpu sweep` (its header is not {','.join(COLUMNS)})")
    out = []
    for r in rows[1:]:
        d = dict(zip(COLUMNS, r))
        if d.get("status") != "ok":
            continue
        try:
            out.append({"model": Path(d["model"]).name, "preset": d["preset"], "weights": d["weights"],
                        "chips": int(d["chips"]), "context": int(d["context"]),
                        "cycles": int(d["cycles_per_token"]), "bound": int(d["lower_bound_cycles"] or 0)})
        except (TypeError, ValueError):
            raise PlotError(f"{path}: a row of status ok has no numbers: {','.join(r)}") from None
    if not out:
        raise PlotError(f"{path}: no row of status ok to plot")
    return out


def plot_sweep(path: Path, out: Path) -> list[Path]:
    plt = _plt()
    rows = read_sweep(path)
    written: list[Path] = []
    for x, other, fname in (("chips", "context", "cycles_vs_chips.png"), ("context", "chips", "cycles_vs_context.png")):
        lines = defaultdict(list)
        for r in rows:
            lines[(r["model"], r["preset"], r["weights"], r[other])].append((r[x], r["cycles"]))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours before one repeats
        for (m, p, w, o), pts in sorted(lines.items()):
            pts.sort()
            ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", label=f"{m} {p} {w}, {other} {o}")
        ax.set_xlabel("chips" if x == "chips" else "context")
        if x == "chips":
            ax.set_xscale("log", base=2)
        ax.set_ylabel("cycles per token")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{path.name}: cycles per token against {x}", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        _save(fig, out, fname, written)
        plt.close(fig)
    return written
