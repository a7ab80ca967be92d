"""Every executor kernel against the slow numpy interpreter (lpu/emulator/naive.py), bit for bit.

Each test builds a small hand-scheduled program (serialised with ProgramBuilder.seq, so it is valid by
construction), runs it on the Emulator and on NaiveMachine, and compares every symbol's bits.
"""
from __future__ import annotations

import numpy as np
import pytest

from isa import VECTOR_LANES, Instr
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, VXM_FNS
from lpu.emulator import EmulationError, Emulator
from builder import ProgramBuilder
from lpu.emulator.kernels import round_f16_array
from naive import NaiveError, NaiveMachine

LANES = VECTOR_LANES
VXM = {f.name: f for f in VXM_FNS}


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: identical float32 bits, or both NaN."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def assert_same(emu: Emulator, ref: NaiveMachine, names=None, ulps: dict | None = None) -> None:
    for name in names or sorted(emu.program.symbols):
        a, b = emu.read(name), ref.read(name)
        ok = same_bits(a, b)
        if ulps and name in ulps:  # transcendental functions: libm and numpy may differ by an ulp
            close = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)) <= ulps[name]
            ok |= close
        if not ok.all():
            k = int(np.argmin(ok))
            raise AssertionError(f"symbol {name!r} differs at element {k}: emulator {a[k]!r} naive {b[k]!r} "
                                 f"({int((~ok).sum())} elements differ)")


def run_both(b: ProgramBuilder, writes: dict | None = None):
    program = b.build()
    emu, ref = Emulator(program), NaiveMachine(program)
    for k, v in (writes or {}).items():
        emu.write(k, v)
        ref.write(k, v)
    emu.run(0)
    ref.run(0)
    return emu, ref


def specials(rng, n: int) -> np.ndarray:
    """Random float32 values with NaN, infinities, signed zeros, tiny and huge values mixed in."""
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    edge = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-8, -1e-8, 7e4, -7e4, 65504, 65520, 2.0 ** -24,
                     2.0 ** -25, 1.5 * 2.0 ** -24, 0.5, -0.5, 1.0, 3.0, -2.5], dtype=np.float32)
    idx = rng.choice(n, size=min(n, 3 * edge.size), replace=False)
    x[idx] = np.resize(edge, idx.size)
    return x


# ------------------------------------------------------------------------------------------- fp16
def test_fp16_rounding_matches_numpy_on_random_and_edge_bits():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2 ** 32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    edge = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFA00000,
                     0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,  # around 65504 / 65520 (overflow)
                     0x33000000, 0x33000001, 0x32FFFFFF, 0x33400000, 0x33C00000, 0x34200000,  # 2**-25 ties
                     0x387FC000, 0x387FE000, 0x38800000, 0x38801000, 0x38803000,  # subnormal/normal boundary
                     0x3F801000, 0x3F803000, 0x3F800FFF, 0x3F801001, 0x00000001, 0x007FFFFF], dtype=np.uint32)
    # every fp16 value, and the midpoints between neighbours (ties), in float32
    h = np.arange(0x10000, dtype=np.uint32).astype(np.uint16).view(np.float16)
    hf = h[np.isfinite(h)].astype(np.float32)
    hf.sort()
    mids = ((hf[:-1].astype(np.float64) + hf[1:]) / 2).astype(np.float32)
    allbits = np.concatenate([bits, edge, hf.view(np.uint32), mids.view(np.uint32)])
    out = np.empty_like(allbits)
    round_f16_array(allbits, out)
    with np.errstate(all="ignore"):
        ref = allbits.view(np.float32).astype(np.float16).astype(np.float32)
    ok = same_bits(out.view(np.float32), ref) & (np.isnan(ref) | (out == ref.view(np.uint32)))
    bad = np.nonzero(~ok)[0]
    assert bad.size == 0, f"{bad.size} mismatches, first input bits {allbits[bad[0]]:#010x}"
    # NaN payloads too: numpy keeps the top mantissa bits
    nan = np.isnan(ref)
    assert np.array_equal(out[nan], ref.view(np.uint32)[nan])


def test_host_write_rounds_to_region_type():
    b = ProgramBuilder()
    b.region("h", bank=0, rows=2, dtype="fp16")
    b.region("i", bank=2, rows=1, dtype="i32")
    b.region("f", bank=4, rows=1, dtype="fp32")
    emu = Emulator(b.build())
    rng = np.random.default_rng(2)
    x = specials(rng, 2 * LANES)
    emu.write("h", x)
    with np.errstate(over="ignore"):
        assert same_bits(emu.read("h"), x.astype(np.float16).astype(np.float32)).all()
    y = (rng.standard_normal(LANES) * 100).astype(np.float32)
    emu.write("i", y)
    assert np.array_equal(emu.read("i"), np.trunc(y))
    emu.write("f", y)
    assert same_bits(emu.read("f"), y).all()
    with pytest.raises(EmulationError, match="has 320 elements"):
        emu.write("f", y[:10])
    with pytest.raises(EmulationError, match="no symbol"):
        emu.read("nope")


# ------------------------------------------------------------------------------------------- VXM
@pytest.mark.parametrize("dst_dtype", ["fp32", "fp16", "i32"])
def test_vxm_every_function_seq_rep_grp_imm(dst_dtype):
    rng = np.random.default_rng(3)
    n = 6
    b = ProgramBuilder()
    a = b.region("a", bank=0, rows=n, dtype="fp32")
    bb = b.region("b", bank=4, rows=n, dtype="fp16")
    b.fill(a, specials(rng, n * LANES))
    with np.errstate(over="ignore"):
        b.fill(bb, specials(rng, n * LANES).astype(np.float16))
    bank = 8
    ulps = {}
    for f in VXM_FNS:
        if f.reduce:
            continue
        variants = [("seq", MODE_SEQ, 1, MODE_SEQ, 1)]
        if f.arity >= 2:
            variants += [("imm", MODE_SEQ, 1, MODE_IMM, 1), ("rep", MODE_REP, 2, MODE_GRP, 3), ("grp", MODE_GRP, 2, MODE_REP, 4)]
        else:
            variants += [("rep", MODE_REP, 4, MODE_SEQ, 1), ("grp", MODE_GRP, 3, MODE_SEQ, 1)]
        for tag, am, amm, bm, bmm in variants:
            name = f"{f.name}_{tag}"
            d = b.region(name, bank=bank, rows=n, dtype=dst_dtype)
            bank = (bank + 2) % 170
            b.seq(0, "vxm3", Instr("VXM", fn=f.code, queue=3, dst_reg=d, a_reg=a, a_mode=am, a_m=amm, b_reg=bb,
                                   b_mode=bm, b_m=bmm, n=n, group=1, imm=-1.75))
            if f.name in ("exp", "tanh"):
                ulps[name] = 1
    emu, ref = run_both(b)
    assert_same(emu, ref, ulps=ulps)
    # a hand-checked value, independent of the naive interpreter: add of seq operands
    x = emu.read("a")[:LANES]
    y = emu.read("b")[:LANES]
    with np.errstate(all="ignore"):
        want = {"fp32": x + y, "fp16": (x + y).astype(np.float16).astype(np.float32), "i32": np.trunc(x + y)}[dst_dtype]
        assert same_bits(emu.read("add_seq")[:LANES], want).all()


@pytest.mark.parametrize("fn", ["rsum", "rmax"])
@pytest.mark.parametrize("mode,m", [(MODE_SEQ, 1), (MODE_REP, 3), (MODE_GRP, 2)])
@pytest.mark.parametrize("group", [1, 4])
def test_vxm_reductions_and_masking(fn, mode, m, group):
    rng = np.random.default_rng(4)
    n = 5
    b = ProgramBuilder()
    a = b.region("a", bank=0, rows=n * group, dtype="fp32", width=2)
    b.fill(a, specials(rng, n * group * LANES))
    d = b.region("d", bank=10, rows=n, dtype="fp16")
    dm = b.region("dm", bank=12, rows=n, dtype="fp32")
    b.seq(0, "vxm0", Instr("VXM", fn=VXM[fn].code, queue=0, dst_reg=d, a_reg=a, a_mode=mode, a_m=m, n=n, group=group))
    b.seq(0, "vxm1", Instr("VXM", fn=VXM[fn].code, queue=1, dst_reg=dm, a_reg=a, a_mode=mode, a_m=m, n=n, group=group,
                           period=2, valid=100))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    out = emu.read("dm").reshape(n, LANES)
    assert (out[1, 100:] == 0).all() and (out[3, 100:] == 0).all()
    if mode == MODE_SEQ:  # hand check of vector 0: lane-wise over the first `group` source vectors
        src = emu.read("a").reshape(-1, LANES)[:group]
        want = src[0].copy()
        for g in range(1, group):
            want = want + src[g] if fn == "rsum" else np.where(np.isnan(want) | (want >= src[g]), want, src[g])
        assert same_bits(out[0], want).all()


# ------------------------------------------------------------------------------------------- SXM
def test_sxm_rot_and_shuf():
    rng = np.random.default_rng(5)
    b = ProgramBuilder()
    s = b.region("s", bank=0, rows=3, dtype="fp32")
    b.fill(s, specials(rng, 3 * LANES))
    outs = []
    for shift in (0, 1, 319, 400):
        d = b.region(f"rot{shift}", bank=20 + 2 * len(outs), rows=3, dtype="fp16")
        outs.append(d)
        b.seq(0, "sxm1", Instr("SXM", fn=0, queue=1, dst_reg=d, src_reg=s, n=3, shift=shift))
    mp = b.region("map", bank=40, rows=2, dtype="i32")
    b.fill(mp, rng.integers(-5, 3 * LANES, size=2 * LANES).astype(np.int32))
    sh = b.region("shuf", bank=44, rows=2, dtype="fp32")
    b.seq(0, "sxm0", Instr("SXM", fn=1, queue=0, dst_reg=sh, src_reg=s, map_reg=mp, n=2, window=3))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    src = emu.read("s").reshape(3, LANES)
    with np.errstate(over="ignore"):
        assert same_bits(emu.read("rot1").reshape(3, LANES)[:, :-1],
                         src[:, 1:].astype(np.float16).astype(np.float32)).all()
    m = emu.read("map").astype(np.int64)
    want = np.where(m < 0, 0, src.reshape(-1)[np.maximum(m, 0)])
    assert same_bits(emu.read("shuf"), want).all()


def test_sxm_shuf_map_outside_window_is_a_runtime_error():
    b = ProgramBuilder()
    s = b.region("s", bank=0, rows=2)
    mp = b.region("map", bank=4, rows=1, dtype="i32")
    d = b.region("d", bank=8, rows=1)
    m = np.zeros(LANES, dtype=np.int32)
    m[7] = 2 * LANES  # one past the window
    b.fill(mp, m)
    b.seq(0, "sxm0", Instr("SXM", fn=1, queue=0, dst_reg=d, src_reg=s, map_reg=mp, n=1, window=2))
    emu = Emulator(b.build())
    with pytest.raises(EmulationError, match=r"chip 0, cycle 0, queue sxm0, instruction #0 `SXM fn=shuf.*outside the window"):
        emu.run(0)


# ------------------------------------------------------------------------------------------- MXM
@pytest.mark.parametrize("wtype", ["fp16", "fp32"])
def test_mxm_lw_iw_acc_emit(wtype):
    rng = np.random.default_rng(6)
    b = ProgramBuilder()
    rows, rv = 200, 2
    w = b.region("w", bank=0, rows=rows, row_vectors=rv, width=8, dtype=wtype)
    with np.errstate(over="ignore"):
        b.fill(w, (rng.standard_normal(rows * rv * LANES) * 0.5).astype(np.float16 if wtype == "fp16" else np.float32))
    x = b.region("x", bank=20, rows=2, dtype="fp16")
    b.fill(x, rng.standard_normal(2 * LANES).astype(np.float16))
    y = b.region("y", bank=24, rows=3, dtype="fp16")
    b.fill(y, rng.standard_normal(3 * LANES).astype(np.float16))
    z = b.region("z", bank=28, rows=1, dtype="fp32")
    # unit 0: tile rows 10..169 of column 1; acc slot 5 = x0 . tile, then += x1[100:260] . tile
    b.seq(0, "mxm0w", Instr("LW", unit=0, src_reg=w, row0=10, col=1, rows=160))
    b.seq(0, "mxm0a", Instr("IW", unit=0))
    b.seq(0, "mxm0a", Instr("ACC", unit=0, x_reg=x, x_off=0, x_lane=0, slot=5, accumulate=0))
    b.seq(0, "mxm0a", Instr("ACC", unit=0, x_reg=x, x_off=1, x_lane=100, slot=5, accumulate=1))
    b.seq(0, "mxm0a", Instr("EMIT", unit=0, slot=5, dst_reg=y, dst_off=1, dst_lane=10, src_lane=5, lanes=100))
    b.seq(0, "mxm0a", Instr("EMIT", unit=0, slot=5, dst_reg=z, dst_off=0, dst_lane=0, src_lane=0, lanes=320))
    # unit 1: a small tile (7 rows of column 0), a new LW into the shadow while the active one is used
    b.seq(0, "mxm1w", Instr("LW", unit=1, src_reg=w, row0=0, col=0, rows=7))
    b.seq(0, "mxm1a", Instr("IW", unit=1))
    b.seq(0, "mxm1w", Instr("LW", unit=1, src_reg=w, row0=100, col=0, rows=3))
    b.seq(0, "mxm1a", Instr("ACC", unit=1, x_reg=x, x_off=0, x_lane=313, slot=1023, accumulate=0))
    b.seq(0, "mxm1a", Instr("EMIT", unit=1, slot=1023, dst_reg=y, dst_off=2, dst_lane=0, src_lane=0, lanes=320))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    # independent check of z: float32 sums in row order, as the instruction set defines
    W = emu.read("w").reshape(rows, rv, LANES)[10:170, 1]
    xs = emu.read("x").reshape(2, LANES)
    s0 = np.zeros(LANES, np.float32)
    for r in range(160):
        s0 = s0 + xs[0, r] * W[r]
    s1 = np.zeros(LANES, np.float32)
    for r in range(160):
        s1 = s1 + xs[1, 100 + r] * W[r]
    assert same_bits(emu.read("z"), s0 + s1).all()
    yv = emu.read("y").reshape(3, LANES)
    y0 = np.asarray(b.image[2][2], dtype=np.float32).reshape(3, LANES)
    assert same_bits(yv[1, :10], y0[1, :10]).all() and same_bits(yv[1, 110:], y0[1, 110:]).all()
    assert same_bits(yv[1, 10:110], (s0 + s1)[5:105].astype(np.float16).astype(np.float32)).all()


# ------------------------------------------------------------------------------------------- MEM
def test_copy_converts_types():
    rng = np.random.default_rng(7)
    b = ProgramBuilder()
    f = b.region("f", bank=0, rows=3, dtype="fp32", width=3)
    i = b.region("i", bank=6, rows=2, dtype="i32")
    b.fill(f, specials(rng, 3 * LANES))
    b.fill(i, rng.integers(-2 ** 20, 2 ** 20, size=2 * LANES).astype(np.int32))
    h = b.region("h", bank=10, rows=3, dtype="fp16")
    fi = b.region("fi", bank=14, rows=2, dtype="fp32")
    ii = b.region("ii", bank=18, rows=3, dtype="i32")
    b.seq(0, "mem0", Instr("COPY", queue=0, dst_reg=h, src_reg=f, n=3))
    b.seq(0, "mem1", Instr("COPY", queue=1, dst_reg=fi, src_reg=i, n=2))
    b.seq(0, "mem2", Instr("COPY", queue=2, dst_reg=ii, src_reg=f, n=3))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    with np.errstate(all="ignore"):
        assert same_bits(emu.read("h"), emu.read("f").astype(np.float16).astype(np.float32)).all()
    assert np.array_equal(emu.read("fi"), emu.read("i"))


@pytest.mark.parametrize("index,base", [(3, 0), (7, 4), (2, 4), (9, 0), (-1, 0), (12, 0)])
def test_gather_in_and_out_of_range(index, base):
    rng = np.random.default_rng(8)
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=12, row_vectors=2, width=4, dtype="fp16")
    b.fill(t, rng.standard_normal(12 * 2 * LANES).astype(np.float16))
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    d = b.region("d", bank=12, rows=2, dtype="fp32")
    b.seq(0, "mem3", Instr("GATHER", queue=3, dst_reg=d, table_reg=t, idx_reg=ix, idx_lane=17, base=base, rows=10))
    idx = np.zeros(LANES, dtype=np.int32)
    idx[17] = index
    emu, ref = run_both(b, {"ix": idx})
    assert_same(emu, ref)
    row = index - base
    want = emu.read("t").reshape(12, 2 * LANES)[row] if 0 <= row < 10 else np.zeros(2 * LANES, np.float32)
    assert same_bits(emu.read("d"), want).all()


def test_scatter_and_scatcol():
    rng = np.random.default_rng(9)
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=9, row_vectors=3, width=3, dtype="fp16")
    b.fill(t, rng.standard_normal(9 * 3 * LANES).astype(np.float16))
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    src = b.region("src", bank=12, rows=3, dtype="fp32")
    b.fill(src, rng.standard_normal(3 * LANES).astype(np.float32))
    c = b.region("c", bank=16, rows=700, row_vectors=2, width=4, dtype="fp32")
    b.fill(c, rng.standard_normal(700 * 2 * LANES).astype(np.float32))
    b.seq(0, "mem0", Instr("SCATTER", queue=0, table_reg=t, src_reg=src, idx_reg=ix, idx_lane=0))
    b.seq(0, "mem1", Instr("SCATCOL", queue=1, table_reg=c, src_reg=src, src_off=0, idx_reg=ix, idx_lane=1, rows=700))
    idx = np.zeros(LANES, dtype=np.int32)
    idx[0], idx[1] = 5, 401
    emu, ref = run_both(b, {"ix": idx})
    assert_same(emu, ref)
    tv = emu.read("t").reshape(9, 3 * LANES)
    with np.errstate(over="ignore"):
        assert same_bits(tv[5], emu.read("src").astype(np.float16).astype(np.float32)).all()
    cv = emu.read("c").reshape(700, 2 * LANES)
    assert same_bits(cv[:, 401], emu.read("src")[:700]).all()


@pytest.mark.parametrize("position,col0,column", [(1000, 960, 40), (960, 960, 0), (1279, 960, 319)])
def test_scatcol_into_a_window_of_a_wider_table(position, col0, column):
    """col0 names the table's first column: position p lands in column p - col0 (a K-cache block)."""
    rng = np.random.default_rng(4)
    b = ProgramBuilder()
    c = b.region("c", bank=0, rows=64, width=4, dtype="fp16")
    before = rng.standard_normal(64 * LANES).astype(np.float16)
    b.fill(c, before)
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    src = b.region("src", bank=12, rows=1, dtype="fp32")
    b.fill(src, rng.standard_normal(LANES).astype(np.float32))
    b.seq(0, "mem0", Instr("SCATCOL", queue=0, table_reg=c, src_reg=src, idx_reg=ix, idx_lane=2, rows=64, col0=col0))
    idx = np.zeros(LANES, dtype=np.int32)
    idx[2] = position
    emu, ref = run_both(b, {"ix": idx})
    assert_same(emu, ref)
    want = before.astype(np.float32).reshape(64, LANES)
    want[:, column] = emu.read("src")[:64].astype(np.float16).astype(np.float32)
    assert same_bits(emu.read("c").reshape(64, LANES), want).all()


@pytest.mark.parametrize("op,value,match", [
    ("SCATTER", 9, r"SCATTER row 9 is outside table 't' \(rows 0..8\)"),
    ("SCATTER", -1, "outside table"),
    ("SCATTER", 2.5, "index 2.5 .* is not an integer"),
    ("GATHER", float("nan"), "index nan .* is not an integer"),
    ("SCATCOL", 1.0e9, "column 1e\\+09 is outside"),
    ("SCATCOL", 99, r"column 99 is outside table 't' \(columns 100..419\)"),
])
def test_runtime_index_errors(op, value, match):
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=9, dtype="fp32")
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    src = b.region("src", bank=12, rows=1, dtype="fp32")
    if op == "SCATTER":
        ins = Instr("SCATTER", queue=2, table_reg=t, src_reg=src, idx_reg=ix, idx_lane=3)
    elif op == "GATHER":
        ins = Instr("GATHER", queue=2, dst_reg=src, table_reg=t, idx_reg=ix, idx_lane=3, rows=9)
    else:
        ins = Instr("SCATCOL", queue=2, table_reg=t, src_reg=src, idx_reg=ix, idx_lane=3, rows=9,
                    col0=100 if value == 99 else 0)
    b.seq(0, "mem2", Instr("NOP", count=5))
    b.seq(0, "mem2", ins)
    emu = Emulator(b.build())
    raw = np.zeros(LANES, np.float32)
    raw[3] = value
    # i32 regions hold integers: a fractional or NaN index can only come from a corrupt memory, so poke it in
    emu.memory[emu.layout.rows(ix, np.array([0]))[0]] = raw
    with pytest.raises(EmulationError, match=rf"chip 0, cycle 5, queue mem2, instruction #1 `{op} .*{match}") as ei:
        emu.run(0)
    assert ei.value.kind == "runtime" and ei.value.cycle == 5 and ei.value.queue == "mem2"


# ------------------------------------------------------------------------------------------- C2C
@pytest.mark.parametrize("chips", [2, 8])
def test_send_recv_between_every_pair(chips):
    rng = np.random.default_rng(10 + chips)
    b = ProgramBuilder(chips=chips)
    topo = b.header()["topology"]
    n = 2
    for c in range(chips):
        s = b.region(f"out{c}", chip=c, bank=0, rows=n * (chips - 1), dtype="fp16")
        b.fill(s, rng.standard_normal(n * (chips - 1) * LANES).astype(np.float16))
        b.region(f"in{c}", chip=c, bank=30, rows=n * (chips - 1), dtype="fp16")
    # chip c sends vectors [n*l, n*l+n) of out{c} on link l; the peer stores them at [n*pl, ...) of in{peer}
    for c in range(chips):
        for l in range(chips - 1):
            b.seq(c, f"c2c{l}t", Instr("SEND", link=l, src_reg=2 * c, src_off=n * l, n=n))
            peer, pl = topo[c][l]
            b.seq(peer, f"c2c{pl}r", Instr("RECV", link=pl, dst_reg=2 * peer + 1, dst_off=n * pl, n=n))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    for c in range(chips):
        for l in range(chips - 1):
            peer, pl = topo[c][l]
            got = emu.read(f"in{peer}").reshape(-1, LANES)[n * pl:n * pl + n]
            want = emu.read(f"out{c}").reshape(-1, LANES)[n * l:n * l + n]
            assert same_bits(got, want).all()


def test_naive_rejects_what_the_emulator_rejects():
    """The reference raises on the same runtime faults (so the comparison tests are meaningful)."""
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=2)
    ix = b.region("ix", bank=4, rows=1, dtype="i32")
    b.seq(0, "mem0", Instr("SCATTER", queue=0, table_reg=t, src_reg=t, idx_reg=ix, idx_lane=0))
    p = b.build()
    ref = NaiveMachine(p)
    ref.write("ix", np.full(LANES, 2, np.int32))
    with pytest.raises(NaiveError):
        ref.run(0)


def test_link_vectors_matched_in_order_across_sends_and_recvs():
    """SENDs of 3 and 1 vectors are received as 1 + 2 + 1: vectors pair up in order, not by instruction."""
    rng = np.random.default_rng(11)
    b = ProgramBuilder(chips=2)
    s = b.region("s", chip=1, bank=0, rows=4, dtype="fp32")
    b.fill(s, rng.standard_normal(4 * LANES).astype(np.float32))
    r = b.region("r", chip=0, bank=0, rows=6, dtype="i32")  # same vector size: 4-byte elements
    b.seq(1, "c2c0t", Instr("SEND", link=0, src_reg=s, src_off=0, n=3))
    b.seq(1, "c2c0t", Instr("SEND", link=0, src_reg=s, src_off=3, n=1))
    b.seq(0, "c2c0r", Instr("RECV", link=0, dst_reg=r, dst_off=5, n=1))
    b.seq(0, "c2c0r", Instr("RECV", link=0, dst_reg=r, dst_off=0, n=2))
    b.seq(0, "c2c0r", Instr("RECV", link=0, dst_reg=r, dst_off=3, n=1))
    emu, ref = run_both(b)
    assert_same(emu, ref)
    sv = np.trunc(emu.read("s").reshape(4, LANES))  # stored as i32
    rv = emu.read("r").reshape(6, LANES)
    assert same_bits(rv[[5, 0, 1, 3]], sv).all() and not rv[[2, 4]].any()


@pytest.mark.parametrize("k, row", [(64, 7), (96, 3), (96, 9), (400, 2), (64, 40)])
def test_packed_rows_gather_and_scatter(k, row):
    """elems = k: the table is a dense run of k-element rows; rows may straddle vectors."""
    rng = np.random.default_rng(10)
    b = ProgramBuilder()
    t = b.region("t", bank=0, rows=12, row_vectors=1, width=4, dtype="fp16")
    flat = rng.standard_normal(12 * LANES).astype(np.float16)
    b.fill(t, flat)
    ix = b.region("ix", bank=10, rows=1, dtype="i32")
    src = b.region("src", bank=12, rows=2, dtype="fp32")
    b.fill(src, rng.standard_normal(2 * LANES).astype(np.float32))
    d = b.region("d", bank=16, rows=2, dtype="fp32")
    nrows = 12 * LANES // k
    b.seq(0, "mem0", Instr("GATHER", queue=0, dst_reg=d, table_reg=t, idx_reg=ix, rows=nrows, elems=k))
    b.seq(0, "mem1", Instr("SCATTER", queue=1, table_reg=t, src_reg=src, idx_reg=ix, idx_lane=1, elems=k))
    idx = np.zeros(LANES, dtype=np.int32)
    idx[0], idx[1] = row, (row + 1) % nrows
    emu, ref = run_both(b, {"ix": idx})
    assert_same(emu, ref)
    got = emu.read("d")
    want = np.zeros(got.size, np.float32)
    if row < nrows:
        want[:k] = flat.astype(np.float32)[row * k:(row + 1) * k]
    assert same_bits(got[:-(-k // LANES) * LANES], want[:-(-k // LANES) * LANES]).all()
    tv = emu.read("t")
    r2 = (row + 1) % nrows
    with np.errstate(over="ignore"):
        assert same_bits(tv[r2 * k:(r2 + 1) * k], emu.read("src")[:k].astype(np.float16).astype(np.float32)).all()
    untouched = np.ones(tv.size, bool)
    untouched[r2 * k:(r2 + 1) * k] = False
    assert same_bits(tv[untouched], flat.astype(np.float32)[untouched]).all()
