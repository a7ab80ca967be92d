"""RotaryEmbedding, both forms: ONNX opset 23 (X, cos_cache, sin_cache[, position_ids]) and ONNX Runtime's
com.microsoft contrib op (input, position_ids, cos_cache, sin_cache). Same meaning (the ONNX specification's
reference code): rotate the first `rotary_embedding_dim` (default: all) lanes of every head by the angles
cos_cache[position] / sin_cache[position], as two halves or (interleaved=1) as even/odd pairs; the rest
pass through. X is [batch, heads, seq, head_size] or [batch, seq, heads * head_size] (num_heads given).

Expanded into Gather (the tables by position, tabulated by the importer), Slice, Mul, Sub/Add, Concat and
Reshape."""
import numpy as np

from ..sym import Sym
from ._base import Expansion, OpSpec
from ._fused import expanded_only


def _expand(ctx, node, vals):
    ms = node.domain == "com.microsoft"
    if ms:
        x, pos, cos, sin = (node.input(i) for i in range(4))
        if float(node.attr("scale", 1.0)) != 1.0:
            raise ctx.unsupported(f"RotaryEmbedding with scale {node.attr('scale')} (only 1.0 is supported)")
        if node.attr("is_packed_batching", 0):
            raise ctx.unsupported("RotaryEmbedding with is_packed_batching=1 is not supported")
    else:
        x, cos, sin, pos = (node.input(i) for i in range(4))
    xs = ctx.shape(vals[0])
    cos_i = 2 if ms else 1
    half_tab = ctx.shape(vals[cos_i])[-1]
    rot = int(node.attr("rotary_embedding_dim", 0) or 0)
    nh = int(node.attr("num_heads", 0) or 0)
    if len(xs) == 4:
        H = xs[3]
    elif len(xs) == 3:
        if nh:
            H = xs[2] // nh
        elif rot == 0 and not isinstance(half_tab, Sym):
            H = 2 * half_tab  # full rotation: the table's width is half a head
        else:
            raise ctx.unsupported("RotaryEmbedding of a 3-D input needs num_heads")
    else:
        raise ctx.unsupported(f"RotaryEmbedding of a rank-{len(xs)} input (expected 3 or 4)")
    if isinstance(H, Sym):
        raise ctx.unsupported("RotaryEmbedding whose head size depends on the past length")
    rot = rot or H
    half = rot // 2
    if rot % 2 or rot > H:
        raise ctx.unsupported(f"rotary_embedding_dim {rot} with head size {H}")
    E = Expansion(ctx, node)
    c = lambda v: E.const(np.asarray(v, dtype=np.int64))  # noqa: E731
    if pos:
        if len(ctx.shape(vals[1 if ms else 3])) == 1:  # an offset: position = offset + index (one token here)
            pos = E.one("Reshape", [pos, c([1, 1])])
        cos, sin = E.one("Gather", [cos, pos]), E.one("Gather", [sin, pos])  # [batch, seq, half]
    if len(xs) == 4:
        x4, head_axis = x, 1  # [batch, heads, seq, H]
    else:
        x4, head_axis = E.one("Reshape", [x, c([0, 0, -1, H])]), 2  # [batch, seq, heads, H]
    cos4, sin4 = (E.one("Unsqueeze", [t, c([head_axis])]) for t in (cos, sin))
    sl = lambda t, a, b: E.one("Slice", [t, c([a]), c([b]), c([-1])])  # noqa: E731
    if node.attr("interleaved", 0):
        pairs = E.one("Reshape", [sl(x4, 0, rot), c([0, 0, 0, half, 2])])
        even, odd = sl(pairs, 0, 1), sl(pairs, 1, 2)
        cos5, sin5 = (E.one("Unsqueeze", [t, c([-1])]) for t in (cos4, sin4))
        re = E.one("Sub", [E.one("Mul", [even, cos5]), E.one("Mul", [odd, sin5])])
        ro = E.one("Add", [E.one("Mul", [odd, cos5]), E.one("Mul", [even, sin5])])
        parts = [E.one("Reshape", [E.one("Concat", [re, ro], axis=-1), c([0, 0, 0, rot])])]
    else:
        x1, x2 = sl(x4, 0, half), sl(x4, half, rot)
        parts = [E.one("Sub", [E.one("Mul", [x1, cos4]), E.one("Mul", [x2, sin4])]),
                 E.one("Add", [E.one("Mul", [x2, cos4]), E.one("Mul", [x1, sin4])])]
    if rot < H:
        parts.append(sl(x4, rot, H))
    if len(xs) == 4:
        E.op("Concat", parts, [node.outputs[0]], axis=-1)
    else:
        E.op("Reshape", [E.one("Concat", parts, axis=-1), c([0, 0, -1])], [node.outputs[0]])
    return E.nodes


OP = OpSpec("RotaryEmbedding", expanded_only, domains=("com.microsoft",), expand=_expand)
