"""QuickGelu (com.microsoft): x * sigmoid(alpha * x)."""
import numpy as np

from ._base import Expansion, OpSpec
from ._fused import expanded_only


def _expand(ctx, node, vals):
    E = Expansion(ctx, node)
    a = E.one("Mul", [node.input(0), E.const(np.float32(node.attr("alpha", 1.702)))])
    E.op("Mul", [node.input(0), E.one("Sigmoid", [a])], [node.outputs[0]])
    return E.nodes


OP = OpSpec("QuickGelu", expanded_only, domains=("com.microsoft",), expand=_expand)
