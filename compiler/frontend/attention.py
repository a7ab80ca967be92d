"""KV cache and attention: kv_append, layout views of the cache, attn_qk / attn_pv, the attention mask.

Concat(past_kv, new, axis=seq) becomes `kv_append(new; state=...)`, whose result (the present cache
[1, Hkv, T, D]) is tracked as a `KVView`: a list of logical axes over the cache, so that the layout
operators an exporter puts between the cache and the attention matmuls (Transpose of K, the GQA
repeat Unsqueeze/Expand/Reshape, the dynamo exporter's reshape-transpose-reshape, a scalar scale)
are followed without emitting anything. The MatMul that contracts the view's D axis is `attn_qk`;
the one that contracts its T axis is `attn_pv`.

Logical axes: ('U', 1) a unit dim, ('H', n) the heads (n = Hkv * repeat, head h reads kv head
h // repeat), ('G', g) a repeat not yet merged into the heads, ('T', T), ('D', head_dim).

Where a runtime tensor derived from attention_mask (or a KV-length tensor derived from positions only)
meets the attention scores, the operator is evaluated with numpy on random scores for several positions
and masks; it must behave as `mask_fill(scores, mask, fill)` (keep position t iff mask[t] != 0) or as the
identity, else UnsupportedError says what it does instead.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ModelError, UnsupportedError
from ..ir import State
from .sym import T_SYM, Sym, fmt_shape, shape_at
from .values import K, M, Past

UNIT = ("U", 1)


@dataclass(frozen=True)
class KVView:
    state: str  # provisional state name
    present: str  # IR var [1, Hkv, T, D] (the kv_append output)
    hkv: int
    axes: tuple
    scale: float = 1.0

    @property
    def shape(self) -> tuple:
        return tuple(T_SYM if k == "T" else s for k, s in self.axes)

    @property
    def rank(self) -> int:
        return len(self.axes)


def _unitlike(ax) -> bool:
    return ax[0] in ("U", "G", "D") and ax[1] == 1


# ---------------------------------------------------------------------- KV append
def kv_append(ctx, node, past: Past, new, axis: int):
    if axis not in (2, -2):
        raise ctx.unsupported(f"concatenates the past KV {past.name!r} along axis {axis}; the cache layout must be "
                              "[batch, kv_heads, past, head_dim] with the new entry appended on axis 2")
    if not isinstance(new, M):
        raise ctx.unsupported(f"the new KV entry appended to {past.name!r} is not computed from the token")
    want = (1, past.heads, 1, past.head_dim)
    got = ctx.shape(new)
    if got != want:
        raise ctx.unsupported(f"the new KV entry appended to {past.name!r} has shape {fmt_shape(got)}, expected "
                              f"{list(want)}")
    prov = f"kvstate.{len(ctx.kv)}"
    info = ctx.past_info[past.name]
    ctx.kv[prov] = dict(past=info, role=None, order=len(ctx.kv))
    ctx.g.states[prov] = State(prov, 0, "k", past.heads, past.head_dim)
    var = ctx.emit("kv_append", [ctx.var(new)], "f32", out=node.outputs[0], state=prov)
    return KVView(prov, var, past.heads, (UNIT, ("H", past.heads), ("T", T_SYM), ("D", past.head_dim)))


# ---------------------------------------------------------------------- view operators
def _fail(ctx, view: KVView, what: str):
    return ctx.unsupported(f"{what} of the KV cache view {fmt_shape(view.shape)} is not a layout change the "
                           "compiler can follow (transpose, unit dims, GQA head repeat)")


def v_transpose(ctx, view: KVView, perm) -> KVView:
    if sorted(perm) != list(range(view.rank)):
        raise _fail(ctx, view, f"Transpose {perm}")
    return replace(view, axes=tuple(view.axes[p] for p in perm))


def v_unsqueeze(ctx, view: KVView, axes) -> KVView:
    out_rank = view.rank + len(axes)
    axes = sorted(a % out_rank for a in axes)
    cur = list(view.axes)
    for a in axes:
        cur.insert(a, UNIT)
    return replace(view, axes=tuple(cur))


def v_squeeze(ctx, view: KVView, axes) -> KVView:
    if axes is None:
        axes = [i for i, ax in enumerate(view.axes) if ax[1] == 1]
    axes = {a % view.rank for a in axes}
    for a in axes:
        if view.axes[a][1] != 1:
            raise _fail(ctx, view, f"Squeeze of axis {a}")
    return replace(view, axes=tuple(ax for i, ax in enumerate(view.axes) if i not in axes))


def v_expand(ctx, view: KVView, shape) -> KVView:
    shape = list(shape)
    axes = list(view.axes)
    if len(shape) > len(axes):
        axes = [UNIT] * (len(shape) - len(axes)) + axes
    shape = [1] * (len(axes) - len(shape)) + shape
    out = []
    for (kind, size), d in zip(axes, shape):
        if isinstance(d, Sym) or isinstance(size, Sym):
            if d == size or d == 1:
                out.append((kind, size))
                continue
            raise _fail(ctx, view, f"Expand to {fmt_shape(shape)}")
        if d == 1 or d == size:
            out.append((kind, size))
        elif size == 1 and kind == "U":
            out.append(("G", int(d)))
        elif size == 1 and kind == "H":  # one kv head (MQA) broadcast to all heads
            out.append(("H", int(d)))
        else:
            raise _fail(ctx, view, f"Expand to {fmt_shape(shape)}")
    return replace(view, axes=tuple(out))


def v_reshape(ctx, view: KVView, target) -> KVView:
    src = [ax for ax in view.axes if not (ax[0] == "U" or _unitlike(ax))]
    dims = [d for d in target if not (not isinstance(d, Sym) and d == 1)]
    out, i = [], 0
    for d in dims:
        if i >= len(src):
            raise _fail(ctx, view, f"Reshape to {fmt_shape(target)}")
        kind, size = src[i]
        if kind == "H" and size == 1 and i + 1 < len(src) and src[i + 1][0] == "G" and src[i + 1][1] == d:
            out.append(("H", d))
            i += 2
        elif (kind == "T" and d == T_SYM) or (kind != "T" and not isinstance(d, Sym) and size == d):
            out.append((kind, size))
            i += 1
        elif kind == "H" and i + 1 < len(src) and src[i + 1][0] == "G" and not isinstance(d, Sym) \
                and size * src[i + 1][1] == d:
            out.append(("H", d))
            i += 2
        elif kind == "H" and size == 1:  # a single kv head disappears into the unit dims
            i += 1
            if i < len(src) and ((src[i][0] == "T" and d == T_SYM) or (src[i][0] != "T" and src[i][1] == d)):
                out.append(src[i])
                i += 1
            else:
                raise _fail(ctx, view, f"Reshape to {fmt_shape(target)}")
        else:
            raise _fail(ctx, view, f"Reshape to {fmt_shape(target)}")
    if any(not (kind == "H" and size == 1) for kind, size in src[i:]):
        raise _fail(ctx, view, f"Reshape to {fmt_shape(target)}")
    axes, j = [], 0
    for d in target:
        if not isinstance(d, Sym) and d == 1:
            axes.append(UNIT)
        else:
            axes.append(out[j])
            j += 1
    return replace(view, axes=tuple(axes))


def v_gather(ctx, view: KVView, idx: K, axis: int) -> KVView:
    """Gather with constant indices: a head repeat (kv head h // g for each query head) or a unit dim taken."""
    ind = np.asarray(idx.value) if isinstance(idx, K) and idx.value.dtype != object else None
    if ind is None:
        raise _fail(ctx, view, "Gather with runtime indices")
    axis %= view.rank
    kind, size = view.axes[axis]
    if ind.ndim == 0 and size == 1 and int(ind) in (0, -1):
        return replace(view, axes=view.axes[:axis] + view.axes[axis + 1:])
    if kind == "H" and ind.ndim == 1 and ind.size % size == 0:
        g = ind.size // size
        if np.array_equal(ind, np.repeat(np.arange(size), g)):
            return replace(view, axes=view.axes[:axis] + (("H", size * g),) + view.axes[axis + 1:])
    raise _fail(ctx, view, f"Gather of indices {ind.reshape(-1)[:8].tolist()} on axis {axis}")


def v_scale(ctx, view: KVView, k: K, divide: bool = False) -> KVView:
    a = np.asarray(k.value)
    if a.dtype == object or a.size != 1 or a.dtype.kind not in "fiu":
        raise _fail(ctx, view, "a non-scalar multiply")
    c = float(a.reshape(()))
    if divide:
        if c == 0:
            raise _fail(ctx, view, "division by zero")
        c = 1.0 / c
    return replace(view, scale=view.scale * c)


# ---------------------------------------------------------------------- attention matmuls
def matmul(ctx, node, a, b):
    """MatMul(a, view): attn_qk when it contracts the view's D axis, attn_pv when it contracts T."""
    if isinstance(a, KVView) or not isinstance(b, KVView):
        raise ctx.unsupported("multiplies the KV cache in an unsupported way (expected MatMul(query or probs, cache))")
    if not isinstance(a, M):
        raise ctx.unsupported("the query/probabilities side of an attention MatMul is not a runtime tensor")
    if b.rank < 2:
        raise _fail(ctx, b, "MatMul")
    last = (b.axes[-2][0], b.axes[-1][0])
    if last == ("D", "T"):
        kind = "qk"
    elif last == ("T", "D"):
        kind = "pv"
    else:
        raise _fail(ctx, b, "MatMul")
    head_dim = b.axes[-1][1] if kind == "pv" else b.axes[-2][1]
    ashape = ctx.shape(a)
    if len(ashape) < 2:
        raise ctx.unsupported(f"attention MatMul with a rank-{len(ashape)} left operand")
    am, ak = ashape[-2], ashape[-1]
    if am != 1:
        raise ctx.unsupported(f"attention MatMul for {am} query rows; one decode step has exactly one")
    want_k = head_dim if kind == "qk" else T_SYM
    if ak != want_k:
        raise ctx.unsupported(f"attention MatMul contracts {ak!r} with {want_k!r}")
    abatch = list(ashape[:-2])
    bbatch = list(b.axes[:-2])
    r = max(len(abatch), len(bbatch))
    abatch = [1] * (r - len(abatch)) + abatch
    bbatch = [UNIT] * (r - len(bbatch)) + bbatch
    ih = next((i for i, ax in enumerate(bbatch) if ax[0] == "H"), None)
    out_batch = []
    for i, (da, (kb, db)) in enumerate(zip(abatch, bbatch)):
        if isinstance(da, Sym):
            raise ctx.unsupported("attention MatMul with a KV-length batch dimension")
        if kb not in ("U", "H"):
            raise _fail(ctx, b, "MatMul (an unmerged head-repeat axis)")
        if da != db and da != 1 and db != 1:
            raise ctx.unsupported(f"attention MatMul batch dims {abatch} and {[s for _, s in bbatch]} do not broadcast")
        if da == 1 and db != 1:
            raise ctx.unsupported("attention MatMul broadcasts one query over several kv heads")
        out_batch.append(max(da, db))
    nonunit = [i for i, d in enumerate(out_batch) if d != 1]
    if ih is None:
        if b.hkv != 1:
            raise _fail(ctx, b, "MatMul (the kv head axis was lost)")
    elif any(i < ih for i in nonunit):
        raise ctx.unsupported("attention MatMul whose query heads are not kv-head-major (head h must read kv head "
                              "h // group)")
    hq = int(np.prod(out_batch)) if out_batch else 1
    if hq % b.hkv:
        raise ctx.unsupported(f"{hq} query heads is not a multiple of {b.hkv} kv heads")
    group = hq // b.hkv
    if kind == "qk":
        q4 = ctx.reshape(a, (1, hq, 1, head_dim))
        s = ctx.emit("attn_qk", [q4, b.present], "f32", hint="scores", group=group)
        tail = (1, T_SYM)
    else:
        p4 = ctx.reshape(a, (1, hq, 1, T_SYM))
        s = ctx.emit("attn_pv", [p4, b.present], "f32", hint="attn", group=group)
        tail = (1, head_dim)
    if b.scale != 1.0:
        c = ctx.const(np.float32(b.scale), hint="kscale" if kind == "qk" else "vscale")
        s = ctx.emit("binary", [s, c], "f32", hint="scaled", op="mul")
    use_state(ctx, b.state, "k" if kind == "qk" else "v")
    return [M(ctx.reshape(M(s), tuple(out_batch) + tail, out=node.outputs[0]))]


def use_state(ctx, prov: str, role: str) -> None:
    info = ctx.kv[prov]
    if info["role"] not in (None, role):
        raise ctx.unsupported(f"the KV cache of {info['past'].name!r} is used both as keys and as values")
    info["role"] = role


def finalize_states(ctx) -> None:
    """Kinds from use (attn_qk -> 'k', attn_pv -> 'v'), layers from the input names or the graph order."""
    infos = [ctx.kv[p] for p in sorted(ctx.kv, key=lambda p: ctx.kv[p]["order"])]
    for info in infos:
        if info["role"] is None:
            info["role"] = info["past"].kind_hint
        if info["role"] is None:
            raise ModelError(f"{ctx.source}: the KV cache {info['past'].name!r} is never read by an attention MatMul")
        hint = info["past"].kind_hint
        if hint is not None and hint != info["role"]:
            raise ModelError(f"{ctx.source}: {info['past'].name!r} is named like a {hint!r} cache but used as "
                             f"{'keys' if info['role'] == 'k' else 'values'}")
    hints = [info["past"].layer_hint for info in infos]
    keyed = [(h, info["role"]) for h, info in zip(hints, infos)]
    if None not in hints and len(set(keyed)) == len(keyed):
        layer_of = {h: i for i, h in enumerate(sorted(set(hints)))}
        layers = [layer_of[h] for h in hints]
    else:
        count = {"k": 0, "v": 0}
        layers = []
        for info in infos:
            layers.append(count[info["role"]])
            count[info["role"]] += 1
    pairs = {}
    for layer, info in zip(layers, infos):
        pairs.setdefault(layer, set()).add(info["role"])
    for layer in sorted(pairs):
        if pairs[layer] != {"k", "v"}:
            raise ModelError(f"{ctx.source}: layer {layer} has KV caches {sorted(pairs[layer])}, expected a key and a value")
    rename = {}
    states = []
    for layer, prov, info in zip(layers, sorted(ctx.kv, key=lambda p: ctx.kv[p]["order"]), infos):
        name = f"kv.{layer}.{info['role']}"
        old = ctx.g.states[prov]
        states.append(State(name, layer, info["role"], old.heads, old.head_dim))
        rename[prov] = name
    ctx.g.states = {s.name: s for s in sorted(states, key=lambda s: (s.layer, s.kind))}
    from ..ir import Eqn

    ctx.g.eqns = [Eqn(e.prim, e.inputs, e.outputs, {**e.params, "state": rename[e.params["state"]]})
                  if e.prim == "kv_append" else e for e in ctx.g.eqns]


# ---------------------------------------------------------------------- the attention mask
def mask_boundary(ctx, node, spec, vals):
    """An operator combining the attention scores with a mask-path tensor -> mask_fill (or nothing)."""
    mains = [i for i, v in enumerate(vals) if isinstance(v, M)]
    if len(mains) != 1:
        raise ctx.unsupported("combines several runtime tensors with the attention mask")
    si = mains[0]
    sshape = ctx.shape(vals[si])
    if not sshape or sshape[-1] != T_SYM or any(isinstance(d, Sym) for d in sshape[:-1]):
        raise ctx.unsupported(f"applies the attention mask to a tensor of shape {fmt_shape(sshape)}; expected "
                              "scores [..., T]")
    has_mask_input = ctx.roles.attention_mask is not None
    rng = np.random.default_rng(0)
    identity, masking, fill = True, True, None
    problem = None
    for case in ctx.mask_cases():
        p = case[0]
        scores = rng.standard_normal(shape_at(sshape, p)).astype(np.float32)
        args = []
        for i, v in enumerate(vals):
            if v is None:
                args.append(None)
            elif i == si:
                args.append(scores)
            else:
                args.append(ctx.eval_value(v, case))
        out = np.asarray(spec.eval(node, args)[0])
        if out.shape != scores.shape:
            raise ctx.unsupported(f"the attention mask broadcasts the scores {list(scores.shape)} to {list(out.shape)} "
                                  f"at past length {p}")
        keep = (ctx.mask_array(case).reshape(-1) != 0) if has_mask_input else np.ones(p + 1, bool)
        same = out == scores
        if not same.all():
            identity = False
        if masking:
            if not same[..., keep].all():
                masking = False
                col_same = same.reshape(-1, p + 1).all(0)
                bad = np.nonzero(keep & ~col_same)[0]
                shown = ctx.mask_array(case).reshape(-1).tolist() if p < 16 else "(all ones)" if case[1] is None else "..."
                changed = out[..., bad].astype(np.float64)
                where = f"at past length {p} with mask {shown}"
                listed = f"{bad[:8].tolist()}{' ...' if len(bad) > 8 else ''}"
                if changed.size and (changed == changed.flat[0]).all() and changed.flat[0] <= -1e4:
                    problem = (f"{where} it also hides positions {listed} (fill {changed.flat[0]:g}); it keeps only "
                               f"{int((keep & col_same).sum())} of {int(keep.sum())} visible positions: a sliding window?")
                else:
                    problem = (f"{where} it changes the scores of visible positions {listed}: a position-dependent "
                               "bias (ALiBi?)")
            elif (~keep).any():
                hidden = out[..., ~keep].astype(np.float64)
                f = float(np.median(hidden))
                exact = bool((hidden == f).all())
                near = f <= -1e4 and bool(np.allclose(hidden, f, rtol=1e-3, atol=0))
                if not (exact or near) or (fill is not None and not np.isclose(fill, f, rtol=1e-3)):
                    masking = False
                    problem = (f"at past length {p} the hidden positions get values {np.unique(hidden)[:4].tolist()}, "
                               "not one large negative fill")
                fill = f if fill is None else fill
    if identity:
        return [vals[si]]
    if masking and has_mask_input and fill is not None:
        out = ctx.emit("mask_fill", [ctx.var(vals[si]), "attention_mask"], "f32", out=node.outputs[0], fill=fill)
        return [M(out)]
    if problem is None:
        problem = "it does not hide exactly the positions where the mask is 0"
    raise UnsupportedError(f"{ctx.where()}: the attention mask path is not 'keep position t iff "
                           f"attention_mask[t] != 0': {problem}")
