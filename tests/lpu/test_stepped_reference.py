"""The schedule checker's claim, tested independently: for every program it accepts, executing each
instruction's whole effect at once in execution order (the executor) equals the timed hardware (the
cycle-stepped reference machine, tests/support/stepped.py), bit for bit, over all of memory.

- compiled decoders (the ONNX fixtures, the bundled model, the tiny IR decoders; 1, 2 and 8 chips; fp16 and
  fp32), a few tokens each, every region compared after every token;
- perturbed schedules of random hand-built programs and of a small compiled one: each perturbed program the
  checker accepts must agree; the counts of generated / accepted / rejected programs are printed;
- deliberately broken schedules the checker rejects: run anyway (the hazard pass switched off), the
  executor and the stepped machine disagree, or the stepped machine refuses; so the two are not the same
  model under two names.
"""
from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from compiler.driver import Options, compile_graph, compile_model
import isa
from isa import Instr, Machine, Program, VECTOR_LANES
from lpu import config
from lpu.emulator import EmulationError, Emulator
from lpu.emulator import check as C

from builder import ProgramBuilder
from memdiff import emulator_vectors, memory_difference
from perturb import Placed, perturb, placement, random_program, with_placement
from stepped import SteppedError, SteppedMachine
from tinyir import gpt2_like, llama_like

LANES = VECTOR_LANES
ROOT = Path(__file__).resolve().parents[2]
ONNX = {"gpt2_optimum": ROOT / "tests/fixtures/gpt2_optimum.onnx", "gpt2_dynamo": ROOT / "tests/fixtures/gpt2_dynamo.onnx",
        "llama_optimum": ROOT / "tests/fixtures/llama_optimum.onnx", "llama_dynamo": ROOT / "tests/fixtures/llama_dynamo.onnx",
        "llama_optimum_extdata": ROOT / "tests/fixtures/llama_optimum_extdata.onnx", "default": ROOT / "lpu/data/default.onnx"}
GRAPHS = {"gpt2_like": gpt2_like, "llama_like": llama_like}
CTX = 256  # the GPT-2 fixtures have 256 learned positions
TOKENS = [1, 2, 3]  # one token per step, positions 0, 1, 2


@functools.lru_cache(maxsize=None)
def compiled(model: str, chips: int, precision: str) -> bytes:
    hw = config.load("groqchip1", chips=chips)
    opts = Options(chips=chips, max_context=CTX, precision=precision)
    prog, _ = compile_model(ONNX[model], hw, opts) if model in ONNX else compile_graph(GRAPHS[model](), hw, opts)
    return prog.to_bytes()


def host_step(machine, program: Program, token: int, position: int) -> None:
    """What the decode driver writes for one token (lpu/decode.py)."""
    syms = program.symbols
    machine.write("input_ids", np.array([token], dtype=np.float32))
    if "position_ids" in syms:
        machine.write("position_ids", np.array([position], dtype=np.float32))
    if "attention_mask" in syms:
        mask = np.zeros(syms["attention_mask"].shape[0], dtype=np.float32)
        mask[:position + 1] = 1.0
        machine.write("attention_mask", mask)


def assert_same_memory(program: Program, emu: Emulator, ref: SteppedMachine, what: str) -> None:
    diff = memory_difference(program.regions, ref.all_vectors(), emulator_vectors(emu))
    assert diff is None, f"{what}: the stepped machine and the executor disagree: {diff}"


# ------------------------------------------------------------------------------------------- compiled
FAST = [("default", 2, "fp16"), ("llama_optimum", 1, "fp32"), ("gpt2_dynamo", 2, "fp32"), ("gpt2_like", 1, "fp16"),
        ("llama_like", 2, "fp16")]
ALL = [(m, c, p) for m in [*ONNX, *GRAPHS] for c in (1, 2, 8) for p in ("fp16", "fp32")]
CASES = [pytest.param(*case, id="-".join(map(str, case)), marks=() if case in FAST else pytest.mark.slow) for case in ALL]


@pytest.mark.parametrize("model,chips,precision", CASES)
def test_compiled_decoder_matches_the_stepped_machine_token_by_token(model, chips, precision):
    program = Program.from_bytes(compiled(model, chips, precision))
    emu, ref = Emulator(program), SteppedMachine(program)
    assert_same_memory(program, emu, ref, "after loading")
    for pos, tok in enumerate(TOKENS):
        for mach in (emu, ref):
            host_step(mach, program, tok, pos)
        cycles = emu.run(0)
        assert ref.run(0) == cycles  # the last event: the report's last readable write
        assert_same_memory(program, emu, ref, f"{model} at {chips} chips, {precision}, token {pos}")


# ------------------------------------------------------------------------------------------- perturbed
def _intervals(ref: SteppedMachine, bucket: int = 0) -> list[tuple[int, int]]:
    """(issue, last cycle it touches anything) of every instruction."""
    out = []
    for at in ref.issued(bucket):
        end = at.cycle + at.prof.busy
        for a in at.prof.accesses:
            end = max(end, at.cycle + a.last_time + (a.ready if a.write else a.hold))
        if at.prof.send is not None:
            s = at.prof.send
            end = max(end, at.cycle + s.t0 + (s.count - 1) * s.per_vector + s.arrive)
        out.append((at.cycle, end))
    return sorted(out)


def _concurrent(ref: SteppedMachine) -> bool:
    """Does some instruction start before an earlier-issued one is over? (A seq-built program: never.)"""
    reach = -1
    for start, end in _intervals(ref):
        if start < reach:
            return True
        reach = max(reach, end)
    return False


def compare_perturbed(p: Program, stats: Counter, what, tokens: int = 2) -> None:
    """Check p; if accepted, run `tokens` tokens on the executor and the stepped machine and compare."""
    stats["generated"] += 1
    try:
        emu = Emulator(p)
        emu.check(0)
    except EmulationError as exc:
        stats["rejected"] += 1
        stats[f"rejected: {exc.kind}"] += 1
        return
    stats["accepted"] += 1
    ref = SteppedMachine(p)
    stats["accepted and concurrent"] += _concurrent(ref)
    for tok in range(tokens):
        try:
            emu.run(0)
        except EmulationError as exc:  # a runtime error (an index) must happen on the timed machine too
            with pytest.raises(SteppedError) as e:
                ref.run(0)
            assert e.value.kind == "runtime", f"{what}: executor: {exc}; stepped: {e.value}"
            stats["accepted, runtime error on both"] += 1
            return
        try:
            ref.run(0)
        except SteppedError as exc:
            pytest.fail(f"the checker accepted a program the timed model forbids ({what}): {exc}")
        assert_same_memory(p, emu, ref, f"perturbed program ({what}), token {tok}")


def _report(name: str, stats: Counter) -> None:
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))


def checked_base(program: Program, tries: int = 6) -> tuple[Program, list[Placed]] | None:
    """The program, or what is left of it once the instructions the checker names are dropped (seq placement
    is hazard-free, but an instruction may clash with itself on a bank: an in-place COPY); None if that fails."""
    sched = placement(program)
    for _ in range(tries):
        try:
            Emulator(program).check(0)
            return program, sched
        except EmulationError as exc:
            if exc.index is None:
                return None
            words = isa.decode_many(program.streams[(0, exc.chip, exc.queue)])
            k = sum(ins.op != "NOP" for ins in words[:exc.index])
            mine = [p for p in sched if (p.chip, p.queue) == (exc.chip, exc.queue)]
            sched = [p for p in sched if p is not mine[k]]
            program = with_placement(program, sched)
    return None


def perturbed_hand_built(seeds: range, per_base: int) -> Counter:
    stats = Counter()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        got = checked_base(random_program(rng, chips=1 + seed % 2))
        if got is None:
            stats["bases rejected"] += 1
            continue
        stats["bases"] += 1
        base, sched = got
        m = Machine(base.header["hw"], base.regions)
        for j in range(per_base):
            new, what = perturb(rng, sched, m, n_changes=int(rng.integers(1, 5)))
            compare_perturbed(with_placement(base, new), stats, f"seed {seed} #{j}: {'; '.join(what)}")
    return stats


def test_perturbed_hand_built_programs_the_checker_accepts_match():
    stats = perturbed_hand_built(range(420), per_base=4)
    _report("perturbed hand-built programs", stats)
    assert stats["accepted"] >= 1000
    assert stats["rejected"] >= 100 and stats["accepted and concurrent"] >= 500  # neither trivial nor all rejected


@pytest.mark.slow
def test_perturbed_hand_built_programs_many_more():
    stats = perturbed_hand_built(range(420, 1920), per_base=4)
    _report("perturbed hand-built programs (slow)", stats)
    assert stats["accepted"] >= 3500


@functools.lru_cache(maxsize=None)
def small_compiled(chips: int) -> bytes:
    g = llama_like(layers=1, hidden=64, heads=2, kv_heads=1, inter=96, vocab=120, max_context=320)
    prog, _ = compile_graph(g, config.load("groqchip1", chips=chips), Options(chips=chips, max_context=CTX))
    return prog.to_bytes()


def perturbed_compiled(chips: int, count: int, seed: int) -> Counter:
    base = Program.from_bytes(small_compiled(chips))
    m = Machine(base.header["hw"], base.regions)
    sched = placement(base)
    rng = np.random.default_rng(seed)
    stats = Counter()
    for j in range(count):
        new, what = perturb(rng, sched, m, n_changes=int(rng.integers(1, 4)))
        p = with_placement(base, new)
        compare_perturbed(p, stats, f"{chips} chips, seed {seed} #{j}: {'; '.join(what)}", tokens=1)
    return stats


@pytest.mark.parametrize("chips", [1, 2])
def test_perturbed_compiled_programs_the_checker_accepts_match(chips):
    stats = perturbed_compiled(chips, 30, seed=chips)
    _report(f"perturbed compiled program, {chips} chips", stats)
    assert stats["accepted"] >= 3 and stats["rejected"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("chips", [1, 2])
def test_perturbed_compiled_programs_many_more(chips):
    stats = perturbed_compiled(chips, 500, seed=100 + chips)
    _report(f"perturbed compiled program, {chips} chips (slow)", stats)
    assert stats["accepted"] >= 100


# ------------------------------------------------------------------------------------------- not vacuous
@pytest.fixture
def unchecked(monkeypatch):
    """The executor with the checker's hazard pass switched off: it runs a schedule the checker rejects, in
    execution order, as if it had been accepted."""
    def run(program: Program):
        with pytest.raises(EmulationError) as e:
            Emulator(program).check(0)
        assert e.value.kind == "hazard", str(e.value)
        with monkeypatch.context() as mp:
            mp.setattr(C.Checker, "hazards", lambda self, *args: None)
            emu = Emulator(program)
            emu.run(0)
        ref = SteppedMachine(program)
        ref.run(0)
        return emu, ref
    return run


def _filled(b: ProgramBuilder, reg: int, seed: int) -> None:
    r = b.regions[reg]
    b.fill(reg, np.random.default_rng(seed).standard_normal(r.n_vectors * LANES).astype(np.float16 if r.dtype == "fp16" else np.float32))


def test_raw_hazard_read_before_the_write_lands_disagrees(unchecked):
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=1, dtype="fp32")
    y = b.region("y", bank=10, rows=1, dtype="fp16")
    z = b.region("z", bank=40, rows=1, dtype="fp32")
    _filled(b, x, 1)
    # COPY x -> y writes at 8, readable from 10; the VXM reads y at 1: on the chip it sees the old y (zeros),
    # the executor (COPY first in execution order) the new one
    b.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, n=1))
    b.at(1, 0, "vxm2", Instr("VXM", fn=0, queue=2, dst_reg=z, a_reg=y, n=1, group=1))
    emu, ref = unchecked(b.build())
    assert not ref.read("z").any()
    assert np.array_equal(emu.read("z"), emu.read("y")) and emu.read("z").any()


def test_war_hazard_write_lands_before_an_earlier_read_disagrees(unchecked):
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=8, dtype="fp16")
    y = b.region("y", bank=4, rows=8, dtype="fp32")
    z = b.region("z", bank=2, rows=1, dtype="fp16")
    _filled(b, x, 2)
    _filled(b, z, 3)
    # the VXM reads x[7] at 38; the COPY (later in execution order) overwrites x[7] at 16
    b.at(10, 0, "vxm0", Instr("VXM", fn=0, queue=0, dst_reg=y, a_reg=x, n=8, group=1))
    b.at(12, 0, "mem0", Instr("COPY", queue=0, dst_reg=x, dst_off=7, src_reg=z, n=1))
    emu, ref = unchecked(b.build())
    zv = emu.read("z")
    assert np.array_equal(ref.read("y")[7 * LANES:], zv)  # the chip: the VXM sees the new x[7]
    assert not np.array_equal(emu.read("y")[7 * LANES:], zv)
    assert memory_difference(emu.program.regions, ref.all_vectors(), emulator_vectors(emu)) is not None


def test_tile_row_overwritten_between_lw_and_acc_disagrees(unchecked):
    b = ProgramBuilder()
    w = b.region("w", bank=0, rows=4, dtype="fp16")
    x = b.region("x", bank=86, rows=1, dtype="fp16")
    src = b.region("src", bank=174, rows=1, dtype="fp16")
    out = b.region("out", bank=90, rows=1, dtype="fp32")
    for reg, seed in ((w, 4), (x, 5), (src, 6)):
        _filled(b, reg, seed)
    # the LW has taken row 2 long before the COPY overwrites it; the executor reads tile rows at ACC time
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    t = b.seq(0, "mxm0a", Instr("IW", unit=0))
    b.at(t, 0, "mem0", Instr("COPY", queue=0, dst_reg=w, dst_off=2, src_reg=src, n=1))
    b.at(t + 2, 0, "mxm0a", Instr("ACC", unit=0, x_reg=x, slot=0))
    b.seq(0, "mxm0a", Instr("EMIT", unit=0, slot=0, dst_reg=out, lanes=320))
    emu, ref = unchecked(b.build())
    x0 = ref.read("x")
    w0 = np.asarray(b.image[0][2], dtype=np.float32).reshape(4, LANES)  # the rows as the LW read them
    want = np.zeros(LANES, np.float32)
    for r in range(4):
        want = want + x0[r] * w0[r]
    assert np.array_equal(ref.read("out"), want)
    assert not np.array_equal(emu.read("out"), want)


def test_receive_before_arrival_is_refused_by_the_stepped_machine():
    b = ProgramBuilder(chips=2)
    s = b.region("s", chip=0, bank=0, rows=2, dtype="fp16")
    r = b.region("r", chip=1, bank=0, rows=2, dtype="fp16")
    # vector k can be stored from 42k + 246; a RECV at 244 stores vector 0 at 245
    b.at(0, 0, "c2c0t", Instr("SEND", link=0, src_reg=s, n=2))
    b.at(244, 1, "c2c0r", Instr("RECV", link=0, dst_reg=r, n=2))
    p = b.build()
    with pytest.raises(EmulationError, match="before it arrives"):
        Emulator(p).check(0)
    with pytest.raises(SteppedError, match=r"stores vector 0 at cycle 245, before it arrives at cycle 246") as e:
        SteppedMachine(p).run(0)
    assert e.value.kind == "link"
    b2 = ProgramBuilder(chips=2)  # one cycle later: both accept, and agree
    s = b2.region("s", chip=0, bank=0, rows=2, dtype="fp16")
    r = b2.region("r", chip=1, bank=0, rows=2, dtype="fp16")
    _filled(b2, s, 7)
    b2.at(0, 0, "c2c0t", Instr("SEND", link=0, src_reg=s, n=2))
    b2.at(245, 1, "c2c0r", Instr("RECV", link=0, dst_reg=r, n=2))
    p = b2.build()
    emu, ref = Emulator(p), SteppedMachine(p)
    emu.run(0)
    ref.run(0)
    assert_same_memory(p, emu, ref, "a RECV just in time")
    assert np.array_equal(ref.read("r"), ref.read("s"))


def test_bank_clash_is_refused_by_the_stepped_machine():
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=2, dtype="fp32")
    y = b.region("y", bank=20, rows=2, dtype="fp32")
    z = b.region("z", bank=40, rows=2, dtype="fp32")
    b.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, src_off=0, n=1))
    b.at(2, 0, "mem1", Instr("COPY", queue=1, dst_reg=z, src_reg=x, src_off=1, n=1))  # bank 0 held 0..3
    with pytest.raises(EmulationError, match="books bank 0"):
        Emulator(b.build()).check(0)
    with pytest.raises(SteppedError, match=r"reads bank 0 address 1 over cycles 2..5, but .* holds the bank over "
                                           r"cycles 0..3") as e:
        SteppedMachine(b.build()).run(0)
    assert e.value.kind == "bank"


def test_hazards_the_checker_rejects_mostly_change_results():
    """Of the perturbed programs rejected for a hazard, run unchecked: the timed machine and the executor
    disagree on many (the checker is not only pedantic), and agree on all those it accepts."""
    stats = Counter()
    for seed in range(60):
        rng = np.random.default_rng(10_000 + seed)
        base = random_program(rng, chips=1)
        m = Machine(base.header["hw"], base.regions)
        sched = placement(base)
        for _ in range(4):
            p = with_placement(base, perturb(rng, sched, m, n_changes=3)[0])
            try:
                Emulator(p).check(0)
                continue
            except EmulationError as exc:
                if exc.kind != "hazard":
                    continue
            stats["hazard"] += 1
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(C.Checker, "hazards", lambda self, *args: None)
                emu = Emulator(p)
                try:
                    emu.run(0)
                except EmulationError:
                    stats["runtime error"] += 1
                    continue
            ref = SteppedMachine(p)
            try:
                ref.run(0)
            except SteppedError as exc:
                stats[f"stepped refuses: {exc.kind}"] += 1
                continue
            differ = memory_difference(p.regions, ref.all_vectors(), emulator_vectors(emu)) is not None
            stats["results differ" if differ else "results agree"] += 1
    _report("hazard-rejected programs run unchecked", stats)
    assert stats["hazard"] >= 20 and stats["results differ"] >= stats["hazard"] // 4


# ------------------------------------------------------------------------------------------- findings
def test_a_packed_gather_waits_for_the_second_vector_of_a_straddling_row():
    """Found by the stepped machine: a packed GATHER whose row straddles two table vectors used to write
    destination vector 0 at t_addr + read latency + transit, one cycle before it read the second table
    vector its data needs (the checker cannot see that: every access it names was hazard-free). The
    profile (isa/timing.py, _p_gather) now writes one read interval later; both machines agree, with
    the destination in the table's own slice (transit 0, where it was acausal) and one hop away."""
    def program(dst_bank):
        b = ProgramBuilder()
        t = b.region("t", bank=0, rows=4, dtype="fp32")  # one vector per row, all in bank 0 (position -1)
        ix = b.region("ix", bank=40, rows=1, dtype="i32")
        d = b.region("d", bank=dst_bank, rows=1, dtype="fp32")
        b.fill(t, np.arange(4 * LANES, dtype=np.float32))
        b.fill(ix, np.full(LANES, 3, dtype=np.int32))  # row 3 of 100 elements: flat 300..399, vectors 0 and 1
        b.seq(0, "mem0", Instr("GATHER", queue=0, dst_reg=d, table_reg=t, idx_reg=ix, rows=12, elems=100))
        return b.build()

    for bank in (1, 3):
        p = program(bank)
        emu, ref = Emulator(p), SteppedMachine(p)
        emu.run(0)
        ref.run(0)
        assert np.array_equal(emu.read("d")[:100], np.arange(300, 400, dtype=np.float32))
        assert_same_memory(p, emu, ref, f"a packed GATHER, destination in bank {bank}")
