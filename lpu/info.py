"""`lpu info PROGRAM`: what a program file is, from its header and sections alone (nothing is run)."""
from __future__ import annotations

import os
from pathlib import Path


def info(program, path: str | os.PathLike | None = None) -> dict:
    """The facts `lpu info --json` prints."""
    h = program.header
    hw, sysd = h["hw"], h["hw"].get("system", {})
    words = sum(int(w.shape[0]) for w in program.streams.values())
    buckets = h["buckets"]
    model = dict(h.get("model") or {})
    out = {
        "file": None if path is None else os.fspath(path),
        "file_bytes": None if path is None else Path(path).stat().st_size,
        "format_version": h.get("format_version"),
        "compiled_by": h.get("compiled_by"),
        "source": h.get("source"),
        "model": model,
        "hardware": hw.get("name"), "clock_hz": int(hw["clock_hz"]), "hw_sha256": h.get("hw_sha256"),
        "chips": int(h["chips"]), "chips_used": int(h.get("chips_used") or h["chips"]),
        "topology": sysd.get("topology"), "chips_per_node": sysd.get("chips_per_node"),
        "nodes_per_rack": sysd.get("nodes_per_rack"), "links_per_chip": hw["chip"]["c2c"].get("links"),
        "partition": h.get("partition"), "stages": h.get("stages", 1),
        "mapping_estimates": h.get("mapping_estimates"),
        "precision": h.get("precision"), "weights": h.get("weights", "fp16"),
        "dequantised": model.get("dequantised", ""),
        "timing_only": program.timing_only, "bucket_only": bool(h.get("buckets_partial")),
        "max_context": h.get("max_context"), "vocab_size": h.get("vocab_size"),
        "buckets": [{"positions": [bk["first_position"], bk["last_position"]], "cycles": bk.get("cycles"),
                     "lower_bound_cycles": bk.get("lower_bound_cycles")} for bk in buckets],
        "instructions": words, "streams": len(program.streams), "regions": len(program.regions),
        "symbols": len(program.symbols), "image_bytes": int(sum(a.nbytes for _, _, a in program.image)),
        "sram_bytes_per_chip_max": max(h.get("sram_bytes_per_chip") or [0]),
        "operations": len(h.get("ops") or []), "provenance": bool(program.provenance),
        "tokenizer": "tokenizer" in h, "options": h.get("options"),
    }
    return out


def render(d: dict) -> str:
    m = d["model"]
    lines = []
    src = d["source"] or {}
    lines.append(f"file      {d['file']} ({d['file_bytes']:,} bytes, format {d['format_version']}"
                 + (f", {d['compiled_by']}" if d["compiled_by"] else "") + ")")
    lines.append(f"model     {src.get('file', '?')}" + (f" (sha256 {src['sha256'][:12]}...)" if src.get("sha256") else "")
                 + (f": {m.get('family', '?')}, {m.get('num_layers', '?')} layers, hidden {m.get('hidden_size', '?')}, "
                    f"{m.get('heads', '?')} heads / {m.get('kv_heads', '?')} kv, vocab {d['vocab_size']}"
                    f"{', exported by ' + m['exporter'] if m.get('exporter') else ''}" if m else ""))
    lines.append(f"hardware  {d['hardware']} at {d['clock_hz'] / 1e6:,.0f} MHz; {d['chips']} chip(s)"
                 + (f" ({d['chips_used']} used)" if d["chips_used"] != d["chips"] else "")
                 + f", {d['topology']} topology, {d['chips_per_node']} chips per node, {d['links_per_chip']} link ports per chip")
    est = d["mapping_estimates"] or {}
    lines.append(f"mapping   {d['partition']}" + (f", {d['stages']} stages" if d["stages"] > 1 else "")
                 + (f" (estimated cycles: {', '.join(f'{k} {v:,}' for k, v in sorted(est.items(), key=lambda kv: kv[1]))})"
                    if est else ""))
    lines.append(f"numbers   {d['precision']}, weights {d['weights']}" + (f", {d['dequantised']}" if d["dequantised"] else "")
                 + ("; timing-only (no weights: `lpu estimate`, not `lpu decode`)" if d["timing_only"] else "")
                 + ("; one context only (--bucket-only)" if d["bucket_only"] else ""))
    lines.append(f"context   up to {d['max_context']:,} positions in {len(d['buckets'])} bucket(s): "
                 + "; ".join(f"{b['positions'][0]}-{b['positions'][1]}: {b['cycles']:,} cycles"
                             + (f" (bound {b['lower_bound_cycles']:,})" if b["lower_bound_cycles"] else "")
                             for b in d["buckets"][:6])
                 + (f"; ... ({len(d['buckets']) - 6} more)" if len(d["buckets"]) > 6 else ""))
    lines.append(f"sizes     {d['instructions']:,} instruction words in {d['streams']:,} streams, {d['regions']:,} "
                 f"regions, {d['symbols']:,} symbols, {d['image_bytes'] / 2**20:,.1f} MiB of initial SRAM contents; up to "
                 f"{d['sram_bytes_per_chip_max'] / 2**20:,.1f} MiB SRAM per chip")
    lines.append(f"extras    {d['operations']:,} operations in its provenance table"
                 + ("" if d["provenance"] else " (no provenance: compiled by an older lpu)")
                 + ("; ships a tokenizer (`lpu decode --text`)" if d["tokenizer"] else ""))
    if d["options"]:
        o = d["options"]
        flags = [(f"--context {v} --bucket-only" if k == "only_context" else f"--{k.replace('_', '-')} {v}")
                 for k, v in o.items() if v not in (None, False, True, 0) and k != "default_context"]
        lines.append("compiled  " + " ".join(flags + (["--timing-only"] if o.get("timing_only") else [])))
    return "\n".join(lines) + "\n"
