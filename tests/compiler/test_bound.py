"""The lower bound against hand calculations from the preset's parameters (never from the schedule)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.backend.bound import bound
from compiler.backend.partition import plan
from compiler.ir import Builder, Graph, Var
from lpu import config

K, N = 320, 640  # each linear: 2 tile rows x 2 column blocks = 4 tiles of 160 x 320


def _two_linears(shared_input: bool) -> Graph:
    """y = (x @ A) * (x' @ B), x' = x or a second input."""
    rng = np.random.default_rng(0)
    g = Graph({"x": Var("x", (1, 1, K)), "x2": Var("x2", (1, 1, K))}, {}, [], ("x", "x2"), {}, {}, {})
    b = Builder(g)
    wa = b.const(rng.standard_normal((K, N)).astype(np.float32), "A")
    wb = b.const(rng.standard_normal((K, N)).astype(np.float32), "B")
    a = b.eqn("linear", ["x", wa])
    c = b.eqn("linear", ["x" if shared_input else "x2", wb])
    g.outputs["logits"] = b.eqn("binary", [a, c], op="mul")
    return g


@pytest.mark.parametrize("shared", [False, True])
def test_sibling_linears_share_the_units_in_the_latency_bound(shared):
    hw = config.load("groqchip1", chips=1)
    ch = hw.chip
    g = _two_linears(shared)
    got = bound(g, plan(g, 1), hw, "fp16", 320)
    # by hand: a tile of 160 rows x 320 fp16 lanes into one of the 2 units at the chip's install rate
    units = ch.mxm.planes // ch.mxm.fp16_planes_per_unit
    tile = ch.mxm.fp16_tile_rows * 320 * 2 * units / ch.mxm.install_bytes_per_cycle
    tiles = 4 * (2 if shared else 1)  # one input: both products' tiles pass after it (packed densely)
    mxm = ch.mxm.latency_cycles + ch.mxm.emit_cycles + max(0, tiles // units - 2) * tile
    hold32 = 4 * 320 // ch.sram.access_bytes
    to_vxm = (ch.sram.write_latency_cycles + hold32 - 1 + ch.sram.read_latency_cycles
              + (ch.sram.slices_per_hemisphere + 2) * ch.streams.hop_cycles)  # MXM -> SRAM -> VXM
    expect = mxm + to_vxm + ch.vxm.latency_cycles.mul + ch.sram.write_latency_cycles + ch.icu.sync_cycles
    assert got.terms["latency"] == int(np.ceil(expect))
    if shared:  # sharing the input makes the chain longer than the same linears on separate inputs
        plain = _two_linears(False)
        assert got.terms["latency"] > bound(plain, plan(plain, 1), hw, "fp16", 320).terms["latency"]
