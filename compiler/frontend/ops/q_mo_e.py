"""QMoE (com.microsoft): MoE (mo_e.py) with quantised expert weights, as ONNX Runtime defines it (checked
against its CPU kernel): fc1/fc2 weights uint8 [E, N, K / (8 / bits)] (4-bit: two per byte, the low nibble
first), symmetric (zero point 8 for 4 bits, 128 for 8), scales [E, N] (one per row) or [E, N, K / block_size];
    W[e, n, k] = (q[e, n, k] - zero point) * scale[e, n, k // block_size]
The weights are dequantised at compile time (reported: the int8 weight path does not exist yet) and the
block is expanded as MoE is. ONNX Runtime computes 8-bit blockwise experts with its quantised-activation
kernels, so on those it differs from the exact dequantised product by about 1e-3 relative."""
import numpy as np

from ..values import K
from ._base import Expansion, OpSpec
from ._fused import expanded_only
from .mo_e import expand_experts


def dequantise(ctx, q, scales, bits: int, block: int, what: str) -> np.ndarray:
    from ...ir import Shaped

    if not isinstance(q, K) or not isinstance(scales, K):
        raise ctx.unsupported(f"{what}: quantised weights and scales must be constants")
    if isinstance(q.value, Shaped) or isinstance(scales.value, Shaped):  # timing-only: the float weights' shape
        s = q.value.shape
        if len(s) != 3:
            raise ctx.unsupported(f"{what}: quantised weights must be uint8 [E, N, packed K], got {list(s)}")
        return Shaped((s[0], s[1], s[2] * (2 if bits == 4 else 1)), np.float32, getattr(q.value, "name", ""))
    qa = np.asarray(q.value)
    if qa.dtype.kind in "iu" and qa.size and 0 <= qa.min() and qa.max() <= 255:
        qa = qa.astype(np.uint8)  # (constants are held as int64)
    if qa.dtype != np.uint8 or qa.ndim != 3:
        raise ctx.unsupported(f"{what}: quantised weights must be uint8 [E, N, packed K], got {qa.dtype} {list(qa.shape)}")
    if bits == 4:
        v = np.empty(qa.shape[:2] + (qa.shape[2] * 2,), np.float32)
        v[..., 0::2] = qa & 0x0F
        v[..., 1::2] = qa >> 4
        v -= 8.0
    else:
        v = qa.astype(np.float32) - 128.0
    sc = np.asarray(scales.value, np.float32)
    kdim = v.shape[2]
    if sc.ndim == 2 or (sc.ndim == 3 and sc.shape[2] == 1):
        sc = sc.reshape(sc.shape[0], sc.shape[1], 1)
        bsize = kdim
    elif sc.ndim == 3 and block > 0 and sc.shape[2] == -(-kdim // block):
        bsize = block
    else:
        raise ctx.unsupported(f"{what}: scales {list(sc.shape)} for weights [E, {v.shape[1]}, {kdim}] and block_size "
                              f"{block}")
    if sc.shape[:2] != v.shape[:2]:
        raise ctx.unsupported(f"{what}: scales {list(sc.shape)} do not match weights {list(v.shape)}")
    return v * np.repeat(sc, bsize, axis=2)[..., :kdim]


def _expand(ctx, node, vals):
    if node.input(8) or node.input(9) or node.input(10):
        raise ctx.unsupported("fc3 expert weights (a separate gate matrix) are not supported")
    if any(node.inputs[11:]):
        raise ctx.unsupported("expert zero points are not supported (symmetric quantisation only)")
    bits = int(node.attr("expert_weight_bits", 4))
    if bits not in (4, 8):
        raise ctx.unsupported(f"expert_weight_bits {bits} (supported: 4, 8)")
    block = int(node.attr("block_size", 0) or 0)
    E = Expansion(ctx, node)
    w1 = dequantise(ctx, vals[2], vals[3], bits, block, "fc1")
    w2 = dequantise(ctx, vals[5], vals[6], bits, block, "fc2")
    ctx.note_dequantised(f"QMoE {bits}-bit")
    n1, n2 = E.const(w1), E.const(w2)
    return expand_experts(ctx, node, E, vals[0], (n1, ctx.values[n1]), node.input(4), (n2, ctx.values[n2]),
                          node.input(7))


OP = OpSpec("QMoE", expanded_only, domains=("com.microsoft",), expand=_expand)
