"""Graceful drain on SIGTERM, with the sidecar as a child process.

The load is arranged so that no request can be lost to the unavoidable keep-alive race
(a client sending on an idle connection the instant the server closes it): when SIGTERM
is sent, every busy connection has a request held at the upstream. A well-behaved drain
then answers each of them in full, marks those answers `Connection: close`, closes idle
connections, stops accepting, and exits 0 within drain_timeout.
"""

from __future__ import annotations

import asyncio
import signal
import time

from .rawclient import connect_refused_or_closed
from .support import sidecar_config
from .upstream import UpstreamConn, echo_reply

BUSY = 4
IDLE = 2


async def _wait_drain_started(address: tuple[str, int], timeout: float = 5.0) -> None:
    """Until a new connection is refused or closed unanswered by the sidecar."""
    deadline = time.monotonic() + timeout
    while True:
        fate = await connect_refused_or_closed(address, timeout=0.2)
        if fate != "open":
            return
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"


async def test_sigterm_drains_in_flight_requests_and_exits_0(upstreams, sidecar_process,
                                                            clients):
    holding = asyncio.Event()
    release = asyncio.Event()
    held: list[str] = []

    async def handler(conn: UpstreamConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            if holding.is_set():
                held.append(req.target)
                conn.server.notify()
                await release.wait()
            await echo_reply(req, conn).write(conn)

    app = await upstreams.raw(handler, name="app")
    sc = await sidecar_process(sidecar_config(app=app.address,
                                              limits={"drain_timeout": "5s"}))

    idle = [await clients.connect(sc.inbound) for _ in range(IDLE)]
    for c in idle:
        assert (await c.get("/idle")).status == 200

    sent: list[str] = []
    answered: list[str] = []
    after_drain: list[tuple[str, set[str]]] = []
    closed_cleanly: list[bool] = []

    async def worker(k: int) -> None:
        c = await clients.connect(sc.inbound)
        i = 0
        while True:
            target = f"/w{k}/{i}"
            sent.append(target)
            r = await c.get(target, timeout=10)
            assert r.status == 200, r
            assert r.json()["target"] == target
            answered.append(target)
            if release.is_set():
                after_drain.append((target, r.connection_tokens))
            if "close" in r.connection_tokens:
                await c.expect_closed(timeout=3)
                closed_cleanly.append(True)
                return
            i += 1

    workers = [asyncio.create_task(worker(k)) for k in range(BUSY)]
    try:
        await app.wait_requests(IDLE + 200, timeout=20)  # a steady stream first
        holding.set()
        await app.wait_until(lambda: len(held) >= BUSY, f"{BUSY} held requests", timeout=10)
        t_term = time.monotonic()
        sc.signal(signal.SIGTERM)

        # New connections stop being accepted, while the held requests are still in flight.
        await _wait_drain_started(sc.inbound)
        # Idle keep-alive connections are closed promptly, silently.
        for c in idle:
            assert await c.expect_closed(timeout=3) == b""
        release.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*workers)
    finally:
        release.set()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    assert sorted(sent) == sorted(answered), set(sent) - set(answered)  # zero failed
    assert len(closed_cleanly) == BUSY
    assert all("close" in tokens for _, tokens in after_drain), after_drain
    async with asyncio.timeout(10):
        code = await sc.wait(10)
    assert code == 0
    assert time.monotonic() - t_term < 5.0 + 1.0
    assert await connect_refused_or_closed(sc.inbound) == "refused"


async def test_drain_timeout_bounds_shutdown(upstreams, sidecar_process, clients):
    async def stuck(conn: UpstreamConn) -> None:
        await conn.read_head()
        await conn.wait_closed_by_peer()

    app = await upstreams.raw(stuck, name="app")
    sc = await sidecar_process(sidecar_config(app=app.address,
                                              limits={"drain_timeout": "1s"},
                                              upstream={"timeout": "60s"}))
    c = await clients.connect(sc.inbound)
    await c.send(b"GET /forever HTTP/1.1\r\nHost: app\r\n\r\n")
    await app.wait_requests(1)

    t0 = time.monotonic()
    sc.signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        await sc.wait(10)
    elapsed = time.monotonic() - t0

    assert 0.8 <= elapsed < 3.0, elapsed
    # The stuck request's client connection does not outlive the process.
    leftover = await c.expect_closed(timeout=3)
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 5"), leftover
    async with asyncio.timeout(3):
        await app.connections[0].closed.wait()


async def test_sigterm_with_no_traffic_exits_promptly(sidecar_process):
    sc = await sidecar_process(sidecar_config(limits={"drain_timeout": "20s"}))
    t0 = time.monotonic()
    sc.signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        code = await sc.wait(10)
    assert code == 0
    assert time.monotonic() - t0 < 2.0
