"""Values that cross chips: the all-reduce of partial sums over the direct chip links (the same
summation tree on every chip, so replicated values stay bit-identical), and the pipeline transfer of
a value from the stage that computes it to a later one."""
from __future__ import annotations

from isa import Instr
from isa.errors import HardwareError

from ...errors import CompileError, UnsupportedError
from ...ir import T
from ..buffers import FORWARDED, Buf, Val


def port(L, chip: int, other: int) -> int:
    """The port of `chip` whose link goes straight to `other`."""
    p = L.hw.topology.port_to(chip, other)
    if p is None:
        raise CompileError(f"chip {chip} has no direct link to chip {other} in the {L.hw.system.topology} topology: "
                           f"a tensor-parallel group must be directly linked chips (one node)")
    return p


def allreduce(L, var, chip, part: Buf, out: Val, nvec: int):
    """Called once per chip; the exchange is emitted when the last chip's partial is ready."""
    pend = L.pending_allreduce
    pend.setdefault(var, {})[chip] = (part, out, nvec)
    group = L.plan.chips_of(var)  # the chips of var's stage (all chips unless pipelined)
    if len(pend[var]) < len(group):
        return
    parts = pend.pop(var)
    recv: dict = {}
    for c in group:
        for o in group:
            if o == c:
                continue
            link = port(L, c, o)
            pb, _, nv = parts[c]
            L.emit(c, "c2ct", Instr("SEND", link=link, src_reg=pb.id, src_off=0, n=nv), f"c2c{link}t", tag=f"ar {var}")
    for c in group:
        for o in group:
            if o == c:
                continue
            link = port(L, c, o)
            nv = parts[c][2]
            rb = L.buf(c, f"ar{o}", nv, parts[c][0].dtype)
            L.emit(c, "c2cr", Instr("RECV", link=link, dst_reg=rb.id, dst_off=0, n=nv), f"c2c{link}r", tag=f"ar {var}")
            recv[(c, o)] = rb
    for c in group:
        _, out, nv = parts[c]
        terms = [parts[c][0] if o == c else recv[(c, o)] for o in group]
        # the same tree on every chip, in chip order: bit-identical sums everywhere
        L.add_tree(c, terms, out.buf, out.off, nv, "arsum", tag=f"ar {var}", mask=L.mask_args(out))


def transfer(L, name: str, src: int, dst: int) -> Val:
    """Pipeline: send a value computed on chip src to chip dst along the topology's route (scheduled, not
    routed: each hop is a SEND on one chip and a RECV on the next, booked on that link; a chip between
    the two forwards the vectors from a buffer of its own, as the schedule says)."""
    v = L.vals[src].get(name)
    if v is None and (name, src) in L.plan.transfers:  # a gateway of dst's stage: it receives the value first
        v = L.val(src, name)
    if v is None:
        raise UnsupportedError(f"chip {src}: {name!r} should have been computed there (pipeline stage gap)")
    if v.layout == "state":
        raise UnsupportedError(f"{name!r}: a KV cache cannot move between pipeline stages")
    nv = v.vectors
    topo = L.hw.topology
    try:
        hops = topo.route(src, dst)
    except HardwareError as exc:
        raise CompileError(str(exc)) from None
    key = ("xfer", name, dst) if T not in L.g.vars[name].shape else None
    buf, off = v.buf, v.off
    for k, (chip, link_s) in enumerate(hops):
        nxt, link_r = topo.peer(chip, link_s)
        if nxt == dst:
            b = L.pool.new(dst, name, nv, v.buf.dtype, "act", key=key) if key else L.buf(dst, name, nv, v.buf.dtype)
        else:  # a chip on the way: its own buffer, forwarded by the next hop
            b = L.buf(nxt, f"{FORWARDED}{name}", nv, v.buf.dtype)
        s = L.emit(chip, "c2ct", Instr("SEND", link=link_s, src_reg=buf.id, src_off=off, n=nv), f"c2c{link_s}t",
                   tag=f"pp {name}")
        r = L.emit(nxt, "c2cr", Instr("RECV", link=link_r, dst_reg=b.id, dst_off=0, n=nv), f"c2c{link_r}r",
                   tag=f"pp {name}" if nxt == dst else f"fwd {name}")
        s.xfer = r.xfer = dst  # scheduled with the transfers into dst's stage, not with the chips' own work
        buf, off = b, 0
    out = Val(buf, v.idx, v.layout, v.tlen, v.g, off=0)
    L.vals[dst][name] = out
    return out


LOWERINGS: dict = {}  # no prim of its own: linears and tables join an all-reduce, values in transit
