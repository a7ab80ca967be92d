"""The deterministic LPU instruction set: formats, encoding, assembler, the hardware description the
timing is computed from, timing and the program file.

Imports nothing from the rest of the toolchain; the compiler and the emulator both build on it.
"""
from .asm import asm_instr, assemble, disasm_instr, disassemble
from .encoding import Instr, RegionNumbering, decode, decode_fields, decode_many, encode, encode_many
from .errors import HardwareError, IsaError, ProgramError
from .fields import WORD_BITS, WORD_BYTES, Field, Format
from .program import FORMAT_VERSION, Program, Region, Shard, Symbol, dtype_bytes, hw_hash
from .table import (BY_MNEMONIC, BY_OPCODE, DTYPES, MODE_GRP, MODE_IMM, MODE_REP, MODE_SEQ, OPS, SXM_BY_NAME,
                    VECTOR_LANES, VXM_BY_NAME, parse_queue, queue_name)
from .hw import TOPOLOGY_KINDS, Floorplan, Hardware, Link, LinkClass, Topology, as_hardware
from .timing import Machine, Profile

__all__ = [n for n in dir() if not n.startswith("_")]
