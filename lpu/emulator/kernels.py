"""Numba kernels of the executor: one call runs one token's bucket program over the whole machine.

Everything here takes only arrays and scalars (the stumpy pattern): `machine.py` validates, lays out
memory and turns a bucket's streams into the flat instruction matrix `ins` (one row per instruction,
in execution order, columns COLUMNS); `run_bucket` loops over it.

Memory is one float32 array [vectors, VECTOR_LANES] for all chips; `regs` (columns R_*) and
`bank_base` turn (region, vector) into a row of it. Element types: fp32 stored as is, fp16 stored as
float32 values always rounded to fp16 (bit-exact numpy astype(float16), done with integer operations
on uint32 views because Numba has no float16), i32 stored as integral float32 values.

Every instruction reads all its sources before it writes (results go through `scratch`): that is the
"full effect at once" semantics the schedule checker guarantees equals the timed hardware.
No fastmath anywhere: NaN comparisons, the fp16 rounding and the summation order must stay exact.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

LANES = 320  # isa.VECTOR_LANES (asserted in machine.py)

# Opcodes (isa/table.py; asserted in machine.py)
OP_NOP, OP_SYNC = 0x01, 0x02
OP_VXM, OP_SXM = 0x10, 0x20
OP_LW, OP_IW, OP_ACC, OP_EMIT = 0x30, 0x31, 0x32, 0x33
OP_COPY, OP_GATHER, OP_SCATTER, OP_SCATCOL = 0x40, 0x41, 0x42, 0x43
OP_SEND, OP_RECV, OP_DESKEW = 0x50, 0x51, 0x52

# Element type codes (isa.table.DTYPES)
DT_FP32, DT_FP16, DT_I32 = 0, 1, 2
MODE_SEQ, MODE_REP, MODE_GRP, MODE_IMM = 0, 1, 2, 3

# VXM function codes (isa.table.VXM_FNS; asserted in machine.py)
FN_COPY, FN_NEG, FN_ABS, FN_RELU, FN_EXP, FN_TANH, FN_RSQRT, FN_RECIP, FN_ISNAN = 0, 1, 2, 3, 4, 5, 6, 7, 8
FN_ADD, FN_SUB, FN_MUL, FN_MAX, FN_MIN, FN_CMPGT, FN_CMPGE, FN_CMPEQ, FN_SELECT = 16, 17, 18, 19, 20, 21, 22, 23, 24
FN_RSUM, FN_RMAX = 32, 33
SXM_ROT, SXM_SHUF = 0, 1

# Columns of the instruction matrix: two derived ones, then instruction fields by name.
COLUMNS = (
    "opcode", "chip", "dlink",
    "fn", "queue", "n", "group", "period", "valid", "shift", "window",
    "dst_reg", "dst_off", "a_reg", "a_off", "a_mode", "a_m", "b_reg", "b_off", "b_mode", "b_m",
    "src_reg", "src_off", "map_reg", "map_off",
    "unit", "row0", "col", "rows", "x_reg", "x_off", "x_lane", "slot", "accumulate",
    "dst_lane", "src_lane", "lanes", "table_reg", "idx_reg", "idx_off", "idx_lane", "base", "link", "elems",
)
(C_OPCODE, C_CHIP, C_DLINK,
 C_FN, C_QUEUE, C_N, C_GROUP, C_PERIOD, C_VALID, C_SHIFT, C_WINDOW,
 C_DST_REG, C_DST_OFF, C_A_REG, C_A_OFF, C_A_MODE, C_A_M, C_B_REG, C_B_OFF, C_B_MODE, C_B_M,
 C_SRC_REG, C_SRC_OFF, C_MAP_REG, C_MAP_OFF,
 C_UNIT, C_ROW0, C_COL, C_ROWS, C_X_REG, C_X_OFF, C_X_LANE, C_SLOT, C_ACCUMULATE,
 C_DST_LANE, C_SRC_LANE, C_LANES, C_TABLE_REG, C_IDX_REG, C_IDX_OFF, C_IDX_LANE, C_BASE, C_LINK,
 C_ELEMS) = range(len(COLUMNS))

# Columns of the region table
REGION_COLUMNS = ("chip", "bank", "width", "addr", "row_vectors", "rows", "dtype", "n_vectors")
R_CHIP, R_BANK, R_WIDTH, R_ADDR, R_RV, R_ROWS, R_DTYPE, R_NVEC = range(len(REGION_COLUMNS))

# Runtime error codes (err[0]); err[1] = instruction row; errval[0] = the offending value
E_OK = 0
E_SCATTER_ROW = 1       # scatter row out of range
E_RECV_EMPTY = 2        # recv from an empty link
E_GATHER_INDEX = 3      # gather index is not an integer
E_SCATTER_INDEX = 4     # scatter index is not an integer
E_SCATCOL_INDEX = 5     # scatcol column index is not an integer
E_SCATCOL_COL = 6       # scatcol column out of range
E_SHUF_MAP = 7          # shuf map names an element outside the window
E_LINK_FULL = 8         # more vectors sent than the link buffer holds
E_NO_TILE = 9           # IW/ACC without a loaded/installed tile
E_UNKNOWN_OP = 10

_BIG_INDEX = 2147483648.0  # |index| >= 2**31 is out of any range (and not an i32)


# ----------------------------------------------------------------------------- fp16 rounding
@njit(cache=True, inline="always")
def f16_round_bits(b):
    """float32 bit pattern (int64 in 0..2**32-1) -> bit pattern of float32(float16(x)), numpy-exact:
    round to nearest even, fp16 subnormals, overflow to inf, NaN payload truncated (kept a NaN)."""
    sign = b & 0x80000000
    a = b & 0x7FFFFFFF
    if a >= 0x7F800000:
        if a == 0x7F800000:
            return b
        hm = (a & 0x7FFFFF) >> 13
        if hm == 0:
            hm = 1
        return sign | 0x7F800000 | (hm << 13)
    if a >= 0x477FF000:  # >= 65520: rounds to 65536, beyond fp16
        return sign | 0x7F800000
    if a >= 0x38800000:  # fp16 normal range: keep 10 mantissa bits, ties to even
        return sign | ((a + 0xFFF + ((a >> 13) & 1)) & 0x7FFFE000)
    e = a >> 23
    if e < 102:  # below 2**-25: rounds to zero
        return sign
    sig = (a & 0x7FFFFF) | 0x800000  # value = sig * 2**(e - 150); fp16 subnormal quantum 2**-24
    shift = 126 - e
    m = sig >> shift
    rem = sig & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rem > half or (rem == half and (m & 1) == 1):
        m += 1
    if m == 0:
        return sign
    p = 0
    while (m >> (p + 1)) != 0:
        p += 1
    return sign | ((p + 103) << 23) | ((m << (23 - p)) & 0x7FFFFF)


@njit(cache=True, inline="always")
def f16_to_f32_bits(h):
    """fp16 bit pattern -> float32 bit pattern (exact)."""
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        if m == 0:
            return sign
        p = 0
        while (m >> (p + 1)) != 0:
            p += 1
        return sign | ((p + 103) << 23) | ((m << (23 - p)) & 0x7FFFFF)
    if e == 31:
        return sign | 0x7F800000 | (m << 13)
    return sign | ((e + 112) << 23) | (m << 13)


@njit(cache=True)
def round_f16_array(x_bits, out_bits):
    """Elementwise f16_round_bits over uint32 arrays (the host side and the tests use it)."""
    for k in range(x_bits.size):
        out_bits[k] = f16_round_bits(np.int64(x_bits[k]))


@njit(cache=True)
def load_f16_vectors(mem_bits, rows, data_u16):
    """mem rows[k] = the k-th VECTOR_LANES fp16 values of data (uint16 bit patterns)."""
    for k in range(rows.size):
        g = rows[k]
        base = k * LANES
        for l in range(LANES):
            mem_bits[g, l] = f16_to_f32_bits(np.int64(data_u16[base + l]))


# ----------------------------------------------------------------------------- addressing
@njit(cache=True, inline="always")
def vec_row(regs, bank_base, nbanks, r, v):
    """Row of `mem` holding vector v of region r (Region.locate, then the bank's base row)."""
    rv = np.int64(regs[r, R_RV])
    row = v // rv
    j = v - row * rv
    w = np.int64(regs[r, R_WIDTH])
    q = row // w
    return bank_base[np.int64(regs[r, R_CHIP]) * nbanks + regs[r, R_BANK] + (row - q * w)] + regs[r, R_ADDR] + q * rv + j


@njit(cache=True, inline="always")
def src_index(off, mode, m, i):
    if mode == MODE_REP:
        return off + i % m
    if mode == MODE_GRP:
        return off + i // m
    return off + i


@njit(cache=True, inline="always")
def store_lanes(mem, mem_bits, g, lane0, nl, dtype, scratch, scratch_bits, base):
    """mem[g, lane0:lane0+nl] = scratch[base:base+nl] rounded to dtype."""
    if dtype == DT_FP16:
        for l in range(nl):
            mem_bits[g, lane0 + l] = f16_round_bits(np.int64(scratch_bits[base + l]))
    elif dtype == DT_I32:
        for l in range(nl):
            mem[g, lane0 + l] = np.trunc(scratch[base + l])
    else:
        for l in range(nl):
            mem[g, lane0 + l] = scratch[base + l]


@njit(cache=True, inline="always")
def _fmax(x, y):
    if x != x:
        return x
    if y != y:
        return y
    return x if x >= y else y


@njit(cache=True, inline="always")
def _fmin(x, y):
    if x != x:
        return x
    if y != y:
        return y
    return x if x <= y else y


@njit(cache=True, inline="always")
def _is_index(v):
    return v == v and abs(v) < _BIG_INDEX and math.floor(v) == v


# ----------------------------------------------------------------------------- units
@njit(cache=True, error_model="numpy")
def _vxm(ins, i, imm, mem, regs, bank_base, nbanks, scratch, bvec):
    fn = ins[i, C_FN]
    n = np.int64(ins[i, C_N])
    a_reg, a_off, a_mode, a_m = ins[i, C_A_REG], np.int64(ins[i, C_A_OFF]), ins[i, C_A_MODE], np.int64(ins[i, C_A_M])
    b_reg, b_off, b_mode, b_m = ins[i, C_B_REG], np.int64(ins[i, C_B_OFF]), ins[i, C_B_MODE], np.int64(ins[i, C_B_M])
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if fn == FN_RSUM or fn == FN_RMAX:
        group = max(np.int64(1), np.int64(ins[i, C_GROUP]))
        for d in range(n):
            base = d * LANES
            ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d * group))
            for l in range(LANES):
                scratch[base + l] = mem[ga, l]
            for g in range(1, group):
                ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d * group + g))
                if fn == FN_RSUM:
                    for l in range(LANES):
                        scratch[base + l] = scratch[base + l] + mem[ga, l]
                else:
                    for l in range(LANES):
                        scratch[base + l] = _fmax(scratch[base + l], mem[ga, l])
        return
    binary = fn >= FN_ADD
    fill = imm[i]
    for d in range(n):
        base = d * LANES
        ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d))
        if binary:
            if b_mode == MODE_IMM:
                for l in range(LANES):
                    bvec[l] = fill
            else:
                gb = vec_row(regs, bank_base, nbanks, b_reg, src_index(b_off, b_mode, b_m, d))
                for l in range(LANES):
                    bvec[l] = mem[gb, l]
        if fn == FN_COPY:
            for l in range(LANES):
                scratch[base + l] = mem[ga, l]
        elif fn == FN_NEG:
            for l in range(LANES):
                scratch[base + l] = -mem[ga, l]
        elif fn == FN_ABS:
            for l in range(LANES):
                scratch[base + l] = abs(mem[ga, l])
        elif fn == FN_RELU:
            for l in range(LANES):
                scratch[base + l] = _fmax(mem[ga, l], zero)
        elif fn == FN_EXP:
            for l in range(LANES):
                scratch[base + l] = np.float32(np.exp(np.float64(mem[ga, l])))
        elif fn == FN_TANH:
            for l in range(LANES):
                scratch[base + l] = np.float32(np.tanh(np.float64(mem[ga, l])))
        elif fn == FN_RSQRT:
            for l in range(LANES):
                scratch[base + l] = np.float32(1.0 / np.sqrt(np.float64(mem[ga, l])))
        elif fn == FN_RECIP:
            for l in range(LANES):
                scratch[base + l] = one / mem[ga, l]
        elif fn == FN_ISNAN:
            for l in range(LANES):
                x = mem[ga, l]
                scratch[base + l] = one if x != x else zero
        elif fn == FN_ADD:
            for l in range(LANES):
                scratch[base + l] = mem[ga, l] + bvec[l]
        elif fn == FN_SUB:
            for l in range(LANES):
                scratch[base + l] = mem[ga, l] - bvec[l]
        elif fn == FN_MUL:
            for l in range(LANES):
                scratch[base + l] = mem[ga, l] * bvec[l]
        elif fn == FN_MAX:
            for l in range(LANES):
                scratch[base + l] = _fmax(mem[ga, l], bvec[l])
        elif fn == FN_MIN:
            for l in range(LANES):
                scratch[base + l] = _fmin(mem[ga, l], bvec[l])
        elif fn == FN_CMPGT:
            for l in range(LANES):
                scratch[base + l] = one if mem[ga, l] > bvec[l] else zero
        elif fn == FN_CMPGE:
            for l in range(LANES):
                scratch[base + l] = one if mem[ga, l] >= bvec[l] else zero
        elif fn == FN_CMPEQ:
            for l in range(LANES):
                scratch[base + l] = one if mem[ga, l] == bvec[l] else zero
        elif fn == FN_SELECT:
            for l in range(LANES):
                scratch[base + l] = bvec[l] if mem[ga, l] != zero else fill


@njit(cache=True, error_model="numpy")
def _acc(mem, acc, tmp, xg, x_lane, tile, rows, cu, slot, accumulate):
    """acc[cu, slot] = (accumulate ? acc : 0) + sum_r x[x_lane + r] * tile row r (rows of mem)."""
    for l in range(LANES):
        tmp[l] = 0.0
    for r in range(rows):
        xr = mem[xg, x_lane + r]
        g = tile[r]
        for l in range(LANES):
            tmp[l] += xr * mem[g, l]
    if accumulate:
        for l in range(LANES):
            acc[cu, slot, l] = acc[cu, slot, l] + tmp[l]
    else:
        for l in range(LANES):
            acc[cu, slot, l] = tmp[l]


@njit(cache=True, error_model="numpy")
def run_bucket(ins, imm, mem, mem_bits, regs, bank_base, nbanks, units,
               acc, shadow, shadow_rows, active, active_rows,
               linkbuf, link_base, link_cap, link_head, link_tail,
               scratch, scratch_bits, err, errval):
    """Execute instruction rows 0..len(ins)-1 in order. Returns -1, or the row that failed (err/errval say why)."""
    bvec = np.empty(LANES, dtype=np.float32)
    tmp = np.empty(LANES, dtype=np.float32)
    link_head[:] = 0
    link_tail[:] = 0
    for i in range(ins.shape[0]):
        op = ins[i, C_OPCODE]
        chip = np.int64(ins[i, C_CHIP])
        if op == OP_VXM:
            _vxm(ins, i, imm, mem, regs, bank_base, nbanks, scratch, bvec)
            n = np.int64(ins[i, C_N])
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            period = np.int64(ins[i, C_PERIOD])
            valid = np.int64(ins[i, C_VALID])
            dt = regs[dreg, R_DTYPE]
            for d in range(n):
                if period > 0 and d % period == period - 1:
                    for l in range(valid, LANES):
                        scratch[d * LANES + l] = 0.0
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, d * LANES)
        elif op == OP_SXM:
            n = np.int64(ins[i, C_N])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            if ins[i, C_FN] == SXM_ROT:
                shift = np.int64(ins[i, C_SHIFT])
                for d in range(n):
                    gs = vec_row(regs, bank_base, nbanks, sreg, soff + d)
                    for l in range(LANES):
                        scratch[d * LANES + l] = mem[gs, (l + shift) % LANES]
            else:
                w = np.int64(ins[i, C_WINDOW])
                win = np.empty(w, dtype=np.int64)
                for k in range(w):
                    win[k] = vec_row(regs, bank_base, nbanks, sreg, soff + k)
                mreg = ins[i, C_MAP_REG]
                moff = np.int64(ins[i, C_MAP_OFF])
                limit = w * LANES
                for d in range(n):
                    gm = vec_row(regs, bank_base, nbanks, mreg, moff + d)
                    for l in range(LANES):
                        e = np.int64(mem[gm, l])
                        if e < 0:
                            scratch[d * LANES + l] = 0.0
                        elif e >= limit:
                            err[0] = E_SHUF_MAP
                            errval[0] = mem[gm, l]
                            return i
                        else:
                            scratch[d * LANES + l] = mem[win[e // LANES], e % LANES]
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, d * LANES)
        elif op == OP_LW:
            cu = chip * units + ins[i, C_UNIT]
            sreg = ins[i, C_SRC_REG]
            rv = np.int64(regs[sreg, R_RV])
            row0 = np.int64(ins[i, C_ROW0])
            col = np.int64(ins[i, C_COL])
            rows = np.int64(ins[i, C_ROWS])
            for r in range(rows):
                shadow[cu, r] = vec_row(regs, bank_base, nbanks, sreg, (row0 + r) * rv + col)
            shadow_rows[cu] = rows
        elif op == OP_IW:
            cu = chip * units + ins[i, C_UNIT]
            if shadow_rows[cu] < 0:
                err[0] = E_NO_TILE
                return i
            for r in range(shadow_rows[cu]):
                active[cu, r] = shadow[cu, r]
            active_rows[cu] = shadow_rows[cu]
        elif op == OP_ACC:
            cu = chip * units + ins[i, C_UNIT]
            rows = active_rows[cu]
            if rows < 0:
                err[0] = E_NO_TILE
                return i
            xg = vec_row(regs, bank_base, nbanks, ins[i, C_X_REG], np.int64(ins[i, C_X_OFF]))
            _acc(mem, acc, tmp, xg, np.int64(ins[i, C_X_LANE]), active[cu], rows, cu,
                 np.int64(ins[i, C_SLOT]), ins[i, C_ACCUMULATE] != 0)
        elif op == OP_EMIT:
            cu = chip * units + ins[i, C_UNIT]
            slot = np.int64(ins[i, C_SLOT])
            lanes = np.int64(ins[i, C_LANES])
            sl = np.int64(ins[i, C_SRC_LANE])
            for l in range(lanes):
                scratch[l] = acc[cu, slot, sl + l]
            dreg = ins[i, C_DST_REG]
            g = vec_row(regs, bank_base, nbanks, dreg, np.int64(ins[i, C_DST_OFF]))
            store_lanes(mem, mem_bits, g, np.int64(ins[i, C_DST_LANE]), lanes, regs[dreg, R_DTYPE], scratch, scratch_bits, 0)
        elif op == OP_COPY:
            n = np.int64(ins[i, C_N])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            for d in range(n):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + d)
                for l in range(LANES):
                    scratch[d * LANES + l] = mem[gs, l]
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, d * LANES)
        elif op == OP_GATHER:
            treg = ins[i, C_TABLE_REG]
            gi = vec_row(regs, bank_base, nbanks, ins[i, C_IDX_REG], np.int64(ins[i, C_IDX_OFF]))
            v = mem[gi, ins[i, C_IDX_LANE]]
            if not _is_index(v):
                err[0] = E_GATHER_INDEX
                errval[0] = v
                return i
            row = np.int64(v) - np.int64(ins[i, C_BASE])
            rv = np.int64(regs[treg, R_RV])
            k = np.int64(ins[i, C_ELEMS])
            if k > 0:  # packed rows: flat elements row*k .. row*k+k-1, then zeros
                nv = (k + LANES - 1) // LANES
                for e in range(nv * LANES):
                    scratch[e] = 0.0
                if 0 <= row < ins[i, C_ROWS]:
                    for e in range(k):
                        f = row * k + e
                        gs = vec_row(regs, bank_base, nbanks, treg, f // LANES)
                        scratch[e] = mem[gs, f % LANES]
                dreg = ins[i, C_DST_REG]
                doff = np.int64(ins[i, C_DST_OFF])
                dt = regs[dreg, R_DTYPE]
                for j in range(nv):
                    g = vec_row(regs, bank_base, nbanks, dreg, doff + j)
                    store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, j * LANES)
                continue
            if 0 <= row < ins[i, C_ROWS]:
                for j in range(rv):
                    gs = vec_row(regs, bank_base, nbanks, treg, row * rv + j)
                    for l in range(LANES):
                        scratch[j * LANES + l] = mem[gs, l]
            else:
                for k in range(rv * LANES):
                    scratch[k] = 0.0
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            for j in range(rv):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + j)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, j * LANES)
        elif op == OP_SCATTER:
            treg = ins[i, C_TABLE_REG]
            gi = vec_row(regs, bank_base, nbanks, ins[i, C_IDX_REG], np.int64(ins[i, C_IDX_OFF]))
            v = mem[gi, ins[i, C_IDX_LANE]]
            if not _is_index(v):
                err[0] = E_SCATTER_INDEX
                errval[0] = v
                return i
            row = np.int64(v)
            k = np.int64(ins[i, C_ELEMS])
            limit = regs[treg, R_ROWS] if k == 0 else (np.int64(regs[treg, R_NVEC]) * LANES) // k
            if not 0 <= row < limit:
                err[0] = E_SCATTER_ROW
                errval[0] = v
                return i
            rv = np.int64(regs[treg, R_RV])
            if k > 0:  # packed rows: write k elements at flat row*k
                sreg = ins[i, C_SRC_REG]
                soff = np.int64(ins[i, C_SRC_OFF])
                for e in range(k):
                    gs = vec_row(regs, bank_base, nbanks, sreg, soff + e // LANES)
                    scratch[e] = mem[gs, e % LANES]
                dt = regs[treg, R_DTYPE]
                for e in range(k):
                    f = row * k + e
                    g = vec_row(regs, bank_base, nbanks, treg, f // LANES)
                    store_lanes(mem, mem_bits, g, f % LANES, 1, dt, scratch, scratch_bits, e)
                continue
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            for j in range(rv):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + j)
                for l in range(LANES):
                    scratch[j * LANES + l] = mem[gs, l]
            dt = regs[treg, R_DTYPE]
            for j in range(rv):
                g = vec_row(regs, bank_base, nbanks, treg, row * rv + j)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, j * LANES)
        elif op == OP_SCATCOL:
            treg = ins[i, C_TABLE_REG]
            gi = vec_row(regs, bank_base, nbanks, ins[i, C_IDX_REG], np.int64(ins[i, C_IDX_OFF]))
            v = mem[gi, ins[i, C_IDX_LANE]]
            if not _is_index(v):
                err[0] = E_SCATCOL_INDEX
                errval[0] = v
                return i
            c = np.int64(v)
            rv = np.int64(regs[treg, R_RV])
            if not 0 <= c < rv * LANES:
                err[0] = E_SCATCOL_COL
                errval[0] = v
                return i
            rows = np.int64(ins[i, C_ROWS])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            for r in range(rows):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + r // LANES)
                scratch[r] = mem[gs, r % LANES]
            dt = regs[treg, R_DTYPE]
            vc = c // LANES
            lane = c % LANES
            for r in range(rows):
                g = vec_row(regs, bank_base, nbanks, treg, r * rv + vc)
                store_lanes(mem, mem_bits, g, lane, 1, dt, scratch, scratch_bits, r)
        elif op == OP_SEND:
            dl = ins[i, C_DLINK]
            n = np.int64(ins[i, C_N])
            if link_tail[dl] + n > link_cap[dl]:
                err[0] = E_LINK_FULL
                return i
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            for d in range(n):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + d)
                slot = link_base[dl] + link_tail[dl] + d
                for l in range(LANES):
                    linkbuf[slot, l] = mem[gs, l]
            link_tail[dl] += n
        elif op == OP_RECV:
            dl = ins[i, C_DLINK]
            n = np.int64(ins[i, C_N])
            if link_tail[dl] - link_head[dl] < n:
                err[0] = E_RECV_EMPTY
                errval[0] = link_tail[dl] - link_head[dl]
                return i
            for d in range(n):
                slot = link_base[dl] + link_head[dl] + d
                for l in range(LANES):
                    scratch[d * LANES + l] = linkbuf[slot, l]
            link_head[dl] += n
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem_bits, g, 0, LANES, dt, scratch, scratch_bits, d * LANES)
        elif op == OP_NOP or op == OP_SYNC or op == OP_DESKEW:
            pass
        else:
            err[0] = E_UNKNOWN_OP
            return i
    return -1
