"""MoE (com.microsoft): a mixture-of-experts feed-forward block, as ONNX Runtime defines it (checked
against its CPU kernel): router_probs are the router's logits [rows, E];
    p = softmax(router_probs); the k largest p_e (ties: the lower e first); with
    normalize_routing_weights they are divided by their sum
    y = sum over the k chosen e of p_e * (act(x @ fc1[e]^T + b1[e]) @ fc2[e]^T + b2[e])
fc1 [E, inter (x2 for swiglu), hidden], fc2 [E, hidden, inter]. act: relu, gelu (tanh form), silu,
identity, or swiglu with swiglu_fusion = 1: interleaved (gate = even columns, linear = odd), gate =
min(gate, limit), linear = clip(linear, -limit, limit) when swiglu_limit is given, then
gate * sigmoid(alpha * gate) * (linear + beta).

Expanded into standard operators: Softmax, TopK, and per chosen expert a Gather of its weight matrices
by the runtime expert number feeding a MatMul (IR expert_linear: only the k chosen experts' weights are
read), so a token always runs k experts and the schedule stays static. fc3 (a separate gate matrix, which
ONNX Runtime's CPU kernel does not implement either), the sparse mixer and one row per token only."""
import numpy as np

from ..values import K
from ._base import Expansion, OpSpec
from ._fused import expanded_only

ACTIVATIONS = ("relu", "gelu", "silu", "identity", "swiglu")


def _expand(ctx, node, vals):
    if node.input(6) or node.input(7):
        raise ctx.unsupported("fc3 expert weights (a separate gate matrix) are not supported")
    E = Expansion(ctx, node)
    return expand_experts(ctx, node, E, vals[0], (node.input(2), vals[2]), node.input(3),
                          (node.input(4), vals[4]), node.input(5))


def expand_experts(ctx, node, E, x_val, fc1, b1, fc2, b2):
    """The standard operators of a MoE block; fc1 / fc2: (tensor name, its value), biases by name ('' none)."""
    if node.attr("use_sparse_mixer", 0):
        raise ctx.unsupported("use_sparse_mixer is not supported")
    act = node.attr("activation_type", "relu")
    act = act.decode() if isinstance(act, bytes) else act
    if act not in ACTIVATIONS:
        raise ctx.unsupported(f"activation_type {act!r} (supported: {', '.join(ACTIVATIONS)})")
    if act == "swiglu" and node.attr("swiglu_fusion", 0) != 1:
        raise ctx.unsupported(f"swiglu_fusion {node.attr('swiglu_fusion', 0)} (supported: 1, interleaved)")
    k = int(node.attr("k", 1))
    for (_, v), what in ((fc1, "fc1_experts_weights"), (fc2, "fc2_experts_weights")):
        if not isinstance(v, K):
            raise ctx.unsupported(f"{what} must be a constant")
    w1, w2 = fc1[1].value, fc2[1].value
    xs = ctx.shape(x_val)
    hidden = xs[-1]
    n_exp = w1.shape[0]
    if w1.ndim != 3 or w2.ndim != 3 or w1.shape[2] != hidden or w2.shape[1] != hidden or w2.shape[0] != n_exp:
        raise ctx.unsupported(f"expert weights fc1 {list(w1.shape)} / fc2 {list(w2.shape)} for hidden size {hidden}: "
                              "expected [E, inter, hidden] and [E, hidden, inter]")
    n1, inter = w1.shape[1], w2.shape[2]
    if n1 != (2 * inter if act == "swiglu" else inter):
        raise ctx.unsupported(f"fc1 gives {n1} columns for an inner size of {inter} ({act})")
    if not 1 <= k <= n_exp:
        raise ctx.unsupported(f"k {k} for {n_exp} experts")
    i64 = lambda v: E.const(np.asarray(v, np.int64))  # noqa: E731
    f32 = lambda v: E.const(np.float32(v))  # noqa: E731
    probs = E.one("Softmax", [node.input(1)], axis=-1)
    topv, topi = E.op("TopK", [probs, i64([k])], n_out=2, axis=-1)
    if node.attr("normalize_routing_weights", 0):
        topv = E.one("Div", [topv, E.one("ReduceSum", [topv, i64([-1])], keepdims=1)])
    x_col = E.one("Reshape", [node.input(0), i64([hidden, 1])])
    total = None
    for j in range(k):
        e = E.one("Reshape", [E.one("Gather", [topi, i64(j)], axis=-1), i64([1])])
        h = E.one("Reshape", [E.one("MatMul", [E.one("Gather", [fc1[0], e]), x_col]), i64([1, n1])])
        if b1:
            h = E.one("Add", [h, E.one("Gather", [b1, e])])
        if act == "swiglu":
            gate = E.one("Slice", [h, i64([0]), i64([n1]), i64([-1]), i64([2])])
            lin = E.one("Slice", [h, i64([1]), i64([n1]), i64([-1]), i64([2])])
            limit = node.attr("swiglu_limit", None)
            if limit is not None:
                gate = E.one("Min", [gate, f32(limit)])
                lin = E.one("Max", [E.one("Min", [lin, f32(limit)]), f32(-limit)])
            alpha, beta = node.attr("activation_alpha", 1.0), node.attr("activation_beta", 0.0)
            sig = E.one("Sigmoid", [E.one("Mul", [gate, f32(alpha)])])
            a = E.one("Mul", [E.one("Mul", [gate, sig]), E.one("Add", [lin, f32(beta)])])
        elif act == "relu":
            a = E.one("Relu", [h])
        elif act == "silu":
            a = E.one("Mul", [h, E.one("Sigmoid", [h])])
        elif act == "gelu":
            a = E.one("Gelu", [h], approximate="tanh")
        else:
            a = h
        y = E.one("Reshape", [E.one("MatMul", [E.one("Gather", [fc2[0], e]),
                                               E.one("Reshape", [a, i64([inter, 1])])]), i64([1, hidden])])
        if b2:
            y = E.one("Add", [y, E.one("Gather", [b2, e])])
        wj = E.one("Gather", [topv, i64(j)], axis=-1)
        y = E.one("Mul", [y, E.one("Reshape", [wj, i64([1, 1])])])
        total = y if total is None else E.one("Add", [total, y])
    out_shape = [int(d) for d in xs]
    E.op("Reshape", [total, i64(out_shape)], [node.outputs[0]])
    return E.nodes


OP = OpSpec("MoE", expanded_only, domains=("com.microsoft",), expand=_expand)
