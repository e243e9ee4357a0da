"""Hostile or broken clients: exact status, connection closed, nothing reaches the app,
and the sidecar keeps serving afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest

from .rawclient import RawClient, connect_refused_or_closed
from .support import assert_error, sidecar_config

GOOD = b"GET /good HTTP/1.1\r\nHost: portfolio\r\n\r\n"


def req(head_lines: bytes, body: bytes = b"", method: bytes = b"POST") -> bytes:
    return method + b" /x HTTP/1.1\r\nHost: portfolio\r\n" + head_lines + b"\r\n" + body


BAD_REQUESTS = {
    # malformed request lines
    "version-1.x": b"GET /foo HTTP/1.x\r\nHost: portfolio\r\n\r\n",
    "method-only": b"GET\r\nHost: portfolio\r\n\r\n",
    "junk-after-version": b"GET /foo HTTP/1.1 extra\r\nHost: portfolio\r\n\r\n",
    "bad-method-char": b"G@T /foo HTTP/1.1\r\nHost: portfolio\r\n\r\n",
    "ctl-in-target": b"GET /fo\x01o HTTP/1.1\r\nHost: portfolio\r\n\r\n",
    # invalid header names
    "space-in-name": req(b"Bad Header: x\r\n", method=b"GET"),
    "nul-in-name": req(b"X\x00: y\r\n", method=b"GET"),
    "space-before-colon": req(b"X-Foo : y\r\n", method=b"GET"),
    "no-colon": req(b"NoColonHere\r\n", method=b"GET"),
    "empty-name": req(b": y\r\n", method=b"GET"),
    # invalid header values
    "ctl-in-value": req(b"X-Foo: a\x01b\r\n", method=b"GET"),
    "nul-in-value": req(b"X-Foo: a\x00b\r\n", method=b"GET"),
    "del-in-value": req(b"X-Foo: a\x7fb\r\n", method=b"GET"),
    "bare-cr-in-value": req(b"X-Foo: a\rb\r\n", method=b"GET"),
    # framing: RFC 9112 6.1 / 6.3
    "cl-and-te": req(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                     b"5\r\nhello\r\n0\r\n\r\n"),
    "te-and-cl": req(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                     b"5\r\nhello\r\n0\r\n\r\n"),
    "two-content-lengths": req(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
    "content-length-list": req(b"Content-Length: 5, 6\r\n", b"hello!"),
    "content-length-abc": req(b"Content-Length: abc\r\n"),
    "content-length-negative": req(b"Content-Length: -1\r\n"),
    "bad-chunk-size": req(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk-without-crlf": req(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"),
    "te-not-chunked-last": req(b"Transfer-Encoding: gzip\r\n", b"hello"),
    "te-unknown": req(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    # RFC 9112 3.2: Host is mandatory in HTTP/1.1, and only once
    "no-host": b"GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two-hosts": b"GET /x HTTP/1.1\r\nHost: portfolio\r\nHost: other\r\n\r\n",
    "host-with-space": b"GET /x HTTP/1.1\r\nHost: port folio\r\n\r\n",
    "host-with-slash": b"GET /x HTTP/1.1\r\nHost: portfolio/evil\r\n\r\n",
    "host-with-at": b"GET /x HTTP/1.1\r\nHost: user@portfolio\r\n\r\n",
}


async def _setup(upstreams, sidecar, limits=None):
    up = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(app=up.address, services={"portfolio": [up.address]},
                                      limits=limits))
    return up, sc


async def _still_serves(address, up) -> None:
    async with await RawClient.connect(address) as c:
        await c.send(GOOD)
        r = await c.read_response()
    assert r.status == 200, r
    assert r.json()["target"] == "/good"


async def _rejected(address, data: bytes, status: int, code: str) -> None:
    async with await RawClient.connect(address) as c:
        await c.send(data)
        r = await c.read_response()
        assert_error(r, status, code)
        await c.expect_closed()


@pytest.mark.parametrize("side", ["inbound", "outbound"])
@pytest.mark.parametrize("data", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_request_is_400_and_never_forwarded(upstreams, sidecar, side, data):
    up, sc = await _setup(upstreams, sidecar)
    address = getattr(sc, side)

    await _rejected(address, data, 400, "BAD_REQUEST")

    assert up.bytes_received == 0, f"upstream saw {up.all_received()[:300]!r}"
    await _still_serves(address, up)
    assert [r.target for r in up.requests] == ["/good"]


async def test_bad_request_after_a_good_one_on_the_same_connection(upstreams, sidecar):
    up, sc = await _setup(upstreams, sidecar)
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(GOOD + BAD_REQUESTS["space-in-name"])
        first = await c.read_response()
        second = await c.read_response()
        await c.expect_closed()
    assert first.status == 200
    assert_error(second, 400, "BAD_REQUEST")
    assert [r.target for r in up.requests] == ["/good"]
    await _still_serves(sc.inbound, up)


async def test_bad_chunk_after_the_head_was_forwarded_aborts_both_sides(upstreams, sidecar):
    # The head is valid and goes upstream; the broken chunk arrives later. The upstream
    # must never see a complete request, and its connection must not be reused.
    up, sc = await _setup(upstreams, sidecar)
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(b"POST /x HTTP/1.1\r\nHost: portfolio\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n5\r\nhello\r\n")
        await up.wait_bytes(1)
        await up.wait_until(lambda: b"hello" in up.all_received(), "first chunk upstream")
        await c.send(b"zz\r\nworld\r\n0\r\n\r\n")
        r = await c.read_response()
        assert_error(r, 400, "BAD_REQUEST")
        await c.expect_closed()
    async with asyncio.timeout(3):
        await up.connections[0].closed.wait()
    assert not any(r.complete for r in up.requests)
    await _still_serves(sc.inbound, up)


async def test_connect_method_is_refused_cleanly(upstreams, sidecar):
    # CONNECT tunnels are not part of this data plane: refused with an error response,
    # never forwarded, never a crash.
    up, sc = await _setup(upstreams, sidecar)
    async with await RawClient.connect(sc.outbound) as c:
        await c.send(b"CONNECT portfolio:443 HTTP/1.1\r\nHost: portfolio:443\r\n\r\n")
        r = await c.read_response(method="CONNECT")
    assert r.status in (400, 403, 405, 501), r
    assert_error(r, r.status, None)
    assert up.bytes_received == 0
    await _still_serves(sc.outbound, up)


# -- header size limit --------------------------------------------------------------------


@pytest.mark.parametrize("side", ["inbound", "outbound"])
async def test_headers_over_default_limit_are_431(upstreams, sidecar, side):
    up, sc = await _setup(upstreams, sidecar)
    big = b"GET /x HTTP/1.1\r\nHost: portfolio\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"

    await _rejected(getattr(sc, side), big, 431, "HEADERS_TOO_LARGE")

    assert up.bytes_received == 0
    await _still_serves(getattr(sc, side), up)


async def test_many_small_headers_over_the_limit_are_431(upstreams, sidecar):
    up, sc = await _setup(upstreams, sidecar)
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(1500))  # ~90 KB
    await _rejected(sc.inbound, b"GET /x HTTP/1.1\r\nHost: portfolio\r\n" + lines + b"\r\n",
                    431, "HEADERS_TOO_LARGE")
    assert up.bytes_received == 0


async def test_configured_header_limit(upstreams, sidecar):
    up, sc = await _setup(upstreams, sidecar, limits={"max_header_bytes": 4096})

    under = b"GET /under HTTP/1.1\r\nHost: portfolio\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(under)
        r = await c.read_response()
    assert r.status == 200, r

    over = b"GET /over HTTP/1.1\r\nHost: portfolio\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    await _rejected(sc.inbound, over, 431, "HEADERS_TOO_LARGE")
    long_target = b"GET /" + b"p" * 5000 + b" HTTP/1.1\r\nHost: portfolio\r\n\r\n"
    await _rejected(sc.inbound, long_target, 431, "HEADERS_TOO_LARGE")

    assert [q.target for q in up.requests] == ["/under"]
    await _still_serves(sc.inbound, up)


async def test_oversized_head_is_431_without_waiting_for_its_end(upstreams, sidecar):
    # The limit applies while the head is arriving, not once it is complete: the head
    # below never ends, and the answer must come long before header_timeout (10 s).
    up, sc = await _setup(upstreams, sidecar, limits={"max_header_bytes": 4096})
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(b"GET /x HTTP/1.1\r\nHost: portfolio\r\nX-Big: " + b"a" * 10_000)
        r = await c.read_response(timeout=3)
        assert_error(r, 431, "HEADERS_TOO_LARGE")
        await c.expect_closed()
    assert up.bytes_received == 0


# -- slow and idle clients ---------------------------------------------------------------


async def test_slow_client_head_is_cut_at_header_timeout(upstreams, sidecar):
    up, sc = await _setup(upstreams, sidecar, limits={"header_timeout": "500ms"})
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(b"GET /slow HTTP/1.1\r\nHost: portf")
        t0 = time.monotonic()
        leftover = await c.expect_closed(timeout=3)
        elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3, elapsed
    if leftover:
        assert leftover.startswith(b"HTTP/1.1 408 "), leftover
    assert up.bytes_received == 0
    await _still_serves(sc.inbound, up)


async def test_header_timeout_is_not_reset_by_each_byte(upstreams, sidecar):
    # Slowloris: one byte every 100 ms must not keep the connection alive past the limit.
    up, sc = await _setup(upstreams, sidecar, limits={"header_timeout": "500ms"})
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(b"GET /slow HTTP/1.1\r\nHost: portfolio\r\nX-Trickle: ")
        t0 = time.monotonic()
        answer = b""
        for _ in range(40):
            try:
                await c.send(b"a")
                async with asyncio.timeout(0.1):
                    answer = await c.reader.read(65536)
            except TimeoutError:
                continue  # still open, nothing said: trickle on
            except ConnectionError:
                pass
            break
        closed_at = time.monotonic() - t0
        assert closed_at < 2.0, f"still open after {closed_at:.1f} s of trickling"
        if answer:  # a 408 before closing is fine
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            await c.expect_closed()
    assert closed_at >= 0.4, closed_at
    assert up.bytes_received == 0


async def test_connection_silent_from_the_start_is_closed(upstreams, sidecar):
    _, sc = await _setup(upstreams, sidecar, limits={"header_timeout": "500ms",
                                                     "idle_timeout": "60s"})
    async with await RawClient.connect(sc.inbound) as c:
        leftover = await c.expect_closed(timeout=3)
    # A connection that never sent a byte may be closed silently (or with a 408).
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408 "), leftover


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout(upstreams, sidecar):
    _, sc = await _setup(upstreams, sidecar, limits={"idle_timeout": "500ms",
                                                     "header_timeout": "10s"})
    async with await RawClient.connect(sc.inbound) as c:
        await c.send(GOOD)
        r = await c.read_response()
        assert r.status == 200
        t0 = time.monotonic()
        leftover = await c.expect_closed(timeout=3)
        elapsed = time.monotonic() - t0
    assert leftover == b"", leftover  # an idle close is silent
    assert 0.4 <= elapsed < 3, elapsed


async def test_busy_keep_alive_connection_is_not_closed_by_idle_timeout(upstreams, sidecar):
    up, sc = await _setup(upstreams, sidecar, limits={"idle_timeout": "400ms"})
    async with await RawClient.connect(sc.inbound) as c:
        deadline = time.monotonic() + 1.2  # three idle periods, never idle for one
        n = 0
        while time.monotonic() < deadline:
            await c.send(GOOD)
            assert (await c.read_response()).status == 200
            n += 1
            await asyncio.sleep(0.1)
    assert n >= 5
    assert len(up.requests) == n


# -- connection limit ---------------------------------------------------------------------


async def test_connection_limit(upstreams, sidecar, clients):
    up, sc = await _setup(upstreams, sidecar, limits={"max_connections": 2})
    first = await clients.connect(sc.inbound)
    second = await clients.connect(sc.inbound)
    for c in (first, second):
        await c.send(GOOD)
        assert (await c.read_response()).status == 200

    fate = await connect_refused_or_closed(sc.inbound, probe=GOOD)
    assert fate in ("refused", "closed"), fate
    assert len(up.requests) == 2, "the third connection's request reached the app"

    for c in (first, second):  # the first two are unaffected
        await c.send(GOOD)
        assert (await c.read_response()).status == 200

    await first.close()  # a slot frees up: a new connection is served again
    deadline = time.monotonic() + 3
    while True:
        c = await RawClient.connect(sc.inbound)
        try:
            await c.send(GOOD)
            r = await c.read_response(timeout=1)
            assert r.status == 200
            break
        except (AssertionError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        finally:
            await c.close()
