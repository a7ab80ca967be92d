"""Binary encoding of instructions, derived from the table: one word of 256 bits (4 little-endian u64).

`Instr` is the in-memory instruction; `encode`/`decode` convert single instructions; `encode_many`
and `decode_fields` convert whole streams (the latter vectorised with numpy, for the emulator).
"""
from __future__ import annotations

import numpy as np

from .errors import IsaError
from .fields import OPCODE_BITS, WORD_U64
from .table import BY_MNEMONIC, BY_OPCODE, OPS, OpSpec

_MASK64 = (1 << 64) - 1


class Instr:
    """One instruction: a mnemonic and its field values (every field of its format, defaults 0)."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, **args) -> None:
        spec = BY_MNEMONIC.get(op)
        if spec is None:
            raise IsaError(f"unknown instruction {op!r}; valid: {', '.join(sorted(BY_MNEMONIC))}")
        names = {f.name for f in spec.fmt.fields}
        extra = sorted(set(args) - names)
        if extra:
            raise IsaError(f"{op}: unknown field(s) {', '.join(extra)}; fields are {', '.join(f.name for f in spec.fmt.fields)}")
        full = {}
        for f in spec.fmt.fields:
            v = args.get(f.name, 0.0 if f.kind == "f" else 0)
            f.to_raw(v)  # range check now, with the field's name in the message
            full[f.name] = float(np.float32(v)) if f.kind == "f" else int(v)
        self.op = op
        self.args = full

    @property
    def spec(self) -> OpSpec:
        return BY_MNEMONIC[self.op]

    def __getitem__(self, name: str):
        return self.args[name]

    def replace(self, **changes) -> "Instr":
        return Instr(self.op, **{**self.args, **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Instr) and self.op == other.op and self.args == other.args

    def __hash__(self) -> int:
        return hash((self.op, tuple(self.args.items())))

    def __repr__(self) -> str:
        return f"Instr({self.op!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.args.items()) + ")"


def encode(ins: Instr) -> int:
    """The instruction as one 256-bit integer."""
    spec = ins.spec
    word = spec.opcode
    for f, pos in spec.fmt.layout():
        word |= f.to_raw(ins.args[f.name]) << pos
    return word


def decode(word: int) -> Instr:
    opcode = word & ((1 << OPCODE_BITS) - 1)
    spec = BY_OPCODE.get(opcode)
    if spec is None:
        raise IsaError(f"unknown opcode {opcode:#04x}; valid opcodes: {', '.join(f'{o.opcode:#04x}' for o in OPS)}")
    args = {}
    for f, pos in spec.fmt.layout():
        args[f.name] = f.from_raw((word >> pos) & ((1 << f.bits) - 1))
    used = spec.fmt.used_bits
    if word >> used:
        raise IsaError(f"{spec.mnemonic}: bits above {used} are set in an encoded word (corrupt stream)")
    return Instr(spec.mnemonic, **args)


def word_to_u64(word: int) -> list[int]:
    return [(word >> (64 * k)) & _MASK64 for k in range(WORD_U64)]


def u64_to_word(row) -> int:
    w = 0
    for k in range(WORD_U64):
        w |= int(row[k]) << (64 * k)
    return w


def encode_many(instrs) -> np.ndarray:
    """A stream of instructions as a uint64 array [n, 4]."""
    instrs = list(instrs)
    out = np.zeros((len(instrs), WORD_U64), dtype=np.uint64)
    for i, ins in enumerate(instrs):
        out[i] = word_to_u64(encode(ins))
    return out


def decode_many(words: np.ndarray) -> list[Instr]:
    return [decode(u64_to_word(row)) for row in np.asarray(words, dtype=np.uint64)]


def _extract(words: np.ndarray, pos: int, bits: int) -> np.ndarray:
    """Bits pos..pos+bits of every word, as uint64 (fields may straddle a 64-bit boundary)."""
    k, off = divmod(pos, 64)
    lo = words[:, k] >> np.uint64(off)
    if off + bits > 64:
        lo = lo | (words[:, k + 1] << np.uint64(64 - off))
    if bits < 64:
        lo = lo & np.uint64((1 << bits) - 1)
    return lo


def decode_fields(words: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised decode of a stream: 'opcode' plus every field name of every format, as arrays.

    Integer fields are int64, float fields float32; a field absent from an instruction's format is 0.
    Raises IsaError on an unknown opcode or on stray bits above a format's used width.
    """
    words = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1, WORD_U64)
    n = words.shape[0]
    opcode = (words[:, 0] & np.uint64(0xFF)).astype(np.int64)
    out: dict[str, np.ndarray] = {"opcode": opcode}
    known = np.zeros(n, dtype=bool)
    for spec in OPS:
        sel = np.nonzero(opcode == spec.opcode)[0]
        known[sel] = True
        if sel.size == 0:
            continue
        w = words[sel]
        used = spec.fmt.used_bits
        for k in range(WORD_U64):  # stray bits above the used width mean a corrupt word
            lo_bit = max(used - 64 * k, 0)
            if lo_bit >= 64:
                continue
            stray = w[:, k] >> np.uint64(lo_bit) if lo_bit > 0 else w[:, k]
            if np.any(stray):
                bad = int(sel[np.nonzero(stray)[0][0]])
                raise IsaError(f"word {bad}: {spec.mnemonic} has bits set above bit {used} (corrupt stream)")
        for f, pos in spec.fmt.layout():
            raw = _extract(w, pos, f.bits)
            if f.kind == "f":
                vals = raw.astype(np.uint32).view(np.float32)
                arr = out.setdefault(f.name, np.zeros(n, dtype=np.float32))
            elif f.kind == "s":
                v = raw.astype(np.int64)
                vals = np.where(v >= (1 << (f.bits - 1)), v - (1 << f.bits), v)
                arr = out.setdefault(f.name, np.zeros(n, dtype=np.int64))
            else:
                vals = raw.astype(np.int64)
                arr = out.setdefault(f.name, np.zeros(n, dtype=np.int64))
            arr[sel] = vals
    if not known.all():
        bad = int(np.nonzero(~known)[0][0])
        raise IsaError(f"word {bad}: unknown opcode {int(opcode[bad]):#04x}")
    return out
