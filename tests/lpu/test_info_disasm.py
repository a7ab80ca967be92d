"""`lpu info` (a program's facts from its file) and `lpu disasm --bucket/--chip/--queue/--cycles` (a timed
listing), checked against the program's own sections and the full disassembly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import isa
from isa import Machine, Program, disassemble
from clirun import run
from lpu.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def prog_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("info") / "llama.lpu"
    assert main(["compile", str(FIX / "llama_optimum.onnx"), "--chips", "4", "--partition", "hybrid", "--stages", "2",
                 "--max-context", "640", "-o", str(p)]) == 0
    return p


def test_info_says_what_the_file_holds(prog_path, capsys):
    code, out, err = run(["info", prog_path, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    prog = Program.load(prog_path)
    assert d["instructions"] == sum(w.shape[0] for w in prog.streams.values())
    assert d["file_bytes"] == prog_path.stat().st_size
    assert (d["chips"], d["partition"], d["stages"], d["hardware"]) == (4, "hybrid", 2, "groqchip1")
    assert [b["positions"] for b in d["buckets"]] == [[0, 319], [320, 639]]
    assert d["model"]["family"] == "llama" and d["model"]["num_layers"] == 2
    assert d["options"]["partition"] == "hybrid" and d["options"]["stages"] == 2
    assert d["compiled_by"].startswith("lpu ") and d["provenance"] and not d["timing_only"]
    code, out, err = run(["info", prog_path], capsys)
    assert code == 0 and "hybrid, 2 stages" in out and "groqchip1 at 900 MHz" in out and "--stages 2" in out


def test_info_of_a_timing_only_program_and_a_bad_file(tmp_path, capsys):
    p = tmp_path / "t.lpu"
    assert run(["compile", FIX / "configs" / "gpt2_optimum.json", "--chips", 2, "-o", p], capsys)[0] == 0
    code, out, err = run(["info", p], capsys)
    assert code == 0 and "timing-only" in out
    bad = tmp_path / "bad.lpu"
    bad.write_bytes(b"LPUPROG\0" + b"\0" * 40)
    code, out, err = run(["info", bad], capsys)
    assert code == 1 and err.count("\n") == 1 and "bad.lpu" in err


def test_listing_is_the_disassembly_with_issue_cycles(prog_path, capsys):
    prog = Program.load(prog_path)
    code, out, err = run(["disasm", prog_path, "--bucket", 1, "--chip", 3, "--queue", "vxm0,mxm"], capsys)
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if not ln.startswith(";")]
    keys = {(int(ln.split()[0]), int(ln.split()[1]), ln.split()[2]) for ln in lines}
    assert keys == {(1, 3, q) for q in ("vxm0", "mxm0w", "mxm0a", "mxm1w", "mxm1a") if (1, 3, q) in prog.streams}
    # each stream's lines: its instructions in order, as the full disassembly prints them, at running busy sums
    full = disassemble(prog).splitlines()
    m = Machine(prog.header["hw"], prog.regions)
    for (b, c, q) in sorted(keys):
        i = full.index(f".stream bucket={b} chip={c} queue={q}")
        n = prog.streams[(b, c, q)].shape[0]
        want = [x.strip() for x in full[i + 1:i + 1 + n]]
        got = [ln for ln in lines if ln.split()[:3] == [str(b), str(c), q]]
        assert [g.split(None, 5)[5].split("  ;")[0] for g in got] == want
        t = 0
        for g, ins in zip(got, prog.instrs((b, c, q))):
            assert int(g.split()[3]) == t
            t += m.profile(ins, q).busy
    code, out, _ = run(["disasm", prog_path, "--chip", 0, "--cycles", "1000:1200"], capsys)
    rows = [ln.split() for ln in out.splitlines() if not ln.startswith(";")]
    assert rows and all(int(r[3]) < 1200 and int(r[3]) + int(r[4]) > 1000 for r in rows)
    assert any("; linear:" in ln for ln in out.splitlines())


@pytest.mark.parametrize("argv, needle", [
    (["--queue", "foo"], "--queue foo: this program's queues are"),
    (["--chip", "7"], "--chip '7': 7 is outside 0..3"),
    (["--bucket", "5"], "--bucket '5': 5 is outside 0..1"),
    (["--cycles", "9:3"], "--cycles '9:3': expected 0 <= A < B"),
])
def test_bad_listing_filters_fail_in_one_line(prog_path, capsys, argv, needle):
    code, out, err = run(["disasm", prog_path, *argv], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1, err
