"""The IR of one decode step built from a Hugging Face config.json, without an export or weights (a timing-only
compile: `lpu compile --timing-only config.json`, `lpu estimate config.json`).

The graph is the one the importer gives for the Optimum (`text-generation-with-past`) export of the same config,
equation for equation, before the canonicalise pass: the same prims in the same order, the same shapes and
parameters, the same small constants (RMSNorm's exponent and epsilon, the attention scale split over q and the
scores, the NaN guard after the softmax) and the same position tables (rotary cos/sin, GPT-2's learned
positions). tests/compiler/test_timing_only.py checks it against the importer on Optimum exports of small
configs of every family here, and that both compile to the same cycles. Weights, biases and norm gains are
shape-only constants (compiler.ir.Shaped); the position tables of rotary models are computed (their values
do not change the schedule).

Families: Llama, Mistral and Qwen2 (RMSNorm, rotary, gated SiLU MLP, grouped KV heads; Qwen2's q/k/v biases;
a sliding window caps the context), Phi-3 (Llama's layer with packed qkv_proj and gate_up_proj, their outputs
sliced; no rope_scaling, so not the longrope 128k models), Gemma (the embedding times sqrt(hidden), RMSNorm's
gain 1 + weight, a gated gelu-tanh MLP, head_dim from the config, a tied lm_head by default), GPT-2, GPT-NeoX
(packed per-head query_key_value, partial rotary whose tables cover the rotary dims only, the parallel residual,
exact-erf GELU, untied embed_out) and OPT (learned positions at offset 2, a shape-only table like GPT-2's,
capping the context; q scaled before the attention, ReLU MLP, biases everywhere, a final LayerNorm, tied
lm_head). Any other model_type is refused in one line naming these.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ContextLimitError, ModelError, UnsupportedError
from ..ir import T, Builder, Graph, Shaped, State, Var

FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "phi3", "gemma", "gpt_neox", "opt")
_LLAMA_LIKE = ("llama", "mistral", "qwen2")


def _get(cfg: dict, *names, default=None, kind=int):
    for n in names:
        if cfg.get(n) is not None:
            v = cfg[n]
            try:
                if kind is int and (isinstance(v, bool) or int(v) != v):
                    raise ValueError
                return kind(v)
            except (TypeError, ValueError):
                raise ModelError(f"config.json of a {cfg.get('model_type')} model: {n} = {v!r} is not "
                                 f"{'an integer' if kind is int else 'a number'}") from None
    if default is not None:
        return default
    raise ModelError(f"config.json of a {cfg.get('model_type')} model lacks {names[0]!r}")


class _Step:
    """Equations of one decode step, appended in the importer's order."""

    def __init__(self, ctx: int) -> None:
        self.g = Graph(vars={}, consts={}, eqns=[], inputs=(), outputs={}, states={}, meta={})
        self.b = Builder(self.g)
        self.ctx = ctx
        self.g.vars["input_ids"] = Var("input_ids", (1,), "i64")
        self.g.vars["position_ids"] = Var("position_ids", (1,), "i64")
        self.g.vars["attention_mask"] = Var("attention_mask", (T,), "f32")

    def op(self, prim, inputs, hint, dtype="f32", **params) -> str:
        return self.b.eqn(prim, inputs, dtype=dtype, hint=hint, **params)

    def k(self, value, shape=(), hint="k") -> str:
        return self.b.const(np.full(shape, value, np.float32), hint)

    def w(self, name: str, *shape) -> str:
        self.g.consts[name] = Shaped(shape, np.float32, name)
        return name

    def state(self, layer: int, kind: str, heads: int, head_dim: int) -> str:
        name = f"kv.{layer}.{kind}"
        self.g.states[name] = State(name, layer, kind, heads, head_dim)
        return name

    def heads(self, x: str, n: int, hd: int, hint: str) -> str:
        """[1, 1, n * hd] -> [1, n, 1, hd]"""
        r = self.op("reshape", [x], hint, shape=(1, 1, n, hd))
        return self.op("transpose", [r], hint, perm=[0, 2, 1, 3])

    def attention(self, q: str, k: str, v: str, layer: int, nh: int, nkv: int, hd: int, qscale_shape) -> str:
        """kv_append, the scale on q and on the scores (sdpa's sqrt of 1/sqrt(hd) each), mask, softmax, the
        NaN guard, the values: the attention output [1, nh, 1, hd]."""
        pk = self.op("kv_append", [k], f"present.{layer}.key", state=self.state(layer, "k", nkv, hd))
        pv = self.op("kv_append", [v], f"present.{layer}.value", state=self.state(layer, "v", nkv, hd))
        s = float(np.float32(1.0 / np.sqrt(np.sqrt(hd))))
        qs = self.op("binary", [q, self.k(s, qscale_shape)], "q", op="mul")
        scores = self.op("attn_qk", [qs, pk], "scores", group=nh // nkv)
        scaled = self.op("binary", [scores, self.k(s, (), "kscale")], "scaled", op="mul")
        masked = self.op("mask_fill", [scaled, "attention_mask"], "masked", fill=float("-inf"))
        p = self.op("softmax", [masked], "softmax", axis=3)
        nan = self.op("unary", [p], "isnan", dtype="bool", op="isnan")
        p = self.op("where", [nan, self.k(0.0, (1,)), p], "probs")
        return self.op("attn_pv", [p, pv], "attn", group=nh // nkv)

    def finish(self, logits_src: str, vocab: int, hidden: int, head: str) -> Graph:
        y = self.op("linear", [logits_src, head], "logits")
        self.g.outputs = {"logits": y}
        used = {i for e in self.g.eqns for i in e.inputs}
        self.g.inputs = tuple(n for n in ("input_ids", "position_ids", "attention_mask") if n in used)
        return self.g.verify()


def _rotary_tables(ctx: int, hd: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of position x inverse frequency, each half repeated ([ctx, 1, 1, hd]), in float32 as the
    Hugging Face rotary embedding computes them."""
    inv = (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))).astype(np.float32)
    freqs = np.arange(ctx, dtype=np.float32)[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return (np.cos(emb).astype(np.float32).reshape(ctx, 1, 1, hd), np.sin(emb).astype(np.float32).reshape(ctx, 1, 1, hd))


class _Rope(_Step):
    """A step of a rotary decoder with RMSNorm (Llama and its kin): the pieces their layers share."""

    def __init__(self, ctx: int, hidden: int, hd: int, eps: float, theta: float) -> None:
        super().__init__(ctx)
        self.H, self.hd, self.eps, self.theta = hidden, hd, float(np.float32(eps)), theta
        self.tables: dict = {}
        self.pos: dict = {}  # the importer's CSE leaves one gather of each table, where the first layer needs it

    def embed(self, V: int) -> str:
        ids = self.op("reshape", ["input_ids"], "input_ids", dtype="i64", shape=(1, 1))
        return self.op("gather", [self.w("model.embed_tokens.weight", V, self.H), ids], "embed_tokens")

    def rmsnorm(self, x: str, name: str, one_plus: bool = False) -> str:
        """x / sqrt(mean(x^2) + eps), then weight * that; one_plus (Gemma): that * (1 + weight), which the export
        folds into one constant"""
        p = self.op("binary", [x, self.k(2.0)], name, op="pow")
        m = self.op("reduce", [p], name, op="mean", axes=[2], keepdims=True)
        a = self.op("binary", [m, self.k(self.eps)], name, op="add")
        r = self.op("binary", [self.k(1.0), self.op("unary", [a], name, op="sqrt")], name, op="div")
        y = self.op("binary", [x, r], name, op="mul")
        if one_plus:
            return self.op("binary", [y, self.w(f"{name}.1+weight", self.H)], name, op="mul")
        return self.op("binary", [self.w(f"{name}.weight", self.H), y], name, op="mul")

    def linear(self, x: str, name: str, k: int, n: int, bias: bool = False) -> str:
        ins = [x, self.w(f"{name}.weight", k, n)] + ([self.w(f"{name}.bias", n)] if bias else [])
        return self.op("linear", ins, name)

    def qkv(self, h: str, pre: str, nh: int, nkv: int, bias: bool = False) -> tuple[str, str, str]:
        """q, k and v ([1, heads, 1, hd]) from three projections"""
        H, hd = self.H, self.hd
        q = self.heads(self.linear(h, f"{pre}.self_attn.q_proj", H, nh * hd, bias), nh, hd, f"{pre}.q")
        k = self.heads(self.linear(h, f"{pre}.self_attn.k_proj", H, nkv * hd, bias), nkv, hd, f"{pre}.k")
        v = self.heads(self.linear(h, f"{pre}.self_attn.v_proj", H, nkv * hd, bias), nkv, hd, f"{pre}.v")
        return q, k, v

    def gathered(self, which: str) -> str:
        if not self.tables:
            cos_t, sin_t = _rotary_tables(self.ctx, self.hd, self.theta)
            self.tables = {"cos": self.b.const(cos_t, "table.cos"), "sin": self.b.const(sin_t, "table.sin")}
        if which not in self.pos:
            self.pos[which] = self.op("gather", [self.tables[which], "position_ids"], "pos")
        return self.pos[which]

    def rotate(self, x: str, name: str) -> str:
        """x * cos + rotate_half(x) * sin"""
        hd = self.hd
        a = self.op("binary", [x, self.gathered("cos")], name, op="mul")
        lo = self.op("slice", [x], name, starts=[0], ends=[hd // 2], axes=[3], steps=[1])
        hi = self.op("slice", [x], name, starts=[hd // 2], ends=[hd], axes=[3], steps=[1])
        c = self.op("concat", [self.op("unary", [hi], name, op="neg"), lo], name, axis=3)
        return self.op("binary", [a, self.op("binary", [c, self.gathered("sin")], name, op="mul")], name, op="add")

    def attend(self, x: str, q: str, k: str, v: str, layer: int, pre: str, nh: int, nkv: int) -> str:
        """The rotary on q and k, the attention and o_proj: x plus the attention's output."""
        hd = self.hd
        q, k = self.rotate(q, f"{pre}.q_rot"), self.rotate(k, f"{pre}.k_rot")
        o = self.attention(q, k, v, layer, nh, nkv, hd, ())
        o = self.op("reshape", [self.op("transpose", [o], pre, perm=[0, 2, 1, 3])], pre, shape=(1, 1, nh * hd))
        return self.op("binary", [x, self.linear(o, f"{pre}.self_attn.o_proj", nh * hd, self.H)], pre, op="add")

    def logits(self, x: str, V: int, tied: bool, one_plus: bool = False) -> Graph:
        """model.norm, lm_head"""
        h = self.rmsnorm(x, "model.norm", one_plus)
        # tied: the export's lm_head reads Transpose(embed_tokens), a constant of its own
        return self.finish(h, V, self.H, self.w("lm_head.weight" if not tied else "model.embed_tokens.weight.T",
                                                 self.H, V))


def _rope_config(cfg: dict, eps: float = 1e-6, head_dim: int = 0) -> tuple:
    """Layers, hidden size, heads, KV heads, head size, MLP size, vocabulary, RMSNorm epsilon and rotary base of a
    Llama-like config (head_dim: the family's default head size; else hidden size / heads)."""
    mt = cfg["model_type"]
    L = _get(cfg, "num_hidden_layers")
    H = _get(cfg, "hidden_size")
    nh = _get(cfg, "num_attention_heads")
    nkv = _get(cfg, "num_key_value_heads", default=nh)
    hd = _get(cfg, "head_dim", default=head_dim or (H // nh if nh and H % nh == 0 else 0))
    inner = _get(cfg, "intermediate_size")
    V = _get(cfg, "vocab_size")
    eps = _get(cfg, "rms_norm_eps", default=eps, kind=float)
    theta = _get(cfg, "rope_theta", default=10000.0, kind=float)
    if not hd or nh % nkv or hd % 2:
        raise ModelError(f"config.json of a {mt} model: {nh} heads, {nkv} KV heads and head size {hd} do not fit "
                         "(heads a multiple of the KV heads, an even head size)")
    if cfg.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise UnsupportedError(f"config.json of a {mt} model: partial_rotary_factor {cfg['partial_rotary_factor']}")
    return L, H, nh, nkv, hd, inner, V, eps, theta


def _no_rope_scaling(cfg: dict) -> None:
    rs = cfg.get("rope_scaling")
    if rs is not None:
        kind = rs.get("rope_type", rs.get("type")) if isinstance(rs, dict) else rs
        raise UnsupportedError(f"config.json of a {cfg['model_type']} model: rope_scaling {kind!r} is not built from a "
                               "config yet")


def _llama(cfg: dict, ctx: int) -> Graph:
    mt = cfg["model_type"]
    L, H, nh, nkv, hd, inner, V, eps, theta = _rope_config(cfg)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedError(f"config.json of a {mt} model: hidden_act {act!r} (the config compile builds silu)")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise UnsupportedError(f"config.json of a {mt} model: {flag} true is not built from a config yet")
    qkv_bias = mt == "qwen2"
    tied = bool(cfg.get("tie_word_embeddings", False))
    s = _Rope(ctx, H, hd, eps, theta)
    x = s.embed(V)
    for layer in range(L):
        pre = f"model.layers.{layer}"
        q, k, v = s.qkv(s.rmsnorm(x, f"{pre}.input_layernorm"), pre, nh, nkv, qkv_bias)
        x = s.attend(x, q, k, v, layer, pre, nh, nkv)
        h = s.rmsnorm(x, f"{pre}.post_attention_layernorm")
        gate = s.linear(h, f"{pre}.mlp.gate_proj", H, inner)
        a = s.op("binary", [gate, s.op("unary", [gate], pre, op="sigmoid")], pre, op="mul")
        m = s.op("binary", [a, s.linear(h, f"{pre}.mlp.up_proj", H, inner)], pre, op="mul")
        x = s.op("binary", [x, s.linear(m, f"{pre}.mlp.down_proj", inner, H)], pre, op="add")
    return s.logits(x, V, tied)


def _phi3(cfg: dict, ctx: int) -> Graph:
    """Llama's layer with the packed projections of Phi-3: qkv_proj and gate_up_proj, their outputs sliced (the
    importer keeps the packed weights); the MLP is up * silu(gate)."""
    L, H, nh, nkv, hd, inner, V, eps, theta = _rope_config(cfg, eps=1e-5)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedError(f"config.json of a phi3 model: hidden_act {act!r} (the config compile builds silu)")
    _no_rope_scaling(cfg)
    s = _Rope(ctx, H, hd, eps, theta)
    x = s.embed(V)

    def cut(y, name, *bounds):
        return [s.op("slice", [y], name, starts=[a], ends=[b], axes=[2], steps=[1]) for a, b in zip(bounds, bounds[1:])]

    for layer in range(L):
        pre = f"model.layers.{layer}"
        h = s.rmsnorm(x, f"{pre}.input_layernorm")
        qkv = s.linear(h, f"{pre}.self_attn.qkv_proj", H, (nh + 2 * nkv) * hd)
        q, k, v = cut(qkv, pre, 0, nh * hd, (nh + nkv) * hd, (nh + 2 * nkv) * hd)
        q, k, v = s.heads(q, nh, hd, f"{pre}.q"), s.heads(k, nkv, hd, f"{pre}.k"), s.heads(v, nkv, hd, f"{pre}.v")
        x = s.attend(x, q, k, v, layer, pre, nh, nkv)
        h = s.rmsnorm(x, f"{pre}.post_attention_layernorm")
        gate, up = cut(s.linear(h, f"{pre}.mlp.gate_up_proj", H, 2 * inner), pre, 0, inner, 2 * inner)
        a = s.op("binary", [gate, s.op("unary", [gate], pre, op="sigmoid")], pre, op="mul")
        m = s.op("binary", [up, a], pre, op="mul")
        x = s.op("binary", [x, s.linear(m, f"{pre}.mlp.down_proj", inner, H)], pre, op="add")
    return s.logits(x, V, bool(cfg.get("tie_word_embeddings", False)))


def _gemma(cfg: dict, ctx: int) -> Graph:
    """Llama's layer with Gemma's changes: the embedding times sqrt(hidden), RMSNorm's gain 1 + weight, a gated
    gelu (tanh) MLP, head_dim from the config (256 by default) and a tied lm_head by default."""
    L, H, nh, nkv, hd, inner, V, eps, theta = _rope_config(cfg, head_dim=256)
    for key in ("hidden_activation", "hidden_act"):  # older transformers read the first, newer ones the second
        if cfg.get(key) not in (None, "gelu_pytorch_tanh"):
            raise UnsupportedError(f"config.json of a gemma model: {key} {cfg[key]!r} (the config compile builds "
                                   "gelu_pytorch_tanh)")
    if cfg.get("attention_bias"):
        raise UnsupportedError("config.json of a gemma model: attention_bias true is not built from a config yet")
    _no_rope_scaling(cfg)
    s = _Rope(ctx, H, hd, eps, theta)
    x = s.op("binary", [s.embed(V), s.k(H ** 0.5)], "embed_scale", op="mul")  # the normalizer, in float32
    c = float(np.float32(np.sqrt(2 / np.pi)))

    def gelu(g, pre):  # gelu_pytorch_tanh as exported: 0.5 (g (1 + tanh(c (g + 0.044715 (g (g g))))))
        g3 = s.op("binary", [g, s.op("binary", [g, g], pre, op="mul")], pre, op="mul")
        t = s.op("binary", [g, s.op("binary", [s.k(0.044715), g3], pre, op="mul")], pre, op="add")
        t = s.op("unary", [s.op("binary", [s.k(c), t], pre, op="mul")], pre, op="tanh")
        y = s.op("binary", [g, s.op("binary", [s.k(1.0), t], pre, op="add")], pre, op="mul")
        return s.op("binary", [s.k(0.5), y], pre, op="mul")

    for layer in range(L):
        pre = f"model.layers.{layer}"
        q, k, v = s.qkv(s.rmsnorm(x, f"{pre}.input_layernorm", one_plus=True), pre, nh, nkv)
        x = s.attend(x, q, k, v, layer, pre, nh, nkv)
        h = s.rmsnorm(x, f"{pre}.post_attention_layernorm", one_plus=True)
        a = gelu(s.linear(h, f"{pre}.mlp.gate_proj", H, inner), pre)
        m = s.op("binary", [a, s.linear(h, f"{pre}.mlp.up_proj", H, inner)], pre, op="mul")
        x = s.op("binary", [x, s.linear(m, f"{pre}.mlp.down_proj", inner, H)], pre, op="add")
    return s.logits(x, V, bool(cfg.get("tie_word_embeddings", True)), one_plus=True)


def _gpt2(cfg: dict, ctx: int) -> Graph:
    L = _get(cfg, "n_layer", "num_hidden_layers")
    H = _get(cfg, "n_embd", "hidden_size")
    nh = _get(cfg, "n_head", "num_attention_heads")
    V = _get(cfg, "vocab_size")
    inner = _get(cfg, "n_inner", default=4 * H)
    eps = float(np.float32(_get(cfg, "layer_norm_epsilon", default=1e-5, kind=float)))
    if nh < 1 or H % nh:
        raise ModelError(f"config.json of a gpt2 model: n_embd {H} is not a multiple of n_head {nh}")
    hd = H // nh
    act = cfg.get("activation_function", "gelu_new")
    if act != "gelu_new":
        raise UnsupportedError(f"config.json of a gpt2 model: activation_function {act!r} (the config compile builds "
                               "gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if cfg.get(flag):
            raise UnsupportedError(f"config.json of a gpt2 model: {flag} true is not built from a config yet")
    if cfg.get("scale_attn_weights") is False:
        raise UnsupportedError("config.json of a gpt2 model: scale_attn_weights false is not built from a config yet")
    s = _Step(ctx)
    ids = s.op("reshape", ["input_ids"], "input_ids", dtype="i64", shape=(1, 1))
    x = s.op("gather", [s.w("transformer.wte.weight", V, H), ids], "wte")
    # the learned positions, tabulated by the importer for the context ([ctx, 1, H])
    wpe = s.w("table.transformer.wpe", ctx, 1, H)
    x = s.op("binary", [x, s.op("gather", [wpe, "position_ids"], "wpe")], "embed", op="add")

    def ln(x, name):
        return s.op("layernorm", [x, s.w(f"{name}.weight", H), s.w(f"{name}.bias", H)], name, axis=2, eps=eps)

    def conv1d(x, name, k, n):  # Optimum: [1, 1, k] -> [1, k] -> Gemm -> [1, 1, n]
        r = s.op("reshape", [x], name, shape=(1, k))
        y = s.op("linear", [r, s.w(f"{name}.weight", k, n), s.w(f"{name}.bias", n)], name)
        return s.op("reshape", [y], name, shape=(1, 1, n))

    for layer in range(L):
        pre = f"transformer.h.{layer}"
        qkv = conv1d(ln(x, f"{pre}.ln_1"), f"{pre}.attn.c_attn", H, 3 * H)
        q, k, v = (s.op("slice", [qkv], pre, starts=[i * H], ends=[(i + 1) * H], axes=[2], steps=[1]) for i in range(3))
        k, v, q = s.heads(k, nh, hd, f"{pre}.k"), s.heads(v, nh, hd, f"{pre}.v"), s.heads(q, nh, hd, f"{pre}.q")
        o = s.attention(q, k, v, layer, nh, nh, hd, (1,))
        o = s.op("reshape", [s.op("transpose", [o], pre, perm=[0, 2, 1, 3])], pre, shape=(1, 1, H))
        x = s.op("binary", [conv1d(o, f"{pre}.attn.c_proj", H, H), x], pre, op="add")
        f = conv1d(ln(x, f"{pre}.ln_2"), f"{pre}.mlp.c_fc", H, inner)
        half = s.op("binary", [f, s.k(0.5)], pre, op="mul")  # gelu_new: 0.5 f (1 + tanh(c (f + 0.044715 f^3)))
        cube = s.op("binary", [s.op("binary", [f, s.k(3.0)], pre, op="pow"), s.k(0.044715)], pre, op="mul")
        t = s.op("binary", [s.op("binary", [f, cube], pre, op="add"), s.k(float(np.float32(np.sqrt(2 / np.pi))))],
                 pre, op="mul")
        g = s.op("binary", [half, s.op("binary", [s.op("unary", [t], pre, op="tanh"), s.k(1.0)], pre, op="add")], pre,
                 op="mul")
        x = s.op("binary", [x, conv1d(g, f"{pre}.mlp.c_proj", inner, H)], pre, op="add")
    h = ln(x, "transformer.ln_f")
    return s.finish(h, V, H, s.w("transformer.wte.weight.T", H, V))  # tied: Transpose(wte)


def _sizes(cfg: dict, family: str) -> tuple[int, int, int, int, int]:
    """(layers, hidden, heads, vocab, head size) of a config that names them as Hugging Face's hidden_size /
    num_attention_heads families do; a hidden size the heads do not divide is one line."""
    L = _get(cfg, "num_hidden_layers")
    H = _get(cfg, "hidden_size")
    nh = _get(cfg, "num_attention_heads")
    V = _get(cfg, "vocab_size")
    if nh < 1 or H % nh:
        raise ModelError(f"config.json of {family} model: hidden_size {H} is not a multiple of num_attention_heads {nh}")
    return L, H, nh, V, H // nh


def _gpt_neox(cfg: dict, ctx: int) -> Graph:
    L, H, nh, V, hd = _sizes(cfg, "a gpt_neox")
    inner = _get(cfg, "intermediate_size")
    eps = float(np.float32(_get(cfg, "layer_norm_eps", default=1e-5, kind=float)))
    theta = _get(cfg, "rope_theta", "rotary_emb_base", default=10000.0, kind=float)
    rot = int(hd * _get(cfg, "partial_rotary_factor", "rotary_pct", default=0.25, kind=float))  # HF default
    if not 0 < rot < hd or rot % 2:
        raise UnsupportedError(f"config.json of a gpt_neox model: {rot} rotary dims of a head size {hd} (the config "
                               "compile builds an even partial rotary, fewer dims than the head size)")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise UnsupportedError(f"config.json of a gpt_neox model: hidden_act {act!r} (the config compile builds gelu)")
    if cfg.get("use_parallel_residual") is False:
        raise UnsupportedError("config.json of a gpt_neox model: use_parallel_residual false is not built from a "
                               "config yet")
    if cfg.get("rope_scaling") is not None:
        raise UnsupportedError("config.json of a gpt_neox model: rope_scaling is not built from a config yet")
    bias = cfg.get("attention_bias", True) is not False
    tied = bool(cfg.get("tie_word_embeddings", False))
    s = _Step(ctx)
    ids = s.op("reshape", ["input_ids"], "input_ids", dtype="i64", shape=(1, 1))
    x = s.op("gather", [s.w("gpt_neox.embed_in.weight", V, H), ids], "embed_in")
    # the rotary tables cover the rotary dims only ([ctx, 1, 1, rot])
    cos_t, sin_t = _rotary_tables(ctx, rot, theta)
    tables = {"cos": s.b.const(cos_t, "table.cos"), "sin": s.b.const(sin_t, "table.sin")}
    pos: dict = {}  # one gather of each table, where the first layer needs it (the importer's CSE)

    def gathered(which):
        if which not in pos:
            pos[which] = s.op("gather", [tables[which], "position_ids"], "pos")
        return pos[which]

    def ln(x, name):
        return s.op("layernorm", [x, s.w(f"{name}.weight", H), s.w(f"{name}.bias", H)], name, axis=2, eps=eps)

    def linear(x, name, k, n, b=True):
        return s.op("linear", [x, s.w(f"{name}.weight", k, n)] + ([s.w(f"{name}.bias", n)] if b else []), name)

    def cut(x, lo, hi, name):
        return s.op("slice", [x], name, starts=[lo], ends=[hi], axes=[3], steps=[1])

    def rotate(x, name):
        """x * cos + rotate_half(x) * sin, on the rotary dims"""
        a = s.op("binary", [x, gathered("cos")], name, op="mul")
        lo, hi = cut(x, 0, rot // 2, name), cut(x, rot // 2, rot, name)
        c = s.op("concat", [s.op("unary", [hi], name, op="neg"), lo], name, axis=3)
        return s.op("binary", [a, s.op("binary", [c, gathered("sin")], name, op="mul")], name, op="add")

    for layer in range(L):
        pre = f"gpt_neox.layers.{layer}"
        qkv = linear(ln(x, f"{pre}.input_layernorm"), f"{pre}.attention.query_key_value", H, 3 * H, bias)
        # packed per head: [1, 1, nh * 3 hd] -> [1, nh, 1, 3 hd], then q, k, v of each head
        qkv = s.op("transpose", [s.op("reshape", [qkv], pre, shape=(1, 1, nh, 3 * hd))], pre, perm=[0, 2, 1, 3])
        q, k, v = (cut(qkv, i * hd, (i + 1) * hd, pre) for i in range(3))
        q_rot, q_pass = cut(q, 0, rot, pre), cut(q, rot, hd, pre)
        k_rot, k_pass = cut(k, 0, rot, pre), cut(k, rot, hd, pre)
        q_rot, k_rot = rotate(q_rot, f"{pre}.q_rot"), rotate(k_rot, f"{pre}.k_rot")
        q = s.op("concat", [q_rot, q_pass], pre, axis=3)
        k = s.op("concat", [k_rot, k_pass], pre, axis=3)
        o = s.attention(q, k, v, layer, nh, nh, hd, ())
        o = s.op("reshape", [s.op("transpose", [o], pre, perm=[0, 2, 1, 3])], pre, shape=(1, 1, H))
        a = linear(o, f"{pre}.attention.dense", H, H, bias)
        # the parallel residual: x + attn(ln_1(x)) + mlp(ln_2(x))
        f = linear(ln(x, f"{pre}.post_attention_layernorm"), f"{pre}.mlp.dense_h_to_4h", H, inner)
        e = s.op("unary", [s.op("binary", [f, s.k(np.sqrt(2.0))], pre, op="div")], pre, op="erf")  # exact gelu:
        g = s.op("binary", [s.op("binary", [f, s.op("binary", [e, s.k(1.0)], pre, op="add")], pre, op="mul"),
                            s.k(0.5)], pre, op="mul")  # f (1 + erf(f / sqrt 2)) 0.5
        m = linear(g, f"{pre}.mlp.dense_4h_to_h", inner, H)
        x = s.op("binary", [s.op("binary", [m, a], pre, op="add"), x], pre, op="add")
    h = ln(x, "gpt_neox.final_layer_norm")
    # untied: embed_out; tied, the export's head would read Transpose(embed_in), a constant of its own
    return s.finish(h, V, H, s.w("embed_out.weight" if not tied else "gpt_neox.embed_in.weight.T", H, V))


def _opt(cfg: dict, ctx: int) -> Graph:
    L, H, nh, V, hd = _sizes(cfg, "an opt")
    inner = _get(cfg, "ffn_dim")
    proj = _get(cfg, "word_embed_proj_dim", default=H)
    eps = float(np.float32(1e-5))  # OPT's LayerNorms: torch's default epsilon, not a config value
    if proj != H:
        raise UnsupportedError(f"config.json of an opt model: word_embed_proj_dim {proj} != hidden_size {H} "
                               "(project_in and project_out) is not built from a config yet")
    act = cfg.get("activation_function", "relu")
    if act != "relu":
        raise UnsupportedError(f"config.json of an opt model: activation_function {act!r} (the config compile builds "
                               "relu)")
    for flag in ("do_layer_norm_before", "enable_bias", "layer_norm_elementwise_affine"):
        if cfg.get(flag) is False:
            raise UnsupportedError(f"config.json of an opt model: {flag} false is not built from a config yet")
    if cfg.get("_remove_final_layer_norm"):
        raise UnsupportedError("config.json of an opt model: _remove_final_layer_norm true is not built from a config "
                               "yet")
    tied = bool(cfg.get("tie_word_embeddings", True))
    s = _Step(ctx)
    ids = s.op("reshape", ["input_ids"], "input_ids", dtype="i64", shape=(1, 1))
    embed = s.w("model.decoder.embed_tokens.weight", V, H)
    x = s.op("gather", [embed, ids], "embed_tokens")
    # the learned positions (offset 2: row p + 2 of embed_positions), tabulated by the importer for the context
    table = s.w("table.model.decoder.embed_positions", ctx, 1, H)
    x = s.op("binary", [x, s.op("gather", [table, "position_ids"], "pos")], "embed", op="add")

    def ln(x, name, axis=2):
        return s.op("layernorm", [x, s.w(f"{name}.weight", H), s.w(f"{name}.bias", H)], name, axis=axis, eps=eps)

    def linear(x, name, w, k, n):
        return s.op("linear", [x, s.w(f"{name}.{w}", k, n), s.w(f"{name}.bias", n)], name)

    scaling = float(np.float32(hd ** -0.5))
    for layer in range(L):
        pre = f"model.decoder.layers.{layer}"
        h = ln(x, f"{pre}.self_attn_layer_norm")
        q = s.op("binary", [linear(h, f"{pre}.self_attn.q_proj", "weight", H, H), s.k(scaling)], pre, op="mul")
        q = s.heads(q, nh, hd, f"{pre}.q")
        k = linear(h, f"{pre}.self_attn.k_proj", "weight", H, H)
        v = linear(h, f"{pre}.self_attn.v_proj", "weight", H, H)
        k, v = s.heads(k, nh, hd, f"{pre}.k"), s.heads(v, nh, hd, f"{pre}.v")
        # the attention: q already scaled (sdpa's scale 1, its square root on q), the mask fills with the float32
        # minimum, and no NaN guard after the softmax
        pk = s.op("kv_append", [k], f"present.{layer}.key", state=s.state(layer, "k", nh, hd))
        pv = s.op("kv_append", [v], f"present.{layer}.value", state=s.state(layer, "v", nh, hd))
        scores = s.op("attn_qk", [s.op("binary", [q, s.k(1.0)], "q", op="mul"), pk], "scores", group=1)
        masked = s.op("mask_fill", [scores, "attention_mask"], "masked", fill=float(np.finfo(np.float32).min))
        o = s.op("attn_pv", [s.op("softmax", [masked], "softmax", axis=3), pv], "attn", group=1)
        o = s.op("reshape", [s.op("transpose", [o], pre, perm=[0, 2, 1, 3])], pre, shape=(1, 1, H))
        x = s.op("binary", [x, linear(o, f"{pre}.self_attn.out_proj", "weight", H, H)], pre, op="add")
        # the MLP on [1, H] (the export's fc1/fc2 are Gemms; their weights keep the importer's names)
        r = s.op("reshape", [x], pre, shape=(1, H))
        f = s.op("unary", [linear(ln(r, f"{pre}.final_layer_norm", axis=1), f"{pre}.fc1", "weight.T", H, inner)], pre,
                 op="relu")
        r = s.op("binary", [r, linear(f, f"{pre}.fc2", "weight.T", inner, H)], pre, op="add")
        x = s.op("reshape", [r], pre, shape=(1, 1, H))
    h = ln(x, "model.decoder.final_layer_norm")
    # tied: the export's lm_head reads embed_tokens transposed, a constant of its own
    return s.finish(h, V, H, s.w("model.decoder.embed_tokens.weight_transposed" if tied else "lm_head.weight", H, V))


def _limits(cfg: dict) -> tuple[int | None, str]:
    """The positions the model can serve at most (a learned table, a sliding window), and why."""
    mt = cfg["model_type"]
    if mt in ("gpt2", "opt"):
        return _get(cfg, "n_positions", "max_position_embeddings"), "its learned position table ends there"
    window = cfg.get("sliding_window")
    if window and (mt in ("mistral", "phi3") or cfg.get("use_sliding_window")):
        return int(window), ("its sliding-window attention is not implemented beyond its window yet")
    return None, ""


def import_config(path, max_context: int | None, default_context: int) -> tuple[Graph, dict, int]:
    """config.json -> (the IR of one decode step, the importer's facts, the context it was built for): the
    import pass of a config compile. Without max_context: default_context, capped by max_position_embeddings
    and by the model's own limit; an explicit max_context beyond that limit is one clear line."""
    from ..sizing import load_config

    cfg = load_config(path)
    mt = cfg["model_type"]
    if mt not in FAMILIES:
        raise UnsupportedError(f"{os.path.basename(os.fspath(path))}: model_type {mt!r} is not built from a config "
                               f"yet (the config compile builds {', '.join(FAMILIES)}; `lpu check` sizes any of "
                               "the sizing families)")
    limit, why = _limits(cfg)
    if max_context is None:
        ctx = min(default_context, _get(cfg, "max_position_embeddings", "n_positions", default=default_context))
        ctx = min(ctx, limit) if limit else ctx
    else:
        ctx = int(max_context)
        if limit and ctx > limit:
            raise ContextLimitError(f"--max-context {ctx}: the model supports at most {limit} positions here: {why}; "
                                    f"use --max-context {limit} or less, or leave it out", limit=limit)
    if ctx < 1:
        raise ModelError(f"{path}: max_position_embeddings must be at least 1")
    g = {"gpt2": _gpt2, "phi3": _phi3, "gemma": _gemma, "gpt_neox": _gpt_neox, "opt": _opt}.get(mt, _llama)(cfg, ctx)
    facts = {"family": mt, "exporter": "config", "max_context": ctx, "source": os.fspath(path),
             "inputs": {"input_ids": "input_ids", "position_ids": "position_ids", "attention_mask": "attention_mask",
                        "past": []}}
    return g, facts, ctx
