"""`lpu estimate`: per context bucket, the cycles the schedule checker proves, the lower bound and tokens/s,
without decoding. Checked against the compiler's own schedule (`compile --json`'s cycles_per_bucket) and
against what `decode` measures for tokens in each bucket."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lpu import cli

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = FIX / "llama_optimum.onnx"


def run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("est") / "llama.lpu"
    assert cli.main(["compile", str(MODEL), "-o", str(path), "--chips", "1", "--max-context", "400",
                     "--precision", "fp32"]) == 0
    return path


def test_estimate_equals_the_schedule_and_the_decode(program, tmp_path, capsys):
    est = run(["estimate", str(program), "--json"], capsys)
    comp = run(["compile", str(MODEL), "-o", str(tmp_path / "again.lpu"), "--chips", "1", "--max-context", "400",
                "--precision", "fp32", "--json"], capsys)
    assert est["cycles_per_token"] == comp["cycles_per_bucket"]
    assert est["lower_bound_cycles"] == comp["lower_bound_cycles"]
    assert est["context"] == [320, 400] and est["chips"] == 1 and est["clock_hz"] == 900_000_000
    assert est["tokens_per_second"] == [900_000_000 / c for c in est["cycles_per_token"]]
    assert est["bound_ratio"] == [round(c / b, 4) for c, b in zip(est["cycles_per_token"], est["lower_bound_cycles"])]
    assert est["sram_bytes_per_chip"] == [int(v) for v in comp["sram_bytes_per_chip"].values()]
    assert "compile_seconds" not in est and est["check_seconds"] > 0  # a program file: checked, not compiled
    import resource  # this process ran it: a process with numpy and numba loaded holds well over 64 MiB
    assert 64 << 20 < est["peak_rss_bytes"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # decode: tokens at positions 318..321 run in bucket 0 (318, 319) and bucket 1 (320, 321)
    dec = run(["decode", str(program), "--json", "--prompt", ",".join(["1"] * 318), "--tokens", "4"], capsys)
    assert dec["cycles_per_token"] == [est["cycles_per_token"][0]] * 2 + [est["cycles_per_token"][1]] * 2


def test_estimate_one_context_and_an_onnx_model(program, capsys):
    one = run(["estimate", str(program), "--context", "321", "--json"], capsys)
    assert one["context"] == [400] and len(one["cycles_per_token"]) == 1
    direct = run(["estimate", str(MODEL), "--chips", "1", "--max-context", "400", "--precision", "fp32", "--json"],
                 capsys)
    both = run(["estimate", str(program), "--json"], capsys)
    assert direct["cycles_per_token"] == both["cycles_per_token"]
    assert cli.main(["estimate", str(program)]) == 0
    assert "cycles/token" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["--context", "0"], "--context 0"), (["--context", "401"], "holds 400 positions")])
def test_estimate_errors_are_one_line(program, args, needle, capsys):
    rc = cli.main(["estimate", str(program)] + args)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_estimate_of_an_incomplete_config_is_one_line(tmp_path, capsys):
    """A config.json is compiled timing-only first (tests/compiler/test_timing_only.py); one lacking a size
    the graph needs is one line naming it."""
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama"}')
    rc = cli.main(["estimate", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and "lacks 'num_hidden_layers'" in err and len(err.strip().splitlines()) == 1

@pytest.mark.parametrize("context", [1, 321, 700, 1000])
def test_one_context_of_a_model_is_the_whole_programs_and_bucket_only_is_close(context, capsys):
    # --context N on a model compiles every bucket and reports N's: the whole program's figures, exactly.
    # --bucket-only lowers and schedules only N's bucket and the last (which sizes SRAM): a valid program for
    # that context alone (its schedule checked), the same lower bound, and cycles within a few percent of the
    # whole program's (SRAM placed for fewer buckets: 0-2.5% fewer on the fixtures, 1-8 chips, when measured)
    args = ["--chips", "2", "--max-context", "1000", "--json"]
    full = run(["estimate", str(MODEL)] + args, capsys)
    one = run(["estimate", str(MODEL), "--context", str(context)] + args, capsys)
    b = (context - 1) // 320
    for k in ("cycles_per_token", "lower_bound_cycles", "context"):
        assert one[k] == [full[k][b]]
    assert one["sram_bytes_per_chip"] == full["sram_bytes_per_chip"] and "bucket_only" not in one
    part = run(["estimate", str(MODEL), "--context", str(context), "--bucket-only"] + args, capsys)
    assert part["bucket_only"] is True and part["context"] == one["context"]
    assert part["lower_bound_cycles"] == one["lower_bound_cycles"]
    assert abs(part["cycles_per_token"][0] / one["cycles_per_token"][0] - 1) < 0.05


def test_bucket_only_needs_a_context(capsys):
    rc = cli.main(["estimate", str(MODEL), "--bucket-only"])
    err = capsys.readouterr().err
    assert rc == 2 and "--bucket-only needs --context" in err and len(err.strip().splitlines()) == 1


def test_a_context_past_the_default_cache_gets_a_cache_that_holds_it(capsys):
    # without --max-context the cache holds the context asked for (the llama fixture supports 2048)
    one = run(["estimate", str(MODEL), "--chips", "1", "--context", "1500", "--json"], capsys)
    assert one["context"] == [1500] and one["cycles_per_token"][0] > 0


def test_a_one_context_program_does_not_decode():
    from compiler.driver import Options, compile_model
    from lpu import config
    from lpu.decode import DecodeError, Decoder

    prog, _ = compile_model(MODEL, config.load("groqchip1", chips=1), Options(chips=1, max_context=700, only_context=5))
    assert [bk["first_position"] for bk in prog.header["buckets"]] == [0, 640]
    with pytest.raises(DecodeError, match="one context only"):
        Decoder(prog)
