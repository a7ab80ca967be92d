"""graph.meta: what the importer learned about the model."""
from __future__ import annotations

import re

from ..ir import Graph


def guess_family(names: list[str]) -> str:
    text = "\n".join(names)
    if "gpt_neox" in text:
        return "gpt_neox"
    if re.search(r"(^|\.)model\.decoder\.layers\.", text, re.M):
        return "opt"
    if "shared_expert" in text:
        return "qwen2_moe"
    if re.search(r"experts\.w1\b|block_sparse_moe", text):
        return "mixtral"
    if re.search(r"attn\.sinks|moe\.experts|experts\.gate_up_proj", text):
        return "gpt_oss"  # attention sinks, expert tables (the builder's and the written-out form's names)
    if "qkv_proj" in text and "gate_up_proj" in text:
        return "phi3"
    if "self_attention.query_key_value" in text or "word_embeddings" in text or \
            re.search(r"(^|\.)transformer\.h\.\d+\.input_layernorm", text, re.M):
        return "falcon"
    if re.search(r"(^|\.)transformer\.(wte|h\.\d+\.attn\.c_attn)", text, re.M):
        return "gpt2"
    if re.search(r"(^|\.)model\.layers\.\d+\.", text, re.M):
        if re.search(r"q_proj\.bias", text):
            return "qwen2"
        if "pre_feedforward_layernorm" in text:
            return "gemma"
        return "llama"
    return "unknown"


def guess_exporter(model) -> str:
    """dynamo: node names node_*, values val_*; Optimum (TorchScript-based torch.onnx.export): /module/path names;
    the onnxruntime-genai builder: GroupQueryAttention and its /model/attn_mask_reformat/ subgraph."""
    names = [n.name for n in model.graph.node]
    if not names:
        return "unknown"
    if any(n.op_type == "GroupQueryAttention" for n in model.graph.node) or \
            any(n.startswith("/model/attn_mask_reformat/") for n in names):
        return "onnxruntime-genai"
    dynamo = sum(n.startswith("node_") for n in names)
    scripted = sum(n.startswith("/") for n in names)
    if dynamo > len(names) // 4:
        return "dynamo"
    if scripted > len(names) // 4:
        return "optimum"
    return "unknown"


def _table_of_ids(g: Graph):
    """The embedding table: the gather whose index is (a reshape of) input_ids."""
    origin = {}
    for e in g.eqns:
        if e.prim in ("reshape", "cast") and (e.inputs[0] == "input_ids" or e.inputs[0] in origin):
            origin[e.outputs[0]] = True
        if e.prim == "gather" and (e.inputs[1] == "input_ids" or e.inputs[1] in origin):
            return e.inputs[0]
    return None


def importer_facts(imp) -> dict:
    """What the importer learned of the model itself (names, exporter, opset, roles of the inputs; the
    quantised weights it folded to float, when there are any)."""
    facts = {
        "family": guess_family(sorted(imp.init_protos)),
        "exporter": guess_exporter(imp.model),
        "max_context": imp.max_ctx,
        "opset": imp.opset,
        "source": imp.source,
        "inputs": {"input_ids": imp.roles.input_ids, "position_ids": imp.roles.position_ids,
                   "attention_mask": imp.roles.attention_mask, "past": [p.name for p in imp.roles.past]},
    }
    if imp.dequantised:  # absent otherwise: a float model's program header is what it was
        facts["dequantised"] = ", ".join(f"{k} x{v}" for k, v in sorted(imp.dequantised.items()))
    return facts


def graph_facts(g: Graph) -> dict:
    """The model's shape, read off the (canonical) graph: layers, vocabulary, widths, heads."""
    states = list(g.states.values())
    heads = sorted({g.shape(e.inputs[0])[1] for e in g.eqns if e.prim == "attn_qk"})
    table = _table_of_ids(g)
    logits = g.shape(g.outputs["logits"])
    return {
        "num_layers": len({s.layer for s in states}),
        "vocab_size": int(logits[-1]) if logits else None,
        "hidden_size": int(g.shape(table)[-1]) if table is not None else None,
        "heads": heads[0] if len(heads) == 1 else heads,
        "kv_heads": states[0].heads if states else None,
        "head_dim": states[0].head_dim if states else None,
    }
