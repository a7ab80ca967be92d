"""The fast paths of the executor against the serial one and the naive interpreter, bit for bit:
fp16 storage (uint16 bit patterns, both conversion paths), the memory layout (private column-major
regions, shared rows for aliasing ones, fp16 regions aliased with fp32 kept as float32), chips run in
parallel threads, and the image loader's release of file pages."""
from __future__ import annotations

import numpy as np
import pytest

from isa import Instr, Program, VECTOR_LANES
from lpu.emulator import EmulationError, Emulator
from lpu.emulator import kernels as K
from builder import ProgramBuilder
from lpu.emulator.machine import _release_file_pages, default_threads
from naive import NaiveMachine

from test_emulator_kernels import assert_same, specials
from test_emulator_perf import synthetic

LANES = VECTOR_LANES


# ------------------------------------------------------------------------------------------- fp16
@pytest.mark.parametrize("soft", [False, True], ids=["default", "bit-tricks"])
def test_fp16_to_float32_every_half_exact(soft):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(h.size, dtype=np.float32)
    K.f16_bits_to_f32(h, out, soft)
    want = h.view(np.float16).astype(np.float32)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))  # NaN payloads and signs too


@pytest.mark.parametrize("soft", [False, True], ids=["default", "bit-tricks"])
def test_float32_to_fp16_exact_on_random_edge_and_tie_bits(soft):
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2 ** 32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    hf = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    hf = np.sort(hf[np.isfinite(hf)].astype(np.float32))
    ties = ((hf[:-1].astype(np.float64) + hf[1:]) / 2).astype(np.float32)  # exactly between neighbours
    near = np.concatenate([ties.view(np.uint32) - 1, ties.view(np.uint32) + 1])
    edge = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFBFFFFF, 0x477FEFFF, 0x477FF000,
                     0x477FF001, 0x47800000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x387FC000, 0x387FE000, 0x38800000,
                     0x00000001, 0x807FFFFF], dtype=np.uint32)
    x = np.concatenate([bits, hf.view(np.uint32), ties.view(np.uint32), near, edge]).view(np.float32)
    out = np.empty(x.size, dtype=np.uint16)
    K.f32_to_f16_bits(x, out, soft)
    with np.errstate(all="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    bad = np.nonzero(out != want)[0]
    assert bad.size == 0, f"{bad.size} mismatches, first {x.view(np.uint32)[bad[0]]:#010x}"


def test_fp16_regions_are_stored_as_half_bits():
    b = ProgramBuilder()
    h = b.region("h", bank=0, rows=2, dtype="fp16", width=2)
    with np.errstate(over="ignore"):
        vals = specials(np.random.default_rng(12), 2 * LANES).astype(np.float16)
    b.fill(h, vals)
    emu = Emulator(b.build())
    assert emu.layout.store[h] == K.ST_F16 and emu.layout.base[h] >= 0
    assert np.array_equal(emu.memory16[emu.layout.rows(h, np.arange(2))].reshape(-1), vals.view(np.uint16))
    assert emu.memory.nbytes == 0  # nothing is float32


# ------------------------------------------------------------------------------------------- layout
def _mixed_store_program() -> ProgramBuilder:
    """Tiles and operands in every kind of storage: private fp16 (column-major), fp16 sharing rows with
    fp16 (bank layout, uint16), fp16 sharing rows with fp32 (float32), across chips and links."""
    rng = np.random.default_rng(13)
    b = ProgramBuilder(chips=2)
    wp = b.region("wp", bank=0, rows=40, row_vectors=2, width=4, dtype="fp16")  # private
    ws = b.region("ws", bank=8, rows=40, row_vectors=2, width=4, dtype="fp16")
    b.region("ws_alias", bank=8, rows=8, row_vectors=2, width=4, dtype="fp16", addr=16)  # aliases ws rows 32..39
    wf = b.region("wf", bank=16, rows=40, dtype="fp16", width=4)
    b.region("wf_f32", bank=16, rows=4, dtype="fp32", width=4, addr=9)  # aliases wf rows 36..39: float32
    for r, rv in ((wp, 2), (ws, 2), (wf, 1)):
        b.fill(r, (rng.standard_normal(40 * rv * LANES) * 0.5).astype(np.float16))
    x = b.region("x", bank=24, rows=2, dtype="fp16")
    b.fill(x, rng.standard_normal(2 * LANES).astype(np.float16))
    y = b.region("y", bank=28, rows=4, dtype="fp16", width=2)
    z = b.region("z", bank=32, rows=2, dtype="fp32")
    ix = b.region("ix", bank=36, rows=1, dtype="i32")
    b.fill(ix, np.arange(LANES, dtype=np.int32) % 7)
    g = b.region("g", bank=40, rows=2, dtype="fp16", width=2)
    r1 = b.region("r1", chip=1, bank=0, rows=4, dtype="fp16", width=2)
    s1 = b.region("s1", chip=1, bank=4, rows=4, dtype="fp32")
    units = []
    for k, (reg, col) in enumerate(((wp, 1), (ws, 0), (wf, 0))):
        u = k % 2
        b.seq(0, f"mxm{u}w", Instr("LW", unit=u, src_reg=reg, row0=3, col=col, rows=37))
        b.seq(0, f"mxm{u}a", Instr("IW", unit=u))
        b.seq(0, f"mxm{u}a", Instr("ACC", unit=u, x_reg=x, x_off=k % 2, x_lane=11 * k, slot=k, accumulate=0))
        b.seq(0, f"mxm{u}a", Instr("EMIT", unit=u, slot=k, dst_reg=y, dst_off=k, dst_lane=0, src_lane=0, lanes=320))
        units.append(u)
    b.seq(0, "mxm0a", Instr("EMIT", unit=0, slot=0, dst_reg=z, dst_off=1, dst_lane=3, src_lane=7, lanes=200))
    b.seq(0, "vxm0", Instr("VXM", fn=18, queue=0, dst_reg=y, dst_off=3, a_reg=y, a_off=0, b_reg=z, b_off=1, n=1, group=1))
    b.seq(0, "vxm1", Instr("VXM", fn=33, queue=1, dst_reg=z, dst_off=0, a_reg=y, a_off=0, n=1, group=4))
    b.seq(0, "mem0", Instr("GATHER", queue=0, dst_reg=g, table_reg=wf, idx_reg=ix, idx_lane=5, base=0, rows=40))
    b.seq(0, "mem1", Instr("SCATTER", queue=1, table_reg=ws, src_reg=y, src_off=1, idx_reg=ix, idx_lane=6))
    b.seq(0, "c2c0t", Instr("SEND", link=0, src_reg=y, n=4))
    b.seq(0, "c2c0t", Instr("SEND", link=0, src_reg=z, n=2))
    peer, pl = b.header()["topology"][0][0]
    assert peer == 1
    b.seq(1, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=r1, n=4))
    b.seq(1, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=s1, n=2))
    b.seq(1, "sxm0", Instr("SXM", fn=0, queue=0, dst_reg=r1, dst_off=0, src_reg=r1, src_off=1, n=3, shift=17))
    return b


@pytest.mark.parametrize("threads", [1, 2])
def test_every_storage_kind_matches_naive(threads):
    b = _mixed_store_program()
    p = b.build()
    emu, ref = Emulator(p, threads=threads), NaiveMachine(p)
    lay = emu.layout
    name = {r.name: r.id for r in p.regions}
    assert lay.base[name["wp"]] >= 0 and lay.store[name["wp"]] == K.ST_F16
    assert lay.base[name["ws"]] < 0 and lay.store[name["ws"]] == K.ST_F16
    assert lay.base[name["wf"]] < 0 and lay.store[name["wf"]] == K.ST_F32
    for _ in range(2):
        emu.run(0)
        ref.run(0)
    assert_same(emu, ref)


def test_private_tiles_are_contiguous_rows():
    b = ProgramBuilder()
    w = b.region("w", bank=0, rows=320, row_vectors=3, width=16, dtype="fp16")
    x = b.region("x", bank=20, rows=1, dtype="fp16")
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=100, col=2, rows=160))
    b.seq(0, "mxm0a", Instr("IW", unit=0))
    b.seq(0, "mxm0a", Instr("ACC", unit=0, x_reg=x, slot=0))
    emu = Emulator(b.build())
    emu.run(0)
    tiles = emu._buckets[0].tiles
    assert np.array_equal(np.diff(tiles), np.ones(159, np.int64))
    assert tiles[0] == emu.layout.rows(w, np.array([100 * 3 + 2]))[0]


# ------------------------------------------------------------------------------------------- threads
def _random_image(p: Program, seed: int) -> None:
    """Random initial contents for every region of p (as SRAM image: cheap for the naive machine too)."""
    rng = np.random.default_rng(seed)
    dt = {"fp32": np.float32, "fp16": np.float16, "i32": np.int32}
    for r in p.regions:
        p.image.append((r.id, 0, (rng.standard_normal(r.n_vectors * LANES) * 2).astype(dt[r.dtype])))


@pytest.mark.parametrize("chips,threads", [(4, 2), (4, 3), (4, 4), (3, 2), (8, 2)])
def test_parallel_chip_groups_bit_identical_to_serial_and_naive(chips, threads):
    p = synthetic(chips=chips, per_queue=24, accs=40, link_vectors=6, n=2)
    _random_image(p, chips * 10 + threads)
    par, ser, ref = Emulator(p, threads=threads), Emulator(p, threads=1), NaiveMachine(p)
    for _ in range(2):  # state carries over tokens
        assert par.run(0) == ser.run(0)
        ref.run(0)
    b = par._buckets[0]
    assert b.starts is not None and b.groups == min(threads, chips)
    assert (b.wait_grp >= 0).any()  # RECVs really wait for other groups
    assert ser._buckets[0].starts is None
    assert np.array_equal(par.memory.view(np.uint32), ser.memory.view(np.uint32))
    assert np.array_equal(par.memory16, ser.memory16)
    assert np.array_equal(par._acc.view(np.uint32), ser._acc.view(np.uint32))
    assert_same(par, ref)


def test_parallel_runtime_error_stops_the_waiting_groups():
    """Chip 0 waits for chip 1's SEND; chip 1 fails before it: the error is chip 1's, nothing hangs."""
    b = ProgramBuilder(chips=2)
    t = b.region("t", chip=1, bank=0, rows=4, dtype="fp16")
    ix = b.region("ix", chip=1, bank=2, rows=1, dtype="i32")
    d = b.region("d", chip=1, bank=4, rows=1, dtype="fp16")
    r = b.region("r", chip=0, bank=0, rows=1, dtype="fp16")
    a = b.region("a", chip=0, bank=2, rows=1, dtype="fp32")
    b.seq(0, "vxm0", Instr("VXM", fn=16, queue=0, dst_reg=a, a_reg=a, b_mode=3, n=1, group=1, imm=1.0))
    b.seq(1, "mem0", Instr("GATHER", queue=0, dst_reg=d, table_reg=t, idx_reg=ix, idx_lane=0, base=0, rows=4))
    b.seq(1, "c2c0t", Instr("SEND", link=0, src_reg=d, n=1))
    peer, pl = b.header()["topology"][1][0]
    b.seq(peer, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=r, n=1))
    emu = Emulator(b.build(), threads=2)
    emu.run(0)  # index 0: fine
    assert emu._buckets[0].groups == 2
    emu.memory[emu.layout.rows(ix, np.array([0]))[0], 0] = 0.5  # a corrupt index
    with pytest.raises(EmulationError, match=r"chip 1, .*GATHER.*index 0.5 .*is not an integer"):
        emu.run(0)
    emu.memory[emu.layout.rows(ix, np.array([0]))[0], 0] = 2
    emu.run(0)  # and the emulator is usable again


def test_default_threads_from_environment(monkeypatch):
    monkeypatch.setenv("LPU_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("LPU_THREADS", "many")
    with pytest.raises(EmulationError, match="LPU_THREADS"):
        default_threads()
    monkeypatch.delenv("LPU_THREADS")
    assert default_threads() >= 1
    with pytest.raises(EmulationError, match="threads"):
        Emulator(ProgramBuilder().build(), threads=0)


# ------------------------------------------------------------------------------------------- loading
def test_release_file_pages_only_touches_file_mappings(tmp_path):
    a = np.arange(1 << 20, dtype=np.float32)
    _release_file_pages(a)  # anonymous memory: must be left alone (MADV_DONTNEED would zero it)
    assert np.array_equal(a, np.arange(1 << 20, dtype=np.float32))
    path = tmp_path / "x.bin"
    a.tofile(path)
    m = np.memmap(path, dtype=np.uint8, mode="r")
    v = m[4096 * 3 + 17:].view(np.uint8)[:4096 * 40]
    np.asarray(m).sum()  # every page of the mapping resident

    def rss_kib() -> int:  # the mapping's resident size, from the kernel's account of this process
        text = open("/proc/self/smaps").read().split("\n")
        for i, line in enumerate(text):
            if line.endswith(str(path)):
                return next(int(x.split()[1]) for x in text[i + 1:] if x.startswith("Rss:"))
        raise AssertionError("mapping not found")

    before = rss_kib()
    _release_file_pages(v)
    # the whole pages inside v, by hand: v starts 17 bytes into page 3 and spans 40 pages, so pages 4..42
    # leave the resident set (at least: the kernel may drop the rest of a large folio with them)
    assert before - rss_kib() >= 39 * 4096 // 1024
    assert np.array_equal(np.asarray(m).view(np.float32)[:1 << 20], a)  # read back from the page cache
