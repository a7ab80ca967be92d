"""Small decoders written directly in the IR (no ONNX), for backend tests.

`gpt2_like` and `llama_like` follow the structure real exports have after the frontend: fused layernorm
or decomposed RMSNorm, q/k/v projections, rotary embedding via a position table, GQA, masked softmax,
MLP with GELU (tanh form) or SiLU gating, residual adds, an LM head. `masked=False` leaves out the
attention mask (softmax over the whole cache, as a mask-less export has it); `head_dim` may differ from
hidden / heads (as Gemma's does).
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Builder, Graph, State, T, Var


def _graph(vocab, max_context, masked=True):
    inputs = ("input_ids", "position_ids", "attention_mask") if masked else ("input_ids", "position_ids")
    g = Graph(vars={}, consts={}, eqns=[], inputs=inputs, outputs={}, states={}, meta={"family": "test"})
    g.vars["input_ids"] = Var("input_ids", (1,), "i64")
    g.vars["position_ids"] = Var("position_ids", (1,), "i64")
    if masked:
        g.vars["attention_mask"] = Var("attention_mask", (T,), "f32")
    return g, Builder(g)


def _attention(b, g, x, layer, H, Hkv, D, rng, scale_w, rope=None, bias=False, masked=True):
    hid = x_shape = g.vars[x].shape[-1]
    def lin(inp, k, n, name):
        w = b.const((rng.standard_normal((k, n)) * scale_w).astype(np.float32), f"w{layer}{name}")
        ins = [inp, w]
        if bias:
            ins.append(b.const((rng.standard_normal(n) * 0.1).astype(np.float32), f"b{layer}{name}"))
        return b.eqn("linear", ins)
    q = lin(x, hid, H * D, "q")
    k = lin(x, hid, Hkv * D, "k")
    v = lin(x, hid, Hkv * D, "v")
    q = b.eqn("transpose", [b.eqn("reshape", [q], shape=(1, 1, H, D))], perm=(0, 2, 1, 3))
    k = b.eqn("transpose", [b.eqn("reshape", [k], shape=(1, 1, Hkv, D))], perm=(0, 2, 1, 3))
    v = b.eqn("transpose", [b.eqn("reshape", [v], shape=(1, 1, Hkv, D))], perm=(0, 2, 1, 3))
    if rope is not None:
        cos, sin = rope
        def rot(t):
            h1 = b.eqn("slice", [t], starts=[0], ends=[D // 2], axes=[3])
            h2 = b.eqn("slice", [t], starts=[D // 2], ends=[D], axes=[3])
            r = b.eqn("concat", [b.eqn("unary", [h2], op="neg"), h1], axis=3)
            return b.eqn("binary", [b.eqn("binary", [t, cos], op="mul"), b.eqn("binary", [r, sin], op="mul")], op="add")
        q, k = rot(q), rot(k)
    for kind, new in (("k", k), ("v", v)):
        g.states[f"L{layer}{kind}"] = State(f"L{layer}{kind}", layer, kind, Hkv, D)
    pk = b.eqn("kv_append", [k], state=f"L{layer}k")
    pv = b.eqn("kv_append", [v], state=f"L{layer}v")
    grp = H // Hkv
    s = b.eqn("attn_qk", [q, pk], group=grp)
    s = b.eqn("binary", [s, b.const(np.array(1.0 / np.sqrt(D), np.float32))], op="mul")
    if masked:  # else softmax runs over the whole (visible) cache, as a mask-less export's does
        s = b.eqn("mask_fill", [s, "attention_mask"], fill=-3.4e38)
    p = b.eqn("softmax", [s], axis=-1)
    o = b.eqn("attn_pv", [p, pv], group=grp)
    o = b.eqn("reshape", [b.eqn("transpose", [o], perm=(0, 2, 1, 3))], shape=(1, 1, H * D))
    w = b.const((rng.standard_normal((H * D, hid)) * scale_w).astype(np.float32), f"w{layer}o")
    return b.eqn("linear", [o, w])


def _rms(b, rng, t, hidden):
    """Decomposed RMSNorm with a random scale, as exporters write it."""
    c = lambda v: b.const(np.array(v, np.float32))  # noqa: E731
    gam = b.const((1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32), "rg")
    ms = b.eqn("reduce", [b.eqn("binary", [t, c(2.0)], op="pow")], op="mean", axes=(-1,), keepdims=True)
    r = b.eqn("binary", [c(1.0), b.eqn("unary", [b.eqn("binary", [ms, c(1e-6)], op="add")], op="sqrt")], op="div")
    return b.eqn("binary", [gam, b.eqn("binary", [t, r], op="mul")], op="mul")


def gpt2_like(layers=2, hidden=96, heads=4, vocab=300, max_context=640, seed=0, masked=True):
    rng = np.random.default_rng(seed)
    g, b = _graph(vocab, max_context, masked)
    D = hidden // heads
    wte = b.const((rng.standard_normal((vocab, hidden)) * 0.5).astype(np.float32), "wte")
    wpe = b.const((rng.standard_normal((max_context, hidden)) * 0.1).astype(np.float32), "wpe")
    x = b.eqn("reshape", [b.eqn("gather", [wte, "input_ids"])], shape=(1, 1, hidden))
    pe = b.eqn("reshape", [b.eqn("gather", [wpe, "position_ids"])], shape=(1, 1, hidden))
    x = b.eqn("binary", [x, pe], op="add")
    sw = 1.0 / np.sqrt(hidden)
    for layer in range(layers):
        gam = b.const((1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32), "g")
        bet = b.const((0.1 * rng.standard_normal(hidden)).astype(np.float32), "b")
        h = b.eqn("layernorm", [x, gam, bet], eps=1e-5, axis=-1)
        x = b.eqn("binary", [x, _attention(b, g, h, layer, heads, heads, D, rng, sw, bias=True, masked=masked)], op="add")
        gam = b.const((1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32), "g")
        bet = b.const((0.1 * rng.standard_normal(hidden)).astype(np.float32), "b")
        h = b.eqn("layernorm", [x, gam, bet], eps=1e-5, axis=-1)
        w1 = b.const((rng.standard_normal((hidden, 4 * hidden)) * sw).astype(np.float32), "fc")
        u = b.eqn("linear", [h, w1, b.const((0.1 * rng.standard_normal(4 * hidden)).astype(np.float32), "fcb")])
        # gelu, tanh form, decomposed as exporters write it
        c = lambda v: b.const(np.array(v, np.float32))  # noqa: E731
        inner = b.eqn("binary", [b.eqn("binary", [u, b.eqn("binary", [b.eqn("binary", [u, c(3.0)], op="pow"), c(0.044715)], op="mul")], op="add"), c(0.7978845834732056)], op="mul")
        act = b.eqn("binary", [b.eqn("binary", [u, c(0.5)], op="mul"), b.eqn("binary", [b.eqn("unary", [inner], op="tanh"), c(1.0)], op="add")], op="mul")
        w2 = b.const((rng.standard_normal((4 * hidden, hidden)) * sw / 2).astype(np.float32), "proj")
        x = b.eqn("binary", [x, b.eqn("linear", [act, w2])], op="add")
    gam = b.const((1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32), "g")
    bet = b.const((0.1 * rng.standard_normal(hidden)).astype(np.float32), "b")
    h = b.eqn("layernorm", [x, gam, bet], eps=1e-5, axis=-1)
    lm = b.const(np.ascontiguousarray(g.consts[wte].T), "lm")
    g.outputs["logits"] = b.eqn("linear", [h, lm])
    return g.verify()


def llama_like(layers=2, hidden=128, heads=4, kv_heads=2, inter=224, vocab=400, max_context=640, seed=1, theta=10000.0,
               head_dim=None, masked=True):
    rng = np.random.default_rng(seed)
    g, b = _graph(vocab, max_context, masked)
    D = head_dim or hidden // heads
    emb = b.const((rng.standard_normal((vocab, hidden)) * 0.5).astype(np.float32), "emb")
    x = b.eqn("reshape", [b.eqn("gather", [emb, "input_ids"])], shape=(1, 1, hidden))
    inv = 1.0 / theta ** (np.arange(0, D, 2) / D)
    ang = np.arange(max_context)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=1)
    cos_t = b.const(np.cos(ang).astype(np.float32), "cos")
    sin_t = b.const(np.sin(ang).astype(np.float32), "sin")
    cos = b.eqn("reshape", [b.eqn("gather", [cos_t, "position_ids"])], shape=(1, 1, 1, D))
    sin = b.eqn("reshape", [b.eqn("gather", [sin_t, "position_ids"])], shape=(1, 1, 1, D))
    sw = 1.0 / np.sqrt(hidden)

    def rms(t):
        return _rms(b, rng, t, hidden)

    for layer in range(layers):
        x = b.eqn("binary", [x, _attention(b, g, rms(x), layer, heads, kv_heads, D, rng, sw, rope=(cos, sin),
                                        masked=masked)], op="add")
        h = rms(x)
        wg = b.const((rng.standard_normal((hidden, inter)) * sw).astype(np.float32), "gate")
        wu = b.const((rng.standard_normal((hidden, inter)) * sw).astype(np.float32), "up")
        wd = b.const((rng.standard_normal((inter, hidden)) * sw).astype(np.float32), "down")
        gt = b.eqn("linear", [h, wg])
        act = b.eqn("binary", [b.eqn("binary", [gt, b.eqn("unary", [gt], op="sigmoid")], op="mul"), b.eqn("linear", [h, wu])], op="mul")
        x = b.eqn("binary", [x, b.eqn("linear", [act, wd])], op="add")
    lm = b.const((rng.standard_normal((hidden, vocab)) * sw * 2).astype(np.float32), "lm")
    g.outputs["logits"] = b.eqn("linear", [rms(x), lm])
    return g.verify()


def moe_like(layers=2, hidden=64, heads=4, kv_heads=2, inter=96, experts=8, k=2, vocab=300, max_context=640, seed=2,
             bias=True, tied=False, normalize=True):
    """llama_like with a mixture-of-experts MLP in every layer: router -> softmax -> top-k (normalised to sum
    1 when `normalize`), then per chosen expert j a SiLU-gated MLP from expert tables [E, K, N] read by the
    runtime expert number (expert_linear; biases gathered by it), weighted and summed. `tied`: the router's
    columns come in equal pairs, so every score is tied with another (top-k must pick the lower index)."""
    rng = np.random.default_rng(seed)
    g, b = _graph(vocab, max_context, True)
    D = hidden // heads
    emb = b.const((rng.standard_normal((vocab, hidden)) * 0.5).astype(np.float32), "emb")
    x = b.eqn("reshape", [b.eqn("gather", [emb, "input_ids"])], shape=(1, 1, hidden))
    sw = 1.0 / np.sqrt(hidden)

    def rms(t):
        return _rms(b, rng, t, hidden)

    for layer in range(layers):
        x = b.eqn("binary", [x, _attention(b, g, rms(x), layer, heads, kv_heads, D, rng, sw, masked=True)], op="add")
        h = b.eqn("reshape", [rms(x)], shape=(1, hidden))
        wr = (rng.standard_normal((hidden, experts)) * sw * 3).astype(np.float32)
        if tied:
            wr[:, 1::2] = wr[:, 0::2][:, :experts // 2]
        scores = b.eqn("softmax", [b.eqn("linear", [h, b.const(wr, "router")])], axis=-1)
        vals = b.eqn("topk", [scores], k=k, part="values")
        idx = b.eqn("topk", [scores], k=k, part="indices", dtype="i64")
        if normalize:
            vals = b.eqn("binary", [vals, b.eqn("reduce", [vals], op="sum", axes=(-1,), keepdims=True)], op="div")
        tab = lambda kk, n, name: b.const((rng.standard_normal((experts, kk, n)) * sw).astype(np.float32), name)  # noqa: E731
        wg, wu, wd = tab(hidden, inter, "egate"), tab(hidden, inter, "eup"), tab(inter, hidden, "edown")
        bd = b.const((0.1 * rng.standard_normal((experts, hidden))).astype(np.float32), "edown_b")
        total = None
        for j in range(k):
            e = b.eqn("reshape", [b.eqn("take", [idx], indices=np.array([j]), axis=1, dtype="i64")], shape=(1,), dtype="i64")
            gt = b.eqn("expert_linear", [h, wg, e])
            act = b.eqn("binary", [b.eqn("binary", [gt, b.eqn("unary", [gt], op="sigmoid")], op="mul"),
                                   b.eqn("expert_linear", [h, wu, e])], op="mul")
            y = b.eqn("expert_linear", [act, wd, e])
            if bias:
                y = b.eqn("binary", [y, b.eqn("gather", [bd, e])], op="add")
            y = b.eqn("binary", [y, b.eqn("take", [vals], indices=np.array([j]), axis=1)], op="mul")
            total = y if total is None else b.eqn("binary", [total, y], op="add")
        x = b.eqn("binary", [x, b.eqn("reshape", [total], shape=(1, 1, hidden))], op="add")
    lm = b.const((rng.standard_normal((hidden, vocab)) * sw * 2).astype(np.float32), "lm")
    g.outputs["logits"] = b.eqn("linear", [rms(x), lm])
    return g.verify()
