"""FastGelu (com.microsoft): the tanh approximation of GELU of X [+ bias]."""
from ._base import Expansion, OpSpec
from ._fused import expanded_only


def _expand(ctx, node, vals):
    E = Expansion(ctx, node)
    x = E.one("Add", [node.input(0), node.input(1)]) if node.input(1) else node.input(0)
    E.op("Gelu", [x], [node.outputs[0]], approximate="tanh")
    return E.nodes


OP = OpSpec("FastGelu", expanded_only, domains=("com.microsoft",), expand=_expand)
