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
