"""The hardware description's derived facts against hand calculations from the presets' parameters."""
from __future__ import annotations

import pytest

from isa import HardwareError, Link, LinkClass, Topology
from lpu import config


def test_groqchip1_floorplan_by_hand():
    fp = config.load("groqchip1").floorplan  # 44 slices per hemisphere, 2 banks per slice: 176 banks
    assert fp.banks == 176
    # bank b is in slice b // 2; slices 0..43 West (positions -1..-44), 44..87 East (+1..+44)
    assert [fp.bank_pos(b) for b in (0, 1, 2, 87, 88, 89, 175)] == [-1, -1, -2, -44, 1, 1, 44]
    assert fp.bank_hemisphere(87) == 0 and fp.bank_hemisphere(88) == 1
    assert fp.hemisphere_banks(1) == range(88, 176)
    # the VXM and the ports at the centre, SXM u at +-45, MXM u at +-46; unit u in hemisphere u % 2
    assert [fp.unit_pos(f, u) for f, u in (("vxm", 0), ("c2ct", 3), ("sxm", 0), ("sxm", 1), ("mxmw", 0), ("mxma", 1))] \
        == [0, 0, -45, 45, -46, 46]
    assert [fp.unit_hemisphere(u) for u in range(4)] == [0, 1, 0, 1]
    assert fp.banks_by_distance(from_centre=True)[:6] == [0, 1, 88, 89, 2, 3]
    assert fp.banks_by_distance(from_centre=False)[:6] == [86, 87, 174, 175, 84, 85]
    assert sorted(fp.banks_by_distance(True)) == list(range(176))


def test_one_node_topology_by_hand():
    hw = config.load("lp30")  # one tray of 8, 12 links per chip pair: 7 x 12 = 84 local ports + 12 global
    t = hw.topology
    assert (t.chips, t.ports, len(t.links)) == (8, 96, 8 * 84 // 2)
    # port p of chip c goes to the (p // 12)-th other chip; the peer answers on the matching port
    assert t.peer(0, 0) == (1, 0) and t.peer(0, 13) == (2, 1) and t.peer(3, 40) == (4, 3 * 12 + 4)
    for c in range(8):
        for p in range(84):
            assert t.peer(*t.peer(c, p)) == (c, p)
        assert all(t.peer(c, p) is None for p in range(84, 96))  # the global ports of a lone tray
    assert t.port_to(5, 2) == 2 * 12 and t.port_to(2, 5) == 4 * 12
    assert t.link_class(0, 0) == LinkClass("local", 9.33, 300)
    with pytest.raises(HardwareError, match="port 90 of chip 0 is not connected"):
        t.link_class(0, 90)
    assert Topology.from_table(t.table(), t.classes[0]).table() == t.table()
    assert t.table()[0][90] == [-1, -1]
    one = config.load("groqchip1", chips=1).topology
    assert (one.ports, one.table()) == (0, [[]])


def test_groqchip1_dragonfly_by_hand():
    hw = config.load("groqchip1")
    # 8 chips x 4 global ports = 32 per node; 8 other nodes of the rack x 2 links = 16; the other 16 per
    # node, 144 per rack, one to each other rack: 145 racks x 72 chips [ISCA22]
    assert hw.max_chips == 145 * 72 == 10_440
    t = hw.with_chips(16).topology  # two nodes: all 16 in-rack ports of each node go to the other
    assert t.ports == 7 + 4
    # node port q is port 7 + q // 8 of chip q % 8: chip 0's ports 7, 8 are node ports 0, 8 -> the same
    # ports of chip 8; its ports 9, 10 (node ports 16, 24) go to other racks: unconnected here
    assert t.peer(0, 7) == (8, 7) and t.peer(0, 8) == (8, 8) and t.peer(0, 9) is None and t.peer(0, 10) is None
    assert t.peer(5, 7) == (13, 7) and t.link_class(5, 7).name == "rack"
    assert t.link_class(5, 7).hop_latency_cycles == 216
    assert t.route(0, 8) == [(0, 7)]
    assert t.route(1, 8) == [(1, 0), (0, 7)]  # no link 1 -> 8: a local hop to chip 0, then its rack link
    t = hw.with_chips(576).topology  # 8 racks: each rack's 144 inter-rack ports spread over 7 others
    kinds = {k: sum(1 for ln in t.links if ln.cls == k) for k in ("local", "rack", "global")}
    assert kinds == {"local": 72 * 28, "rack": 8 * 36 * 2, "global": 28 * (144 // 7)}
    assert t.link_class(4, 9).name == "global" and t.link_class(4, 9).hop_latency_cycles == 300
    for a, b in [(0, 575), (7, 500), (100, 3), (71, 72), (300, 301)]:
        r = t.route(a, b)
        assert 1 <= len(r) <= 7  # local, rack, local, global, local, rack, local at most
        c = a
        for chip, port in r:
            assert chip == c and t.peer(chip, port) is not None
            c = t.peer(chip, port)[0]
        assert c == b
    with pytest.raises(HardwareError, match=r"--chips 10441: valid values are 1\.\.10440"):
        hw.with_chips(10_441)


def test_lp30_rack_by_hand():
    hw = config.load("lp30")
    assert hw.max_chips == 256  # 32 trays of 8; no public multi-rack wiring, so one rack
    t = hw.with_chips(256).topology
    assert sum(1 for ln in t.links if ln.cls == "rack") == 32 * 31 // 2 * 3
    assert max(len(t.route(0, b)) for b in range(0, 256, 7)) <= 3


def test_the_chip_count_limit_and_queues():
    hw = config.load("groqchip1")
    assert hw.with_chips(8).links_per_chip == 11  # 7 local + 4 global ports
    assert hw.queues[:2] == ("icu0", "mem0") and hw.queues[-2:] == ("c2c10t", "c2c10r")
    assert len(hw.queues) == 1 + 4 + 16 + 2 + 2 * 2 + 2 * 11
    with pytest.raises(HardwareError, match=r"--chips 0: valid values are 1\.\.10440"):
        hw.with_chips(0)


def test_topology_data_is_checked():
    local = LinkClass("local", 1.0, 10)
    t = Topology(2, 2, (Link(0, 0, 1, 0, "local"),), (local,))  # a port may be unconnected
    assert t.peer(0, 1) is None and not t.connected(1, 1) and t.route(0, 1) == [(0, 0)]
    with pytest.raises(HardwareError, match="chip 2 cannot be reached from chip 0"):
        Topology(3, 1, (Link(0, 0, 1, 0, "local"),), (local,)).route(0, 2)
    with pytest.raises(HardwareError, match="port 0 of chip 1 belongs to two links"):
        Topology(3, 1, (Link(0, 0, 1, 0, "local"), Link(2, 0, 1, 0, "local")), (local,))
    with pytest.raises(HardwareError, match="class 'global'"):
        Topology(2, 1, (Link(0, 0, 1, 0, "global"),), (local,))
    with pytest.raises(HardwareError, match="link 0 of chip 0 goes to chip 1 link 0, which is not a link back"):
        Topology.from_table([[[1, 0]], [[0, 1]]], local)


def test_the_emulator_refuses_a_header_topology_its_hardware_does_not_have():
    from builder import ProgramBuilder
    from lpu.emulator import EmulationError, Emulator

    b = ProgramBuilder(chips=3)
    b.region("a", rows=1)
    p = b.build()
    t = p.header["topology"]
    t[0][0], t[0][1] = t[0][1], t[0][0]  # chip 0's two ports swapped, consistently on the peers' side
    t[1][0], t[2][0] = [0, 1], [0, 0]
    with pytest.raises(EmulationError, match="header topology is not the dragonfly topology of its hardware"):
        Emulator(p)
