"""Timing-only compiles (`lpu compile --timing-only`, issue 11): the weights are never loaded (shape-only
constants, compiler.ir.Shaped), and the program is the normal compile's schedule without its SRAM image.

The expected values come from the independent path, the normal compile of the same file: the same cycles
and lower bounds per bucket, the same placement (regions) and the same instruction streams word for word."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.driver import Options, compile_model
from compiler.errors import CompileError
from compiler.frontend import import_graph, load_model
from compiler.frontend.cleanup import fold_constants
from compiler.frontend.loader import SHAPE_ONLY_ELEMENTS
from compiler.ir import Eqn, Graph, Shaped, ShapeOnlyError, Var, is_shaped
from isa import Program, ProgramError
from lpu import cli, config
from lpu.emulator import EmulationError, Emulator

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _compile(path, chips=2, max_context=400, timing_only=False):
    hw = config.load("groqchip1", chips=chips)
    return compile_model(path, hw, Options(chips=chips, max_context=max_context, timing_only=timing_only))


def _no_data_copy(tmp_path) -> Path:
    """llama_optimum_extdata without its .data file: any read of a weight would fail."""
    dst = tmp_path / "llama_optimum_extdata.onnx"
    shutil.copy(FIX / "llama_optimum_extdata.onnx", dst)
    assert not (tmp_path / "llama_optimum_extdata.onnx.data").exists()
    return dst


# ---------------------------------------------------------------------- the same program, no weights
@pytest.mark.parametrize("name, chips, ctx", [
    ("gpt2_optimum", 2, None), ("llama_optimum", 2, 400), ("qwen2_optimum", 1, 400), ("mixtral_moe", 2, 320),
    ("llama_optimum_extdata", 2, 400)])
def test_timing_only_is_the_normal_schedule_without_the_image(name, chips, ctx, tmp_path):
    normal, nrep = _compile(FIX / f"{name}.onnx", chips, ctx)
    src = _no_data_copy(tmp_path) if name == "llama_optimum_extdata" else FIX / f"{name}.onnx"
    timing, trep = _compile(src, chips, ctx, timing_only=True)
    assert trep.cycles == nrep.cycles and len(trep.cycles) >= 1
    assert trep.bounds == nrep.bounds
    assert timing.regions == normal.regions  # the same placement, bank by bank
    assert timing.streams.keys() == normal.streams.keys()
    assert all(np.array_equal(timing.streams[k], normal.streams[k]) for k in normal.streams)
    assert normal.image and sum(d.nbytes for _, _, d in normal.image) > 0
    assert timing.image == [] and timing.header["timing_only"] is True and "timing_only" not in normal.header
    assert timing.header["sram_bytes_per_chip"] == normal.header["sram_bytes_per_chip"]


def test_timing_only_compiles_are_deterministic(tmp_path):
    a, b = tmp_path / "a.lpu", tmp_path / "b.lpu"
    for out in (a, b):
        assert cli.main(["compile", "--timing-only", str(FIX / "llama_optimum.onnx"), "-o", str(out), "--chips", "1",
                         "--max-context", "320"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert Program.load(a).image == []


def test_big_initialisers_are_shape_only_and_small_ones_are_read(tmp_path):
    path = _no_data_copy(tmp_path)
    model = load_model(path, timing_only=True)
    g, _ = import_graph(model, 320, source=str(path), base_dir=str(tmp_path), timing_only=True)
    shaped = {k: v for k, v in g.consts.items() if is_shaped(v)}
    real = {k: v for k, v in g.consts.items() if not is_shaped(v)}
    assert shaped and real
    # every matmul weight and the embedding table are shape-only; nothing shape-only holds an array
    for e in g.eqns:
        if e.prim in ("linear", "gather") and e.inputs[0 if e.prim == "gather" else 1] in g.consts:
            w = e.inputs[0 if e.prim == "gather" else 1]
            if not w.startswith("table."):  # the rotary tables: computed by the importer from inv_freq
                assert is_shaped(g.consts[w]), w
    assert all(not isinstance(v, np.ndarray) for v in shaped.values())
    # the small constants with their data inline (norm gains of 192 elements here) are real arrays
    assert all(isinstance(v, np.ndarray) for v in real.values())
    # and the same file with its data present: the same small constants, bit for bit
    full, _ = import_graph(load_model(FIX / "llama_optimum_extdata.onnx"), 320, base_dir=str(FIX))
    for k, v in real.items():
        assert np.array_equal(full.consts[k], v), k


def test_only_tensors_past_the_threshold_or_without_their_data_are_shape_only():
    import onnx
    from onnx import TensorProto, helper

    from compiler.frontend.loader import shape_only

    small = helper.make_tensor("s", TensorProto.FLOAT, [SHAPE_ONLY_ELEMENTS], np.zeros(SHAPE_ONLY_ELEMENTS).tolist())
    big = helper.make_tensor("b", TensorProto.FLOAT16, [2, SHAPE_ONLY_ELEMENTS], np.zeros(2 * SHAPE_ONLY_ELEMENTS))
    ext = onnx.TensorProto()
    ext.CopyFrom(small)
    ext.ClearField("float_data")
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="nowhere.data")
    assert shape_only(small) is None
    b = shape_only(big)
    assert isinstance(b, Shaped) and b.shape == (2, SHAPE_ONLY_ELEMENTS) and b.dtype == np.float32 and b.name == "b"
    e = shape_only(ext, "/nonexistent")
    assert isinstance(e, Shaped) and e.shape == (SHAPE_ONLY_ELEMENTS,)


# ---------------------------------------------------------------------- Shaped: shapes without values
def test_shaped_moves_and_retypes_without_memory_and_refuses_values():
    w = Shaped((8192, 28672), np.float32, "w")  # 940 MB if it were an array
    assert w.T.shape == (28672, 8192) and np.transpose(w).shape == (28672, 8192)
    assert w[:, 3:10].shape == (8192, 7) and w[:, np.arange(28672)[::-1]].shape == (8192, 28672)
    assert w.reshape(-1).shape == (8192 * 28672,) and w.astype(np.float16).dtype == np.float16
    assert np.concatenate([w, w], axis=1).shape == (8192, 57344)
    assert [p.shape for p in np.split(w, 4, axis=1)] == [(8192, 7168)] * 4
    assert (w * 2).shape == w.shape and (1.0 / w.astype(np.float64)).dtype == np.float64
    assert np.take(w, [1, 2], axis=0).shape == (2, 28672)
    for read in (lambda: np.asarray(w), lambda: bool(w), lambda: w.sum(), lambda: w.tobytes(),
                 lambda: np.all(np.abs(w) == 1.0), lambda: np.add.reduce(w), lambda: np.array_equal(w, w),
                 lambda: float(w[0, 0]), lambda: np.zeros((2, 2)).__setitem__(slice(None), w[:2, :2])):
        with pytest.raises(ShapeOnlyError, match=r"values of the weight 'w'"):
            read()
    assert issubclass(ShapeOnlyError, CompileError)  # the command prints it as one line


def test_a_pass_that_needs_a_weights_values_fails_in_one_line():
    g = Graph(vars={"y": Var("y", (1, 1))}, consts={"w": Shaped((64, 128), np.float32, "w")},
              eqns=[Eqn("reduce", ("w",), ("y",), {"op": "sum", "axes": (0, 1), "keepdims": True})],
              inputs=(), outputs={"logits": "y"}, states={})
    with pytest.raises(ShapeOnlyError) as exc:
        fold_constants(g)
    assert "\n" not in str(exc.value) and "'w' [64, 128]" in str(exc.value)


# ---------------------------------------------------------------------- decode refuses, estimate works
@pytest.fixture(scope="module")
def timing_program(tmp_path_factory):
    path = tmp_path_factory.mktemp("to") / "t.lpu"
    assert cli.main(["compile", "--timing-only", str(FIX / "llama_optimum.onnx"), "-o", str(path), "--chips", "2",
                     "--max-context", "400"]) == 0
    return path


def _one_line(rc, err, needle):
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc not in (0, None) and len(lines) == 1 and lines[0].startswith("lpu: error: "), err
    assert needle in lines[0] and "Traceback" not in err


def test_decode_refuses_a_timing_only_program(timing_program, capsys):
    rc = cli.main(["decode", str(timing_program), "--tokens", "2"])
    out, err = capsys.readouterr()
    _one_line(rc, err, "t.lpu is a timing-only program (no weights): use `lpu estimate`")
    assert out == ""


def test_the_emulator_checks_a_timing_only_program_but_will_not_run_it(timing_program):
    prog = Program.load(timing_program)
    em = Emulator(prog)
    assert em.memory is None and em.memory16 is None  # no memory laid out, no image read
    assert [em.check(b).cycles for b in range(2)] == [int(bk["cycles"]) for bk in prog.header["buckets"]]
    for call in (lambda: em.run(0), lambda: em.write("input_ids", np.zeros(1)), lambda: em.read("logits"),
                 em.reset):
        with pytest.raises(EmulationError, match="timing-only program"):
            call()


def test_estimate_of_a_timing_only_program_and_of_an_onnx_file(timing_program, capsys):
    assert cli.main(["estimate", str(timing_program), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert cli.main(["estimate", "--timing-only", str(FIX / "llama_optimum.onnx"), "--chips", "2", "--max-context",
                     "400", "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    normal, rep = _compile(FIX / "llama_optimum.onnx", 2, 400)
    assert est["cycles_per_token"] == direct["cycles_per_token"] == rep.cycles
    assert est["lower_bound_cycles"] == rep.bounds and est["timing_only"] is True and direct["timing_only"] is True


def test_a_program_file_cannot_claim_timing_only_and_carry_an_image(timing_program, tmp_path):
    prog = Program.load(timing_program)
    prog.image = [(0, 0, np.zeros(320, np.float32))]
    with pytest.raises(ProgramError, match="timing-only program"):
        prog.validate()


def test_without_timing_only_the_missing_data_file_is_still_an_error(tmp_path, capsys):
    src = _no_data_copy(tmp_path)
    rc = cli.main(["compile", str(src), "-o", str(tmp_path / "x.lpu"), "--chips", "1"])
    _one_line(rc, capsys.readouterr().err, "llama_optimum_extdata.onnx")
    assert not (tmp_path / "x.lpu").exists()


# ---------------------------------------------------------------------- from a Hugging Face config.json
from compiler.driver import compile_config  # noqa: E402
from compiler.frontend import canonicalise  # noqa: E402
from compiler.frontend.from_config import FAMILIES, import_config  # noqa: E402

CONFIGS = FIX / "configs"  # written by tools/make_fixtures.py (write_configs) from the fixtures' Specs


def _canonical(g) -> list:
    """The graph up to names: per equation its prim, params, output shape and dtype, and its inputs as the
    equation producing them, a runtime input, or a constant (its shape; its value when it is a scalar)."""
    ref = {n: n for n in g.inputs}
    rows = []
    for k, e in enumerate(g.eqns):
        ins = []
        for i in e.inputs:
            if i in g.consts:
                c = g.consts[i]
                small = not is_shaped(c) and c.size <= 1 and not i.startswith("table.")
                ins.append(("const", tuple(c.shape)) + ((float(np.asarray(c).reshape(-1)[0]),) if small else ()))
            else:
                ins.append(ref[i])
        params = {a: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, tuple, list)) else v)
                  for a, v in e.params.items() if a != "state"}
        if e.prim == "kv_append":
            st = g.states[e.params["state"]]
            params["state"] = (st.layer, st.kind, st.heads, st.head_dim)
        ref[e.outputs[0]] = f"eqn {k}"
        rows.append((e.prim, tuple(ins), sorted(params.items()), g.vars[e.outputs[0]].shape, g.vars[e.outputs[0]].dtype))
    return rows


PAIRS = [("gpt2_optimum", "gpt2_optimum"), ("llama_optimum", "llama_optimum"), ("qwen2_optimum", "qwen2_optimum"),
         ("mistral_optimum", "mistral_optimum"), ("default", "../../lpu/data/default"),
         ("phi3_optimum", "phi3_optimum"), ("gemma_optimum", "gemma_optimum"),
         ("gpt_neox_optimum", "gpt_neox_optimum"), ("opt_optimum", "opt_optimum")]
LEARNED = ("gpt2_optimum", "opt_optimum")  # learned position tables: weights, shape-only in the config graph


@pytest.mark.parametrize("cfg, onnx_name", PAIRS)
def test_the_config_graph_is_the_importers_graph_of_its_export(cfg, onnx_name):
    path = FIX / f"{onnx_name}.onnx"
    g, facts = import_graph(load_model(path), 96, source=str(path), base_dir=str(path.parent))
    ours, ofacts, ctx = import_config(CONFIGS / f"{cfg}.json", 96, 1024)
    a, b = _canonical(canonicalise(g, facts)), _canonical(canonicalise(ours, ofacts))
    assert ctx == 96 and len(a) == len(b) > 60  # two layers each (OPT's, the shortest, are 64 equations)
    assert a == b
    # the position tables: the same shapes; the rotary ones the same values (computed, not loaded; GPT-NeoX's
    # cover its rotary dims only); the learned ones shape-only
    ta = sorted((k, v) for k, v in g.consts.items() if k.startswith("table."))
    tb = sorted((k, v) for k, v in ours.consts.items() if k.startswith("table."))
    assert [v.shape for _, v in ta] == [v.shape for _, v in tb]
    if cfg in LEARNED:
        assert len(tb) == 1 and is_shaped(tb[0][1])
    else:
        for (_, x), (_, y) in zip(sorted(ta, key=lambda t: t[1][3, 0, 0, 0]), sorted(tb, key=lambda t: t[1][3, 0, 0, 0])):
            np.testing.assert_allclose(x, y, atol=2e-6)
    assert all(is_shaped(v) for k, v in ours.consts.items() if not k.startswith("table.") and v.size > 1)


@pytest.mark.parametrize("cfg, onnx_name, chips, ctx", [
    ("llama_optimum", "llama_optimum", 2, 400), ("qwen2_optimum", "qwen2_optimum", 1, 320),
    ("gpt2_optimum", "gpt2_optimum", 8, None), ("default", "../../lpu/data/default", 8, 320),
    ("phi3_optimum", "phi3_optimum", 2, 320), ("gemma_optimum", "gemma_optimum", 1, 512),
    ("gpt_neox_optimum", "gpt_neox_optimum", 2, 320), ("opt_optimum", "opt_optimum", 1, None)])
def test_a_config_compiles_to_the_cycles_of_its_export(cfg, onnx_name, chips, ctx):
    hw = config.load("groqchip1", chips=chips)
    normal, nrep = compile_model(FIX / f"{onnx_name}.onnx", hw, Options(chips=chips, max_context=ctx))
    prog, rep = compile_config(CONFIGS / f"{cfg}.json", hw, Options(chips=chips, max_context=ctx))
    assert rep.cycles == nrep.cycles and rep.bounds == nrep.bounds
    assert prog.header["max_context"] == normal.header["max_context"]
    def placement(p):  # the regions up to their names (the weights' names differ)
        return [(r.chip, r.bank, r.width, r.addr, r.rows, r.row_vectors, r.dtype) for r in p.regions]
    assert placement(prog) == placement(normal)
    assert all(np.array_equal(prog.streams[k], normal.streams[k]) for k in normal.streams)
    assert prog.timing_only and prog.image == [] and prog.header["model"]["exporter"] == "config"


def test_lpu_estimate_and_compile_take_a_config(tmp_path, capsys):
    cfg = CONFIGS / "llama_optimum.json"
    assert cli.main(["estimate", str(cfg), "--chips", "2", "--max-context", "400", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    _, rep = _compile(FIX / "llama_optimum.onnx", 2, 400)
    assert est["cycles_per_token"] == rep.cycles and est["timing_only"] is True and est["context"] == [320, 400]
    out = tmp_path / "c.lpu"
    assert cli.main(["compile", str(cfg), "-o", str(out), "--chips", "2", "--max-context", "400", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cycles_per_bucket"] == rep.cycles
    rc = cli.main(["decode", str(out), "--tokens", "1"])
    _one_line(rc, capsys.readouterr().err, "timing-only program")
    rc = cli.main(["decode", str(cfg), "--tokens", "1"])
    _one_line(rc, capsys.readouterr().err, "has no weights to decode with")


def test_the_default_context_of_a_config_is_the_onnx_paths():
    # GPT-2: its 256 learned positions; Llama: 1024, capped by max_position_embeddings (512 here)
    assert import_config(CONFIGS / "gpt2_optimum.json", None, 1024)[2] == 256
    assert import_config(CONFIGS / "llama_optimum.json", None, 1024)[2] == 512
    assert import_config(CONFIGS / "llama_optimum.json", None, 320)[2] == 320
    with pytest.raises(CompileError, match="at most 256 positions"):
        import_config(CONFIGS / "gpt2_optimum.json", 300, 1024)


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "config.json"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not a JSON file"),
    ('{"hidden_size": 64}', "no model_type"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}', "lacks 'num_hidden_layers'"),
    ('{"model_type": "bloom"}', "model_type 'bloom' is not built from a config yet (the config compile builds "
                                + ", ".join(FAMILIES)),
    ('{"model_type": "falcon"}', "not built from a config yet"),
    ('{"model_type": "gpt2", "n_layer": "two", "n_embd": 64, "n_head": 4, "vocab_size": 10, '
     '"n_positions": 64}', "n_layer = 'two'"),
    ('{"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4, '
     '"num_key_value_heads": 3, "intermediate_size": 8, "vocab_size": 10}', "do not fit")])
def test_a_bad_config_is_one_line(text, needle, tmp_path, capsys):
    path = _write(tmp_path, text)
    for argv in (["compile", str(path), "-o", str(tmp_path / "x.lpu"), "--chips", "1"],
                 ["estimate", str(path), "--chips", "1"]):
        rc = cli.main(argv)
        _one_line(rc, capsys.readouterr().err, needle)
    assert not (tmp_path / "x.lpu").exists()


def test_llama_2_70b_imports_in_seconds_and_without_weights():
    import time
    import tracemalloc

    cfg = dict(model_type="llama", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
               num_key_value_heads=8, intermediate_size=28672, vocab_size=32000, max_position_embeddings=4096,
               tie_word_embeddings=False)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_text(json.dumps(cfg))
        tracemalloc.start()
        t0 = time.perf_counter()
        g, facts, ctx = import_config(path, None, 1024)
        g = canonicalise(g, facts)
        secs = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    from compiler.sizing import shape

    weights = sum(v.size for k, v in g.consts.items() if is_shaped(v))
    assert weights == shape(cfg)["params"] == 68_976_648_192  # every parameter, shape-only
    assert g.meta["num_layers"] == 80 and g.meta["kv_heads"] == 8 and ctx == 1024
    assert peak < 64 << 20, peak  # the weights would be 138 GB at fp16
    assert secs < 30, secs


def test_more_regions_than_the_instruction_fields_name_is_one_line(tmp_path, monkeypatch, capsys):
    """An instruction's region fields are REGION_BITS wide and name a region of the instruction's chip: a
    chip that needs more regions is refused in one line before any instruction names one it cannot encode
    (with the field 4 bits wide here, so that a small config reaches it; the real width is 18 bits)."""
    from compiler.backend.lower import core
    from lpu import cli

    cfg = FIX / "configs" / "llama_optimum.json"
    out = tmp_path / "x.lpu"
    monkeypatch.setattr(core, "REGION_BITS", 4)
    assert cli.main(["compile", str(cfg), "-o", str(out), "--chips", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs more than 16 regions" in err and "4-bit region field" in err
    assert err.startswith("lpu: error: chip ")
    assert not out.exists()
