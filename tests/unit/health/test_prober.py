"""The prober's task bookkeeping, with a scripted probe and a sleep the test releases:
no sockets, no waiting on real time."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from sidecar.health import HealthCheck, Prober

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)


class Script:
    """Probe outcomes per address, a record of the probes made and the reports heard,
    and a sleep that lasts until `tick()`."""

    def __init__(self) -> None:
        self.passing: dict[tuple[str, int], bool] = {}
        self.probed: list[tuple[str, int]] = []
        self.reports: list[tuple[tuple[str, int], bool]] = []
        self.delays: list[float] = []
        self._sleepers: list[asyncio.Future[None]] = []
        self.hold: asyncio.Event | None = None  # set: probes wait for it before answering

    async def probe(self, address: tuple[str, int]) -> bool:
        self.probed.append(address)
        if self.hold is not None:
            await self.hold.wait()
        return self.passing.get(address, True)

    def report(self, address: tuple[str, int], passed: bool) -> None:
        self.reports.append((address, passed))

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append(future)
        await future

    def tick(self) -> None:
        sleepers, self._sleepers = self._sleepers, []
        for f in sleepers:
            if not f.done():
                f.set_result(None)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def make(script: Script, **check: float) -> Prober:
    return Prober(HealthCheck(**check), script.report, rng=random.Random(7),  # type: ignore[arg-type]
                  probe=script.probe, sleep=script.sleep)


async def test_each_endpoint_is_probed_at_once_then_every_interval() -> None:
    s = Script()
    s.passing[B] = False
    prober = make(s)
    prober.update([A, B])
    await settle()
    assert sorted(s.reports) == [(A, True), (B, False)]
    s.tick()
    await settle()
    assert len(s.reports) == 4
    assert prober.addresses == {A, B}
    await prober.stop()


async def test_update_starts_and_stops_probes_as_endpoints_come_and_go() -> None:
    s = Script()
    prober = make(s)
    prober.update([A, B])
    await settle()
    prober.update([B, C])
    await settle()
    assert prober.addresses == {B, C}
    assert s.probed.count(C) == 1  # C's first probe went out at once
    s.probed.clear()
    s.tick()
    await settle()
    assert sorted(s.probed) == [B, C]  # A's task is gone
    await prober.stop()


async def test_an_answer_from_a_removed_endpoint_is_not_reported() -> None:
    s = Script()
    s.hold = asyncio.Event()
    prober = make(s)
    prober.update([A])
    await settle()
    assert s.probed == [A]
    prober.update([])
    s.hold.set()
    await settle()
    assert s.reports == []
    await prober.stop()


async def test_stop_cancels_every_task_and_later_updates_do_nothing() -> None:
    s = Script()
    s.hold = asyncio.Event()  # one probe mid-flight, the others asleep
    prober = make(s)
    prober.update([A, B, C])
    await settle()
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("health-check")]
    assert len(tasks) == 3
    await prober.stop()
    assert all(t.done() for t in tasks)
    assert prober.addresses == frozenset()
    prober.update([A])
    await settle()
    assert prober.addresses == frozenset()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-check")]


async def test_intervals_are_jittered_within_bounds() -> None:
    s = Script()
    prober = make(s, interval=10.0, jitter=0.2)
    delays = [prober.next_delay() for _ in range(1000)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 900  # drawn afresh each time
    assert min(delays) < 8.2 and max(delays) > 11.8  # and spread over the whole band
    again = make(Script(), interval=10.0, jitter=0.2)
    assert [again.next_delay() for _ in range(5)] == delays[:5]  # the rng is the test's


async def test_the_wait_between_probes_is_the_jittered_interval() -> None:
    s = Script()
    prober = make(s, interval=2.0, jitter=0.5)
    prober.update([A])
    await settle()
    assert len(s.delays) == 1 and 1.0 <= s.delays[0] <= 3.0
    await prober.stop()


async def test_a_probe_that_raises_is_logged_and_dropped(caplog: pytest.LogCaptureFixture,
                                                         ) -> None:
    s = Script()
    calls = 0

    async def broken_once(address: tuple[str, int]) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return True

    prober = Prober(HealthCheck(), s.report, probe=broken_once, sleep=s.sleep)
    with caplog.at_level(logging.ERROR, "sidecar.health"):
        prober.update([A])
        await settle()
    assert "health check task failed" in caplog.text
    assert prober.addresses == frozenset() and s.reports == []
    prober.update([A])  # listed again: probed again
    await settle()
    assert prober.addresses == {A} and s.reports == [(A, True)]
    await prober.stop()
