"""The LPU emulator: a schedule checker and a Numba executor for .lpu programs.

`Emulator(program)` lays out one float32 memory for every chip and loads the SRAM image;
`check(bucket)` proves a bucket program's static schedule sound (check.py); `run(bucket)` executes one
token in a single Numba call (kernels.py). `naive.py` is the slow reference the kernels are tested
against; `builder.py` writes small hand-scheduled programs.
"""
from .check import CheckReport
from .errors import EmulationError
from .machine import Emulator

__all__ = ["CheckReport", "EmulationError", "Emulator"]
