"""What the importer knows about each ONNX tensor while it walks the graph.

K     a known constant (numpy; object arrays hold ints and `Sym`s for folded shapes)
L     a lazy runtime tensor that depends only on the position (position_ids, the past length P) and/or
      on attention_mask: it is never translated op by op; it is evaluated with numpy for given positions
      and masks, then either tabulated (`gather(table, position_ids)`) or verified and replaced by
      `mask_fill`
M     a main-path tensor: an IR variable
Past  a past KV graph input [1, Hkv, P, D]
KVView (attention.py) a layout view of a present KV cache (after kv_append)
GW    a weight matrix chosen at runtime: a constant table of matrices [E, ..., K, N] gathered by a runtime
      expert number (mixture-of-experts); only a MatMul may read it (IR expert_linear)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sym import Sym


@dataclass(frozen=True, eq=False)
class K:
    value: np.ndarray
    name: str | None = None  # the ONNX tensor it is the value of


@dataclass(frozen=True, eq=False)
class L:
    name: str  # ONNX tensor name, evaluated by Importer.eval_lazy
    shape: tuple  # ints and Syms
    dtype: np.dtype
    deps: frozenset  # subset of {"pos", "mask"}

    @property
    def has_t(self) -> bool:
        return any(isinstance(d, Sym) for d in self.shape)


@dataclass(frozen=True, eq=False)
class M:
    var: str


@dataclass(frozen=True, eq=False)
class Past:
    name: str  # graph input name
    heads: int
    head_dim: int

    @property
    def shape(self) -> tuple:
        return (1, self.heads, Sym(1, 0), self.head_dim)


@dataclass(frozen=True, eq=False)
class GW:
    table: K  # the constant [E, *rest] the Gather reads
    idx: str  # the IR var (i64, one element) holding the expert number
    shape: tuple  # the Gather's output shape: idx's shape + rest


def ir_dtype(dt) -> str:
    """The IR dtype of a numpy dtype: f32 | i64 | bool."""
    dt = np.dtype(dt)
    if dt.kind == "f":
        return "f32"
    if dt.kind == "b":
        return "bool"
    return "i64"
