"""The demo's client: a paced mix of requests into each service's sidecar inbound listener.

A pacer issues tickets at `rate` per second (open loop: slow answers do not slow the
schedule) into a small queue; a fixed set of workers turns tickets into requests, so
concurrency is bounded and no task is created per request. When every worker is busy
and the queue is full, the ticket is counted as `skipped` rather than queued without
bound: the report then says the offered rate was not reached, and by how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from .apps import SYMBOLS
from .topology import HOST, Node

__all__ = ["ENTRIES", "Entry", "EntryStats", "Traffic"]

Clock = Callable[[], float]
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One kind of request a client makes from outside the mesh."""

    service: str  # whose sidecar inbound it enters
    method: str
    route: str  # the path template, as the summary names it
    weight: float

    @property
    def label(self) -> str:
        return f"{self.method} {self.route}"

    def make(self, rng: random.Random) -> tuple[str, dict[str, Any] | None]:
        user_id = rng.randint(1, 1000)
        if self.route == "/api/trading/orders":
            return self.route, {"user_id": user_id, "symbol": rng.choice(SYMBOLS),
                                "side": rng.choice(("BUY", "SELL")),
                                "quantity": rng.randint(1, 50)}
        return self.route.split("{")[0] + str(user_id), None


ENTRIES = (
    Entry("user", "GET", "/api/users/{id}", 0.4),
    Entry("portfolio", "GET", "/api/portfolio/{user_id}", 0.3),
    # trading → portfolio through trading's outbound listener: the one two-hop path.
    Entry("trading", "POST", "/api/trading/orders", 0.3),
)


@dataclass(slots=True)
class EntryStats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, every request
    error_kinds: Counter[str] = field(default_factory=Counter)


class Traffic:
    def __init__(self, session: ClientSession, mesh: tuple[Node, ...], rate: float,
                 concurrency: int = 32, rng: random.Random | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.session = session
        self.rate = rate
        self.concurrency = concurrency
        self.rng = rng or random.Random(7)
        self.clock = clock
        self.inbound = {node.name: node.inbound for node in mesh}
        self.stats = {entry.label: EntryStats() for entry in ENTRIES}
        self.skipped = 0
        self._weights = [entry.weight for entry in ENTRIES]
        self._queue: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=concurrency)
        self._timeout = ClientTimeout(total=REQUEST_TIMEOUT)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stats.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stats.values())

    async def run(self, stop: asyncio.Event, drain: float = REQUEST_TIMEOUT + 1) -> None:
        """Send until `stop` is set, then let requests in flight finish (up to `drain` s)."""
        if self.rate <= 0:
            await stop.wait()
            return
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await self._pace(stop)
        finally:
            while not self._queue.empty():  # tickets not yet started are simply dropped
                self._queue.get_nowait()
            for _ in workers:
                self._queue.put_nowait(None)
            _, late = await asyncio.wait(workers, timeout=drain)
            for task in late:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _pace(self, stop: asyncio.Event) -> None:
        start, issued = self.clock(), 0
        while not stop.is_set():
            due = int((self.clock() - start) * self.rate) - issued
            for _ in range(due):
                entry = self.rng.choices(ENTRIES, self._weights)[0]
                try:
                    self._queue.put_nowait(entry)
                except asyncio.QueueFull:
                    self.skipped += 1
            issued += max(due, 0)
            # Sleep until the next ticket is due, but at least 1 ms: at high rates tickets
            # go out in small batches rather than one timer per request.
            wait = max((issued + 1) / self.rate - (self.clock() - start), 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _worker(self) -> None:
        while (entry := await self._queue.get()) is not None:
            path, body = entry.make(self.rng)
            url = f"http://{HOST}:{self.inbound[entry.service]}{path}"
            stats = self.stats[entry.label]
            began = self.clock()
            try:
                async with self.session.request(entry.method, url, json=body,
                                                timeout=self._timeout) as resp:
                    await resp.read()
                    problem = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
            except (ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            stats.latencies.append(self.clock() - began)
            stats.requests += 1
            if problem is not None:
                stats.errors += 1
                stats.error_kinds[problem] += 1
