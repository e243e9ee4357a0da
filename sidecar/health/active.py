"""The prober: one task per endpoint, each probing on an interval and reporting the result.

The I/O shell around `thresholds.py`: it decides nothing, it reports each probe's
pass or fail to `report(address, passed)` (`ClusterHealth.on_probe`). `update()`
follows discovery: tasks start for new endpoints and are cancelled for the ones that
left; `stop()` cancels them all and waits for them. Every task is kept in a set (no
task is ever unreferenced), including those cancelled and not yet finished.

The first probe of an endpoint goes out at once (a new endpoint is PENDING until it
answers); then every `interval * (1 ± jitter)`, drawn afresh each time from `rng`,
so that many sidecars' probes do not arrive in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from .config import HealthCheck
from .probes import Address, Probe, make_probe

__all__ = ["Prober"]

log = logging.getLogger("sidecar.health")


class Prober:
    def __init__(self, check: HealthCheck, report: Callable[[Address, bool], None], *,
                 host: str = "", rng: random.Random | None = None,
                 probe: Probe | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`host`: the Host header of HTTP probes (the service name), unless the check sets
        one; `probe`: replaces the HTTP/TCP probe (tests, or a TLS-capable one); `loop`:
        where tasks run (default: the running loop when `update()` is called)."""
        self.check = check
        self._report = report
        self._rng = rng or random.Random()
        self._probe = probe or make_probe(check, host)
        self._sleep = sleep
        self._loop = loop
        self._tasks: dict[Address, asyncio.Task[None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # cancelled, not yet finished
        self._stopped = False

    @property
    def addresses(self) -> frozenset[Address]:
        """The endpoints being probed."""
        return frozenset(self._tasks)

    def update(self, addresses: Iterable[Address]) -> None:
        """Probe exactly these endpoints from now on (call from the event loop)."""
        if self._stopped:
            return
        keep = set(addresses)
        for address in [a for a in self._tasks if a not in keep]:
            self._retire(self._tasks.pop(address))
        loop = self._loop or asyncio.get_running_loop()
        for address in keep.difference(self._tasks):
            task = loop.create_task(self._run(address), name=f"health-check {address}")
            task.add_done_callback(self._ended)
            self._tasks[address] = task

    def close(self) -> None:
        """Cancel every probe; no more start. `stop()` also waits for them to end."""
        self._stopped = True
        for task in self._tasks.values():
            self._retire(task)
        self._tasks.clear()

    async def stop(self) -> None:
        """Cancel every probe and wait until they are all over."""
        self.close()
        while self._retiring:
            tasks = list(self._retiring)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._retiring.difference_update(tasks)

    def next_delay(self) -> float:
        """The wait before the next probe: interval * (1 ± jitter)."""
        jitter = self.check.jitter
        return self.check.interval * (1.0 + jitter * (2.0 * self._rng.random() - 1.0))

    async def _run(self, address: Address) -> None:
        while True:
            passed = await self._probe(address)
            if self._tasks.get(address) is asyncio.current_task():  # still wanted
                self._report(address, passed)
            await self._sleep(self.next_delay())

    def _retire(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        if not task.done():
            self._retiring.add(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._retiring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A probe turns every network failure into False: this is a bug, say so loudly;
            # the endpoint is probed again after the next `update()` that lists it.
            log.error("health check task failed", exc_info=task.exception())
            for address in [a for a, t in self._tasks.items() if t is task]:
                del self._tasks[address]
