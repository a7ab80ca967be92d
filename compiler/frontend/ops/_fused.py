"""Shared pieces of the fused operators (ONNX Runtime's com.microsoft contrib ops, ONNX functions): each
is expanded into the standard operators its specification defines (OpSpec.expand), so it is folded,
evaluated and translated exactly as those are."""
from __future__ import annotations

from ._base import Expansion


def expanded_only(node, args):
    raise AssertionError(f"{node} is expanded into standard operators before anything evaluates it")


def skip_sum(E: Expansion, node, with_bias_at: int | None):
    """input + skip (+ bias): the residual sum a Skip*Normalization normalises."""
    s = E.one("Add", [node.input(0), node.input(1)])
    if with_bias_at is not None and node.input(with_bias_at):
        s = E.one("Add", [s, node.input(with_bias_at)])
    return s


def sum_output(E: Expansion, node, s: str, index: int = 3) -> None:
    """The optional input_skip_bias_sum output (index 3) is the sum itself."""
    if len(node.outputs) > index and node.outputs[index]:
        E.op("Identity", [s], [node.outputs[index]])


def refuse_stats(ctx, node, indices=(1, 2)) -> None:
    if any(i < len(node.outputs) and node.outputs[i] for i in indices):
        raise ctx.unsupported("uses the mean / inverse standard deviation outputs of the normalization")
