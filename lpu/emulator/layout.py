"""Emulator memory layout: one float32 array of VECTOR_LANES-lane rows for every (chip, bank) in use.

Each (chip, bank) gets as many rows as the regions placed on it reach (max address + height), so the
memory is the size of the program's data, not of the chip. A region's vector v lives at row
bank_base[chip, bank(v)] + address(v) (Region.locate); aliasing regions share rows, as on the chip.
"""
from __future__ import annotations

import numpy as np

from isa import DTYPES, Region

from . import kernels as K
from .errors import EmulationError

DTYPE_CODE = {name: code for code, (name, _) in DTYPES.items()}


class Layout:
    """Where every region's vectors live in the emulator memory."""

    def __init__(self, regions: list[Region], chips: int, banks: int) -> None:
        self.regions = regions
        self.chips = chips
        self.banks = banks
        need = np.zeros(chips * banks, dtype=np.int64)
        for r in regions:
            touched = min(r.width, r.rows)
            if r.bank + touched > banks:
                raise EmulationError(f"region {r.name!r} spans banks {r.bank}..{r.bank + touched - 1}; "
                                     f"a chip has banks 0..{banks - 1}")
            lo = r.chip * banks + r.bank
            end = r.addr + r.addresses_per_bank()
            need[lo:lo + touched] = np.maximum(need[lo:lo + touched], end)
        self.bank_rows = need
        self.bank_base = np.concatenate([[0], np.cumsum(need)[:-1]]).astype(np.int64)
        self.vectors = int(need.sum())
        self.table = np.array([[r.chip, r.bank, r.width, r.addr, r.row_vectors, r.rows, DTYPE_CODE[r.dtype], r.n_vectors]
                               for r in regions], dtype=np.int64).reshape(len(regions), len(K.REGION_COLUMNS))

    def rows(self, region: int, v: np.ndarray) -> np.ndarray:
        """Memory rows of vectors v (int array) of a region (vectorised Region.locate)."""
        r = self.regions[region]
        v = np.asarray(v, dtype=np.int64)
        row, j = np.divmod(v, r.row_vectors)
        q, b = np.divmod(row, r.width)
        return self.bank_base[r.chip * self.banks + r.bank + b] + r.addr + q * r.row_vectors + j

    def where(self, row: int) -> tuple[int, int, int]:
        """(chip, bank, address) of a memory row."""
        cb = int(np.searchsorted(self.bank_base, row, side="right")) - 1
        while cb > 0 and self.bank_rows[cb] == 0:  # empty banks share their base with the next one
            cb -= 1
        return cb // self.banks, cb % self.banks, int(row - self.bank_base[cb])

    def describe_row(self, row: int) -> str:
        """'region 'x' vector 3 (chip 0, bank 5, address 2)' for a memory row."""
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
    """Host-side rounding of values to a region element type, as float32."""
    v = np.asarray(values)
    if dtype == "fp16":
        with np.errstate(over="ignore"):
            return v.astype(np.float32).astype(np.float16).astype(np.float32)
    if dtype == "i32":
        if np.issubdtype(v.dtype, np.floating):
            return np.trunc(v).astype(np.float32)
        return v.astype(np.float32)
    return v.astype(np.float32)
