"""The ONNX operator registry: one operator per module of this package, one line per operator here.

Each module defines `OP = OpSpec(...)` (see _base.py: numpy `eval` for folding and position/mask paths,
`translate` to IR equations, optional `kv` hook for the KV cache). Adding an operator = a small module
+ its name in MODULES.
"""
from __future__ import annotations

from importlib import import_module

from ._base import OpSpec

__all__ = ["MODULES", "REGISTRY", "OpSpec", "describe_unsupported", "spec_of", "supported_ops", "unsupported_nodes"]

MODULES = (
    "abs",
    "add",
    "bias_gelu",
    "cast",
    "cast_like",
    "ceil",
    "clip",
    "concat",
    "constant",
    "constant_of_shape",
    "cos",
    "cumsum",
    "dequantize_linear",
    "div",
    "dropout",
    "equal",
    "erf",
    "exp",
    "expand",
    "fast_gelu",
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
    "matmul_nbits",
    "max",
    "min",
    "mod",
    "mo_e",
    "mul",
    "neg",
    "pow",
    "q_mo_e",
    "quick_gelu",
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
    "rotary_embedding",
    "round",
    "scatter_nd",
    "shape",
    "sigmoid",
    "simplified_layer_normalization",
    "sin",
    "size",
    "skip_layer_normalization",
    "skip_simplified_layer_normalization",
    "slice",
    "softmax",
    "split",
    "sqrt",
    "squeeze",
    "sub",
    "tanh",
    "tile",
    "top_k",
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


def spec_of(node) -> OpSpec | None:
    """The registry's operator for an ONNX node (its type in its domain), or None."""
    spec = REGISTRY.get(node.op_type)
    if spec is None or (node.domain not in ("", "ai.onnx") and node.domain not in spec.domains):
        return None
    return spec


def unsupported_nodes(nodes) -> dict:
    """(op type, domain) -> names of the nodes the registry has no operator for."""
    out: dict = {}
    for n in nodes:
        if spec_of(n) is None:
            out.setdefault((n.op_type, n.domain if n.domain not in ("", "ai.onnx") else ""), []).append(n.name)
    return out


def describe_unsupported(missing: dict) -> str:
    """One line naming every unsupported operator, with its count and first nodes."""
    parts = []
    for (op, dom), names in sorted(missing.items()):
        shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{op}{f' ({dom})' if dom else ''} x{len(names)} ({shown})")
    word = "operator" if len(missing) == 1 else "operators"
    return (f"unsupported ONNX {word}: {'; '.join(parts)}; supported operators: {', '.join(supported_ops())} "
            "(`lpu check MODEL` lists what a model uses)")
