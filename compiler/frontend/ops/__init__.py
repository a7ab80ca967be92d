"""The ONNX operator registry: one operator per module of this package, one line per operator here.

Each module defines `OP = OpSpec(...)` (see _base.py: numpy `eval` for folding and position/mask paths,
`translate` to IR equations, optional `kv` hook for the KV cache). Adding an operator = a small module
+ its name in MODULES.
"""
from __future__ import annotations

from importlib import import_module

from ._base import OpSpec

MODULES = (
    "abs",
    "add",
    "cast",
    "cast_like",
    "ceil",
    "clip",
    "concat",
    "constant",
    "constant_of_shape",
    "cos",
    "cumsum",
    "div",
    "dropout",
    "equal",
    "erf",
    "exp",
    "expand",
    "flatten",
    "floor",
    "gather",
    "gather_elements",
    "gather_nd",
    "gelu",
    "gemm",
    "greater",
    "greater_or_equal",
    "identity",
    "isinf",
    "isnan",
    "layer_normalization",
    "less",
    "less_or_equal",
    "log",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "matmul",
    "max",
    "min",
    "mod",
    "mul",
    "neg",
    "pow",
    "range",
    "reciprocal",
    "reduce_max",
    "reduce_mean",
    "reduce_min",
    "reduce_sum",
    "reduce_sum_square",
    "relu",
    "reshape",
    "rms_normalization",
    "round",
    "scatter_nd",
    "shape",
    "sigmoid",
    "simplified_layer_normalization",
    "sin",
    "size",
    "slice",
    "softmax",
    "split",
    "sqrt",
    "squeeze",
    "sub",
    "tanh",
    "tile",
    "transpose",
    "trilu",
    "unsqueeze",
    "where",
)

REGISTRY: dict[str, OpSpec] = {}
for _m in MODULES:
    _op = import_module(f"{__name__}.{_m}").OP
    REGISTRY[_op.name] = _op


def supported_ops() -> list[str]:
    return sorted(REGISTRY)
