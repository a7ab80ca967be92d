"""Compile time of the benchmark models (issue 4: GPT-2 small <= 30 s, the 0.5B model <= 120 s on this
2-core machine), for 8 chips at context 128, with pytest-benchmark's timer (one round: compiling is
deterministic and long). Part of `make bench`."""
from __future__ import annotations

import pytest

from _common import BENCH_DIR, model_path

LIMITS = {"gpt2-small": 30.0, "qwen2.5-0.5b": 120.0}
_ROWS: dict = {}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_compile_time(benchmark, name):
    from compiler.driver import Options, compile_model
    from lpu import config

    path = model_path(name)
    hw = config.load("groqchip1", chips=8)
    prog, rep = benchmark.pedantic(compile_model, args=(path, hw, Options(chips=8, max_context=128)), rounds=1,
                                   iterations=1)
    secs = benchmark.stats.stats.max if benchmark.stats else sum(rep.seconds.values())
    _ROWS[name] = (secs, rep.seconds, rep.instructions)
    print(f"\n{name}: compiled in {secs:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in rep.seconds.items())}); "
          f"{rep.instructions:,} instructions")
    assert secs <= LIMITS[name], f"{name}: {secs:.1f} s > {LIMITS[name]:.0f} s"


def teardown_module(module):
    if not _ROWS:
        return
    lines = ["| model | compile seconds | stages | instructions |", "|---|---|---|---|"]
    for name, (secs, st, n) in sorted(_ROWS.items()):
        lines.append(f"| {name} | {secs:.1f} | {', '.join(f'{k} {v:.1f}' for k, v in st.items())} | {n:,} |")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "compile.md").write_text("Compile time, 8 x groqchip1, context 128 (`make bench`):\n\n" + "\n".join(lines) + "\n")
