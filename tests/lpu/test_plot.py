"""`lpu plot` on a program and on a sweep's CSV: the PNGs are written (valid PNG files, the same bytes on a
second run), and bad input fails in one line without writing anything."""
from __future__ import annotations

from pathlib import Path

import pytest

from clirun import run
from lpu.sweep import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_of_a_program_and_the_same_bytes_again(tmp_path, capsys):
    prog = tmp_path / "l.lpu"
    assert run(["compile", FIX / "llama_optimum.onnx", "--chips", 2, "--max-context", 640, "-o", prog], capsys)[0] == 0
    code, out, err = run(["plot", prog, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    names = sorted(Path(x).name for x in out.split())
    assert names == ["critical_path.png", "cycles_vs_context.png", "sram_per_chip.png", "utilisation.png"]
    for n in names:
        data = (tmp_path / "a" / n).read_bytes()
        assert data[:8] == PNG and len(data) > 5000
    assert run(["plot", prog, "-o", tmp_path / "b"], capsys)[0] == 0
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def _csv(path: Path, rows) -> None:
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join(str(r.get(c, "")) for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n")


def test_plots_of_a_sweep(tmp_path, capsys):
    rows = []
    for chips, cyc in ((1, 9000), (2, 7000), (8, 5600)):
        for ctx in (320, 1024):
            rows.append({"model": "m.onnx", "preset": "groqchip1", "chips": chips, "weights": "fp16", "context": ctx,
                         "status": "ok", "cycles_per_token": cyc + ctx, "tokens_per_second": 1.0,
                         "lower_bound_cycles": cyc, "bound_ratio": 1.1, "partition": "tp", "stages": 1,
                         "clock_hz": 900000000, "sram_bytes_per_chip": 1, "compile_seconds": 1.0})
    rows.append({"model": "m.onnx", "preset": "lp30", "chips": 1, "weights": "int8", "context": 320,
                 "status": "error", "error": "no"})
    csv = tmp_path / "results.csv"
    _csv(csv, rows)
    code, out, err = run(["plot", csv, "-o", tmp_path / "p"], capsys)
    assert code == 0, err
    assert sorted(Path(x).name for x in out.split()) == ["cycles_vs_chips.png", "cycles_vs_context.png"]
    assert all((tmp_path / "p" / n).read_bytes()[:8] == PNG for n in ("cycles_vs_chips.png", "cycles_vs_context.png"))


@pytest.mark.parametrize("make, needle", [
    (lambda d: (d / "x.csv").write_text("a,b\n1,2\n"), "not a results file of `lpu sweep`"),
    (lambda d: _csv(d / "x.csv", [{"model": "m", "status": "error"}]), "no row of status ok to plot"),
])
def test_bad_sweeps_fail_in_one_line(tmp_path, capsys, make, needle):
    make(tmp_path)
    code, out, err = run(["plot", tmp_path / "x.csv", "-o", tmp_path / "out"], capsys)
    assert code != 0 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_plot_output_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    code, out, err = run(["plot", FIX / "gpt2_optimum.onnx", "-o", f], capsys)
    assert code == 2 and "is a file" in err
    code, out, err = run(["plot", FIX / "gpt2_optimum.onnx", "-o", tmp_path / "no" / "dir"], capsys)
    assert code == 2 and "does not exist" in err
