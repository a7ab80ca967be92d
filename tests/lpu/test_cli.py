"""The `lpu` command: the documented names and keys, and one clear line for every kind of bad input."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import isa
import lpu
from lpu import config
from lpu.cli import main
from lpu.reference import OrtDecoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"
LLAMA = FIX / "llama_optimum.onnx"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, expect):
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lpu: error: "), err
    assert expect in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "llama.lpu"
    assert main(["compile", str(LLAMA), "-o", str(out), "--chips", "2", "--max-context", "320"]) == 0
    return out


def test_compile_then_decode_json_has_the_documented_keys(program, capsys, tmp_path):
    logits = tmp_path / "l.npy"
    code, out, err = run(["decode", program, "--prompt", "1,2,3", "--tokens", "5", "--json", "--logits", logits], capsys)
    assert code == 0, err
    d = json.loads(out)
    for key in ("tokens", "cycles_per_token", "prefill_cycles", "clock_hz", "chips", "tokens_per_second",
                "emulator_seconds", "lower_bound_cycles", "bound_ratio"):
        assert key in d
    assert d["partition"] in ("tp", "pp", "hybrid")
    assert all(0 < lb <= c for lb, c in zip(d["lower_bound_cycles"], d["cycles_per_token"]))
    assert len(d["tokens"]) == 5 and len(d["cycles_per_token"]) == 5 and d["chips"] == 2
    assert d["clock_hz"] == config.load("groqchip1").clock_hz
    assert d["tokens_per_second"] == pytest.approx(d["clock_hz"] / np.mean(d["cycles_per_token"]))
    arr = np.load(logits)
    assert arr.shape == (5, 700) and arr.dtype == np.float32
    assert [int(np.argmax(r)) for r in arr] == d["tokens"]
    # fp16 on the chips, the same first tokens as ONNX Runtime (the logit gaps are wide)
    assert d["tokens"][:3] == OrtDecoder(LLAMA).greedy([1, 2, 3], 3)[0]


def test_decode_an_onnx_model_directly_and_the_bundled_default(capsys):
    from lpu.cli import default_model

    code, out, err = run(["decode", LLAMA, "--prompt", "5,6", "--tokens", "3", "--chips", "1", "--precision", "fp32",
                          "--no-verify"], capsys)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("tokens"))
    assert line.split()[1] == ",".join(map(str, OrtDecoder(LLAMA).greedy([5, 6], 3)[0]))
    code, out, err = run(["decode", "--tokens", "2", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["tokens"] == OrtDecoder(default_model()).greedy([1, 2, 3], 2)[0]


def test_compiles_are_the_same_bytes_whatever_the_hash_seed(tmp_path):
    """Set and dict order that depends on PYTHONHASHSEED cannot show within one process: compile in two."""
    digests = []
    for seed in ("1", "2"):
        out = tmp_path / f"p{seed}.lpu"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "lpu.cli", "compile", str(LLAMA), "-o", str(out), "--chips", "4",
                        "--max-context", "320", "--partition", "hybrid"], check=True, env=env, capture_output=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_disasm_prints_text_that_assembles_to_the_same_streams(program, capsys):
    code, out, err = run(["disasm", program], capsys)
    assert code == 0
    back = isa.assemble(out)
    orig = isa.Program.load(program)
    assert back.header == orig.header and back.regions == orig.regions
    assert set(back.streams) == set(orig.streams)
    for k in orig.streams:
        assert np.array_equal(back.streams[k], orig.streams[k])


def test_missing_and_malformed_inputs_give_one_line(tmp_path, capsys):
    out = tmp_path / "x.lpu"
    one_line_error(*run(["compile", tmp_path / "nope.onnx", "-o", out], capsys)[::2], "no such file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    one_line_error(*run(["compile", junk, "-o", out], capsys)[::2], "junk.onnx")
    one_line_error(*run(["check", junk], capsys)[::2], "not an ONNX model")
    one_line_error(*run(["check", tmp_path / "nope.onnx"], capsys)[::2], "no such file")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [junk]  # nothing half-written


def test_unsupported_operator_is_named(tmp_path, capsys):
    m = onnx.load(str(LLAMA))
    node = next(n for n in m.graph.node if n.op_type == "Sigmoid")
    node.op_type = "HardSwish2"
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    code, _, err = run(["compile", bad, "-o", tmp_path / "b.lpu"], capsys)
    one_line_error(code, err, "HardSwish2")
    assert not (tmp_path / "b.lpu").exists()


def test_a_model_too_big_for_sram_says_what_it_needs_and_has(tmp_path, capsys):
    hw = config.load("groqchip1").to_dict()
    hw["chip"]["sram"]["bank_bytes"] = 4096
    f = tmp_path / "small.json"
    f.write_text(json.dumps(hw))
    code, _, err = run(["compile", LLAMA, "-o", tmp_path / "s.lpu", "--hw", f, "--chips", "1"], capsys)
    one_line_error(code, err, "needs")
    assert "bytes" in err and "has" in err
    assert not (tmp_path / "s.lpu").exists()


def test_corrupt_program_is_rejected(program, tmp_path, capsys):
    data = bytearray(program.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.lpu"
    bad.write_bytes(bytes(data))
    one_line_error(*run(["decode", bad, "--tokens", "1"], capsys)[::2], "corrupt")
    one_line_error(*run(["disasm", bad], capsys)[::2], "corrupt")


@pytest.mark.parametrize("argv, expect", [
    (["decode", "--tokens", "abc"], "invalid int value"),
    (["decode", "--prompt", "1,x"], "comma-separated integers"),
    (["decode", "--prompt", "1", "--tokens", "0"], "at least 1"),
    (["compile", "m.onnx"], "required"),
    (["frobnicate"], "invalid choice"),
    (["decode", "--precision", "fp8"], "invalid choice"),
    (["decode", "--chips", "10441", "--tokens", "1"], "1..10440"),
    (["decode", "--hw", "lp30", "--chips", "257", "--tokens", "1"], "1..256"),
    (["decode", "--chips", "16", "--partition", "tp", "--tokens", "1"], "directly linked"),
    (["decode", "--prompt", "1,99999", "--tokens", "1"], "outside the vocabulary"),
    (["decode", "--hw", "gpu9000", "--tokens", "1"], "not a preset"),
    (["decode", "--partition", "hybrid", "--chips", "2", "--tokens", "1"], "stages of at least 2 directly linked chips"),
    (["decode", "--partition", "hybrid", "--stages", "3", "--tokens", "1"], "valid values are 2, 4"),
    (["decode", "--stages", "2", "--tokens", "1"], "--partition hybrid only"),
])
def test_wrong_flags_give_one_line(argv, expect, capsys):
    one_line_error(*run(argv, capsys)[::2], expect)


def test_context_too_long_for_the_program(program, capsys):
    one_line_error(*run(["decode", program, "--prompt", "1", "--tokens", "400"], capsys)[::2], "max-context")


def test_the_installed_command_exits_non_zero_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lpu.cli", "decode", str(tmp_path / "none.lpu")], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("lpu: error:") and "Traceback" not in r.stderr


def test_version_prints_the_package_version_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's version action: print, then exit 0
        main(["--version"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and err == ""
    assert out == f"lpu {lpu.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", lpu.__version__)


# ---------------------------------------------------------------------- the default context
@pytest.mark.parametrize("name, limit", [("gpt2_optimum", 256), ("opt_optimum", 256), ("llama_optimum", None)])
def test_compile_without_max_context_takes_what_the_model_supports(name, limit, tmp_path, capsys):
    """GPT-2's and OPT's learned position tables hold 256 positions (their configs in tools/make_fixtures.py);
    Llama's rotary angles are computed, so the default 1024 holds."""
    out = tmp_path / "m.lpu"
    code, stdout, err = run(["compile", FIX / f"{name}.onnx", "-o", out, "--chips", "1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["max_context"] == (limit or 1024)
    assert isa.Program.load(out).header["max_context"] == (limit or 1024)


def test_an_explicit_max_context_beyond_the_model_names_its_limit(tmp_path, capsys):
    out = tmp_path / "m.lpu"
    code, _, err = run(["compile", FIX / "gpt2_optimum.onnx", "-o", out, "--max-context", "300"], capsys)
    one_line_error(code, err, "--max-context 300: the model supports at most 256 positions")
    assert not out.exists()


def test_decoding_past_the_model_limit_says_so(capsys):
    code, _, err = run(["decode", FIX / "gpt2_optimum.onnx", "--prompt", "1,2,3", "--tokens", "300", "--chips", "1"],
                       capsys)
    one_line_error(code, err, "need 303 positions; gpt2_optimum.onnx supports at most 256")


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`lpu ... | head -1`: no 'Broken pipe' error when the reader stops early."""
    r = subprocess.run(f"{sys.executable} -m lpu.cli decode --tokens 40 --chips 1 | head -c 10", shell=True,
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr == "", r.stderr


# ---------------------------------------------------------------------- lpu check
def test_check_reports_the_model_without_compiling(capsys, tmp_path):
    code, out, err = run(["check", FIX / "llama_ortopt.onnx", "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["supported"] and rep["family"] == "llama" and rep["unsupported"] == []
    assert "ONNX Runtime fused operators" in rep["form"] and "RotaryEmbedding" in rep["form"]
    m = onnx.load(str(FIX / "llama_ortopt.onnx"))
    counts = {}
    for nd in m.graph.node:
        counts[nd.op_type] = counts.get(nd.op_type, 0) + 1
    assert {o["op"]: o["count"] for o in rep["operators"]} == counts
    assert rep["fused"]["RotaryEmbedding (expanded)"] == counts["RotaryEmbedding"]
    # the LlamaConfig in tools/make_fixtures.py: 2 layers, hidden 192, 6 heads / 2 KV heads of 32, vocab 700,
    # intermediate 352, untied embeddings
    assert rep["shape"] == {"num_layers": 2, "hidden_size": 192, "heads": 6, "kv_heads": 2, "head_dim": 32,
                            "vocab_size": 700}
    h, kv, inter, v = 192, 2 * 32, 352, 700
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * inter + 2 * h  # q, k, v, o, gate/up/down, two norms
    # the fused rotary tables were cut to the config's 512 positions: the default context, and the cos and
    # sin rows (16 = half a head) of those 512 positions are stored too
    assert rep["default_max_context"] == 512 and rep["position_limit"] == 512
    assert rep["weights"] == 2 * v * h + 2 * per_layer + h + 2 * 512 * 16
    assert rep["kv_cache_bytes"]["fp16"] == 2 * 2 * kv * 512 * 2
    assert set(rep["fits"]) == {"groqchip1", "lp30"}
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_check_the_learned_position_limit(capsys):
    code, out, _ = run(["check", FIX / "opt_dynamo.onnx"], capsys)
    assert code == 0
    assert "default --max-context 256" in out and "opt" in out


def test_check_lists_every_unsupported_operator_and_fails(tmp_path, capsys):
    m = onnx.load(str(LLAMA))
    sig = [n for n in m.graph.node if n.op_type == "Sigmoid"]
    for nd in sig:
        nd.op_type = "HardSwish2"
    m.graph.node[[i for i, n in enumerate(m.graph.node) if n.op_type == "Softmax"][0]].op_type = "Softmax9"
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    code, out, err = run(["check", bad], capsys)
    assert code != 0
    assert f"! HardSwish2 x{len(sig)}" in out and "! Softmax9 x1" in out
    one_line_error(code, err, f"HardSwish2 x{len(sig)} (")
    assert "Softmax9 x1" in err
    code, _, err = run(["compile", bad, "-o", tmp_path / "b.lpu"], capsys)  # compile names them all too
    one_line_error(code, err, "unsupported ONNX operators: HardSwish2")
    assert "Softmax9" in err


def test_check_sizes_the_model_by_the_sram_it_needs(tmp_path, capsys):
    """The chip count `lpu check` gives is a lower bound: one chip fewer cannot hold the weights and the
    cache, so the compile must fail there."""
    hw = config.load("groqchip1").to_dict()
    hw["chip"]["sram"]["bank_bytes"] = 8192  # 176 banks x 8 KiB = 1.4 MiB per chip
    f = tmp_path / "small.json"
    f.write_text(json.dumps(hw))
    code, out, _ = run(["check", LLAMA, "--json", "--hw", f], capsys)
    rep = json.loads(out)
    need = rep["weights"] * 2 + rep["kv_cache_bytes"]["fp16"]
    n = rep["fits"][next(iter(rep["fits"]))]["chips_at_least"]["fp16"]
    per_chip = 176 * 8192
    assert n == -(-need // per_chip) and n >= 2  # ceil(bytes / SRAM per chip), by hand
    code, _, err = run(["compile", LLAMA, "-o", tmp_path / "x.lpu", "--hw", f, "--chips", n - 1,
                        "--max-context", 1024], capsys)
    one_line_error(code, err, "needs")


@pytest.mark.parametrize("name, op, what", [("llama_q4", "MatMulNBits", "MatMulNBits 4-bit"),
                                            ("llama_qdq8_channel", "DequantizeLinear", "DequantizeLinear")])
def test_compile_says_in_one_line_that_quantised_weights_were_dequantised(name, op, what, tmp_path, capsys):
    n = sum(nd.op_type == op for nd in onnx.load(str(FIX / f"{name}.onnx")).graph.node)
    code, out, err = run(["compile", FIX / f"{name}.onnx", "-o", tmp_path / "q.lpu", "--chips", "1"], capsys)
    assert code == 0, err
    notes = [l for l in out.splitlines() if l.startswith("note:")]
    assert notes == [f"note: quantised weights ({what} x{n}) dequantised to fp16 at compile time "
                     "(no int8 weight path yet)"]
    code, out, _ = run(["compile", FIX / f"{name}.onnx", "-o", tmp_path / "q.lpu", "--chips", "1", "--json"], capsys)
    assert json.loads(out)["dequantised"] == f"{what} x{n}"


@pytest.mark.parametrize("text, expect", [
    ("links = [[0, 0, 1, 0]]\nfoo = 1\n", "foo: unknown key; valid keys: links, classes"),
    ("links = [[0, 0, 1]]\n", "links[0] = [0, 0, 1]: expected [chip, port, chip, port]"),
    ("links = []\n", "links: expected a non-empty list"),
    ("links = [[0, 0, 1, 0], [0, 0, 2, 0]]\n", "port 0 of chip 0 belongs to two links"),
    ("links = [[0, 0, 0, 1]]\n", "joins chip 0 to itself"),
    ("links = [[0, 0, 1, 0, \"fast\"]]\n", "has class 'fast'; classes: local"),
    ("links = [[0, 40, 1, 0]]\n", "port 40; a groqchip1 chip has link ports 0..15"),
    ("links = [[0, 0, 1, 0]]\n[[classes]]\nname = \"local\"\nhop_latency_cycles = -3\n", "must not be negative"),
    ("links = [[0, 0, 1, 0]]\n[[classes]]\nnam = \"x\"\n", "classes[0].nam: unknown key"),
    ("links = [[0, 0, 1, 0]\n", "cannot parse"),
    ("links = [[0, 0, 1, 0], [2, 0, 3, 0]]\n", "chip 2 cannot be reached from chip 1"),
])
def test_a_bad_topology_file_gives_one_line_and_no_program(text, expect, tmp_path, capsys):
    topo = tmp_path / "topo.toml"
    topo.write_text(text)
    out = tmp_path / "out.lpu"
    code, _, err = run(["compile", LLAMA, "--partition", "pp", "--topology", topo, "-o", out], capsys)
    one_line_error(code, err, expect)
    assert not out.exists()


def test_topology_file_flags(tmp_path, capsys):
    code, _, err = run(["compile", LLAMA, "--topology", tmp_path / "none.toml", "-o", tmp_path / "o.lpu"], capsys)
    one_line_error(code, err, "not a readable file")
    topo = tmp_path / "pair.toml"
    topo.write_text("links = [[0, 0, 1, 0]]\n")
    code, _, err = run(["compile", LLAMA, "--topology", topo, "--chips", "3", "-o", tmp_path / "o.lpu"], capsys)
    one_line_error(code, err, "--chips 3: valid values are 1..2")
    code, out, _ = run(["estimate", LLAMA, "--topology", topo, "--max-context", "320", "--json"], capsys)
    assert code == 0 and json.loads(out)["chips"] == 2
