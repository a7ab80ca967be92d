"""Per-operator translation tests: tiny hand-built ONNX graphs, imported to IR, evaluated with the IR's numpy
semantics and compared with ONNX Runtime.

Each graph starts from the token embedding x = Gather(E, input_ids) [1, 1, 8] (so every tested operator is
on the main path) and ends in `logits`. Imported with require_past=False (these are not decoders).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import UnsupportedError
from compiler.frontend import import_model
from compiler.frontend.ops import REGISTRY
from compiler.ireval import IrDecoder
from lpu.reference import faithful_to_qdq

C = 8
VOCAB = 12
F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def build(nodes, inits=None, opset=18, domains=()):
    rng = np.random.default_rng(0)
    inits = dict(inits or {})
    inits["E"] = rng.standard_normal((VOCAB, C)).astype(np.float32)
    all_nodes = [helper.make_node("Gather", ["E", "input_ids"], ["x"], name="embed")] + list(nodes)
    g = helper.make_graph(all_nodes, "op", [helper.make_tensor_value_info("input_ids", I64, [1, 1])],
                          [helper.make_tensor_value_info("logits", F32, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8 if opset <= 18 else 10
    return m


def n(op, ins, outs, **kw):
    outs = outs if isinstance(outs, list) else [outs]
    return helper.make_node(op, ins, outs, name=f"{op}_{outs[0]}", **kw)


def check(model, tokens=(1, 5, 9), rtol=1e-5, atol=1e-5):
    """Import, then compare the IR's logits with ORT's for a few tokens; returns the IR graph."""
    g = import_model(model, 8, require_past=False)
    opts = ort.SessionOptions()
    if any(nd.op_type == "DequantizeLinear" for nd in model.graph.node):
        faithful_to_qdq(opts)  # ONNX Runtime's arithmetic for the model, not its int8 shortcuts
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    dec = IrDecoder(g, 8)
    for tok in tokens:
        want = sess.run(["logits"], {"input_ids": np.array([[tok]], np.int64)})[0]
        got = dec.step(tok)
        assert tuple(g.shape(g.outputs["logits"])) == want.shape
        np.testing.assert_allclose(got, want.reshape(-1).astype(np.float32), rtol=rtol, atol=atol)
    return g


def prims(g):
    return [e.prim for e in g.eqns]


rng = np.random.default_rng(1)
VEC = rng.standard_normal(C).astype(np.float32)
POS = (np.abs(rng.standard_normal(C)) + 0.5).astype(np.float32)

ELEMENTWISE = {
    "Add": ([n("Add", ["x", "v"], "logits")], {"v": VEC}),
    "Sub": ([n("Sub", ["v", "x"], "logits")], {"v": VEC}),
    "Mul": ([n("Mul", ["x", "v"], "logits")], {"v": VEC}),
    "Div": ([n("Div", ["x", "p"], "logits")], {"p": POS}),
    "Pow": ([n("Pow", ["x", "two"], "logits")], {"two": np.float32(2.0)}),
    "Max": ([n("Max", ["x", "v", "z"], "logits")], {"v": VEC, "z": np.float32(0.1)}),
    "Min": ([n("Min", ["x", "v"], "logits")], {"v": VEC}),
    "Neg": ([n("Neg", ["x"], "logits")], {}),
    "Abs": ([n("Abs", ["x"], "logits")], {}),
    "Relu": ([n("Relu", ["x"], "logits")], {}),
    "Exp": ([n("Exp", ["x"], "logits")], {}),
    "Log": ([n("Abs", ["x"], "a"), n("Add", ["a", "one"], "b"), n("Log", ["b"], "logits")], {"one": np.float32(1)}),
    "Tanh": ([n("Tanh", ["x"], "logits")], {}),
    "Sigmoid": ([n("Sigmoid", ["x"], "logits")], {}),
    "Sqrt": ([n("Abs", ["x"], "a"), n("Sqrt", ["a"], "logits")], {}),
    "Reciprocal": ([n("Add", ["x", "ten"], "a"), n("Reciprocal", ["a"], "logits")], {"ten": np.float32(10)}),
    "Erf": ([n("Erf", ["x"], "logits")], {}),
    "Sin": ([n("Sin", ["x"], "logits")], {}),
    "Cos": ([n("Cos", ["x"], "logits")], {}),
    "Where": ([n("Greater", ["x", "zero"], "c"), n("Mul", ["x", "tenth"], "y"), n("Where", ["c", "x", "y"], "logits")],
              {"zero": np.float32(0), "tenth": np.float32(0.1)}),
    "Compare": ([n("Less", ["x", "v"], "a"), n("GreaterOrEqual", ["x", "zero"], "b"), n("Or", ["a", "b"], "o"),
                 n("LessOrEqual", ["x", "v"], "d"), n("And", ["o", "d"], "e"), n("Not", ["e"], "f"),
                 n("Equal", ["a", "d"], "h"), n("Cast", ["f"], "ff", to=F32), n("Cast", ["h"], "hf", to=F32),
                 n("Add", ["ff", "hf"], "logits")], {"v": VEC, "zero": np.float32(0)}),
    "Cast": ([n("Mul", ["x", "ten"], "a"), n("Cast", ["a"], "i", to=I64), n("Cast", ["i"], "logits", to=F32)],
             {"ten": np.float32(10)}),
    "Clip": ([n("Clip", ["x", "lo", "hi"], "logits")], {"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    "IsNaN": ([n("Div", ["x", "x"], "a"), n("IsNaN", ["a"], "b"), n("Where", ["b", "zero", "x"], "logits")],
              {"zero": np.float32(0)}),
}


@pytest.mark.parametrize("case", list(ELEMENTWISE))
def test_elementwise(case):
    nodes, inits = ELEMENTWISE[case]
    g = check(build(nodes, inits))
    assert set(prims(g)) <= {"gather", "reshape", "unary", "binary", "where", "cast"}


def test_softmax_layernorm_rms():
    nodes = [n("Softmax", ["x"], "s", axis=-1),
             n("LayerNormalization", ["x", "g", "b"], "ln", axis=-1, epsilon=1e-5),
             n("Add", ["s", "ln"], "logits")]
    g = check(build(nodes, {"g": POS, "b": VEC}))
    assert "layernorm" in prims(g) and "softmax" in prims(g)


def test_simplified_layer_normalization():
    nodes = [n("SimplifiedLayerNormalization", ["x", "g"], "logits", axis=-1, epsilon=1e-6)]
    g = check(build(nodes, {"g": POS}))
    assert "rmsnorm" in prims(g)


def test_decomposed_rmsnorm_stays_decomposed():
    nodes = [n("Pow", ["x", "two"], "sq"), n("ReduceMean", ["sq", "axes"], "ms", keepdims=1),
             n("Add", ["ms", "eps"], "a"), n("Sqrt", ["a"], "r"), n("Div", ["one", "r"], "inv"),
             n("Mul", ["x", "inv"], "y"), n("Mul", ["g", "y"], "logits")]
    g = check(build(nodes, {"two": np.float32(2), "axes": np.array([-1], np.int64), "eps": np.float32(1e-6),
                            "one": np.float32(1), "g": POS}))
    assert "rmsnorm" not in prims(g) and "reduce" in prims(g)


def test_decomposed_gelu_erf_and_tanh():
    nodes = [n("Div", ["x", "sqrt2"], "a"), n("Erf", ["a"], "b"), n("Add", ["b", "one"], "c"), n("Mul", ["x", "c"], "d"),
             n("Mul", ["d", "half"], "g1"),
             n("Pow", ["x", "three"], "p"), n("Mul", ["p", "k"], "q"), n("Add", ["x", "q"], "r"), n("Mul", ["r", "s2pi"], "s"),
             n("Tanh", ["s"], "t"), n("Add", ["t", "one"], "u"), n("Mul", ["x", "half"], "hx"), n("Mul", ["hx", "u"], "g2"),
             n("Add", ["g1", "g2"], "logits")]
    g = check(build(nodes, {"sqrt2": np.float32(1.4142135), "one": np.float32(1), "half": np.float32(0.5),
                            "three": np.float32(3), "k": np.float32(0.044715), "s2pi": np.float32(0.7978846)}))
    assert set(prims(g)) <= {"gather", "reshape", "unary", "binary"}


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_opset20(approx):
    g = check(build([n("Gelu", ["x"], "logits", approximate=approx)], opset=20))
    assert set(prims(g)) <= {"gather", "reshape", "unary", "binary"}


@pytest.mark.parametrize("op,keep", [("ReduceSum", 1), ("ReduceMax", 0), ("ReduceMin", 1), ("ReduceMean", 0)])
def test_reductions(op, keep):
    nodes = [n("Reshape", ["x", "sh"], "r"), n(op, ["r", "axes"], "logits", keepdims=keep)]
    check(build(nodes, {"sh": np.array([1, 2, 4], np.int64), "axes": np.array([1], np.int64)}))


def test_reshape_transpose_squeeze_unsqueeze_flatten():
    nodes = [n("Reshape", ["x", "sh"], "a"),            # [1, 4, 2] via 0 and -1
             n("Transpose", ["a"], "b", perm=[0, 2, 1]),  # [1, 2, 4]
             n("Unsqueeze", ["b", "ax"], "c"),           # [1, 2, 1, 4]
             n("Squeeze", ["c", "ax0"], "d"),            # [2, 1, 4]
             n("Flatten", ["d"], "e", axis=1),           # [2, 4]
             n("Identity", ["e"], "logits")]
    g = check(build(nodes, {"sh": np.array([0, -1, 2], np.int64), "ax": np.array([2], np.int64),
                            "ax0": np.array([0], np.int64)}))
    for e in g.eqns:
        if e.prim == "reshape":
            assert all(isinstance(d, int) and d > 0 for d in e.params["shape"])


def test_slice_split_concat():
    nodes = [n("Slice", ["x", "st", "en", "axs", "stp"], "a"),      # every other element, reversed
             n("Slice", ["x", "st2", "en2", "axs"], "b"),           # a window
             n("Split", ["x", "sizes"], ["s0", "s1", "s2"], axis=2),
             n("Concat", ["s2", "a", "s0", "b", "s1", "v"], "logits", axis=2)]
    check(build(nodes, {"st": np.array([-1], np.int64), "en": np.array([-100], np.int64), "axs": np.array([2], np.int64),
                        "stp": np.array([-2], np.int64), "st2": np.array([2], np.int64), "en2": np.array([6], np.int64),
                        "sizes": np.array([3, 1, 4], np.int64), "v": VEC.reshape(1, 1, C)}))


def test_split_num_outputs_opset18():
    nodes = [n("Split", ["x"], ["s0", "s1"], axis=-1, num_outputs=2), n("Mul", ["s0", "s1"], "logits")]
    check(build(nodes))


def test_expand_and_gather_constant_indices():
    nodes = [n("Reshape", ["x", "sh"], "a"), n("Expand", ["a", "es"], "b"),        # [1, 3, 1, 8]
             n("Gather", ["b", "idx"], "c", axis=3),                                 # [1, 3, 1, 2]
             n("Gather", ["c", "one"], "logits", axis=1)]                            # [1, 1, 2]
    g = check(build(nodes, {"sh": np.array([1, 1, 1, C], np.int64), "es": np.array([1, 3, 1, 1], np.int64),
                            "idx": np.array([5, -1], np.int64), "one": np.array(1, np.int64)}))
    assert "expand" in prims(g) and "take" in prims(g)


def test_gather_nd_constant_indices():
    nodes = [n("Reshape", ["x", "sh"], "a"), n("GatherND", ["a", "idx"], "logits")]
    check(build(nodes, {"sh": np.array([4, 2], np.int64), "idx": np.array([[3], [0], [-1]], np.int64)}))


def test_second_table_gathered_by_token():
    nodes = [n("Gather", ["E2", "input_ids"], "b"), n("Add", ["x", "b"], "logits")]
    g = check(build(nodes, {"E2": np.arange(VOCAB * C, dtype=np.float32).reshape(VOCAB, C) / 10}))
    assert prims(g).count("gather") == 2


def test_matmul_weights_become_linear():
    nodes = [n("MatMul", ["x", "W"], "a"), n("MatMul", ["a", "W3"], "b"), n("Add", ["b", "bias"], "logits")]
    g = check(build(nodes, {"W": rng.standard_normal((C, 6)).astype(np.float32),
                            "W3": rng.standard_normal((1, 6, 5)).astype(np.float32),
                            "bias": rng.standard_normal(5).astype(np.float32)}))
    lin = [e for e in g.eqns if e.prim == "linear"]
    assert len(lin) == 2 and len(lin[1].inputs) == 3  # the bias Add was folded into the second linear
    assert "binary" not in prims(g)


@pytest.mark.parametrize("trans_b,alpha,beta", [(0, 1.0, 1.0), (1, 0.5, 2.0)])
def test_gemm(trans_b, alpha, beta):
    w = rng.standard_normal((C, 5)).astype(np.float32)
    nodes = [n("Reshape", ["x", "sh"], "a"), n("Gemm", ["a", "W", "b"], "logits", transB=trans_b, alpha=alpha, beta=beta)]
    g = check(build(nodes, {"sh": np.array([1, C], np.int64), "W": w.T.copy() if trans_b else w,
                            "b": rng.standard_normal(5).astype(np.float32)}))
    assert prims(g).count("linear") == 1 and "binary" not in prims(g)


def test_shape_subgraph_folds_to_constants():
    """Reshape(x, Concat(Shape(x)[0:2], [-1, 2])) -- the shape computation folds away."""
    nodes = [n("Shape", ["x"], "s"), n("Slice", ["s", "z", "two"], "s01"), n("Concat", ["s01", "m1", "two"], "tgt", axis=0),
             n("Reshape", ["x", "tgt"], "r"), n("Shape", ["r"], "s2"), n("Gather", ["s2", "idx"], "d"),
             n("Cast", ["d"], "df", to=F32), n("Mul", ["r", "df"], "logits")]
    g = check(build(nodes, {"z": np.array([0], np.int64), "two": np.array([2], np.int64), "m1": np.array([-1], np.int64),
                            "idx": np.array(2, np.int64)}))
    assert set(prims(g)) == {"gather", "reshape", "binary"}


def test_constant_of_shape_range_and_dropout():
    nodes = [n("Shape", ["x"], "s"), n("ConstantOfShape", ["s"], "ones", value=numpy_helper.from_array(np.array([2.0], np.float32))),
             n("Range", ["z", "eight", "one"], "rg"), n("Cast", ["rg"], "rgf", to=F32),
             n("Mul", ["x", "ones"], "a"), n("Add", ["a", "rgf"], "b"), n("Dropout", ["b"], "logits")]
    g = check(build(nodes, {"z": np.array(0, np.int64), "eight": np.array(C, np.int64), "one": np.array(1, np.int64)}))
    assert set(prims(g)) == {"gather", "reshape", "binary"}


def test_registry_is_one_module_per_operator():
    from pathlib import Path

    from compiler.frontend import ops

    files = {p.stem for p in Path(ops.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert files == set(ops.MODULES)  # every operator module is registered, and nothing else is
    assert len(REGISTRY) == len(ops.MODULES) >= 60  # no two modules register one operator
    for name, spec in REGISTRY.items():
        # an operator outside the ONNX standard is one of ONNX Runtime's contrib operators
        assert onnx.defs.has(name) or "com.microsoft" in spec.domains, name
        assert callable(spec.eval)


def test_cleanup_passes():
    """Each pass keeps the graph valid and the values unchanged; together they fold, dedupe and simplify."""
    from compiler.frontend import cleanup
    from compiler.ir import Builder, Graph, Var

    g = Graph(vars={"input_ids": Var("input_ids", (1,), "i64")}, consts={}, eqns=[], inputs=("input_ids",),
              outputs={}, states={})
    b = Builder(g)
    emb = b.const(np.arange(VOCAB * C, dtype=np.float32).reshape(VOCAB, C) / 50, "E")
    x = b.eqn("gather", [emb, "input_ids"])                                    # [1, 8]
    r1 = b.eqn("reshape", [x], shape=(1, C))                                   # identity
    r3 = b.eqn("reshape", [b.eqn("reshape", [r1], shape=(2, 4))], shape=(C,))  # a chain
    k = b.eqn("binary", [b.const(np.float32(1.5)), b.const(np.float32(2.0))], op="mul")  # constant
    d = b.eqn("binary", [r3, k], op="add")
    b.eqn("unary", [x], op="exp")                                              # dead
    t1, t2 = b.eqn("unary", [d], op="tanh"), b.eqn("unary", [d], op="tanh")    # common subexpression
    y = b.eqn("linear", [b.eqn("reshape", [b.eqn("binary", [t1, t2], op="add")], shape=(1, C)),
                         b.const(np.eye(C, dtype=np.float32))])
    out = b.eqn("binary", [y, b.const(np.ones((1, C), np.float32))], op="add")  # a bias add after linear
    g.outputs = {"logits": b.eqn("reshape", [out], shape=(1, 1, C))}
    g.verify()
    before = [IrDecoder(g, 4).step(t) for t in (1, 7)]
    for p in cleanup.PASSES:
        g = p(g)
        g.verify()
    after = [IrDecoder(g, 4).step(t) for t in (1, 7)]
    np.testing.assert_allclose(after, before, rtol=1e-6)
    ps = prims(g)
    assert ps.count("unary") == 1 and "exp" not in [e.params.get("op") for e in g.eqns]
    assert ps.count("reshape") == 3  # x -> [8], [8] -> [1, 8], [1, 8] -> [1, 1, 8]
    assert [len(e.inputs) for e in g.eqns if e.prim == "linear"] == [3]
    assert sum(1 for e in g.eqns if e.prim == "binary") == 2  # add of the folded constant, t1 + t1


# ---------------------------------------------------------------------- ONNX Runtime's fused (contrib) operators
MS = ("com.microsoft",)


def ms(op, ins, outs, **kw):
    outs = outs if isinstance(outs, list) else [outs]
    return helper.make_node(op, ins, outs, name=f"{op}_{outs[0]}", domain="com.microsoft", **kw)


@pytest.mark.parametrize("with_beta,with_bias,use_sum", [(True, True, True), (False, False, False), (True, False, True)])
def test_skip_layer_normalization(with_beta, with_bias, use_sum):
    ins = ["x", "skip", "g"] + (["b"] if with_beta else [""]) + (["bias"] if with_bias else [])
    outs = ["y", "", "", "sum"] if use_sum else ["y"]
    nodes = [ms("SkipLayerNormalization", ins, outs, epsilon=1e-5)]
    nodes.append(n("Add", ["y", "sum"], "logits") if use_sum else n("Identity", ["y"], "logits"))
    g = check(build(nodes, {"skip": VEC.reshape(1, 1, C), "g": POS, "b": VEC[::-1].copy(), "bias": POS - 1}, domains=MS))
    assert "layernorm" in prims(g)


@pytest.mark.parametrize("op,prim", [("SkipLayerNormalization", "layernorm"),
                                     ("SkipSimplifiedLayerNormalization", "rmsnorm")])
def test_skip_normalization_default_epsilon(op, prim):
    """Without the attribute ONNX Runtime uses epsilon 1e-12: visible when the variance is tiny (x ~ 1e-4)."""
    nodes = [n("Mul", ["x", "tiny"], "xs"), ms(op, ["xs", "skip", "g"], "logits")]
    g = check(build(nodes, {"tiny": np.float32(1e-4), "skip": (VEC * 1e-4).reshape(1, 1, C), "g": POS}, domains=MS),
              rtol=1e-4, atol=1e-4)
    assert prim in prims(g)


def test_skip_simplified_layer_normalization_with_bias_and_sum():
    nodes = [ms("SkipSimplifiedLayerNormalization", ["x", "skip", "g", "bias"], ["y", "", "", "sum"], epsilon=1e-6),
             n("Mul", ["y", "sum"], "logits")]
    g = check(build(nodes, {"skip": VEC.reshape(1, 1, C), "g": POS, "bias": POS - 1}, domains=MS))
    assert "rmsnorm" in prims(g)


@pytest.mark.parametrize("case", ["FastGelu", "FastGeluBias", "BiasGelu", "Gelu", "QuickGelu"])
def test_fused_gelus(case):
    node = {"FastGelu": ms("FastGelu", ["x"], "logits"),
            "FastGeluBias": ms("FastGelu", ["x", "bias"], "logits"),
            "BiasGelu": ms("BiasGelu", ["x", "bias"], "logits"),
            "Gelu": ms("Gelu", ["x"], "logits"),
            "QuickGelu": ms("QuickGelu", ["x"], "logits", alpha=1.5)}[case]
    g = check(build([node], {"bias": VEC}, domains=MS))
    assert set(prims(g)) <= {"gather", "reshape", "unary", "binary"}


def _rope_model(ms_form: bool, rank: int, interleaved: int, rot: int, heads=2, head=8, positions=16):
    """x [1, 1, heads*head] -> RotaryEmbedding at position_ids -> logits; 3-D ([1, seq, hidden]) or 4-D
    ([1, heads, seq, head]) input; full or partial rotation."""
    rng = np.random.default_rng(7)
    half = (rot or head) // 2
    ang = rng.uniform(-3, 3, (positions, half)).astype(np.float32)  # any angles: the op only reads the tables
    inits = {"E": rng.standard_normal((VOCAB, heads * head)).astype(np.float32), "cos": np.cos(ang), "sin": np.sin(ang),
             "sh4": np.array([1, 1, heads, head], np.int64), "sh3": np.array([1, 1, heads * head], np.int64)}
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["x"], name="embed")]
    if rank == 4:
        nodes += [n("Reshape", ["x", "sh4"], "x4"), n("Transpose", ["x4"], "xin", perm=[0, 2, 1, 3])]
    else:
        nodes += [n("Identity", ["x"], "xin")]
    attrs = dict(interleaved=interleaved)
    if rot:
        attrs["rotary_embedding_dim"] = rot
    if rank == 3 or rot:  # ONNX Runtime wants num_heads with a partial rotation
        attrs["num_heads"] = heads
    if ms_form:
        nodes.append(ms("RotaryEmbedding", ["xin", "position_ids", "cos", "sin"], "r", **attrs))
    else:
        nodes.append(n("RotaryEmbedding", ["xin", "cos", "sin", "position_ids"], "r", **attrs))
    nodes.append(n("Identity", ["r"], "logits"))
    g = helper.make_graph(nodes, "rope", [helper.make_tensor_value_info("input_ids", I64, [1, 1]),
                                          helper.make_tensor_value_info("position_ids", I64, [1, 1])],
                          [helper.make_tensor_value_info("logits", F32, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 18 if ms_form else 23)] + ([helper.make_opsetid("com.microsoft", 1)] if ms_form else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8 if ms_form else 10
    return m


@pytest.mark.parametrize("ms_form", [True, False], ids=["com.microsoft", "onnx23"])
@pytest.mark.parametrize("rank,interleaved,rot", [(4, 0, 0), (4, 1, 0), (3, 0, 0), (4, 0, 4), (3, 1, 4)])
def test_rotary_embedding(ms_form, rank, interleaved, rot):
    model = _rope_model(ms_form, rank, interleaved, rot)
    g = import_model(model, 16, require_past=False)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    dec = IrDecoder(g, 16)
    for pos, tok in enumerate((1, 5, 9, 2, 7)):  # IrDecoder feeds position_ids = 0, 1, 2, ...
        want = sess.run(["logits"], {"input_ids": np.array([[tok]], np.int64),
                                     "position_ids": np.array([[pos]], np.int64)})[0]
        np.testing.assert_allclose(dec.step(tok), want.reshape(-1), rtol=1e-5, atol=1e-6)
    assert "gather" in prims(g)  # the tables, indexed by position


def test_every_unsupported_operator_is_named_at_once():
    nodes = [n("Mul", ["x", "x"], "a"), n("Softplus", ["a"], "b"), n("Softplus", ["b"], "c"), n("Softsign", ["c"], "d"),
             ms("Unknownish", ["d"], "logits")]
    with pytest.raises(UnsupportedError) as e:
        import_model(build(nodes, domains=MS), 8, require_past=False)
    msg = str(e.value)
    assert msg.startswith("unsupported ONNX operators: Softplus x2 ('Softplus_b', 'Softplus_c'); Softsign x1 "
                          "('Softsign_d'); Unknownish (com.microsoft) x1 ('Unknownish_logits'); supported operators: ")
    assert "\n" not in msg


# ---------------------------------------------------------------------- quantised weights
W16 = rng.standard_normal((C, 16)).astype(np.float32)


@pytest.mark.parametrize("kind", ["tensor", "axis", "blocked", "uint8-zp", "int4-blocked"])
def test_dequantize_linear_weights_fold_to_the_float_weight(kind):
    r = np.random.default_rng(3)
    if kind == "int4-blocked":
        q = r.integers(-8, 8, (C, 16))
        x = helper.make_tensor("wq", TensorProto.INT4, [C, 16], q.reshape(-1).tolist())
        s = (r.uniform(0.01, 0.1, (2, 16))).astype(np.float32)  # blocks of 4 rows along axis 0
        inits, attrs, ins = {"s": s}, dict(axis=0, block_size=4), ["wq", "s"]
        opset = 21
    else:
        dt = np.uint8 if kind == "uint8-zp" else np.int8
        q = r.integers(0 if dt == np.uint8 else -127, 255 if dt == np.uint8 else 127, (C, 16)).astype(dt)
        x = numpy_helper.from_array(q, "wq")
        s = {"tensor": np.float32(0.02), "axis": r.uniform(0.01, 0.1, 16).astype(np.float32),
             "blocked": r.uniform(0.01, 0.1, (4, 16)).astype(np.float32),
             "uint8-zp": r.uniform(0.01, 0.1, 16).astype(np.float32)}[kind]
        inits = {"s": s}
        ins = ["wq", "s"]
        attrs = {"tensor": {}, "axis": dict(axis=1), "blocked": dict(axis=0, block_size=2),
                 "uint8-zp": dict(axis=1)}[kind]
        if kind == "uint8-zp":
            inits["z"] = r.integers(100, 156, 16).astype(np.uint8)
            ins.append("z")
        opset = 21 if kind == "blocked" else 13
    nodes = [n("DequantizeLinear", ins, "w", **attrs), n("MatMul", ["x", "w"], "logits")]
    m = build(nodes, inits, opset=opset)
    m.graph.initializer.append(x)
    g = check(m)
    assert prims(g).count("linear") == 1 and g.meta.get("dequantised") == "DequantizeLinear x1"


def _pack(vals: np.ndarray, bits: int) -> np.ndarray:
    """Rows of `bits`-bit values -> uint8, the first value in the lowest bits (how the test builds the node;
    ONNX Runtime running it is what says whether that is the layout)."""
    per = 8 // bits
    v = vals.astype(np.uint8).reshape(vals.shape[0], -1, per)
    return np.bitwise_or.reduce(v << (np.arange(per, dtype=np.uint8) * bits), axis=2).astype(np.uint8)


@pytest.mark.parametrize("bits, zero_points, bias", [(4, "packed", False), (4, None, True), (8, "packed", False),
                                                     (4, "float", False), (2, "packed", False)])
def test_matmul_nbits_dequantises_like_onnxruntime(bits, zero_points, bias):
    r = np.random.default_rng(5)
    k, n_out, bs = 32, 24, 16  # K = 32: two blocks of 16
    nb = k // bs
    q = r.integers(0, 1 << bits, (n_out, nb * bs))
    inits = {"B": _pack(q, bits).reshape(n_out, nb, bs * bits // 8),
             "scales": r.uniform(0.01, 0.2, (n_out * nb,)).astype(np.float32)}
    ins = ["x4", "B", "scales"]
    if zero_points == "packed":
        zp = r.integers(0, 1 << bits, (n_out, nb))
        per = 8 // bits
        zp = np.pad(zp, ((0, 0), (0, -nb % per)))
        inits["zp"] = _pack(zp, bits).reshape(-1)
        ins.append("zp")
    elif zero_points == "float":
        inits["zp"] = r.uniform(0, (1 << bits) - 1, (n_out * nb,)).astype(np.float32)
        ins.append("zp")
    if bias:
        inits["bias"] = np.linspace(-1, 1, n_out).astype(np.float32)
        ins += [""] * (5 - len(ins)) + ["bias"]
    nodes = [n("Concat", ["x", "x", "x", "x"], "x4", axis=2),
             ms("MatMulNBits", ins, "logits", K=k, N=n_out, bits=bits, block_size=bs)]
    g = check(build(nodes, inits, domains=MS), rtol=1e-5, atol=1e-5)
    assert prims(g).count("linear") == 1 and g.meta.get("dequantised") == f"MatMulNBits {bits}-bit x1"


# ---------------------------------------------------------------------- fused attention that owns the cache
def _attention_decoder(kind: str, softcap: float = 0.0):
    """input_ids + one layer's past K/V -> a fused attention node that appends to the cache -> logits.
    kind: "onnx23" (Attention, opset 23, 3-D inputs, 4 query / 2 KV heads) or "gqa" (com.microsoft
    GroupQueryAttention with packed QKV and rotary)."""
    r = np.random.default_rng(11)
    hq, hkv, d, hid, vocab = 4, 2, 16, 16, VOCAB  # ONNX Runtime's GQA wants head sizes of 16k
    inits = {"E": r.standard_normal((vocab, hid)).astype(np.float32),
             "Wq": (r.standard_normal((hid, hq * d)) * 0.5).astype(np.float32),
             "Wk": (r.standard_normal((hid, hkv * d)) * 0.5).astype(np.float32),
             "Wv": r.standard_normal((hid, hkv * d)).astype(np.float32),
             "Wo": r.standard_normal((hq * d, vocab)).astype(np.float32)}
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["x"], name="embed")]
    ins = [helper.make_tensor_value_info("input_ids", I64, [1, 1]),
           helper.make_tensor_value_info("past_key_values.0.key", F32, [1, hkv, "past", d]),
           helper.make_tensor_value_info("past_key_values.0.value", F32, [1, hkv, "past", d])]
    if kind == "onnx23":
        nodes += [n("MatMul", ["x", "Wq"], "q"), n("MatMul", ["x", "Wk"], "k"), n("MatMul", ["x", "Wv"], "v"),
                  helper.make_node("Attention", ["q", "k", "v", "", "past_key_values.0.key", "past_key_values.0.value"],
                                   ["y", "present.0.key", "present.0.value"], name="attn", q_num_heads=hq,
                                   kv_num_heads=hkv, softcap=softcap)]
        opsets, irv = [helper.make_opsetid("", 23)], 10
    else:
        ang = r.uniform(-3, 3, (32, d // 2)).astype(np.float32)
        inits.update(Wqkv=np.concatenate([inits["Wq"], inits["Wk"], inits["Wv"]], axis=1), cos=np.cos(ang),
                     sin=np.sin(ang), one=np.array([1], np.int64))
        ins.append(helper.make_tensor_value_info("attention_mask", I64, [1, "total"]))
        nodes += [n("MatMul", ["x", "Wqkv"], "qkv"),
                  n("ReduceSum", ["attention_mask", "one"], "len", keepdims=1), n("Sub", ["len", "one"], "sl"),
                  n("Cast", ["sl"], "seqlens", to=TensorProto.INT32), n("Shape", ["attention_mask"], "shp"),
                  n("Gather", ["shp", "one"], "tot0"), n("Cast", ["tot0"], "tot", to=TensorProto.INT32),
                  ms("GroupQueryAttention", ["qkv", "", "", "past_key_values.0.key", "past_key_values.0.value",
                                             "seqlens", "tot", "cos", "sin"], ["y", "present.0.key", "present.0.value"],
                     num_heads=hq, kv_num_heads=hkv, do_rotary=1, softcap=softcap)]
        opsets, irv = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)], 8
    nodes.append(n("MatMul", ["y", "Wo"], "logits"))
    outs = [helper.make_tensor_value_info(o, F32, None) for o in ("logits", "present.0.key", "present.0.value")]
    g = helper.make_graph(nodes, "dec", ins, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = irv
    return m


@pytest.mark.parametrize("kind, softcap", [("onnx23", 0.0), ("onnx23", 5.0), ("gqa", 0.0), ("gqa", 5.0)])
def test_fused_attention_with_the_cache_decodes_like_onnxruntime(kind, softcap, tmp_path):
    from lpu.reference import OrtDecoder

    m = _attention_decoder(kind, softcap)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    g = import_model(m, 32)
    assert sum(e.prim == "kv_append" for e in g.eqns) == 2 and sum(e.prim == "attn_qk" for e in g.eqns) == 1
    want = OrtDecoder(path, threads=1).greedy([1, 5, 9, 2], 6)
    got = IrDecoder(g, 32).greedy([1, 5, 9, 2], 6)
    assert got[0] == want[0]
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- mixture-of-experts
def _moe_model(op, act, k, normalize, limit=None, bits=4, block=0, experts=6, hidden=32, inter=12, biases=True):
    r = np.random.default_rng(7)
    n1 = 2 * inter if act == "swiglu" else inter
    inits = {"shp": np.array([1, hidden], np.int64),
             "Wr": (r.standard_normal((hidden, experts)) * 0.8).astype(np.float32),
             "b1": (r.standard_normal((experts, n1)) * 0.3).astype(np.float32),
             "b2": (r.standard_normal((experts, hidden)) * 0.3).astype(np.float32)}
    attrs = dict(k=k, activation_type=act, normalize_routing_weights=normalize)
    if act == "swiglu":
        attrs.update(swiglu_fusion=1, activation_alpha=1.702, activation_beta=1.0)
        if limit is not None:
            attrs["swiglu_limit"] = limit
    if op == "MoE":
        inits["w1"] = (r.standard_normal((experts, n1, hidden)) * 0.5).astype(np.float32)
        inits["w2"] = (r.standard_normal((experts, hidden, inter)) * 0.5).astype(np.float32)
        ins = ["h", "router", "w1", "b1" if biases else "", "w2", "b2" if biases else ""]
    else:
        def quant(n_rows, kdim):
            q = r.integers(0, 1 << bits, (experts, n_rows, kdim))
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)) if bits == 4 else q
            nb = kdim // block if block else 1
            sc = r.uniform(0.02, 0.08, (experts, n_rows, nb) if block else (experts, n_rows)).astype(np.float32)
            return packed.astype(np.uint8), sc
        inits["q1"], inits["s1"] = quant(n1, hidden)
        inits["q2"], inits["s2"] = quant(hidden, inter)
        attrs["expert_weight_bits"] = bits
        if block:
            attrs["block_size"] = block
        ins = ["h", "router", "q1", "s1", "b1" if biases else "", "q2", "s2", "b2" if biases else ""]
    nodes = [n("Concat", ["x", "x", "x", "x"], "x4", axis=2), n("Reshape", ["x4", "shp"], "h"),
             n("MatMul", ["h", "Wr"], "router"), ms(op, ins, "logits", **attrs)]
    return build(nodes, inits, domains=MS)


@pytest.mark.parametrize("act, k, normalize, limit", [
    ("swiglu", 2, 1, 7.0), ("swiglu", 3, 0, None), ("relu", 1, 0, None), ("silu", 2, 1, None),
    ("gelu", 2, 0, None), ("identity", 6, 1, None)])
def test_moe_means_what_onnxruntime_computes(act, k, normalize, limit):
    g = check(_moe_model("MoE", act, k, normalize, limit), tokens=tuple(range(VOCAB)))
    assert prims(g).count("expert_linear") == 2 * k and prims(g).count("topk") == 2


def test_moe_without_biases():
    check(_moe_model("MoE", "swiglu", 2, 1, 7.0, biases=False), tokens=tuple(range(VOCAB)))


@pytest.mark.parametrize("bits, block", [(4, 0), (4, 16), (8, 0)])
def test_qmoe_dequantises_like_onnxruntime(bits, block):
    """(8-bit blockwise experts are left out: ONNX Runtime computes them with int8 activations.)"""
    g = check(_moe_model("QMoE", "swiglu", 2, 1, 7.0, bits=bits, block=block, inter=16), tokens=tuple(range(VOCAB)),
              rtol=1e-4, atol=1e-4)
    assert g.meta.get("dequantised") == f"QMoE {bits}-bit x1"  # one node
