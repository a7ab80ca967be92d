"""Tile: repeat along each axis (constants and position/mask paths only)."""
import numpy as np

from ._base import OpSpec


def _eval(node, args):
    return [np.tile(np.asarray(args[0]), [int(r) for r in np.asarray(args[1]).reshape(-1)])]


OP = OpSpec("Tile", _eval)
