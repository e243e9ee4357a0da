"""A raw-socket HTTP/1.1 client for driving the sidecar byte by byte.

`RawClient` writes exactly the bytes a test gives it and parses what comes back
strictly (status line, header syntax, framing), so a malformed answer from the
sidecar fails loudly instead of being papered over by a forgiving library.
Every read has a timeout; `expect_closed` asserts that the *sidecar* closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .wire import header_lines

__all__ = ["RawClient", "Response", "build_request", "connect_refused_or_closed"]

STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3}) ?([^\r\n]*)")
DEFAULT_TIMEOUT = 5.0

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def build_request(method: str, target: str, headers: Headers = (), body: bytes | None = None,
                  chunks: Iterable[bytes] | None = None, version: str = "1.1") -> bytes:
    """Bytes of one request. `body` gets a Content-Length unless the caller set framing;
    `chunks` sends a chunked body, one chunk per item."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    names = {k.lower() for k, _ in items}
    if chunks is not None:
        if "transfer-encoding" not in names:
            items.append(("Transfer-Encoding", "chunked"))
    elif body is not None and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
    out = head.encode("latin-1") + b"\r\n"
    if chunks is not None:
        out += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    elif body is not None:
        out += body
    return out


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""
    chunked: bool = False
    interim: list[Response] = field(default_factory=list)  # 1xx before this one
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def connection_tokens(self) -> set[str]:
        return {t.strip().lower() for t in (self.header("connection") or "").split(",") if t}

    def __repr__(self) -> str:
        return (f"<Response {self.status} {self.reason!r} headers={self.headers!r} "
                f"body={self.body[:300]!r}{'...' if len(self.body) > 300 else ''}>")


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int],
                      timeout: float = DEFAULT_TIMEOUT, ssl: Any = None) -> RawClient:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address[0], address[1],
                                                           limit=1 << 20, ssl=ssl)
        return cls(reader, writer)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()

    def abort(self) -> None:
        """Close at once, dropping unsent data (a FIN unless unread data forces a RST)."""
        self.writer.transport.abort()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), like a crashed or killed client."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    @property
    def local_port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    async def send(self, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.writer.write(data)
        async with asyncio.timeout(timeout):
            await self.writer.drain()

    async def request(self, method: str, target: str, headers: Headers = (),
                      body: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> Response:
        await self.send(build_request(method, target, headers, body), timeout)
        return await self.read_response(method, timeout=timeout)

    async def get(self, target: str = "/", host: str = "app", timeout: float = DEFAULT_TIMEOUT,
                  headers: Headers = ()) -> Response:
        hs = [("Host", host), *(headers.items() if isinstance(headers, Mapping) else headers)]
        return await self.request("GET", target, hs, timeout=timeout)

    # -- reading -----------------------------------------------------------------

    async def read_head(self, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """One response head (may be a 1xx); the body is left unread."""
        async with asyncio.timeout(timeout):
            try:
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise ConnectionClosed(exc.partial) from None
        lines = raw[:-4].split(b"\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        if not m:
            raise AssertionError(f"bad status line from the sidecar: {lines[0]!r}")
        headers = header_lines(lines[1:], AssertionError, "sidecar")
        resp = Response(f"{m.group(1).decode()}.{m.group(2).decode()}", int(m.group(3)),
                        m.group(4).decode("latin-1"), headers, raw)
        te = resp.header("transfer-encoding")
        if te is not None:
            assert [t.strip().lower() for t in te.split(",")] == ["chunked"], te
            assert resp.header("content-length") is None, "both CL and TE in a response"
            resp.chunked = True
        return resp

    async def iter_body(self, resp: Response, method: str = "GET",
                        timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[bytes]:
        """The body as it arrives; `timeout` bounds each wait for more bytes.
        A body cut short by the peer closing raises `ConnectionClosed`."""
        try:
            async for piece in self._iter_body(resp, method, timeout):
                yield piece
        except asyncio.IncompleteReadError as exc:
            raise ConnectionClosed(exc.partial, "EOF inside a chunked body") from None
        except ConnectionResetError:
            raise ConnectionClosed(b"", "connection reset inside a body") from None

    async def _iter_body(self, resp: Response, method: str,
                         timeout: float) -> AsyncIterator[bytes]:
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return
        r = self.reader
        if resp.chunked:
            while True:
                async with asyncio.timeout(timeout):
                    line = await r.readuntil(b"\r\n")
                size_text = line[:-2].split(b";", 1)[0].strip()
                assert re.fullmatch(rb"[0-9A-Fa-f]+", size_text), f"bad chunk line {line!r}"
                size = int(size_text, 16)
                if size == 0:
                    while True:
                        async with asyncio.timeout(timeout):
                            t = await r.readuntil(b"\r\n")
                        if t == b"\r\n":
                            return
                        k, _, v = t[:-2].partition(b":")
                        resp.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                left = size
                while left:
                    async with asyncio.timeout(timeout):
                        piece = await r.read(min(left, 1 << 20))
                    if not piece:
                        raise ConnectionClosed(b"", "EOF inside a chunk")
                    left -= len(piece)
                    yield piece
                async with asyncio.timeout(timeout):
                    crlf = await r.readexactly(2)
                assert crlf == b"\r\n", f"chunk not followed by CRLF: {crlf!r}"
        elif resp.header("content-length") is not None:
            values = {v.strip() for v in resp.header_all("content-length")}
            assert len(values) == 1, f"conflicting content-length {values}"
            left = int(values.pop())
            while left:
                async with asyncio.timeout(timeout):
                    piece = await r.read(min(left, 1 << 20))
                if not piece:
                    raise ConnectionClosed(b"", f"EOF with {left} body bytes missing")
                left -= len(piece)
                yield piece
        else:  # close-delimited
            while True:
                async with asyncio.timeout(timeout):
                    piece = await r.read(1 << 20)
                if not piece:
                    return
                yield piece

    async def read_response(self, method: str = "GET", timeout: float = DEFAULT_TIMEOUT,
                            keep_interim: bool = True) -> Response:
        """The next final response (1xx interim responses collected in `.interim`)."""
        interim: list[Response] = []
        while True:
            resp = await self.read_head(timeout)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            break
        resp.interim = interim if keep_interim else []
        if resp.status != 101:
            resp.body = b"".join([p async for p in self.iter_body(resp, method, timeout)])
        return resp

    async def expect_closed(self, timeout: float = 3.0) -> bytes:
        """Assert the peer closes the connection within `timeout`; returns unread bytes."""
        got = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    piece = await self.reader.read(65536)
                    if not piece:
                        break
                    got += piece
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s "
                                 f"(received {bytes(got[:200])!r})") from None
        except ConnectionError:
            pass  # reset counts as closed
        return bytes(got)

    async def is_open_after(self, seconds: float) -> bool:
        """True if nothing arrives and the connection stays open for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                piece = await self.reader.read(1)
        except TimeoutError:
            return True
        except ConnectionError:
            return False
        if piece:
            raise AssertionError(f"unexpected byte from the sidecar: {piece!r}")
        return False


class ConnectionClosed(AssertionError):
    """The sidecar closed the connection where a response (or the rest of one) was due."""

    def __init__(self, partial: bytes, what: str = "EOF before a complete response head") -> None:
        super().__init__(f"{what} (got {partial[:300]!r})")
        self.partial = partial


async def connect_refused_or_closed(address: tuple[str, int], timeout: float = 2.0,
                                    probe: bytes | None = None) -> str:
    """How a new connection fares: 'refused', 'closed' (accepted then closed, possibly
    after an error response) or 'open' (still open after `timeout`)."""
    try:
        client = await RawClient.connect(address, timeout)
    except (ConnectionRefusedError, OSError):
        return "refused"
    try:
        if probe is not None:
            with contextlib.suppress(ConnectionError):
                await client.send(probe)
        try:
            async with asyncio.timeout(timeout):
                while await client.reader.read(65536):
                    pass
        except TimeoutError:
            return "open"
        except ConnectionError:
            pass
        return "closed"
    finally:
        await client.close()
