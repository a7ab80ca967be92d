"""Every region's vectors out of an Emulator, and a bit-for-bit comparison of two machines' memories.

The emulator's memory is two arrays (layout.py): float32 rows, and fp16 bit patterns for the regions
whose store is kernels.ST_F16; `emu.layout.rows` maps (region, vectors) to rows of the region's array.
Reading through the layout, not through symbols, covers every region (activations and scratch too).
"""
from __future__ import annotations

import numpy as np

from lpu.emulator import Emulator
from lpu.emulator import kernels as K


def emulator_vectors(emu: Emulator) -> list[np.ndarray]:
    """Per region (by id): its vectors as float32 [n_vectors, VECTOR_LANES] (fp16 bits converted exactly)."""
    out = []
    lay = emu.layout
    for r in emu.program.regions:
        rows = lay.rows(r.id, np.arange(r.n_vectors))
        if lay.store[r.id] == K.ST_F16:
            out.append(emu.memory16[rows].view(np.float16).astype(np.float32))
        else:
            out.append(emu.memory[rows].copy())
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: identical float32 bits, or both NaN (NaN payloads are not compared)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def memory_difference(regions, mine: list[np.ndarray], theirs: list[np.ndarray]) -> str | None:
    """None if every region is bit-identical, else where the first difference is and how many differ."""
    bad = []
    for r, x, y in zip(regions, mine, theirs):
        ok = same_bits(x, y)
        if not ok.all():
            v, lane = (int(i) for i in np.argwhere(~ok)[0])
            bad.append(f"region {r.id} {r.name!r} (chip {r.chip}, {r.dtype}) vector {v} lane {lane}: "
                       f"{x[v, lane]!r} vs {y[v, lane]!r} ({int((~ok).sum())} elements differ)")
    if not bad:
        return None
    return f"{len(bad)} region(s) differ; first: " + "; ".join(bad[:3])
