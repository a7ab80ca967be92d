"""Bit fields and instruction formats: the declarative vocabulary of the instruction table.

Every instruction is one fixed-width word of WORD_BITS bits. Bits 0..7 hold the opcode; a format
lists the remaining fields, laid out least-significant first. A value that does not fit its field
raises IsaError naming the field, the value and the width.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import IsaError

WORD_BITS = 256
WORD_BYTES = WORD_BITS // 8
WORD_U64 = WORD_BITS // 64
OPCODE_BITS = 8


@dataclass(frozen=True, slots=True)
class Field:
    """A named unsigned, signed or float32 bit field."""

    name: str
    bits: int
    kind: str = "u"  # "u" unsigned, "s" two's-complement signed, "f" IEEE float32 (bits must be 32)
    doc: str = ""
    region: bool = False  # names a region: chip-local in an encoded word (see encoding.RegionNumbering)

    def __post_init__(self) -> None:
        if self.kind not in ("u", "s", "f"):
            raise IsaError(f"field {self.name}: kind {self.kind!r} is not one of u, s, f")
        if self.kind == "f" and self.bits != 32:
            raise IsaError(f"field {self.name}: float fields are 32 bits, not {self.bits}")
        if not 1 <= self.bits <= 64:
            raise IsaError(f"field {self.name}: width {self.bits} is not in 1..64")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.kind == "s" else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.kind == "s" else (1 << self.bits) - 1

    def to_raw(self, value) -> int:
        """The field's bit pattern for `value`; IsaError if it does not fit."""
        if self.kind == "f":
            try:
                return struct.unpack("<I", struct.pack("<f", float(value)))[0]
            except (OverflowError, TypeError, ValueError) as exc:
                raise IsaError(f"field {self.name}: {value!r} is not a float32 value") from exc
        if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
            raise IsaError(f"field {self.name}: {value!r} is not an integer")
        value = int(value)
        if not self.lo <= value <= self.hi:
            raise IsaError(
                f"field {self.name}: value {value} does not fit in {self.bits} "
                f"{'signed ' if self.kind == 's' else ''}bits (valid {self.lo}..{self.hi})"
            )
        return value & ((1 << self.bits) - 1)

    def from_raw(self, raw: int):
        if self.kind == "f":
            return struct.unpack("<f", struct.pack("<I", raw))[0]
        if self.kind == "s" and raw >> (self.bits - 1):
            return raw - (1 << self.bits)
        return raw


@dataclass(frozen=True, slots=True)
class Format:
    """An ordered list of fields following the opcode; positions are computed, never written by hand."""

    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise IsaError(f"format {self.name}: duplicate field names {sorted(names)}")
        if self.used_bits > WORD_BITS:
            raise IsaError(f"format {self.name}: needs {self.used_bits} bits, a word has {WORD_BITS}")

    @property
    def used_bits(self) -> int:
        return OPCODE_BITS + sum(f.bits for f in self.fields)

    def layout(self) -> tuple[tuple[Field, int], ...]:
        """(field, lsb position) pairs; the opcode occupies bits 0..7."""
        out, pos = [], OPCODE_BITS
        for f in self.fields:
            out.append((f, pos))
            pos += f.bits
        return tuple(out)


REGION_BITS = 18  # region operands are chip-local: up to 262,144 regions on each chip


def region_field(name: str, doc: str) -> Field:
    return Field(name, REGION_BITS, doc=doc, region=True)


def vref(prefix: str, doc: str, mode: bool = False) -> tuple[Field, ...]:
    """An SRAM operand: a region and a vector offset within it, optionally with an index mode."""
    fields = [
        region_field(f"{prefix}_reg", f"{doc}: region"),
        Field(f"{prefix}_off", 20, doc=f"{doc}: first vector within the region"),
    ]
    if mode:
        fields += [
            Field(f"{prefix}_mode", 2, doc=f"{doc}: index mode (0 seq, 1 rep, 2 grp, 3 imm)"),
            Field(f"{prefix}_m", 16, doc=f"{doc}: modulus of rep / divisor of grp"),
        ]
    return tuple(fields)
