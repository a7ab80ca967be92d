"""Binary encoding of instructions, derived from the table: one word of 256 bits (4 little-endian u64).

`Instr` is the in-memory instruction; `encode`/`decode` convert single instructions; `encode_many`
and `decode_fields` convert whole streams (the latter vectorised with numpy, for the emulator).

Region operands are program-wide region ids in an `Instr` and chip-local in a word: a chip's stream
names the k-th region of that chip (in id order) as k, as a real chip addresses only its own SRAM. So
the region fields bound the regions of one chip, not of the whole system (a 576-chip program has
millions of regions, no chip more than a few thousand). `RegionNumbering` converts; the functions below
take one (and the stream's chip) to convert, and without one work on the words' own numbers.
"""
from __future__ import annotations

import numpy as np

from .errors import IsaError
from .fields import OPCODE_BITS, WORD_U64
from .table import BY_MNEMONIC, BY_OPCODE, OPS, OpSpec, region_used

_MASK64 = (1 << 64) - 1


# per mnemonic: its fields' names in format order, and each name's position in an instruction's values
_NAMES = {op: tuple(f.name for f in spec.fmt.fields) for op, spec in BY_MNEMONIC.items()}
_INDEX = {op: {n: i for i, n in enumerate(names)} for op, names in _NAMES.items()}


class Instr:
    """One instruction: a mnemonic and its field values (every field of its format, defaults 0).

    The values are a tuple in format order (`vals`): a compile at scale holds millions of instructions, and a
    tuple is a third of a dict's memory. `args` is a fresh dict of them (changing it changes nothing)."""

    __slots__ = ("op", "vals")

    def __init__(self, op: str, **args) -> None:
        spec = BY_MNEMONIC.get(op)
        if spec is None:
            raise IsaError(f"unknown instruction {op!r}; valid: {', '.join(sorted(BY_MNEMONIC))}")
        index = _INDEX[op]
        if len(args) > len(index) or any(k not in index for k in args):
            extra = sorted(set(args) - set(index))
            raise IsaError(f"{op}: unknown field(s) {', '.join(extra)}; fields are {', '.join(f.name for f in spec.fmt.fields)}")
        vals = []
        for f in spec.fmt.fields:
            v = args.get(f.name, 0.0 if f.kind == "f" else 0)
            f.to_raw(v)  # range check now, with the field's name in the message
            vals.append(float(np.float32(v)) if f.kind == "f" else int(v))
        self.op = op
        self.vals = tuple(vals)

    @property
    def spec(self) -> OpSpec:
        return BY_MNEMONIC[self.op]

    @property
    def args(self) -> dict:
        return dict(zip(_NAMES[self.op], self.vals))

    def __getitem__(self, name: str):
        i = _INDEX[self.op].get(name)
        if i is None:
            raise KeyError(name)
        return self.vals[i]

    def __contains__(self, name: str) -> bool:
        return name in _INDEX[self.op]

    def replace(self, **changes) -> "Instr":
        return Instr(self.op, **{**self.args, **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Instr) and self.op == other.op and self.vals == other.vals

    def __hash__(self) -> int:
        return hash((self.op, self.vals))

    def __getstate__(self):
        return (self.op, self.vals)

    def __setstate__(self, state) -> None:
        self.op, self.vals = state

    def __repr__(self) -> str:
        return f"Instr({self.op!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.args.items()) + ")"


class RegionNumbering:
    """Program-wide region ids <-> chip-local ones: region k of a chip is its k-th region in id order."""

    def __init__(self, region_chips, chips: int) -> None:
        chip = np.asarray(region_chips, dtype=np.int64).reshape(-1)
        n = chip.size
        if n and (chip.min() < 0 or chip.max() >= chips):
            raise IsaError(f"a region is on chip {int(chip.max() if chip.max() >= chips else chip.min())}; "
                           f"the program has chips 0..{chips - 1}")
        order = np.argsort(chip, kind="stable")
        counts = np.bincount(chip, minlength=chips)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.chip = chip
        self.local = np.empty(n, dtype=np.int64)
        self.local[order] = np.arange(n, dtype=np.int64) - np.repeat(starts, counts)
        self.by_chip = [order[s:s + c] for s, c in zip(starts.tolist(), counts.tolist())]

    @classmethod
    def of(cls, regions, chips: int) -> "RegionNumbering":
        return cls([r.chip for r in regions], chips)

    def most_on_a_chip(self) -> int:
        return max((a.size for a in self.by_chip), default=0)

    def to_local(self, chip: int, rid: int, field: str = "") -> int:
        if not 0 <= rid < self.chip.size:
            raise IsaError(f"{field}: region {rid} does not exist (the program has regions 0..{self.chip.size - 1})")
        if self.chip[rid] != chip:
            raise IsaError(f"{field}: region {rid} is on chip {int(self.chip[rid])}; a stream of chip {chip} "
                           f"can only name regions of its own chip")
        return int(self.local[rid])

    def table(self, chip: int) -> np.ndarray:
        """The program-wide ids of a chip's regions: entry k is its region k."""
        return self.by_chip[chip] if 0 <= chip < len(self.by_chip) else np.zeros(0, dtype=np.int64)

    def missing(self, chip: int, local: int) -> str:
        n = self.table(chip).size
        return f"names region {local} of chip {chip}, which has {'regions 0..' + str(n - 1) if n else 'no regions'}"

    def to_global(self, chip: int, local: int, field: str = "") -> int:
        table = self.table(chip)
        if not 0 <= local < table.size:
            raise IsaError(f"{field} {self.missing(chip, local)}")
        return int(table[local])


def _region_fields(spec: OpSpec):
    return [f for f in spec.fmt.fields if f.region]


def encode(ins: Instr, chip: int = 0, numbering: RegionNumbering | None = None) -> int:
    """The instruction as one 256-bit integer (region operands made chip-local when given a numbering)."""
    spec = ins.spec
    word = spec.opcode
    args = ins.args
    for f, pos in spec.fmt.layout():
        v = args[f.name]
        if f.region and numbering is not None and region_used(spec.mnemonic, f.name, args):
            v = numbering.to_local(chip, v, f"{spec.mnemonic} {f.name}")
        word |= f.to_raw(v) << pos
    return word


def _globalize(ins: Instr, chip: int, numbering: RegionNumbering | None) -> Instr:
    if numbering is None:
        return ins
    args = ins.args
    changes = {f.name: numbering.to_global(chip, args[f.name], f"{ins.op} {f.name}")
               for f in _region_fields(ins.spec) if region_used(ins.op, f.name, args)}
    return ins.replace(**changes) if changes else ins


def decode(word: int, chip: int = 0, numbering: RegionNumbering | None = None) -> Instr:
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
    return _globalize(Instr(spec.mnemonic, **args), chip, numbering)


def word_to_u64(word: int) -> list[int]:
    return [(word >> (64 * k)) & _MASK64 for k in range(WORD_U64)]


def u64_to_word(row) -> int:
    w = 0
    for k in range(WORD_U64):
        w |= int(row[k]) << (64 * k)
    return w


def encode_many(instrs, chip: int = 0, numbering: RegionNumbering | None = None) -> np.ndarray:
    """A stream of instructions (of `chip`, when given a numbering) as a uint64 array [n, 4]."""
    instrs = list(instrs)
    out = np.zeros((len(instrs), WORD_U64), dtype=np.uint64)
    for i, ins in enumerate(instrs):
        out[i] = word_to_u64(encode(ins, chip, numbering))
    return out


def decode_many(words: np.ndarray, chip: int = 0, numbering: RegionNumbering | None = None) -> list[Instr]:
    return [decode(u64_to_word(row), chip, numbering) for row in np.asarray(words, dtype=np.uint64)]


def _extract(words: np.ndarray, pos: int, bits: int) -> np.ndarray:
    """Bits pos..pos+bits of every word, as uint64 (fields may straddle a 64-bit boundary)."""
    k, off = divmod(pos, 64)
    lo = words[:, k] >> np.uint64(off)
    if off + bits > 64:
        lo = lo | (words[:, k + 1] << np.uint64(64 - off))
    if bits < 64:
        lo = lo & np.uint64((1 << bits) - 1)
    return lo


def decode_fields(words: np.ndarray, chip: int = 0, numbering: RegionNumbering | None = None) -> dict[str, np.ndarray]:
    """Vectorised decode of a stream: 'opcode' plus every field name of every format, as arrays.

    Integer fields are int64, float fields float32; a field absent from an instruction's format is 0;
    region fields are program-wide ids when given a numbering (and the stream's chip).
    Raises IsaError on an unknown opcode, on stray bits above a format's used width or on a region
    number the chip does not have.
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
        if numbering is not None:  # chip-local region numbers -> program-wide ids, where the field names one
            table = numbering.table(chip)
            mine = {f.name: out[f.name][sel] for f in spec.fmt.fields}
            for f in _region_fields(spec):
                vals = mine[f.name]
                used = np.broadcast_to(region_used(spec.mnemonic, f.name, mine), vals.shape)
                bad = np.nonzero(used & (vals >= table.size))[0]
                if bad.size:
                    raise IsaError(f"word {int(sel[bad[0]])}: {spec.mnemonic} {f.name} "
                                   f"{numbering.missing(chip, int(vals[bad[0]]))}")
                out[f.name][sel[used]] = table[vals[used]]
    if not known.all():
        bad = int(np.nonzero(~known)[0][0])
        raise IsaError(f"word {bad}: unknown opcode {int(opcode[bad]):#04x}")
    return out
