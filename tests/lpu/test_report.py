"""`lpu report`: where one token's cycles go. The sums the issue asks for (per layer and per kind, the critical
path's steps) must add up to the cycles per token, and every step of the critical path is checked against the
program itself, recomputed here from the stream words with isa.timing: a "latency" step reads a location its
predecessor writes, a "busy unit" step issues on its predecessor's queue the cycle that one ends, a "link" step
is a RECV fed by its predecessor's SEND over a wired link. Bytes per link and SRAM per chip are compared with
what the stream words and the compiler's header say."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import isa
from isa import VECTOR_LANES, Machine, Program
from isa.program import dtype_bytes
from clirun import run
from lpu.cli import main
from lpu.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    out = {}
    for name, model, extra in (("gpt2_tp8", "gpt2_optimum.onnx", ["--chips", 8]),
                               ("llama_pp4", "llama_optimum.onnx", ["--chips", 4, "--partition", "pp"]),
                               ("qwen2_hybrid", "qwen2_optimum.onnx", ["--chips", 4, "--partition", "hybrid",
                                                                       "--stages", 2])):
        path = d / f"{name}.lpu"
        assert main(["compile", str(FIX / model), "-o", str(path), "--max-context", "128",
                     *map(str, extra)]) == 0
        out[name] = path
    return out


class Ref:
    """Every non-NOP instruction of a bucket, recomputed from the stream words: chip, queue, issue, busy and
    its accesses as (chip, region, unit, vector) -> [(cycle, readable cycle)] for writes and [cycle] for reads."""

    def __init__(self, prog: Program, bucket: int) -> None:
        m = Machine(prog.header["hw"], prog.regions)
        num = prog.numbering()
        self.by_issue = {}
        self.links = defaultdict(int)  # (chip, link) -> bytes sent
        for (b, c, q), words in prog.streams.items():
            if b != bucket:
                continue
            t = 0
            for ins in isa.decode_many(words, c, num):
                p = m.profile(ins, q)
                if ins.op != "NOP":
                    w, r = defaultdict(list), defaultdict(list)
                    for a in p.accesses:
                        for k in range(a.count):
                            key = (c, a.region, a.unit, a.vector(k))
                            (w[key].append((t + a.time(k), t + a.time(k) + a.ready)) if a.write
                             else r[key].append(t + a.time(k)))
                    self.by_issue[(c, q, t)] = (ins, p.busy, w, r)
                    if ins.op == "SEND":
                        self.links[(c, ins.args["link"])] += ins.args["n"] * VECTOR_LANES * dtype_bytes(
                            prog.regions[ins.args["src_reg"]].dtype)
                t += p.busy


def check_report(r: dict, prog: Program) -> None:
    cyc = r["cycles_per_token"]
    assert sum(r["by_kind"].values()) == cyc
    assert sum(r["by_layer"].values()) == cyc
    steps = r["critical_path"]["steps"]
    assert r["critical_path"]["cycles"] == sum(s["cycles"] for s in steps) == cyc
    assert steps[0]["start"] == 0 and steps[-1]["end"] == cyc
    assert all(a["end"] == b["start"] for a, b in zip(steps, steps[1:]))
    assert all(0 <= s["wait"] <= s["cycles"] for s in steps)
    ref = Ref(prog, r["bucket"])
    for s in steps:
        if "chip" not in s:
            continue
        ins, busy, w, rd = ref.by_issue[(s["chip"], s["queue"], s["issue_cycle"])]
        assert isa.disasm_instr(ins) == s["instr"]
        assert s["issue_cycle"] <= s["end"]
        p = s.get("waits_for")
        if p is None:
            continue
        pins, pbusy, pw, prd = ref.by_issue[(p["chip"], p["queue"], p["issue_cycle"])]
        if s["reason"] == "latency":  # reads what the predecessor wrote, after it became readable
            shared = [k for k in rd if k in pw]
            assert shared, (s, p)
            assert any(rt >= ready for k in shared for rt in rd[k] for _, ready in pw[k])
        elif s["reason"] == "busy unit":
            assert (p["chip"], p["queue"]) == (s["chip"], s["queue"])
            assert p["issue_cycle"] + pbusy == s["issue_cycle"]
        elif s["reason"] == "link":
            assert pins.op == "SEND" and ins.op == "RECV" and p["chip"] != s["chip"]
        elif s["reason"] == "location in use":
            assert [k for k in w if k in prd], (s, p)
    # bytes per link: the SENDs' vectors, from the words
    got = {(x["chip"], x["link"]): x["bytes"] for x in r["link_bytes"]}
    assert got == {k: v for k, v in ref.links.items() if v}
    # SRAM: every region's bytes, as the compiler counted its buffers
    per_chip = prog.header["sram_bytes_per_chip"]
    for s in r["sram"]:
        assert s["used"] == per_chip[s["chip"]]
        assert s["used"] == sum(s[k] for k in ("weights", "kv cache", "activations", "tables", "inputs/outputs"))
        assert sum(s["bytes_per_bank"]) <= s["used"] and s["free"] == s["capacity"] - s["used"]
    for u in r["utilisation"]:
        assert all(0 <= v <= 1 for k, v in u.items() if k != "chip")
    terms = r["lower_bound_terms"]
    assert r["lower_bound_cycles"] == max(terms.values()) and terms[r["binding_term"]] == max(terms.values())
    assert r["binding_term"] in r["gap"] and f"{cyc - r['lower_bound_cycles']:,} more" in r["gap"]


@pytest.mark.parametrize("name", ["gpt2_tp8", "llama_pp4", "qwen2_hybrid"])
def test_report_adds_up_and_its_path_is_the_programs(programs, capsys, name):
    code, out, err = run(["report", programs[name], "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    prog = Program.load(programs[name])
    check_report(r, prog)
    # the cycles are the token's: what decoding one token in that bucket measures
    code, out, err = run(["decode", programs[name], "--tokens", 1, "--prompt", "3", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    if r["bucket"] == 0:
        assert d["cycles_per_token"][0] == r["cycles_per_token"]
    if name != "gpt2_tp8":
        assert "pipeline hop" in r["by_kind"]
    assert {"linear", "attention", "norm"} <= set(r["by_kind"])


def test_report_of_the_first_bucket_matches_decode(programs, capsys):
    code, out, _ = run(["report", programs["gpt2_tp8"], "--context", 1, "--json"], capsys)
    r = json.loads(out)
    code, out, _ = run(["decode", programs["gpt2_tp8"], "--tokens", 1, "--prompt", "3", "--json"], capsys)
    assert r["bucket"] == 0 and json.loads(out)["cycles_per_token"][0] == r["cycles_per_token"]


def test_provenance_names_every_instruction_and_sends_are_transfers(programs):
    for name, path in programs.items():
        prog = Program.load(path)
        ops = prog.header["ops"]
        layers = {o["layer"] for o in ops if o["layer"] is not None}
        assert layers == {0, 1}, (name, layers)  # the fixtures' 2 layers, from their configs
        num = prog.numbering()
        for key, words in prog.streams.items():
            ids = prog.provenance[key]
            assert ids.shape[0] == words.shape[0]
            for ins, i in zip(isa.decode_many(words, key[1], num), ids.tolist()):
                if ins.op == "NOP":
                    assert i == -1
                    continue
                assert 0 <= i < len(ops)
                kind = ops[i]["kind"]
                if ins.op in ("SEND", "RECV"):
                    assert kind in ("all-reduce", "pipeline hop"), (name, ins, ops[i])
                if ins.op in ("SYNC", "DESKEW"):
                    assert kind == "barrier"
                if ops[i]["prim"] in ("linear",) and kind == "linear":
                    assert ins.op in ("LW", "IW", "ACC", "EMIT", "VXM", "COPY", "SXM", "GATHER"), ins


def test_report_text_and_a_timing_only_program(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text((FIX / "configs" / "llama_optimum.json").read_text())
    code, out, err = run(["report", cfg, "--chips", 16, "--max-context", 64], capsys)
    assert code == 0, err
    assert "Cycles per token (critical path) by kind" in out and "The bound binds on" in out
    assert "timing" not in err
    code, out, err = run(["report", cfg, "--chips", 16, "--max-context", 64, "--json"], capsys)
    r = json.loads(out)
    assert r["chips"] == 16 and sum(r["by_kind"].values()) == r["cycles_per_token"]


def test_old_programs_without_provenance_still_report(programs, tmp_path, capsys):
    prog = Program.load(programs["gpt2_tp8"])
    prog.provenance.clear()
    del prog.header["ops"]
    path = tmp_path / "old.lpu"
    prog.save(path)
    code, out, err = run(["report", path, "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["provenance"] is False and set(r["by_kind"]) <= {"unattributed", "tail"}
    assert sum(r["by_kind"].values()) == r["cycles_per_token"]


@pytest.mark.parametrize("argv, needle", [
    (["--context", "100000"], "--context 100000: the program holds 1..128 positions"),
    (["--steps", "-1"], "--steps -1: give 0 or more"),
])
def test_bad_report_requests_fail_in_one_line(programs, capsys, argv, needle):
    code, out, err = run(["report", programs["gpt2_tp8"], *argv], capsys)
    assert code != 0 and needle in err and err.count("\n") == 1, err


def test_a_corrupt_program_fails_in_one_line(programs, tmp_path, capsys):
    data = bytearray(Path(programs["gpt2_tp8"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.lpu"
    bad.write_bytes(bytes(data))
    code, out, err = run(["report", bad], capsys)
    assert code == 1 and "corrupt" in err and err.count("\n") == 1
