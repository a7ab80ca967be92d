"""The emulator's error type."""
from __future__ import annotations


class EmulationError(RuntimeError):
    """A program the emulator cannot run: malformed, badly scheduled, or failing at run time.

    The message names the chip, cycle, queue and instruction at fault (and the other party of a
    conflict); the same facts are kept as attributes for tools and tests.
    """

    def __init__(self, message: str, *, chip: int | None = None, cycle: int | None = None, queue: str | None = None,
                 index: int | None = None, instr: str | None = None, kind: str | None = None,
                 other: dict | None = None) -> None:
        super().__init__(message)
        self.chip = chip
        self.cycle = cycle
        self.queue = queue
        self.index = index
        self.instr = instr
        self.kind = kind
        self.other = other
