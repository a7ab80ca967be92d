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


def test_fully_connected_topology_by_hand():
    hw = config.load("lp30")  # 8 chips, 12 links per chip pair: 7 x 12 = 84 ports per chip
    t = hw.topology
    assert (t.chips, t.ports, len(t.links)) == (8, 84, 8 * 84 // 2)
    # port p of chip c goes to the (p // 12)-th other chip; the peer answers on the matching port
    assert t.peer(0, 0) == (1, 0) and t.peer(0, 13) == (2, 1) and t.peer(3, 40) == (4, 3 * 12 + 4)
    for c in range(8):
        for p in range(84):
            assert t.peer(*t.peer(c, p)) == (c, p)
    assert t.port_to(5, 2) == 2 * 12 and t.port_to(2, 5) == 4 * 12
    assert t.link_class(0, 0) == LinkClass("local", 9.33, 300)
    assert Topology.from_table(t.table(), t.classes[0]).table() == t.table()
    one = config.load("groqchip1", chips=1).topology
    assert (one.ports, one.table()) == (0, [[]])


def test_the_chip_count_limit_is_the_topology_kinds():
    hw = config.load("groqchip1")
    assert hw.max_chips == 8 and hw.with_chips(8).links_per_chip == 7
    with pytest.raises(HardwareError, match=r"--chips 9: valid values are 1\.\.8"):
        hw.with_chips(9)
    assert hw.queues[:2] == ("icu0", "mem0") and hw.queues[-2:] == ("c2c6t", "c2c6r")
    assert len(hw.queues) == 1 + 4 + 16 + 2 + 2 * 2 + 2 * 7


def test_topology_data_is_checked():
    local = LinkClass("local", 1.0, 10)
    with pytest.raises(HardwareError, match="port 1 of chip 0 belongs to no link"):
        Topology(2, 2, (Link(0, 0, 1, 0, "local"),), (local,))
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
    with pytest.raises(EmulationError, match="header topology is not the fully_connected topology of its hardware"):
        Emulator(p)
