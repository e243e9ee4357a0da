"""Pieces of the Consul fault tests: upstream instances that can be killed or made to fail
their health check, Consul registration through the agent API, and a paced load client.

`Instance` is a small HTTP/1.1 server (httptools, one protocol object per connection) that
answers every request with 200 and its own name, counts what it served, answers its
health path with 200 or 503 as told, and can be killed the way a crashed process dies:
its listening socket closed and every open connection reset (RST).

`Load` sends GETs through the sidecar's outbound listener at a steady rate, from a few
keep-alive connections, and counts every answer by status and every connection error.
Nothing is retried on the client side: what the sidecar gets wrong is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

__all__ = ["ConsulApi", "Instance", "Load", "LoadReport", "eventually"]

Address = tuple[str, int]
HEALTH_PATH = b"/health"


async def eventually(probe: Callable[[], Awaitable[bool]], what: str,
                     timeout: float, step: float = 0.05) -> float:
    """Seconds until `probe()` is true; fails the test after `timeout`."""
    t0 = time.monotonic()
    while True:
        if await probe():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(step)


# -- upstream instances ----------------------------------------------------------------------

class _ServerConn(asyncio.Protocol):
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.instance.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.instance.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.instance.bad_requests += 1
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        self.keep_alive = self.parser.should_keep_alive()
        self.instance.answer(self, url)

    def reply(self, status: int, body: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        reason = b"OK" if status == 200 else b"Service Unavailable"
        t.write(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n%s\r\n%s"
                % (status, reason, len(body),
                   b"" if self.keep_alive else b"Connection: close\r\n", body))
        if not self.keep_alive:
            t.close()

    def reset(self) -> None:
        """Close with an RST, like the kernel does for the sockets of a killed process."""
        t = self.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.abort()


class Instance:
    """One upstream instance on 127.0.0.1. `delay` holds every answer that long (so that
    some requests are in flight when the instance dies)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.healthy = True  # what its health path answers: 200, or 503
        self.served = 0  # requests answered, health checks not counted
        self.health_checks = 0
        self.bad_requests = 0
        self.conns: set[_ServerConn] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.killed = False
        self.in_flight = 0  # received and not answered yet
        self.in_flight_at_kill = 0
        self.reset_at_kill = 0  # connections reset by the kill
        self._kill_next: asyncio.Future[None] | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def start(self) -> Instance:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _ServerConn(self), "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def answer(self, conn: _ServerConn, url: bytes) -> None:
        if url.split(b"?", 1)[0] == HEALTH_PATH:
            self.health_checks += 1
            conn.reply(200 if self.healthy else 503, b"ok" if self.healthy else b"sick")
            return
        self.in_flight += 1
        if self._kill_next is not None and not self._kill_next.done():
            # Killed with this request (and any other in flight) unanswered.
            self.in_flight_at_kill = self.in_flight
            self._kill_now()
            self._kill_next.set_result(None)
            return
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._serve, conn)
        else:
            self._serve(conn)

    def _serve(self, conn: _ServerConn) -> None:
        self.in_flight -= 1
        if self.killed or conn.transport is None or conn.transport.is_closing():
            return
        self.served += 1
        conn.reply(200, self.name.encode())

    def _kill_now(self) -> None:
        self.killed = True
        if self.server is not None:
            self.server.close()
        self.reset_at_kill = len(self.conns)
        for conn in list(self.conns):
            conn.reset()

    async def kill(self) -> None:
        """Stop listening (connects are refused) and reset every open connection."""
        self._kill_now()
        await self._closed()

    async def kill_with_next_request(self, timeout: float = 10.0) -> None:
        """Kill the instance the moment its next request arrives: that request (and any
        other in flight) is reset before it is answered."""
        self._kill_next = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout):
            await self._kill_next
        await self._closed()

    async def _closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


# -- Consul through its HTTP API -------------------------------------------------------------

class ConsulApi:
    """The few agent and health calls the tests make, over a given aiohttp session."""

    def __init__(self, session: Any, base_url: str) -> None:
        self.http = session
        self.base = base_url

    async def register(self, service: str, instance: Instance, *, interval: str = "1s",
                       timeout: str = "500ms") -> str:
        """`instance` as an instance of `service`, with an HTTP check on its health path.
        The check starts passing (as a deploy tool that waited for readiness would say)."""
        service_id = f"{service}-{instance.name}"
        body = {"Name": service, "ID": service_id, "Address": "127.0.0.1",
                "Port": instance.port,
                "Check": {"CheckID": f"check-{service_id}", "Status": "passing",
                          "HTTP": f"http://127.0.0.1:{instance.port}{HEALTH_PATH.decode()}",
                          "Interval": interval, "Timeout": timeout}}
        async with self.http.put(f"{self.base}/v1/agent/service/register", json=body) as r:
            assert r.status == 200, await r.text()
        return service_id

    async def passing(self, service: str) -> set[int]:
        """Ports of the instances of `service` whose checks all pass."""
        async with self.http.get(f"{self.base}/v1/health/service/{service}?passing") as r:
            assert r.status == 200, await r.text()
            entries = json.loads(await r.read())
        return {int(e["Service"]["Port"]) for e in entries}

    async def wait_passing(self, service: str, ports: set[int], timeout: float = 15.0) -> float:
        async def probe() -> bool:
            try:
                return await self.passing(service) == ports
            except (OSError, AssertionError, ValueError):
                return False
        return await eventually(probe, f"{service}: passing instances {sorted(ports)}",
                                timeout, step=0.05)


def _error_code(body: bytes) -> str:
    """The sidecar's error code from its JSON envelope, or the start of the body."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return repr(body[:80])


# -- load ------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    sent: int = 0  # requests that ended: answered, or failed without an answer
    statuses: Counter[int] = field(default_factory=Counter)
    by_body: Counter[bytes] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # (seconds since the load began, what went wrong) for every failed request
    failures: list[tuple[float, str]] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    def summary(self) -> str:
        rate = self.sent / self.duration if self.duration else 0.0
        return (f"{self.sent} requests in {self.duration:.1f}s ({rate:.0f}/s): "
                f"{self.ok} ok, {self.failed} failed; statuses {dict(self.statuses)}, "
                f"errors {dict(self.errors)}, answered by {dict(self.by_body)}")


class _ClientConn(asyncio.Protocol):
    """One keep-alive connection to the sidecar; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionResetError(f"closed by the sidecar: {exc}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)
            if self.transport is not None:
                self.transport.abort()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        body, self.body = bytes(self.body), bytearray()
        if self.done is not None and not self.done.done():
            self.done.set_result((self.parser.get_status_code(), body))

    async def get(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        async with asyncio.timeout(timeout):
            return await self.done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Load:
    """GET `path` with `Host: service` through `target` at `rate` requests per second,
    from `connections` keep-alive connections (each paced at rate / connections)."""

    def __init__(self, target: Address, service: str, rate: float = 150.0,
                 connections: int = 8, path: str = "/quote", timeout: float = 10.0) -> None:
        self.target = target
        self.rate = rate
        self.connections = connections
        self.timeout = timeout
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {service}\r\n"
                        "User-Agent: consul-faults\r\n\r\n").encode()
        self.report = LoadReport()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = 0.0

    def start(self) -> Load:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._tasks = [loop.create_task(self._worker(i), name=f"load-{i}")
                       for i in range(self.connections)]
        return self

    async def stop(self) -> LoadReport:
        """Stop sending; the requests in flight end first. Idempotent."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return self.report
        await asyncio.gather(*tasks)
        self.report.duration = asyncio.get_running_loop().time() - self._t0
        return self.report

    def elapsed(self) -> float:
        """Seconds since the load began (the clock of `LoadReport.failures`)."""
        return asyncio.get_running_loop().time() - self._t0

    async def run_for(self, seconds: float) -> None:
        """Let the load run `seconds` more (the load is the thing being waited on)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def requests_sent(self, n: int, timeout: float) -> None:
        """Until `n` more requests have been answered (or failed)."""
        goal = self.report.sent + n

        async def probe() -> bool:
            return self.report.sent >= goal
        await eventually(probe, f"{n} more requests", timeout, step=0.01)

    def _failed(self, what: str, answered: bool = False) -> None:
        r = self.report
        if not answered:  # (an answer was counted when it came)
            r.sent += 1
        r.errors[what] += 1
        r.failures.append((asyncio.get_running_loop().time() - self._t0, what))

    async def _worker(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        period = self.connections / self.rate
        slot = self._t0 + period * i / self.connections  # the workers take turns
        conn: _ClientConn | None = None
        try:
            while not self._stopping.is_set():
                now = loop.time()
                if slot > now:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), slot - now)
                    if self._stopping.is_set():
                        break
                slot = max(slot + period, loop.time() - period)  # late: no burst to catch up
                if conn is None or conn.transport is None or conn.transport.is_closing():
                    try:
                        transport, conn = await loop.create_connection(_ClientConn,
                                                                       *self.target)
                        conn.transport = transport  # uvloop calls connection_made later
                    except OSError as exc:
                        self._failed(f"connect: {type(exc).__name__}")
                        conn = None
                        continue
                try:
                    status, body = await conn.get(self.request, self.timeout)
                except TimeoutError:
                    self._failed("timeout")
                    conn.close()
                    conn = None
                    continue
                except (OSError, httptools.HttpParserError) as exc:
                    self._failed(f"connection: {type(exc).__name__}")
                    conn.close()
                    conn = None
                    continue
                self.report.sent += 1
                self.report.statuses[status] += 1
                if status == 200:
                    self.report.by_body[body] += 1
                else:
                    self._failed(f"HTTP {status} {_error_code(body)}", answered=True)
        finally:
            if conn is not None:
                conn.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.lost), 2.0)
