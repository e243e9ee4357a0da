"""The message heads every codec produces (HTTP/1.1 now, HTTP/2 later).

Codecs report a message as head, data, end (see the sinks in `h1.py`); everything
above them (routing, policy, the proxy shells) sees only these heads and bytes.
Header names in `headers` are lower-case bytes (as HTTP/2 requires).
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    __slots__ = ("authority", "chunked", "connection", "content_length", "grpc_timeout",
                 "headers", "keep_alive", "method", "request_id", "request_timeout", "target",
                 "trace_context", "upgrade", "version")

    def __init__(self, method: bytes, target: bytes, version: str, headers: Headers,
                 keep_alive: bool) -> None:
        self.method = method
        self.target = target  # origin-form after parsing; absolute-form is split into authority
        self.version = version  # "1.1" or "1.0"
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = False  # asks to switch protocols (WebSocket)
        self.authority = b""  # host[:port] from the target or the Host header, lower case
        self.content_length: int | None = None
        self.chunked = False
        self.request_id: bytes | None = None  # a valid x-request-id sent by the client
        self.connection: bytes | None = None  # the Connection header's tokens, lower case
        # The caller's deadline, as sent (x-request-timeout, grpc-timeout); parsed if present.
        self.request_timeout: bytes | None = None
        self.grpc_timeout: bytes | None = None
        # The caller sent trace context (traceparent, b3...): only then is it looked for.
        self.trace_context = False

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class ResponseHead:
    """A response head. From HTTP/1.1 it keeps its `raw` bytes: the proxy edits
    those (cuts hop-by-hop lines, appends its own) instead of re-serialising every
    header, which is most of a hop's cost in Python. `headers` is parsed on demand."""

    __slots__ = ("_headers", "chunked", "connection", "content_length", "cuts", "has_request_id",
                 "keep_alive", "raw", "status", "upgrade")

    def __init__(self, status: int, keep_alive: bool, raw: bytes | None = None,
                 headers: Headers | None = None) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.raw = raw  # status line to the blank line, as received
        self._headers = headers
        self.cuts: list[tuple[int, int]] | None = None  # spans of `raw` that must not be sent on
        self.has_request_id = False
        self.upgrade = False
        self.content_length: int | None = None
        self.chunked = False
        self.connection: bytes | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = parse_header_lines(self.raw or b"")
        return self._headers

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def parse_header_lines(raw: bytes) -> Headers:
    """(lower-case name, value) pairs of a head already validated by llhttp (which
    refuses obsolete line folding, so one line is one field)."""
    out: Headers = []
    for line in raw.split(b"\r\n")[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        out.append((name.strip().lower(), value.strip()))
    return out
