"""MatMulNBits (com.microsoft, the onnxruntime-genai builder's and `matmul_nbits_quantizer`'s form):
A [..., K] times a weight stored as `bits`-bit integers in blocks of `block_size` along K, with a scale
(and a zero point, default 2^(bits-1)) per block of each of the N columns:

    B        uint8 [N, n_blocks, block_size * bits / 8]   values packed low bits first
    scales   float [N * n_blocks] or [N, n_blocks]
    zero_points  uint8 packed like B's values [N, ceil(n_blocks * bits / 8)], or float like scales
    W[k, n] = (q[n, k] - zero_point[n, k // block_size]) * scale[n, k // block_size]

Dequantised at compile time into a MatMul with the float weight (plus the bias input if present)."""
import numpy as np

from ..sym import has_sym
from ..values import K
from ._base import Expansion, OpSpec
from ._fused import expanded_only


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Little-endian bit fields of each row of uint8 `packed`: the first `count` values per row."""
    per = 8 // bits
    b = packed.astype(np.uint8).reshape(packed.shape[0], -1)
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    vals = (b[:, :, None] >> shifts[None, None, :]) & np.uint8((1 << bits) - 1)
    return vals.reshape(b.shape[0], -1)[:, :count]


def dequantise(node, B, scales, zps):
    from ...ir import Shaped

    k, n = int(node.attr("K")), int(node.attr("N"))
    bits, bs = int(node.attr("bits", 4)), int(node.attr("block_size"))
    if bits not in (2, 4, 8):
        raise ValueError(f"{bits}-bit values (2, 4 and 8 are supported)")
    if any(isinstance(a, Shaped) for a in (B, scales, zps)):  # a timing-only compile: the float weight's shape
        return Shaped((k, n), np.float32, next(a.name for a in (B, scales, zps) if isinstance(a, Shaped)))
    nb = -(-k // bs)
    q = unpack(np.asarray(B).reshape(n, -1), bits, nb * bs).astype(np.float32)  # [N, n_blocks * bs]
    sc = np.asarray(scales).reshape(n, nb)
    if zps is None:
        z = np.full((n, nb), float(1 << (bits - 1)), np.float32)
    elif np.asarray(zps).dtype.kind in "iu":  # packed like B (the loader reads uint8 as int64)
        z = unpack(np.asarray(zps).reshape(n, -1), bits, nb).astype(np.float32)
    else:
        z = np.asarray(zps, dtype=np.float32).reshape(n, nb)
    ct = sc.dtype.type if sc.dtype.kind == "f" else np.float32  # ONNX Runtime multiplies in the scale's type
    w = (q.reshape(n, nb, bs) - z[:, :, None]).astype(ct) * sc[:, :, None].astype(ct)
    return np.ascontiguousarray(w.reshape(n, nb * bs)[:, :k].T.astype(np.float32))  # [K, N]


def _expand(ctx, node, vals):
    vals = list(vals) + [None] * (6 - len(vals))  # zero points, g_idx and bias are optional
    consts = [v for v in vals[1:4] if v is not None]
    if not all(isinstance(v, K) and not has_sym(v.value) for v in consts):
        raise ctx.unsupported("MatMulNBits with runtime weights, scales or zero points")
    if len(node.inputs) > 4 and node.input(4):
        g = vals[4]
        k, bs = int(node.attr("K")), int(node.attr("block_size"))
        if not (isinstance(g, K) and np.array_equal(np.asarray(g.value).reshape(-1), np.arange(k) // bs)):
            raise ctx.unsupported("MatMulNBits with a reordering g_idx (act-order) is not supported")
    try:
        w = dequantise(node, vals[1].value, vals[2].value, vals[3].value if vals[3] is not None else None)
    except ValueError as exc:
        raise ctx.unsupported(f"MatMulNBits with {exc}") from None
    E = Expansion(ctx, node)
    bias = node.input(5) if len(node.inputs) > 5 else ""
    y = E.op("MatMul", [node.input(0), E.const(w)], None if bias else [node.outputs[0]])[0]
    if bias:
        E.op("Add", [y, bias], [node.outputs[0]])
    ctx.note_dequantised(f"MatMulNBits {int(node.attr('bits', 4))}-bit")
    return E.nodes


OP = OpSpec("MatMulNBits", expanded_only, domains=("com.microsoft",), expand=_expand)
