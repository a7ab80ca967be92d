"""The decode driver: the host side of token-by-token decoding on the emulated chips.

For each step the host writes the token, its position and the attention mask into the input symbols
(every chip has its copy), runs the program of the context bucket that position falls in, and reads
the logits back from the chips' shards. The prompt goes through one token per step (reported as
prefill); then tokens are generated greedily (argmax, lowest index on ties). The KV cache stays in
emulated SRAM between steps. Cycle counts come from the static schedule of each step's program.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from isa import Program

from .emulator import Emulator



class DecodeError(ValueError):
    """A decode request the program cannot serve (prompt out of vocabulary, context too long...)."""


@dataclass
class DecodeResult:
    tokens: list[int]
    cycles_per_token: list[int]
    prefill_cycles: int
    prompt_cycles: list[int]
    clock_hz: int
    chips: int
    tokens_per_second: float
    emulator_seconds: float
    warmup_seconds: float
    positions: list[int] = field(default_factory=list)
    lower_bound_cycles: list[int] = field(default_factory=list)
    bound_ratio: list[float] = field(default_factory=list)
    logits: np.ndarray | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("logits")
        return d


class Decoder:
    def __init__(self, program: Program) -> None:
        if program.timing_only:
            raise DecodeError("a timing-only program (no weights) cannot decode: use `lpu estimate`, or compile "
                              "without --timing-only")
        if program.header.get("buckets_partial"):
            raise DecodeError("this program was compiled for one context only (lpu estimate --context): it cannot "
                              "decode; compile it with `lpu compile`")
        self.program = program
        h = program.header
        self.buckets = h["buckets"]
        self.max_context = int(h.get("max_context", self.buckets[-1]["last_position"] + 1))
        self.vocab = int(h.get("vocab_size", 0))
        self.clock_hz = int(h["hw"]["clock_hz"])
        self.chips = int(h["chips"])
        self.em = Emulator(program)
        self.mask_len = program.symbols["attention_mask"].shape[0] if "attention_mask" in program.symbols else 0
        self.position = 0

    def reset(self) -> None:
        self.em.reset() if hasattr(self.em, "reset") else None
        self.position = 0

    def bucket_of(self, position: int) -> int:
        for b, bk in enumerate(self.buckets):
            if bk["first_position"] <= position <= bk["last_position"]:
                return b
        raise DecodeError(f"position {position} is past the program's context of {self.max_context} tokens "
                          f"(compile with a larger --max-context)")

    def step(self, token: int) -> tuple[np.ndarray, int]:
        """Run one token at the current position: its logits and its cycles."""
        p = self.position
        if not 0 <= token < self.vocab:
            raise DecodeError(f"token {token} is outside the vocabulary 0..{self.vocab - 1}")
        b = self.bucket_of(p)
        syms = self.program.symbols
        self.em.write("input_ids", np.array([token], dtype=np.float32))
        if "position_ids" in syms:
            self.em.write("position_ids", np.array([p], dtype=np.float32))
        if "attention_mask" in syms:
            mask = np.zeros(self.mask_len, dtype=np.float32)
            mask[: p + 1] = 1.0
            self.em.write("attention_mask", mask)
        cycles = int(self.em.run(b))
        logits = self.em.read("logits")[: self.vocab].astype(np.float32)
        self.position += 1
        return logits, cycles

    def generate(self, prompt, n_tokens: int, keep_logits: bool = True, on_step=None) -> DecodeResult:
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise DecodeError("the prompt is empty; give at least one token id, e.g. --prompt 1,2,3")
        if n_tokens < 1:
            raise DecodeError(f"--tokens {n_tokens}: generate at least 1 token")
        need = len(prompt) + n_tokens
        if need > self.max_context:
            raise DecodeError(f"{len(prompt)} prompt tokens + {n_tokens} new tokens need {need} positions; "
                              f"the program holds {self.max_context} (compile with --max-context {need} or more)")
        bad = [t for t in prompt if not 0 <= t < self.vocab]
        if bad:
            raise DecodeError(f"prompt token {bad[0]} is outside the vocabulary 0..{self.vocab - 1}")
        t0 = time.perf_counter()
        warm0 = getattr(self.em, "warmup_seconds", 0.0)
        prompt_cycles = []
        logits = None
        tick = on_step or (lambda: None)  # called after every step (a progress bar)
        for tok in prompt:
            logits, c = self.step(tok)
            prompt_cycles.append(c)
            tick()
        tokens, cycles, rows, positions = [], [], [], []
        for i in range(n_tokens):
            nxt = int(np.argmax(logits))
            tokens.append(nxt)
            if keep_logits:
                rows.append(logits)
            if i + 1 < n_tokens:
                positions.append(self.position)
                logits, c = self.step(nxt)
                cycles.append(c)
                tick()
        # every generated token's own pass through the chips: the last one is run too, so each token
        # has its cycles (its KV entry is written, as a continuing decode would need)
        positions.append(self.position)
        _, c = self.step(tokens[-1])
        cycles.append(c)
        tick()
        wall = time.perf_counter() - t0
        warm = getattr(self.em, "warmup_seconds", 0.0) - warm0
        mean = float(np.mean(cycles))
        bounds = [int(self.buckets[self.bucket_of(p)].get("lower_bound_cycles", 0)) for p in positions]
        ratios = [round(c / b, 4) if b else 0.0 for c, b in zip(cycles, bounds)]
        return DecodeResult(
            tokens=tokens, cycles_per_token=cycles, prefill_cycles=int(sum(prompt_cycles)), prompt_cycles=prompt_cycles,
            clock_hz=self.clock_hz, chips=self.chips, tokens_per_second=self.clock_hz / mean,
            emulator_seconds=wall - warm, warmup_seconds=warm + warm0, positions=positions,
            lower_bound_cycles=bounds, bound_ratio=ratios,
            logits=np.stack(rows).astype(np.float32) if rows else None)
