"""Values that cross chips: the all-reduce of partial sums over the direct chip links (the same
summation tree on every chip, so replicated values stay bit-identical), and the pipeline transfer of
a value from the stage that computes it to a later one."""
from __future__ import annotations

from isa import Instr

from ...errors import CompileError, UnsupportedError
from ...ir import T
from ..buffers import Buf, Val


def port(L, chip: int, other: int) -> int:
    """The port of `chip` whose link goes straight to `other`."""
    p = L.hw.topology.port_to(chip, other)
    if p is None:
        raise CompileError(f"chip {chip} has no direct link to chip {other} in the {L.hw.system.topology} topology "
                           f"(routes over several hops are not supported yet)")
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
    """Pipeline: send a value computed on chip src to chip dst over their direct link."""
    v = L.vals[src].get(name)
    if v is None:
        raise UnsupportedError(f"chip {src}: {name!r} should have been computed there (pipeline stage gap)")
    if v.layout == "state":
        raise UnsupportedError(f"{name!r}: a KV cache cannot move between pipeline stages")
    nv = v.vectors
    key = ("xfer", name, dst) if T not in L.g.vars[name].shape else None
    b = L.pool.new(dst, name, nv, v.buf.dtype, "act", key=key) if key else L.buf(dst, name, nv, v.buf.dtype)
    link_s, link_r = port(L, src, dst), port(L, dst, src)
    L.emit(src, "c2ct", Instr("SEND", link=link_s, src_reg=v.buf.id, src_off=v.off, n=nv), f"c2c{link_s}t", tag=f"pp {name}")
    L.emit(dst, "c2cr", Instr("RECV", link=link_r, dst_reg=b.id, dst_off=0, n=nv), f"c2c{link_r}r", tag=f"pp {name}")
    out = Val(b, v.idx, v.layout, v.tlen, v.g, off=0)
    L.vals[dst][name] = out
    return out


LOWERINGS: dict = {}  # no prim of its own: linears and tables join an all-reduce, values in transit
