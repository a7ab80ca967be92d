"""Mixture-of-experts in the backend: the emulated program against the IR evaluator (compiler.ireval, the
IR's numpy meaning) on decoders written in the IR with expert MLPs, over shapes that exercise the gathered
tiles (hidden and inner sizes above one 160-row tile and one 320-lane vector, so an expert's matrix is
several row and column blocks on both MXM units), expert counts, k, tied router scores (the lower index
wins, as ONNX TopK says), chip counts and mappings. The ONNX forms against ONNX Runtime are in
tests/e2e/test_forms.py and tests/e2e/test_moe_forms.py."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tinyir import moe_like

from compiler.driver import Options, compile_graph
from compiler.ireval import IrDecoder
from lpu import config
from lpu.decode import Decoder

PROMPT = [3, 1, 4]
N = 5
CTX = 320


@functools.lru_cache(maxsize=None)
def graph(hidden, inter, experts, k, tied=False, bias=True, normalize=True):
    return moe_like(hidden=hidden, inter=inter, experts=experts, k=k, tied=tied, bias=bias, normalize=normalize,
                    max_context=CTX)


def compiled(g, chips, partition, precision="fp32"):
    prog, _ = compile_graph(g, config.load("groqchip1", chips=chips),
                            Options(chips=chips, precision=precision, max_context=CTX, partition=partition))
    return prog


def check(case):
    hidden, inter, experts, k, tied, chips, partition = case
    g = graph(hidden, inter, experts, k, tied)
    res = Decoder(compiled(g, chips, partition)).generate(PROMPT, N)
    tokens, logits = IrDecoder(g, CTX).greedy(PROMPT, N)
    assert res.tokens == tokens
    err = np.abs(res.logits - logits).max() / np.abs(logits).max()
    assert err < 1e-4, err


# hidden, inter, experts, k, tied router scores, chips, mapping
FAST = [
    (64, 96, 8, 2, False, 1, "tp"),
    (352, 400, 6, 2, False, 1, "tp"),    # 3 row blocks x 2-3 column blocks per expert matrix, both units
    (64, 96, 20, 3, True, 2, "tp"),      # ties: the lower expert number first
    (128, 160, 8, 1, False, 2, "pp"),
]
SLOW = [
    (352, 400, 6, 2, False, 2, "tp"),
    (352, 400, 6, 4, True, 8, "tp"),
    (200, 700, 16, 2, False, 2, "pp"),
    (64, 96, 64, 8, True, 1, "tp"),
    (320, 320, 4, 4, False, 4, "tp"),    # k = E: every expert, in score order
]


@pytest.mark.parametrize("case", FAST, ids=str)
def test_emulated_experts_equal_the_ir(case):
    check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=str)
def test_emulated_experts_equal_the_ir_more_shapes(case):
    check(case)


def test_unnormalised_and_biasless_routing():
    g = moe_like(hidden=96, inter=128, experts=6, k=2, bias=False, normalize=False, max_context=CTX)
    res = Decoder(compiled(g, 1, "tp")).generate(PROMPT, N)
    tokens, logits = IrDecoder(g, CTX).greedy(PROMPT, N)
    assert res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-4


def test_cycles_grow_with_k_not_with_the_number_of_experts():
    """A token runs k experts: 8 -> 16 -> 32 experts at k = 2 changes the cycles per token by (almost)
    nothing, k = 2 -> 4 at 8 experts adds the work of two more experts per layer."""
    cyc = {}
    for experts, k in ((8, 2), (16, 2), (32, 2), (8, 4)):
        g = moe_like(hidden=200, inter=240, experts=experts, k=k, max_context=CTX)
        cyc[experts, k] = Decoder(compiled(g, 1, "tp", "fp16")).generate(PROMPT, 2).cycles_per_token[-1]
    more_k = cyc[8, 4] - cyc[8, 2]
    assert more_k > 0.2 * cyc[8, 2], cyc
    for experts in (16, 32):
        more_experts = cyc[experts, 2] - cyc[8, 2]
        assert abs(more_experts) < 0.02 * cyc[8, 2], cyc
        assert abs(more_experts) * 10 < more_k, cyc


def test_only_the_chosen_experts_are_read():
    """Change an expert the router never picks for the prompt: the tokens and logits stay bit for bit, so
    its weights are not part of the result (a dense lowering would be caught only by cycles; this checks
    the gather's addressing: a wrong row of the table would read another expert)."""
    g = graph(64, 96, 8, 2)
    env_chosen = set()
    dec = IrDecoder(g, CTX)
    for tok in PROMPT:
        _, env = dec.step(tok, return_env=True)
        for e in g.eqns:
            if e.prim == "expert_linear":
                env_chosen.add(int(np.asarray(env[e.inputs[2]]).reshape(-1)[0]))
    unused = sorted(set(range(8)) - env_chosen)
    if not unused:
        pytest.skip("every expert is chosen for this prompt")
    res = Decoder(compiled(g, 1, "tp")).generate(PROMPT, 1)
    g2 = moe_like(hidden=64, inter=96, experts=8, k=2, max_context=CTX)
    for name in [n for n in g2.consts if n.startswith(("egate", "eup", "edown"))]:
        g2.consts[name] = g2.consts[name].copy()
        g2.consts[name][unused[0]] = 7.0
    res2 = Decoder(compiled(g2, 1, "tp")).generate(PROMPT, 1)
    np.testing.assert_array_equal(res.logits, res2.logits)
    # and the expert that is chosen does matter
    g3 = moe_like(hidden=64, inter=96, experts=8, k=2, max_context=CTX)
    chosen = sorted(env_chosen)[0]
    for name in [n for n in g3.consts if n.startswith("edown") and not n.startswith("edown_b")]:
        g3.consts[name] = g3.consts[name].copy()
        g3.consts[name][chosen] *= 2.0
    res3 = Decoder(compiled(g3, 1, "tp")).generate(PROMPT, 1)
    assert not np.array_equal(res.logits, res3.logits)
