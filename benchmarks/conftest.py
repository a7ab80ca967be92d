"""Shared fixtures of the benchmark suites (`make bench`; bare `pytest benchmarks` works too and skips what
needs the benchmark models when build/models/ is missing)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR  # noqa: E402

_SPEED: dict[str, dict] = {}


@pytest.fixture(scope="session")
def speed_results() -> dict[str, dict]:
    """Rows of the emulator speed report, by model; written to build/bench/speed.md at the end."""
    return _SPEED


def pytest_sessionfinish(session, exitstatus):
    if not _SPEED:
        return
    from _report import speed_markdown, speed_table

    try:
        from rich.console import Console

        Console(width=200).print(speed_table(_SPEED))
    except ImportError:  # rich is a dependency; never lose the report over it
        pass
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "speed.md").write_text(speed_markdown(_SPEED))
    print(f"\nwrote {BENCH_DIR / 'speed.md'}")
