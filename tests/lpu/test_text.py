"""Readable output: models that ship a tokenizer decode text in and text out, and `make run` prints the text
ONNX Runtime generates from the same model and tokenizer."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer  # the reference side uses the library directly, not lpu/text.py

from clirun import run
from lpu.cli import default_model
from lpu.reference import OrtDecoder

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


def make_run_args() -> list[str]:
    """The arguments `make run` gives `lpu decode` (the Makefile's RUN_ARGS)."""
    m = re.search(r"^RUN_ARGS \?= (.*)$", (ROOT / "Makefile").read_text(), re.M)
    return shlex.split(m.group(1))


def ort_text(model: Path, tok_file: Path, text: str, n: int) -> tuple[list[int], str]:
    tok = Tokenizer.from_file(str(tok_file))
    tokens, _ = OrtDecoder(model, threads=1).greedy(tok.encode(text, add_special_tokens=False).ids, n)
    return tokens, tok.decode(tokens, skip_special_tokens=False)


def test_make_run_prints_the_text_onnxruntime_generates(capsys):
    args = make_run_args()
    assert "--text" in args
    prompt, n = args[args.index("--text") + 1], int(args[args.index("--tokens") + 1])
    want_tokens, want_text = ort_text(default_model(), default_model().with_name("default.tokenizer.json"), prompt, n)
    assert len(want_text.split()) >= 4  # words, not ids
    code, out, err = run(["decode", *args, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["tokens"] == want_tokens and d["text"] == want_text and d["prompt_text"] == prompt
    code, out, err = run(["decode", *args], capsys)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("text "))
    assert line.split(None, 1)[1] == f"{json.dumps(prompt)} -> {json.dumps(want_text, ensure_ascii=False)}"


@pytest.mark.parametrize("name", ["trained_llama", "trained_gpt2"])
def test_a_program_carries_its_tokenizer(name, tmp_path, capsys, monkeypatch):
    """Compiling a model with `<stem>.tokenizer.json` beside it puts the tokenizer in the program; the program
    decodes --text from a directory that has no tokenizer."""
    prog = tmp_path / "p.lpu"
    code, _, err = run(["compile", FIX / f"{name}.onnx", "-o", prog, "--chips", "2", "--max-context", "256"], capsys)
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(prog, elsewhere / "p.lpu")
    monkeypatch.chdir(elsewhere)
    code, out, err = run(["decode", "p.lpu", "--text", "Return the", "--tokens", "8", "--json"], capsys)
    assert code == 0, err
    tokens, text = ort_text(FIX / f"{name}.onnx", FIX / f"{name}.tokenizer.json", "Return the", 8)
    d = json.loads(out)
    assert d["tokens"] == tokens and d["text"] == text


def test_tokenizer_json_beside_a_model_directory_style(tmp_path, capsys):
    """A Hugging Face export directory: model.onnx with tokenizer.json."""
    shutil.copy(FIX / "trained_qwen2.onnx", tmp_path / "model.onnx")
    shutil.copy(FIX / "trained_qwen2.tokenizer.json", tmp_path / "tokenizer.json")
    code, out, err = run(["decode", tmp_path / "model.onnx", "--text", "Return", "--tokens", "4", "--json",
                          "--chips", "1"], capsys)
    assert code == 0, err
    assert json.loads(out)["tokens"] == ort_text(tmp_path / "model.onnx", tmp_path / "tokenizer.json", "Return", 4)[0]


def test_no_text_without_a_tokenizer_and_ids_still_work(tmp_path, capsys):
    llama = FIX / "llama_optimum.onnx"
    code, out, err = run(["decode", llama, "--text", "hello", "--tokens", "2", "--chips", "1"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "ships no tokenizer" in err and "--prompt" in err
    prog = tmp_path / "p.lpu"
    assert run(["compile", llama, "-o", prog, "--chips", "1", "--max-context", "320"], capsys)[0] == 0
    code, out, err = run(["decode", prog, "--text", "hello", "--tokens", "2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "carries no tokenizer" in err
    code, out, err = run(["decode", prog, "--prompt", "1,2", "--tokens", "2", "--json"], capsys)
    assert code == 0 and "text" not in json.loads(out)


def test_bad_text_arguments_and_bad_tokenizers_are_one_line(tmp_path, capsys):
    code, _, err = run(["decode", "--text", "a", "--prompt", "1,2"], capsys)
    assert code == 2 and "use one" in err and err.count("\n") == 1
    code, _, err = run(["decode", "--text", ""], capsys)
    assert code == 2 and "--text is empty" in err
    shutil.copy(FIX / "llama_optimum.onnx", tmp_path / "m.onnx")
    (tmp_path / "m.tokenizer.json").write_text("{not json")
    out_file = tmp_path / "m.lpu"
    code, out, err = run(["compile", tmp_path / "m.onnx", "-o", out_file, "--chips", "1", "--max-context", "320"], capsys)
    assert code == 1 and err.count("\n") == 1 and "m.tokenizer.json: not a tokenizer.json" in err
    assert not out_file.exists()
    (tmp_path / "m.tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "nonsense"}}))
    code, _, err = run(["compile", tmp_path / "m.onnx", "-o", out_file, "--chips", "1", "--max-context", "320"], capsys)
    assert code == 1 and err.count("\n") == 1 and "not a tokenizer.json the tokenizers package can load" in err
    # the default model's tokenizer has 512 tokens; llama_optimum's vocabulary is 700: fits. The other way round
    # (a 512-token model given a bigger tokenizer) is some other model's tokenizer
    shutil.copy(FIX / "trained_qwen2.onnx", tmp_path / "q.onnx")
    big = json.loads((FIX / "trained_qwen2.tokenizer.json").read_text())
    big["added_tokens"].append({"id": 600, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (tmp_path / "q.tokenizer.json").write_text(json.dumps(big))
    code, _, err = run(["compile", tmp_path / "q.onnx", "-o", tmp_path / "q.lpu", "--chips", "1"], capsys)
    assert code == 1 and err.count("\n") == 1 and "vocabulary is 512" in err, err
    assert not (tmp_path / "q.lpu").exists()
