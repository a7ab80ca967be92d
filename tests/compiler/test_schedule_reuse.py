"""Pipeline stages that are the same program share one schedule (compiler/backend/schedule.py): the reused
schedule must be the one scheduling every stage afresh gives, instruction for instruction, and the compiled
program must still verify."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.backend import schedule as S
from compiler.driver import Compilation, Options, Report, run_passes
from isa import ProgramError
from lpu import config

FIX = Path(__file__).resolve().parents[1] / "fixtures"

BASE = json.loads((FIX / "configs" / "llama_optimum.json").read_text())


def _placed(tmp_path, layers, chips, partition, stages=0, ctx=320, preset="groqchip1"):
    cfg = dict(BASE, num_hidden_layers=layers)
    p = tmp_path / f"llama{layers}.json"
    p.write_text(json.dumps(cfg))
    hw = config.load(preset, chips=chips)
    opts = Options(chips=chips, max_context=ctx, partition=partition, stages=stages, timing_only=True, verify=True)
    c = Compilation(hw, opts, Report(), path=str(p), from_config=True)
    run_passes(c, "import", "place")
    return c


@pytest.mark.parametrize("layers, chips, partition, stages", [(8, 8, "pp", 0), (14, 16, "hybrid", 8)])
def test_a_reused_stage_schedule_is_the_fresh_one(tmp_path, layers, chips, partition, stages):
    c = _placed(tmp_path, layers, chips, partition, stages)
    plan = c.mapping.plan
    assert plan.staged and len(plan.stages) > 2
    for code in c.lowered.code:
        fresh = S.schedule(code, c.regions, c.hw, plan.per_stage, reuse=False)
        again = S.schedule(code, c.regions, c.hw, plan.per_stage, reuse=True)
        assert again.units == fresh.units > 2 * len(plan.stages) - 2  # stages and the transfers between them
        assert fresh.reused == 0 and again.reused > 0  # something was reused, and that is what is compared
        assert [n.uid for n in again.nodes] == [n.uid for n in fresh.nodes]
        assert np.array_equal(again.issue, fresh.issue)
        assert again.queue == fresh.queue
        assert again.cycles == fresh.cycles


def test_reuse_keeps_the_program_valid_and_deterministic(tmp_path):
    """The whole compile with reuse (the default) passes every verifier, and compiles to the same bytes twice."""
    from compiler.driver import compile_config

    cfg = dict(BASE, num_hidden_layers=8)
    p = tmp_path / "llama8.json"
    p.write_text(json.dumps(cfg))
    hw = config.load("groqchip1", chips=8)
    opts = Options(chips=8, max_context=320, partition="pp", verify=True)
    a, ra = compile_config(p, hw, opts)
    b, rb = compile_config(p, hw, opts)
    try:
        a.validate()
    except ProgramError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(str(exc))
    assert a.to_bytes() == b.to_bytes()
    assert ra.cycles == rb.cycles


def test_one_chip_per_stage_or_none_is_one_unit(tmp_path):
    """Without stages the scheduler is one list schedule over every chip, as before."""
    c = _placed(tmp_path, 2, 2, "tp")
    s = S.schedule(c.lowered.code[0], c.regions, c.hw, 0)
    assert s.units == 1 and s.reused == 0


def test_compile_json_says_how_many_stages_reused_a_schedule(tmp_path, capsys):
    """`lpu compile --json` reports, per bucket, the pipeline stages scheduled and how many of them took an
    earlier stage's schedule, the seconds of every pass and the process's peak memory: what the compile-at-scale
    figures of the README are read from."""
    from lpu import cli

    p = tmp_path / "llama8.json"
    p.write_text(json.dumps(dict(BASE, num_hidden_layers=8)))
    assert cli.main(["compile", str(p), "-o", str(tmp_path / "a.lpu"), "--chips", "8", "--partition", "pp",
                     "--max-context", "320", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stages"] == 8 and out["stages_scheduled"] == [8] * out["buckets"]
    assert all(0 < r < 8 for r in out["stages_reused"])  # the first stage (and the last, with the head) are fresh
    assert {"import", "lower", "place", "schedule", "emit"} <= set(out["pass_seconds"])
    assert all(v >= 0 for v in out["pass_seconds"].values())
    assert out["peak_rss_bytes"] > 50 * 2**20  # numpy and the compiler alone take more
    assert cli.main(["compile", str(p), "-o", str(tmp_path / "b.lpu"), "--chips", "8", "--partition", "pp",
                     "--max-context", "320"]) == 0
    assert "pipeline stages (all buckets) took an earlier identical stage's schedule" in capsys.readouterr().out
    tp = tmp_path / "tp.json"
    tp.write_text(json.dumps(dict(BASE, num_hidden_layers=2)))
    assert cli.main(["compile", str(tp), "-o", str(tmp_path / "c.lpu"), "--chips", "2", "--partition", "tp",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stages_scheduled"] == [0] * out["buckets"] and out["stages_reused"] == [0] * out["buckets"]


def test_periodic_deskews_every_interval_on_every_link(tmp_path):
    """A program longer than the deskew interval gets a DESKEW on each connected link's send queue at or
    after every whole interval before its end (the interval cut to 2,000 cycles so a small pipeline has some)."""
    import dataclasses

    c = _placed(tmp_path, 2, 2, "pp")
    hw = c.hw
    interval = 2000
    hw2 = dataclasses.replace(hw, chip=dataclasses.replace(hw.chip, c2c=dataclasses.replace(
        hw.chip.c2c, deskew_interval_cycles=interval)))
    s = S.schedule(c.lowered.code[0], c.regions, hw2, c.mapping.plan.per_stage)
    assert s.cycles > 2 * interval
    got: dict = {}
    for i, n in enumerate(s.nodes):
        if n.instr.op == "DESKEW" and n.tag.startswith("deskew "):
            k = int(n.tag.split()[1])
            assert int(s.issue[i]) >= k * interval
            got.setdefault((n.chip, n.instr["link"]), []).append(k)
    links = [(ch, l) for ch in range(2) for l in range(hw.links_per_chip) if hw.topology.connected(ch, l)]
    assert links and set(got) == set(links)
    for ks in got.values():
        assert sorted(ks) == list(range(1, len(ks) + 1)) and len(ks) >= 1
