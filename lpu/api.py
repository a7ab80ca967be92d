"""The Python API: `lpu.compile(model, chips=8, hw="groqchip1") -> Program`, then `program.decode(...)`,
`.estimate(...)`, `.report(...)`, `.trace(...)`, `.info()`, `.save(path)`; `lpu.load(path)` reads a program file.

It is the `lpu` command's work as functions (the same compiler, emulator, checks and errors: a bad input
raises the exception whose one line the command prints), for notebooks and scripts. This module and the CLI
are the only places that join the compiler and the emulator."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Decoded:
    """What `Program.decode` returns: the generated tokens, the cycles of each (the step that feeds it through
    the chips), their logits [tokens, vocab], and the text when the program carries a tokenizer."""

    prompt: list[int]
    tokens: list[int]
    cycles_per_token: list[int]
    prefill_cycles: int
    tokens_per_second: float
    lower_bound_cycles: list[int]
    bound_ratio: list[float]
    logits: np.ndarray
    text: str | None
    prompt_text: str | None
    positions: list[int]


class Program:
    """A compiled program (an isa.Program, `.program`) with what the `lpu` command does to one."""

    def __init__(self, program, name: str = "") -> None:
        self.program = program
        self.name = name
        self._em = None

    @property
    def header(self) -> dict:
        return self.program.header

    @property
    def timing_only(self) -> bool:
        return self.program.timing_only

    def _emulator(self):
        if self._em is None:
            from .emulator import Emulator

            self._em = Emulator(self.program)
        return self._em

    def _tokenizer(self):
        from . import text

        return text.of_program(self.program.header)

    def _prompt(self, prompt) -> tuple[list[int], object]:
        from .cli import UsageError

        tok = self._tokenizer()
        if isinstance(prompt, str):
            if tok is None:
                raise UsageError(f"{self.name or 'this program'} carries no tokenizer: give the prompt as token ids")
            from .cli import _prompt_of_text

            return _prompt_of_text(tok, prompt), tok
        ids = [int(t) for t in prompt]
        if not ids:
            raise UsageError("the prompt is empty: give at least one token id")
        return ids, tok

    def decode(self, prompt="Return the number of", tokens: int = 16) -> Decoded:
        """Greedy decoding on the emulated chips: `prompt` is text (with a tokenizer) or token ids."""
        from .cli import UsageError
        from .decode import Decoder

        if tokens < 1:
            raise UsageError(f"tokens={tokens}: generate at least 1 token")
        ids, tok = self._prompt(prompt)
        dec = Decoder(self.program)
        res = dec.generate(ids, tokens)
        return Decoded(prompt=ids, tokens=list(res.tokens), cycles_per_token=list(res.cycles_per_token),
                       prefill_cycles=res.prefill_cycles, tokens_per_second=res.tokens_per_second,
                       lower_bound_cycles=list(res.lower_bound_cycles), bound_ratio=list(res.bound_ratio),
                       logits=res.logits, text=None if tok is None else tok.decode(res.tokens),
                       prompt_text=None if tok is None else tok.decode(ids), positions=list(res.positions))

    def estimate(self, context: int | None = None) -> dict:
        """Per bucket (or the one serving `context` positions): the checked cycles per token, tokens/s, the
        lower bound and bound ratio, as `lpu estimate --json` prints them."""
        from .estimate import estimate_program

        return estimate_program(self.program, context, self.name, emulator=self._emulator())

    def report(self, context: int | None = None) -> dict:
        """Where one token's cycles go (`lpu report --json`)."""
        from .report import report

        return report(self.program, self._emulator(), context)

    def trace(self, path, prompt="Return the number of", tokens: int = 2, chips=None, layers=None, cycles=None,
              limit_mb: float = 200.0) -> dict:
        """Decode `tokens` tokens of `prompt` and write their instruction-level trace (Trace Event Format) to
        `path`; a timing-only program traces one token of its last bucket instead. `chips`, `layers`: lists
        like "0,3,8:16"; `cycles`: "A:B". Returns a summary (path, bytes, slices, flows)."""
        from . import trace as T

        sel = T.selection(self.program, chips, cycles, layers)
        T.check_path(path)
        limit = int(limit_mb * 2**20)
        if self.timing_only:
            em = self._emulator()
            b = len(self.program.header["buckets"]) - 1
            return T.trace_tokens(self.program, em, [b], [int(em.check(b).cycles)], path, sel, limit_bytes=limit)
        from .decode import Decoder

        ids, _ = self._prompt(prompt)
        dec = Decoder(self.program)
        res = dec.generate(ids, tokens)
        buckets = [dec.bucket_of(p) for p in res.positions]
        return T.trace_tokens(self.program, dec.em, buckets, res.cycles_per_token, path, sel, limit_bytes=limit)

    def info(self) -> dict:
        """What `lpu info --json` prints (without the file's path and size when never saved)."""
        from .info import info

        return info(self.program, getattr(self, "_path", None))

    def save(self, path) -> Path:
        """Write the program file (atomically: a temporary file renamed into place)."""
        import tempfile

        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        os.close(fd)
        try:
            self.program.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._path = path
        return path

    def __repr__(self) -> str:
        h = self.program.header
        return (f"<lpu.Program {self.name or '?'}: {h['chips']} x {h['hw'].get('name')}, {h.get('partition')}, "
                f"{h.get('precision')}/{h.get('weights', 'fp16')}, max context {h.get('max_context')}"
                + (", timing-only" if self.timing_only else "") + ">")


def compile(model, chips: int | None = 8, hw: str = "groqchip1", max_context: int | None = None,
            precision: str = "fp16", weights: str = "fp16", partition: str = "auto", stages: int = 0,
            timing_only: bool = False, topology=None, verify: bool | None = None) -> Program:
    """Compile an ONNX decoder (or a Hugging Face config.json, timing-only) for `chips` chips of preset or
    file `hw`, as `lpu compile` does (same defaults, same errors)."""
    from .cli import _check_model_path, _compile

    model = Path(model)
    _check_model_path(model)
    args = argparse.Namespace(hw=hw, chips=chips, precision=precision, weights=weights, partition=partition,
                              stages=stages, verify=verify, timing_only=timing_only,
                              topology=None if topology is None else os.fspath(topology))
    prog, _, _, _ = _compile(model, args, max_context, True)
    return Program(prog, model.name)


def load(path) -> Program:
    """A program file written by `lpu compile` or `Program.save`."""
    from isa import Program as IsaProgram

    from .cli import _check_model_path

    path = Path(path)
    _check_model_path(path)
    p = Program(IsaProgram.load(path), path.name)
    p._path = path
    return p


def default_model() -> Path:
    """The bundled model (a 2-layer Qwen2-style decoder trained on the standard library's docstrings, with its
    tokenizer)."""
    from .cli import default_model as _d

    return _d()
