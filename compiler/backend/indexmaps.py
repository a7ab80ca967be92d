"""Index maps: which input element each output element of an IR equation reads, over flat indices.

The partitioner and the lowering both reason about elements, not shapes: for any data-movement or
broadcasting equation we evaluate its numpy meaning on index arrays (np.arange) and read the map off
the result. The symbolic KV length T is taken as 1 here (the T axis is never split or moved).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..ir import DATA_MOVEMENT, Eqn, Graph, T


def shape1(shape) -> tuple:
    """The shape with T taken as 1."""
    return tuple(1 if d == T else int(d) for d in shape)


def size1(shape) -> int:
    return int(np.prod(shape1(shape), dtype=np.int64))


@lru_cache(maxsize=4096)
def bcast_map(in_shape: tuple, out_shape: tuple) -> np.ndarray:
    """For each flat output index, the flat index of a broadcast operand of shape in_shape."""
    src = np.arange(int(np.prod(in_shape, dtype=np.int64)), dtype=np.int64).reshape(in_shape)
    return np.ascontiguousarray(np.broadcast_to(src, out_shape)).reshape(-1)


def move_map(g: Graph, e: Eqn) -> tuple[np.ndarray, np.ndarray]:
    """(input number, flat index within that input) read by each flat output element of a data-movement
    equation, evaluated with the IR's own numpy meaning on index arrays (T = 1)."""
    from ..ireval import eval_eqn

    assert e.prim in DATA_MOVEMENT
    shapes = [shape1(g.shape(i)) for i in e.inputs]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    args = [np.arange(offs[k], offs[k + 1], dtype=np.int64).reshape(shapes[k]) for k in range(len(shapes))]
    if e.prim == "cast":
        out = args[0]
    else:
        e1 = Eqn(e.prim, e.inputs, e.outputs, {k: (shape1(v) if k == "shape" else v) for k, v in e.params.items()})
        out = np.asarray(eval_eqn(e1, args, 1, {}, 0, g))
    flat = out.reshape(-1).astype(np.int64)
    which = np.searchsorted(offs, flat, side="right") - 1
    return which, flat - offs[which]


def operand_map(g: Graph, e: Eqn, k: int) -> np.ndarray:
    """Flat index of input k read by each flat output element of an elementwise equation (broadcast)."""
    return bcast_map(shape1(g.shape(e.inputs[k])), shape1(g.vars[e.outputs[0]].shape))
