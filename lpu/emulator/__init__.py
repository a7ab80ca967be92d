"""The LPU emulator: a schedule checker and a Numba executor for .lpu programs.

`Emulator(program)` lays out one float32 memory for every chip and loads the SRAM image;
`check(bucket)` proves a bucket program's static schedule sound (check.py); `run(bucket)` executes one
token in a single Numba call (kernels.py). The slow references the kernels and the checker are tested
against, and the builder of hand-scheduled programs, are test code (tests/support/), not shipped.
"""
from .check import CheckReport
from .errors import EmulationError
from .machine import Emulator

__all__ = ["CheckReport", "EmulationError", "Emulator"]
