"""BiasGelu (com.microsoft): GELU (erf form) of A + B."""
from ._base import Expansion, OpSpec
from ._fused import expanded_only


def _expand(ctx, node, vals):
    E = Expansion(ctx, node)
    E.op("Gelu", [E.one("Add", [node.input(0), node.input(1)])], [node.outputs[0]])
    return E.nodes


OP = OpSpec("BiasGelu", expanded_only, domains=("com.microsoft",), expand=_expand)
