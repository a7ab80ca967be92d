"""Facts read from a program file alone: how its pipeline values travel between chips.

The compiler's naming conventions for the regions a transfer lands in (compiler/backend/lower/
collectives.py): an all-reduce partial lands in `ar<chip>`, a value passing through a chip on a route of
several hops in `fwd <value>`, anything else in a buffer named after the value.
"""
from __future__ import annotations


def relays(prog) -> dict:
    """`forwarded`: RECVs into forwarding buffers (a hop inside a route of more than one hop); `gateway`:
    RECVs of a pipeline value from a chip of the receiver's own stage (a gateway passing on what it received
    from the stage before). Counted over every bucket."""
    from isa.hw import as_hardware

    h = prog.header
    hw = as_hardware(h["hw"])  # the header carries the whole hardware description, its wiring included
    per = h["chips"] // h.get("stages", 1)
    names = {r.id: r.name for r in prog.regions}
    numbering = prog.numbering()
    out = {"forwarded": 0, "gateway": 0}
    for (b, c, q) in prog.streams:
        if not (q.startswith("c2c") and q.endswith("r")):
            continue
        peer, _ = hw.topology.peer(c, int(q[3:-1]))
        for i in prog.instrs((b, c, q), numbering):
            if i.op != "RECV":
                continue
            name = names[i["dst_reg"]]
            if name.startswith("fwd "):
                out["forwarded"] += 1
            elif not name.startswith("ar") and peer // per == c // per:
                out["gateway"] += 1
    return out
