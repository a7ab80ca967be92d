"""Emulator memory layout: where every region's vectors live, on the chip and in the emulator's arrays.

Physical rows: each (chip, bank) gets as many rows as the regions placed on it reach (max address +
height); a region's vector v is at physical row bank_base[chip, bank(v)] + address(v) (Region.locate),
and aliasing regions share rows, as on the chip. The checker works on physical rows.

Memory rows (the kernels' arrays, kernels.py): a float32 array and a uint16 array; `store[region]` says
which one holds a region: the uint16 one (fp16 bit patterns) for an fp16 region none of whose physical
rows is shared with a region of another type, the float32 one otherwise, so aliasing regions always use
the same array. A region that shares no physical row at all (weights, caches, most activations) gets its
own block of rows, laid out column by column (vector j of row i at base + j * rows + i: the rows of an LW
tile are contiguous, and the ACC loop streams them); the others keep the bank layout, rebuilt over them
alone (`mem_bank_base`) at the start of both arrays. So the arrays are the size of the data, and each row
is used by one array only (the other array's copy of the shared part is never touched; the OS maps
pages on first touch, so it costs no resident memory).
"""
from __future__ import annotations

import numpy as np

from isa import DTYPES, Region
from isa.numerics import round_to as _round_to

from . import kernels as K
from .errors import EmulationError

DTYPE_CODE = {name: code for code, (name, _) in DTYPES.items()}


class Layout:
    """Where every region's vectors live: physical rows (for the checker) and memory rows (for the kernels)."""

    def __init__(self, regions: list[Region], chips: int, banks: int) -> None:
        self.regions = regions
        self.chips = chips
        self.banks = banks
        for r in regions:
            touched = min(r.width, r.rows)
            if r.bank + touched > banks:
                raise EmulationError(f"region {r.name!r} spans banks {r.bank}..{r.bank + touched - 1}; "
                                     f"a chip has banks 0..{banks - 1}")
        self.bank_rows = self._bank_need(regions)
        self.bank_base = np.concatenate([[0], np.cumsum(self.bank_rows)[:-1]]).astype(np.int64)
        self.vectors = int(self.bank_rows.sum())  # physical rows: every (chip, bank, address) in use
        self.store, private = self._classify()
        # memory rows: the shared part (banks laid out as above, over the regions that share rows only),
        # then each private region's own column-major block, in the array of its store
        need = self._bank_need([r for r, p in zip(regions, private) if not p])
        self.mem_bank_base = np.concatenate([[0], np.cumsum(need)[:-1]]).astype(np.int64)
        self.shared_vectors = int(need.sum())
        nxt = {K.ST_F32: self.shared_vectors, K.ST_F16: self.shared_vectors}
        self.base = []
        for r, st, p in zip(regions, self.store, private):
            self.base.append(nxt[st] if p else -1)
            nxt[st] += r.n_vectors if p else 0
        self.vectors32, self.vectors16 = nxt[K.ST_F32], nxt[K.ST_F16]
        self.table = np.array([[r.chip, r.bank, r.width, r.addr, r.row_vectors, r.rows, DTYPE_CODE[r.dtype], r.n_vectors,
                                st, b] for r, st, b in zip(regions, self.store, self.base)],
                              dtype=np.int64).reshape(len(regions), len(K.REGION_COLUMNS))

    def _bank_need(self, regions) -> np.ndarray:
        need = np.zeros(self.chips * self.banks, dtype=np.int64)
        for r in regions:
            touched = min(r.width, r.rows)
            lo = r.chip * self.banks + r.bank
            end = r.addr + r.addresses_per_bank()
            need[lo:lo + touched] = np.maximum(need[lo:lo + touched], end)
        return need

    def _classify(self) -> tuple[list[int], list[bool]]:
        """Per region: its store (kernels.ST_F16 for an fp16 region sharing no physical row with a region of
        another type, else ST_F32), and whether it is private (shares no physical row with any region)."""
        other = np.zeros(self.vectors, dtype=bool)  # rows used by a non-fp16 region
        users = np.zeros(self.vectors, dtype=np.int32)  # regions using each row
        for k, r in enumerate(self.regions):
            if r.n_vectors:
                rows = self.physical_rows(k, np.arange(r.n_vectors))
                users[rows] += 1
                if r.dtype != "fp16":
                    other[rows] = True
        store, private = [], []
        for k, r in enumerate(self.regions):
            rows = self.physical_rows(k, np.arange(r.n_vectors))
            compact = r.dtype == "fp16" and not (r.n_vectors and other[rows].any())
            store.append(K.ST_F16 if compact else K.ST_F32)
            private.append(bool(r.n_vectors) and bool((users[rows] == 1).all()))
        return store, private

    def physical_rows(self, region: int, v: np.ndarray) -> np.ndarray:
        """Physical rows (bank_base[chip, bank] + address) of vectors v of a region (vectorised Region.locate)."""
        return self._banked(self.bank_base, region, v)

    def _banked(self, bank_base: np.ndarray, region: int, v: np.ndarray) -> np.ndarray:
        r = self.regions[region]
        v = np.asarray(v, dtype=np.int64)
        row, j = np.divmod(v, r.row_vectors)
        q, b = np.divmod(row, r.width)
        return bank_base[r.chip * self.banks + r.bank + b] + r.addr + q * r.row_vectors + j

    def rows(self, region: int, v: np.ndarray) -> np.ndarray:
        """Memory rows of vectors v of a region, in the array of its store (kernels.vec_row)."""
        b = self.base[region]
        if b < 0:
            return self._banked(self.mem_bank_base, region, v)
        r = self.regions[region]
        row, j = np.divmod(np.asarray(v, dtype=np.int64), r.row_vectors)
        return b + j * r.rows + row

    def where(self, row: int) -> tuple[int, int, int]:
        """(chip, bank, address) of a physical row."""
        cb = int(np.searchsorted(self.bank_base, row, side="right")) - 1
        while cb > 0 and self.bank_rows[cb] == 0:  # empty banks share their base with the next one
            cb -= 1
        return cb // self.banks, cb % self.banks, int(row - self.bank_base[cb])

    def describe_row(self, row: int) -> str:
        """'region 'x' vector 3 (chip 0, bank 5, address 2)' for a physical row."""
        chip, bank, addr = self.where(row)
        names = []
        for r in self.regions:
            if r.chip != chip or not r.bank <= bank < r.bank + min(r.width, r.rows):
                continue
            rel = addr - r.addr
            if not 0 <= rel < r.addresses_per_bank():
                continue
            q, j = divmod(rel, r.row_vectors)
            rr = q * r.width + (bank - r.bank)
            if rr < r.rows:
                names.append(f"region {r.name!r} vector {rr * r.row_vectors + j}")
        what = " = ".join(names) if names else "unallocated memory"
        return f"{what} (chip {chip}, bank {bank}, address {addr})"


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Host-side rounding of values to a region element type, as float32 (isa.numerics)."""
    return _round_to(values, dtype)
