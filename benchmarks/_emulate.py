"""Run in its own process by the speed benchmark: load a program, decode, report JSON (peak RSS too).

    python benchmarks/_emulate.py PROGRAM.lpu --tokens 4 [--position P]

The process imports only the ISA and the emulator (no ONNX Runtime, no compiler), so its peak resident
set is the emulator's own: the program loaded, the emulated SRAM, the checked bucket and the decode.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _status(key: str) -> int:
    """A /proc/self/status size in bytes (0 where there is no procfs). VmHWM, not getrusage's ru_maxrss:
    Linux carries the pre-exec high-water mark of the forking process (here: the benchmark, with ONNX
    Runtime's model loaded) into ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("program")
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--position", type=int, default=0, help="decode at this past length (the KV cache is garbage)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    import numpy as np

    from isa import Program
    from lpu.decode import Decoder

    t_import = time.perf_counter() - t0
    t = time.perf_counter()
    prog = Program.load(a.program)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    dec = Decoder(prog)
    t_init = time.perf_counter() - t
    dec.position = a.position
    steps = []
    for k in range(a.tokens):
        t = time.perf_counter()
        dec.step(1 + k)
        steps.append(time.perf_counter() - t)
    print(json.dumps({
        "import_seconds": t_import, "load_seconds": t_load, "init_seconds": t_init,
        "warmup_seconds": dec.em.warmup_seconds, "check_seconds": dec.em.check(dec.bucket_of(a.position)).check_seconds,
        "step_seconds": steps, "peak_rss_bytes": _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": dec.em.threads, "median_step_seconds": float(np.median(steps[1:] if len(steps) > 1 else steps)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
