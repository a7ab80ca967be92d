"""DequantizeLinear (opsets 10-23): y = (x - zero_point) * scale, per tensor (scalar scale), per axis (1-D
scale along `axis`) or blocked (scale of x's rank, `block_size` elements of `axis` per scale). On constant
weights it folds to the dequantised weight at compile time (the compiler's weights are fp16/fp32 until
the int8 path exists); on a runtime tensor it is not supported."""
import numpy as np

from ._base import OpSpec

_FLOATS = {1: np.float32, 10: np.float16, 11: np.float64}


def _expand_scale(s, shape, axis: int, block: int):
    """scale / zero point broadcast to x's shape."""
    s = np.asarray(s)
    if s.ndim == 0:
        return s
    if s.ndim == 1 and not block:
        view = [1] * len(shape)
        view[axis] = s.shape[0]
        return s.reshape(view)
    if block:  # blocked: repeat each scale block_size times along the axis, cut to the axis length
        return np.take(np.repeat(s, block, axis=axis), np.arange(shape[axis]), axis=axis)
    return s


def _eval(node, args):
    x = np.asarray(args[0])
    scale = np.asarray(args[1])
    zp = np.asarray(args[2]) if len(args) > 2 and args[2] is not None else np.zeros((), np.int64)
    if x.dtype == object or scale.dtype == object:
        raise ValueError("symbolic DequantizeLinear")
    axis = node.attr("axis", 1) % max(x.ndim, 1) if x.ndim else 0
    block = int(node.attr("block_size", 0) or 0)
    out_type = _FLOATS.get(int(node.attr("output_dtype", 0) or 0), scale.dtype.type)
    s = _expand_scale(scale, x.shape, axis, block).astype(out_type)
    z = _expand_scale(zp, x.shape, axis, block).astype(np.int64) if zp.dtype.kind in "iub" else \
        _expand_scale(zp, x.shape, axis, block).astype(out_type)
    if x.dtype.kind in "iub":
        return [((x.astype(np.int64) - z).astype(out_type) * s).astype(out_type)]
    return [((x.astype(out_type) - z) * s).astype(out_type)]  # float8 and friends


OP = OpSpec("DequantizeLinear", _eval)
