"""Hardware presets load and validate; bad configs fail with one line naming the key."""
import json

import pytest

from lpu import config
from lpu.config import ConfigError


def test_groqchip1_derived_values_match_the_published_totals():
    hw = config.load("groqchip1")
    assert hw.banks == 176
    assert hw.sram_bytes_per_chip == 220 * 2**20  # 220 MiB [ISCA22]
    assert hw.mxm_units == 2
    # fp16 peak: 2 units x 160 x 320 MACs x 2 FLOP x 900 MHz = 184 TFLOPS (~188 published)
    assert 180e12 < hw.mxm_units * 160 * 320 * 2 * hw.clock_hz < 190e12
    assert hw.system.chips == 8 and hw.links_per_chip == 7 + 4  # local + global ports [ISCA22]


def test_lp30_matches_its_published_totals():
    hw = config.load("lp30")
    assert abs(hw.sram_bytes_per_chip - 500e6) < 1e3  # 500 MB [NV26]
    bw = hw.banks * hw.chip.sram.access_bytes * hw.clock_hz
    assert abs(bw - 150e12) / 150e12 < 0.01  # 150 TB/s [NV26]
    fp8 = hw.chip.mxm.planes * 320 * 320 * 2 * hw.clock_hz
    assert abs(fp8 - 1.2e15) / 1.2e15 < 0.05  # 1.2 PFLOPS fp8 [NV26]


def test_chip_override_and_bounds():
    assert config.load("groqchip1", chips=2).system.chips == 2
    assert config.load("groqchip1", chips=576).system.chips == 576
    with pytest.raises(ConfigError, match=r"1\.\.10440"):
        config.load("groqchip1", chips=10_441)
    with pytest.raises(ConfigError, match=r"1\.\.256"):
        config.load("lp30", chips=257)


def test_a_description_of_one_node_needs_no_dragonfly_keys(tmp_path):
    d = config.load("groqchip1").to_dict()
    d["system"] = {"chips": 4, "topology": "fully_connected", "links_per_chip_pair": 1}
    p = tmp_path / "node.json"
    p.write_text(json.dumps(d))
    hw = config.load(str(p))
    assert hw.max_chips == 8 and hw.links_per_chip == 3 and hw.topology.route(0, 3) == [(0, 2)]
    d["system"]["topology"] = "torus"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="system.topology = 'torus'; valid: fully_connected, dragonfly"):
        config.load(str(p))


def test_user_file_roundtrip_and_errors(tmp_path):
    d = config.load("groqchip1").to_dict()
    p = tmp_path / "hw.json"
    p.write_text(json.dumps(d))
    assert config.load(str(p)).to_dict() == d
    d2 = json.loads(json.dumps(d))
    d2["chip"]["sram"]["bank_bytez"] = 1
    p.write_text(json.dumps(d2))
    with pytest.raises(ConfigError, match=r"chip.sram.bank_bytez: unknown key; valid keys here: hemispheres"):
        config.load(str(p))
    d3 = json.loads(json.dumps(d))
    del d3["clock_hz"]
    p.write_text(json.dumps(d3))
    with pytest.raises(ConfigError, match="clock_hz: missing"):
        config.load(str(p))
    d4 = json.loads(json.dumps(d))
    d4["chip"]["mxm"]["planes"] = "four"
    p.write_text(json.dumps(d4))
    with pytest.raises(ConfigError, match="chip.mxm.planes = 'four': expected an integer"):
        config.load(str(p))
    with pytest.raises(ConfigError, match="not a preset"):
        config.load("nonexistent-preset")
    p.write_text("[[[")
    with pytest.raises(ConfigError, match="cannot parse"):
        config.load(str(p))
