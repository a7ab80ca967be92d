"""A compiled program broken on purpose is rejected by the emulator's schedule checker, with an error
naming the chip, the cycle and the instruction."""
from __future__ import annotations

import functools

import pytest

import isa
from compiler.driver import Options, compile_graph
from lpu import config
from lpu.emulator import EmulationError, Emulator

from tinyir import llama_like


@functools.lru_cache(maxsize=None)
def compiled(chips: int) -> bytes:
    prog, _ = compile_graph(llama_like(), config.load("groqchip1", chips=chips), Options(chips=chips, max_context=320))
    return prog.to_bytes()


def program(chips: int) -> isa.Program:
    return isa.Program.from_bytes(compiled(chips))


def issue_cycles(prog, key):
    m = isa.Machine(prog.header["hw"], prog.regions)
    t, out = 0, []
    for ins in prog.instrs(key):
        out.append(t)
        t += m.profile(ins, key[2]).busy
    return out


def test_the_unbroken_program_passes():
    Emulator(program(2)).check(0)


def test_an_instruction_moved_before_its_operand_is_ready():
    base = program(1)
    # an instruction whose queue waited (NOP) for its operands: shorten the wait by 40 cycles; the
    # checker must object that it reads before its producer's result is ready
    for key in sorted(base.streams):
        instrs = base.instrs(key)
        times = issue_cycles(base, key)
        for k in range(1, len(instrs)):
            if instrs[k - 1].op != "NOP" or instrs[k - 1]["count"] <= 40 or instrs[k].op in ("NOP", "DESKEW", "SYNC"):
                continue
            prog = program(1)
            broken = list(instrs)
            broken[k - 1] = broken[k - 1].replace(count=broken[k - 1]["count"] - 40)
            prog.set_instrs(key, broken)
            with pytest.raises(EmulationError) as e:
                Emulator(prog).check(0)
            err = e.value
            if err.kind != "hazard" or "RAW" not in str(err):
                continue  # moving it also clashed on a bank first: try another
            assert err.chip == key[1] and err.queue == key[2] and err.cycle == times[k] - 40
            assert instrs[k].op in err.instr
            assert f"chip {key[1]}, cycle {times[k] - 40}, queue {key[2]}" in str(err)
            return
    pytest.fail("no instruction waiting on a NOP found")


def test_a_bank_booked_twice():
    prog = program(1)
    # an LW streams weight rows from its banks; a COPY reading the same rows in the same cycles is a
    # second access to those banks
    for key in sorted(prog.streams):
        if not key[2].endswith("w"):
            continue
        instrs = prog.instrs(key)
        lw = next((k for k, i in enumerate(instrs) if i.op == "LW" and i["rows"] >= 64), None)
        if lw is None:
            continue
        t = issue_cycles(prog, key)[lw]
        w = instrs[lw]
        scratch = next(r for r in prog.regions if r.chip == key[1] and r.name.startswith("t.") and r.dtype == "fp16")
        mem_key = (0, key[1], "mem3")
        extra = [isa.Instr("NOP", count=t)] if t else []
        extra.append(isa.Instr("COPY", queue=3, dst_reg=scratch.id, src_reg=w["src_reg"],
                               src_off=w["row0"] * prog.regions[w["src_reg"]].row_vectors + w["col"], n=1))
        assert mem_key not in prog.streams or not len(prog.streams[mem_key])
        prog.set_instrs(mem_key, extra)
        with pytest.raises(EmulationError) as e:
            Emulator(prog).check(0)
        err = e.value
        # the COPY reads the LW's first row in the LW's issue cycle: the same bank, twice in one cycle
        assert err.kind == "bank" and err.chip == key[1] and err.cycle == t
        assert {err.queue, err.other["queue"]} == {key[2], "mem3"}
        assert f"bank {prog.regions[w['src_reg']].bank}" in str(err)
        return
    pytest.fail("no LW found")


def test_a_receive_before_its_transfer_arrives():
    prog = program(2)
    # delay a SEND: the matching RECV on the other chip now stores data that has not arrived
    for key in sorted(prog.streams):
        if not key[2].endswith("t"):
            continue
        instrs = prog.instrs(key)
        k = next((k for k, i in enumerate(instrs) if i.op == "SEND"), None)
        if k is None:
            continue
        t_send = issue_cycles(prog, key)[k]
        instrs.insert(k, isa.Instr("NOP", count=500))
        prog.set_instrs(key, instrs)
        with pytest.raises(EmulationError) as e:
            Emulator(prog).check(0)
        err = e.value
        # the peer's RECV is blamed: it stores data that now arrives 500 cycles later than before
        assert err.kind == "link" and err.chip != key[1] and err.queue.endswith("r") and "RECV" in err.instr
        assert "before it arrives" in str(err)
        assert err.other["queue"] == key[2] and err.other["cycle"] == t_send + 500
        return
    pytest.fail("no SEND found")


@functools.lru_cache(maxsize=None)
def compiled_pp16() -> bytes:
    """Two nodes of a dragonfly, one pipeline stage per chip: values cross nodes over routes of two hops."""
    prog, _ = compile_graph(llama_like(), config.load("groqchip1", chips=16),
                            Options(chips=16, max_context=320, partition="pp"))
    return prog.to_bytes()


def forwarding_hop(prog):
    """A chip on a multi-hop route: (its RECV's queue key, its SEND's queue key, the SEND's index)."""
    fwd = {r.id: r for r in prog.regions if r.name.startswith("fwd ")}
    assert fwd, "no route of more than one hop in a 16-chip pipeline"
    for key in sorted(prog.streams):
        if not key[2].endswith("t"):
            continue
        for k, i in enumerate(prog.instrs(key)):
            if i.op == "SEND" and i["src_reg"] in fwd:
                return key, k, fwd[i["src_reg"]]
    pytest.fail("no forwarding SEND found")


def test_a_multi_hop_route_is_checked_hop_by_hop():
    prog = isa.Program.from_bytes(compiled_pp16())
    Emulator(prog).check(0)
    key, k, region = forwarding_hop(prog)
    assert region.chip == key[1]  # the forwarding chip sends from a buffer of its own
    # delay the forwarding chip's SEND: the next chip on the route receives before the data arrives
    instrs = prog.instrs(key)
    t_send = issue_cycles(prog, key)[k]
    link = instrs[k]["link"]
    instrs.insert(k, isa.Instr("NOP", count=500))
    prog.set_instrs(key, instrs)
    with pytest.raises(EmulationError) as e:
        Emulator(prog).check(0)
    err = e.value
    assert err.kind == "link" and "RECV" in err.instr and "before it arrives" in str(err)
    assert f"the link from chip {key[1]} link {link} to chip {err.chip}" in str(err)
    assert err.other["queue"] == key[2] and err.other["cycle"] == t_send + 500


def test_a_second_transfer_on_a_hop_of_a_route_is_refused():
    prog = isa.Program.from_bytes(compiled_pp16())
    key, k, region = forwarding_hop(prog)
    instrs = prog.instrs(key)
    instrs.insert(k + 1, instrs[k])  # the hop's link carries the value twice; the next chip receives it once
    prog.set_instrs(key, instrs)
    with pytest.raises(EmulationError) as e:
        Emulator(prog).check(0)
    err = e.value
    assert err.kind == "link" and err.chip == key[1] and err.queue == key[2] and "never received" in str(err)
    assert f"the link from chip {key[1]} link {instrs[k]['link']}" in str(err)


def test_a_chips_words_number_its_own_regions_only():
    """The words of a 16-chip program name regions chip-locally: no region field holds a number as large as
    the most regions on one chip, although the program has many times more; the emulator's decode gives
    program-wide ids on the stream's own chip (and the program checks, above, and decodes, in
    test_decode_vs_ort, with them)."""
    prog = isa.Program.from_bytes(compiled_pp16())
    numbering = prog.numbering()
    most = numbering.most_on_a_chip()
    assert len(prog.regions) > 4 * most
    top = 0
    for key in prog.streams:
        for raw, ins in zip(isa.decode_many(prog.streams[key]), prog.instrs(key, numbering)):
            for f in ins.spec.fmt.fields:
                if f.region and isa.table.region_used(ins.op, f.name, ins.args):
                    top = max(top, raw[f.name])
                    assert prog.regions[ins[f.name]].chip == key[1]
    assert 0 < top < most
