"""Dropout: the identity at inference (the optional mask output is all ones)."""
import numpy as np

from ._base import OpSpec, identity_kv


def _eval(node, args):
    return [args[0], np.ones(np.shape(args[0]), dtype=bool)]


def _translate(ctx, node, vals):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise ctx.unsupported("uses the Dropout mask output")
    return [vals[0]]


OP = OpSpec("Dropout", _eval, _translate, kv=identity_kv, t_ok=True)
