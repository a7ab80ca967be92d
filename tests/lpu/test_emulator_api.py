"""The Emulator's public API: loading (image, files, corruption), host reads/writes, runs, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from isa import Instr, Program, ProgramError, Shard, Symbol, VECTOR_LANES
from lpu.emulator import CheckReport, EmulationError, Emulator
from builder import ProgramBuilder
from naive import NaiveMachine

LANES = VECTOR_LANES


def counter_program(buckets: int = 1) -> ProgramBuilder:
    """x += 1 (in place) and y = x * w, on two chips; w comes from the SRAM image."""
    b = ProgramBuilder(chips=2, buckets=buckets)
    rng = np.random.default_rng(0)
    x = b.region("x", chip=0, bank=0, rows=2, dtype="fp32", width=2)
    w = b.region("w", chip=0, bank=4, rows=2, dtype="fp16", width=2)
    y = b.region("y", chip=0, bank=8, rows=2, dtype="fp16")
    y1 = b.region("y1", chip=1, bank=8, rows=2, dtype="fp16")
    k = b.region("k", chip=0, bank=12, rows=1, dtype="i32")
    b.fill(w, rng.standard_normal(2 * LANES).astype(np.float16))
    b.fill(k, np.arange(LANES, dtype=np.int32) * 3 - 7)
    for bk in range(buckets):
        b.seq(0, "icu0", Instr("SYNC"), bucket=bk)
        b.seq(0, "vxm0", Instr("VXM", fn=16, queue=0, dst_reg=x, a_reg=x, b_mode=3, n=2, group=1, imm=1.0), bucket=bk)
        b.seq(0, "vxm1", Instr("VXM", fn=18, queue=1, dst_reg=y, a_reg=x, b_reg=w, n=2, group=1), bucket=bk)
        b.seq(0, "c2c0t", Instr("DESKEW", link=0), bucket=bk)
        b.seq(0, "c2c0t", Instr("SEND", link=0, src_reg=y, n=2), bucket=bk)
        b.seq(1, "c2c0r", Instr("RECV", link=0, dst_reg=y1, n=2), bucket=bk)
    return b


def test_run_returns_cycles_and_state_carries_over_tokens():
    b = counter_program()
    emu = Emulator(b.build())
    assert emu.warmup_seconds >= 0
    rep = emu.check(0)
    assert isinstance(rep, CheckReport) and emu.check(0) is rep  # cached
    x0 = np.arange(2 * LANES, dtype=np.float32) / 7
    emu.write("x", x0)
    assert emu.run(0) == rep.cycles > 0
    emu.run(0)
    assert np.array_equal(emu.read("x"), x0 + 1 + 1)
    w = emu.read("w")
    assert np.array_equal(emu.read("y1"), ((x0 + 2) * w).astype(np.float16).astype(np.float32))
    assert np.array_equal(emu.read("k"), (np.arange(LANES) * 3 - 7).astype(np.float32))
    emu.reset()
    assert not emu.read("x").any() and np.array_equal(emu.read("k"), (np.arange(LANES) * 3 - 7).astype(np.float32))
    assert rep.busy_by_family["icu"] == emu.machine.sync_cycles
    assert rep.busy_by_family["c2ct"] == emu.machine.deskew_cycles + 2 * 42


def test_determinism_two_runs_two_emulators():
    p = counter_program().build()
    a, b = Emulator(p), Emulator(p)
    x0 = np.random.default_rng(1).standard_normal(2 * LANES).astype(np.float32)
    for e in (a, b):
        e.write("x", x0)
    ca = [a.run(0) for _ in range(3)]
    cb = [b.run(0) for _ in range(3)]
    assert ca == cb and len(set(ca)) == 1
    assert np.array_equal(a.memory.view(np.uint32), b.memory.view(np.uint32))
    ref = NaiveMachine(p)
    ref.write("x", x0)
    for _ in range(3):
        ref.run(0)
    for name in p.symbols:
        assert np.array_equal(a.read(name), ref.read(name)), name


def test_buckets_are_checked_and_run_separately():
    b = counter_program(buckets=2)
    emu = Emulator(b.build())
    emu.write("x", np.zeros(2 * LANES))
    emu.run(1)
    emu.run(0)
    assert np.array_equal(emu.read("x"), np.full(2 * LANES, 2, np.float32))
    assert emu.check(1).bucket == 1


def test_save_load_file_and_image(tmp_path):
    p = counter_program().build()
    path = tmp_path / "prog.lpu"
    p.save(path)
    loaded = Program.load(path)  # the image arrays are memory-mapped views of the file
    emu, ref = Emulator(loaded), Emulator(p)
    for name in p.symbols:
        assert np.array_equal(emu.read(name).view(np.uint32), ref.read(name).view(np.uint32)), name
    assert emu.run(0) == ref.run(0)


def test_corrupted_program_fails_to_load():
    data = bytearray(counter_program().build().to_bytes())
    Program.from_bytes(bytes(data))  # intact
    data[len(data) // 2] ^= 0x01
    with pytest.raises(ProgramError, match="checksum mismatch"):
        Program.from_bytes(bytes(data))


def test_invalid_program_is_an_emulation_error():
    p = counter_program().build()
    p.header["chips"] = 9
    with pytest.raises(EmulationError, match="invalid program: header says 9 chips"):
        Emulator(p)


def test_memory_is_the_size_of_the_data():
    b = ProgramBuilder()
    b.region("a", bank=0, rows=10, row_vectors=3, width=4, dtype="fp16")  # 3 rows per bank x 3 vectors = 9 addresses
    b.region("b", bank=2, rows=1, dtype="fp32", addr=50)  # bank 2: addresses up to 51
    emu = Emulator(b.build())
    assert emu.layout.vectors == 9 * 4 + (51 - 9)  # physical rows (the checker's)
    # neither region shares a row: each has its own rows, fp16 as 2-byte bit patterns
    assert emu.memory.nbytes == 1 * LANES * 4
    assert emu.memory16.nbytes == 30 * LANES * 2


def test_aliasing_regions_share_memory_rows():
    b = ProgramBuilder()
    h = b.region("h", bank=0, rows=4, dtype="fp16", width=2)
    h2 = b.region("h2", bank=0, rows=2, dtype="fp16", width=2, addr=1)  # aliases h's vectors 2 and 3
    f = b.region("f", bank=4, rows=2, dtype="fp32")
    f16 = b.region("f16", bank=4, rows=1, dtype="fp16", addr=1)  # aliases f's vector 1: stays float32
    emu = Emulator(b.build())
    lay = emu.layout
    assert lay.store[h] == lay.store[h2] == 1 and lay.store[f] == lay.store[f16] == 0
    assert np.array_equal(lay.rows(h, np.array([2, 3])), lay.rows(h2, np.array([0, 1])))
    assert lay.rows(f, np.array([1]))[0] == lay.rows(f16, np.array([0]))[0]
    x = np.arange(4 * LANES, dtype=np.float32) / 8
    emu.write("h", x)
    assert np.array_equal(emu.read("h2"), x[2 * LANES:])
    emu.write("f", x[:2 * LANES] + 0.1)
    assert np.array_equal(emu.read("f16"), (x[LANES:2 * LANES] + 0.1).astype(np.float32))


def test_replicated_symbol_written_to_every_shard():
    b = ProgramBuilder(chips=2)
    r0 = b.region("r0", chip=0, bank=0, rows=1, symbol=False)
    r1 = b.region("r1", chip=1, bank=6, rows=1, symbol=False)
    b.symbols["v"] = Symbol("v", "act", "fp32", (2, 160), (Shard(0, r0, 0, 320, 0), Shard(1, r1, 0, 320, 0)))
    b.symbols["half"] = Symbol("half", "act", "fp32", (100,), (Shard(1, r1, 200, 100, 0),))
    emu = Emulator(b.build())
    v = np.arange(320, dtype=np.float32)
    emu.write("v", v.reshape(2, 160))
    assert np.array_equal(emu.read("v"), v)
    assert np.array_equal(emu.read("half"), v[200:300])
    rows = emu.layout.rows(r1, np.array([0]))
    assert np.array_equal(emu.memory[rows[0]], v)


def test_other_preset_lp30():
    from lpu import config

    b = ProgramBuilder(hw=config.load("lp30").with_chips(2).to_dict())
    s = b.region("s", chip=0, bank=300, rows=3, dtype="fp16", width=3)
    r = b.region("r", chip=1, bank=5, rows=3, dtype="fp16")
    b.fill(s, np.arange(3 * LANES, dtype=np.float16))
    topo = b.header()["topology"]
    b.seq(0, "c2c7t", Instr("SEND", link=7, src_reg=s, n=3))
    peer, pl = topo[0][7]
    b.seq(peer, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=r, n=3))
    emu = Emulator(b.build())
    emu.run(0)
    assert np.array_equal(emu.read("r"), np.arange(3 * LANES, dtype=np.float32))
