"""Provenance: which operation of the model each instruction belongs to.

Lowering tags every instruction with the IR equation it lowers (the import-level operation: decomposition
marks each primitive it makes with the operation it came from, e.g. a layernorm's reduce and rsqrt), and
emission turns those tags into the program's operation table (header ``ops``: one entry per operation with its
ONNX value name, IR primitive, kind and layer) and one int32 per stream word (the program file's provenance
section; -1 for NOPs). The kinds are the report's: linear, attention, norm, activation, embedding, other,
and, from what the instruction does rather than what it computes, all-reduce, pipeline hop and barrier.

The kind of an operation comes from its primitive where that says it (linear, attention's QK and PV, softmax,
the KV append, the norms) and otherwise from the module path of its ONNX name (``.../self_attn/...``,
``.../mlp/act/...``, ``.../input_layernorm/...``): exporters write the module path into every node's name,
which is how the fused primitives' decomposed forms (a dynamo export's layer norm, GPT-2's tanh GELU) are
recognised. An operation no rule knows is ``other`` (residual adds, reshapes, casts, rotary tables' lookups
outside attention modules)."""
from __future__ import annotations

import re

import numpy as np

KINDS = ("linear", "attention", "norm", "activation", "embedding", "other", "all-reduce", "pipeline hop", "barrier")

_BY_PRIM = {"linear": "linear", "expert_linear": "linear", "attn_qk": "attention", "attn_pv": "attention",
            "softmax": "attention", "kv_append": "attention", "layernorm": "norm", "rmsnorm": "norm"}
_ACT_FN = {"gelu", "silu", "relu", "tanh", "sigmoid", "erf", "swish", "gelu_tanh"}
_NAME_RULES = (  # first match wins; applied to the lower-cased ONNX name
    ("norm", re.compile(r"norm|(^|[/._])ln_?\d*([/._]|$)")),
    ("activation", re.compile(r"(^|[/._])(act|activation|act_fn|gelu|silu|swish|relu)([/._]|$)|_act([/._]|$)")),
    ("attention", re.compile(r"attn|attention|rotary|rope")),
    ("embedding", re.compile(r"embed|(^|[/._])(wte|wpe)([/._]|$)")),
)
LAYER = re.compile(r"(?:^|[./_])(?:layers|layer|h|blocks|block|present|past_key_values)[./_](\d+)(?:[./_]|$)")
_SYNTHETIC = re.compile(r"[a-z_]+(\.\d+)+")  # a name the compiler made (lin.3, scores.7), not the exporter


def layer_of(name: str) -> int | None:
    m = LAYER.search(name)
    return int(m.group(1)) if m else None


def kind_of(prim: str, fn: str | None, name: str) -> str:
    """The kind of an operation: by primitive, then by the module path in its ONNX name."""
    k = _BY_PRIM.get(prim)
    if k is not None:
        return k
    low = name.lower()
    for kind, rx in _NAME_RULES:
        if rx.search(low):
            return kind
    if prim == "unary" and fn in _ACT_FN:
        return "activation"
    if prim == "gather":  # a table read by token or position
        return "embedding"
    return "other"


def origin_of(e) -> tuple[str, str, str | None]:
    """(primitive, output name, function) of the import-level operation an equation lowers."""
    o = e.params.get("origin")
    if o is not None:
        return o
    return e.prim, e.outputs[0], e.params.get("op") if isinstance(e.params.get("op"), str) else None


def annotate(g) -> list[tuple]:
    """Per equation of graph `g`: (primitive, name, function, layer, kind) of the operation it lowers. An
    operation the compiler named itself (the attention its frontend builds, a linear split in parts) takes its
    layer from the operations feeding it, and their kind "attention" when it has none of its own."""
    layer: dict[str, int | None] = {}
    kind: dict[str, str] = {}
    out = []
    for e in g.eqns:
        prim, name, fn = origin_of(e)
        k = kind_of(prim, fn, name)
        lay = layer_of(name)
        if _SYNTHETIC.fullmatch(name):
            if lay is None:
                lays = [layer[i] for i in e.inputs if layer.get(i) is not None]
                lay = max(lays) if lays else None
            if k == "other" and any(kind.get(i) == "attention" for i in e.inputs):
                k = "attention"
        for o in e.outputs:
            layer[o], kind[o] = lay, k
        out.append((prim, name, fn, lay, k))
    return out


def _tag_kind(tag: str, op: str) -> str | None:
    if op in ("SYNC", "DESKEW"):
        return "barrier"
    if tag.startswith("ar "):
        return "all-reduce"
    if tag.startswith(("pp ", "fwd ")):
        return "pipeline hop"
    return None


class Table:
    """The operation table emission builds: entry -> id, and per stream word its entry id."""

    def __init__(self, origins: tuple) -> None:
        self.origins = origins  # lowering's op id -> (prim, name, fn, layer, kind) (annotate)
        self.ids: dict[tuple, int] = {}
        self.entries: list[dict] = []

    def _id(self, kind: str, prim: str, name: str, layer: int | None) -> int:
        key = (kind, prim, name, layer)
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.entries)
            self.entries.append({"name": name, "prim": prim, "kind": kind, "layer": layer})
        return i

    def of_node(self, node) -> int:
        if node.op >= 0:
            prim, name, _fn, layer, base = self.origins[node.op]
        else:
            prim, name, layer, base = "", node.tag or node.instr.op.lower(), None, "other"
        return self._id(_tag_kind(node.tag or "", node.instr.op) or base, prim, name, layer)

    @staticmethod
    def array(ids: list[int]) -> np.ndarray:
        return np.asarray(ids, dtype=np.int32)
