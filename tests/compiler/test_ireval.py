"""The IR's reference semantics (compiler.ireval) against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import IrError
from compiler.ir import T, Eqn, Graph, State, Var
from compiler.ireval import IrDecoder, eval_eqn

rng = np.random.default_rng(0)


def empty_graph(**states) -> Graph:
    return Graph(vars={}, consts={}, eqns=[], inputs=(), outputs={}, states=dict(states))


def ev(prim, args, t=1, states=None, position=0, graph=None, **params):
    return eval_eqn(Eqn(prim, tuple(f"i{k}" for k in range(len(args))), ("o",), params), args, t, states or {},
                    position, graph or empty_graph())


# ---------------------------------------------------------------------- attention
@pytest.mark.parametrize("hq,hkv", [(4, 4), (6, 2), (4, 1)])
def test_attn_qk_reads_kv_head_h_div_group(hq, hkv):
    d, t = 5, 7
    group = hq // hkv
    q = rng.standard_normal((1, hq, 1, d)).astype(np.float32)
    kv = rng.standard_normal((1, hkv, t, d)).astype(np.float32)
    got = ev("attn_qk", [q, kv], t=t, group=group)
    assert got.shape == (1, hq, 1, t)
    for h in range(hq):
        for j in range(t):
            want = sum(float(q[0, h, 0, i]) * float(kv[0, h // group, j, i]) for i in range(d))
            assert got[0, h, 0, j] == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (6, 2), (4, 1)])
def test_attn_pv_reads_kv_head_h_div_group(hq, hkv):
    d, t = 3, 6
    group = hq // hkv
    p = rng.random((1, hq, 1, t)).astype(np.float32)
    kv = rng.standard_normal((1, hkv, t, d)).astype(np.float32)
    got = ev("attn_pv", [p, kv], t=t, group=group)
    assert got.shape == (1, hq, 1, d)
    for h in range(hq):
        for i in range(d):
            want = sum(float(p[0, h, 0, j]) * float(kv[0, h // group, j, i]) for j in range(t))
            assert got[0, h, 0, i] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_mask_fill():
    s = np.arange(8, dtype=np.float32).reshape(1, 2, 1, 4)
    m = np.array([1, 0, 1, 0], np.float32)
    got = ev("mask_fill", [s, m], t=4, fill=-1e9)
    assert got.tolist() == [[[[0, -1e9, 2, -1e9]], [[4, -1e9, 6, -1e9]]]]
    assert ev("mask_fill", [s, np.ones(4, np.float32)], t=4, fill=float("-inf")).tolist() == s.tolist()


def test_kv_append_writes_the_position_and_returns_the_prefix():
    g = empty_graph(s=State("s", 0, "k", 2, 3))
    state = {"s": np.zeros((2, 5, 3), np.float32)}
    rows = []
    for p in range(3):
        new = np.full((1, 2, 1, 3), p + 1, np.float32) * np.array([1, 10], np.float32).reshape(1, 2, 1, 1)
        rows.append(new[0, :, 0, :])
        present = ev("kv_append", [new], t=p + 1, states=state, position=p, graph=g, state="s")
        assert present.shape == (1, 2, p + 1, 3)
        np.testing.assert_array_equal(present[0], np.stack(rows, axis=1))
    np.testing.assert_array_equal(state["s"][:, 3:], 0)  # nothing written past the position
    with pytest.raises(IrError):
        ev("kv_append", [np.zeros((1, 2, 1, 3), np.float32)], t=6, states=state, position=5, graph=g, state="s")


def test_decoder_carries_kv_state_across_steps():
    """A one-head attention over token embeddings, decoded token by token, against a hand-written loop."""
    v, d = 6, 4
    emb = rng.standard_normal((v, d)).astype(np.float32)
    g = Graph(vars={"input_ids": Var("input_ids", (1,), "i64")}, consts={"emb": emb}, eqns=[], inputs=("input_ids",),
              outputs={}, states={"k": State("k", 0, "k", 1, d), "v": State("v", 0, "v", 1, d)})

    def add(prim, ins, out, out_shape, **params):
        g.vars[out] = Var(out, out_shape)
        g.eqns.append(Eqn(prim, tuple(ins), (out,), params))

    add("gather", ["emb", "input_ids"], "x", (1, d))
    add("reshape", ["x"], "x4", (1, 1, 1, d), shape=(1, 1, 1, d))
    add("kv_append", ["x4"], "pk", (1, 1, T, d), state="k")
    add("kv_append", ["x4"], "pv", (1, 1, T, d), state="v")
    add("attn_qk", ["x4", "pk"], "s", (1, 1, 1, T), group=1)
    add("softmax", ["s"], "p", (1, 1, 1, T), axis=3)
    add("attn_pv", ["p", "pv"], "o", (1, 1, 1, d), group=1)
    add("reshape", ["o"], "logits", (1, 1, d), shape=(1, 1, d))
    g.outputs = {"logits": "logits"}
    g.verify()
    dec = IrDecoder(g, 8)
    seen = []
    for tok in [3, 1, 4, 1, 5]:
        got = dec.step(tok)
        seen.append(emb[tok])
        keys = np.stack(seen)
        s = keys @ emb[tok]
        p = np.exp(s - s.max())
        p /= p.sum()
        np.testing.assert_allclose(got, p @ keys, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dec.states["k"][0, :5], np.stack(seen))


# ---------------------------------------------------------------------- norms
def test_layernorm():
    x = rng.standard_normal((1, 1, 6)).astype(np.float32)
    gamma, beta = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    want = (x - mu) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(ev("layernorm", [x, gamma, beta], eps=1e-5, axis=-1), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev("layernorm", [x, gamma], eps=1e-5, axis=2), want - beta, rtol=1e-5, atol=1e-6)


def test_rmsnorm():
    x = rng.standard_normal((1, 1, 6)).astype(np.float32)
    gamma = rng.standard_normal(6).astype(np.float32)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean() + 1e-6) * gamma
    np.testing.assert_allclose(ev("rmsnorm", [x, gamma], eps=1e-6, axis=-1), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- the rest
def test_elementwise_data_movement_and_reductions():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert ev("binary", [x, np.float32(2)], op="pow").tolist() == (x ** 2).tolist()
    assert ev("binary", [np.array([7, -7]), np.array([2, 2])], op="div").tolist() == [3, -4]  # integer div floors
    assert ev("unary", [np.array([4.0], np.float32)], op="rsqrt").tolist() == [0.5]
    assert ev("reduce", [x], op="sum", axes=[2], keepdims=False).tolist() == [[3, 12]]
    assert ev("transpose", [x], perm=[0, 2, 1]).shape == (1, 3, 2)
    assert ev("slice", [x], starts=[1], ends=[3], axes=[2], steps=[1]).tolist() == [[[1, 2], [4, 5]]]
    assert ev("take", [x], indices=np.array([2, 0]), axis=2).tolist() == [[[2, 0], [5, 3]]]
    assert ev("expand", [np.ones((1, 1, 3), np.float32)], t=4, shape=(1, T, 3)).shape == (1, 4, 3)
    assert ev("cast", [np.array([1.7, -1.7], np.float32)], to="i64").tolist() == [1, -1]
    s = ev("softmax", [np.array([[0.0, np.log(3.0)]], np.float32)], axis=-1)
    np.testing.assert_allclose(s, [[0.25, 0.75]], rtol=1e-6)


def test_verify_catches_shape_errors():
    g = Graph(vars={"input_ids": Var("input_ids", (1,), "i64"), "y": Var("y", (1, 5))},
              consts={"w": np.zeros((4, 5), np.float32)}, eqns=[Eqn("linear", ("input_ids", "w"), ("y",))],
              inputs=("input_ids",), outputs={"logits": "y"}, states={})
    with pytest.raises(IrError, match="linear"):
        g.verify()
