"""When the fastest mapping by the estimate does not fit SRAM, `auto` compiles the next fastest that does
(compiler/driver.py `_compile`); when none fits, one line names them all. The SRAM is shrunk (bank_bytes) so
that on the 2-layer Llama fixture over 8 chips tensor-parallel, the fastest here, needs more than the chips
have and the hybrid mappings less: each precondition is checked by compiling that mapping alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from compiler.driver import Options, compile_model
from compiler.errors import CapacityError
from lpu import cli, config

MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "llama_optimum.onnx"


def _hw(bank_bytes: int):
    d = config.load("groqchip1", chips=8).to_dict()
    d["chip"]["sram"]["bank_bytes"] = bank_bytes
    return config.from_dict(d)


def _opts(**kw):
    return Options(chips=8, max_context=320, verify=False, **kw)


def test_auto_takes_the_next_fastest_mapping_that_fits():
    hw = _hw(16_384)
    with pytest.raises(CapacityError):
        compile_model(MODEL, hw, _opts(partition="tp"))
    prog, rep = compile_model(MODEL, hw, _opts())
    est = rep.mappings
    assert min(est, key=est.get) == "tp"  # the fastest by the estimate: it did not fit
    taken = f"{prog.header['partition']} {prog.header['stages']}"
    # the next fastest candidates in estimate order: the first that fits is taken
    order = sorted((k for k in est if k != "tp"), key=lambda k: (est[k], k))
    assert order[0] == "hybrid 2x4" and taken == "hybrid 2"
    alone, arep = compile_model(MODEL, hw, _opts(partition="hybrid", stages=2))
    assert arep.cycles == rep.cycles and alone.streams.keys() == prog.streams.keys()
    # with the whole SRAM the fastest is taken, as before
    full, frep = compile_model(MODEL, config.load("groqchip1", chips=8), _opts())
    assert full.header["partition"] == "tp"


def test_when_no_mapping_fits_one_line_names_them(tmp_path, capsys):
    hw = _hw(8_192)
    with pytest.raises(CapacityError) as exc:
        compile_model(MODEL, hw, _opts())
    msg = str(exc.value)
    assert "\n" not in msg and "with the tp mapping, the fastest by the estimate" in msg
    assert "nor with hybrid 2x4, hybrid 4x2, pp" in msg
    path = tmp_path / "tiny.json"
    import json

    path.write_text(json.dumps(hw.to_dict()))
    out = tmp_path / "x.lpu"
    rc = cli.main(["compile", str(MODEL), "-o", str(out), "--hw", str(path), "--chips", "8", "--max-context", "320"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "nor with" in err[0] and not out.exists()


def test_explicit_mappings_are_not_replaced():
    with pytest.raises(CapacityError) as exc:
        compile_model(MODEL, _hw(16_384), _opts(partition="tp"))
    assert "nor with" not in str(exc.value)
