"""ONNX frontend acceptance: exported decoders -> IR, decoded with the IR's numpy semantics (compiler.ireval)
and compared with ONNX Runtime (lpu.reference.OrtDecoder), the independent reference. No torch needed.

Also: structure of the imported graphs, determinism, attention masks with zeros, clear errors for bad
files / non-decoders / unsupported operators, and the attention-mask verification (sliding windows and
ALiBi-like biases are refused) on small hand-built decoders.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ContextLimitError, ModelError, UnsupportedError
from compiler.frontend import import_model, import_onnx
from compiler.ir import T
from compiler.ireval import IrDecoder, eval_eqn
from lpu.reference import OrtDecoder, make_session

REPO = Path(__file__).resolve().parents[2]
FIXTURES = sorted((REPO / "tests" / "fixtures").glob("*.onnx"))
DEFAULT_MODEL = REPO / "lpu" / "data" / "default.onnx"
MODELS = FIXTURES + ([DEFAULT_MODEL] if DEFAULT_MODEL.exists() else [])
MAX_CONTEXT = 32
PROMPT = [1, 2, 3]
N_TOKENS = 12

if not MODELS:
    pytestmark = pytest.mark.skip(reason="no ONNX fixtures yet in tests/fixtures")

_GRAPHS: dict = {}
_ORT: dict = {}


def imported(path: Path):
    if path not in _GRAPHS:
        _GRAPHS[path] = import_onnx(path, MAX_CONTEXT)
    return _GRAPHS[path]


def ort_greedy(path: Path):
    if path not in _ORT:
        _ORT[path] = OrtDecoder(path, threads=1).greedy(PROMPT, N_TOKENS)
    return _ORT[path]


def ids(paths):
    return [p.stem for p in paths]


# ---------------------------------------------------------------------- THE acceptance check
@pytest.mark.parametrize("path", MODELS, ids=ids(MODELS))
def test_greedy_decode_matches_onnxruntime(path):
    g = imported(path)
    tokens, logits = IrDecoder(g, MAX_CONTEXT).greedy(PROMPT, N_TOKENS)
    ref_tokens, ref_logits = ort_greedy(path)
    assert tokens == ref_tokens
    assert logits.shape == ref_logits.shape
    scale = max(1.0, float(np.abs(ref_logits).max()))
    assert float(np.abs(logits - ref_logits).max()) <= 1e-4 * scale


# ---------------------------------------------------------------------- structure of the IR
ALLOWED_ON_T = {"kv_append", "attn_qk", "attn_pv", "mask_fill", "softmax", "unary", "binary", "where", "cast", "reshape",
                "reduce"}  # reduce: a sum or max over T alone (head sinks, a hand-written softmax)


def uses_gqa(path) -> bool:
    """GroupQueryAttention reads the mask only as lengths (the builder's forms, and the MoE written out)."""
    return any(nd.op_type == "GroupQueryAttention" for nd in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.mark.parametrize("path", MODELS, ids=ids(MODELS))
def test_imported_graph_structure(path):
    g = imported(path)
    g.verify()
    ref = OrtDecoder(path, threads=1)
    layers = ref.num_layers
    assert g.meta["num_layers"] == layers
    assert g.meta["kv_heads"] == ref.num_kv_heads and g.meta["head_dim"] == ref.head_dim
    assert g.meta["vocab_size"] == ref.vocab_size
    assert g.meta["max_context"] == MAX_CONTEXT
    for exporter in ("optimum", "dynamo"):
        if exporter in path.stem:
            assert g.meta["exporter"] == exporter
    family = "qwen2" if path == DEFAULT_MODEL else path.stem.split("_")[0]  # the default: trained_qwen2
    if family == "trained":
        family = path.stem.split("_")[1]
    if family in ("gpt2", "llama") or path == DEFAULT_MODEL:
        assert g.meta["family"] == family
    # GroupQueryAttention reads the mask only as lengths: one unpadded decode step needs none of it
    has_mask = ref.input_names["attention_mask"] is not None and not uses_gqa(path)
    assert g.inputs == ("input_ids", "position_ids") + (("attention_mask",) if has_mask else ())
    assert g.shape(g.outputs["logits"]) == (1, 1, ref.vocab_size)
    # states: one key and one value cache per layer, each written by exactly one kv_append
    assert sorted(g.states) == sorted(f"kv.{i}.{k}" for i in range(layers) for k in "kv")
    appends = [e.params["state"] for e in g.eqns if e.prim == "kv_append"]
    assert sorted(appends) == sorted(g.states)
    prims = [e.prim for e in g.eqns]
    assert prims.count("attn_qk") == prims.count("attn_pv") == layers
    assert prims.count("mask_fill") == (layers if has_mask else 0)
    for e in g.eqns:
        if e.prim in ("attn_qk", "attn_pv"):
            assert e.params["group"] == g.meta["heads"] // g.meta["kv_heads"]
        touches_t = any(T in g.shape(i) for i in e.inputs if i in g.vars) or T in g.vars[e.outputs[0]].shape
        if touches_t:
            assert e.prim in ALLOWED_ON_T, e
        if e.prim == "softmax" and T in g.vars[e.outputs[0]].shape:
            assert e.params["axis"] == len(g.vars[e.outputs[0]].shape) - 1
    # position-dependent tensors became tables of max_context rows gathered by position_ids
    tables = [e.inputs[0] for e in g.eqns if e.prim == "gather" and e.inputs[1] == "position_ids"]
    assert tables and all(g.consts[t].shape[0] == MAX_CONTEXT for t in tables)
    # every weight is float32, integer constants int64
    for c in g.consts.values():
        assert c.dtype in (np.float32, np.int64, np.bool_)


def test_deterministic_import():
    path = MODELS[0]
    a, b = import_onnx(path, MAX_CONTEXT), import_onnx(path, MAX_CONTEXT)
    assert str(a) == str(b)
    assert list(a.consts) == list(b.consts)
    for k in a.consts:
        assert np.array_equal(a.consts[k], b.consts[k])
    assert [repr(e) for e in a.eqns] == [repr(e) for e in b.eqns]


def test_external_data_fixture_equals_inline():
    ext = REPO / "tests" / "fixtures" / "llama_optimum_extdata.onnx"
    inline = REPO / "tests" / "fixtures" / "llama_optimum.onnx"
    if not (ext.exists() and inline.exists()):
        pytest.skip("external-data fixture not present")
    a, b = imported(ext), imported(inline)
    assert str(a) == str(b)
    for k in a.consts:
        assert np.array_equal(a.consts[k], b.consts[k])


# ---------------------------------------------------------------------- masks with zeros
def _ir_run(g, tokens, masks):
    """Decode `tokens` one per step with explicit attention masks (masks[i] has i + 1 entries)."""
    states = {n: np.zeros((s.heads, MAX_CONTEXT, s.head_dim), np.float32) for n, s in g.states.items()}
    rows = []
    for p, (tok, mask) in enumerate(zip(tokens, masks)):
        env = dict(g.consts)
        env["input_ids"] = np.array([tok], np.int64)
        env["position_ids"] = np.array([p], np.int64)
        env["attention_mask"] = np.asarray(mask, np.float32)
        for e in g.eqns:
            env[e.outputs[0]] = np.asarray(eval_eqn(e, [env[i] for i in e.inputs], p + 1, states, p, g))
        rows.append(np.asarray(env[g.outputs["logits"]], np.float32).reshape(-1))
    return np.stack(rows)


def _ort_run(path, tokens, masks):
    dec = OrtDecoder(path, threads=1)
    past = dec.empty_past(0)
    names = [dec.output_names["logits"]] + [n for pair in dec.output_names["present"] for n in pair]
    rows = []
    for p, (tok, mask) in enumerate(zip(tokens, masks)):
        feed = dec.make_feed(tok, p, past)
        feed[dec.input_names["attention_mask"]] = np.asarray(mask, np.int64)[None, :]
        logits, *past = dec.session.run(names, feed)
        rows.append(logits.reshape(-1))
    return np.stack(rows)


# the minimal exports take no attention_mask; the genai builder's GroupQueryAttention models are compiled for
# unpadded decoding (the mask gives only lengths there; fused_attention.py)
MASKED = [p for p in MODELS if "minimal" not in p.stem and not uses_gqa(p)]


@pytest.mark.parametrize("path", MASKED, ids=ids(MASKED))
def test_attention_mask_with_zeros_matches_onnxruntime(path):
    g = imported(path)
    tokens = [5, 9, 2, 7, 11, 4]
    hidden = {0, 2}  # e.g. left padding and a masked-out token
    masks = [[0.0 if t in hidden and t < p else 1.0 for t in range(p + 1)] for p in range(len(tokens))]
    got, want = _ir_run(g, tokens, masks), _ort_run(path, tokens, masks)
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


# ---------------------------------------------------------------------- hand-built decoders
def tiny_decoder(path: Path, *, heads=4, kv_heads=2, head_dim=8, vocab=40, window=None, alibi=False,
                 mask_style="where", extra=None, positions="input", with_mask=True, gqa="expand", seed=0) -> Path:
    """A one-layer decoder with the Optimum I/O layout: learned positions, GQA repeat via Unsqueeze/Expand/Reshape,
    K transposed, the mask as an additive bias; optionally a sliding window, an ALiBi bias, or an extra op on
    the scores. positions="implicit": no position_ids input, the position is the past length (Range(P, P + 1));
    with_mask=False: no attention_mask input, only a causal bias. gqa: how the kv heads are repeated ("expand":
    Unsqueeze/Expand/Reshape, "gather": Gather of kv head h // group, "tile": Tile, i.e. kv head h % kv_heads)."""
    rng = np.random.default_rng(seed)
    c_dim, group = heads * head_dim, heads // kv_heads
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def w(name, shape, scale=0.3):
        inits[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
        return name

    def c(name, value, dtype=None):
        inits[name] = np.asarray(value, dtype=dtype)
        return name

    def node(op, ins, outs, **kw):
        outs = outs if isinstance(outs, list) else [outs]
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **kw))
        return outs[0]

    w("emb", [vocab, c_dim], 1.0)
    w("pemb", [64, c_dim], 0.5)
    node("Gather", ["emb", "input_ids"], "tok")
    if positions == "input":
        node("Gather", ["pemb", "position_ids"], "pos")
    else:
        node("Shape", ["past_key_values.0.key"], "kshape")
        node("Gather", ["kshape", c("i2p", 2, np.int64)], "plen")
        node("Add", ["plen", c("o64p", 1, np.int64)], "plen1")
        node("Range", ["plen", "plen1", "o64p"], "cache_pos")
        node("Unsqueeze", ["cache_pos", c("ax0p", [0], np.int64)], "pids")
        node("Gather", ["pemb", "pids"], "pos")
    x = node("Add", ["tok", "pos"], "x")
    proj = {}
    for nm, h in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
        node("MatMul", [x, w(f"w{nm}", [c_dim, h * head_dim])], f"{nm}0")
        node("Reshape", [f"{nm}0", c(f"sh{nm}", [1, 1, h, head_dim], np.int64)], f"{nm}1")
        proj[nm] = node("Transpose", [f"{nm}1"], f"{nm}", perm=[0, 2, 1, 3])
    node("Concat", ["past_key_values.0.key", "k"], "present.0.key", axis=2)
    node("Concat", ["past_key_values.0.value", "v"], "present.0.value", axis=2)
    node("Shape", ["present.0.key"], "pshape")
    node("Gather", ["pshape", c("i2", 2, np.int64)], "tlen")
    node("Unsqueeze", ["tlen", c("ax0", [0], np.int64)], "tlen1")
    node("Concat", [c("pre", [1, kv_heads, group], np.int64), "tlen1", c("dd", [head_dim], np.int64)], "eshape", axis=0)
    for kind in ("key", "value"):
        if gqa == "expand":
            node("Unsqueeze", [f"present.0.{kind}", c("ax2", [2], np.int64)], f"{kind}5")
            node("Expand", [f"{kind}5", "eshape"], f"{kind}e")
            node("Reshape", [f"{kind}e", c("shx", [1, heads, -1, head_dim], np.int64)], f"{kind}x")
        elif gqa == "gather":
            node("Gather", [f"present.0.{kind}", c("rep", np.repeat(np.arange(kv_heads), group), np.int64)], f"{kind}x",
                 axis=1)
        else:
            node("Tile", [f"present.0.{kind}", c("reps", [1, group, 1, 1], np.int64)], f"{kind}x")
    node("Transpose", ["keyx"], "kt", perm=[0, 1, 3, 2])
    node("MatMul", ["q", "kt"], "s0")
    s = node("Mul", ["s0", c("scale", 1 / np.sqrt(head_dim), np.float32)], "s1")
    # the mask: [1, T] -> additive bias [1, 1, 1, T]
    if not with_mask:  # causal only: t <= P, always true for the one new token
        node("Range", [c("z64c", 0, np.int64), "tlen", c("o64c", 1, np.int64)], "trc")
        node("Sub", ["tlen", "o64c"], "pc")
        node("LessOrEqual", ["trc", "pc"], "causal")
        node("Where", ["causal", c("zfc", 0.0, np.float32), c("ninfc", -np.inf, np.float32)], "bias0")
        node("Unsqueeze", ["bias0", "ax0"], "bias")
    elif mask_style == "where":
        node("Equal", ["attention_mask", c("zero_i", 0, np.int64)], "hid")
        node("Where", ["hid", c("ninf", -np.inf, np.float32), c("zf", 0.0, np.float32)], "bias")
    else:  # (1 - mask) * -1e9
        node("Cast", ["attention_mask"], "mf", to=TensorProto.FLOAT)
        node("Sub", [c("onef", 1.0, np.float32), "mf"], "inv")
        node("Mul", ["inv", c("big", -1e9, np.float32)], "bias")
    node("Unsqueeze", ["bias", c("ax12", [1, 2], np.int64)], "bias4")
    s = node("Add", [s, "bias4"], "s2")
    if window is not None or alibi:
        node("Range", [c("z64", 0, np.int64), "tlen", c("o64", 1, np.int64)], "trange")
        node("Sub", ["tlen", c("o64b", 1, np.int64)], "pnow")
    if window is not None:
        node("Sub", ["pnow", c("win", window, np.int64)], "lo")
        node("Greater", ["trange", "lo"], "inwin")
        node("Where", ["inwin", "zf", "ninf"], "wbias")
        s = node("Add", [s, "wbias"], "s3")
    if alibi:
        node("Sub", ["trange", "pnow"], "rel")
        node("Cast", ["rel"], "relf", to=TensorProto.FLOAT)
        node("Mul", ["relf", c("slopes", (0.5 ** np.arange(1, heads + 1)).reshape(1, heads, 1, 1), np.float32)], "ab")
        s = node("Add", [s, "ab"], "s4")
    if extra in ("reducemax", "reducemean"):  # a reduction over the KV length (max: allowed; mean: not)
        node("ReduceMax" if extra == "reducemax" else "ReduceMean", [s, c("axm", [-1], np.int64)], "smax", keepdims=1)
        s = node("Sub", [s, "smax"], "s5")
    node("Softmax", [s], "pr", axis=-1)
    node("MatMul", ["pr", "valuex"], "o")
    node("Transpose", ["o"], "o1", perm=[0, 2, 1, 3])
    node("Reshape", ["o1", c("shc", [1, 1, c_dim], np.int64)], "o2")
    node("MatMul", ["o2", w("wo", [c_dim, c_dim])], "o3")
    node("Add", ["o3", x], "h")
    node("MatMul", ["h", w("wout", [c_dim, vocab])], "logits")

    i64, f32 = TensorProto.INT64, TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_ids", i64, [1, "s"])]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", i64, [1, "t"]))
    if positions == "input":
        inputs.append(helper.make_tensor_value_info("position_ids", i64, [1, "s"]))
    inputs += [helper.make_tensor_value_info("past_key_values.0.key", f32, [1, kv_heads, "p", head_dim]),
               helper.make_tensor_value_info("past_key_values.0.value", f32, [1, kv_heads, "p", head_dim])]
    outputs = [helper.make_tensor_value_info("logits", f32, [1, "s", vocab]),
               helper.make_tensor_value_info("present.0.key", f32, [1, kv_heads, "t", head_dim]),
               helper.make_tensor_value_info("present.0.value", f32, [1, kv_heads, "t", head_dim])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("mask_style,gqa", [("where", "expand"), ("bias", "expand"), ("where", "gather")])
def test_tiny_gqa_decoder_matches_onnxruntime(tmp_path, mask_style, gqa):
    path = tiny_decoder(tmp_path / "tiny.onnx", mask_style=mask_style, gqa=gqa)
    g = import_onnx(path, 24)
    assert [e.params["group"] for e in g.eqns if e.prim == "attn_qk"] == [2]
    fills = [e.params["fill"] for e in g.eqns if e.prim == "mask_fill"]
    assert fills == ([-np.inf] if mask_style == "where" else [pytest.approx(-1e9, rel=1e-3)])
    tokens, logits = IrDecoder(g, 24).greedy([1, 2, 3], 10)
    ref_tokens, ref_logits = OrtDecoder(path, threads=1).greedy([1, 2, 3], 10)
    assert tokens == ref_tokens
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_logits).max()))


@pytest.mark.parametrize("positions,with_mask", [("implicit", True), ("input", False), ("implicit", False)])
def test_tiny_decoder_without_position_ids_or_mask(tmp_path, positions, with_mask):
    path = tiny_decoder(tmp_path / "tiny.onnx", positions=positions, with_mask=with_mask)
    g = import_onnx(path, 24)
    assert ("attention_mask" in g.inputs) == with_mask
    assert "position_ids" in g.inputs  # the learned position table is gathered by position either way
    assert sum(e.prim == "mask_fill" for e in g.eqns) == int(with_mask)
    tokens, logits = IrDecoder(g, 24).greedy([1, 2, 3], 10)
    ref_tokens, ref_logits = OrtDecoder(path, threads=1).greedy([1, 2, 3], 10)
    assert tokens == ref_tokens
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_logits).max()))


def test_fp16_initializers_are_upcast(tmp_path):
    """Weights stored as float16 and Cast to float in the graph (a common export): consts become float32."""
    src = tiny_decoder(tmp_path / "t.onnx")
    m = onnx.load(src)
    casts = []
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 2:
            a = numpy_helper.to_array(t).astype(np.float16)
            name = t.name
            t.CopyFrom(numpy_helper.from_array(a, name + "_fp16"))
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT, name=f"cast_{name}"))
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    path = tmp_path / "fp16.onnx"
    onnx.save(m, path)
    g = import_onnx(path, 16)
    assert all(c.dtype != np.float16 for c in g.consts.values())
    assert "cast" not in [e.prim for e in g.eqns]
    tokens, logits = IrDecoder(g, 16).greedy([1, 2, 3], 8)
    ref_tokens, ref_logits = OrtDecoder(path, threads=1).greedy([1, 2, 3], 8)
    assert tokens == ref_tokens
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_logits).max()))


def test_roles_are_found_by_structure(tmp_path):
    """Unusual input/output names: the roles come from the graph structure, the IR is the same."""
    src = tiny_decoder(tmp_path / "t.onnx", vocab=100)  # token ids index the biggest table
    rename = {"input_ids": "x_in", "attention_mask": "am", "position_ids": "where_am_i",
              "past_key_values.0.key": "cache_a", "past_key_values.0.value": "cache_b",
              "present.0.key": "new_a", "present.0.value": "new_b", "logits": "out0"}

    def do(m):
        for vi in list(m.graph.input) + list(m.graph.output):
            vi.name = rename.get(vi.name, vi.name)
        for nd in m.graph.node:
            nd.input[:] = [rename.get(i, i) for i in nd.input]
            nd.output[:] = [rename.get(o, o) for o in nd.output]

    g = import_onnx(_edit(src, tmp_path / "renamed.onnx", do), 16)
    ref = import_onnx(src, 16)
    assert g.meta["inputs"] == {"input_ids": "x_in", "position_ids": "where_am_i", "attention_mask": "am",
                                "past": ["cache_a", "cache_b"]}
    assert sorted(g.states) == ["kv.0.k", "kv.0.v"]
    a, b = IrDecoder(g, 16).greedy([1, 2, 3], 6), IrDecoder(ref, 16).greedy([1, 2, 3], 6)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_tiled_kv_heads_are_refused(tmp_path):
    """Tile repeats the kv heads as h % kv_heads, which is not the IR's attention (h // group)."""
    path = tiny_decoder(tmp_path / "tile.onnx", gqa="tile")
    with pytest.raises(UnsupportedError, match=r"Tile node .*KV cache"):
        import_onnx(path, 16)


def test_sliding_window_is_refused(tmp_path):
    path = tiny_decoder(tmp_path / "window.onnx", window=4)
    with pytest.raises(UnsupportedError, match="sliding window"):
        import_onnx(path, 16)


def _decodes_like_onnxruntime(path):
    """The imported IR's greedy tokens and logits are ONNX Runtime's."""
    g = import_onnx(path, 16)
    tokens, logits = IrDecoder(g, 16).greedy([1, 2, 3], 8)
    ref_tokens, ref_logits = OrtDecoder(path, threads=1).greedy([1, 2, 3], 8)
    assert tokens == ref_tokens
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_logits).max()))


def test_sliding_window_wider_than_the_context_is_accepted(tmp_path):
    path = tiny_decoder(tmp_path / "window.onnx", window=64)
    _decodes_like_onnxruntime(path)


def test_alibi_bias_is_refused(tmp_path):
    path = tiny_decoder(tmp_path / "alibi.onnx", alibi=True)
    with pytest.raises(UnsupportedError, match="ALiBi"):
        import_onnx(path, 16)


def test_max_over_kv_length_is_translated(tmp_path):
    """A hand-written stable softmax (scores minus their max over the cache) means what ONNX Runtime says."""
    path = tiny_decoder(tmp_path / "rmax.onnx", extra="reducemax")
    _decodes_like_onnxruntime(path)


def test_mean_over_kv_length_is_refused(tmp_path):
    path = tiny_decoder(tmp_path / "rmean.onnx", extra="reducemean")
    with pytest.raises(UnsupportedError, match=r"ReduceMean node .*KV length"):
        import_onnx(path, 16)


# ---------------------------------------------------------------------- errors
def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        import_onnx(tmp_path / "nope.onnx", 16)


def test_garbage_file_is_a_model_error(tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"this is not a protobuf \x00\xff\x12\x34" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        import_onnx(p, 16)


def test_truncated_file_is_a_model_error(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")
    p = tmp_path / "truncated.onnx"
    p.write_bytes(src.read_bytes()[:500])
    with pytest.raises(ModelError, match="truncated.onnx"):
        import_onnx(p, 16)


def _edit(path: Path, out: Path, fn) -> Path:
    m = onnx.load(path)
    fn(m)
    onnx.save(m, out)
    return out


def test_missing_input_ids_is_a_model_error(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")

    def drop_ids(m):  # the token comes from a constant: the graph has no input_ids input any more
        ids = next(i for i in m.graph.input if i.name == "input_ids")
        m.graph.input.remove(ids)
        m.graph.node.insert(0, helper.make_node("Constant", [], ["input_ids"],
                                                value=numpy_helper.from_array(np.array([[1]], np.int64))))

    with pytest.raises(ModelError, match="no input_ids"):
        import_onnx(_edit(src, tmp_path / "noids.onnx", drop_ids), 16)


def test_missing_past_kv_is_a_model_error(tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 4])
    emb = numpy_helper.from_array(np.ones((10, 4), np.float32), "emb")
    g = helper.make_graph([helper.make_node("Gather", ["emb", "input_ids"], ["logits"])], "g", [ids], [logits], [emb])
    p = tmp_path / "nokv.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), p)
    with pytest.raises(ModelError, match="no past KV inputs"):
        import_onnx(p, 16)


def test_missing_logits_is_a_model_error(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")

    def two_float_outputs(m):
        m.graph.output[0].name = "scores_out"
        for n in m.graph.node:
            n.output[:] = ["scores_out" if o == "logits" else o for o in n.output]
        m.graph.node.append(helper.make_node("Identity", ["scores_out"], ["other"]))
        m.graph.output.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, "s", 40]))

    with pytest.raises(ModelError, match="no logits output"):
        import_onnx(_edit(src, tmp_path / "nologits.onnx", two_float_outputs), 16)


def test_unsupported_operator_names_the_operator(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")

    def add_hardmax(m):
        for n in m.graph.node:
            if n.output[0] == "logits":
                n.output[0] = "pre_logits"
        m.graph.node.append(helper.make_node("Hardmax", ["pre_logits"], ["logits"], name="my_hardmax", axis=-1))

    with pytest.raises(UnsupportedError, match=r"Hardmax.*'my_hardmax'.*supported operators: .*MatMul"):
        import_onnx(_edit(src, tmp_path / "hardmax.onnx", add_hardmax), 16)


def test_constant_only_operator_on_the_main_path_is_refused(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")

    def add_cumsum(m):
        for n in m.graph.node:
            if n.output[0] == "logits":
                n.output[0] = "pre_logits"
        m.graph.initializer.append(numpy_helper.from_array(np.array(2, np.int64), "cax"))
        m.graph.node.append(helper.make_node("CumSum", ["pre_logits", "cax"], ["logits"], name="my_cumsum"))

    with pytest.raises(UnsupportedError, match=r"CumSum node 'my_cumsum'.*only supported on constants"):
        import_onnx(_edit(src, tmp_path / "cumsum.onnx", add_cumsum), 16)


def test_bad_max_context_is_refused(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")
    with pytest.raises(ModelError, match="max_context"):
        import_onnx(src, 0)


def test_max_context_beyond_the_position_table_is_refused(tmp_path):
    src = tiny_decoder(tmp_path / "t.onnx")  # 64 learned positions
    with pytest.raises(ContextLimitError, match="--max-context 100: the model supports at most 64 positions") as e:
        import_onnx(src, 100)
    assert e.value.limit == 64
    import_onnx(src, 64)  # the whole table is usable
