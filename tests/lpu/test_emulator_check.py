"""The schedule checker: valid hand-scheduled programs pass; each kind of broken schedule is rejected
with an error naming the chip, cycle, queue and instruction at fault and the other party.

Cycle numbers in these tests are hand calculations from the groqchip1 preset and isa/timing.py:
bank b sits at floorplan position -(b//2 + 1) (West hemisphere), one hop per cycle; SRAM read latency 3,
write latency 1; an fp32 vector holds its bank 4 cycles, an fp16 vector 2; a write is readable
write_latency + hold - 1 cycles after it happens.
"""
from __future__ import annotations

import pytest

import isa
from isa import Instr, VECTOR_LANES
from lpu.emulator import EmulationError, Emulator
from builder import ProgramBuilder

LANES = VECTOR_LANES


def check(b: ProgramBuilder):
    return Emulator(b.build()).check(0)


def rejects(b: ProgramBuilder, kind: str, match: str) -> EmulationError:
    with pytest.raises(EmulationError, match=match) as ei:
        check(b)
    assert ei.value.kind == kind, str(ei.value)
    return ei.value


# ------------------------------------------------------------------------------------------- RAW
def raw_program(vxm_cycle: int) -> ProgramBuilder:
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=1, dtype="fp32")  # position -1
    y = b.region("y", bank=10, rows=1, dtype="fp16")  # position -6
    z = b.region("z", bank=40, rows=1, dtype="fp32")
    # COPY x -> y at 0: write at 3 + 5 hops = 8, fp16 readable at 8 + 1 + 2 - 1 = 10
    b.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, n=1))
    b.at(vxm_cycle, 0, "vxm2", Instr("VXM", fn=0, queue=2, dst_reg=z, a_reg=y, n=1, group=1))
    return b


def test_valid_program_passes_and_reports_cycles():
    rep = check(raw_program(10))
    # VXM at 10: reads y at 10, result at 10 + 3 + 6 hops in + copy 1 + 21 hops out = 41, fp32 readable at 41 + 4
    assert rep.cycles == 45
    assert rep.instructions == 3  # COPY, NOP(10), VXM
    # busy: COPY of one fp32 vector holds 4 cycles; the VXM's interval is 4 (fp32 destination)
    assert rep.busy_by_family["mem"] == 4 and rep.busy_by_family["vxm"] == 4 and rep.busy_by_family["icu"] == 0
    assert 0 < rep.utilisation("mem") < 1


def test_raw_operand_not_ready():
    e = rejects(raw_program(1), "hazard", r"RAW hazard")
    assert (e.chip, e.cycle, e.queue, e.index) == (0, 1, "vxm2", 1)  # after the NOP
    assert e.instr.startswith("VXM fn=copy queue=2")
    assert e.other["queue"] == "mem0" and e.other["cycle"] == 0 and e.other["instr"].startswith("COPY")
    assert "reads region 'y' vector 0 (chip 0, bank 10, address 0) at cycle 1" in str(e)
    assert "writes it at cycle 8, readable only from cycle 10" in str(e)
    assert "bucket 0: chip 0, cycle 1, queue vxm2, instruction #1 `VXM fn=copy" in str(e)


def test_raw_on_mxm_shadow_tile():
    b = ProgramBuilder()
    w = b.region("w", bank=86, rows=4, dtype="fp16")  # position -44: 2 hops from MXM unit 0 at -46
    # LW at 0: rows reach the shadow buffer from 3 + 2 = 5 (its commit cycle); 2 cycles per row (one bank),
    # so the last row is in at 5 + 6 and the tile is readable from 12
    b.at(0, 0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    b.at(8, 0, "mxm0a", Instr("IW", unit=0))  # LW busy: 4 rows x 2 cycles
    e = rejects(b, "hazard", r"RAW hazard: reads the shadow tile of MXM unit 0 \(chip 0\) at cycle 8, but .*LW.* "
                             r"writes it at cycle 5, readable only from cycle 12")
    assert (e.chip, e.cycle, e.queue) == (0, 8, "mxm0a") and e.other["instr"].startswith("LW")


def test_iw_before_the_lw_takes_effect_installs_nothing():
    b = ProgramBuilder()
    w = b.region("w", bank=0, rows=4, dtype="fp16")  # 45 hops from MXM unit 0: the LW takes effect at 48
    b.at(0, 0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    b.at(8, 0, "mxm0a", Instr("IW", unit=0))
    e = rejects(b, "structure", r"installs the shadow tile, but no LW loaded one earlier in execution order")
    assert (e.cycle, e.queue) == (8, "mxm0a")


def test_raw_on_active_tile_acc_right_after_iw():
    b = ProgramBuilder()
    w = b.region("w", bank=80, rows=4, dtype="fp16")
    x = b.region("x", bank=84, rows=1, dtype="fp16")  # position -43: 3 hops from MXM unit 0 at -46
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    b.seq(0, "mxm0a", Instr("IW", unit=0))
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    t2 = b.done[0]
    b.at(t2, 0, "mxm0a", Instr("ACC", unit=0, x_reg=x, slot=0))  # reads the active tile at t2 + 6
    # IW (same queue) at t2 + 5: installs before the activation arrives (it executes first) but is
    # readable only from t2 + 7: one cycle too late
    b.at(t2 + 5, 0, "mxm0a", Instr("IW", unit=0))
    e = rejects(b, "hazard", rf"RAW hazard: reads the active tile of MXM unit 0 \(chip 0\) at cycle {t2 + 6}, "
                             rf"but .*IW.* writes it at cycle {t2 + 5}, readable only from cycle {t2 + 7}")
    assert e.queue == "mxm0a" and e.cycle == t2 and e.other["queue"] == "mxm0a"
    assert e.other["cycle"] == t2 + 5


# ------------------------------------------------------------------------------------------- WAR
def test_war_write_lands_before_an_earlier_read():
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=8, dtype="fp16")
    y = b.region("y", bank=4, rows=8, dtype="fp32")
    z = b.region("z", bank=2, rows=1, dtype="fp16")
    # VXM reads x[k] at 10 + 4k (interval 4: fp32 destination); bank 0 is free at [12 + 4k, 14 + 4k)
    b.at(10, 0, "vxm0", Instr("VXM", fn=0, queue=0, dst_reg=y, a_reg=x, n=8, group=1))
    # COPY z -> x[7] at 12: one hop, write at 16, before the VXM reads x[7] at 38
    b.at(12, 0, "mem0", Instr("COPY", queue=0, dst_reg=x, dst_off=7, src_reg=z, n=1))
    e = rejects(b, "hazard", r"WAR hazard: writes region 'x' vector 7 .* at cycle 16, not after its read at cycle 38")
    assert (e.chip, e.cycle, e.queue, e.index) == (0, 12, "mem0", 1)
    assert e.other["queue"] == "vxm0" and e.other["cycle"] == 10


# ------------------------------------------------------------------------------------------- WAW
def test_waw_later_write_lands_first():
    b = ProgramBuilder()
    far = b.region("far", bank=80, rows=1, dtype="fp16")  # position -41
    near = b.region("near", bank=2, rows=1, dtype="fp16")  # position -2
    y = b.region("y", bank=0, rows=1, dtype="fp16")  # position -1
    b.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=far, n=1))  # write at 3 + 40 = 43
    b.at(1, 0, "mem1", Instr("COPY", queue=1, dst_reg=y, src_reg=near, n=1))  # write at 1 + 3 + 1 = 5
    e = rejects(b, "hazard", r"WAW hazard: writes region 'y' vector 0 .* at cycle 5, readable from cycle 7, not after "
                             r"the earlier write by .* at cycle 43, readable from cycle 45")
    assert (e.cycle, e.queue) == (1, "mem1") and e.other["queue"] == "mem0"


# ------------------------------------------------------------------------------------------- tiles
def test_write_to_a_tile_row_before_its_last_acc():
    b = ProgramBuilder()
    w = b.region("w", bank=0, rows=4, dtype="fp16")  # position -1
    x = b.region("x", bank=86, rows=1, dtype="fp16")  # position -44: 2 hops from MXM unit 0
    src = b.region("src", bank=174, rows=1, dtype="fp16")  # East, position +44: 45 hops from w
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=0, col=0, rows=4))
    t = b.seq(0, "mxm0a", Instr("IW", unit=0))
    # COPY src -> w[2] at t (write at t + 48), then ACC at t + 2 (after the IW on its queue) reads the tile at
    # t + 7: the write lands after the tile was taken (fine on the chip) but executes before the ACC, which
    # reads the tile from SRAM
    b.at(t, 0, "mem0", Instr("COPY", queue=0, dst_reg=w, dst_off=2, src_reg=src, n=1))
    b.at(t + 2, 0, "mxm0a", Instr("ACC", unit=0, x_reg=x, slot=0))
    e = rejects(b, "hazard", r"overwrites region 'w' vector 2 .* a row of the weight tile loaded by .*LW.* before "
                             r".*ACC.* uses that tile")
    assert e.queue == "mem0" and e.cycle == t and e.other["instr"].startswith("LW")


def test_acc_with_lanes_past_the_vector():
    b = ProgramBuilder()
    w = b.region("w", bank=0, rows=100, dtype="fp16", width=4)
    x = b.region("x", bank=20, rows=1, dtype="fp16")
    b.seq(0, "mxm1w", Instr("LW", unit=1, src_reg=w, row0=0, col=0, rows=100))
    b.seq(0, "mxm1a", Instr("IW", unit=1))
    b.seq(0, "mxm1a", Instr("ACC", unit=1, x_reg=x, x_lane=221, slot=3))
    e = rejects(b, "structure", r"x_lane 221 \+ tile rows 100 exceeds 320 lanes")
    assert e.queue == "mxm1a" and e.other["instr"].startswith("LW unit=1")


@pytest.mark.parametrize("case", ["iw", "acc", "emit"])
def test_mxm_state_used_before_it_exists(case):
    b = ProgramBuilder()
    x = b.region("x", bank=20, rows=1, dtype="fp16")
    if case == "iw":
        b.seq(0, "mxm0a", Instr("IW", unit=0))
        rejects(b, "structure", "no LW loaded one")
    elif case == "acc":
        b.seq(0, "mxm0a", Instr("ACC", unit=0, x_reg=x, slot=0))
        rejects(b, "structure", "no IW installed one")
    else:
        b.seq(0, "mxm0a", Instr("EMIT", unit=0, slot=9, dst_reg=x, lanes=320))
        rejects(b, "hazard", r"reads accumulator slot 9 of MXM unit 0 \(chip 0\) at cycle 0, which nothing wrote")


# ------------------------------------------------------------------------------------------- banks
def test_bank_booked_twice():
    b = ProgramBuilder()
    x = b.region("x", bank=0, rows=2, dtype="fp32")
    y = b.region("y", bank=20, rows=2, dtype="fp32")
    z = b.region("z", bank=40, rows=2, dtype="fp32")
    b.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, src_off=0, n=1))
    b.at(2, 0, "mem1", Instr("COPY", queue=1, dst_reg=z, src_reg=x, src_off=1, n=1))  # bank 0 held 0..3
    e = rejects(b, "bank", r"books bank 0 of chip 0 over cycles 2..5 \(reading region 'x' vector 1 .*\), but .* holds "
                           r"it over cycles 0..3 \(reading region 'x' vector 0")
    assert (e.chip, e.cycle, e.queue, e.index) == (0, 2, "mem1", 1) and e.other["queue"] == "mem0"
    # four cycles later the bank is free again
    b2 = ProgramBuilder()
    x = b2.region("x", bank=0, rows=2, dtype="fp32")
    y = b2.region("y", bank=20, rows=2, dtype="fp32")
    z = b2.region("z", bank=40, rows=2, dtype="fp32")
    b2.at(0, 0, "mem0", Instr("COPY", queue=0, dst_reg=y, src_reg=x, src_off=0, n=1))
    b2.at(4, 0, "mem1", Instr("COPY", queue=1, dst_reg=z, src_reg=x, src_off=1, n=1))
    check(b2)


def test_whole_region_access_books_the_stripe():
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=8, dtype="fp16", width=4)  # banks 0..3
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    d = b.region("d", bank=20, rows=1, dtype="fp16")
    other = b.region("o", bank=3, rows=1, dtype="fp16", addr=10)  # shares bank 3 with the table
    dst = b.region("dst", bank=30, rows=1, dtype="fp16")
    b.at(0, 0, "mem0", Instr("GATHER", queue=0, dst_reg=d, table_reg=t, idx_reg=ix, rows=8))
    # the table is read (whole) over [3 + 5 hops, ...): any bank of the stripe is busy then
    b.at(9, 0, "mem1", Instr("COPY", queue=1, dst_reg=dst, src_reg=other, n=1))
    e = rejects(b, "bank", r"bank 3 of chip 0 .* holds it .*region 't' \(whole\)")
    assert e.queue == "mem1"


# ------------------------------------------------------------------------------------------- links
def link_program(recv_cycle: int | None, send: bool = True, n_recv: int = 2, recv_dtype: str = "fp16"):
    b = ProgramBuilder(chips=2)
    s = b.region("s", chip=0, bank=0, rows=2, dtype="fp16")
    r = b.region("r", chip=1, bank=0, rows=2, dtype=recv_dtype)
    if send:
        b.at(0, 0, "c2c0t", Instr("SEND", link=0, src_reg=s, n=2))
    if recv_cycle is not None:
        b.at(recv_cycle, 1, "c2c0r", Instr("RECV", link=0, dst_reg=r, n=n_recv))
    return b


# SEND of fp16 (640 bytes) at 15.5 bytes/cycle: 42 cycles per vector; vector k leaves at 42k and can be stored
# from 42k + (3 read + 1 hop) + 42 + 200 = 42k + 246. RECV at c stores vector k at c + 1 hop + 42k.
def test_link_valid_and_data_arrives():
    check(link_program(245))


def test_link_receive_before_arrival():
    e = rejects(link_program(244), "link", r"stores vector 0 .* at cycle 245, before it arrives at cycle 246")
    assert (e.chip, e.cycle, e.queue) == (1, 244, "c2c0r")
    assert e.other["chip"] == 0 and e.other["queue"] == "c2c0t" and e.other["cycle"] == 0


def test_link_receive_with_nothing_sent_and_send_never_received():
    e = rejects(link_program(300, send=False), "link", r"receives vector 0 of the link from chip 0 link 0 to chip 1 "
                                                        r"link 0, but only 0 vectors are sent")
    assert (e.chip, e.queue) == (1, "c2c0r")
    e = rejects(link_program(300, n_recv=1), "link", "sends vector 1 .* which is never received")
    assert (e.chip, e.queue) == (0, "c2c0t")


def test_link_vector_size_mismatch():
    rejects(link_program(300, recv_dtype="fp32"), "link", "receives 1280-byte vectors .* sends 640-byte vectors")


# ------------------------------------------------------------------------------------------- structure
def raw_stream_program(queue: str, ins: Instr, chips: int = 1, regions=(("a", 0, "fp32"), ("b", 0, "fp32"))):
    """A program with one stream written directly (bypassing the builder's timing)."""
    b = ProgramBuilder(chips=chips)
    for name, chip, dt in regions:
        b.region(name, chip=chip, bank=2 * len(b.regions), rows=2, dtype=dt)
    p = b.build()
    p.set_instrs((0, 0, queue), [Instr("NOP", count=3), ins])
    return p


def test_wrong_queue_instruction():
    p = raw_stream_program("mem2", Instr("VXM", fn=16, queue=2, dst_reg=0, a_reg=1, b_reg=1, n=1, group=1))
    with pytest.raises(EmulationError, match=r"chip 0, cycle 3, queue mem2, instruction #1 `VXM fn=add queue=2 .*`: "
                                             r"VXM cannot issue from queue mem2") as ei:
        Emulator(p).check(0)
    assert (ei.value.chip, ei.value.cycle, ei.value.queue, ei.value.index) == (0, 3, "mem2", 1)


@pytest.mark.parametrize("ins,regions,match", [
    (Instr("COPY", queue=0, dst_reg=0, src_reg=1, src_off=1, n=2), None, r"reads vectors 1..2 of region 'b', which has vectors 0..1"),
    (Instr("GATHER", queue=0, dst_reg=0, table_reg=0, idx_reg=1, rows=2), None, "index region 'b' is fp32; it must be i32"),
    (Instr("GATHER", queue=0, dst_reg=0, table_reg=0, idx_reg=1, rows=3), (("a", 0, "fp32"), ("b", 0, "i32")), "GATHER rows 3 exceeds the 2 rows"),
    (Instr("SCATTER", queue=0, table_reg=0, src_reg=0, idx_reg=1, idx_lane=320), (("a", 0, "fp32"), ("b", 0, "i32")), "idx_lane 320 is not a lane"),
])
def test_structural_errors(ins, regions, match):
    p = raw_stream_program("mem0", ins, chips=2, regions=regions or (("a", 0, "fp32"), ("b", 0, "fp32")))
    with pytest.raises(EmulationError, match=match) as ei:
        Emulator(p).check(0)
    assert ei.value.kind == "structure" and (ei.value.chip, ei.value.cycle, ei.value.queue) == (0, 3, "mem0")


def test_a_stream_names_only_its_own_chips_regions():
    """Region operands are chip-local: chip 0 holds region a only, so a word naming its region 1 is refused
    (where an id of the whole program would have reached b on chip 1), and the encoder refuses an
    instruction of chip 0 that names b."""
    ins = Instr("COPY", queue=0, dst_reg=0, src_reg=1, n=1)
    with pytest.raises(isa.IsaError, match="region 1 is on chip 1; a stream of chip 0 can only name regions of its own chip"):
        raw_stream_program("mem0", ins, chips=2, regions=(("a", 0, "fp32"), ("b", 1, "fp32")))
    b = ProgramBuilder(chips=2)
    b.region("a", chip=0, rows=2, dtype="fp32")
    b.region("b", chip=1, rows=2, dtype="fp32")
    p = b.build()
    p.streams[(0, 0, "mem0")] = isa.encode_many([Instr("NOP", count=3), ins])  # the word says chip 0's region 1
    with pytest.raises(EmulationError, match=r"chip 0, queue mem0: word 1: COPY src_reg names region 1 of chip 0, "
                                             r"which has regions 0..0") as ei:
        Emulator(p).check(0)
    assert ei.value.kind == "decode" and (ei.value.chip, ei.value.queue) == (0, "mem0")


def test_unknown_bucket_and_bad_header():
    b = ProgramBuilder()
    b.region("a", rows=1)
    emu = Emulator(b.build())
    with pytest.raises(EmulationError, match="buckets 0..0"):
        emu.run(1)
    p = b.build()
    p.header["topology"] = [[]]
    p.header["hw_sha256"] = "0" * 64
    with pytest.raises(EmulationError, match="does not match its hash"):
        Emulator(p)
    p = b.build()
    p.regions[0] = isa.Region(0, 0, 175, 4, 0, 1, 8, "fp32", "a")
    with pytest.raises(EmulationError, match="spans banks 175..178"):
        Emulator(p)
