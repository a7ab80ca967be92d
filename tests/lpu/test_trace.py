"""Instruction-level traces (`lpu decode|estimate --trace FILE`): the Trace Event Format, checked event by event
against the program itself: every queue's slices start where the stream's static schedule issues them (the
running sum of each instruction's busy cycles from isa.timing, NOPs included, as tests/support/naive.py orders
them) and add up to the queue's busy cycles; one flow arrow per SEND, ending on a RECV of the same link.
No trace processor is used (the `perfetto` package downloads a binary)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

import isa
from isa import Machine, Program
from clirun import buckets_of, run

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"

# the public GPT-2 small configuration (openai-community/gpt2), layers cut to keep `make test` short
GPT2_SMALL = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_embd": 768, "n_head": 12,
              "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-05,
              "activation_function": "gelu_new", "tie_word_embeddings": True}

TYPES = {"ph": str, "name": str, "pid": int, "tid": int}


def reference(prog: Program, bucket: int):
    """Per (chip, queue): the (issue cycle, busy, mnemonic) of every non-NOP instruction, from the stream words
    and isa.timing alone."""
    m = Machine(prog.header["hw"], prog.regions)
    numbering = prog.numbering()
    out = {}
    for (b, c, q), words in prog.streams.items():
        if b != bucket:
            continue
        t, rows = 0, []
        prov = prog.provenance.get((b, c, q))
        ops = prog.header.get("ops") or []
        for k, ins in enumerate(isa.decode_many(words, c, numbering)):
            busy = m.profile(ins, q).busy
            if ins.op != "NOP":
                rows.append((t, busy, ins.op, ops[prov[k]]["name"] if prov is not None else None))
            t += busy
        out[(c, q)] = rows
    return out


def check_trace(doc: dict, prog: Program, buckets: list[int], cycles: list[int], chips=None) -> dict:
    """Every check the issue asks for; returns counts for the caller's own assertions."""
    h = prog.header
    clock = float(h["hw"]["clock_hz"])
    queues = list(h["queues"])
    ev = doc["traceEvents"]
    assert isinstance(ev, list) and ev
    for e in ev:  # the Trace Event Format's required fields and their types
        for k, ty in TYPES.items():
            assert isinstance(e.get(k), ty), (k, e)
        assert e["ph"] in ("M", "X", "i", "s", "f"), e
        if e["ph"] != "M":
            assert isinstance(e["ts"], float) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], float) and e["dur"] >= 0, e
            assert isinstance(e["args"]["instr"], str) and e["args"]["instr"].split()[0] == e["name"].split()[0]
        if e["ph"] in ("s", "f"):
            assert isinstance(e["id"], int), e
        if e["ph"] == "i":
            assert e["s"] in ("g", "p", "t"), e
    chips = list(range(int(h["chips"]))) if chips is None else chips
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(procs) == chips and all(procs[c].startswith(f"chip {c}") for c in chips)
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert tracks == {(c, i): q for c in chips for i, q in enumerate(queues)}

    # slices against the streams: per token, per queue, each slice starts at its first instruction's static issue
    # cycle, covers `count` instructions back to back, and the cycles add up to the queue's busy cycles
    starts = [sum(cycles[:i]) for i in range(len(cycles))]
    toks = sorted(e["ts"] for e in ev if e["ph"] == "i" and e.get("cat") == "token")
    assert toks == pytest.approx([s * 1e6 / clock for s in starts])
    by_track = defaultdict(list)
    for e in ev:
        if e["ph"] == "X":
            by_track[(e["pid"], queues[e["tid"]])].append(e)
    refs = {b: reference(prog, b) for b in set(buckets)}
    n_send = 0
    for (c, q) in {(c, q) for b in refs for (c, q) in refs[b] if c in chips}:
        got = sorted(by_track.get((c, q), []), key=lambda e: e["args"]["issue_cycle"])
        want = []
        for b, t0 in zip(buckets, starts):
            want += [(t0 + t, busy, op, name) for t, busy, op, name in refs[b][(c, q)]]
        n_send += sum(op == "SEND" for _, _, op, _ in want)
        i = 0
        for e in got:
            a = e["args"]
            run = want[i:i + a["count"]]
            assert len(run) == a["count"] and run[0][0] == a["issue_cycle"], (c, q, e)
            assert all(op == e["name"].split()[0] for _, _, op, _ in run), (c, q, e)
            assert all(name == a.get("operation") for _, _, _, name in run), (c, q, e)  # one operation a slice
            assert all(run[k][0] + run[k][1] == run[k + 1][0] for k in range(len(run) - 1)), (c, q, e)
            assert a["cycles"] == sum(bz for _, bz, _, _ in run)
            assert e["ts"] == pytest.approx(a["issue_cycle"] * 1e6 / clock)
            assert e["dur"] == pytest.approx(a["cycles"] * 1e6 / clock)
            i += a["count"]
        assert i == len(want), (c, q, i, len(want))
        assert sum(e["args"]["cycles"] for e in got) == sum(bz for _, bz, _, _ in want)
        for x, y in zip(got, got[1:]):  # a track's slices never overlap
            assert x["args"]["issue_cycle"] + x["args"]["cycles"] <= y["args"]["issue_cycle"]

    # flows: one (s, f) pair per SEND, s inside a SEND slice, f inside a RECV slice on the same link
    def inside(e, op):
        for x in by_track[(e["pid"], queues[e["tid"]])]:
            if x["name"] == op and x["ts"] - 1e-9 <= e["ts"] <= x["ts"] + x["dur"] + 1e-9:
                return True
        return False

    s = {e["id"]: e for e in ev if e["ph"] == "s"}
    f = {e["id"]: e for e in ev if e["ph"] == "f"}
    assert set(s) == set(f)
    assert len(s) == n_send
    for k in s:
        assert inside(s[k], "SEND") and inside(f[k], "RECV"), (s[k], f[k])
        sq, rq = queues[s[k]["tid"]], queues[f[k]["tid"]]
        assert sq.startswith("c2c") and sq.endswith("t") and rq.startswith("c2c") and rq.endswith("r") and s[k]["pid"] != f[k]["pid"], (sq, rq)
        assert s[k]["ts"] <= f[k]["ts"]
    return {"slices": sum(len(v) for v in by_track.values()), "flows": len(s)}


def test_decode_trace_of_4_tokens_on_8_chips_follows_the_trace_event_format(tmp_path, capsys):
    path = tmp_path / "t.json"
    prog_path = tmp_path / "g.lpu"
    code, out, err = run(["compile", FIX / "gpt2_optimum.onnx", "--chips", 8, "-o", prog_path], capsys)
    assert code == 0, err
    code, out, err = run(["decode", prog_path, "--tokens", 4, "--prompt", "5,6", "--trace", path, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    prog = Program.load(prog_path)
    buckets = buckets_of(prog, res["positions"])
    got = check_trace(json.loads(path.read_text()), prog, buckets, res["cycles_per_token"])
    assert got["flows"] > 0 and res["trace"]["slices"] == got["slices"] and res["trace"]["flows"] == got["flows"]
    doc = json.loads(path.read_text())
    assert {e["name"] for e in doc["traceEvents"] if e.get("cat") == "layer"} == {"layer 0", "layer 1"}
    tensors = {e["args"].get("tensor", "") for e in doc["traceEvents"] if e["ph"] == "X"}
    assert any("attn" in t for t in tensors) and any("mlp" in t for t in tensors)


@pytest.mark.parametrize("layers", [3])
def test_estimate_trace_of_a_timing_only_program_on_16_chips(tmp_path, capsys, layers):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**GPT2_SMALL, "n_layer": layers}))
    prog_path, path = tmp_path / "g.lpu", tmp_path / "t.json"
    code, out, err = run(["compile", cfg, "--chips", 16, "--partition", "hybrid", "--stages", 2, "--max-context", 64,
                          "-o", prog_path], capsys)
    assert code == 0, err
    code, out, err = run(["estimate", prog_path, "--context", 64, "--trace", path, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    prog = Program.load(prog_path)
    assert prog.timing_only and prog.header["chips"] == 16
    b = len(prog.header["buckets"]) - 1
    doc = json.loads(path.read_text())
    got = check_trace(doc, prog, [b], res["cycles_per_token"])
    assert got["flows"] > 0
    stages = {e["name"] for e in doc["traceEvents"] if e.get("cat") == "stage"}
    assert stages == {"stage 0", "stage 1"}


def test_selection_by_chip_and_cycles_keeps_whole_slices_of_the_chips_asked(tmp_path, capsys):
    prog_path, path = tmp_path / "g.lpu", tmp_path / "t.json"
    assert run(["compile", FIX / "gpt2_optimum.onnx", "--chips", 4, "-o", prog_path], capsys)[0] == 0
    code, out, err = run(["decode", prog_path, "--tokens", 3, "--trace", path, "--trace-chips", "1,3",
                          "--trace-tokens", "1:", "--trace-cycles", "1000:", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    doc = json.loads(path.read_text())
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert xs and {e["pid"] for e in xs} == {1, 3}
    # token 1 starts the time line; a slice is kept when it ends after cycle 1000
    assert all(e["args"]["issue_cycle"] + e["args"]["cycles"] > 1000 for e in xs)
    assert max(e["args"]["issue_cycle"] for e in xs) < sum(res["cycles_per_token"][1:])
    for e in doc["traceEvents"]:  # every flow arrow joins two traced chips
        if e["ph"] in ("s", "f"):
            assert e["pid"] in (1, 3)


@pytest.mark.parametrize("argv, needle", [
    (["--trace-chips", "9"], "--trace-chips '9': 9 is outside 0..1"),
    (["--trace-cycles", "5:2"], "--trace-cycles '5:2': expected 0 <= A < B"),
    (["--trace-tokens", "x"], "--trace-tokens 'x': expected A:B"),
    (["--trace-tokens", "4:"], "--trace-tokens 4:: only 2 token(s) are generated"),
    (["--trace-layers", "7"], "the selection traces no instruction"),
    (["--trace-limit", "0.01"], "the trace would pass 0.01 MB within 1 traced token(s)"),
    (["--trace-limit", "0"], "--trace-limit 0.0: give a size in MB above 0"),
])
def test_bad_trace_requests_fail_in_one_line_and_write_nothing(tmp_path, capsys, argv, needle):
    path = tmp_path / "t.json"
    code, out, err = run(["decode", FIX / "gpt2_optimum.onnx", "--chips", 2, "--tokens", 2, "--trace", path, *argv],
                         capsys)
    assert code != 0 and needle in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_trace_options_need_trace_and_a_writable_place(tmp_path, capsys):
    code, _, err = run(["decode", "--tokens", 1, "--trace-chips", "0"], capsys)
    assert code == 2 and "give --trace FILE" in err
    code, _, err = run(["decode", "--tokens", 1, "--trace", tmp_path / "no" / "t.json"], capsys)
    assert code != 0 and "does not exist" in err and err.count("\n") == 1
    code, _, err = run(["estimate", FIX / "gpt2_optimum.onnx", "--trace", tmp_path], capsys)
    assert code != 0 and "is a directory" in err and err.count("\n") == 1


@pytest.mark.slow
def test_gpt2_small_8_chips_4_tokens(tmp_path, capsys):
    """The issue's case itself, on the benchmark model (tools/make_models.py --only gpt2-small)."""
    model = ROOT / "build" / "models" / "gpt2-small" / "model.onnx"
    if not model.exists():
        pytest.skip("run `python tools/make_models.py --only gpt2-small` first")
    prog_path, path = tmp_path / "g.lpu", tmp_path / "t.json"
    assert run(["compile", model, "--chips", 8, "--max-context", 64, "-o", prog_path], capsys)[0] == 0
    code, out, err = run(["decode", prog_path, "--tokens", 4, "--trace", path, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    prog = Program.load(prog_path)
    buckets = buckets_of(prog, res["positions"])
    got = check_trace(json.loads(path.read_text()), prog, buckets, res["cycles_per_token"])
    print(f"\nGPT-2 small, 8 chips, 4 tokens: {got['slices']:,} slices, {got['flows']:,} flows, "
          f"{path.stat().st_size / 2**20:.1f} MB")


@pytest.mark.slow
def test_gpt2_small_config_timing_only_on_16_chips(tmp_path, capsys):
    test_estimate_trace_of_a_timing_only_program_on_16_chips(tmp_path, capsys, 12)
