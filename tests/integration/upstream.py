"""Test servers that stand where the app or a peer service would be.

`RawUpstream` is a plain asyncio TCP server that records every connection and every
byte it receives, parses requests strictly (so a malformed forward fails the test),
and answers with a script: a handler coroutine given one `UpstreamConn`. The usual
scripts are built by the small factories below (`serve`, `garbage`, `never_answer`,
`close_after_head`, ...). `AiohttpUpstream` runs an aiohttp application where a real
framework is more convenient (WebSocket).

Nothing here sleeps to wait for something: tests await the recorded events
(`wait_requests`, `wait_connections`, `UpstreamConn.closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .wire import header_lines

__all__ = [
    "AiohttpUpstream",
    "Handler",
    "RawUpstream",
    "Reply",
    "UpstreamConn",
    "UpstreamRequest",
    "close_after_head",
    "continue_then_serve",
    "echo_reply",
    "garbage",
    "never_answer",
    "serve",
    "websocket_echo_app",
]

REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)")
MAX_HEAD = 1 << 20


class ProtocolViolation(Exception):
    """The sidecar sent the upstream something that is not valid HTTP/1.1."""


@dataclass
class UpstreamRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    conn_id: int
    body: bytes = b""
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False  # the whole body arrived

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    @property
    def content_length(self) -> int | None:
        v = self.header("content-length")
        return int(v) if v is not None else None

    @property
    def wants_close(self) -> bool:
        tokens = [t.strip().lower() for t in (self.header("connection") or "").split(",")]
        if self.version == "1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


class UpstreamConn:
    """One accepted connection: a recording reader plus helpers to speak HTTP/1.1."""

    def __init__(self, server: RawUpstream, conn_id: int,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.id = conn_id
        self._reader = reader
        self.writer = writer
        self._buf = bytearray()
        self.received = bytearray()  # every byte the peer sent, in order (if recording)
        self.nbytes = 0
        self.requests: list[UpstreamRequest] = []
        self.eof = False
        self.closed = asyncio.Event()  # set once the peer closed or we closed
        self.bytes_sent = 0

    # -- reading -----------------------------------------------------------------

    async def _fill(self) -> bool:
        try:
            data = await self._reader.read(256 * 1024)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            self.closed.set()
            self.server._notify()
            return False
        self.nbytes += len(data)
        if self.server.record:
            self.received += data
        self.server._bytes_event()
        self._buf += data
        return True

    async def read_some(self) -> bytes:
        """Whatever arrives next (b"" at EOF)."""
        if not self._buf and not await self._fill():
            return b""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def readuntil(self, sep: bytes, limit: int = MAX_HEAD) -> bytes:
        start = 0
        while True:
            i = self._buf.find(sep, start)
            if i >= 0:
                out = bytes(self._buf[: i + len(sep)])
                del self._buf[: i + len(sep)]
                return out
            if len(self._buf) > limit:
                raise ProtocolViolation(f"no {sep!r} within {limit} bytes")
            start = max(0, len(self._buf) - len(sep) + 1)
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buf), None)

    async def wait_closed_by_peer(self) -> None:
        """Read and discard until EOF: the sidecar closed this connection."""
        while await self.read_some():
            pass

    async def read_head(self) -> UpstreamRequest | None:
        """The next request head, or None at a clean EOF between requests."""
        if not self._buf and not await self._fill():
            return None
        try:
            raw = await self.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ProtocolViolation(f"EOF inside a request head: {exc.partial[:200]!r}") from None
        lines = raw[:-4].split(b"\r\n")
        m = REQUEST_LINE.fullmatch(lines[0])
        if not m:
            raise ProtocolViolation(f"bad request line from the sidecar: {lines[0]!r}")
        headers = header_lines(lines[1:], ProtocolViolation, "sidecar")
        req = UpstreamRequest(
            method=m.group(1).decode(), target=m.group(2).decode("latin-1"),
            version=f"{int(m.group(3))}.{int(m.group(4))}", headers=headers, raw_head=raw,
            conn_id=self.id,
        )
        te = req.header("transfer-encoding")
        if te is not None:
            if [t.strip().lower() for t in te.split(",")] != ["chunked"]:
                raise ProtocolViolation(f"unexpected transfer-encoding {te!r}")
            if req.header("content-length") is not None:
                raise ProtocolViolation("both content-length and transfer-encoding forwarded")
            req.chunked = True
        elif len(set(req.header_all("content-length"))) > 1:
            raise ProtocolViolation("conflicting content-length forwarded")
        self.requests.append(req)
        self.server._request_event()
        return req

    async def iter_body(self, req: UpstreamRequest) -> AsyncIterator[bytes]:
        """The request body as it arrives (decoded when chunked); marks `complete`."""
        if req.chunked:
            while True:
                line = await self.readuntil(b"\r\n", limit=4096)
                size_text = line[:-2].split(b";", 1)[0].strip()
                if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                    raise ProtocolViolation(f"bad chunk size line forwarded: {line!r}")
                size = int(size_text, 16)
                if size == 0:
                    while True:
                        t = await self.readuntil(b"\r\n", limit=65536)
                        if t == b"\r\n":
                            break
                        k, _, v = t[:-2].partition(b":")
                        req.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                    break
                left = size
                while left:
                    if not self._buf and not await self._fill():
                        raise asyncio.IncompleteReadError(b"", left)
                    piece = bytes(self._buf[:left])
                    del self._buf[: len(piece)]
                    left -= len(piece)
                    yield piece
                if await self.readexactly(2) != b"\r\n":
                    raise ProtocolViolation("chunk data not followed by CRLF")
        else:
            left = req.content_length or 0
            while left:
                if not self._buf and not await self._fill():
                    raise asyncio.IncompleteReadError(b"", left)
                piece = bytes(self._buf[:left])
                del self._buf[: len(piece)]
                left -= len(piece)
                yield piece
        req.complete = True

    async def read_body(self, req: UpstreamRequest, keep: bool = True) -> None:
        parts = []
        async for piece in self.iter_body(req):
            if keep:
                parts.append(piece)
        req.body = b"".join(parts)

    async def read_request(self) -> UpstreamRequest | None:
        req = await self.read_head()
        if req is not None:
            await self.read_body(req)
        return req

    # -- writing -----------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()

    def close(self) -> None:
        self.closed.set()
        if not self.writer.is_closing():
            self.writer.close()

    def abort(self) -> None:
        self.closed.set()
        self.writer.transport.abort()


Handler = Callable[[UpstreamConn], Awaitable[None]]


class RawUpstream:
    """A recording TCP server on 127.0.0.1; `handler` scripts each connection."""

    def __init__(self, handler: Handler | None = None, name: str = "up",
                 record: bool = True) -> None:
        self.handler = handler or serve()
        self.name = name
        self.record = record  # keep every received byte (off for very large bodies)
        self.connections: list[UpstreamConn] = []
        self.errors: list[BaseException] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0,
                                                  limit=MAX_HEAD)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def hostport(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def accepted(self) -> int:
        return len(self.connections)

    @property
    def requests(self) -> list[UpstreamRequest]:
        return [r for c in self.connections for r in c.requests]

    @property
    def bytes_received(self) -> int:
        return sum(c.nbytes for c in self.connections)

    def all_received(self) -> bytes:
        return b"".join(bytes(c.received) for c in self.connections)

    def notify(self) -> None:
        """Wake every waiter to re-check its predicate (call after changing test state
        that a `wait_until` predicate looks at)."""
        self._changed.set()
        self._changed = asyncio.Event()

    _notify = notify
    _request_event = notify
    _bytes_event = notify

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}; "
                                 f"connections={self.accepted} requests={len(self.requests)}"
                                 ) from None

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[UpstreamRequest]:
        await self._wait_for(lambda: len(self.requests) >= n, timeout, f"{n} request heads")
        return self.requests

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        await self._wait_for(lambda: self.accepted >= n, timeout, f"{n} connections")

    async def wait_bytes(self, n: int, timeout: float = 5.0) -> None:
        await self._wait_for(lambda: self.bytes_received >= n, timeout, f"{n} bytes")

    async def wait_until(self, predicate: Callable[[], bool], what: str,
                         timeout: float = 5.0) -> None:
        """Await any condition over the recorded state (re-checked on every event)."""
        await self._wait_for(predicate, timeout, what)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = UpstreamConn(self, len(self.connections), reader, writer)
        self.connections.append(conn)
        self._notify()
        # The script runs in its own task so that close() can cancel it without
        # cancelling asyncio's own connection task (which would log an error).
        task = asyncio.get_running_loop().create_task(self.handler(conn))
        self._tasks.add(task)
        try:
            await task
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the sidecar hung up: normal in many tests
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as exc:  # recorded so a test can show what the sidecar sent
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            conn.close()
            self._notify()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in self.connections:
            c.abort()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def __aenter__(self) -> RawUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- replies ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""
    chunked: bool = False  # send the body chunked (one chunk per item)
    reason: str = ""
    content_length: bool = True  # False: close-delimited body (the connection closes after)
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def head(self) -> bytes:
        reason = self.reason or _REASONS.get(self.status, "Whatever")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        names = {k.lower() for k, _ in self.headers}
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif (self.content_length and "content-length" not in names
              and isinstance(self.body, bytes) and self.status not in (204, 304)
              and self.status >= 200):
            lines.append(f"Content-Length: {len(self.body)}")
        elif not self.content_length:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def write(self, conn: UpstreamConn, method: str = "GET") -> None:
        await conn.send(self.head())
        if method == "HEAD" or self.status in (204, 304):
            return
        parts = [self.body] if isinstance(self.body, bytes) else self.body
        for part in parts:
            if self.chunked:
                if part:
                    await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            else:
                await conn.send(part)
        if self.chunked:
            trailer = "".join(f"{k}: {v}\r\n" for k, v in self.trailers)
            await conn.send(b"0\r\n" + trailer.encode("latin-1") + b"\r\n")
        if not self.content_length and not self.chunked:
            conn.close()


_REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
            204: "No Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            413: "Content Too Large", 417: "Expectation Failed", 500: "Internal Server Error"}


def echo_reply(req: UpstreamRequest, conn: UpstreamConn) -> Reply:
    """The default answer: 200 with a JSON summary of what the upstream received."""
    body = json.dumps({
        "upstream": conn.server.name, "conn": conn.id, "method": req.method,
        "target": req.target, "body_len": len(req.body),
        "headers": [[k, v] for k, v in req.headers],
    }).encode()
    return Reply(200, [("Content-Type", "application/json"),
                       ("X-Upstream", conn.server.name), ("X-Conn", str(conn.id))], body)


Responder = Callable[[UpstreamRequest, UpstreamConn], Reply | Awaitable[Reply]]


def serve(respond: Responder = echo_reply) -> Handler:
    """A keep-alive server: read each request whole, answer with `respond(req, conn)`."""

    async def handler(conn: UpstreamConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            reply = respond(req, conn)
            if not isinstance(reply, Reply):
                reply = await reply
            await reply.write(conn, req.method)
            if req.wants_close or not reply.content_length:
                conn.close()
                return

    return handler


def garbage(data: bytes) -> Handler:
    """Read one request head, answer with `data` (not HTTP), keep the socket open."""

    async def handler(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        if req is None:
            return
        await conn.send(data)
        await conn.wait_closed_by_peer()

    return handler


def never_answer() -> Handler:
    """Read whatever comes and never answer; return when the sidecar gives up."""

    async def handler(conn: UpstreamConn) -> None:
        await conn.wait_closed_by_peer()

    return handler


def close_after_head(send_first: bytes = b"") -> Handler:
    """Read one request head, optionally send some bytes, then close the connection."""

    async def handler(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        if req is None:
            return
        if send_first:
            await conn.send(send_first)
        conn.close()

    return handler


def continue_then_serve(interim: bytes = b"HTTP/1.1 100 Continue\r\n\r\n") -> Handler:
    """Honour `Expect: 100-continue`: send the interim response, then read the body."""

    async def handler(conn: UpstreamConn) -> None:
        while True:
            req = await conn.read_head()
            if req is None:
                return
            if (req.header("expect") or "").lower() == "100-continue":
                await conn.send(interim)
            await conn.read_body(req)
            await echo_reply(req, conn).write(conn, req.method)

    return handler


# -- aiohttp-based ------------------------------------------------------------------


class AiohttpUpstream:
    """An aiohttp application on 127.0.0.1:0 (records request headers it saw)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=0.5)
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    async def start(self) -> AiohttpUpstream:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.address = tuple(self.runner.addresses[0][:2])  # type: ignore[assignment]
        return self

    @property
    def hostport(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> AiohttpUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def websocket_echo_app(seen: list[dict[str, Any]] | None = None) -> web.Application:
    """GET /ws upgrades and echoes every text/binary message; /plain answers 200."""

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append({"headers": dict(request.headers), "path": request.path})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/plain", plain)
    return app
