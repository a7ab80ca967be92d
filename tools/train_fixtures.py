#!/usr/bin/env python3
"""Train the small decoder fixtures on the docstrings of Python's standard library (dev-only).

Run from the repository root:

    python tools/train_fixtures.py                      # every trained fixture, into tests/fixtures
    python tools/train_fixtures.py --only trained_gpt2  # one of them (the tokenizer is retrained: same bytes)
    python tools/train_fixtures.py --readme-only        # rewrite tests/fixtures/README.md's section from trained.json
    python tools/train_fixtures.py --default-only       # copy trained_qwen2 to lpu/data/default.onnx (+ tokenizer)

Needs the ``dev`` extra (torch, transformers, optimum-onnx; ``tokenizers`` comes with transformers); the test
suite does not. The random-weight fixtures of tools/make_fixtures.py (``initializer_range`` 0.25, randomised
norm scales) exercise every code path but have weight statistics no trained model has; these are trained, so
the numbers measured on them (8-bit weights' error, say) are the numbers a real model would show, at a tiny size.

* **Corpus**: the docstrings (``ast.get_docstring`` of every module, class and function, in source order) of
  every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, files in sorted order of their relative path,
  skipping ``site-packages``/``dist-packages``, test directories (``test``, ``tests``, ``idle_test``) and
  ``test_*.py``; exact duplicates are dropped (the first is kept), at most ``CORPUS_CAP`` bytes. It depends on
  the Python version, which is recorded. One document in ``HELDOUT_EVERY`` (by index) is held out.
* **Tokenizer**: byte-level BPE (``tokenizers``: GPT-2's pre-tokenizer regex, byte alphabet, no prefix space)
  with ``VOCAB`` entries, ``<|endoftext|>`` = id 0 separating the documents; trained on the training documents.
  The same file is written beside each model as ``<fixture>.tokenizer.json`` (``tokenizers.Tokenizer.from_file``
  reads it).
* **Models**: Hugging Face models from explicit configs (``TRAINED``), default init (``initializer_range``
  0.02), no dropout, ``sdpa`` attention, trained single-threaded with AdamW for ``STEPS`` steps on random
  ``SEQ``-token windows of the training stream (``BATCH`` windows a step), all seeds fixed; the final training
  loss (mean of the last 50 steps) and the loss on the held-out documents are printed and recorded.
* **Export and checks**: tools/make_fixtures.py's Optimum export (``export_optimum``, with its tied-weight
  deduplication) and its checks (``check_against_torch``: ONNX Runtime vs PyTorch at several past lengths;
  ``check_greedy``: the 16-token greedy decode of [1, 2, 3] through ``lpu.reference.OrtDecoder`` equals
  PyTorch's, no near-tie), plus the same greedy comparison from ``PROMPT_TEXT``'s token ids.

The records (config, steps, losses, corpus, versions, sha256, greedy tokens) go to ``<out>/trained.json`` and a
section at the end of ``<out>/README.md`` (tools/make_fixtures.py keeps that section when it rewrites the file).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import math
import os
import platform
import sys
import sysconfig
import tempfile
import time
import tokenize
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' thread pool: one thread, like torch here
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_fixtures as mf  # noqa: E402

CORPUS_CAP = 4_000_000  # bytes of UTF-8 docstring text (3.11's stdlib has about 1.8 MB)
HELDOUT_EVERY = 20  # document i is held out when i % HELDOUT_EVERY == 0
EXCLUDE_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
VOCAB = 512
EOT = "<|endoftext|>"
SEQ, BATCH, STEPS = 256, 16, 1500
LR, WARMUP, MIN_LR_FRAC, WEIGHT_DECAY, BETAS, CLIP = 2e-3, 50, 0.1, 0.1, (0.9, 0.95), 1.0
HELDOUT_WINDOWS = 64  # at most this many SEQ-token windows of each stream for the evaluations
PROMPT_TEXT = "Return the number of"
INIT_RANGE = 0.02  # Hugging Face's default
SEED = 1
MARKER = mf.TRAINED_MARKER  # tools/make_fixtures.py keeps the README from this line on

SMALL = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=256, vocab_size=VOCAB, max_position_embeddings=SEQ, rope_theta=10000.0,
             bos_token_id=0, eos_token_id=0)
TRAINED = [
    mf.Spec("trained_llama", "llama", "optimum", dict(SMALL, tie_word_embeddings=False), seed=SEED,
            init_range=INIT_RANGE, notes="separate embed_tokens and lm_head"),
    mf.Spec("trained_gpt2", "gpt2", "optimum",
            dict(n_layer=2, n_embd=128, n_head=4, vocab_size=VOCAB, n_positions=SEQ, resid_pdrop=0.0,
                 embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0), seed=SEED, init_range=INIT_RANGE,
            notes="tied wte/lm_head: the lm_head MatMul reads `Transpose(transformer.wte.weight)`"),
    mf.Spec("trained_qwen2", "qwen2", "optimum", dict(SMALL, tie_word_embeddings=True), seed=SEED,
            init_range=INIT_RANGE, notes="tied embed_tokens/lm_head (as the small Qwen2 checkpoints); q/k/v biases"),
]


# The bundled default model (`lpu decode`'s and `make run`'s): this trained fixture and its tokenizer, copied
# to lpu/data/ (so an installed `lpu` has them), with its config.json in <out>/configs/default.json. Qwen2 for
# its margins: its greedy decodes have the widest top-1/top-2 gaps of the three (fp16 keeps ONNX Runtime's tokens).
DEFAULT_FROM = "trained_qwen2"
DATA = REPO / "lpu" / "data"


def install_default(out_dir: Path, manifest: dict, data_dir: Path = DATA) -> dict:
    """Copy DEFAULT_FROM's model and tokenizer to data_dir/default.onnx and default.tokenizer.json, write its
    config.json (as `save_pretrained` writes it: what differs from the class defaults) to configs/default.json."""
    import shutil

    import transformers

    rec = next(r for r in manifest["fixtures"] if r["name"] == DEFAULT_FROM)
    spec = next(s for s in TRAINED if s.name == DEFAULT_FROM)
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {"default.onnx": out_dir / f"{DEFAULT_FROM}.onnx", "default.tokenizer.json": out_dir / rec["tokenizer"]}
    for name, src in files.items():
        shutil.copyfile(src, data_dir / name)
    cfg = getattr(transformers, mf.FAMILY_CLASSES[spec.family][0])(**spec.config, initializer_range=spec.init_range)
    d = json.loads(cfg.to_json_string(use_diff=True))
    d.pop("transformers_version", None)  # the file should not change with the library's version
    (out_dir / "configs").mkdir(parents=True, exist_ok=True)
    (out_dir / "configs" / "default.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    rel = (lambda p: str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p))
    return {"from": DEFAULT_FROM, "file": rel(data_dir / "default.onnx"),
            "tokenizer": rel(data_dir / "default.tokenizer.json"), "config": rel(out_dir / "configs" / "default.json"),
            "sha256": {n: mf._sha256(data_dir / n) for n in files}}


# --------------------------------------------------------------------------- corpus and tokenizer
def stdlib_files(root: Path) -> list[Path]:
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if set(rel.parts[:-1]) & EXCLUDE_DIRS or p.name.startswith("test_"):
            continue
        files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(node, out: list[str]) -> None:
    """Module, class and function docstrings in source order (preorder over the tree)."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            out.append(doc.strip())
    for child in ast.iter_child_nodes(node):
        _docstrings(child, out)


def collect_corpus(root: Path | None = None, cap: int = CORPUS_CAP) -> tuple[list[str], dict]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    docs, seen, skipped, used, total = [], set(), [], 0, 0
    for f in files:
        try:
            with tokenize.open(f) as fh:  # honours coding cookies
                tree = ast.parse(fh.read(), filename=str(f))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            skipped.append(f.relative_to(root).as_posix())
            continue
        found: list[str] = []
        _docstrings(tree, found)
        used += 1
        for d in found:
            n = len(d.encode("utf-8"))
            if d in seen:
                continue
            if total + n > cap:
                break
            seen.add(d)
            docs.append(d)
            total += n
        if total >= cap:
            break
    text = "\n\n".join(docs)
    meta = {
        "source": "docstrings of the Python standard library (sysconfig.get_paths()['stdlib'])",
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "files_scanned": len(files), "files_used": used, "files_skipped": skipped, "documents": len(docs),
        "bytes": total, "cap_bytes": cap, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "heldout": f"document i with i % {HELDOUT_EVERY} == 0",
        "excluded": sorted(EXCLUDE_DIRS) + ["test_*.py"],
    }
    return docs, meta


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    train = [d for i, d in enumerate(docs) if i % HELDOUT_EVERY]
    held = [d for i, d in enumerate(docs) if i % HELDOUT_EVERY == 0]
    return train, held


def train_tokenizer(train_docs: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id(EOT) == 0, tok.get_vocab_size()
    return tok


def token_stream(tok, docs: list[str]) -> np.ndarray:
    """Every document preceded by <|endoftext|> (id 0), concatenated."""
    ids = []
    for enc in tok.encode_batch(docs):
        ids.append(0)
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.int64)


# --------------------------------------------------------------------------- training
def build(spec: mf.Spec):
    import torch
    import transformers

    torch.manual_seed(spec.seed)
    cfg_cls, model_cls = mf.FAMILY_CLASSES[spec.family]
    cfg = getattr(transformers, cfg_cls)(**spec.config, initializer_range=spec.init_range, attn_implementation="sdpa")
    return getattr(transformers, model_cls)(cfg).float()


def windows(stream: np.ndarray, n: int) -> np.ndarray:
    """Up to n non-overlapping (SEQ + 1)-token windows from the start of a stream (the evaluation set)."""
    k = min(n, (len(stream) - 1) // SEQ)
    return np.stack([stream[i * SEQ:i * SEQ + SEQ + 1] for i in range(k)])


def mean_loss(model, wins: np.ndarray) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(wins), BATCH):
            x = torch.from_numpy(wins[i:i + BATCH])
            logits = model(input_ids=x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                     reduction="sum")
            total += float(loss)
            count += x[:, 1:].numel()
    return total / count


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up over WARMUP steps, then cosine decay to MIN_LR_FRAC * LR at the last step."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - 1 - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))


def train(spec: mf.Spec, train_ids: np.ndarray, held_ids: np.ndarray, steps: int) -> tuple[object, dict]:
    import torch

    model = build(spec)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings; not norms and biases
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS)
    g = torch.Generator().manual_seed(1000 + spec.seed)
    data = torch.from_numpy(train_ids)
    hist, t0 = [], time.time()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        starts = torch.randint(0, len(data) - SEQ - 1, (BATCH,), generator=g)
        x = torch.stack([data[s:s + SEQ + 1] for s in starts.tolist()])
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        hist.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  lr {lr_at(step, steps):.2e}  loss {hist[-1]:.4f}  ({time.time() - t0:.0f} s)",
                  flush=True)
    seconds = time.time() - t0
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    info = {
        "optimizer": f"AdamW(lr={LR}, betas={BETAS}, weight_decay={WEIGHT_DECAY} on matrices and embeddings, "
                     f"0 on norms and biases), grad-norm clip {CLIP}",
        "schedule": f"linear warm-up {WARMUP} steps, cosine to {MIN_LR_FRAC} x lr",
        "steps": steps, "batch": BATCH, "seq": SEQ, "tokens_seen": steps * BATCH * SEQ,
        "model_seed": spec.seed, "data_seed": 1000 + spec.seed, "threads": torch.get_num_threads(),
        "first_loss": round(hist[0], 4),
        "final_train_loss": round(float(np.mean(hist[-50:])), 4),  # mean of the last 50 steps
        "train_eval_loss": round(mean_loss(model, windows(train_ids, HELDOUT_WINDOWS)), 4),
        "heldout_loss": round(mean_loss(model, windows(held_ids, HELDOUT_WINDOWS)), 4),
        "heldout_windows": len(windows(held_ids, HELDOUT_WINDOWS)),
        "seconds": round(seconds, 1),
    }
    return model, info


# --------------------------------------------------------------------------- export and checks
def check_text_greedy(model, path: Path, prompt: list[int], ref) -> tuple[list[int], float, float]:
    """The greedy decode of `prompt` through OrtDecoder equals PyTorch's (full recompute), as check_greedy does
    for [1, 2, 3]."""
    t_tokens, t_rows, _ = mf.torch_greedy(model, prompt, mf.N_TOKENS)
    tokens, rows = ref.OrtDecoder(path, threads=1).greedy(prompt, mf.N_TOKENS)
    diff = float(np.abs(rows - t_rows).max())
    if not np.isfinite(rows).all() or tokens != t_tokens or diff > mf.ATOL:
        raise AssertionError(f"{path.name}: ORT greedy {tokens} vs PyTorch {t_tokens}, logits diff {diff:.3g}")
    return tokens, mf.min_gap(rows), diff


def versions() -> dict:
    from importlib.metadata import version

    v = mf.versions()
    v.pop("onnxruntime-genai", None)  # not used here
    return {"python": platform.python_version(), **v, "tokenizers": version("tokenizers")}


def generate(out_dir: Path, only: set[str] | None, steps: int) -> tuple[list[dict], dict]:
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    logging.getLogger("optimum").setLevel(logging.ERROR)
    ref = mf._load_reference()
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    docs, corpus = collect_corpus()
    train_docs, held_docs = split(docs)
    tok = train_tokenizer(train_docs)
    train_ids, held_ids = token_stream(tok, train_docs), token_stream(tok, held_docs)
    corpus.update(train_documents=len(train_docs), heldout_documents=len(held_docs),
                  train_tokens=int(len(train_ids)), heldout_tokens=int(len(held_ids)))
    prompt = tok.encode(PROMPT_TEXT).ids
    print(f"corpus: {corpus['documents']:,} docstrings ({corpus['bytes']:,} bytes) from {corpus['files_used']} files "
          f"of Python {corpus['python']}'s stdlib; {len(train_ids):,} training / {len(held_ids):,} held-out tokens "
          f"(BPE vocab {VOCAB}); {time.time() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(str(Path(tmp) / "t.json"))
        tok_bytes = (Path(tmp) / "t.json").read_bytes()
    tokenizer = {"kind": "byte-level BPE (tokenizers: GPT-2 pre-tokenizer regex, byte alphabet, no prefix space)",
                 "vocab_size": VOCAB, "special_tokens": {EOT: 0}, "min_frequency": 2,
                 "trained_on": "the training documents", "sha256": hashlib.sha256(tok_bytes).hexdigest()}

    records = []
    for spec in TRAINED:
        if only and spec.name not in only:
            continue
        print(f"[{spec.name}] {mf.config_str(spec)}: {steps} steps of {BATCH} x {SEQ} tokens", flush=True)
        model, info = train(spec, train_ids, held_ids, steps)
        print(f"  final training loss {info['final_train_loss']:.4f} (mean of the last 50 steps), on "
              f"{HELDOUT_WINDOWS} training windows {info['train_eval_loss']:.4f}, held-out {info['heldout_loss']:.4f} "
              f"nats/token; {info['seconds']:.0f} s", flush=True)
        path = out_dir / f"{spec.name}.onnx"
        tok_path = out_dir / f"{spec.name}.tokenizer.json"
        mf.export_optimum(model, path)
        tok_path.write_bytes(tok_bytes)
        diff_t = mf.check_against_torch(model, path, spec.exporter, ref)
        t_tokens, t_rows, _ = mf.torch_greedy(model, mf.PROMPT, mf.N_TOKENS)
        tokens, gap, diff_g = mf.check_greedy(path, t_tokens, t_rows, ref)
        text_tokens, text_gap, diff_x = check_text_greedy(model, path, prompt, ref)
        files = [path, tok_path]
        sizes = {f.name: f.stat().st_size for f in files}
        print(f"  files: " + ", ".join(f"{n} ({s:,} B)" for n, s in sizes.items()))
        print(f"  ORT vs torch max abs diff {diff_t:.2e} (random past), {diff_g:.2e} / {diff_x:.2e} (greedy logits)")
        print(f"  greedy {mf.PROMPT} x {mf.N_TOKENS}: {tokens} (min gap {gap:.4f})")
        print(f"  greedy {PROMPT_TEXT!r} = {prompt} x {mf.N_TOKENS}: {PROMPT_TEXT!r} + "
              f"{tok.decode(text_tokens)!r} (min gap {text_gap:.4f})", flush=True)
        records.append(dict(
            name=spec.name, file=str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
            tokenizer=tok_path.name, family=spec.family, exporter=spec.exporter, config=mf.config_str(spec),
            seed=spec.seed, params=sum(p.numel() for p in model.parameters()), sizes=sizes,
            sha256={f.name: mf._sha256(f) for f in files}, prompt=mf.PROMPT, greedy_tokens=tokens,
            min_gap=round(gap, 6), prompt_text=PROMPT_TEXT, text_prompt=prompt, text_greedy_tokens=text_tokens,
            text_greedy=tok.decode(text_tokens), text_min_gap=round(text_gap, 6), training=info, notes=spec.notes))
    return records, {"corpus": corpus, "tokenizer": tokenizer}


# --------------------------------------------------------------------------- README section
def readme_section(manifest: dict) -> list[str]:
    c, t = manifest["corpus"], manifest["tokenizer"]
    lines = [
        MARKER,
        "",
        "## Trained fixtures",
        "",
        "Small decoders trained on text every machine has, by `python tools/train_fixtures.py` (dev extra;",
        "regenerate one with `--only NAME`); `trained.json` holds these facts (and sha256 of every file).",
        f"Corpus: the {c['documents']:,} distinct docstrings ({c['bytes']:,} bytes, sha256 `{c['sha256'][:16]}...`) of",
        f"{c['files_used']} files of Python {c['python']}'s standard library (module, class and function docstrings",
        "in source order, files sorted; no site-packages, test directories or `test_*.py`): the corpus changes",
        f"with the Python version. One document in {HELDOUT_EVERY} is held out ({c['heldout_tokens']:,} tokens; "
        f"{c['train_tokens']:,} for training).",
        f"Tokenizer: {t['kind']}, vocabulary {t['vocab_size']}, `{EOT}` = id 0 between documents; the same file",
        "beside each model as `<fixture>.tokenizer.json` (`tokenizers.Tokenizer.from_file`).",
        "Weights: Hugging Face default init (`initializer_range` 0.02), no dropout, then AdamW; exported by the",
        "Optimum path of tools/make_fixtures.py and checked against PyTorch as those are.",
        "",
        "| file | family | config | params | size (bytes) | training | final / held-out loss (nats/token) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in manifest["fixtures"]:
        tr = r["training"]
        size = " + ".join(f"{s:,}" for s in r["sizes"].values())
        files = " + ".join(f"`{n}`" for n in r["sizes"])
        lines.append(f"| {files} | {r['family']} | `{r['config']}` | {r['params']:,} | {size} | "
                     f"{tr['steps']} steps x {tr['batch']} x {tr['seq']} tokens, seed {r['seed']}, "
                     f"{tr['seconds']:.0f} s on {tr['threads']} thread | "
                     f"{tr['final_train_loss']:.3f} / {tr['heldout_loss']:.3f} |")
    if manifest.get("default"):
        d = manifest["default"]
        lines += ["", f"The bundled default model `{d['file']}` (with `{d['tokenizer']}`; config `{d['config']}`) is a "
                      f"copy of `{d['from']}` (`--default-only` reinstalls it)."]
    first = manifest["fixtures"][0] if manifest["fixtures"] else None
    if first:
        lines += ["", f"Optimizer: {first['training']['optimizer']}; {first['training']['schedule']}.",
                  f"Final loss: the mean of the last 50 steps' batch losses; held-out: over the first "
                  f"{first['training']['heldout_windows']} {SEQ}-token windows of the held-out stream."]
    lines += ["", f"Greedy decodes ({mf.N_TOKENS} tokens, ONNX Runtime, one token per step) of [1, 2, 3] and of "
              f"the token ids of {PROMPT_TEXT!r}, with the smallest top-1/top-2 logit gap:", "",
              "| file | tokens from [1, 2, 3] | min gap | prompt ids | continuation | min gap |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in manifest["fixtures"]:
        cont = r["text_greedy"].replace("|", "\\|").replace("\n", "\\n")
        lines.append(f"| `{r['file']}` | {r['greedy_tokens']} | {r['min_gap']:.4f} | {r['text_prompt']} | "
                     f"`{cont}` | {r['text_min_gap']:.4f} |")
    lines += ["", "Generated with " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + ".", ""]
    return lines


def write_readme_section(out_dir: Path, manifest: dict) -> None:
    path = out_dir / "README.md"
    text = path.read_text() if path.exists() else "# ONNX decoder fixtures\n"
    head = text.split(MARKER)[0].rstrip("\n")
    path.write_text(head + "\n\n" + "\n".join(readme_section(manifest)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures", help="fixture directory")
    ap.add_argument("--only", nargs="*", help="only these fixtures (e.g. trained_llama)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS}; recorded)")
    ap.add_argument("--readme-only", action="store_true", help="only rewrite <out>/README.md's section")
    ap.add_argument("--default-only", action="store_true",
                    help=f"only (re)install the bundled default model from {DEFAULT_FROM} (no training)")
    args = ap.parse_args(argv)
    out_dir = args.out.resolve()
    manifest_path = out_dir / "trained.json"
    if args.readme_only:
        write_readme_section(out_dir, json.loads(manifest_path.read_text()))
        return 0
    if args.default_only:
        manifest = json.loads(manifest_path.read_text())
        manifest["default"] = install_default(out_dir, manifest)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        write_readme_section(out_dir, manifest)
        print(f"installed {manifest['default']['file']} (from {DEFAULT_FROM}); wrote {manifest_path}")
        return 0
    records, meta = generate(out_dir, set(args.only) if args.only else None, args.steps)
    by_name = {}
    if manifest_path.exists():  # --only: keep the others' records
        old = json.loads(manifest_path.read_text())
        if old.get("corpus", {}).get("sha256") == meta["corpus"]["sha256"]:
            by_name = {r["name"]: r for r in old.get("fixtures", [])}
    by_name.update({r["name"]: r for r in records})
    manifest = {"generator": "tools/train_fixtures.py", "versions": versions(), **meta,
                "fixtures": [by_name[s.name] for s in TRAINED if s.name in by_name]}
    if any(r["name"] == DEFAULT_FROM for r in manifest["fixtures"]):
        manifest["default"] = install_default(out_dir, manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    write_readme_section(out_dir, manifest)
    print(f"wrote {manifest_path} and {out_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
