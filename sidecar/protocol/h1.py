"""HTTP/1.1 codec, sans-IO: `reader.feed(bytes)` drives a sink with the message's parts.

How this works: `httptools` (llhttp) does the parsing and the strict validation
(request line, header tokens and values, Content-Length/Transfer-Encoding conflicts,
chunk sizes). Its callbacks land on the reader, which calls its sink: `RequestSink`
and `ResponseSink` are the HTTP vocabulary every codec (HTTP/2 later) speaks, the
shape of Envoy's decoder callbacks. Anything llhttp refuses becomes a `ProtocolError`
carrying the error code to answer with. The reader adds what llhttp leaves to its
user: a bound on the size of a message head, `Host` rules, request ids, HEAD
responses (no body whatever their Content-Length says), interim 1xx responses, and
bodies delimited by the connection closing.

Why a sink rather than `feed() -> list[Event]`: measured here, building and walking
event lists and their objects was a third of the proxy's own CPU per request.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

import httptools

from ..core.errors import ErrorCode
from ..telemetry.propagation import PROPAGATION_HEADERS
from .events import Headers, RequestHead, ResponseHead
from .response_fields import content_length, join_tokens, read_fields

__all__ = ["LAST_CHUNK", "ProtocolError", "RequestReader", "RequestSink", "ResponseReader",
           "ResponseSink", "encode_chunk"]

LAST_CHUNK: Final = b"0\r\n\r\n"
_MAX_REQUEST_ID: Final = 200


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _HeadDone(Exception):
    """Stops llhttp after the head of a response that has no body (a reply to HEAD)."""


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# Printable ASCII, no space or quote, bounded: it is echoed in headers, logs and JSON.
_REQUEST_ID: Final = re.compile(rb"[\x21\x23-\x7e]{1,%d}" % _MAX_REQUEST_ID)


def valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


class RequestSink(Protocol):
    """What a request codec drives: the parts of each request, in order."""

    def request_head(self, head: RequestHead) -> None: ...
    def request_data(self, data: bytes) -> None: ...
    def request_end(self, trailers: Headers | None) -> None: ...
    def request_upgrade(self, rest: bytes) -> None: ...  # bytes after an Upgrade request
    def request_error(self, error: ProtocolError) -> None: ...  # the input turned bad: last call


class ResponseSink(Protocol):
    """What a response codec drives."""

    def response_head(self, head: ResponseHead) -> None: ...  # interim 1xx heads too
    def response_data(self, data: bytes) -> None: ...
    def response_end(self) -> None: ...
    def response_upgrade(self, rest: bytes) -> None: ...  # bytes after a 101


class RequestReader:
    """Parses requests arriving from a downstream client.

    The callbacks run once per header per request: they do the least they can
    (each Python call costs ~0.3 µs here; a whole hop has a few µs to spend).
    """

    def __init__(self, sink: RequestSink, max_header_bytes: int = 64 * 1024) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._sink = sink
        self._max = max_header_bytes
        self._headers: Headers = []
        self._trailers: Headers | None = None
        self._in_body = False  # between a head and its end: later fields are trailers
        self._url = b""
        self._pending = 0  # bytes fed while a head was incomplete, before this feed
        self._fed = 0  # length of the current feed
        self.failed = False
        self._host = b""  # the last Host header found valid, and its authority
        self._authority = b""

    @property
    def in_head(self) -> bool:
        """True while a request head has begun and is not complete (for header timeouts)."""
        return bool(self._url or self._headers)

    def feed(self, data: bytes) -> None:
        self._fed = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            self._sink.request_upgrade(data[up.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, ProtocolError):
                raise
            self._fail(exc.__context__)
            return
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(ErrorCode.BAD_REQUEST, f"malformed request: {exc}"))
            return
        if self._url or self._headers:
            # A head still incomplete: bound it before llhttp buffers more of it.
            self._pending += len(data)
            if self._pending > self._max:
                self._fail(ProtocolError(ErrorCode.HEADERS_TOO_LARGE,
                                         f"request head larger than {self._max} bytes"))

    def _fail(self, error: ProtocolError) -> None:
        self.failed = True
        self._sink.request_error(error)

    # llhttp callbacks -------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        headers = self._headers
        url = self._url
        self._headers = []
        self._url = b""
        self._in_body = True
        # A head within one feed no larger than the limit is within the limit: the
        # exact size is needed only when the bytes around it could exceed it.
        if self._pending + self._fed > self._max:
            size = len(url) + sum(len(k) + len(v) + 4 for k, v in headers)
            if size > self._max:
                raise ProtocolError(ErrorCode.HEADERS_TOO_LARGE,
                                    f"request head larger than {self._max} bytes")
        self._pending = 0
        p = self._parser
        keep_alive = p.should_keep_alive()
        head = RequestHead(p.get_method(), url, "1.1", headers, keep_alive)
        hosts = 0
        for k, v in headers:
            if k not in _REQUEST_FRAMING:
                continue
            if k == b"host":
                hosts += 1
                if v != self._host:  # a connection's requests mostly name one host
                    if _AUTHORITY.fullmatch(v) is None:
                        raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid Host header")
                    self._host, self._authority = v, v.lower()
                head.authority = self._authority
            elif k == b"content-length":
                head.content_length = content_length(v)  # llhttp has checked it
            elif k == b"transfer-encoding":
                head.chunked = True  # llhttp refuses a request whose last coding is not chunked
            elif k == b"x-request-id":
                if valid_request_id(v):
                    head.request_id = v
            elif k == b"connection":
                head.connection = join_tokens(head.connection, v)
            elif k == b"upgrade":
                head.upgrade = p.should_upgrade()
            elif k == b"x-request-timeout":
                head.request_timeout = v
            elif k == b"grpc-timeout":
                head.grpc_timeout = v
            elif k in PROPAGATION_HEADERS:
                head.trace_context = True
        if not keep_alive or head.connection is not None:
            # Only then can it be other than 1.1: llhttp keeps an HTTP/1.0 connection
            # alive only when asked to by a Connection header. (The version's string is
            # formatted per call, which cost 2% of a hop's CPU when asked every time.)
            head.version = p.get_http_version()
        if hosts > 1:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "more than one Host header")
        if url[:1] != b"/":
            _absolute_form(head, url)
        elif hosts == 0 and head.version == "1.1":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "HTTP/1.1 request without Host")
        if head.chunked:
            head.content_length = None
        self._sink.request_head(head)

    def on_body(self, body: bytes) -> None:
        self._sink.request_data(body)

    def on_message_complete(self) -> None:
        trailers = self._trailers
        self._trailers = None
        self._in_body = False
        self._sink.request_end(trailers)


# RFC 3986 authority without userinfo: reg-name or IPv4, or an IP literal, then a port.
_AUTHORITY: Final = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_REQUEST_FRAMING: Final = frozenset((b"host", b"content-length", b"transfer-encoding", b"x-request-id",
                              b"connection", b"upgrade", b"x-request-timeout", b"grpc-timeout",
                              *PROPAGATION_HEADERS))


def _absolute_form(head: RequestHead, target: bytes) -> None:
    """`GET http://service/path` (a client using us as HTTP_PROXY): split out the authority."""
    if target == b"*" and head.method == b"OPTIONS":
        return
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request target is not origin or absolute form")
    authority, slash, path = rest.partition(b"/")
    if not authority or _AUTHORITY.fullmatch(authority) is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "absolute-form target without a valid host")
    # RFC 9112 §3.2.2: the target's authority wins over any Host header.
    head.authority = authority.lower()
    head.target = b"/" + path if slash else b"/"
    head.headers = [(k, v) for k, v in head.headers if k != b"host"]
    head.headers.append((b"host", authority))


MAX_RESPONSE_HEAD: Final = 256 * 1024


class ResponseReader:
    """Parses responses arriving from an upstream server, one request at a time.

    llhttp validates every byte, but no callback runs per header: the head is cut
    from the input as raw bytes and one walk over its lines finds the few fields the
    proxy acts on (framing, hop-by-hop, request id: `response_fields.read_fields`). A response begins where the previous
    one's feed ended (one request is in flight per connection), or right after an
    interim 1xx head. HTTP/1.1 trailers are validated and not forwarded (as Envoy
    does unless told otherwise).
    """

    def __init__(self, sink: ResponseSink | None = None) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = sink  # set per exchange by the upstream connection
        self._buf = b""  # this feed's bytes, after any head carried over from the last one
        self._start: int | None = 0  # where the current head begins in _buf; None: none due
        self._in_head = False
        self._partial: bytes | None = None  # a head not yet complete at the end of a feed
        self._no_body = False  # the pending request was HEAD
        self._interim = False  # inside a 1xx response that is not 101
        self._switching = False  # a 101: what follows is the tunnel, not an end
        self.until_close = False  # the body runs until the connection closes

    def expect(self, method: bytes) -> None:
        """Tell the reader which request the next response answers."""
        self._no_body = method == b"HEAD"
        self._start = 0

    def feed(self, data: bytes) -> None:
        """Drive the sink with `data`; raises `ProtocolError` if the upstream misbehaves."""
        partial = self._partial
        if partial is not None:
            self._partial = None
            self._buf = partial + data
        else:
            self._buf = data
        if self._start is not None:
            self._start = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            assert self.sink is not None
            self.sink.response_upgrade(data[up.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, ProtocolError):
                raise exc.__context__ from None
            if not isinstance(exc.__context__, _HeadDone):
                raise
            # llhttp cannot be told that a HEAD response has no body: start afresh.
            self._parser = httptools.HttpResponseParser(self)
            self._no_body = False
        except httptools.HttpParserError as exc:
            raise ProtocolError(ErrorCode.UPSTREAM_PROTOCOL_ERROR,
                                f"malformed response from upstream: {exc}") from None
        if self._in_head:
            rest = self._buf[self._start or 0:]
            if len(rest) > MAX_RESPONSE_HEAD:
                raise ProtocolError(ErrorCode.UPSTREAM_PROTOCOL_ERROR,
                                    f"response head larger than {MAX_RESPONSE_HEAD} bytes")
            self._partial = rest

    def eof(self) -> bool:
        """The upstream closed: True when that ends a body delimited by the close."""
        if self.until_close:
            self.until_close = False
            return True
        return False

    # llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._start is None:
            raise ProtocolError(ErrorCode.UPSTREAM_PROTOCOL_ERROR,
                                "upstream sent a response nobody asked for")
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        status = p.get_status_code()
        head = ResponseHead(status, p.should_keep_alive())
        # One walk over the lines (see response_fields.py) also finds where the head ends.
        self._start = read_fields(self._buf, self._start or 0, head)
        sink = self.sink
        assert sink is not None
        if status < 200:
            if status == 101:
                head.upgrade = p.should_upgrade()
                self._switching = True
            else:
                self._interim = True
            sink.response_head(head)
            return
        if not self._no_body and head.content_length is None and not head.chunked \
                and status not in (204, 304):
            self.until_close = True
            head.keep_alive = False
        sink.response_head(head)
        if self._no_body:
            self._start = None
            sink.response_end()
            raise _HeadDone()

    def on_body(self, body: bytes) -> None:
        self.sink.response_data(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False  # the final response follows on the same connection
            return
        self._start = None  # nothing more until the next request
        if self._switching:
            return  # the tunnel's bytes follow, through response_upgrade
        self.until_close = False
        self.sink.response_end()  # type: ignore[union-attr]
