"""The instruction set: every instruction round-trips through binary and text; fields are range-checked;
the program container round-trips and rejects corruption."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isa
from isa import Instr, IsaError, ProgramError
from isa.fields import WORD_BITS
from isa.table import OPS, SXM_FNS, VXM_FNS


def _field_values(f, draw):
    if f.kind == "f":
        return draw(st.floats(width=32, allow_nan=False))
    return draw(st.integers(f.lo, f.hi))


@st.composite
def instructions(draw):
    spec = draw(st.sampled_from(OPS))
    args = {}
    for f in spec.fmt.fields:
        if f.name == "fn" and spec.mnemonic == "VXM":
            args[f.name] = draw(st.sampled_from([x.code for x in VXM_FNS]))
        elif f.name == "fn" and spec.mnemonic == "SXM":
            args[f.name] = draw(st.sampled_from([x.code for x in SXM_FNS]))
        else:
            args[f.name] = _field_values(f, draw)
    return Instr(spec.mnemonic, **args)


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.mnemonic)
def test_every_instruction_roundtrips_at_field_extremes(spec):
    for pick in ("lo", "hi"):
        args = {}
        for f in spec.fmt.fields:
            if f.kind == "f":
                args[f.name] = -3.5 if pick == "lo" else 1.0e30
            elif f.name == "fn":
                fns = VXM_FNS if spec.mnemonic == "VXM" else SXM_FNS
                args[f.name] = fns[0].code if pick == "lo" else fns[-1].code
            else:
                args[f.name] = getattr(f, pick)
        ins = Instr(spec.mnemonic, **args)
        word = isa.encode(ins)
        assert word < (1 << WORD_BITS)
        assert word & 0xFF == spec.opcode
        assert isa.decode(word) == ins
        text = isa.disasm_instr(ins)
        assert isa.asm_instr(text) == ins
        assert isa.encode(isa.asm_instr(text)) == word


@settings(max_examples=300, deadline=None)
@given(st.lists(instructions(), min_size=1, max_size=20))
def test_streams_roundtrip_binary_text_and_vectorised_decode(instrs):
    words = isa.encode_many(instrs)
    assert isa.decode_many(words) == instrs
    fields = isa.decode_fields(words)
    for k, ins in enumerate(instrs):
        assert fields["opcode"][k] == ins.spec.opcode
        for name, value in ins.args.items():
            got = fields[name][k]
            assert (np.float32(got) == np.float32(value)) if isinstance(value, float) else int(got) == value
    again = isa.encode_many([isa.asm_instr(isa.disasm_instr(i)) for i in instrs])
    assert np.array_equal(again, words)


def test_field_overflow_names_field_value_and_width():
    with pytest.raises(IsaError, match=r"field n: value 70000 does not fit in 16 bits \(valid 0..65535\)"):
        Instr("VXM", n=70000)
    with pytest.raises(IsaError, match=r"field base: value 2147483648 does not fit in 32 signed bits"):
        Instr("GATHER", base=2**31)
    with pytest.raises(IsaError, match="unknown field"):
        Instr("NOP", cycles=3)
    with pytest.raises(IsaError, match="unknown instruction"):
        Instr("FMA")


def test_decode_rejects_unknown_opcode_and_stray_bits():
    with pytest.raises(IsaError, match="unknown opcode"):
        isa.decode(0xFF)
    word = isa.encode(Instr("NOP", count=3)) | (1 << 200)
    with pytest.raises(IsaError, match="bits above"):
        isa.decode(word)
    arr = isa.encode_many([Instr("NOP", count=3)])
    arr[0, 3] = np.uint64(1)
    with pytest.raises(IsaError, match="corrupt"):
        isa.decode_fields(arr)


def test_encodings_are_the_documented_bit_layout():
    """Golden words written out by hand from the formats (opcode in bits 0..7, then each field least
    significant first): saved program files depend on this layout."""
    assert isa.encode(Instr("NOP", count=3)) == 0x01 | 3 << 8
    # SEND: link 7 bits @8, src_reg 18 @15, src_off 20 @33, n 16 @53
    assert isa.encode(Instr("SEND", link=5, src_reg=7, src_off=9, n=2)) == 0x50 | 5 << 8 | 7 << 15 | 9 << 33 | 2 << 53
    # GATHER: queue 4 @8, dst_reg 18 @12, dst_off 20 @30, table_reg 18 @50, idx_reg 18 @68, idx_off 20 @86,
    # idx_lane 9 @106, base 32 (two's complement) @115, rows 24 @147, elems 16 @171
    w = isa.encode(Instr("GATHER", dst_reg=1, table_reg=2, idx_reg=3, idx_lane=4, base=-1, rows=10))
    assert w == 0x41 | 1 << 12 | 2 << 50 | 3 << 68 | 4 << 106 | 0xFFFFFFFF << 115 | 10 << 147
    # VXM: fn 6 @8, queue 5 @14, dst 18+20 @19, a 18+20+2+16 @57, b 18+20+2+16 @113, n 16 @169, group 12 @185,
    # period 16 @197, valid 9 @213, imm (IEEE float32) @222; 1.5 = 0x3FC00000
    w = isa.encode(Instr("VXM", fn=16, queue=2, dst_reg=6, a_reg=4, b_mode=3, n=3, imm=1.5))
    assert w == 0x10 | 16 << 8 | 2 << 14 | 6 << 19 | 4 << 57 | 3 << 151 | 3 << 169 | 0x3FC00000 << 222
    assert all(spec.fmt.used_bits <= WORD_BITS for spec in OPS)


def _tiny_program(hw):
    regions = [isa.Region(0, 0, 0, 4, 0, 1, 3, "fp32", "x"), isa.Region(1, 0, 4, 4, 0, 1, 3, "fp16", "y")]
    words = isa.encode_many([Instr("VXM", fn=isa.VXM_BY_NAME["add"].code, dst_reg=1, a_reg=0, b_reg=0, n=3),
                             Instr("NOP", count=5)])
    header = {"format_version": isa.FORMAT_VERSION, "hw": hw, "hw_sha256": isa.hw_hash(hw), "chips": 1,
              "queues": list(isa.as_hardware(hw).queues), "topology": [[]], "buckets": [{"first_position": 0, "last_position": 0, "context": 320}]}
    sym = {"x": isa.Symbol("x", "input", "fp32", (900,), (isa.Shard(0, 0, 0, 900, 0),))}
    image = [(0, 0, np.arange(960, dtype=np.float32))]
    return isa.Program(header, regions, sym, {(0, 0, "vxm0"): words}, image)


@pytest.fixture
def hw():
    import lpu.config
    return lpu.config.load("groqchip1", chips=1).to_dict()


def test_program_roundtrip_bytes_file_and_text(tmp_path, hw):
    p = _tiny_program(hw)
    data = p.to_bytes()
    q = isa.Program.from_bytes(data)
    assert q.to_bytes() == data
    path = tmp_path / "p.lpu"
    p.save(path)
    assert path.read_bytes() == data
    r = isa.Program.load(path)
    assert np.array_equal(r.image[0][2], np.arange(960, dtype=np.float32))
    text = isa.disassemble(r)
    s = isa.assemble(text)
    s.image = r.image
    assert s.to_bytes() == data


def test_program_rejects_corruption_and_truncation(tmp_path, hw):
    data = bytearray(_tiny_program(hw).to_bytes())
    for pos in (3, 20, len(data) // 2, len(data) - 40):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        with pytest.raises(ProgramError):
            isa.Program.from_bytes(bytes(bad))
    with pytest.raises(ProgramError, match="too short|truncated|checksum"):
        isa.Program.from_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ProgramError, match="cannot read"):
        isa.Program.load(tmp_path / "missing.lpu")


def test_failed_save_leaves_no_file(tmp_path, hw):
    p = _tiny_program(hw)
    p.image = [(0, 0, np.zeros(7, dtype=np.float32))]  # not a whole number of vectors: still writes
    p.symbols = {"bad": object()}  # not serialisable: the write fails midway
    with pytest.raises(Exception):
        p.save(tmp_path / "out.lpu")
    assert list(tmp_path.iterdir()) == []


def test_timing_profiles_follow_the_hardware_parameters(hw):
    regions = [isa.Region(0, 0, 0, 4, 0, 1, 8, "fp32", "a"), isa.Region(1, 0, 8, 4, 0, 1, 8, "fp32", "d"),
               isa.Region(2, 0, 170, 16, 0, 1, 160, "fp16", "w")]
    m = isa.Machine(hw, regions)
    add = Instr("VXM", fn=isa.VXM_BY_NAME["add"].code, dst_reg=1, a_reg=0, b_reg=0, n=8)
    p = m.profile(add, "vxm0")
    # 8 fp32 vectors over 4 banks: each holds its bank 4 cycles, so one vector per cycle
    assert p.busy == 8
    rd, wr = p.accesses
    # banks 0..3 are West slices 0-1 (farthest position -2), banks 8..11 slices 4-5 (farthest -6);
    # the VXM sits at 0 and a stream moves one slice per cycle
    lat = hw["chip"]["sram"]["read_latency_cycles"] + 2 * 1 + hw["chip"]["vxm"]["latency_cycles"]["add"] + 6 * 1
    assert wr.t0 == lat and wr.write and wr.ready == hw["chip"]["sram"]["write_latency_cycles"] + 4 - 1
    # a 160-row fp16 tile over 16 banks: 8 rows per cycle per unit (10240 B/cycle shared by 2 units)
    lw = m.profile(Instr("LW", unit=0, src_reg=2, row0=0, col=0, rows=160), "mxm0w")
    assert lw.busy == 20
    with pytest.raises(IsaError, match="cannot issue from queue"):
        m.profile(add, "sxm0")


@st.composite
def chip_stream(draw):
    """Regions spread over chips at random, and a stream of one chip whose used region operands name
    regions of that chip (an unused one, VXM's b of a unary function, keeps an arbitrary raw value)."""
    chips = draw(st.integers(1, 4))
    region_chips = draw(st.lists(st.integers(0, chips - 1), min_size=1, max_size=40))
    chip = draw(st.sampled_from(sorted(set(region_chips))))
    mine = [i for i, c in enumerate(region_chips) if c == chip]
    instrs = []
    for ins in draw(st.lists(instructions(), min_size=1, max_size=12)):
        changes = {f.name: draw(st.sampled_from(mine)) for f in ins.spec.fmt.fields
                   if f.region and isa.table.region_used(ins.op, f.name, ins.args)}
        instrs.append(ins.replace(**changes))
    return chips, region_chips, chip, instrs


@settings(max_examples=300, deadline=None)
@given(chip_stream())
def test_region_operands_are_numbered_within_their_chip(case):
    """A word names the k-th region of its chip (in id order) as k: checked against a count by hand, and
    every decode (one by one, vectorised) gives back the program-wide ids."""
    chips, region_chips, chip, instrs = case
    numbering = isa.RegionNumbering(region_chips, chips)
    words = isa.encode_many(instrs, chip, numbering)
    raw = isa.decode_many(words)
    for ins, r in zip(instrs, raw):
        for f in ins.spec.fmt.fields:
            if f.region and isa.table.region_used(ins.op, f.name, ins.args):
                assert r[f.name] == sum(1 for i in range(ins[f.name]) if region_chips[i] == chip)
            else:
                assert r[f.name] == ins[f.name]
    assert isa.decode_many(words, chip, numbering) == instrs
    fields = isa.decode_fields(words, chip, numbering)
    for k, ins in enumerate(instrs):
        for f in ins.spec.fmt.fields:
            if f.kind != "f":
                assert int(fields[f.name][k]) == ins[f.name]


def test_a_region_of_another_chip_cannot_be_encoded_nor_a_missing_one_decoded():
    numbering = isa.RegionNumbering([0, 1, 0], 2)  # chip 0: regions 0, 2 (local 0, 1); chip 1: region 1
    with pytest.raises(IsaError, match="region 1 is on chip 1; a stream of chip 0 can only name regions of its own"):
        isa.encode(Instr("COPY", dst_reg=0, src_reg=1, n=1), 0, numbering)
    word = isa.encode(Instr("COPY", dst_reg=2, src_reg=0, n=1), 0, numbering)
    assert isa.decode(word)["dst_reg"] == 1 and isa.decode(word, 0, numbering)["dst_reg"] == 2
    with pytest.raises(IsaError, match="COPY dst_reg names region 1 of chip 1, which has regions 0..0"):
        isa.decode(word, 1, numbering)
    with pytest.raises(IsaError, match="word 0: COPY dst_reg names region 1 of chip 1, which has regions 0..0"):
        isa.decode_fields(isa.encode_many([Instr("COPY", dst_reg=2, src_reg=0, n=1)], 0, numbering), 1, numbering)


def test_provenance_section_roundtrips_and_is_optional(hw):
    p = _tiny_program(hw)
    p.header["ops"] = [{"name": "x", "prim": "binary", "kind": "other", "layer": None}]
    p.provenance = {(0, 0, "vxm0"): np.array([0, -1], dtype=np.int32)}
    data = p.to_bytes()
    q = isa.Program.from_bytes(data)
    assert q.provenance[(0, 0, "vxm0")].tolist() == [0, -1] and q.to_bytes() == data
    p.provenance = {}
    assert isa.Program.from_bytes(p.to_bytes()).provenance == {}  # older files have no PROV section
    # replacing a stream by one of another length drops its provenance (it no longer names its words)
    q.set_instrs((0, 0, "vxm0"), [Instr("NOP", count=1)])
    assert q.provenance == {}


@pytest.mark.parametrize("ids, needle", [([0], "does not match the stream"), ([0, 5], "names an operation outside")])
def test_bad_provenance_is_refused(hw, ids, needle):
    import hashlib
    import struct

    p = _tiny_program(hw)
    p.header["ops"] = [{"name": "x", "prim": "binary", "kind": "other", "layer": None}]
    key = (0, 0, "vxm0")
    p.streams = dict(p.streams)
    p.provenance = {key: np.array(ids, dtype=np.int32)}
    if len(ids) != p.streams[key].shape[0]:
        # the writer only writes provenance of a stream's own length: build the bad file by hand
        good = _tiny_program(hw)
        good.header["ops"] = p.header["ops"]
        good.provenance = {key: np.array([0, 0], dtype=np.int32)}
        data = bytearray(good.to_bytes()[:-36])
        i = bytes(data).index(b"PROV")
        idx = b'[[0,0,"vxm0",1]]'
        sec = struct.pack("<Q", len(idx)) + idx + np.array(ids, dtype="<i4").tobytes()
        data = data[:i] + b"PROV" + struct.pack("<Q", len(sec)) + sec
        data += b"SHA2" + hashlib.sha256(bytes(data)).digest()
        blob = bytes(data)
    else:
        blob = p.to_bytes()
    with pytest.raises(ProgramError, match=needle):
        isa.Program.from_bytes(blob)
