"""The HTTP vocabulary shared by every codec (HTTP/1.1 now, HTTP/2 later).

Codecs turn bytes into these events and these events into bytes; everything above
them (routing, policy, the proxy shells) speaks only this vocabulary. Header names
are lower-case bytes (as HTTP/2 requires, and as Envoy forwards HTTP/1 by default).
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    __slots__ = ("authority", "chunked", "connection", "content_length", "expect_continue",
                 "headers", "keep_alive", "method", "request_id", "target", "upgrade", "version")

    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers,
                 keep_alive: bool, upgrade: bool) -> None:
        self.method = method
        self.target = target  # origin-form after parsing; absolute-form is split into authority
        self.version = version  # b"1.1" or b"1.0"
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.authority: bytes = b""  # host[:port] from the target or the Host header, lower case
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.request_id: bytes | None = None  # a valid x-request-id sent by the client
        self.connection: bytes | None = None  # the Connection header's tokens, lower case

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class ResponseHead:
    __slots__ = ("chunked", "connection", "content_length", "headers", "keep_alive", "reason",
                 "status", "upgrade", "version")

    def __init__(self, status: int, reason: bytes, version: bytes, headers: Headers,
                 keep_alive: bool, upgrade: bool) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.content_length: int | None = None
        self.chunked = False
        self.connection: bytes | None = None

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EndOfMessage:
    __slots__ = ("trailers",)

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers = trailers


class Upgraded:
    """The message before it asked to switch protocols; `rest` is the first tunnel bytes."""

    __slots__ = ("rest",)

    def __init__(self, rest: bytes) -> None:
        self.rest = rest


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgraded
