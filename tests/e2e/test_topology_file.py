"""A user's topology file (`--topology FILE`): any wiring of the preset's chips, with its own link classes.
Programs compiled for it decode to ONNX Runtime's tokens, keep their wiring in the header, and a file that
lists a preset's own links gives that preset's program byte for byte."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from compiler.driver import Options, compile_model
from isa import Program
from lpu import config
from lpu.decode import Decoder
from lpu.reference import OrtDecoder

FIX = Path(__file__).resolve().parents[1] / "fixtures"
PROMPT, N, CTX = [1, 2, 3], 8, 256
RING = """# four chips in a ring, 0-1-2-3-0; the link closing the ring is of a slower class
links = [[0, 0, 1, 0], [1, 1, 2, 0], [2, 1, 3, 0], [3, 1, 0, 1, "long"]]

[[classes]]
name = "long"
hop_latency_cycles = {lat}
"""


@functools.lru_cache(maxsize=None)
def ort(name):
    return OrtDecoder(FIX / f"{name}.onnx", threads=1).greedy(PROMPT, N)


def ring(tmp_path, lat=400) -> Path:
    p = tmp_path / f"ring{lat}.toml"
    p.write_text(RING.format(lat=lat))
    return p


def compile_on(path, name="llama_optimum", partition="auto", chips=None, precision="fp32"):
    hw = config.load("groqchip1", chips=chips, topology=path)
    return compile_model(FIX / f"{name}.onnx", hw, Options(chips=hw.system.chips, precision=precision,
                                                             max_context=CTX, partition=partition))


def test_the_file_describes_the_wiring(tmp_path):
    hw = config.load("groqchip1", topology=ring(tmp_path))
    topo = hw.topology
    assert hw.system.chips == 4 and hw.max_chips == 4 and topo.ports == 2
    assert [topo.neighbours(c) for c in range(4)] == [[1, 3], [0, 2], [1, 3], [0, 2]]
    assert topo.link_class(3, 1).name == "long" and topo.link_class(3, 1).hop_latency_cycles == 400
    assert topo.link_class(0, 0).hop_latency_cycles == hw.chip.c2c.hop_latency_cycles  # "local": the chip's
    assert topo.hops(0, 2) == 2  # no direct link: two hops
    three = config.load("groqchip1", chips=3, topology=ring(tmp_path))  # the first 3 chips: a line 0-1-2
    assert [three.topology.neighbours(c) for c in range(3)] == [[1], [0, 2], [1]]


STAR = "links = [[0, 0, 1, 0], [0, 1, 2, 0], [0, 2, 3, 0]]\n"  # chip 0 in the middle


@pytest.mark.parametrize("wiring, partition", [("ring", "pp"), ("ring", "hybrid"), ("star", "pp")])
def test_a_ring_or_a_star_decodes_to_onnxruntime_tokens(tmp_path, wiring, partition):
    # a star has no path through all four chips: a pipeline of four stages has a hand-off that chip 0 forwards
    tokens, logits = ort("llama_optimum")
    if wiring == "star":
        (tmp_path / "star.toml").write_text(STAR)
    prog, _ = compile_on(ring(tmp_path) if wiring == "ring" else tmp_path / "star.toml", partition=partition)
    assert prog.header["partition"] == partition
    path = tmp_path / "ring.lpu"
    prog.save(path)
    res = Decoder(Program.load(path)).generate(PROMPT, N)  # the wiring comes back from the header
    assert res.tokens == tokens
    assert np.abs(res.logits - logits).max() / np.abs(logits).max() < 1e-3
    if wiring == "star":
        assert any(r.name.startswith("fwd ") for r in prog.regions)


def test_tensor_parallel_needs_direct_links(tmp_path):
    # a ring of 4 has no tp mapping (0 and 2 are not linked); auto picks among those it has
    _, rep = compile_on(ring(tmp_path))
    assert "tp" not in rep.mappings and {"pp", "hybrid 2x2"} <= set(rep.mappings)


def test_a_slower_link_class_costs_cycles(tmp_path):
    # a line 0-1-2-3 whose middle link is of its own class: the pipeline's hand-off from stage 1 to stage 2
    # crosses it once per token, so 2,000 more cycles of hop latency add at least 2,000 cycles
    line = "links = [[0, 0, 1, 0], [1, 1, 2, 0, \"slow\"], [2, 1, 3, 0]]\n[[classes]]\nname = \"slow\"\n" \
           "hop_latency_cycles = {lat}\n"
    cycles = []
    for lat in (200, 2200):
        p = tmp_path / f"line{lat}.toml"
        p.write_text(line.format(lat=lat))
        _, rep = compile_on(p, partition="pp")
        cycles.append(rep.cycles[0])
    assert cycles[1] - cycles[0] >= 2000  # the token crosses the slow link at least once


def test_a_file_listing_a_presets_links_gives_its_program(tmp_path):
    # the 8-chip GroqNode's own wiring, written out as a topology file: the same program, byte for byte
    # except the header's description of the system
    hw = config.load("groqchip1", chips=8)
    lines = ", ".join(f"[{ln.a}, {ln.a_port}, {ln.b}, {ln.b_port}]" for ln in hw.topology.links)
    p = tmp_path / "node.toml"
    p.write_text(f"links = [{lines}]\n")
    mine = config.load("groqchip1", topology=p)
    assert mine.topology.ports == 7  # the node's 4 global ports go nowhere in one node: the file leaves them out
    assert mine.topology.table() == [row[:7] for row in hw.topology.table()]
    a, _ = compile_model(FIX / "gpt2_optimum.onnx", hw, Options(chips=8, max_context=CTX, partition="tp"))
    b, _ = compile_model(FIX / "gpt2_optimum.onnx", mine, Options(chips=8, max_context=CTX, partition="tp"))
    assert a.header["buckets"] == b.header["buckets"]
    assert a.streams.keys() == b.streams.keys()
    assert all(np.array_equal(a.streams[k], b.streams[k]) for k in a.streams)
    assert a.header["hw"]["system"]["topology"] == "dragonfly" and b.header["hw"]["system"]["topology"] == "explicit"
