"""Fused attention operators, rewritten into the standard operators they mean before the import (they may
own the KV cache, so the importer's roles -- the Concat that appends to a past input -- must see the
rewrite): ONNX Runtime's GroupQueryAttention (the onnxruntime-genai model builder's attention) and ONNX's
Attention (opset 23; the dynamo exporter's at opset 23).

Attention (opset 23): Q, K, V as [B, H, S, D] (or [B, S, H*D] with q_num_heads / kv_num_heads), an
optional attn_mask (bool: True attends; float: added), optional past_key / past_value [B, Hkv, P, D]:
    present_k = Concat(past_key, K, axis=2) (if a past is given), likewise V
    Y = softmax(scale * Q . repeat(present_k)^T [softcap] [+ mask]) . repeat(present_v)
scale defaults to 1/sqrt(D). is_causal and the qk_matmul_output are refused (a one-token decode step with
a cache has its mask explicit).

GroupQueryAttention (com.microsoft), one decode step of batch 1 without padding:
    query [B, S, Hq*D] (or Q, K and V packed when key/value are absent), key/value [B, S, Hkv*D],
    past_key/past_value [B, Hkv, P, D] (BNSH), seqlens_k / total_sequence_length (from the mask),
    cos_cache/sin_cache [max_pos, rot/2] when do_rotary. Means:
        q, k = RotaryEmbedding(q, k at position P)        (do_rotary; interleaved = rotary_interleaved)
        present_k = Concat(past_k, k, axis=2)      present_v = Concat(past_v, v, axis=2)
        out = softmax(scale * q . repeat(present_k)^T [softcap]) . repeat(present_v)
with head h reading kv head h // (Hq / Hkv). seqlens_k is the new token's position when nothing is
padded, which is how the decoder drives it (the host's attention mask is all ones up to the position);
the mask subgraph then goes unused. Head sinks (gpt-oss): a learned logit per head that joins the
softmax's denominator,
        probs = exp(s - m) / (sum exp(s - m) + exp(sink_h - m)),   m = max s.
A sliding window (local_window_size W) hides nothing within the first W positions; beyond them it is not
implemented yet, so the import is limited to W positions (the model's context limit says so). An
attention bias and smooth softmax are refused by name.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedError

EXPANDED = {("GroupQueryAttention", "com.microsoft"), ("Attention", "")}  # (op type, domain) rewritten here


def expand_fused_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each GroupQueryAttention node replaced by standard operators (a copy; the model is
    returned as is when it has none)."""
    if not any((n.op_type, n.domain if n.domain != "ai.onnx" else "") in EXPANDED for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    dims = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in g.input}
    nodes, inits = [], []
    types = _elem_types(out) if any(n.op_type == "Attention" for n in g.node) else {}
    for node in g.node:
        if node.op_type == "GroupQueryAttention" and node.domain == "com.microsoft":
            nodes += _gqa(node, dims, inits)
        elif node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            nodes += _attention(node, types, inits)
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def attention_window(model: onnx.ModelProto) -> int | None:
    """The smallest sliding window (local_window_size) of the model's GroupQueryAttention nodes, or None."""
    ws = [helper.get_attribute_value(a) for n in model.graph.node
          if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft"
          for a in n.attribute if a.name == "local_window_size"]
    ws = [int(w) for w in ws if w and w > 0]
    return min(ws) if ws else None


def _elem_types(model: onnx.ModelProto) -> dict:
    """Tensor name -> ONNX element type, from the graph's declarations and onnx's shape inference."""
    out = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        out[t.name] = t.data_type
    return out


def _gqa(node, dims: dict, inits: list) -> list:
    name = node.name or "GroupQueryAttention"
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    ins = list(node.input) + [""] * (12 - len(node.input))

    def refuse(what):
        raise UnsupportedError(f"GroupQueryAttention node {name!r}: {what} is not supported")

    if a.get("smooth_softmax", 0):
        refuse("smooth_softmax")
    if ins[10]:
        refuse("an attention bias input")
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
    if ins[11]:  # head sinks: one more logit per head in the softmax's denominator, attending to nothing
        m = op("ReduceMax", [s, i64([-1])], keepdims=1)
        ex = op("Exp", [op("Sub", [s, m])])
        sink = op("Exp", [op("Sub", [op("Reshape", [ins[11], i64([1, hq, 1, 1])]), m])])
        probs = op("Div", [ex, op("Add", [op("ReduceSum", [ex, i64([-1])], keepdims=1), sink])])
    else:
        probs = op("Softmax", [s], axis=-1)
    o = op("MatMul", [probs, pv_r])
    op("Reshape", [op("Transpose", [o], perm=[0, 2, 1, 3]), i64([0, 0, hq * d])], output=node.output[0])
    return nodes


class _Builder:
    def __init__(self, name: str, inits: list) -> None:
        self.name, self.inits, self.nodes, self.k = name, inits, [], 0

    def const(self, value):
        self.k += 1
        cname = f"{self.name}/c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), cname))
        return cname

    def i64(self, v):
        return self.const(np.asarray(v, np.int64))

    def op(self, op_type, inputs, output=None, domain="", **attrs):
        self.k += 1
        o = output or f"{self.name}/{op_type}_{self.k}"
        self.nodes.append(helper.make_node(op_type, inputs, [o], name=f"{self.name}/{op_type}_{self.k}",
                                           domain=domain, **attrs))
        return o


def _attention(node, types: dict, inits: list) -> list:
    name = node.name or "Attention"
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    ins = list(node.input) + [""] * (6 - len(node.input))
    outs = list(node.output) + [""] * (4 - len(node.output))

    def refuse(what):
        raise UnsupportedError(f"Attention node {name!r}: {what} is not supported")

    if a.get("is_causal", 0):
        refuse("is_causal=1 (give the mask explicitly)")
    if outs[3]:
        refuse("the qk_matmul_output")
    B = _Builder(name, inits)
    q, k, v, mask, past_k, past_v = ins
    hq, hkv = a.get("q_num_heads"), a.get("kv_num_heads")
    if hq:  # 3-D inputs [B, S, H*D]
        def heads(x, n):
            return B.op("Transpose", [B.op("Reshape", [x, B.i64([0, 0, int(n), -1])])], perm=[0, 2, 1, 3])
        q, k, v = heads(q, hq), heads(k, hkv or hq), heads(v, hkv or hq)
    if past_k:
        k = B.op("Concat", [past_k, k], output=outs[1] or None, axis=2)
        v = B.op("Concat", [past_v, v], output=outs[2] or None, axis=2)
    elif outs[1] or outs[2]:
        if outs[1]:
            B.op("Identity", [k], output=outs[1])
        if outs[2]:
            B.op("Identity", [v], output=outs[2])
    if hq and hkv and int(hq) != int(hkv):
        rep = int(hq) // int(hkv)

        def repeat(x):
            e = B.op("Expand", [B.op("Unsqueeze", [x, B.i64([2])]), B.i64([1, 1, rep, 1, 1])])
            shp = B.op("Shape", [e])  # [B, Hkv, rep, T, D] -> [B, Hq, T, D]
            tgt = B.op("Concat", [B.op("Slice", [shp, B.i64([0]), B.i64([1])]), B.i64([int(hq), -1]),
                                  B.op("Slice", [shp, B.i64([4]), B.i64([5])])], axis=0)
            return B.op("Reshape", [e, tgt])
        k, v = repeat(k), repeat(v)
    scale = a.get("scale")
    if scale is None or scale == 0.0:  # 1/sqrt(D), D = the last dim of Q
        d = B.op("Cast", [B.op("Gather", [B.op("Shape", [q]), B.i64(-1)])], to=onnx.TensorProto.FLOAT)
        scale_t = B.op("Reciprocal", [B.op("Sqrt", [d])])
    else:
        scale_t = B.const(np.float32(scale))
    s = B.op("MatMul", [B.op("Mul", [q, scale_t]), B.op("Transpose", [k], perm=[0, 1, 3, 2])])
    cap = float(a.get("softcap", 0.0) or 0.0)
    if cap:
        s = B.op("Mul", [B.op("Tanh", [B.op("Mul", [s, B.const(np.float32(1.0 / cap))])]), B.const(np.float32(cap))])
    if mask:  # bool: True attends; float: added to the scores (the importer then checks the mask path)
        kind = types.get(mask)
        if kind == onnx.TensorProto.BOOL:
            s = B.op("Where", [mask, s, B.const(np.float32(-np.inf))])
        elif kind in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            s = B.op("Add", [s, B.op("Cast", [mask], to=onnx.TensorProto.FLOAT)])
        else:
            refuse("an attn_mask whose element type is unknown")
    y = B.op("MatMul", [B.op("Softmax", [s], axis=-1), v])
    if hq:
        B.op("Reshape", [B.op("Transpose", [y], perm=[0, 2, 1, 3]), B.i64([0, 0, -1])], output=outs[0])
    else:
        B.op("Identity", [y], output=outs[0])
    return B.nodes
