"""Numba kernels of the executor: one call runs one token's bucket program over the whole machine.

Everything here takes only arrays and scalars (the stumpy pattern): `machine.py` validates, lays out
memory and turns a bucket's streams into the flat instruction matrix `ins` (one row per instruction,
in execution order, columns COLUMNS); `run_bucket` loops over it.

Memory is two arrays indexed by the same rows (layout.py): `mem`, float32 [vectors, VECTOR_LANES], and
`mem16`, uint16 [vectors16 >= vectors, VECTOR_LANES]; `regs` (columns R_*) and `bank_base` turn (region, vector) into a row.
A region's R_STORE says which array holds it: ST_F16 for fp16 regions that share no row with a region of
another type (weights, KV caches, fp16 activations: half the bytes, and the ACC loop streams half the
bytes), whose rows hold the fp16 bit patterns; ST_F32 for the others, where fp32 is stored as is, fp16 as
float32 values always rounded to fp16, i32 as integral float32 values. Only the rows a region uses are
ever touched, so the unused rows of either array cost no resident memory.

fp16 <-> float32 conversions are bit-exact numpy astype (round to nearest even, subnormals, overflow to
inf, NaN payloads kept): LLVM's half conversions (F16C on x86) plus a select for NaNs, or branch-free
integer/float bit tricks where the CPU has no half conversions; both vectorise.

Every instruction reads all its sources before it writes (results go through `scratch`): that is the
"full effect at once" semantics the schedule checker guarantees equals the timed hardware.
No fastmath anywhere: NaN comparisons, the fp16 rounding and the summation order must stay exact.

Parallel execution (run_group): chips share nothing but links, so the chips are split into groups, one
per thread, each running its chips' instructions in execution order (machine.py). A RECV fed by another
group's SEND waits until that group has passed the SEND (`progress`, atomic release/acquire; spinning,
then yielding the core, so that a busy machine costs a context switch, not a time slice). Same order per
chip, same results, bit for bit.
"""
from __future__ import annotations

import ctypes
import math
import platform

import llvmlite.binding as _llvm
import numpy as np
from llvmlite import ir as _ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from isa.table import VECTOR_LANES as LANES  # a compile-time constant of every kernel


@njit(cache=True)
def compiled_lanes() -> int:
    """LANES as the cached kernels saw it: Numba freezes globals at compile time and its on-disk cache
    does not notice a change in another file, so machine.py compares this with isa at import."""
    return LANES


# Opcodes (isa/table.py; asserted in machine.py)
OP_NOP, OP_SYNC = 0x01, 0x02
OP_VXM, OP_SXM = 0x10, 0x20
OP_LW, OP_IW, OP_ACC, OP_EMIT = 0x30, 0x31, 0x32, 0x33
OP_COPY, OP_GATHER, OP_SCATTER, OP_SCATCOL = 0x40, 0x41, 0x42, 0x43
OP_SEND, OP_RECV, OP_DESKEW = 0x50, 0x51, 0x52

# Element type codes (isa.table.DTYPES)
DT_FP32, DT_FP16, DT_I32, DT_I8, DT_FP8 = 0, 1, 2, 3, 4
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
    "col0",
)
(C_OPCODE, C_CHIP, C_DLINK,
 C_FN, C_QUEUE, C_N, C_GROUP, C_PERIOD, C_VALID, C_SHIFT, C_WINDOW,
 C_DST_REG, C_DST_OFF, C_A_REG, C_A_OFF, C_A_MODE, C_A_M, C_B_REG, C_B_OFF, C_B_MODE, C_B_M,
 C_SRC_REG, C_SRC_OFF, C_MAP_REG, C_MAP_OFF,
 C_UNIT, C_ROW0, C_COL, C_ROWS, C_X_REG, C_X_OFF, C_X_LANE, C_SLOT, C_ACCUMULATE,
 C_DST_LANE, C_SRC_LANE, C_LANES, C_TABLE_REG, C_IDX_REG, C_IDX_OFF, C_IDX_LANE, C_BASE, C_LINK,
 C_ELEMS, C_COL0) = range(len(COLUMNS))

# Columns of the region table
REGION_COLUMNS = ("chip", "bank", "width", "addr", "row_vectors", "rows", "dtype", "n_vectors", "store", "base")
R_CHIP, R_BANK, R_WIDTH, R_ADDR, R_RV, R_ROWS, R_DTYPE, R_NVEC, R_STORE, R_BASE = range(len(REGION_COLUMNS))
ST_F32, ST_F16 = 0, 1  # R_STORE: which memory array holds the region
# R_BASE: -1 (the region lives at its rows in the bank layout), or its first row, laid out column-major

# MXM tile state per unit (rows of the `tile` array): shadow tile, then active tile, the same fields:
# first entry in the bucket's `tiles`, rows (-1: none), store of the region, element type of the region
T_SH_START, T_SH_ROWS, T_SH_ST, T_SH_DT, T_AC_START, T_AC_ROWS, T_AC_ST, T_AC_DT = range(8)
TILE_STATE = 8

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


# ----------------------------------------------------------------------------- fp16 <-> float32
def _host_converts_half() -> bool:
    """True where LLVM lowers half<->float conversions to instructions (x86 F16C, AArch64)."""
    arch = platform.machine().lower()
    if arch in ("aarch64", "arm64"):
        return True
    if arch in ("x86_64", "amd64"):
        try:
            return "+f16c" in _llvm.get_host_cpu_features().flatten().split(",")
        except Exception:  # pragma: no cover - llvmlite without feature queries
            return False
    return False


HW_HALF = _host_converts_half()
_U = np.uint32


@intrinsic
def _bits_f32(typingctx, b):
    """uint32 bit pattern -> float32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """float32 -> its uint32 bit pattern."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def _h2f_hw(typingctx, h):
    """fp16 bits (uint16) -> float32 by LLVM's fpext (quiets signalling NaNs)."""
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], _ir.HalfType()), _ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _f2h_hw(typingctx, x):
    """float32 -> fp16 bits by LLVM's fptrunc (round to nearest even; NaN payloads not numpy's)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], _ir.HalfType()), _ir.IntType(16))
    return types.uint16(types.float32), codegen


@njit(cache=True, inline="always")
def h2f_soft(h):
    """fp16 bits -> float32, exact, integer/float bit tricks only: a normal or subnormal half, moved into
    float32's exponent field, is the value times 2**-112 (exactly, without DAZ); inf/NaN keep the payload."""
    hh = _U(h)
    sh = (hh & _U(0x7FFF)) << _U(13)
    v = _f32_bits(_bits_f32(sh) * np.float32(5.192296858534828e+33))  # 2**112
    special = _U(0x7F800000) | (sh & _U(0x007FE000))
    v = special if sh >= _U(0x0F800000) else v
    return _bits_f32(v | ((hh & _U(0x8000)) << _U(16)))


@njit(cache=True, inline="always")
def f2h_soft(x):
    """float32 -> fp16 bits, exactly numpy's astype(float16), bit tricks only (F. Giesen's rtne variant)."""
    b = _f32_bits(x)
    sign = (b >> _U(16)) & _U(0x8000)
    a = b & _U(0x7FFFFFFF)
    m = (a & _U(0x7FFFFF)) >> _U(13)
    big = _U(0x7C00) | (max(m, _U(1)) if a > _U(0x7F800000) else _U(0))  # >= 65536: inf, NaN keeps payload
    sub = _f32_bits(_bits_f32(a) + np.float32(0.5)) - _U(0x3F000000)  # below 2**-14: the FPU rounds
    nor = (a + _U(0xC8000FFF) + ((a >> _U(13)) & _U(1))) >> _U(13)  # rebias, round half to even
    o = big if a >= _U(0x47800000) else (sub if a < _U(0x38800000) else nor)
    return np.uint16(o | sign)


@njit(cache=True, inline="always")
def h2f_exact(h):
    """fp16 bits -> float32, bit-exact numpy astype(float32) (NaN payloads kept)."""
    if HW_HALF:
        hh = _U(h)
        v = _f32_bits(_h2f_hw(np.uint16(h)))
        nanb = _U(0x7F800000) | ((hh & _U(0x8000)) << _U(16)) | ((hh & _U(0x3FF)) << _U(13))
        isnan = ((hh & _U(0x7C00)) == _U(0x7C00)) & ((hh & _U(0x3FF)) != _U(0))
        return _bits_f32(nanb if isnan else v)
    return h2f_soft(h)


@njit(cache=True, inline="always")
def f2h_exact(x):
    """float32 -> fp16 bits, bit-exact numpy astype(float16) (NaN payloads kept)."""
    if HW_HALF:
        h = _U(_f2h_hw(x))
        b = _f32_bits(x)
        nanh = ((b >> _U(16)) & _U(0x8000)) | _U(0x7C00) | max((b & _U(0x7FFFFF)) >> _U(13), _U(1))
        return np.uint16(nanh if x != x else h)
    return f2h_soft(x)


@njit(cache=True, inline="always")
def h2f_fast(h):
    """fp16 bits -> float32 for arithmetic (the ACC loop): exact values; a signalling NaN may come back
    quieted, which no arithmetic result can tell (x86 quiets NaN operands)."""
    if HW_HALF:
        return _h2f_hw(np.uint16(h))
    return h2f_soft(h)


@njit(cache=True)
def round_f16_array(x_bits, out_bits):
    """out = bits of float32(float16(x)) for uint32 bit patterns x (host side and tests)."""
    for k in range(x_bits.size):
        out_bits[k] = _f32_bits(h2f_exact(f2h_exact(_bits_f32(_U(x_bits[k])))))


@njit(cache=True)
def f16_bits_to_f32(h, out, soft):
    """out[k] = float32 of fp16 bits h[k] (soft: the bit-trick path; tests check both paths)."""
    if soft:
        for k in range(h.size):
            out[k] = h2f_soft(h[k])
    else:
        for k in range(h.size):
            out[k] = h2f_exact(h[k])


@njit(cache=True)
def f32_to_f16_bits(x, out, soft):
    """out[k] = fp16 bits of float32 x[k] (soft: the bit-trick path)."""
    if soft:
        for k in range(x.size):
            out[k] = f2h_soft(x[k])
    else:
        for k in range(x.size):
            out[k] = f2h_exact(x[k])


@njit(cache=True)
def load_f16_vectors(mem, rows, data_u16):
    """mem rows[k] = the k-th VECTOR_LANES fp16 values of data (uint16 bit patterns), as float32."""
    for k in range(rows.size):
        src = data_u16[k * LANES:(k + 1) * LANES]
        dst = mem[rows[k]]
        for l in range(LANES):
            dst[l] = h2f_exact(src[l])


# ----------------------------------------------------------------------------- threads
@intrinsic
def _load_acquire(typingctx, arr, idx):
    """arr[idx] (int64 array), an atomic load with acquire ordering."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):
    """arr[idx] = val (int64 array), an atomic store with release ordering."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()
    return types.void(arr, idx, types.int64), codegen


def _register_yield() -> bool:
    """Make libc's sched_yield callable from the kernels as `lpu_sched_yield` (False where there is none)."""
    try:
        addr = ctypes.cast(ctypes.CDLL(None).sched_yield, ctypes.c_void_p).value
    except (AttributeError, OSError, TypeError):
        return False
    if not addr:
        return False
    _llvm.add_symbol("lpu_sched_yield", addr)
    return True


HAVE_YIELD = _register_yield()


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, sig, args):
        if HAVE_YIELD:
            fn = cgutils.get_or_insert_function(builder.module, _ir.FunctionType(_ir.IntType(32), []), "lpu_sched_yield")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


_SPINS = 4000  # polls before a waiting thread starts yielding its core


@njit(cache=True, inline="always")
def _wait_for(progress, grp, row, flag):
    """Wait until group grp has passed `row` (progress[grp] >= row); False if another group failed."""
    k = 0
    while _load_acquire(progress, grp) < row:
        if _load_acquire(flag, 0) != 0:
            return False
        k += 1
        if k > _SPINS:
            _sched_yield()
    return True


# ----------------------------------------------------------------------------- addressing
@njit(cache=True, inline="always")
def vec_row(regs, bank_base, nbanks, r, v):
    """Row of the memory holding vector v of region r (Region.locate, then the bank's base row; or the
    region's own column-major rows, layout.py)."""
    rv = np.int64(regs[r, R_RV])
    b = regs[r, R_BASE]
    if b >= 0:
        if rv == 1:
            return b + v
        row = v // rv
        return b + (v - row * rv) * regs[r, R_ROWS] + row
    w = np.int64(regs[r, R_WIDTH])
    cb = np.int64(regs[r, R_CHIP]) * nbanks + regs[r, R_BANK]
    if rv == 1:
        if w == 1:
            return bank_base[cb] + regs[r, R_ADDR] + v
        q = v // w
        return bank_base[cb + (v - q * w)] + regs[r, R_ADDR] + q
    row = v // rv
    j = v - row * rv
    q = row // w
    return bank_base[cb + (row - q * w)] + regs[r, R_ADDR] + q * rv + j


@njit(cache=True, inline="always")
def src_index(off, mode, m, i):
    if mode == MODE_REP:
        return off + i % m
    if mode == MODE_GRP:
        return off + i // m
    return off + i


@njit(cache=True, inline="always")
def load_vec(mem, mem16, st, g, out, base):
    """out[base:base+LANES] = memory row g as float32 (st: the region's store). (Loops index views by the
    loop variable alone: Numba's negative-index handling of `base + l` would keep LLVM from vectorising.)"""
    o = out[base:base + LANES]
    if st == ST_F16:
        r16 = mem16[g]
        for l in range(LANES):
            o[l] = h2f_exact(r16[l])
    else:
        r = mem[g]
        for l in range(LANES):
            o[l] = r[l]


@njit(cache=True, inline="always")
def load_elem(mem, mem16, st, g, l):
    if st == ST_F16:
        return h2f_exact(mem16[g, l])
    return mem[g, l]


@njit(cache=True, inline="always")
def round_i8(x):
    """float32 -> the nearest integer (ties to even), saturated to -127..127; NaN gives 0 (isa.numerics)."""
    if x != x:
        return np.float32(0.0)
    return np.float32(min(max(np.rint(np.float64(x)), -127.0), 127.0))


@njit(cache=True, inline="always")
def round_fp8(x):
    """float32 -> the nearest e4m3fn value (ties to even), saturated to +-448; NaN stays (isa.numerics)."""
    if x != x:
        return x
    a = abs(np.float64(x))
    e = math.frexp(a)[1]  # a = m * 2**e, 0.5 <= m < 1
    q = math.ldexp(1.0, max(e - 1, -6) - 3)  # the spacing of e4m3 values in a's binade
    r = min(np.rint(a / q) * q, 448.0)
    return np.float32(r if x >= 0 else -r)


@njit(cache=True)
def round_8bit_array(x, out, fp8):
    """out[k] = x[k] stored into an i8 (fp8: an fp8) region (host side and tests)."""
    for k in range(x.size):
        out[k] = round_fp8(x[k]) if fp8 else round_i8(x[k])


@njit(cache=True, inline="always")
def store_lanes(mem, mem16, st, dtype, g, lane0, nl, src, base):
    """memory row g, lanes lane0..lane0+nl-1 = src[base:base+nl] rounded to dtype."""
    s = src[base:base + nl]
    if st == ST_F16:
        d16 = mem16[g, lane0:lane0 + nl]
        for l in range(nl):
            d16[l] = f2h_exact(s[l])
        return
    d = mem[g, lane0:lane0 + nl]
    if dtype == DT_FP16:
        for l in range(nl):
            d[l] = h2f_exact(f2h_exact(s[l]))
    elif dtype == DT_I32:
        for l in range(nl):
            d[l] = np.trunc(s[l])
    elif dtype == DT_I8:
        for l in range(nl):
            d[l] = round_i8(s[l])
    elif dtype == DT_FP8:
        for l in range(nl):
            d[l] = round_fp8(s[l])
    else:
        for l in range(nl):
            d[l] = s[l]


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


@njit(cache=True)
def tile_rows(ins, regs, bank_base, nbanks, start, out):
    """Memory rows of every LW's tile: rows of instruction i at out[start[i]:start[i] + rows] (LW only)."""
    for i in range(ins.shape[0]):
        if ins[i, C_OPCODE] != OP_LW:
            continue
        sreg = ins[i, C_SRC_REG]
        rv = np.int64(regs[sreg, R_RV])
        row0 = np.int64(ins[i, C_ROW0])
        col = np.int64(ins[i, C_COL])
        s = start[i]
        for r in range(np.int64(ins[i, C_ROWS])):
            out[s + r] = vec_row(regs, bank_base, nbanks, sreg, (row0 + r) * rv + col)


# ----------------------------------------------------------------------------- units
@njit(cache=True, error_model="numpy")
def _vxm(ins, i, imm, mem, mem16, regs, bank_base, nbanks, scratch, avec, bvec):
    fn = ins[i, C_FN]
    n = np.int64(ins[i, C_N])
    a_reg, a_off, a_mode, a_m = ins[i, C_A_REG], np.int64(ins[i, C_A_OFF]), ins[i, C_A_MODE], np.int64(ins[i, C_A_M])
    b_reg, b_off, b_mode, b_m = ins[i, C_B_REG], np.int64(ins[i, C_B_OFF]), ins[i, C_B_MODE], np.int64(ins[i, C_B_M])
    a_st = regs[a_reg, R_STORE]
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if fn == FN_RSUM or fn == FN_RMAX:
        group = max(np.int64(1), np.int64(ins[i, C_GROUP]))
        for d in range(n):
            base = d * LANES
            sc = scratch[base:base + LANES]
            ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d * group))
            load_vec(mem, mem16, a_st, ga, scratch, base)
            for g in range(1, group):
                ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d * group + g))
                load_vec(mem, mem16, a_st, ga, avec, 0)
                if fn == FN_RSUM:
                    for l in range(LANES):
                        sc[l] = sc[l] + avec[l]
                else:
                    for l in range(LANES):
                        sc[l] = _fmax(sc[l], avec[l])
        return
    binary = fn >= FN_ADD
    fill = imm[i]
    b_st = regs[b_reg, R_STORE] if binary and b_mode != MODE_IMM else ST_F32
    if binary and b_mode == MODE_IMM:
        for l in range(LANES):
            bvec[l] = fill
    for d in range(n):
        sc = scratch[d * LANES:(d + 1) * LANES]
        ga = vec_row(regs, bank_base, nbanks, a_reg, src_index(a_off, a_mode, a_m, d))
        load_vec(mem, mem16, a_st, ga, avec, 0)
        if binary and b_mode != MODE_IMM:
            gb = vec_row(regs, bank_base, nbanks, b_reg, src_index(b_off, b_mode, b_m, d))
            load_vec(mem, mem16, b_st, gb, bvec, 0)
        if fn == FN_COPY:
            for l in range(LANES):
                sc[l] = avec[l]
        elif fn == FN_NEG:
            for l in range(LANES):
                sc[l] = -avec[l]
        elif fn == FN_ABS:
            for l in range(LANES):
                sc[l] = abs(avec[l])
        elif fn == FN_RELU:
            for l in range(LANES):
                sc[l] = _fmax(avec[l], zero)
        elif fn == FN_EXP:
            for l in range(LANES):
                sc[l] = np.float32(np.exp(np.float64(avec[l])))
        elif fn == FN_TANH:
            for l in range(LANES):
                sc[l] = np.float32(np.tanh(np.float64(avec[l])))
        elif fn == FN_RSQRT:
            for l in range(LANES):
                sc[l] = np.float32(1.0 / np.sqrt(np.float64(avec[l])))
        elif fn == FN_RECIP:
            for l in range(LANES):
                sc[l] = one / avec[l]
        elif fn == FN_ISNAN:
            for l in range(LANES):
                x = avec[l]
                sc[l] = one if x != x else zero
        elif fn == FN_ADD:
            for l in range(LANES):
                sc[l] = avec[l] + bvec[l]
        elif fn == FN_SUB:
            for l in range(LANES):
                sc[l] = avec[l] - bvec[l]
        elif fn == FN_MUL:
            for l in range(LANES):
                sc[l] = avec[l] * bvec[l]
        elif fn == FN_MAX:
            for l in range(LANES):
                sc[l] = _fmax(avec[l], bvec[l])
        elif fn == FN_MIN:
            for l in range(LANES):
                sc[l] = _fmin(avec[l], bvec[l])
        elif fn == FN_CMPGT:
            for l in range(LANES):
                sc[l] = one if avec[l] > bvec[l] else zero
        elif fn == FN_CMPGE:
            for l in range(LANES):
                sc[l] = one if avec[l] >= bvec[l] else zero
        elif fn == FN_CMPEQ:
            for l in range(LANES):
                sc[l] = one if avec[l] == bvec[l] else zero
        elif fn == FN_SELECT:
            for l in range(LANES):
                sc[l] = bvec[l] if avec[l] != zero else fill


@njit(cache=True, error_model="numpy")
def _acc(mem, mem16, st, tiles, start, rows, xv, x_lane, acc, cu, slot, accumulate, tmp, exact):
    """acc[cu, slot] = (accumulate ? acc : 0) + sum_r xv[x_lane + r] * tile row r, summed in row order.
    Tile row r is memory row tiles[start + r]; the multiply and the add are rounded separately, to fp32.
    `exact` (an i8 tile): the int8 path, int32 accumulation. The tile's sum is exact in fp32 (at most
    320 products of magnitude <= 127 * 127: 5.2e6 < 2**24) and the accumulator (float64, holding
    integers) adds it without rounding, as an int32 accumulator does."""
    for l in range(LANES):
        tmp[l] = 0.0
    if st == ST_F16:
        for r in range(rows):
            xr = xv[x_lane + r]
            g = tiles[start + r]
            for l in range(LANES):
                tmp[l] += xr * h2f_fast(mem16[g, l])
    else:
        for r in range(rows):
            xr = xv[x_lane + r]
            g = tiles[start + r]
            for l in range(LANES):
                tmp[l] += xr * mem[g, l]
    if accumulate and exact:
        for l in range(LANES):
            acc[cu, slot, l] = acc[cu, slot, l] + tmp[l]
    elif accumulate:
        for l in range(LANES):
            acc[cu, slot, l] = np.float32(np.float32(acc[cu, slot, l]) + tmp[l])
    else:
        for l in range(LANES):
            acc[cu, slot, l] = tmp[l]


@njit(cache=True, error_model="numpy")
def exec_range(ins, aux, imm, lo, hi, mem, mem16, regs, bank_base, nbanks, units, tiles,
               acc, tile,
               linkbuf, link_base, link_cap, link_head, link_tail, scratch, err, errval,
               me, wait_grp, wait_row, progress, flag):
    """Execute instruction rows lo..hi-1 in order. Returns -1, the row that failed (err/errval say why), or
    -2 if another group failed while this one waited. An LW's aux[i] is its first entry in `tiles` (its
    tile's memory rows, see tile_rows). `tile` [TILE_STATE, units of all chips]: the shadow and active
    tile of each MXM unit (T_*). Parallel runs (me >= 0): a RECV row i with wait_grp[i] >= 0 first
    waits for progress[wait_grp[i]] >= wait_row[i]; each SEND publishes progress[me] = its row + 1."""
    avec = np.empty(LANES, dtype=np.float32)
    bvec = np.empty(LANES, dtype=np.float32)
    tmp = np.empty(LANES, dtype=np.float32)
    for i in range(lo, hi):
        op = ins[i, C_OPCODE]
        chip = np.int64(ins[i, C_CHIP])
        if op == OP_ACC:
            cu = chip * units + ins[i, C_UNIT]
            rows = tile[T_AC_ROWS, cu]
            if rows < 0:
                err[0] = E_NO_TILE
                return i
            xreg = ins[i, C_X_REG]
            xg = vec_row(regs, bank_base, nbanks, xreg, np.int64(ins[i, C_X_OFF]))
            load_vec(mem, mem16, regs[xreg, R_STORE], xg, avec, 0)
            _acc(mem, mem16, tile[T_AC_ST, cu], tiles, tile[T_AC_START, cu], rows, avec, np.int64(ins[i, C_X_LANE]),
                 acc, cu, np.int64(ins[i, C_SLOT]), ins[i, C_ACCUMULATE] != 0, tmp, tile[T_AC_DT, cu] == DT_I8)
        elif op == OP_VXM:
            _vxm(ins, i, imm, mem, mem16, regs, bank_base, nbanks, scratch, avec, bvec)
            n = np.int64(ins[i, C_N])
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            period = np.int64(ins[i, C_PERIOD])
            valid = np.int64(ins[i, C_VALID])
            dt = regs[dreg, R_DTYPE]
            dst = regs[dreg, R_STORE]
            for d in range(n):
                if period > 0 and d % period == period - 1:
                    scratch[d * LANES + valid:(d + 1) * LANES] = 0.0
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, d * LANES)
        elif op == OP_LW:
            cu = chip * units + ins[i, C_UNIT]
            tile[T_SH_START, cu] = aux[i]
            tile[T_SH_ROWS, cu] = np.int64(ins[i, C_ROWS])
            tile[T_SH_ST, cu] = regs[ins[i, C_SRC_REG], R_STORE]
            tile[T_SH_DT, cu] = regs[ins[i, C_SRC_REG], R_DTYPE]
        elif op == OP_IW:
            cu = chip * units + ins[i, C_UNIT]
            if tile[T_SH_ROWS, cu] < 0:
                err[0] = E_NO_TILE
                return i
            for k in range(TILE_STATE // 2):
                tile[TILE_STATE // 2 + k, cu] = tile[k, cu]
        elif op == OP_EMIT:
            cu = chip * units + ins[i, C_UNIT]
            slot = np.int64(ins[i, C_SLOT])
            lanes = np.int64(ins[i, C_LANES])
            sl = np.int64(ins[i, C_SRC_LANE])
            for l in range(lanes):
                scratch[l] = acc[cu, slot, sl + l]
            dreg = ins[i, C_DST_REG]
            g = vec_row(regs, bank_base, nbanks, dreg, np.int64(ins[i, C_DST_OFF]))
            store_lanes(mem, mem16, regs[dreg, R_STORE], regs[dreg, R_DTYPE], g, np.int64(ins[i, C_DST_LANE]), lanes,
                        scratch, 0)
        elif op == OP_SXM:
            n = np.int64(ins[i, C_N])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            sst = regs[sreg, R_STORE]
            if ins[i, C_FN] == SXM_ROT:
                shift = np.int64(ins[i, C_SHIFT]) % LANES
                for d in range(n):
                    gs = vec_row(regs, bank_base, nbanks, sreg, soff + d)
                    load_vec(mem, mem16, sst, gs, avec, 0)
                    sc = scratch[d * LANES:(d + 1) * LANES]
                    for l in range(LANES - shift):
                        sc[l] = avec[l + shift]
                    for l in range(LANES - shift, LANES):
                        sc[l] = avec[l + shift - LANES]
            else:
                w = np.int64(ins[i, C_WINDOW])
                win = np.empty(w * LANES, dtype=np.float32)
                for k in range(w):
                    load_vec(mem, mem16, sst, vec_row(regs, bank_base, nbanks, sreg, soff + k), win, k * LANES)
                mreg = ins[i, C_MAP_REG]
                moff = np.int64(ins[i, C_MAP_OFF])
                mst = regs[mreg, R_STORE]
                limit = w * LANES
                for d in range(n):
                    gm = vec_row(regs, bank_base, nbanks, mreg, moff + d)
                    load_vec(mem, mem16, mst, gm, avec, 0)
                    for l in range(LANES):
                        e = np.int64(avec[l])
                        if e < 0:
                            scratch[d * LANES + l] = 0.0
                        elif e >= limit:
                            err[0] = E_SHUF_MAP
                            errval[0] = avec[l]
                            return i
                        else:
                            scratch[d * LANES + l] = win[e]
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            dst = regs[dreg, R_STORE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, d * LANES)
        elif op == OP_COPY:
            n = np.int64(ins[i, C_N])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            sst = regs[sreg, R_STORE]
            for d in range(n):
                load_vec(mem, mem16, sst, vec_row(regs, bank_base, nbanks, sreg, soff + d), scratch, d * LANES)
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            dst = regs[dreg, R_STORE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, d * LANES)
        elif op == OP_GATHER:
            treg = ins[i, C_TABLE_REG]
            tst = regs[treg, R_STORE]
            ireg = ins[i, C_IDX_REG]
            gi = vec_row(regs, bank_base, nbanks, ireg, np.int64(ins[i, C_IDX_OFF]))
            v = load_elem(mem, mem16, regs[ireg, R_STORE], gi, ins[i, C_IDX_LANE])
            if not _is_index(v):
                err[0] = E_GATHER_INDEX
                errval[0] = v
                return i
            row = np.int64(v) - np.int64(ins[i, C_BASE])
            rv = np.int64(regs[treg, R_RV])
            k = np.int64(ins[i, C_ELEMS])
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            dst = regs[dreg, R_STORE]
            if k > 0:  # packed rows: flat elements row*k .. row*k+k-1, then zeros
                nv = (k + LANES - 1) // LANES
                for e in range(nv * LANES):
                    scratch[e] = 0.0
                if 0 <= row < ins[i, C_ROWS]:
                    for e in range(k):
                        f = row * k + e
                        gs = vec_row(regs, bank_base, nbanks, treg, f // LANES)
                        scratch[e] = load_elem(mem, mem16, tst, gs, f % LANES)
                for j in range(nv):
                    g = vec_row(regs, bank_base, nbanks, dreg, doff + j)
                    store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, j * LANES)
                continue
            if 0 <= row < ins[i, C_ROWS]:
                for j in range(rv):
                    load_vec(mem, mem16, tst, vec_row(regs, bank_base, nbanks, treg, row * rv + j), scratch, j * LANES)
            else:
                for e in range(rv * LANES):
                    scratch[e] = 0.0
            for j in range(rv):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + j)
                store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, j * LANES)
        elif op == OP_SCATTER:
            treg = ins[i, C_TABLE_REG]
            ireg = ins[i, C_IDX_REG]
            gi = vec_row(regs, bank_base, nbanks, ireg, np.int64(ins[i, C_IDX_OFF]))
            v = load_elem(mem, mem16, regs[ireg, R_STORE], gi, ins[i, C_IDX_LANE])
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
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            sst = regs[sreg, R_STORE]
            dt = regs[treg, R_DTYPE]
            tst = regs[treg, R_STORE]
            if k > 0:  # packed rows: write k elements at flat row*k
                for e in range(k):
                    gs = vec_row(regs, bank_base, nbanks, sreg, soff + e // LANES)
                    scratch[e] = load_elem(mem, mem16, sst, gs, e % LANES)
                for e in range(k):
                    f = row * k + e
                    g = vec_row(regs, bank_base, nbanks, treg, f // LANES)
                    store_lanes(mem, mem16, tst, dt, g, f % LANES, 1, scratch, e)
                continue
            for j in range(rv):
                load_vec(mem, mem16, sst, vec_row(regs, bank_base, nbanks, sreg, soff + j), scratch, j * LANES)
            for j in range(rv):
                g = vec_row(regs, bank_base, nbanks, treg, row * rv + j)
                store_lanes(mem, mem16, tst, dt, g, 0, LANES, scratch, j * LANES)
        elif op == OP_SCATCOL:
            treg = ins[i, C_TABLE_REG]
            ireg = ins[i, C_IDX_REG]
            gi = vec_row(regs, bank_base, nbanks, ireg, np.int64(ins[i, C_IDX_OFF]))
            v = load_elem(mem, mem16, regs[ireg, R_STORE], gi, ins[i, C_IDX_LANE])
            if not _is_index(v):
                err[0] = E_SCATCOL_INDEX
                errval[0] = v
                return i
            c = np.int64(v) - np.int64(ins[i, C_COL0])
            rv = np.int64(regs[treg, R_RV])
            if not 0 <= c < rv * LANES:
                err[0] = E_SCATCOL_COL
                errval[0] = v
                return i
            rows = np.int64(ins[i, C_ROWS])
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            sst = regs[sreg, R_STORE]
            for r in range(rows):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + r // LANES)
                scratch[r] = load_elem(mem, mem16, sst, gs, r % LANES)
            dt = regs[treg, R_DTYPE]
            tst = regs[treg, R_STORE]
            vc = c // LANES
            lane = c % LANES
            for r in range(rows):
                g = vec_row(regs, bank_base, nbanks, treg, r * rv + vc)
                store_lanes(mem, mem16, tst, dt, g, lane, 1, scratch, r)
        elif op == OP_SEND:
            dl = ins[i, C_DLINK]
            n = np.int64(ins[i, C_N])
            if link_tail[dl] + n > link_cap[dl]:
                err[0] = E_LINK_FULL
                return i
            sreg = ins[i, C_SRC_REG]
            soff = np.int64(ins[i, C_SRC_OFF])
            sst = regs[sreg, R_STORE]
            for d in range(n):
                gs = vec_row(regs, bank_base, nbanks, sreg, soff + d)
                load_vec(mem, mem16, sst, gs, linkbuf, (link_base[dl] + link_tail[dl] + d) * LANES)
            link_tail[dl] += n
            if me >= 0:
                _store_release(progress, me, i + 1)
        elif op == OP_RECV:
            if me >= 0 and wait_grp[i] >= 0:
                if not _wait_for(progress, wait_grp[i], wait_row[i], flag):
                    return -2
            dl = ins[i, C_DLINK]
            n = np.int64(ins[i, C_N])
            if link_tail[dl] - link_head[dl] < n:
                err[0] = E_RECV_EMPTY
                errval[0] = link_tail[dl] - link_head[dl]
                return i
            s0 = (link_base[dl] + link_head[dl]) * LANES
            scratch[:n * LANES] = linkbuf[s0:s0 + n * LANES]
            link_head[dl] += n
            dreg = ins[i, C_DST_REG]
            doff = np.int64(ins[i, C_DST_OFF])
            dt = regs[dreg, R_DTYPE]
            dst = regs[dreg, R_STORE]
            for d in range(n):
                g = vec_row(regs, bank_base, nbanks, dreg, doff + d)
                store_lanes(mem, mem16, dst, dt, g, 0, LANES, scratch, d * LANES)
        elif op == OP_NOP or op == OP_SYNC or op == OP_DESKEW:
            pass
        else:
            err[0] = E_UNKNOWN_OP
            return i
    return -1


@njit(cache=True, error_model="numpy", nogil=True)
def run_bucket(ins, aux, imm, mem, mem16, regs, bank_base, nbanks, units, tiles,
               acc, tile,
               linkbuf, link_base, link_cap, link_head, link_tail, scratch, err, errval):
    """One token, serially: every instruction row in order. Returns -1 or the failing row."""
    link_head[:] = 0
    link_tail[:] = 0
    tile[T_SH_ROWS, :] = -1
    tile[T_AC_ROWS, :] = -1
    none = np.zeros(1, dtype=np.int64)
    return exec_range(ins, aux, imm, 0, ins.shape[0], mem, mem16, regs, bank_base, nbanks, units, tiles,
                      acc, tile,
                      linkbuf, link_base, link_cap, link_head, link_tail, scratch, err, errval,
                      -1, none, none, none, none)


@njit(cache=True, error_model="numpy", nogil=True)
def run_group(ins, aux, imm, lo, hi, mem, mem16, regs, bank_base, nbanks, units, tiles,
              acc, tile,
              linkbuf, link_base, link_cap, link_head, link_tail, scratch, err, errval,
              me, wait_grp, wait_row, progress, flag):
    """Group `me`'s share of a token (rows lo..hi-1), on its own thread (the GIL is released). The caller
    resets the link and tile state and sets progress[g] to each group's first row and flag[0] to 0.
    Returns as exec_range; on failure, raises flag[0] so that the other groups stop waiting."""
    bad = exec_range(ins, aux, imm, lo, hi, mem, mem16, regs, bank_base, nbanks, units, tiles,
                     acc, tile,
                     linkbuf, link_base, link_cap, link_head, link_tail, scratch, err, errval,
                     me, wait_grp, wait_row, progress, flag)
    if bad == -1:
        _store_release(progress, me, hi)
    else:
        _store_release(flag, 0, 1)
    return bad
