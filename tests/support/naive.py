"""A slow, obviously-correct interpreter of the machine semantics: the reference the kernels are tested against.

Memory is a dict (chip, bank) -> numpy array of addresses; vectors are found with Region.locate;
rounding uses numpy's astype(float16); every instruction reads all its operands first, then writes.
The LW tile is copied when LW executes (as the hardware does), unlike the executor, which points at
SRAM and relies on the checker. No Numba, no shared code with kernels.py.
"""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

import isa
from isa import VECTOR_LANES, Machine, Program
from isa.table import MODE_GRP, MODE_IMM, MODE_REP, SXM_BY_CODE, VXM_BY_CODE

F32 = np.float32


class NaiveError(RuntimeError):
    pass


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.asarray(x, dtype=F32)
    with np.errstate(all="ignore"):
        if dtype == "fp16":
            return x.astype(np.float16).astype(F32)
        if dtype == "i32":
            return np.trunc(x).astype(F32)
    return x.copy()


def _max(a, b):
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a >= b, a, b))).astype(F32)


def _min(a, b):
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a <= b, a, b))).astype(F32)


def vxm_fn(name: str, a: np.ndarray, b: np.ndarray | None, imm: float) -> np.ndarray:
    """One VXM function on float32 vectors (exp/tanh/rsqrt via float64, rounded once to float32)."""
    one, zero = F32(1), F32(0)
    with np.errstate(all="ignore"):
        f64 = a.astype(np.float64)
        table = {
            "copy": lambda: a.copy(),
            "neg": lambda: -a,
            "abs": lambda: np.abs(a),
            "relu": lambda: _max(a, np.zeros_like(a)),
            "exp": lambda: np.exp(f64).astype(F32),
            "tanh": lambda: np.tanh(f64).astype(F32),
            "rsqrt": lambda: (1.0 / np.sqrt(f64)).astype(F32),
            "recip": lambda: one / a,
            "isnan": lambda: np.where(np.isnan(a), one, zero),
            "add": lambda: a + b,
            "sub": lambda: a - b,
            "mul": lambda: a * b,
            "max": lambda: _max(a, b),
            "min": lambda: _min(a, b),
            "cmpgt": lambda: np.where(a > b, one, zero),
            "cmpge": lambda: np.where(a >= b, one, zero),
            "cmpeq": lambda: np.where(a == b, one, zero),
            "select": lambda: np.where(a != 0, b, F32(imm)),
        }
        return np.asarray(table[name](), dtype=F32)


def sram_banks(regions) -> dict[tuple[int, int], np.ndarray]:
    """(chip, bank) -> float32 [addresses, VECTOR_LANES], zeros, tall enough for every region in the bank."""
    mem: dict[tuple[int, int], np.ndarray] = {}
    for r in regions:
        for b in range(r.bank, r.bank + min(r.width, r.rows)):
            need = r.addr + r.addresses_per_bank()
            old = mem.get((r.chip, b))
            if old is None or old.shape[0] < need:
                new = np.zeros((need, VECTOR_LANES), dtype=F32)
                if old is not None:
                    new[:old.shape[0]] = old
                mem[(r.chip, b)] = new
    return mem


class NaiveMachine:
    def __init__(self, program: Program) -> None:
        self.p = program
        self.regions = program.regions
        self.hw = program.header["hw"]
        self.m = Machine(self.hw, program.regions)
        self.topo = program.header.get("topology") or self.m.topology.table()
        self.mem = sram_banks(self.regions)
        for reg, off, data in program.image:
            flat = np.asarray(data).astype(F32).reshape(-1, VECTOR_LANES)
            for k in range(flat.shape[0]):
                self.set(reg, off + k, flat[k])
        self.acc: dict[tuple[int, int, int], np.ndarray] = {}
        self.shadow: dict[tuple[int, int], np.ndarray] = {}
        self.active: dict[tuple[int, int], np.ndarray] = {}
        self.links: dict[tuple[int, int], deque] = defaultdict(deque)

    # ---------------------------------------------------------------- vectors
    def get(self, reg: int, v: int) -> np.ndarray:
        r = self.regions[reg]
        if not 0 <= v < r.n_vectors:
            raise NaiveError(f"vector {v} outside region {r.name}")
        bank, addr = r.locate(v)
        return self.mem[(r.chip, bank)][addr].copy()

    def set(self, reg: int, v: int, values: np.ndarray) -> None:
        r = self.regions[reg]
        if not 0 <= v < r.n_vectors:
            raise NaiveError(f"vector {v} outside region {r.name}")
        bank, addr = r.locate(v)
        self.mem[(r.chip, bank)][addr] = round_to(values, r.dtype)

    def write(self, symbol: str, values) -> None:
        s = self.p.symbols[symbol]
        vals = np.asarray(values).reshape(-1)
        for sh in s.shards:  # vector by vector: the elements of the shard that fall in each
            e = sh.offset
            while e < sh.offset + sh.count:
                vi, lane = divmod(e, VECTOR_LANES)
                n = min(VECTOR_LANES - lane, sh.offset + sh.count - e)
                v = self.get(sh.region, vi)
                v[lane:lane + n] = vals[sh.start + e - sh.offset:sh.start + e - sh.offset + n].astype(F32)
                self.set(sh.region, vi, v)
                e += n

    def read(self, symbol: str) -> np.ndarray:
        s = self.p.symbols[symbol]
        out = np.zeros(int(np.prod(s.shape)), dtype=F32)
        for sh in reversed(s.shards):
            e = sh.offset
            while e < sh.offset + sh.count:
                vi, lane = divmod(e, VECTOR_LANES)
                n = min(VECTOR_LANES - lane, sh.offset + sh.count - e)
                out[sh.start + e - sh.offset:sh.start + e - sh.offset + n] = self.get(sh.region, vi)[lane:lane + n]
                e += n
        return out

    # ---------------------------------------------------------------- order
    def order(self, bucket: int):
        """Instructions sorted by (issue + commit cycle, chip, queue index, position): the execution order."""
        queues = self.p.header["queues"]
        items = []
        # the words name region k of their chip for the chip's k-th region in id order
        of_chip: dict[int, list[int]] = {}
        for r in sorted(self.p.regions, key=lambda r: r.id):
            of_chip.setdefault(r.chip, []).append(r.id)
        for (b, c, q), words in self.p.streams.items():
            if b != bucket:
                continue
            t = 0
            for pos, raw in enumerate(isa.decode_many(words)):
                ins = raw.replace(**{f.name: of_chip[c][raw[f.name]] for f in raw.spec.fmt.fields if f.region})
                prof = self.m.profile(ins, q)
                items.append((t + getattr(prof, "commit", 0), c, queues.index(q), pos, q, ins))
                t += prof.busy
        items.sort(key=lambda x: x[:4])
        return items

    def run(self, bucket: int = 0) -> None:
        self.shadow.clear()
        self.active.clear()
        for t, chip, _, pos, q, ins in self.order(bucket):
            getattr(self, "_" + ins.op.lower())(chip, ins.args)

    # ---------------------------------------------------------------- instructions
    def _nop(self, chip, a):
        pass

    _sync = _deskew = _nop

    @staticmethod
    def _index(off, mode, m, i):
        if mode == MODE_REP:
            return off + i % m
        if mode == MODE_GRP:
            return off + i // m
        return off + i

    def _vxm(self, chip, a):
        fn = VXM_BY_CODE[a["fn"]]
        n = a["n"]
        out = []
        if fn.reduce:
            g = max(1, a["group"])
            for d in range(n):
                s = self.get(a["a_reg"], self._index(a["a_off"], a["a_mode"], a["a_m"], d * g))
                for k in range(1, g):
                    x = self.get(a["a_reg"], self._index(a["a_off"], a["a_mode"], a["a_m"], d * g + k))
                    s = (s + x) if fn.name == "rsum" else _max(s, x)
                out.append(s)
        else:
            for d in range(n):
                x = self.get(a["a_reg"], self._index(a["a_off"], a["a_mode"], a["a_m"], d))
                y = None
                if fn.arity >= 2:
                    if a["b_mode"] == MODE_IMM:
                        y = np.full(VECTOR_LANES, a["imm"], dtype=F32)
                    else:
                        y = self.get(a["b_reg"], self._index(a["b_off"], a["b_mode"], a["b_m"], d))
                out.append(vxm_fn(fn.name, x, y, a["imm"]))
        for d, v in enumerate(out):
            if a["period"] > 0 and d % a["period"] == a["period"] - 1:
                v = v.copy()
                v[a["valid"]:] = 0
            self.set(a["dst_reg"], a["dst_off"] + d, v)

    def _sxm(self, chip, a):
        fn = SXM_BY_CODE[a["fn"]].name
        n = a["n"]
        if fn == "rot":
            out = [np.roll(self.get(a["src_reg"], a["src_off"] + d), -(a["shift"] % VECTOR_LANES)) for d in range(n)]
        else:
            win = np.concatenate([self.get(a["src_reg"], a["src_off"] + k) for k in range(a["window"])])
            mp = np.concatenate([self.get(a["map_reg"], a["map_off"] + d) for d in range(n)]).astype(np.int64)
            if (mp >= win.size).any():
                raise NaiveError("shuf map outside the window")
            flat = np.where(mp < 0, F32(0), win[np.clip(mp, 0, win.size - 1)])
            out = list(flat.reshape(n, VECTOR_LANES))
        for d, v in enumerate(out):
            self.set(a["dst_reg"], a["dst_off"] + d, v)

    def _lw(self, chip, a):
        r = self.regions[a["src_reg"]]
        self.shadow[(chip, a["unit"])] = np.stack(
            [self.get(a["src_reg"], (a["row0"] + k) * r.row_vectors + a["col"]) for k in range(a["rows"])])

    def _iw(self, chip, a):
        self.active[(chip, a["unit"])] = self.shadow[(chip, a["unit"])].copy()

    def _acc(self, chip, a):
        tile = self.active[(chip, a["unit"])]
        x = self.get(a["x_reg"], a["x_off"])
        s = np.zeros(VECTOR_LANES, dtype=F32)
        for r in range(tile.shape[0]):
            s = s + x[a["x_lane"] + r] * tile[r]
        key = (chip, a["unit"], a["slot"])
        self.acc[key] = (self.acc[key] + s) if a["accumulate"] else s

    def _emit(self, chip, a):
        v = self.get(a["dst_reg"], a["dst_off"])
        src = self.acc[(chip, a["unit"], a["slot"])]
        v[a["dst_lane"]:a["dst_lane"] + a["lanes"]] = src[a["src_lane"]:a["src_lane"] + a["lanes"]]
        self.set(a["dst_reg"], a["dst_off"], v)

    def _copy(self, chip, a):
        vs = [self.get(a["src_reg"], a["src_off"] + d) for d in range(a["n"])]
        for d, v in enumerate(vs):
            self.set(a["dst_reg"], a["dst_off"] + d, v)

    def _idx(self, a) -> int:
        x = float(self.get(a["idx_reg"], a["idx_off"])[a["idx_lane"]])
        if not np.isfinite(x) or x != int(x):
            raise NaiveError(f"index {x} is not an integer")
        return int(x)

    def _flat(self, reg, f):
        return self.get(reg, f // VECTOR_LANES)[f % VECTOR_LANES]

    def _gather(self, chip, a):
        t = self.regions[a["table_reg"]]
        row = self._idx(a) - a["base"]
        k = a.get("elems", 0)
        if k:
            out = np.zeros(-(-k // VECTOR_LANES) * VECTOR_LANES, dtype=F32)
            if 0 <= row < a["rows"]:
                out[:k] = [self._flat(a["table_reg"], row * k + e) for e in range(k)]
            for j in range(out.size // VECTOR_LANES):
                self.set(a["dst_reg"], a["dst_off"] + j, out[j * VECTOR_LANES:(j + 1) * VECTOR_LANES])
            return
        if 0 <= row < a["rows"]:
            vs = [self.get(a["table_reg"], row * t.row_vectors + j) for j in range(t.row_vectors)]
        else:
            vs = [np.zeros(VECTOR_LANES, dtype=F32)] * t.row_vectors
        for j, v in enumerate(vs):
            self.set(a["dst_reg"], a["dst_off"] + j, v)

    def _scatter(self, chip, a):
        t = self.regions[a["table_reg"]]
        row = self._idx(a)
        k = a.get("elems", 0)
        if k:
            if not 0 <= row < t.n_vectors * VECTOR_LANES // k:
                raise NaiveError(f"scatter row {row} out of range")
            src = [self._flat(a["src_reg"], a["src_off"] * VECTOR_LANES + e) for e in range(k)]
            for e in range(k):
                f = row * k + e
                v = self.get(a["table_reg"], f // VECTOR_LANES)
                v[f % VECTOR_LANES] = src[e]
                self.set(a["table_reg"], f // VECTOR_LANES, v)
            return
        if not 0 <= row < t.rows:
            raise NaiveError(f"scatter row {row} out of range")
        vs = [self.get(a["src_reg"], a["src_off"] + j) for j in range(t.row_vectors)]
        for j, v in enumerate(vs):
            self.set(a["table_reg"], row * t.row_vectors + j, v)

    def _scatcol(self, chip, a):
        t = self.regions[a["table_reg"]]
        c = self._idx(a) - a["col0"]
        if not 0 <= c < t.row_vectors * VECTOR_LANES:
            raise NaiveError(f"scatcol column {c} out of range")
        nsrc = -(-a["rows"] // VECTOR_LANES)
        src = np.concatenate([self.get(a["src_reg"], a["src_off"] + k) for k in range(nsrc)])
        for r in range(a["rows"]):
            v = self.get(a["table_reg"], r * t.row_vectors + c // VECTOR_LANES)
            v[c % VECTOR_LANES] = src[r]
            self.set(a["table_reg"], r * t.row_vectors + c // VECTOR_LANES, v)

    def _send(self, chip, a):
        for d in range(a["n"]):
            self.links[(chip, a["link"])].append(self.get(a["src_reg"], a["src_off"] + d))

    def _recv(self, chip, a):
        peer, plink = self.topo[chip][a["link"]]
        q = self.links[(peer, plink)]
        if len(q) < a["n"]:
            raise NaiveError("recv from an empty link")
        vs = [q.popleft() for _ in range(a["n"])]
        for d, v in enumerate(vs):
            self.set(a["dst_reg"], a["dst_off"] + d, v)
