"""Mod: remainder (fmod=1: C fmod, else Python-style); constants and position/mask paths only."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    a, b = np.asarray(args[0]), np.asarray(args[1])
    return [np.fmod(a, b) if node.attr("fmod", 0) else np.mod(a, b)]


OP = OpSpec("Mod", _eval)
