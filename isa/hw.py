"""The hardware description: one typed, frozen model of a chip, the system of chips and the topology that
joins them. The compiler, its scheduler, bound and allocator, the timing model, the emulator and the
reports all read it; every program header carries it (`Hardware.to_dict()`), so a program says exactly
which machine it was built for.

It holds only independent parameters, nested like the hardware, with units in the key names (the
presets in lpu/presets/*.toml give each value's source). Every derived value is computed here and
nowhere else:
- SRAM: banks per chip, bytes per chip;
- the floorplan (`Floorplan`): where each bank and each functional unit sits on the chip's east-west
  line, which hemisphere a unit is in, the order of banks from the centre or from the edges;
- MXM units in fp16, the issue queues of a chip;
- the topology (`Topology`): which chips, which links (port of one chip to port of another) and the
  class of each link (bandwidth, hop latency), links per chip and which link joins two chips; and the
  largest number of chips a kind of topology joins (`TOPOLOGY_KINDS`).
A topology is data: `Topology.links` lists every link, so a system with nodes, racks or multi-hop
routes is described by more data, not by another assumption in the code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Callable, get_args, get_origin, get_type_hints

from .errors import HardwareError
from .table import BY_MNEMONIC, VECTOR_LANES

# ---------------------------------------------------------------------------------------------
# Independent parameters (the keys of a preset)


@dataclass(frozen=True, slots=True)
class System:
    """How chips are joined. `fully_connected`: one node, every chip pair joined by `links_per_chip_pair`
    links. `explicit`: the links listed in `links` (chip, port, chip, port, class), of the classes in
    `link_classes` ("local" at the chip's c2c figures unless listed); the system is as many chips as the
    links name. `dragonfly` (ISCA22): nodes of `chips_per_node` chips fully connected by local links; each
    chip's `global_links_per_chip` further ports join the nodes of a rack (`nodes_per_rack` nodes,
    `links_per_node_pair` links between two nodes) and the racks to each other (`links_per_rack_pair`
    links between two racks, at the most racks the ports allow). The keys after `links_per_chip_pair`
    have defaults, so a description of one node need not name them."""

    chips: int  # chips in use (a preset gives the system's size; --chips takes the first N)
    topology: str  # a kind in TOPOLOGY_KINDS
    links_per_chip_pair: int
    chips_per_node: int = 8
    nodes_per_rack: int = 1
    global_links_per_chip: int = 0
    links_per_node_pair: int = 0
    links_per_rack_pair: int = 0
    rack_hop_latency_cycles: int = 0  # a link between two nodes of a rack (0: as a local link)
    global_hop_latency_cycles: int = 0  # a link between two racks (0: as a rack link)
    # topology "explicit" (a user's file, `--topology`): every link and its class, as listed
    links: tuple[Link, ...] = ()
    link_classes: tuple[LinkClass, ...] = ()  # bytes_per_cycle / hop_latency_cycles 0: the chip's c2c figure


@dataclass(frozen=True, slots=True)
class Sram:
    hemispheres: int
    slices_per_hemisphere: int
    banks_per_slice: int
    bank_bytes: int
    access_bytes: int
    read_latency_cycles: int
    write_latency_cycles: int


@dataclass(frozen=True, slots=True)
class Streams:
    hop_cycles: int


@dataclass(frozen=True, slots=True)
class Mxm:
    planes: int
    plane_rows: int
    plane_cols: int
    fp16_planes_per_unit: int
    fp16_tile_rows: int
    install_bytes_per_cycle: int
    iw_cycles: int
    latency_cycles: int
    emit_cycles: int
    acc_slots: int
    # the 8-bit format this MXM multiplies ("int8" or "fp8": e4m3) and its tile rows per unit (one ACC
    # streams one 320-lane 8-bit vector through that many rows; 0: plane_rows). Defaults for descriptions
    # that predate them.
    weights8: str = "int8"
    tile_rows8: int = 0


@dataclass(frozen=True, slots=True)
class VxmLatency:
    copy: int
    add: int
    mul: int
    exp: int
    tanh: int
    rsqrt: int
    recip: int


@dataclass(frozen=True, slots=True)
class Vxm:
    alus: int
    latency_cycles: VxmLatency


@dataclass(frozen=True, slots=True)
class SxmLatency:
    rotate: int
    permute: int


@dataclass(frozen=True, slots=True)
class Sxm:
    units: int
    latency_cycles: SxmLatency


@dataclass(frozen=True, slots=True)
class Mem:
    queues: int


@dataclass(frozen=True, slots=True)
class C2c:
    links: int
    link_bytes_per_cycle: float
    hop_latency_cycles: int
    deskew_interval_cycles: int
    deskew_cycles: int


@dataclass(frozen=True, slots=True)
class Icu:
    sync_cycles: int
    nop_max_repeat: int


@dataclass(frozen=True, slots=True)
class Chip:
    vector_lanes: int
    sram: Sram
    streams: Streams
    mxm: Mxm
    vxm: Vxm
    sxm: Sxm
    mem: Mem
    c2c: C2c
    icu: Icu


# ---------------------------------------------------------------------------------------------
# The floorplan


@dataclass(frozen=True, slots=True)
class Floorplan:
    """Positions on the chip's east-west line (a vector moves one position per stream hop).

    MEM slices: the West hemisphere at positions -1..-S, the East at +1..+S (S slices per hemisphere,
    slice 0 of each next to the centre); bank b is in slice b // banks_per_slice, West for the first S
    slices. The VXM, the chip-to-chip ports and the ICU sit at the centre (0; the ports' place is
    ASSUMED); each hemisphere's SXM at +-(S+1) and its MXM unit at +-(S+2). Unit u of the SXM and of the
    MXM is in hemisphere u % 2 (0 West, 1 East)."""

    slices_per_hemisphere: int
    banks_per_slice: int

    @property
    def banks(self) -> int:
        return 2 * self.slices_per_hemisphere * self.banks_per_slice

    def bank_hemisphere(self, bank: int) -> int:
        return (bank // self.banks_per_slice) // self.slices_per_hemisphere

    def hemisphere_banks(self, hemisphere: int) -> range:
        half = self.banks // 2
        return range(hemisphere * half, (hemisphere + 1) * half)

    def bank_pos(self, bank: int) -> int:
        s = bank // self.banks_per_slice
        i = s % self.slices_per_hemisphere
        return -(i + 1) if s // self.slices_per_hemisphere == 0 else i + 1

    def unit_hemisphere(self, index: int) -> int:
        """The hemisphere of SXM or MXM unit `index`."""
        return index % 2

    def unit_pos(self, family: str, index: int = 0) -> int:
        """Position of a functional unit: family vxm, icu, c2ct/c2cr (ports), sxm, mxm/mxmw/mxma."""
        if family in ("vxm", "c2c", "c2ct", "c2cr", "icu", "mem"):
            return 0
        side = -1 if self.unit_hemisphere(index) == 0 else 1
        if family == "sxm":
            return side * (self.slices_per_hemisphere + 1)
        if family in ("mxm", "mxmw", "mxma"):
            return side * (self.slices_per_hemisphere + 2)
        raise HardwareError(f"no floorplan position for unit family {family!r}")

    def unit_distance(self, family: str) -> int:
        """How far a unit of this family is from the centre, in positions."""
        return abs(self.unit_pos(family, 0))

    @property
    def banks_per_distance(self) -> int:
        """Banks at the same distance from the centre: a slice's banks in each hemisphere."""
        return 2 * self.banks_per_slice

    def banks_by_distance(self, from_centre: bool) -> list[int]:
        """Every bank, the slices nearest the centre first (from_centre) or nearest the edges first;
        at each distance the West slice, then the East one."""
        sph, bps = self.slices_per_hemisphere, self.banks_per_slice
        order = []
        for i in (range(sph) if from_centre else range(sph - 1, -1, -1)):
            for hemi in (0, 1):
                s = hemi * sph + i
                order.extend(range(s * bps, s * bps + bps))
        return order


# ---------------------------------------------------------------------------------------------
# The topology


@dataclass(frozen=True, slots=True)
class LinkClass:
    """A kind of chip-to-chip link: its bandwidth per direction and the latency of one hop."""

    name: str
    bytes_per_cycle: float = 0.0  # 0 in a user's file: the chip's c2c.link_bytes_per_cycle
    hop_latency_cycles: int = 0  # 0 in a user's file: the chip's c2c.hop_latency_cycles


@dataclass(frozen=True, slots=True)
class Link:
    """One bidirectional link: port `a_port` of chip `a` to port `b_port` of chip `b`, of class `cls`."""

    a: int
    a_port: int
    b: int
    b_port: int
    cls: str = "local"

    def __str__(self) -> str:
        return f"[{self.a}, {self.a_port}, {self.b}, {self.b_port}, {self.cls!r}] (chip {self.a} port {self.a_port} to " \
               f"chip {self.b} port {self.b_port})"


@dataclass(frozen=True)
class Topology:
    """Which chips, which links, of which classes. Port p of chip c is the chip's p-th link (issue
    queues c2c<p>t / c2c<p>r); a port belongs to at most one link (a port of a partly built system, e.g.
    one that would go to a rack the system does not have, is unconnected: `peer` gives None)."""

    chips: int
    ports: int  # link ports each chip uses
    links: tuple[Link, ...]
    classes: tuple[LinkClass, ...]

    def __post_init__(self) -> None:
        peer: dict[tuple[int, int], tuple[int, int, str]] = {}
        names = {c.name for c in self.classes}
        for ln in self.links:
            for (c, p) in ((ln.a, ln.a_port), (ln.b, ln.b_port)):
                if not (0 <= c < self.chips and 0 <= p < self.ports):
                    raise HardwareError(f"topology: link {ln} names chip {c} port {p}; chips 0..{self.chips - 1}, "
                                        f"ports 0..{self.ports - 1}")
                if (c, p) in peer:
                    raise HardwareError(f"topology: port {p} of chip {c} belongs to two links")
            if ln.a == ln.b:
                raise HardwareError(f"topology: link {ln} joins chip {ln.a} to itself")
            if ln.cls not in names:
                raise HardwareError(f"topology: link {ln} has class {ln.cls!r}; classes: {', '.join(sorted(names))}")
            peer[(ln.a, ln.a_port)] = (ln.b, ln.b_port, ln.cls)
            peer[(ln.b, ln.b_port)] = (ln.a, ln.a_port, ln.cls)
        object.__setattr__(self, "_peer", peer)
        first: dict[tuple[int, int], int] = {}
        adj: list[list[int]] = [[] for _ in range(self.chips)]
        for (c, p) in sorted(peer):
            o = peer[(c, p)][0]
            if (c, o) not in first:
                first[(c, o)] = p
                adj[c].append(o)
        object.__setattr__(self, "_first", first)
        object.__setattr__(self, "_adj", [sorted(a) for a in adj])
        object.__setattr__(self, "_cls", {c.name: c for c in self.classes})
        object.__setattr__(self, "_routes", {})
        object.__setattr__(self, "_bfs", {})

    def peer(self, chip: int, port: int) -> tuple[int, int] | None:
        """(chip, port) at the other end of port `port` of chip `chip`; None if the port is unconnected."""
        x = self._peer.get((chip, port))
        return None if x is None else (x[0], x[1])

    def connected(self, chip: int, port: int) -> bool:
        return (chip, port) in self._peer

    def port_to(self, chip: int, other: int) -> int | None:
        """The first port of `chip` whose link goes straight to `other` (None: no direct link)."""
        return self._first.get((chip, other))

    def neighbours(self, chip: int) -> list[int]:
        """The chips one link away from `chip`, in chip order."""
        return self._adj[chip]

    def link_class(self, chip: int, port: int) -> LinkClass:
        x = self._peer.get((chip, port))
        if x is None:
            raise HardwareError(f"port {port} of chip {chip} is not connected")
        return self._cls[x[2]]

    def route(self, src: int, dst: int) -> list[tuple[int, int]]:
        """The route the compiler schedules a transfer from `src` to `dst` on: [(chip, port), ...], one entry
        per hop, the chip that sends and the port it sends on; the fewest hops, ties broken towards the
        lowest chip numbers (breadth-first in chip order), so a route is a pure function of the topology."""
        if src == dst:
            return []
        key = (src, dst)
        r = self._routes.get(key)
        if r is None:
            prev = self._bfs_to(dst)
            if prev[src] < 0:
                raise HardwareError(f"chip {dst} cannot be reached from chip {src}: the topology joins them by no "
                                    f"route")
            r, c = [], src
            while c != dst:
                n = prev[c]
                r.append((c, self._first[(c, n)]))
                c = n
            self._routes[key] = r
        return list(r)

    def hops(self, src: int, dst: int) -> int:
        return len(self.route(src, dst))

    def _bfs_to(self, dst: int) -> list[int]:
        """next[c]: the chip after c on the way to dst (breadth-first from dst, neighbours in chip order)."""
        cache = self._bfs
        nxt = cache.get(dst)
        if nxt is None:
            nxt = [-1] * self.chips
            nxt[dst] = dst
            frontier = [dst]
            while frontier:
                new = []
                for c in frontier:
                    for o in self._adj[c]:
                        if nxt[o] < 0:
                            nxt[o] = c
                            new.append(o)
                frontier = sorted(new)
            if len(cache) > 64:
                cache.clear()
            cache[dst] = nxt
        return nxt

    def table(self) -> list[list[list[int]]]:
        """table[c][p] = [peer chip, peer port], [-1, -1] for an unconnected port: the form a program header
        stores."""
        return [[list(self._peer[(c, p)][:2]) if (c, p) in self._peer else [-1, -1] for p in range(self.ports)]
                for c in range(self.chips)]

    @staticmethod
    def from_table(table, cls: LinkClass) -> "Topology":
        """A topology from a program header's table (every link of class `cls`, [-1, -1] an unconnected
        port); HardwareError if a port's link does not come back to it."""
        try:
            rows = [[(int(x[0]), int(x[1])) for x in row] for row in table]
        except (TypeError, ValueError, IndexError):
            raise HardwareError("topology table: expected, per chip, a list of [peer chip, peer port]") from None
        chips = len(rows)
        ports = len(rows[0]) if rows else 0
        links = []
        for c, row in enumerate(rows):
            if len(row) != ports:
                raise HardwareError(f"topology table: chip {c} has {len(row)} ports, chip 0 has {ports}")
            for p, (o, q) in enumerate(row):
                if (o, q) == (-1, -1):
                    continue
                if not (0 <= o < chips and o != c and 0 <= q < ports and rows[o][q] == (c, p)):
                    raise HardwareError(f"topology table: link {p} of chip {c} goes to chip {o} link {q}, which is "
                                        f"not a link back to it")
                if (c, p) < (o, q):
                    links.append(Link(c, p, o, q, cls.name))
        return Topology(chips, ports, tuple(links), (cls,))


def _fully_connected(system: System, chip: Chip) -> Topology:
    """Every pair of chips joined by `links_per_chip_pair` direct links of class "local": port l of chip
    c goes to the (l // k)-th other chip in order, which uses the matching port back."""
    n, k = system.chips, system.links_per_chip_pair
    links = []
    for c in range(n):
        others = [o for o in range(n) if o != c]
        for p in range((n - 1) * k):
            o = others[p // k]
            q = [x for x in range(n) if x != o].index(c) * k + p % k
            if c < o:
                links.append(Link(c, p, o, q, "local"))
    local = LinkClass("local", chip.c2c.link_bytes_per_cycle, chip.c2c.hop_latency_cycles)
    return Topology(n, (n - 1) * k, tuple(links), (local,))


def _dragonfly_max_chips(system: System, chip: Chip) -> int:
    """Chips of the largest dragonfly these parameters describe: racks of nodes_per_rack nodes; every rack
    joined to every other by links_per_rack_pair links, so the racks are 1 + (a rack's inter-rack ports
    // links_per_rack_pair). GroqChip1 (8 x 4 global ports per node, 2 links per node pair in a rack of 9,
    1 per rack pair): 16 inter-rack ports per node, 144 per rack, 145 racks, 10,440 chips [ISCA22]."""
    per_rack = system.chips_per_node * system.nodes_per_rack
    inter = _inter_rack_ports_per_node(system) * system.nodes_per_rack
    racks = 1 + inter // system.links_per_rack_pair if system.links_per_rack_pair > 0 else 1
    return per_rack * racks


def _intra_rack_ports_per_node(system: System) -> int:
    return (system.nodes_per_rack - 1) * system.links_per_node_pair


def _inter_rack_ports_per_node(system: System) -> int:
    return system.chips_per_node * system.global_links_per_chip - _intra_rack_ports_per_node(system)


def _spread(ports: int, groups: int, i: int, j: int) -> list[tuple[int, int]]:
    """Group i's `ports` ports spread evenly over the other groups of `groups` (as a dragonfly with fewer
    groups than it has room for is cabled): for the pair (i, j), the list of (port of i, port of j) of
    their links. Port q of a group goes to the (q // per)-th other group, its (q % per)-th link."""
    if groups < 2 or i == j:
        return []
    per = ports // (groups - 1)
    oi = j - (j > i)  # j's index among i's others
    oj = i - (i > j)
    return [(oi * per + k, oj * per + k) for k in range(per)]


def _dragonfly(system: System, chip: Chip) -> Topology:
    """Nodes of chips_per_node chips, fully connected by `links_per_chip_pair` local links per pair
    (local port l of a chip goes to the (l // k)-th other chip of its node, as in `fully_connected`); then
    global_links_per_chip global ports per chip, numbered per node round-robin over its chips (node port
    q is port L + q // chips_per_node of chip q % chips_per_node, L the local ports), so each chip holds
    an equal share of every kind. A node's first (nodes_per_rack - 1) * links_per_node_pair node ports
    join it to the other nodes of its rack, the rest to other racks (per rack: node m's inter-rack ports
    follow node m-1's). A system of fewer racks, or a rack of fewer nodes, spreads those ports evenly
    over the racks (nodes) it has; a port whose link would go to a chip the system does not have is
    unconnected. Link classes: "local" (c2c.hop_latency_cycles), "rack" and "global" (the system's
    rack_/global_hop_latency_cycles, 0 meaning as the class below), all at c2c.link_bytes_per_cycle."""
    n, k, cpn = system.chips, system.links_per_chip_pair, system.chips_per_node
    npr, G = system.nodes_per_rack, system.global_links_per_chip
    L = (cpn - 1) * k
    links = []
    for c in range(n):  # local links, as fully_connected does within each node
        base, s = c - c % cpn, c % cpn
        others = [o for o in range(cpn) if o != s]
        for p in range(L):
            o = others[p // k]
            q = [x for x in range(cpn) if x != o].index(s) * k + p % k
            if s < o and base + o < n:
                links.append(Link(c, p, base + o, q, "local"))

    def chip_port(node: int, q: int) -> tuple[int, int]:
        return node * cpn + q % cpn, L + q // cpn

    nodes = -(-n // cpn)
    per_rack = cpn * npr
    racks = -(-n // per_rack)
    intra = _intra_rack_ports_per_node(system)
    inter = _inter_rack_ports_per_node(system)
    for r in range(racks):  # nodes within a rack
        have = min(npr, nodes - r * npr)
        for i in range(have):
            for j in range(i + 1, have):
                for qi, qj in _spread(intra, have, i, j):
                    (a, ap), (b, bp) = chip_port(r * npr + i, qi), chip_port(r * npr + j, qj)
                    if a < n and b < n:
                        links.append(Link(a, ap, b, bp, "rack"))
    if racks > 1 and system.links_per_rack_pair > 0:  # racks, by their inter-rack ports u = m * inter + x
        for r1 in range(racks):
            for r2 in range(r1 + 1, racks):
                for u1, u2 in _spread(inter * npr, racks, r1, r2):
                    (m1, x1), (m2, x2) = divmod(u1, inter), divmod(u2, inter)
                    (a, ap), (b, bp) = chip_port(r1 * npr + m1, intra + x1), chip_port(r2 * npr + m2, intra + x2)
                    if a < n and b < n:
                        links.append(Link(a, ap, b, bp, "global"))
    c2c = chip.c2c
    rack_lat = system.rack_hop_latency_cycles or c2c.hop_latency_cycles
    classes = (LinkClass("local", c2c.link_bytes_per_cycle, c2c.hop_latency_cycles),
               LinkClass("rack", c2c.link_bytes_per_cycle, rack_lat),
               LinkClass("global", c2c.link_bytes_per_cycle, system.global_hop_latency_cycles or rack_lat))
    used = {ln.cls for ln in links}
    return Topology(n, L + G if n > 1 else 0, tuple(links), tuple(c for c in classes if c.name in used or c.name == "local"))


def _explicit_classes(system: System, chip: Chip) -> tuple[LinkClass, ...]:
    c2c = chip.c2c
    out = {"local": LinkClass("local", c2c.link_bytes_per_cycle, c2c.hop_latency_cycles)}
    for k in system.link_classes:
        out[k.name] = LinkClass(k.name, k.bytes_per_cycle or c2c.link_bytes_per_cycle,
                                k.hop_latency_cycles or c2c.hop_latency_cycles)
    return tuple(out.values())


def _explicit_max_chips(system: System, chip: Chip) -> int:
    """The chips an explicit topology names: one more than the highest chip index of its links."""
    return 1 + max((max(ln.a, ln.b) for ln in system.links), default=0)


def _explicit(system: System, chip: Chip) -> Topology:
    """The links a user listed, among the chips in use (a link to a chip past `system.chips` is dropped, as
    `--chips N` takes the first N chips); ports are numbered as listed, so a chip uses 1 + its highest port."""
    n = system.chips
    links = tuple(ln for ln in system.links if ln.a < n and ln.b < n)
    ports = 1 + max((max(ln.a_port, ln.b_port) for ln in links), default=-1)
    return Topology(n, ports, links, _explicit_classes(system, chip))


@dataclass(frozen=True, slots=True)
class TopologyKind:
    """A way of joining chips: the largest number of chips it joins and how its links are built."""

    name: str
    max_chips: Callable[[System, Chip], int]
    build: Callable[[System, Chip], Topology]
    doc: str


TOPOLOGY_KINDS = {k.name: k for k in (
    TopologyKind("fully_connected", lambda s, c: 8, _fully_connected,
                 "one node: every chip pair directly linked"),
    TopologyKind("dragonfly", _dragonfly_max_chips, _dragonfly,
                 "nodes of fully connected chips, racks of nodes, racks joined all to all by global links (GroqChip1: "
                 "8 chips per node, 9 nodes per rack, up to 145 racks = 10,440 chips [ISCA22]; LP30: trays of 8, "
                 "32 trays per LPX rack [NV26])"),
    TopologyKind("explicit", _explicit_max_chips, _explicit,
                 "the links a user's file lists (`--topology FILE`): any wiring, any link classes"),
)}


# ---------------------------------------------------------------------------------------------
# The whole description


@dataclass(frozen=True)
class Hardware:
    name: str
    clock_hz: int
    system: System
    chip: Chip

    # ------------------------------------------------------------------ derived values, one place
    @cached_property
    def banks(self) -> int:
        s = self.chip.sram
        return s.hemispheres * s.slices_per_hemisphere * s.banks_per_slice

    @cached_property
    def sram_bytes_per_chip(self) -> int:
        return self.banks * self.chip.sram.bank_bytes

    @cached_property
    def mxm_units(self) -> int:
        """fp16 matrix units per chip (planes paired for fp16)."""
        m = self.chip.mxm
        return m.planes // m.fp16_planes_per_unit

    @property
    def weight_formats(self) -> tuple[str, ...]:
        """The weight formats this chip's MXM multiplies (`--weights`)."""
        return ("fp16", self.chip.mxm.weights8)

    def tile_rows(self, dtype: str) -> int:
        """Rows of one MXM tile of weights of element type `dtype`: the fp16 (and fp32) tile rows, or for
        the 8-bit types (i8, fp8) `mxm.tile_rows8` (0: plane_rows). The timing model, the compiler and the
        lower bound all read it here."""
        m = self.chip.mxm
        if dtype in ("i8", "fp8"):
            return m.tile_rows8 or m.plane_rows
        return m.fp16_tile_rows

    @cached_property
    def floorplan(self) -> Floorplan:
        s = self.chip.sram
        return Floorplan(s.slices_per_hemisphere, s.banks_per_slice)

    def mxm_hemisphere(self, unit: int) -> int:
        """The hemisphere (0 West, 1 East) of MXM unit `unit`: weights it streams sit on that side."""
        return self.floorplan.unit_hemisphere(unit)

    @cached_property
    def topology_kind(self) -> TopologyKind:
        return TOPOLOGY_KINDS[self.system.topology]

    @cached_property
    def max_chips(self) -> int:
        """The most chips this system's topology joins."""
        return self.topology_kind.max_chips(self.system, self.chip)

    @cached_property
    def topology(self) -> Topology:
        return self.topology_kind.build(self.system, self.chip)

    @property
    def links_per_chip(self) -> int:
        """Link ports each chip uses."""
        return self.topology.ports

    @cached_property
    def queues(self) -> tuple[str, ...]:
        """Every issue queue of one chip, in a fixed order."""
        c = self.chip
        qs = ["icu0"] + [f"mem{i}" for i in range(c.mem.queues)] + [f"vxm{i}" for i in range(c.vxm.alus)]
        qs += [f"sxm{i}" for i in range(c.sxm.units)]
        for u in range(self.mxm_units):
            qs += [f"mxm{u}w", f"mxm{u}a"]
        for p in range(self.links_per_chip):
            qs += [f"c2c{p}t", f"c2c{p}r"]
        return tuple(qs)

    def with_chips(self, chips: int) -> "Hardware":
        """The same system using its first `chips` chips."""
        if not 1 <= chips <= self.max_chips:
            raise HardwareError(f"--chips {chips}: valid values are 1..{self.max_chips} (the system's "
                                f"{self.system.topology} topology joins at most {self.max_chips} chips)")
        return dataclasses.replace(self, system=dataclasses.replace(self.system, chips=chips)).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "Hardware":
        """A validated description from a dict of independent parameters (a preset, a user's file, a
        program header); HardwareError names the key at fault and what would be valid."""
        return _build(Hardware, data, "").validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Hardware":
        def need(cond, msg):
            if not cond:
                raise HardwareError(f"hardware config {self.name!r}: {msg}")

        need(self.clock_hz > 0, "clock_hz must be positive")
        sysm, chip = self.system, self.chip
        need(sysm.topology in TOPOLOGY_KINDS, f"system.topology = {sysm.topology!r}; valid: {', '.join(TOPOLOGY_KINDS)}")
        need(sysm.links_per_chip_pair >= 1, "system.links_per_chip_pair must be >= 1")
        if sysm.topology == "dragonfly":
            need(sysm.chips_per_node >= 1 and sysm.nodes_per_rack >= 1, "system.chips_per_node and nodes_per_rack "
                 "must be >= 1")
            need(_inter_rack_ports_per_node(sysm) >= 0,
                 f"system: {sysm.nodes_per_rack - 1} other nodes per rack x links_per_node_pair "
                 f"{sysm.links_per_node_pair} need more global ports than chips_per_node {sysm.chips_per_node} x "
                 f"global_links_per_chip {sysm.global_links_per_chip}")
            need(sysm.nodes_per_rack == 1 or sysm.links_per_node_pair >= 1,
                 "system.links_per_node_pair must be >= 1 when a rack has several nodes")
        mc = self.max_chips
        need(1 <= sysm.chips <= mc, f"system.chips = {sysm.chips}; a {sysm.topology} system joins 1..{mc} chips")
        need(chip.vector_lanes == VECTOR_LANES,
             f"chip.vector_lanes = {chip.vector_lanes}; the instruction set is built for {VECTOR_LANES}")
        need(chip.sram.hemispheres == 2, f"chip.sram.hemispheres = {chip.sram.hemispheres}; the floorplan model has 2")
        for path, value in _leaves(self.to_dict()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and path != "clock_hz":
                need(value >= 0, f"{path} = {value} must not be negative")
        need(chip.c2c.link_bytes_per_cycle > 0, "c2c.link_bytes_per_cycle must be positive")
        need(chip.sram.access_bytes > 0 and chip.sram.bank_bytes > 0, "sram sizes must be positive")
        need(chip.sram.slices_per_hemisphere > 0 and chip.sram.banks_per_slice > 0, "sram must have banks")
        need(chip.mxm.planes % max(1, chip.mxm.fp16_planes_per_unit) == 0 and chip.mxm.fp16_planes_per_unit > 0,
             "mxm.planes must be a multiple of fp16_planes_per_unit")
        need(1 <= chip.mxm.fp16_tile_rows <= chip.mxm.plane_rows, "mxm.fp16_tile_rows must be in 1..plane_rows")
        need(chip.mxm.plane_cols == chip.vector_lanes, "mxm.plane_cols must equal vector_lanes")
        need(chip.mxm.weights8 in ("int8", "fp8"), f"mxm.weights8 = {chip.mxm.weights8!r}; valid: int8, fp8")
        need(0 <= chip.mxm.tile_rows8 <= chip.vector_lanes, "mxm.tile_rows8 must be in 0..vector_lanes (0: plane_rows)")
        need(self.banks <= 1 << 16, "too many banks for the instruction encoding")
        if sysm.topology == "explicit":
            for k in sysm.link_classes:
                need(k.bytes_per_cycle >= 0 and k.hop_latency_cycles >= 0,
                     f"link class {k.name!r}: bytes_per_cycle and hop_latency_cycles must not be negative")
            for ln in sysm.links:
                for c, p in ((ln.a, ln.a_port), (ln.b, ln.b_port)):
                    need(0 <= p < chip.c2c.links, f"link {ln}: port {p}; a {self.name} chip has link ports "
                                                  f"0..{chip.c2c.links - 1}")
        ports = self.links_per_chip
        need(ports <= chip.c2c.links,
             f"{sysm.chips} chips joined {sysm.topology} with {sysm.links_per_chip_pair} link(s) per pair need "
             f"{ports} links per chip; chip.c2c.links = {chip.c2c.links}")
        link_bits = next(f.bits for f in BY_MNEMONIC["SEND"].fmt.fields if f.name == "link")
        need(ports <= 1 << link_bits, f"{ports} links per chip do not fit the instructions' {link_bits}-bit link field")
        return self


def as_hardware(hw) -> Hardware:
    """`hw` itself, or the validated description of a dict (a program header's `hw`)."""
    return hw if isinstance(hw, Hardware) else Hardware.from_dict(hw)


def _leaves(d, prefix=""):
    for k, v in d.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, p + ".")
        else:
            yield p, v


def _build(cls, data, path: str):
    """Construct a (nested) dataclass from a dict, naming any missing, unknown or mistyped key."""
    if not isinstance(data, dict):
        raise HardwareError(f"{path or 'config'}: expected a table of keys, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fs = fields(cls)
    names = [f.name for f in fs]
    optional = {f.name for f in fs if f.default is not dataclasses.MISSING}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise HardwareError(f"{path + '.' if path else ''}{unknown[0]}: unknown key; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        key = f"{path}.{name}" if path else name
        if name not in data:
            if name in optional:
                continue
            raise HardwareError(f"{key}: missing")
        typ, val = hints[name], data[name]
        if get_origin(typ) is tuple:  # tuple[X, ...] of dataclasses: a list of tables
            (item, _) = get_args(typ)
            if not isinstance(val, (list, tuple)):
                raise HardwareError(f"{key} = {val!r}: expected a list of tables")
            kwargs[name] = tuple(_build(item, v, f"{key}[{i}]") for i, v in enumerate(val))
        elif dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, val, key)
        elif typ is int:
            if isinstance(val, bool) or not isinstance(val, int):
                raise HardwareError(f"{key} = {val!r}: expected an integer")
            kwargs[name] = val
        elif typ is float:
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise HardwareError(f"{key} = {val!r}: expected a number")
            kwargs[name] = float(val)
        elif typ is str:
            if not isinstance(val, str):
                raise HardwareError(f"{key} = {val!r}: expected a string")
            kwargs[name] = val
        else:  # pragma: no cover - schema bug
            raise HardwareError(f"{key}: unsupported type {typ}")
    return cls(**kwargs)
