"""The program file (.lpu): header, regions, symbols, per-queue instruction streams, SRAM image, checksum.

Layout (all integers little-endian):

    magic  b"LPUPROG\\0"           8 bytes
    u32    format version          (FORMAT_VERSION)
    u32    number of sections
    sections, each: 4-byte ASCII tag, u64 payload length, payload
        HEAD  JSON: hardware config and its SHA-256, chip count, buckets, queues, topology, model facts
        REGN  JSON: the regions (tensor placements: chip, first bank, stripe width, address, shape, type)
        SYMB  JSON: the symbols (named tensors -> shards on chips)
        STRM  u64 index length, JSON index [(bucket, chip, queue, words)], then the 32-byte words
              (region operands chip-local: region k of a chip's stream is that chip's k-th region in id order)
        IMAG  u64 index length, JSON index [(region, vector offset, vectors)], then the element bytes
    b"SHA2" + SHA-256 of every byte before it

JSON is written with sorted keys and no whitespace, so the same program always gives the same bytes.
Files are written to a temporary name and renamed into place: a failed write leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

from .encoding import Instr, RegionNumbering, decode_many, encode_many
from .errors import ProgramError
from .fields import WORD_BYTES, WORD_U64
from .table import DTYPE_CODE, DTYPES, VECTOR_LANES

MAGIC = b"LPUPROG\0"
FORMAT_VERSION = 2  # 2: region operands in the words are chip-local (1: program-wide)
_TAGS = ("HEAD", "REGN", "SYMB", "STRM", "IMAG")
_NP_DTYPE = {"fp32": np.float32, "fp16": np.float16, "i32": np.int32, "i8": np.int8, "fp8": ml_dtypes.float8_e4m3fn}


def np_dtype(dtype: str):
    """The numpy type a region's elements are stored as in the program file (fp8: ml_dtypes' e4m3fn)."""
    return _NP_DTYPE[dtype]


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPES[DTYPE_CODE[dtype]][1]
    except KeyError:
        raise ProgramError(f"element type {dtype!r} is not one of {', '.join(DTYPE_CODE)}") from None


@dataclass(frozen=True, slots=True)
class Region:
    """A tensor's placement on one chip: `rows` rows of `row_vectors` vectors, row r in bank
    bank + r % width at address addr + (r // width) * row_vectors."""

    id: int
    chip: int
    bank: int
    width: int
    addr: int
    row_vectors: int
    rows: int
    dtype: str
    name: str

    @property
    def n_vectors(self) -> int:
        return self.rows * self.row_vectors

    @property
    def vector_bytes(self) -> int:
        return VECTOR_LANES * dtype_bytes(self.dtype)

    @property
    def bytes(self) -> int:
        return self.n_vectors * self.vector_bytes

    def addresses_per_bank(self) -> int:
        """Addresses this region occupies in each bank it touches (its height)."""
        return -(-self.rows // self.width) * self.row_vectors

    def locate(self, v: int) -> tuple[int, int]:
        """(bank, address) of vector v."""
        r, j = divmod(v, self.row_vectors)
        return self.bank + r % self.width, self.addr + (r // self.width) * self.row_vectors + j


@dataclass(frozen=True, slots=True)
class Shard:
    """Part of a symbol held on one chip: elements [offset, offset + count) of the region's flat
    elements hold the symbol's flat elements [start, start + count)."""

    chip: int
    region: int
    offset: int
    count: int
    start: int


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    kind: str  # input | output | weight | state | const | act
    dtype: str
    shape: tuple
    shards: tuple[Shard, ...]


@dataclass
class Program:
    header: dict
    regions: list[Region]
    symbols: dict[str, Symbol]
    streams: dict[tuple[int, int, str], np.ndarray]  # (bucket, chip, queue) -> uint64 [n, 4]
    image: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (region, vector offset, flat elements)
    # (bucket, chip, queue) -> int32 per stream word: the entry of header["ops"] it belongs to (-1: none, a NOP);
    # optional (the PROV section): tools read it, execution never does
    provenance: dict[tuple[int, int, str], np.ndarray] = field(default_factory=dict)

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Structural checks that make a program safe to load (the emulator runs these first)."""
        h = self.header
        for key in ("format_version", "hw", "hw_sha256", "chips", "buckets", "queues"):
            if key not in h:
                raise ProgramError(f"header has no {key!r}")
        if h["format_version"] != FORMAT_VERSION:
            raise ProgramError(f"format version {h['format_version']} is not supported (this build reads {FORMAT_VERSION})")
        if hw_hash(h["hw"]) != h["hw_sha256"]:
            raise ProgramError("the hardware config in the header does not match its hash")
        chips = h["chips"]
        for i, r in enumerate(self.regions):
            if r.id != i:
                raise ProgramError(f"region {r.name!r} has id {r.id}, expected {i} (regions are numbered in order)")
            if not 0 <= r.chip < chips:
                raise ProgramError(f"region {r.name!r} is on chip {r.chip}; the program has chips 0..{chips - 1}")
            if r.width < 1 or r.rows < 1 or r.row_vectors < 1 or r.bank < 0 or r.addr < 0:
                raise ProgramError(f"region {r.name!r} has a non-positive size or a negative bank/address")
            dtype_bytes(r.dtype)
        for s in self.symbols.values():
            for sh in s.shards:
                if not 0 <= sh.region < len(self.regions):
                    raise ProgramError(f"symbol {s.name!r} names region {sh.region}, which does not exist")
                reg = self.regions[sh.region]
                if sh.offset < 0 or sh.offset + sh.count > reg.n_vectors * VECTOR_LANES:
                    raise ProgramError(f"symbol {s.name!r}: shard exceeds region {reg.name!r}")
        nb = len(h["buckets"])
        for (b, c, q), words in self.streams.items():
            if not (0 <= b < nb and 0 <= c < chips):
                raise ProgramError(f"stream ({b}, {c}, {q}) names a bucket or chip that does not exist")
            if words.ndim != 2 or words.shape[1] != WORD_U64 or words.dtype != np.uint64:
                raise ProgramError(f"stream ({b}, {c}, {q}) is not an array of {WORD_U64} uint64 words")
        if h.get("timing_only") and self.image:
            raise ProgramError("a timing-only program (header timing_only) has an SRAM image; it must have none")
        for reg_id, off, data in self.image:
            if not 0 <= reg_id < len(self.regions):
                raise ProgramError(f"image chunk names region {reg_id}, which does not exist")
            reg = self.regions[reg_id]
            if off < 0 or data.size % VECTOR_LANES or off + data.size // VECTOR_LANES > reg.n_vectors:
                raise ProgramError(f"image chunk for region {reg.name!r} exceeds the region")

    # ---------------------------------------------------------------- streams
    def numbering(self) -> RegionNumbering:
        """How this program's streams number regions (chip-locally); see isa.encoding."""
        return RegionNumbering.of(self.regions, int(self.header["chips"]))

    def instrs(self, key: tuple[int, int, str], numbering: RegionNumbering | None = None) -> list[Instr]:
        """The instructions of stream (bucket, chip, queue), region operands as program-wide ids."""
        return decode_many(self.streams[key], key[1], numbering or self.numbering())

    def set_instrs(self, key: tuple[int, int, str], instrs, numbering: RegionNumbering | None = None) -> None:
        """Replace stream (bucket, chip, queue) by `instrs` (region operands program-wide ids)."""
        self.streams[key] = encode_many(instrs, key[1], numbering or self.numbering())
        if key in self.provenance and self.provenance[key].shape[0] != self.streams[key].shape[0]:
            del self.provenance[key]  # no longer word for word the stream's

    @property
    def timing_only(self) -> bool:
        """Compiled without its weights (`lpu compile --timing-only`): schedules and placement, no SRAM image."""
        return bool(self.header.get("timing_only"))

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temporary file in the same directory, renamed into place when complete."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                _Writer(f).write(self)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        _Writer(buf).write(self)
        return buf.getvalue()

    @staticmethod
    def load(path: str | os.PathLike, verify: bool = True) -> "Program":
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ProgramError(f"{path}: cannot read ({exc.strerror})") from None
        if size < len(MAGIC) + 8 + 36:
            raise ProgramError(f"{path}: too short to be a program file ({size} bytes)")
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        return _read(mm, str(path), verify)

    @staticmethod
    def from_bytes(data: bytes, verify: bool = True) -> "Program":
        return _read(np.frombuffer(data, dtype=np.uint8), "<bytes>", verify)


def hw_hash(hw: dict) -> str:
    return hashlib.sha256(_json(hw)).hexdigest()


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class _Writer:
    def __init__(self, f) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def put(self, b) -> None:
        b = memoryview(b).cast("B")
        self.f.write(b)
        self.h.update(b)

    def section(self, tag: str, parts: list) -> None:
        length = sum(memoryview(p).nbytes for p in parts)
        self.put(tag.encode() + struct.pack("<Q", length))
        for p in parts:
            self.put(p)

    def write(self, p: Program) -> None:
        prov = sorted(k for k in p.provenance if k in p.streams)
        self.put(MAGIC + struct.pack("<II", FORMAT_VERSION, len(_TAGS) + (1 if prov else 0)))
        self.section("HEAD", [_json(p.header)])
        self.section("REGN", [_json([asdict(r) for r in p.regions])])
        syms = {n: {"kind": s.kind, "dtype": s.dtype, "shape": list(s.shape), "shards": [asdict(x) for x in s.shards]}
                for n, s in p.symbols.items()}
        self.section("SYMB", [_json(syms)])
        keys = sorted(p.streams)
        index = [[b, c, q, int(p.streams[(b, c, q)].shape[0])] for (b, c, q) in keys]
        idx = _json(index)
        self.section("STRM", [struct.pack("<Q", len(idx)), idx] + [np.ascontiguousarray(p.streams[k], dtype="<u8") for k in keys])
        chunks = sorted(p.image, key=lambda t: (t[0], t[1]))
        index = []
        datas = []
        for reg_id, off, data in chunks:
            dt = _NP_DTYPE[p.regions[reg_id].dtype]
            arr = np.ascontiguousarray(data, dtype=dt).reshape(-1)
            index.append([reg_id, off, arr.size // VECTOR_LANES])
            datas.append(arr.view(np.uint8))
        idx = _json(index)
        self.section("IMAG", [struct.pack("<Q", len(idx)), idx] + datas)
        if prov:
            idx = _json([[b, c, q, int(p.provenance[(b, c, q)].shape[0])] for (b, c, q) in prov])
            self.section("PROV", [struct.pack("<Q", len(idx)), idx]
                         + [np.ascontiguousarray(p.provenance[k], dtype="<i4") for k in prov])
        self.f.write(b"SHA2" + self.h.digest())


def _read(buf: np.ndarray, where: str, verify: bool) -> Program:
    def fail(msg):
        raise ProgramError(f"{where}: {msg}")

    n = buf.size
    if bytes(buf[:8]) != MAGIC:
        fail("not a program file (bad magic; expected an .lpu file written by `lpu compile`)")
    version, nsec = struct.unpack("<II", bytes(buf[8:16]))
    if version != FORMAT_VERSION:
        fail(f"format version {version} is not supported (this build reads {FORMAT_VERSION}); recompile the model")
    if bytes(buf[n - 36:n - 32]) != b"SHA2":
        fail("truncated or corrupt (no checksum trailer)")
    if verify:
        h = hashlib.sha256()
        step = 1 << 26
        for i in range(0, n - 36, step):
            h.update(memoryview(buf[i:min(i + step, n - 36)]))
        if h.digest() != bytes(buf[n - 32:]):
            fail("checksum mismatch: the file is corrupt")
    pos = 16
    sections = {}
    for _ in range(nsec):
        if pos + 12 > n - 36:
            fail("truncated section table")
        tag = bytes(buf[pos:pos + 4]).decode("ascii", "replace")
        (length,) = struct.unpack("<Q", bytes(buf[pos + 4:pos + 12]))
        start = pos + 12
        if start + length > n - 36:
            fail(f"section {tag} runs past the end of the file")
        sections[tag] = (start, length)
        pos = start + length
    missing = [t for t in _TAGS if t not in sections]
    if missing:
        fail(f"missing section(s) {', '.join(missing)}")

    def js(tag, start=None, length=None):
        s, l = sections[tag] if start is None else (start, length)
        try:
            return json.loads(bytes(buf[s:s + l]))
        except (ValueError, UnicodeDecodeError):
            fail(f"section {tag} is not valid JSON")

    try:
        header = js("HEAD")
        regions = [Region(**r) for r in js("REGN")]
        symbols = {}
        for name, s in js("SYMB").items():
            symbols[name] = Symbol(name, s["kind"], s["dtype"], tuple(s["shape"]), tuple(Shard(**x) for x in s["shards"]))
    except (TypeError, KeyError) as exc:
        fail(f"malformed header, region or symbol table ({exc})")

    def indexed(tag):
        s, l = sections[tag]
        (ilen,) = struct.unpack("<Q", bytes(buf[s:s + 8]))
        if ilen > l - 8:
            fail(f"section {tag} index runs past the section")
        return js(tag, s + 8, ilen), s + 8 + ilen, s + l

    streams = {}
    index, p0, end = indexed("STRM")
    for entry in index:
        try:
            b, c, q, count = entry
        except (TypeError, ValueError):
            fail("malformed stream index")
        nbytes = int(count) * WORD_BYTES
        if count < 0 or p0 + nbytes > end:
            fail("stream data runs past its section")
        streams[(int(b), int(c), str(q))] = np.frombuffer(buf[p0:p0 + nbytes], dtype="<u8").reshape(-1, WORD_U64).astype(np.uint64)
        p0 += nbytes
    image = []
    index, p0, end = indexed("IMAG")
    for entry in index:
        try:
            reg_id, off, nvec = (int(v) for v in entry)
        except (TypeError, ValueError):
            fail("malformed image index")
        if not 0 <= reg_id < len(regions):
            fail(f"image names region {reg_id}, which does not exist")
        dt = np.dtype(_NP_DTYPE[regions[reg_id].dtype])
        nbytes = nvec * VECTOR_LANES * dt.itemsize
        if nvec < 0 or p0 + nbytes > end:
            fail("image data runs past its section")
        image.append((reg_id, off, buf[p0:p0 + nbytes].view(dt)))
        p0 += nbytes
    provenance = {}
    if "PROV" in sections:
        index, p0, end = indexed("PROV")
        for entry in index:
            try:
                b, c, q, count = entry
                key = (int(b), int(c), str(q))
            except (TypeError, ValueError):
                fail("malformed provenance index")
            nbytes = int(count) * 4
            if count < 0 or p0 + nbytes > end:
                fail("provenance data runs past its section")
            if key not in streams or streams[key].shape[0] != count:
                fail(f"provenance of stream {key} does not match the stream")
            provenance[key] = np.frombuffer(buf[p0:p0 + nbytes], dtype="<i4").astype(np.int32)
            p0 += nbytes
            n_ops = len(header.get("ops", ())) if isinstance(header, dict) else 0
            if count and (provenance[key].min() < -1 or provenance[key].max() >= n_ops):
                fail(f"provenance of stream {key} names an operation outside the header's {n_ops}")
    prog = Program(header, regions, symbols, streams, image, provenance)
    try:
        prog.validate()
    except ProgramError as exc:
        fail(str(exc))
    return prog
