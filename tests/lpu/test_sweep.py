"""`lpu sweep GRID.toml -o results.csv`: every cell of the grid a Ray task, one CSV row per cell with the figures
`lpu estimate --context C --json` gives for that cell (computed here by the estimate command itself), a re-run
that skips what is done and retries what failed, and one clear line for a bad grid or a foreign CSV.

The in-process sweeps share one local Ray started by a module fixture (the sweep uses a Ray this process
already has); one sweep runs as a subprocess from another directory and starts its own."""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from lpu import cli

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
MODELS = ("gpt2_optimum.onnx", "llama_optimum.onnx")
PRESETS = ("groqchip1", "lp30")
CHIPS = (1, 2)
CONTEXTS = (16, 200)
HEADER = ["model", "preset", "chips", "weights", "context", "status", "cycles_per_token", "tokens_per_second",
          "lower_bound_cycles", "bound_ratio", "partition", "stages", "clock_hz", "sram_bytes_per_chip",
          "compile_seconds", "error"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def grid_text(models, presets=PRESETS, chips=CHIPS, weights=("fp16",), contexts=CONTEXTS, extra="") -> str:
    q = lambda vals: "[" + ", ".join(json.dumps(v) for v in vals) + "]"  # noqa: E731 (TOML and JSON agree here)
    return (f"models = {q(models)}\npresets = {q(presets)}\nchips = {q(chips)}\nweights = {q(weights)}\n"
            f"contexts = {q(contexts)}\n{extra}")


def sweep(grid: Path, out: Path, capsys, *more):
    rc = cli.main(["sweep", str(grid), "-o", str(out), *more])
    res = capsys.readouterr()
    return rc, res.out, res.err


def rows(path: Path) -> dict[tuple, dict]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        assert r.fieldnames == HEADER
        got = list(r)
    keyed = {(d["model"], d["preset"], d["chips"], d["weights"], d["context"]): d for d in got}
    assert len(keyed) == len(got), "a cell has two rows"
    return keyed


def expected_row(model: Path, preset: str, chips: int, weights: str, context: int, capsys) -> dict:
    """The cell's figures from `lpu estimate --json` of the same compile, as the CSV writes them."""
    assert cli.main(["estimate", str(model), "--hw", preset, "--chips", str(chips), "--precision", weights,
                     "--max-context", str(context), "--context", str(context), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["context"] == [context]  # compiled for `context` positions: the last bucket holds it
    return {"status": "ok", "cycles_per_token": str(est["cycles_per_token"][0]),
            "tokens_per_second": repr(est["clock_hz"] / est["cycles_per_token"][0]),
            "lower_bound_cycles": str(est["lower_bound_cycles"][0]), "bound_ratio": str(est["bound_ratio"][0]),
            "partition": est["partition"], "stages": str(est["stages"]), "clock_hz": str(est["clock_hz"]),
            "sram_bytes_per_chip": str(max(est["sram_bytes_per_chip"])), "error": ""}


def without_seconds(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "compile_seconds"}


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    """The 16-cell grid swept once: (grid, results.csv, stdout, stderr)."""
    d = tmp_path_factory.mktemp("sweep")
    grid = d / "grid.toml"
    grid.write_text(grid_text([str(FIX / m) for m in MODELS]))
    out = d / "results.csv"
    rc = cli.main(["sweep", str(grid), "-o", str(out)])
    return grid, out, rc


def test_every_row_is_what_lpu_estimate_gives_for_its_cell(swept, capsys):
    grid, out, rc = swept
    assert rc == 0
    got = rows(out)
    cells = list(product(MODELS, PRESETS, CHIPS, CONTEXTS))
    assert set(got) == {(str(FIX / m), h, str(c), "fp16", str(t)) for m, h, c, t in cells}
    for m, h, c, t in cells:
        row = got[(str(FIX / m), h, str(c), "fp16", str(t))]
        assert without_seconds(row) == {"model": str(FIX / m), "preset": h, "chips": str(c), "weights": "fp16",
                                        "context": str(t), **expected_row(FIX / m, h, c, "fp16", t, capsys)}
        assert float(row["compile_seconds"]) > 0
    # the grid tells the mappings apart: one chip is tensor-parallel, two a pipeline here
    assert {got[k]["partition"] for k in got if k[2] == "1"} == {"tp"}


def test_a_rerun_skips_every_cell_and_leaves_the_file_as_it_was(swept, capsys):
    grid, out, _ = swept
    before = out.read_bytes()
    rc, stdout, err = sweep(grid, out, capsys)
    assert rc == 0, err
    assert stdout.strip() == f"16 cells: 0 done, 16 skipped, 0 failed -> {out}"
    assert out.read_bytes() == before


def test_a_failing_cell_records_its_error_and_a_rerun_retries_errors(swept, tmp_path, capsys):
    grid, done, _ = swept
    # an earlier run's file: the 16 cells, one of them failed then, and a cell of another grid
    old = rows(done)
    retry = (str(FIX / MODELS[1]), "lp30", "2", "fp16", "200")
    foreign = {**old[retry], "model": "elsewhere.onnx"}
    seeded = {**{k: v for k, v in old.items() if k != retry},
              retry: {**dict.fromkeys(HEADER, ""), **dict(zip(HEADER, retry)), "status": "error", "error": "old"}}
    out = tmp_path / "results.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, HEADER, lineterminator="\n")
        w.writeheader()
        w.writerows([foreign, *seeded.values()])
    g = tmp_path / "grid.toml"
    g.write_text(grid_text([str(FIX / m) for m in MODELS], weights=("fp16", "int4")))
    rc, stdout, err = sweep(g, out, capsys)
    assert rc == 0, err
    assert stdout.strip() == f"32 cells: 1 done, 15 skipped, 16 failed -> {out}"
    got = rows(out)
    assert len(got) == 33 and got[("elsewhere.onnx",) + retry[1:]] == foreign
    assert without_seconds(got[retry]) == without_seconds(old[retry])  # the error row was replaced
    for k, row in got.items():
        if k[3] == "int4":
            assert row == {**dict.fromkeys(HEADER, ""), **dict(zip(HEADER, k)), "status": "error",
                           "error": "--weights int4: valid values are fp16, int8, fp8"}
    # again: the failed cells are retried (and fail again), each cell still has one row, nothing else changes
    lines = set(out.read_text().splitlines())
    rc, stdout, err = sweep(g, out, capsys)
    assert rc == 0 and stdout.strip() == f"32 cells: 0 done, 16 skipped, 16 failed -> {out}"
    assert set(out.read_text().splitlines()) == lines and len(rows(out)) == 33


def test_from_another_directory_with_its_own_ray_and_a_relative_model(tmp_path, capsys):
    """A subprocess in tmp_path, the grid in tmp_path/g naming the model relative to itself: it starts a
    local Ray of its own (not the one this process has), whose workers import this tree's lpu. 400 positions
    make two buckets (320 each): the row is the second's."""
    (tmp_path / "g").mkdir()
    rel = os.path.relpath(FIX / MODELS[1], tmp_path / "g")
    (tmp_path / "g" / "grid.toml").write_text(grid_text([rel], presets=["lp30"], chips=[2], contexts=[400]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "lpu.cli", "sweep", "g/grid.toml", "-o", "out.csv", "--workers", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 cell: 1 done, 0 skipped, 0 failed -> out.csv\n" and r.stderr == ""
    [row] = rows(tmp_path / "out.csv").values()
    assert without_seconds(row) == {"model": rel, "preset": "lp30", "chips": "2", "weights": "fp16",
                                    "context": "400", **expected_row(FIX / MODELS[1], "lp30", 2, "fp16", 400, capsys)}


def one_line(rc: int, err: str, needle: str, want_rc: int = 2) -> None:
    lines = err.strip().splitlines()
    assert rc == want_rc and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, (rc, err)


@pytest.mark.parametrize("text, needle", [
    (grid_text(["m.onnx"], extra='model = ["x"]\n'), "unknown key 'model'; valid keys: models, presets, chips"),
    (grid_text(["m.onnx"]).replace("contexts = [16, 200]\n", ""), "missing key 'contexts': a list of positive"),
    (grid_text(["m.onnx"]).replace("chips = [1, 2]", 'chips = "2"'), "chips must be a non-empty list of positive"),
    (grid_text(["m.onnx"], chips=[True]), "chips must be a non-empty list of positive integers, not [True]"),
    (grid_text(["m.onnx"], contexts=[0]), "contexts must be a non-empty list of positive integers"),
    (grid_text(["m.onnx"], presets=[]), "presets must be a non-empty list of hardware preset names or files"),
    (grid_text(["m.onnx"], weights=["fp16", "fp16"]), "weights lists 'fp16' twice"),
    (grid_text(["m.onnx"], extra='partition = "rows"\n'), "partition must be one of tp, pp, hybrid, auto"),
    (grid_text(["nope.onnx"]), "models: nope.onnx: no such file"),
    (grid_text(["p.lpu"]), "models: p.lpu is a compiled program; a grid takes ONNX models"),
    (grid_text(["m.onnx"], presets=["tpu9"]), "presets: 'tpu9' is not a preset (groqchip1, lp30) and not a file"),
    ("models = [\n", "not TOML"),
])
def test_a_bad_grid_is_one_line_and_writes_nothing(tmp_path, capsys, text, needle):
    (tmp_path / "m.onnx").write_bytes(b"")  # the grid check only looks for the file
    (tmp_path / "p.lpu").write_bytes(b"LPUPROG\0")
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    one_line(*sweep(grid, tmp_path / "out.csv", capsys)[::2], needle)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("content", ["name,score\nx,1\n", ",".join(HEADER) + "\na,b,c\n"])
def test_a_foreign_csv_is_one_line_and_left_unchanged(tmp_path, capsys, content):
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text([str(FIX / MODELS[0])]))
    out = tmp_path / "out.csv"
    out.write_text(content)
    one_line(*sweep(grid, out, capsys)[::2], "not a")
    assert out.read_text() == content


def test_without_ray_it_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text([str(FIX / MODELS[0])]))
    rc, out, err = sweep(grid, tmp_path / "out.csv", capsys)
    assert (rc, out, err) == (1, "", "lpu sweep needs Ray: pip install 'lpu-toolchain[sweep]'\n")
    assert not (tmp_path / "out.csv").exists()


def test_workers_must_be_positive(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text([str(FIX / MODELS[0])]))
    one_line(*sweep(grid, tmp_path / "out.csv", capsys, "--workers", "0")[::2], "--workers 0: must be at least 1")


def test_the_example_grid_is_valid_and_has_the_cells_the_readme_says():
    from lpu.sweep import load_grid

    cells = load_grid(ROOT / "benchmarks" / "grids" / "example.toml")
    assert len(cells) == 2 * 2 * 3 * 2 * 2 == 48
    assert cells[0].key == ("../../lpu/data/default.onnx", "groqchip1", "1", "fp16", "320")
    assert cells[1].key[3:] == ("fp16", "1024") and cells[2].key[3:] == ("int8", "320")  # contexts vary fastest
    assert Path(cells[0].model_path).resolve() == ROOT / "lpu" / "data" / "default.onnx"
