"""ONNX Runtime's fused attention operators, rewritten into the standard operators they mean before the
import (they own the KV cache, so the importer's roles -- the Concat that appends to a past input -- must
see the rewrite): GroupQueryAttention, the onnxruntime-genai model builder's attention.

GroupQueryAttention (com.microsoft), one decode step of batch 1 without padding:
    query [B, S, Hq*D] (or Q, K and V packed when key/value are absent), key/value [B, S, Hkv*D],
    past_key/past_value [B, Hkv, P, D] (BNSH), seqlens_k / total_sequence_length (from the mask),
    cos_cache/sin_cache [max_pos, rot/2] when do_rotary. Means:
        q, k = RotaryEmbedding(q, k at position P)        (do_rotary; interleaved = rotary_interleaved)
        present_k = Concat(past_k, k, axis=2)      present_v = Concat(past_v, v, axis=2)
        out = softmax(scale * q . repeat(present_k)^T [softcap]) . repeat(present_v)
with head h reading kv head h // (Hq / Hkv). seqlens_k is the new token's position when nothing is
padded, which is how the decoder drives it (the host's attention mask is all ones up to the position);
the mask subgraph then goes unused. A sliding window, an attention bias, head sinks and smooth softmax
are refused by name.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedError

EXPANDED = {("GroupQueryAttention", "com.microsoft")}  # (op type, domain) this module rewrites


def expand_fused_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each GroupQueryAttention node replaced by standard operators (a copy; the model is
    returned as is when it has none)."""
    if not any(n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft" for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    dims = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in g.input}
    nodes, inits = [], []
    for node in g.node:
        if node.op_type == "GroupQueryAttention" and node.domain == "com.microsoft":
            nodes += _gqa(node, dims, inits)
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def _gqa(node, dims: dict, inits: list) -> list:
    name = node.name or "GroupQueryAttention"
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    ins = list(node.input) + [""] * (12 - len(node.input))

    def refuse(what):
        raise UnsupportedError(f"GroupQueryAttention node {name!r}: {what} is not supported")

    if a.get("local_window_size", -1) not in (-1, None):
        refuse(f"a sliding window (local_window_size {a['local_window_size']})")
    if a.get("smooth_softmax", 0):
        refuse("smooth_softmax")
    if ins[10] or ins[11]:
        refuse("an attention bias or head sinks input")
    if a.get("qk_output", 0) or any(node.output[3:]):
        refuse("the QK output")
    hq, hkv = int(a["num_heads"]), int(a["kv_num_heads"])
    past_k, past_v = ins[3], ins[4]
    d = (dims.get(past_k) or [None] * 4)[3]
    if not past_k or not past_v or not d:
        refuse("a call without past_key / past_value graph inputs of a known head size")
    scale = float(a.get("scale", 0.0) or 0.0) or 1.0 / np.sqrt(d)
    softcap = float(a.get("softcap", 0.0) or 0.0)
    k = [0]
    nodes: list = []

    def const(value):
        k[0] += 1
        cname = f"{name}/c{k[0]}"
        inits.append(numpy_helper.from_array(np.asarray(value), cname))
        return cname

    def op(op_type, inputs, output=None, domain="", **attrs):
        k[0] += 1
        o = output or f"{name}/{op_type}_{k[0]}"
        nodes.append(helper.make_node(op_type, inputs, [o], name=f"{name}/{op_type}_{k[0]}", domain=domain, **attrs))
        return o

    i64 = lambda v: const(np.asarray(v, np.int64))  # noqa: E731
    q, key, val = ins[0], ins[1], ins[2]
    if not key:  # packed QKV
        for j, (part, width) in enumerate(((0, hq), (hq, hkv), (hq + hkv, hkv))):
            s = op("Slice", [q, i64([part * d]), i64([(part + width) * d]), i64([-1])])
            if j == 0:
                q_ = s
            elif j == 1:
                key = s
            else:
                val = s
        q = q_

    def heads(x, n):  # [B, S, n*D] -> [B, n, S, D]
        return op("Transpose", [op("Reshape", [x, i64([0, 0, n, d])])], perm=[0, 2, 1, 3])

    qh, kh, vh = heads(q, hq), heads(key, hkv), heads(val, hkv)
    if a.get("do_rotary", 0):
        if ins[9]:
            pos = ins[9]
        else:  # the new token's position: the past length (one token, no padding)
            pos = op("Reshape", [op("Gather", [op("Shape", [past_k]), i64(2)]), i64([1, 1])])
        rot = dict(interleaved=int(a.get("rotary_interleaved", 0)))
        qh = op("RotaryEmbedding", [qh, pos, ins[7], ins[8]], domain="com.microsoft", **rot)
        kh = op("RotaryEmbedding", [kh, pos, ins[7], ins[8]], domain="com.microsoft", **rot)
    pk = op("Concat", [past_k, kh], output=node.output[1] if len(node.output) > 1 and node.output[1] else None, axis=2)
    pv = op("Concat", [past_v, vh], output=node.output[2] if len(node.output) > 2 and node.output[2] else None, axis=2)
    rep = hq // hkv
    if rep > 1:  # head h reads kv head h // rep
        def repeat(x):
            e = op("Expand", [op("Unsqueeze", [x, i64([2])]), i64([1, 1, rep, 1, 1])])
            return op("Reshape", [e, i64([0, hq, -1, d])])
        pk_r, pv_r = repeat(pk), repeat(pv)
    else:
        pk_r, pv_r = pk, pv
    s = op("MatMul", [op("Mul", [qh, const(np.float32(scale))]), op("Transpose", [pk_r], perm=[0, 1, 3, 2])])
    if softcap:
        s = op("Mul", [op("Tanh", [op("Mul", [s, const(np.float32(1.0 / softcap))])]), const(np.float32(softcap))])
    o = op("MatMul", [op("Softmax", [s], axis=-1), pv_r])
    op("Reshape", [op("Transpose", [o], perm=[0, 2, 1, 3]), i64([0, 0, hq * d])], output=node.output[0])
    return nodes
