"""Progress bars (rich) for work longer than about two seconds: compile passes, decodes, estimates. Drawn on
stderr, only when stderr is a terminal and the command is not printing --json; nothing is drawn before the work
has run for DELAY seconds, and the bar disappears when the work ends (transient), so short commands and
scripted runs print exactly what they did before. `lpu sweep` has its own bar (lpu/sweep.py)."""
from __future__ import annotations

import sys
import time

DELAY = 2.0  # seconds of work before a bar appears


def console():
    from rich.console import Console

    return Console(stderr=True)


def enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class Bar:
    """`with Bar(on, "compiling") as bar:` then `bar.stage("lower")` or `bar.total(n)` / `bar.advance()`."""

    def __init__(self, on: bool, what: str, console=None) -> None:
        self.on, self.what, self.console = on, what, console
        self.t0 = time.perf_counter()
        self._p = self._task = None
        self._total: int | None = None
        self._done = 0
        self._desc = what

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.stop()

    def _show(self) -> None:
        if self._p is None:
            if not self.on or time.perf_counter() - self.t0 < DELAY:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            con = self.console or console()
            cols = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn()] if self._total else [SpinnerColumn(), TextColumn("{task.description}"),
                                                             TimeElapsedColumn()]
            self._p = Progress(*cols, console=con, transient=True)
            self._p.start()
            self._task = self._p.add_task(self._desc, total=self._total)
        self._p.update(self._task, description=self._desc, completed=self._done, total=self._total)

    def stage(self, name: str) -> None:
        self._desc = f"{self.what}: {name}"
        self._show()

    def total(self, n: int) -> None:
        self._total, self._done = int(n), 0
        self._show()

    def advance(self, k: int = 1) -> None:
        self._done += k
        self._show()
