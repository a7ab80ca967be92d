"""Running the `lpu` command in-process from tests."""
from __future__ import annotations

from lpu.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    """`lpu ARGV...` -> (exit status, stdout, stderr); arguments may be paths or numbers."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def buckets_of(program, positions) -> list[int]:
    """The context bucket serving each position, from the program header."""
    bk = program.header["buckets"]
    return [next(i for i, b in enumerate(bk) if b["first_position"] <= p <= b["last_position"]) for p in positions]
