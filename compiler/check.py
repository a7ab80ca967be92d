"""`lpu check`: what a model is and whether the compiler takes it, without compiling it.

The report: family and exporter/form, every ONNX operator with its count and whether the frontend
supports it, the fused patterns recognised (the IR's composite prims and ONNX Runtime's fused operators
expanded), weights and their bytes, the default --max-context (the model's own limit when it has
one), and per hardware description and weight format the smallest chip count whose SRAM holds the
weights and the KV cache. That last figure is a lower bound (activations, alignment and per-chip copies
are not counted); `lpu compile` says exactly.
"""
from __future__ import annotations

import math
import os
from collections import Counter

from .errors import CompileError

# bytes per weight / cache element of each weight format the compiler emits
WEIGHT_FORMATS = {"fp16": 2, "fp32": 4}
FUSED_PRIMS = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "softmax": "softmax", "attn_qk": "attention",
               "mask_fill": "attention mask", "kv_append": "KV-cache append",
               "expert_linear": "expert matmul (weights gathered by the router's choice)"}


def check_model(path, hardware: list, default_context: int | None = None) -> dict:
    """The report for the ONNX model at `path`, for each Hardware in `hardware` (see the module doc)."""
    from .driver import DEFAULT_MAX_CONTEXT
    from .frontend import canonicalise, import_graph_within, load_model
    from .frontend.importer import Importer
    from .frontend.ops import describe_unsupported, spec_of, unsupported_nodes

    ctx = default_context or DEFAULT_MAX_CONTEXT
    model = load_model(path, allow_unknown_ops=True)
    base = os.path.dirname(os.path.abspath(path))
    counts = Counter((n.op_type, n.domain if n.domain not in ("", "ai.onnx") else "") for n in model.graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report: dict = {"model": os.path.basename(os.fspath(path)), "opset": opset, "nodes": len(model.graph.node)}
    imp = Importer(model, ctx, source=os.fspath(path), base_dir=base)
    needed = imp.needed_nodes()
    missing = unsupported_nodes(needed)
    fused = Counter(n.op_type for n in needed if (s := spec_of(n)) is not None and s.expand is not None)
    report["operators"] = [
        {"op": op, "domain": dom or "ai.onnx", "count": c,
         "supported": (op, dom) not in missing and _known(op, dom)}
        for (op, dom), c in sorted(counts.items())]
    report["unsupported"] = [{"op": op, "domain": dom or "ai.onnx", "count": len(names), "nodes": names}
                             for (op, dom), names in sorted(missing.items())]
    report["form"] = _form(model, counts)
    if missing:
        report.update(supported=False, error=describe_unsupported(missing))
        return report
    try:
        graph, facts, limit = import_graph_within(model, ctx, source=os.fspath(path), base_dir=base)
        graph = canonicalise(graph, facts)
    except CompileError as exc:
        report.update(supported=False, error=" ".join(str(exc).split()))
        return report
    meta = graph.meta
    report.update(supported=True, family=meta.get("family"), exporter=meta.get("exporter"))
    report["shape"] = {k: meta.get(k) for k in ("num_layers", "hidden_size", "heads", "kv_heads", "head_dim",
                                                "vocab_size")}
    prims = Counter(e.prim for e in graph.eqns)
    tables = {e.inputs[1]: graph.consts[e.inputs[1]].shape[0] for e in graph.eqns if e.prim == "expert_linear"}
    if tables:  # mixture-of-experts: experts per layer and experts a token runs
        ks = [e.params["k"] for e in graph.eqns if e.prim == "topk" and e.params["part"] == "indices"]
        report["experts"] = {"experts": max(tables.values()), "k": max(ks) if ks else None,
                             "layers": len(ks)}
    report["fused"] = {**{FUSED_PRIMS[p]: prims[p] for p in FUSED_PRIMS if prims[p]},
                       **{f"{op} (expanded)": c for op, c in sorted(fused.items())}}
    params = sum(int(graph.consts[c].size) for c in _weights(graph))
    report["weights"] = params  # elements the program stores: weights, embeddings, position tables
    report["weight_bytes"] = {f: params * b for f, b in WEIGHT_FORMATS.items()}
    mc = limit if limit is not None else ctx
    report["default_max_context"] = mc
    report["position_limit"] = limit
    if limit is not None:
        from .frontend.fused_attention import attention_window

        report["position_limit_reason"] = ("its sliding-window attention (beyond the window not implemented yet)"
                                           if attention_window(model) == limit else "a table it reads by position ends there")
    kv_elems = sum(s.heads * s.head_dim * mc for s in graph.states.values())  # each layer's K and V are states
    report["kv_cache_bytes"] = {f: kv_elems * b for f, b in WEIGHT_FORMATS.items()}
    fits = {}
    for hw in hardware:
        per_chip = hw.sram_bytes_per_chip
        row = {}
        for f, b in WEIGHT_FORMATS.items():
            need = params * b + kv_elems * b
            n = max(1, math.ceil(need / per_chip))
            row[f] = n if n <= hw.max_chips else None
        fits[hw.name] = {"chips_at_least": row, "sram_bytes_per_chip": per_chip, "max_chips": hw.max_chips}
    report["fits"] = fits
    return report


def _known(op: str, dom: str) -> bool:
    from .frontend.fused_attention import EXPANDED
    from .frontend.ops import REGISTRY

    if (op, dom) in EXPANDED:
        return True
    spec = REGISTRY.get(op)
    return spec is not None and (dom == "" or dom in spec.domains)


def _weights(graph) -> set:
    """The constants the decode step stores: linear weights and biases, embeddings, norm scales, and the
    position tables the importer made for the context (a learned wpe, rotary cos/sin rows)."""
    out = set()
    for e in graph.eqns:
        if e.prim == "linear":
            out.update(i for i in e.inputs[1:] if i in graph.consts)
        elif e.prim == "gather" and e.inputs[0] in graph.consts:
            out.add(e.inputs[0])
        else:
            out.update(i for i in e.inputs if i in graph.consts and graph.consts[i].size > 1)
    return out


def _form(model, counts: Counter) -> str:
    from .frontend.meta import guess_exporter

    exporter = guess_exporter(model)
    marks = []
    ms = sorted({op for (op, dom) in counts if dom == "com.microsoft"} |
                {op for (op, dom) in counts if dom == "" and op == "SimplifiedLayerNormalization"})
    if ms:
        marks.append("ONNX Runtime fused operators (" + ", ".join(ms) + ")")
    std = sorted({op for (op, dom) in counts
                  if dom == "" and op in ("Attention", "RMSNormalization", "RotaryEmbedding")})
    if std:
        marks.append("ONNX fused operators (" + ", ".join(std) + ")")
    if any(op in ("DequantizeLinear", "QuantizeLinear", "MatMulNBits") for op, _ in counts):
        marks.append("quantised")
    return f"{exporter} export" + (" + " + " + ".join(marks) if marks else "")


__all__ = ["WEIGHT_FORMATS", "check_model"]
