"""Progress bars: drawn on a terminal once work passes the delay, never under --json, never when stderr is not a
terminal (as in every other test, whose stderr is checked line by line)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

import lpu.progress as P
from lpu.cli import main

FIX = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def test_bars_are_drawn_on_a_terminal_and_not_under_json(monkeypatch, tmp_path, capsys):
    buf = io.StringIO()
    monkeypatch.setattr(P, "DELAY", 0.0)
    monkeypatch.setattr(P, "enabled", lambda quiet: not quiet)
    monkeypatch.setattr(P, "console", lambda: Console(file=buf, force_terminal=True, width=100))
    assert main(["decode", str(FIX / "gpt2_optimum.onnx"), "--chips", "2", "--tokens", "3"]) == 0
    drawn = buf.getvalue()
    assert "compiling gpt2_optimum.onnx" in drawn and "decoding" in drawn
    out, err = capsys.readouterr()
    assert err == "" and "tokens" in out
    buf.truncate(0)
    buf.seek(0)
    assert main(["decode", str(FIX / "gpt2_optimum.onnx"), "--chips", "2", "--tokens", "3", "--json"]) == 0
    assert buf.getvalue() == ""
    json.loads(capsys.readouterr().out)


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(P, "DELAY", 0.0)
    assert main(["estimate", str(FIX / "gpt2_optimum.onnx"), "--chips", "2"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "cycles/token" in out


def test_a_bar_waits_for_the_delay():
    buf = io.StringIO()
    with P.Bar(True, "x", console=Console(file=buf, force_terminal=True)) as bar:  # DELAY 2 s: nothing yet
        bar.total(3)
        bar.advance()
    assert buf.getvalue() == ""
