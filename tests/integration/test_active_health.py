"""Active health checks against real servers on loopback: an aiohttp app whose /health
can be switched to 503, TCP ports that close, and endpoint sets that change.

The prober runs for real (short intervals); the tests wait for the verdicts the
`ClusterHealth` announces, never for a length of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from sidecar.health import ClusterHealth, HealthCheck, HealthSettings, Prober

from .upstream import AiohttpUpstream

Address = tuple[str, int]
FAST = HealthCheck(interval=0.05, jitter=0.2, timeout=1.0, healthy_threshold=2,
                   unhealthy_threshold=3)


class Ep:
    def __init__(self, address: Address) -> None:
        self.address = address

    def __repr__(self) -> str:
        return f"Ep({self.address})"


class HealthApp:
    """An upstream whose /health answers `status`; it counts the answers it gave."""

    def __init__(self) -> None:
        self.status = 200
        self.answered: list[int] = []
        self.requests: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.server = AiohttpUpstream(app)

    async def _health(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "host": request.host,
                              "agent": request.headers.get("User-Agent")})
        self.answered.append(self.status)
        return web.Response(status=self.status, text="ok" if self.status < 300 else "down")

    @property
    def address(self) -> Address:
        return self.server.address


class Verdicts:
    """What the cluster's health announced, in order, with a way to wait for the next one."""

    def __init__(self, health: ClusterHealth[Ep], on_event: Any = None) -> None:
        self.seen: list[tuple[str, Any]] = []
        self._arrived = asyncio.Event()
        self._on_event = on_event
        health.subscribe(self)

    def __call__(self, event: str, address: Any) -> None:
        self.seen.append((event, address))
        if self._on_event is not None:
            self._on_event(event, address)
        self._arrived.set()

    async def wait(self, event: str, address: Address, after: int = 0) -> int:
        """Wait for (event, address) at or after position `after`; its position."""
        async with asyncio.timeout(10):
            while True:
                for i in range(after, len(self.seen)):
                    if self.seen[i] == (event, address):
                        return i
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def probing(check: HealthCheck, host: str = "orders"
                  ) -> AsyncIterator[tuple[ClusterHealth[Ep], Prober]]:
    health: ClusterHealth[Ep] = ClusterHealth(HealthSettings(health_check=check))
    prober = Prober(check, health.on_probe, host=host, rng=random.Random(3))
    try:
        yield health, prober
    finally:
        await prober.stop()


def track(health: ClusterHealth[Ep], prober: Prober, endpoints: tuple[Ep, ...]) -> None:
    """What the cluster does when discovery changes its endpoints."""
    health.update(endpoints)
    prober.update(ep.address for ep in endpoints)


@pytest.fixture
async def apps() -> AsyncIterator[list[HealthApp]]:
    started: list[HealthApp] = []
    try:
        for _ in range(2):
            app = HealthApp()
            await app.server.start()
            started.append(app)
        yield started
    finally:
        for app in started:
            await app.server.close()


async def test_http_check_takes_an_endpoint_out_after_3_failures_and_back_after_2_passes(
        apps: list[HealthApp]) -> None:
    a, b = apps
    eps = (Ep(a.address), Ep(b.address))
    async with probing(replace(FAST, path="/health")) as (health, prober):
        # How many answers `a` had given when each verdict was announced.
        answers_at: dict[tuple[str, Any], int] = {}
        verdicts = Verdicts(health, lambda e, addr: answers_at.__setitem__(
            (e, addr), len(a.answered)))
        track(health, prober, eps)
        await verdicts.wait("healthy", a.address)
        await verdicts.wait("healthy", b.address)
        assert health.available(eps) == eps
        assert a.requests[0] == {"path": "/health", "host": "orders",
                                 "agent": "sidecar-health-check"}

        mark = len(verdicts.seen)
        failing_from = len(a.answered)
        a.status = 503
        await verdicts.wait("unhealthy", a.address, mark)
        # Exactly the threshold: the verdict came with the third 503, not before, not after.
        assert a.answered[failing_from:answers_at[("unhealthy", a.address)]] == [503] * 3
        assert health.available(eps) == (eps[1],)

        mark = len(verdicts.seen)
        passing_from = len(a.answered)
        a.status = 200
        await verdicts.wait("healthy", a.address, mark)
        assert a.answered[passing_from:answers_at[("healthy", a.address)]] == [200, 200]
        assert health.available(eps) == eps
        assert verdicts.seen.count(("unhealthy", b.address)) == 0


async def test_expected_statuses_decide_what_passes(apps: list[HealthApp]) -> None:
    a, _ = apps
    a.status = 503
    check = replace(FAST, expected_statuses=((200, 299), (503, 503)))
    async with probing(check) as (health, prober):
        verdicts = Verdicts(health)
        track(health, prober, (Ep(a.address),))
        await verdicts.wait("healthy", a.address)


async def _accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_http_check_fails_on_a_port_that_closes_without_answering() -> None:
    server = await asyncio.start_server(_accept_and_close, "127.0.0.1", 0)
    address: Address = server.sockets[0].getsockname()[:2]
    try:
        async with probing(FAST) as (health, prober):
            verdicts = Verdicts(health)
            track(health, prober, (Ep(address),))
            await verdicts.wait("unhealthy", address)  # pending -> unhealthy at the first
    finally:
        server.close()
        await server.wait_closed()


async def test_http_check_fails_when_the_answer_is_too_slow() -> None:
    release = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        await _accept_and_close(reader, writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    address: Address = server.sockets[0].getsockname()[:2]
    try:
        check = replace(FAST, timeout=0.1)
        async with probing(check) as (health, prober):
            verdicts = Verdicts(health)
            track(health, prober, (Ep(address),))
            await verdicts.wait("unhealthy", address)
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_tcp_check_follows_a_port_that_closes_and_opens_again() -> None:
    connections: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await _accept_and_close(reader, writer)

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    address: Address = server.sockets[0].getsockname()[:2]
    other = await asyncio.start_server(_accept_and_close, "127.0.0.1", 0)
    other_address: Address = other.sockets[0].getsockname()[:2]
    eps = (Ep(address), Ep(other_address))
    try:
        async with probing(replace(FAST, kind="tcp")) as (health, prober):
            verdicts = Verdicts(health)
            track(health, prober, eps)
            await verdicts.wait("healthy", address)
            await verdicts.wait("healthy", other_address)

            mark = len(verdicts.seen)
            server.close()  # the port closes: connections are refused
            await server.wait_closed()
            await verdicts.wait("unhealthy", address, mark)
            assert health.available(eps) == (eps[1],)

            mark = len(verdicts.seen)
            before = len(connections)
            server = await asyncio.start_server(count, *address)  # the same port, open again
            await verdicts.wait("healthy", address, mark)
            assert len(connections) - before >= 2  # the healthy threshold
            assert health.available(eps) == eps
    finally:
        for s in (server, other):
            s.close()
            await s.wait_closed()


async def test_probes_follow_the_endpoint_set(apps: list[HealthApp]) -> None:
    a, b = apps
    ea, eb = Ep(a.address), Ep(b.address)
    async with probing(FAST) as (health, prober):
        verdicts = Verdicts(health)
        track(health, prober, (ea,))
        await verdicts.wait("healthy", a.address)
        assert b.requests == []

        track(health, prober, (ea, eb))  # discovery added b: it is probed at once
        await verdicts.wait("healthy", b.address)
        assert prober.addresses == {a.address, b.address}

        track(health, prober, (eb,))  # a left: its probes stop
        assert prober.addresses == {b.address}
        probed_a = len(a.requests)
        mark = len(verdicts.seen)
        b.status = 503
        await verdicts.wait("unhealthy", b.address, mark)  # a few rounds of b's probes later
        assert len(a.requests) <= probed_a + 1  # at most the probe already on the wire
        assert ("unhealthy", a.address) not in verdicts.seen
        assert all(addr == b.address for _, addr in verdicts.seen[mark:])

    # stop() cancelled everything: no probe task outlives the prober
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-check")]
