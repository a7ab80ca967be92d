"""Loading an ONNX file and finding the roles of its inputs and outputs by graph structure.

Every failure becomes a `ModelError` with one line naming the file and the problem.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError, UnsupportedError

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
INT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8,
             TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class UnknownOperators(Exception):
    """Default-domain operators that neither ONNX nor ONNX Runtime defines (onnx.checker refuses them)."""

    def __init__(self, nodes) -> None:
        super().__init__(f"{len(nodes)} unknown operator node(s)")
        self.nodes = nodes


def _check(model: onnx.ModelProto, p: Path, external: bool) -> None:
    """onnx.checker, tolerating two things ONNX Runtime's transformer optimizer writes and ONNX Runtime runs:
    its contrib operators in the default domain (SimplifiedLayerNormalization) and com.microsoft nodes
    without an opset import for that domain. Such a model is checked as if it declared them properly."""
    try:
        onnx.checker.check_model(str(p) if external else model)
        return
    except onnx.checker.ValidationError as exc:
        from .ops import REGISTRY

        msg = str(exc)
        contrib = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")
                   and n.op_type in REGISTRY and "com.microsoft" in REGISTRY[n.op_type].domains
                   and not onnx.defs.has(n.op_type)}
        wrong_domain = any(f"No Op registered for {op} " in msg for op in contrib)
        no_import = "No opset import for domain 'com.microsoft'" in msg
        if not (wrong_domain or no_import):
            unknown = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)
                       and n.op_type not in contrib]
            if unknown and "No Op registered for" in msg:  # operators nobody defines: name them all
                raise UnknownOperators(unknown) from None
            raise
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for n in copy.graph.node:
        if n.op_type in contrib and n.domain in ("", "ai.onnx"):
            n.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in copy.opset_import):
        copy.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if external:  # the checker reads the data files relative to the model's directory
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".onnx", dir=p.parent, delete=True) as f:
            f.write(copy.SerializeToString())
            f.flush()
            onnx.checker.check_model(f.name)
    else:
        onnx.checker.check_model(copy)


def load_model(path, allow_unknown_ops: bool = False, timing_only: bool = False) -> onnx.ModelProto:
    """onnx.load (external data stays on disk until `to_numpy` reads it, relative to the model's directory);
    onnx.checker; local functions inlined. Operators nobody defines are an UnsupportedError naming them
    all, unless allow_unknown_ops (`lpu check` reports them itself). With `timing_only` the external data
    files may be absent (their tensors are shape-only: `shape_only`)."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if not p.is_file():
        raise ModelError(f"{p}: not a file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{p}: not an ONNX model ({_first_line(exc)})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{p}: not an ONNX model (no graph nodes)")
    try:
        external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer) or any(
            a.t.data_location == TensorProto.EXTERNAL for n in model.graph.node for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR)
        # with external data the checker resolves the data files relative to the model: give it the path
        if external and timing_only and _missing_external(model, p):
            _check(_without_external_data(model), p, False)  # the data files are not needed (nor there)
        else:
            _check(model, p, external)
    except UnknownOperators as exc:
        if not allow_unknown_ops:
            from .ops import describe_unsupported, unsupported_nodes

            raise UnsupportedError(describe_unsupported(unsupported_nodes(
                [Node(n, i) for i, n in enumerate(exc.nodes)]))) from None
    except Exception as exc:
        raise ModelError(f"{p}: the model fails onnx.checker ({_first_line(exc)})") from None
    # External data is read tensor by tensor by to_numpy (numpy_helper.to_array with the model's directory as
    # base_dir): one read per initializer, no copy through the protobuf. Check the files exist now.
    attr_tensors = [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in list(model.graph.initializer) + attr_tensors:
        if t.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            f = (p.parent / loc) if loc else None
            if (f is None or not f.is_file()) and not timing_only:
                raise ModelError(f"{p}: initializer {t.name!r} has its data in {loc!r}, which is not a file next to "
                                 "the model")
    if len(model.functions):
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            raise ModelError(f"{p}: cannot inline its local functions ({_first_line(exc)})") from None
    return model


def _external_file(t: TensorProto, base: Path) -> Path | None:
    loc = {e.key: e.value for e in t.external_data}.get("location", "")
    return (base / loc) if loc else None


def _missing_external(model: onnx.ModelProto, p: Path) -> bool:
    ts = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute
                                          if a.type == onnx.AttributeProto.TENSOR]
    return any(t.data_location == TensorProto.EXTERNAL and not (_external_file(t, p.parent) or p.parent).is_file()
               for t in ts)


def _without_external_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose external initialisers are shape-only value infos, for onnx.checker (which would look for
    their files): the graph's structure is what is checked."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = copy.graph
    keep = [t for t in g.initializer if t.data_location != TensorProto.EXTERNAL]
    gone = [t for t in g.initializer if t.data_location == TensorProto.EXTERNAL]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in gone)
    return copy


# A timing-only compile loads no initialiser bigger than this (elements): weight matrices, embedding
# tables, big norm gains. Smaller ones (shape tensors, axes, rotary inv_freq, fill values, small biases)
# are still read when their data is there: the import folds and checks those by value.
SHAPE_ONLY_ELEMENTS = 4096


def shape_only(t: TensorProto, base_dir: str = ""):
    """The timing-only stand-in of an initialiser: a Shaped of its shape and IR element type when it is big or
    its external data file is absent, else None (then it is read as usual)."""
    from ..ir import Shaped

    n = int(np.prod(list(t.dims), dtype=np.int64)) if len(t.dims) else 1
    missing = t.data_location == TensorProto.EXTERNAL and not (
        (_external_file(t, Path(base_dir or ".")) or Path(base_dir or ".")).is_file())
    if n <= SHAPE_ONLY_ELEMENTS and not missing:
        return None
    if t.data_type in FLOAT_TYPES or t.data_type in _FLOAT_TYPES:
        dt = np.float32
    elif t.data_type == TensorProto.BOOL:
        dt = np.bool_
    else:
        dt = np.int64
    return Shaped(tuple(t.dims), dt, t.name)


def to_numpy(t: TensorProto, base_dir: str = "") -> np.ndarray:
    """One conversion per initializer (external data read from base_dir); floats become float32, integers int64."""
    try:
        a = numpy_helper.to_array(t, base_dir)
    except Exception as exc:
        raise ModelError(f"initializer {t.name!r}: cannot read its data ({_first_line(exc)})") from None
    if a.dtype.kind == "f" or t.data_type in _FLOAT_TYPES:
        if a.dtype != np.float32:
            a = a.astype(np.float32)
    elif (a.dtype.kind in "iu" and a.dtype != np.int64) or t.data_type in _INT_TYPES:
        a = a.astype(np.int64)  # 4-bit values (numpy_helper gives ml_dtypes int4/uint4) too
    return a


_FLOAT_TYPES = {getattr(TensorProto, n) for n in ("BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                                   "FLOAT8E5M2FNUZ", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_INT_TYPES = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "INT2", "UINT2") if hasattr(TensorProto, n)}


class Node:
    """An ONNX node with its attributes decoded once."""

    __slots__ = ("op_type", "domain", "name", "inputs", "outputs", "attrs", "index")

    def __init__(self, proto: onnx.NodeProto, index: int, base_dir: str = "") -> None:
        self.op_type = proto.op_type
        self.domain = proto.domain
        self.name = proto.name or f"{proto.op_type}#{index}"
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.index = index
        attrs = {}
        for a in proto.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, TensorProto):
                v = to_numpy(v, base_dir)
            elif isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode("utf-8", "replace") for s in v]
            attrs[a.name] = v
        self.attrs = attrs

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""

    def __repr__(self) -> str:
        return f"{self.op_type} node {self.name!r}"


# ---------------------------------------------------------------------- roles
@dataclass
class PastInput:
    name: str
    heads: int
    head_dim: int
    dtype: int
    concat: str  # output of the Concat that appends the new entry (a graph output)
    layer_hint: int | None
    kind_hint: str | None  # 'k' | 'v' | None


@dataclass
class Roles:
    input_ids: str
    input_ids_rank: int
    position_ids: str | None
    attention_mask: str | None
    attention_mask_dtype: int | None
    cache_position: str | None
    past: list[PastInput]
    logits: str
    presents: list[str] = field(default_factory=list)


def _dims(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]


def _elem(vi) -> int:
    return vi.type.tensor_type.elem_type


def _layer_hint(name: str) -> int | None:
    nums = re.findall(r"\d+", name)
    return int(nums[-1]) if nums else None


def _kind_hint(name: str) -> str | None:
    low = name.lower()
    k, v = low.rfind("key"), low.rfind("value")  # the last word wins: past_key_values.0.value -> v
    if k >= 0 or v >= 0:
        return "k" if k > v else "v"
    m = re.search(r"(^|[._])(k|v)($|[._\d])", low)
    return m.group(2) if m else None


_PASS_THROUGH = {"Reshape", "Unsqueeze", "Squeeze", "Cast", "Identity", "Flatten"}


def find_roles(model: onnx.ModelProto, path: str, require_past: bool = True) -> Roles:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    out_set = set(outputs)
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def describe() -> str:
        return f"inputs {[i.name for i in inputs]}, outputs {outputs}"

    # -- past KV: rank-4 float inputs concatenated (with the new entry) into a graph output
    past: list[PastInput] = []
    for vi in inputs:
        dims = _dims(vi)
        if _elem(vi) not in FLOAT_TYPES or len(dims) != 4:
            continue
        cats = [n for n in consumers.get(vi.name, []) if n.op_type == "Concat" and n.output[0] in out_set]
        if not cats:
            continue
        heads, head_dim = dims[1], dims[3]
        if not (isinstance(heads, int) and isinstance(head_dim, int)) or heads <= 0 or head_dim <= 0:
            raise ModelError(f"{path}: past KV input {vi.name!r} has shape {dims}: the kv heads and head size "
                             "(dims 1 and 3 of [batch, kv_heads, past, head_dim]) must be static")
        past.append(PastInput(vi.name, heads, head_dim, _elem(vi), cats[0].output[0], _layer_hint(vi.name),
                              _kind_hint(vi.name)))
    if not past and require_past:
        raise ModelError(f"{path}: no past KV inputs (rank-4 float inputs [batch, kv_heads, past, head_dim] that a "
                         f"Concat appends the new key/value to, giving a present output); {describe()}")
    past_names = {p.name for p in past}
    presents = [p.concat for p in past]

    # -- integer inputs: input_ids (gathers rows of a float table), position_ids, attention_mask
    rest = [vi for vi in inputs if vi.name not in past_names]

    def gathers_table(name: str) -> int:
        """Rows of the float initializer table that `name` indexes (through reshapes/casts), else 0."""
        frontier, seen = [name], set()
        while frontier:
            t = frontier.pop()
            if t in seen:
                continue
            seen.add(t)
            for n in consumers.get(t, []):
                if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == t and n.input[0] in inits:
                    init = inits[n.input[0]]
                    if init.data_type in FLOAT_TYPES and len(init.dims) == 2:
                        return int(init.dims[0])
                if n.op_type in _PASS_THROUGH and n.input[0] == t:
                    frontier.append(n.output[0])
        return 0

    ints = [vi for vi in rest if _elem(vi) in INT_TYPES]
    input_ids = next((vi for vi in ints if vi.name == "input_ids"), None)
    if input_ids is None:
        cands = [vi for vi in ints if gathers_table(vi.name) and not re.search(r"pos|mask", vi.name, re.I)]
        named = [vi for vi in cands if re.search(r"ids|token", vi.name, re.I)]
        rows = sorted((gathers_table(vi.name), k) for k, vi in enumerate(cands))
        if len(named) == 1:
            input_ids = named[0]
        elif len(cands) == 1:
            input_ids = cands[0]
        elif len(rows) > 1 and rows[-1][0] > rows[-2][0]:  # token ids index the biggest table (the vocabulary)
            input_ids = cands[rows[-1][1]]
    if input_ids is None:
        raise ModelError(f"{path}: no input_ids input (an integer [batch, sequence] input that indexes the token "
                         f"embedding table); {describe()}")
    ids_dims = _dims(input_ids)
    if len(ids_dims) not in (1, 2):
        raise ModelError(f"{path}: input_ids {input_ids.name!r} has shape {ids_dims}, expected [batch, sequence]")

    position_ids = attention_mask = cache_position = None
    mask_dtype = None
    unknown = []
    for vi in rest:
        if vi is input_ids:
            continue
        dims = _dims(vi)
        name = vi.name
        low = name.lower()
        if "cache_position" in low and len(dims) == 1:
            cache_position = name
        elif "mask" in low and len(dims) == 2:
            attention_mask, mask_dtype = name, _elem(vi)
        elif ("position" in low or low.startswith("pos")) and len(dims) == 2 and _elem(vi) in INT_TYPES:
            position_ids = name
        elif len(dims) == 2 and len(ids_dims) == 2 and _elem(vi) in INT_TYPES | FLOAT_TYPES | {TensorProto.BOOL}:
            # structure: [batch, sequence] like input_ids -> positions; [batch, past + sequence] -> mask
            if dims[1] == ids_dims[1] and _elem(vi) in INT_TYPES and position_ids is None:
                position_ids = name
            elif dims[1] != ids_dims[1] and attention_mask is None:
                attention_mask, mask_dtype = name, _elem(vi)
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise ModelError(f"{path}: unsupported decoder inputs {unknown} (known roles: input_ids, position_ids, "
                         f"attention_mask, cache_position, past KV); {describe()}")

    # -- logits: 'logits', else the only float output that is not a present KV
    logits = "logits" if "logits" in out_set else None
    if logits is None:
        present_set = set(presents)
        others = [o for o in g.output if o.name not in present_set and _elem(o) in FLOAT_TYPES]
        if len(others) == 1:
            logits = others[0].name
    if logits is None:
        raise ModelError(f"{path}: no logits output (an output named 'logits', or the only float output that is not "
                         f"a present KV); {describe()}")
    return Roles(input_ids.name, len(ids_dims), position_ids, attention_mask, mask_dtype, cache_position, past,
                 logits, presents)


def onnx_dtype_to_numpy(t: int):
    if t in FLOAT_TYPES:
        return np.float32
    if t == TensorProto.BOOL:
        return np.bool_
    return np.int64
