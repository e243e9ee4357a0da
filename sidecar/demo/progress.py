"""A live one-line view of the traffic: redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = ["Progress"]

WINDOW = 2.0  # seconds of history behind "current" req/s: steady, yet quick to react


class Counts(Protocol):
    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...


class Progress:
    def __init__(self, counts: Counts, out: TextIO, tty: bool | None = None,
                 interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = counts
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        # A terminal redraws four times a second; a log file gets a line every few seconds.
        self.interval = interval or (0.25 if self.tty else 3.0)
        self.clock = clock
        self.start = self.clock()
        self._history: deque[tuple[float, int]] = deque([(self.start, counts.requests)])

    def line(self) -> str:
        now, done = self.clock(), self.counts.requests
        self._history.append((now, done))
        # Keep one point at least WINDOW old, so the rate spans the window (or the whole run).
        while len(self._history) > 2 and now - self._history[1][0] >= WINDOW:
            self._history.popleft()
        then, before = self._history[0]
        rps = (done - before) / (now - then) if now > then else 0.0
        return (f"{now - self.start:6.1f} s  {done:7d} requests  "
                f"{self.counts.errors:5d} errors  {rps:7.1f} req/s")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            self.show()
        if self.tty:
            self.out.write("\n")
            self.out.flush()

    def show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())  # carriage return + erase line
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()
