"""Text in and out: the tokenizer that ships with a model.

A model that ships a tokenizer has a Hugging Face ``tokenizer.json`` beside its ONNX file: ``<stem>.tokenizer.json``
(as the bundled model has ``default.tokenizer.json``) or ``tokenizer.json`` in the same directory (as a Hugging Face
export directory has). Compiling such a model copies the file into the program's header (key ``tokenizer``), so a
program decodes text wherever it is moved. Encoding and decoding are the ``tokenizers`` package's (the library the
model's own tokenizer was written with: byte-level BPE, normalisers, pre-tokenisers and decoders exactly as Hugging
Face runs them), not code of ours.
"""
from __future__ import annotations

import json
from pathlib import Path

HEADER_KEY = "tokenizer"


class TextError(ValueError):
    """A tokenizer that cannot be used (absent, malformed, or not this model's)."""


def tokenizer_file(model: Path) -> Path | None:
    """The tokenizer.json shipped beside an ONNX model, or None."""
    model = Path(model)
    for cand in (model.with_name(model.stem + ".tokenizer.json"), model.with_name("tokenizer.json")):
        if cand.is_file():
            return cand
    return None


def read_tokenizer_json(path: Path) -> str:
    """The file's text, checked to be a tokenizer the `tokenizers` package loads (one-line error otherwise)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TextError(f"{Path(path).name}: not a tokenizer.json ({' '.join(str(exc).split())})") from None
    Tokenizer(text, Path(path).name)  # loads it, or says why not
    return text


class Tokenizer:
    """Encode text to token ids and decode ids to text with a Hugging Face tokenizer.json."""

    def __init__(self, json_text: str, where: str = "the program's tokenizer"):
        try:
            from tokenizers import Tokenizer as _HF
        except ImportError:  # pragma: no cover - a dependency of the package
            raise TextError("text needs the `tokenizers` package (pip install tokenizers)") from None
        try:
            self._tok = _HF.from_str(json_text)
        except Exception as exc:  # the Rust library's own error types
            raise TextError(f"{where}: not a tokenizer.json the tokenizers package can load "
                            f"({' '.join(str(exc).split())[:200]})") from None
        self.where = where

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def of_program(header: dict) -> Tokenizer | None:
    """The tokenizer a program carries, or None."""
    text = header.get(HEADER_KEY)
    return Tokenizer(text) if text else None


def check_fits(tok: Tokenizer, vocab: int, name: str) -> None:
    """A tokenizer whose ids reach past the model's vocabulary is some other model's."""
    if vocab and tok.vocab_size > vocab:
        raise TextError(f"{name}: its tokenizer has {tok.vocab_size} tokens but the model's vocabulary is {vocab}; "
                        "give the model's own tokenizer.json")
