"""A progress bar on stderr for long commands (no dependency: one line redrawn, or plain lines when piped)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``update(done, total)`` redraws ``label [#####.....] 50% 500/1000 records 120/s ETA 4s``.

    On a terminal the line is redrawn in place (at most 10 times a second); when
    stderr is a file or pipe a line is written per 10% instead, so logs stay readable.
    """

    def __init__(self, label: str, stream: TextIO | None = None, unit: str = "records") -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.unit = unit
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def line(self, done: int, total: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        fraction = done / total if total else 1.0
        filled = int(WIDTH * fraction)
        rate = done / elapsed
        eta = f" ETA {((total - done) / rate):.0f}s" if rate > 0 and done < total else ""
        return (
            f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%} "
            f"{done}/{total} {self.unit} {rate:,.0f}/s{eta}"
        )

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and done < total:
                return
            self.stream.write("\r" + self.line(done, total) + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        else:
            decile = int(10 * done / total) if total else 10
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self.line(done, total) + "\n")
            self.stream.flush()
        self._last_draw = now

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
