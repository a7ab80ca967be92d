"""The README's Python API example runs as it stands (in a scratch directory), and what it decodes is what ONNX
Runtime generates from the same model and tokenizer."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import lpu
from lpu.reference import OrtDecoder

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", sec, re.S).group(1)


def test_the_readme_example_runs_and_decodes_what_onnxruntime_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    ns: dict = {}
    with contextlib.redirect_stdout(buf):
        exec(compile(readme_example(), "README.md", "exec"), ns)  # noqa: S102 - the README's own code
    out = ns["out"]
    model = lpu.default_model()
    tok = Tokenizer.from_file(str(model.with_name("default.tokenizer.json")))
    ids = tok.encode("Return the number of", add_special_tokens=False).ids
    want, logits = OrtDecoder(model, threads=1).greedy(ids, 8)
    assert out.prompt == ids and out.tokens == want
    assert out.text == tok.decode(want, skip_special_tokens=False)
    assert out.logits.shape == (8, logits.shape[-1])
    doc = json.loads((tmp_path / "trace.json").read_text())
    assert any(e["ph"] == "X" for e in doc["traceEvents"])
    assert (tmp_path / "default.lpu").exists()
    # the estimate is the checked cycles of the bucket serving 64 positions: what decode measured there
    assert ns["est"]["cycles_per_token"] == [out.cycles_per_token[0]]
    rep = ns["rep"]
    assert sum(rep["by_kind"].values()) == rep["cycles_per_token"]


def test_api_errors_are_the_commands(tmp_path):
    from compiler.errors import CompileError

    from lpu.cli import UsageError

    with pytest.raises(UsageError, match="does not exist|no such|not found"):
        lpu.compile(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises((CompileError, UsageError)):
        lpu.compile(bad, chips=1)
    prog = lpu.compile(ROOT / "tests" / "fixtures" / "configs" / "gpt2_optimum.json", chips=2)
    assert prog.timing_only
    from lpu.decode import DecodeError

    with pytest.raises(DecodeError):
        prog.decode([1, 2], 2)
    assert prog.estimate()["timing_only"] is True
    assert prog.trace(tmp_path / "t.json")["slices"] > 0
