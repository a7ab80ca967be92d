"""`lpu sweep GRID.toml -o results.csv`: `lpu estimate` for every cell of a grid (models x presets x chips x
weight formats x contexts), each cell a Ray task, each finished cell appended to a CSV at once.

The CSV holds one row per cell; its row order is the order the cells finished in (not deterministic: compare
rows by their key, the first five columns). A run with the same -o skips the cells whose row says ok and
retries the others: their error rows are dropped from the file (rewritten whole, atomically) before the new
rows are appended, so a cell never has two rows. Rows of cells that are not in the grid stay as they are.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import socket
import sys
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice, product
from pathlib import Path

from .cli import UsageError, _is_program

KEY = ("model", "preset", "chips", "weights", "context")
COLUMNS = KEY + ("status", "cycles_per_token", "tokens_per_second", "lower_bound_cycles", "bound_ratio", "partition",
                 "stages", "clock_hz", "sram_bytes_per_chip", "compile_seconds", "error")
# The grid's lists, in the order the cells run through them; what each list holds, for the error messages.
AXES = {"models": (str, "ONNX or config.json paths"), "presets": (str, "hardware preset names or files"),
        "chips": (int, "positive integers"), "weights": (str, "weight formats (fp16, fp32, int8, fp8)"),
        "contexts": (int, "positive integers")}
OPTIONAL = {"partition": "auto"}


@dataclass(frozen=True)
class Cell:
    model: str  # as the grid writes it (the CSV's key) ...
    model_path: str  # ... and resolved against the grid's directory
    preset: str
    hw: str  # a preset name or a resolved file
    chips: int
    weights: str
    context: int
    partition: str

    @property
    def key(self) -> tuple[str, ...]:
        return self.model, self.preset, str(self.chips), self.weights, str(self.context)


def load_grid(path: str | os.PathLike) -> list[Cell]:
    """The grid file's cells in order, or UsageError naming the first problem."""
    from compiler.driver import PARTITIONS

    from .config import PRESETS

    path = Path(path)
    try:
        grid = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such grid file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not TOML: {exc}") from None
    valid = ", ".join([*AXES, *OPTIONAL])
    for k in grid:
        if k not in AXES and k not in OPTIONAL:
            raise UsageError(f"{path}: unknown key {k!r}; valid keys: {valid}")
    for k, (kind, what) in AXES.items():
        if k not in grid:
            raise UsageError(f"{path}: missing key {k!r}: a list of {what}")
        vals = grid[k]
        if (not isinstance(vals, list) or not vals
                or not all(isinstance(v, kind) and not isinstance(v, bool) for v in vals)
                or kind is int and min(vals) < 1):
            raise UsageError(f"{path}: {k} must be a non-empty list of {what}, not {vals!r}")
        dup = next((v for i, v in enumerate(vals) if v in vals[:i]), None)
        if dup is not None:
            raise UsageError(f"{path}: {k} lists {dup!r} twice")
    partition = grid.get("partition", OPTIONAL["partition"])
    if partition not in PARTITIONS:
        raise UsageError(f"{path}: partition must be one of {', '.join(PARTITIONS)}, not {partition!r}")
    here = path.resolve().parent
    models = {m: here / m for m in grid["models"]}
    for m, p in models.items():
        if not p.is_file():
            raise UsageError(f"{path}: models: {m}: no such file ({p})")
        if p.suffix.lower() == ".lpu" or _is_program(p):
            raise UsageError(f"{path}: models: {m} is a compiled program; a grid takes ONNX models, compiled per cell")
    presets = {h: h if h in PRESETS else str(here / h) for h in grid["presets"]}
    for h, spec in presets.items():
        if h not in PRESETS and not Path(spec).is_file():
            raise UsageError(f"{path}: presets: {h!r} is not a preset ({', '.join(PRESETS)}) and not a file")
    return [Cell(m, str(models[m]), h, presets[h], c, w, t, partition)
            for m, h, c, w, t in product(*(grid[k] for k in AXES))]


def run_cell(cell: Cell) -> dict:
    """One cell's CSV row: `lpu estimate --context C` of the model compiled with max context C (a Ray task)."""
    from .estimate import estimate

    row = dict(zip(KEY, cell.key))
    try:
        # fp16 and fp32: the compute precision (weights in that type); int8, fp8: the MXM's 8-bit weights
        precision = "fp32" if cell.weights == "fp32" else "fp16"
        weights = "fp16" if cell.weights in ("fp16", "fp32") else cell.weights
        est = estimate(cell.model_path, hw=cell.hw, chips=cell.chips, precision=precision, context=cell.context,
                       max_context=cell.context, partition=cell.partition, weights=weights)
    except Exception as exc:  # the cell's error is its result; the sweep goes on
        return {**row, "status": "error", "error": _error_text(exc)}
    sram = est["sram_bytes_per_chip"]
    return {**row, "status": "ok", "cycles_per_token": est["cycles_per_token"][0],
            "tokens_per_second": est["tokens_per_second"][0], "lower_bound_cycles": est["lower_bound_cycles"][0],
            "bound_ratio": est["bound_ratio"][0], "partition": est["partition"], "stages": est["stages"],
            "clock_hz": est["clock_hz"], "sram_bytes_per_chip": max(sram) if sram else None,
            "compile_seconds": est.get("compile_seconds")}


def _error_text(exc: BaseException) -> str:
    from .cli import _known_errors, _one_line

    if isinstance(exc, (*_known_errors(), OSError)):
        return _one_line(exc)
    return f"internal error: {type(exc).__name__}: {_one_line(exc)}"


def _line(row: dict | tuple) -> str:
    buf = io.StringIO()
    vals = [row.get(c) for c in COLUMNS] if isinstance(row, dict) else row
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in vals])
    return buf.getvalue()


def read_results(path: Path) -> list[list[str]]:
    """The rows of an earlier run's CSV ([] if there is none), or UsageError if it is not one."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: not a results file of `lpu sweep`: {exc}") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        raise UsageError(f"{path}: not a results file of `lpu sweep` (its header is not {','.join(COLUMNS)}); "
                         "give another -o")
    for n, r in enumerate(rows[1:], 2):
        if len(r) != len(COLUMNS) or r[5] not in ("ok", "error"):
            raise UsageError(f"{path}: line {n} is not a row of `lpu sweep` ({len(COLUMNS)} fields, status ok or "
                             "error); give another -o")
    return rows[1:]


@contextmanager
def _ray(address: str | None, workers: int | None):
    """Ray for the run: the caller's if this process has one, the cluster at `address`, or a local one started
    here and shut down at the end. The workers import the same lpu as this process."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    from .cli import _one_line

    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    if address:
        _reachable(address)
        kw = {"address": address}
    else:  # "local": a new instance, never a cluster that `ray start` left running on this machine
        kw = {"address": "local", "num_cpus": workers or os.cpu_count(), "include_dashboard": False}
    try:
        ray.init(**kw, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": env})
    except Exception as exc:
        what = f"connect to the Ray cluster at --address {address}" if address else "start a local Ray"
        raise UsageError(f"cannot {what}: {_one_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _reachable(address: str) -> None:
    """Fail in one line at once when HOST:PORT does not answer (Ray itself retries for minutes, logging each try)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


@dataclass
class Summary:
    cells: int
    done: int = 0
    skipped: int = 0
    failed: int = 0

    def __str__(self):
        return (f"{self.cells} cell{'s' * (self.cells != 1)}: {self.done} done, {self.skipped} skipped, "
                f"{self.failed} failed")


def sweep(grid: str | os.PathLike, output: str | os.PathLike, address: str | None = None,
          workers: int | None = None) -> Summary:
    """Run the grid's cells not already ok in `output`, appending each row as its cell finishes."""
    cells = load_grid(grid)
    out = Path(output)
    old = read_results(out)
    ok = {tuple(r[:5]) for r in old if r[5] == "ok"}
    todo = [c for c in cells if c.key not in ok]
    summary = Summary(len(cells), skipped=len(cells) - len(todo))
    if not todo:
        return summary
    with _ray(address, workers) as ray:
        retried = {c.key for c in todo}
        if any(tuple(r[:5]) in retried for r in old):
            _replace(out, [r for r in old if tuple(r[:5]) not in retried])
        cap = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        queue, pending = iter(todo), {}
        with open(out, "a", newline="") as f, _progress(len(cells), summary.skipped) as advance:
            if f.tell() == 0:
                f.write(_line(COLUMNS))
            try:
                while True:
                    pending.update((task.remote(c), c) for c in islice(queue, cap - len(pending)))
                    if not pending:
                        break
                    [ref], _ = ray.wait(list(pending), num_returns=1)
                    cell = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory...)
                        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        row = {**dict(zip(KEY, cell.key)), "status": "error", "error": f"the Ray task failed: {why}"}
                    f.write(_line(row))
                    f.flush()
                    summary.done += row["status"] == "ok"
                    summary.failed += row["status"] != "ok"
                    advance()
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
    return summary


def _replace(path: Path, rows: list[list[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(_line(COLUMNS) + "".join(_line(r) for r in rows))
    os.replace(tmp, path)


@contextmanager
def _progress(total: int, completed: int):
    """A rich progress bar of cells finished / total on a terminal; nothing otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not sys.stdout.isatty()) as bar:
        t = bar.add_task("cells", total=total, completed=completed)
        yield lambda: bar.advance(t)
