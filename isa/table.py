"""The instruction table: the one place that defines every instruction.

For each instruction: mnemonic, opcode, the queue family that issues it, its bit format, the
hardware parameter that gives its latency, and its meaning. The encoder, decoder, assembler,
disassembler and the timing model (isa/timing.py) are all derived from this table.

Machine model (one chip). SRAM is a set of banks; an address names one vector of VECTOR_LANES
lanes of one element type. Tensors live in *regions* (see isa/program.py): a region is a table of
rows, `row_vectors` vectors each, striped over `width` consecutive banks. Instructions name an SRAM
operand as (region, vector offset). Functional units: MEM (copies, gathers, scatters), VXM
(lane-wise vector ALUs), SXM (lane rotation and permutation), MXM (matrix units: load weights into a
shadow buffer, install them, stream activation vectors through and accumulate in fp32), C2C (chip
links: send and receive vectors) and ICU (issue: NOP, SYNC). Each unit instance has an in-order issue
queue; a queue's stream of instructions plus its NOPs fixes every issue cycle at compile time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import IsaError
from .fields import Field, Format, OPCODE_BITS, region_field, vref

VECTOR_LANES = 320

# Element types of SRAM regions: code -> (name, bytes per element). A value stored into a region is
# converted to its type: fp16 rounds to nearest even; i32 truncates; i8 (the MXM's int8 operands)
# rounds to nearest even and saturates to -127..127; fp8 (OCP e4m3fn: 4 exponent bits, bias 7, 3
# mantissa bits, no infinities) rounds to nearest even and saturates to +-448.
DTYPES = {0: ("fp32", 4), 1: ("fp16", 2), 2: ("i32", 4), 3: ("i8", 1), 4: ("fp8", 1)}
EIGHT_BIT = ("i8", "fp8")  # the MXM's 8-bit weight/activation types (tile rows: Hardware.tile_rows)
DTYPE_CODE = {name: code for code, (name, _) in DTYPES.items()}

# Operand index modes (VXM sources): the vector read at step i of an n-step instruction.
MODE_SEQ, MODE_REP, MODE_GRP, MODE_IMM = 0, 1, 2, 3
MODE_NAMES = {MODE_SEQ: "seq", MODE_REP: "rep", MODE_GRP: "grp", MODE_IMM: "imm"}
# seq: off + i      rep: off + i % m      grp: off + i // m      imm: the instruction's float immediate


@dataclass(frozen=True, slots=True)
class AluFn:
    """A VXM (or SXM) function: its code, arity and the hardware parameter holding its latency."""

    name: str
    code: int
    arity: int  # 1 unary (a), 2 binary (a, b), 3 select (a, b, imm), "reduce" functions use group
    latency: str  # key under chip.<unit>.latency_cycles
    reduce: bool = False
    doc: str = ""


VXM_FNS = (
    AluFn("copy", 0, 1, "copy", doc="a (converted to the destination's element type)"),
    AluFn("neg", 1, 1, "add", doc="-a"),
    AluFn("abs", 2, 1, "add", doc="|a|"),
    AluFn("relu", 3, 1, "add", doc="max(a, 0)"),
    AluFn("exp", 4, 1, "exp", doc="e**a"),
    AluFn("tanh", 5, 1, "tanh", doc="tanh(a)"),
    AluFn("rsqrt", 6, 1, "rsqrt", doc="1/sqrt(a)"),
    AluFn("recip", 7, 1, "recip", doc="1/a"),
    AluFn("isnan", 8, 1, "add", doc="1.0 where a is NaN, else 0.0"),
    AluFn("add", 16, 2, "add", doc="a + b"),
    AluFn("sub", 17, 2, "add", doc="a - b"),
    AluFn("mul", 18, 2, "mul", doc="a * b"),
    AluFn("max", 19, 2, "add", doc="max(a, b)"),
    AluFn("min", 20, 2, "add", doc="min(a, b)"),
    AluFn("cmpgt", 21, 2, "add", doc="1.0 where a > b, else 0.0"),
    AluFn("cmpge", 22, 2, "add", doc="1.0 where a >= b, else 0.0"),
    AluFn("cmpeq", 23, 2, "add", doc="1.0 where a == b, else 0.0"),
    AluFn("select", 24, 3, "add", doc="b where a != 0, else the immediate"),
    AluFn("rsum", 32, 1, "add", reduce=True, doc="lane-wise sum of `group` consecutive source vectors"),
    AluFn("rmax", 33, 1, "add", reduce=True, doc="lane-wise max of `group` consecutive source vectors"),
)
SXM_FNS = (
    AluFn("rot", 0, 1, "rotate", doc="dst lane l = src lane (l + shift) mod VECTOR_LANES"),
    AluFn("shuf", 1, 1, "permute", doc="dst element e = src element map[e] (map < 0 gives 0)"),
)


def _fns_by(fns):
    return {f.name: f for f in fns}, {f.code: f for f in fns}


VXM_BY_NAME, VXM_BY_CODE = _fns_by(VXM_FNS)
SXM_BY_NAME, SXM_BY_CODE = _fns_by(SXM_FNS)
_VXM_READS_B = np.array(sorted(f.code for f in VXM_FNS if f.arity >= 2), dtype=np.int64)


def region_used(op: str, field: str, args):
    """Whether a region field of an instruction names a region it reads or writes (the others are
    unused, and keep their raw value through a chip-local numbering): VXM's b only for a function of two
    or more operands and a b that is not the immediate, SXM's map only for shuf. `args` maps field names
    to values, scalars (an Instr's) or arrays (a decoded stream's); the answer has their shape."""
    if op == "VXM" and field == "b_reg":
        return np.isin(args["fn"], _VXM_READS_B) & (np.asarray(args["b_mode"]) != MODE_IMM)
    if op == "SXM" and field == "map_reg":
        return np.asarray(args["fn"]) == SXM_BY_NAME["shuf"].code
    return True

# ---------------------------------------------------------------------------------------------
# Formats
F_NOP = Format("nop", (Field("count", 16, doc="cycles this queue waits (the NOP itself is one)"),))
F_SYNC = Format("sync", ())
F_VXM = Format(
    "vxm",
    (
        Field("fn", 6, doc="ALU function code (VXM_FNS)"),
        Field("queue", 5, doc="VXM ALU queue"),
        *vref("dst", "destination"),
        *vref("a", "first source", mode=True),
        *vref("b", "second source", mode=True),
        Field("n", 16, doc="destination vectors"),
        Field("group", 12, doc="source vectors per destination vector (reductions; 1 otherwise)"),
        Field("period", 16, doc="mask period in destination vectors (0: no mask)"),
        Field("valid", 9, doc="lanes kept in the last vector of each period; the rest are written 0"),
        Field("imm", 32, kind="f", doc="float immediate (mode imm, select's fill)"),
    ),
)
F_SXM = Format(
    "sxm",
    (
        Field("fn", 2, doc="SXM function code (SXM_FNS)"),
        Field("queue", 2, doc="SXM queue"),
        *vref("dst", "destination"),
        *vref("src", "source window start"),
        *vref("map", "index map (shuf)"),
        Field("n", 16, doc="destination vectors"),
        Field("window", 16, doc="source vectors the map may name (shuf)"),
        Field("shift", 9, doc="lane rotation (rot)"),
    ),
)
F_LW = Format(
    "lw",
    (
        Field("unit", 3, doc="MXM unit"),
        region_field("src_reg", "weight region"),
        Field("row0", 20, doc="first row of the tile"),
        Field("col", 12, doc="vector column within each row"),
        Field("rows", 9, doc="tile rows (<= the unit's tile rows)"),
    ),
)
F_IW = Format("iw", (Field("unit", 3, doc="MXM unit"),))
F_ACC = Format(
    "acc",
    (
        Field("unit", 3, doc="MXM unit"),
        *vref("x", "activation vector"),
        Field("x_lane", 9, doc="lane of the activation vector that meets tile row 0"),
        Field("slot", 10, doc="accumulator slot"),
        Field("accumulate", 1, doc="0: overwrite the slot, 1: add to it"),
    ),
)
F_EMIT = Format(
    "emit",
    (
        Field("unit", 3, doc="MXM unit"),
        Field("slot", 10, doc="accumulator slot"),
        *vref("dst", "destination vector"),
        Field("dst_lane", 9, doc="first destination lane"),
        Field("src_lane", 9, doc="first accumulator lane"),
        Field("lanes", 9, doc="lanes written (1..320); other destination lanes are kept"),
    ),
)
F_COPY = Format("copy", (Field("queue", 4, doc="MEM queue"), *vref("dst", "destination"), *vref("src", "source"), Field("n", 16, doc="vectors")))
F_GATHER = Format(
    "gather",
    (
        Field("queue", 4, doc="MEM queue"),
        *vref("dst", "destination"),
        region_field("table_reg", "table region (one row is gathered)"),
        *vref("idx", "index vector"),
        Field("idx_lane", 9, doc="lane holding the index"),
        Field("base", 32, kind="s", doc="row = index - base"),
        Field("rows", 24, doc="rows of this table; a row outside 0..rows-1 gives zeros"),
        Field("elems", 16, doc="0: rows are the region's rows; k > 0: rows of k elements packed densely"),
    ),
)
F_SCATTER = Format(
    "scatter",
    (
        Field("queue", 4, doc="MEM queue"),
        region_field("table_reg", "table region (one row is written)"),
        *vref("src", "source vectors (one row)"),
        *vref("idx", "index vector"),
        Field("idx_lane", 9, doc="lane holding the row index"),
        Field("elems", 16, doc="0: rows are the region's rows; k > 0: rows of k elements packed densely"),
    ),
)
F_SCATCOL = Format(
    "scatcol",
    (
        Field("queue", 4, doc="MEM queue"),
        region_field("table_reg", "table region; each row is a run of vectors over columns"),
        *vref("src", "source elements, one per row"),
        *vref("idx", "index vector"),
        Field("idx_lane", 9, doc="lane holding the column index"),
        Field("rows", 16, doc="rows written"),
        Field("col0", 24, doc="the index of the table's first column (the table is a window of a wider one)"),
    ),
)
F_SEND = Format("send", (Field("link", 7, doc="C2C link"), *vref("src", "source"), Field("n", 16, doc="vectors")))
F_RECV = Format("recv", (Field("link", 7, doc="C2C link"), *vref("dst", "destination"), Field("n", 16, doc="vectors")))
F_DESKEW = Format("deskew", (Field("link", 7, doc="C2C link"),))


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One instruction: the single source of its encoding, queue family, latency parameter and meaning."""

    mnemonic: str
    opcode: int
    family: str  # queue family that issues it (FAMILIES); "any" for NOP
    fmt: Format
    latency: str  # hardware parameter path giving the latency (see isa/timing.py)
    doc: str


OPS = (
    OpSpec("NOP", 0x01, "any", F_NOP, "", "Delay this queue: the next instruction issues `count` cycles later."),
    OpSpec("SYNC", 0x02, "icu", F_SYNC, "chip.icu.sync_cycles",
           "Chip-wide Sync/Notify barrier; holds the ICU queue for sync_cycles."),
    OpSpec("VXM", 0x10, "vxm", F_VXM, "chip.vxm.latency_cycles.<fn>",
           "dst[i] = fn(a[i], b[i]) for n vectors, lane-wise; reductions combine `group` source vectors; "
           "results are rounded to dst's element type; masking zeroes lanes past `valid` in the last "
           "vector of each period."),
    OpSpec("SXM", 0x20, "sxm", F_SXM, "chip.sxm.latency_cycles.<fn>",
           "rot: rotate lanes of n vectors; shuf: each destination element takes the source-window element "
           "named by the index map (negative gives 0)."),
    OpSpec("LW", 0x30, "mxmw", F_LW, "chip.mxm.lw",
           "Load a weight tile into the unit's shadow buffer: `rows` rows from row0, vector column `col`."),
    OpSpec("IW", 0x31, "mxma", F_IW, "chip.mxm.iw_cycles",
           "Install the shadow tile as the active tile (issued with the activations that use it, so the "
           "weight queue can stream the next tile meanwhile)."),
    OpSpec("ACC", 0x32, "mxma", F_ACC, "chip.mxm.latency_cycles",
           "acc[slot] (+)= sum_r x[x_lane + r] * tile[r, :] over the active tile's rows, in fp32; with an i8 "
           "tile (and i8 activations) the products and their sum are exact integers (int32 accumulation)."),
    OpSpec("EMIT", 0x33, "mxma", F_EMIT, "chip.mxm.emit_cycles",
           "Write lanes src_lane..src_lane+lanes of acc[slot] to dst lanes dst_lane.., rounded to dst's type."),
    OpSpec("COPY", 0x40, "mem", F_COPY, "chip.sram", "dst[i] = src[i] for n vectors."),
    OpSpec("GATHER", 0x41, "mem", F_GATHER, "chip.sram",
           "dst = table row (index - base), or zeros when that row is outside 0..rows-1; index = "
           "int(idx[idx_lane]). With elems = k > 0 the table is a dense run of k-element rows (row i = "
           "flat elements i*k..i*k+k-1) and dst gets ceil(k/320) vectors: the row, then zeros."),
    OpSpec("SCATTER", 0x42, "mem", F_SCATTER, "chip.sram",
           "table row int(idx[idx_lane]) = src. With elems = k > 0: flat table elements row*k..row*k+k-1 = "
           "the first k source elements; the other elements are kept."),
    OpSpec("SCATCOL", 0x43, "mem", F_SCATCOL, "chip.sram",
           "For r < rows: table[r, column c] = src element r, c = int(idx[idx_lane]) - col0 (a transposed write; "
           "c outside the table is an error)."),
    OpSpec("SEND", 0x50, "c2ct", F_SEND, "chip.c2c", "Transmit n vectors from src on the link."),
    OpSpec("RECV", 0x51, "c2cr", F_RECV, "chip.c2c", "Store the next n vectors that arrived on the link at dst."),
    OpSpec("DESKEW", 0x52, "c2ct", F_DESKEW, "chip.c2c.deskew_cycles", "Realign the link's clocks; holds the link."),
)

BY_MNEMONIC = {op.mnemonic: op for op in OPS}
BY_OPCODE = {op.opcode: op for op in OPS}
FAMILIES = ("icu", "mem", "vxm", "sxm", "mxmw", "mxma", "c2ct", "c2cr")


def _check_table() -> None:
    """Load-time checks in the spirit of riscv-opcodes: unique opcodes and names, fields that fit."""
    if len(BY_MNEMONIC) != len(OPS) or len(BY_OPCODE) != len(OPS):
        raise IsaError("instruction table: duplicate mnemonic or opcode")
    for op in OPS:
        if not 0 < op.opcode < (1 << OPCODE_BITS):
            raise IsaError(f"{op.mnemonic}: opcode {op.opcode:#x} does not fit {OPCODE_BITS} bits")
        if op.family not in FAMILIES + ("any",):
            raise IsaError(f"{op.mnemonic}: unknown queue family {op.family!r}")
        op.fmt.layout()  # format construction already checked the width
    for fns in (VXM_FNS, SXM_FNS):
        if len({f.code for f in fns}) != len(fns) or len({f.name for f in fns}) != len(fns):
            raise IsaError("ALU function table: duplicate name or code")
    fn_bits = {"VXM": 6, "SXM": 2}
    for mnem, fns in (("VXM", VXM_FNS), ("SXM", SXM_FNS)):
        for f in fns:
            if f.code >= 1 << fn_bits[mnem]:
                raise IsaError(f"{mnem} fn {f.name}: code {f.code} does not fit {fn_bits[mnem]} bits")


_check_table()


_QUEUE_RE = re.compile(r"^(icu|mem|vxm|sxm|mxm|c2c)(\d+)([wtar]?)$")
_SUFFIXED = {"mxm": "wa", "c2c": "tr"}


def parse_queue(queue: str) -> tuple[str, int]:
    """'vxm3' -> ('vxm', 3); 'mxm1w' -> ('mxmw', 1); 'c2c5r' -> ('c2cr', 5)."""
    m = _QUEUE_RE.match(queue)
    if m is None or (m.group(1) in _SUFFIXED) != bool(m.group(3)) or (m.group(3) and m.group(3) not in _SUFFIXED[m.group(1)]):
        raise IsaError(f"queue {queue!r}: not a queue name (icuN, memN, vxmN, sxmN, mxmNw, mxmNa, c2cNt, c2cNr)")
    return m.group(1) + m.group(3), int(m.group(2))


def queue_name(family: str, index: int) -> str:
    if family in ("mxmw", "mxma", "c2ct", "c2cr"):
        return f"{family[:3]}{index}{family[3]}"
    return f"{family}{index}"
