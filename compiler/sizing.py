"""Sizing from a Hugging Face config.json: the parameters a decoder of a known family has, the KV-cache bytes at a
context, and the fewest chips whose SRAM holds both, for each weight format (no graph, no weights: the question
"how many chips does Llama-2-70B need?" without a 140 GB export).

Parameter counts follow each family's Hugging Face implementation (embeddings, per layer: attention
projections with the family's biases, the MLP -- gated or not -- and the norms; final norm; LM head unless
tied). tests/compiler/test_sizing.py checks them against the published counts of real checkpoints (Llama-2-7B
6,738,415,616, ...).

The chip count is a lower bound: the weights a program stores in the format (the linears at its bytes per element;
the embedding and position tables, gathered rather than multiplied, at fp16 whatever the format; a tied LM head as
a copy of its own: `stored_bytes`) plus the KV cache at fp16, divided by
a chip's SRAM (`Hardware.sram_bytes_per_chip`); a compiled program needs more (activations, padding to 320
lanes, bank fragmentation). The weight formats a preset offers are its MXM's: int8 on GroqChip1 (int8 x int8 ->
int32, [ISCA20]), fp8 on LP30 (its published fp8 rate, [NV26]); sizing in them counts bytes only (the compiled
8-bit paths are `--weights int8|fp8`: README "8-bit weights").
"""
from __future__ import annotations

import json
import math
import os

from .errors import ModelError, UnsupportedError

BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "fp8": 1}
KV_BYTES = 2  # the cache is fp16 (the MXM's input type) whatever the weights are
# per preset: the weight formats its MXM multiplies (see the module doc for the sources)
WEIGHT_FORMATS = {"groqchip1": ("fp16", "int8"), "lp30": ("fp16", "fp8")}
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "phi3", "gpt_neox", "opt", "gemma")


def load_config(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not a JSON file ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ModelError(f"{path}: not a Hugging Face config.json (no model_type)")
    return cfg


def _get(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    if default is not None:
        return default
    raise ModelError(f"config.json of a {cfg.get('model_type')} model lacks {names[0]!r}")


def shape(cfg: dict) -> dict:
    """Layers, hidden size, heads, kv heads, head size, vocabulary, positions and parameters of the decoder."""
    mt = cfg["model_type"]
    if mt not in FAMILIES:
        raise UnsupportedError(f"model_type {mt!r} is not a family the frontend knows ({', '.join(FAMILIES)})")
    L = int(_get(cfg, "num_hidden_layers", "n_layer"))
    H = int(_get(cfg, "hidden_size", "n_embd"))
    nh = int(_get(cfg, "num_attention_heads", "n_head"))
    nkv = int(cfg.get("num_key_value_heads") or nh)
    hd = int(cfg.get("head_dim") or H // nh)
    V = int(_get(cfg, "vocab_size"))
    P = int(_get(cfg, "max_position_embeddings", "n_positions"))
    tied = bool(cfg.get("tie_word_embeddings", mt in ("gpt2", "opt", "gemma")))
    q, kv = nh * hd, nkv * hd
    attn = H * q + 2 * H * kv + q * H
    if mt == "gpt2":
        inner = int(cfg.get("n_inner") or 4 * H)
        layer = attn + 3 * H + H + 2 * H * inner + inner + H + 4 * H  # c_attn/c_proj biases, MLP and its biases, 2 LN
        extra = V * H + P * H + 2 * H  # wte, wpe, ln_f
        tables = V * H + P * H
    elif mt == "opt":
        inner = int(_get(cfg, "ffn_dim"))
        proj = int(cfg.get("word_embed_proj_dim") or H)
        layer = attn + 4 * H + 2 * H * inner + inner + H + 4 * H  # q/k/v/o biases, fc1/fc2 and biases, 2 LN
        extra = V * proj + (P + 2) * H + (2 * H * proj if proj != H else 0)  # learned positions have 2 extra rows
        extra += 2 * H if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm") else 0
        tied_head = V * proj
        tables = V * proj + (P + 2) * H
    elif mt == "gpt_neox":
        inner = int(_get(cfg, "intermediate_size"))
        layer = attn + 3 * H + H + 2 * H * inner + inner + H + 4 * H  # qkv/dense biases, MLP and biases, 2 LN
        extra = V * H + 2 * H
        tables = V * H
    else:  # llama-style: RMSNorm, gated MLP
        inner = int(_get(cfg, "intermediate_size"))
        bias = (q + 2 * kv) if mt == "qwen2" else 0
        if cfg.get("attention_bias"):
            bias = q + 2 * kv + H
        layer = attn + bias + 3 * H * inner + 2 * H
        extra = V * H + H
        tables = V * H
    head_params = tied_head if mt == "opt" else V * H
    head = 0 if tied else head_params
    params = L * layer + extra + head
    return {"family": mt, "layers": L, "hidden": H, "heads": nh, "kv_heads": nkv, "head_dim": hd, "vocab": V,
            "positions": P, "tied": tied, "params": params, "table_params": tables,
            "tied_head_params": head_params if tied else 0}


def kv_bytes(s: dict, context: int) -> int:
    """One key and one value vector per layer, kv head and position."""
    return 2 * s["layers"] * s["kv_heads"] * s["head_dim"] * context * KV_BYTES


def stored_bytes(s: dict, fmt: str) -> int:
    """The bytes of the weights a program stores with `fmt` weights: the tables read by position or token (the
    embeddings, learned positions) stay at fp16 whatever the format (a gather, not a linear: the 8-bit path is the
    linears'), everything else at the format's bytes (the norm gains and biases too: a lower bound); a tied LM
    head is a second copy (the export's lm_head reads Transpose(embedding), a constant of its own)."""
    tables = s["table_params"]
    return (s["params"] - tables) * BYTES[fmt] + tables * max(BYTES[fmt], BYTES["fp16"]) + s["tied_head_params"] * BYTES[fmt]


def chips_needed(s: dict, context: int, fmt: str, sram_bytes_per_chip: int) -> int:
    return max(1, math.ceil((stored_bytes(s, fmt) + kv_bytes(s, context)) / sram_bytes_per_chip))


def size_config(path, hardware: list, context: int | None = None) -> dict:
    """The report `lpu check CONFIG.json` prints: the decoder's shape and parameters, its weight and KV-cache bytes
    at `context` (default: the model's positions, at most 4096), and per preset and weight format the fewest chips
    whose SRAM holds them."""
    cfg = load_config(path)
    s = shape(cfg)
    ctx = context or min(s["positions"], 4096)
    if ctx < 1:
        raise ModelError(f"--context {ctx}: must be at least 1")
    rep = {"config": os.path.basename(os.fspath(path)), "supported": True, **s, "context": ctx,
           "kv_cache_bytes": kv_bytes(s, ctx), "weight_bytes": {f: stored_bytes(s, f) for f in BYTES}}
    fits = {}
    for hw in hardware:
        fmts = WEIGHT_FORMATS.get(hw.name, ("fp16",))
        fits[hw.name] = {"chips_at_least": {f: chips_needed(s, ctx, f, hw.sram_bytes_per_chip) for f in fmts},
                         "sram_bytes_per_chip": hw.sram_bytes_per_chip, "max_chips": hw.max_chips}
    rep["fits"] = fits
    return rep
