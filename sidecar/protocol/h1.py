"""HTTP/1.1 codec, sans-IO: `reader.feed(bytes) -> list[Event]`, and head encoders.

How this works: `httptools` (llhttp) does the parsing and the strict validation
(request line, header tokens and values, Content-Length/Transfer-Encoding conflicts,
chunk sizes). Its callbacks land on the reader, which collects events for one `feed`
and returns them; the I/O shell acts on them. Anything llhttp refuses becomes a
`ProtocolError` carrying the error code to answer with. The reader adds what llhttp
leaves to its user: a bound on the size of a message head, `Host` rules, request ids,
HEAD responses (which carry no body whatever their Content-Length says), interim 1xx
responses, and bodies delimited by the connection closing.
"""

from __future__ import annotations

import re

import httptools

from ..core.errors import ErrorCode
from .events import Data, EndOfMessage, Event, Headers, RequestHead, ResponseHead, Upgraded

__all__ = ["LAST_CHUNK", "ProtocolError", "RequestReader", "ResponseReader", "encode_chunk"]

LAST_CHUNK = b"0\r\n\r\n"
_MAX_REQUEST_ID = 200


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
_REQUEST_ID = re.compile(rb"[\x21\x23-\x7e]{1,%d}" % _MAX_REQUEST_ID)


def valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


class RequestReader:
    """Parses requests arriving from a downstream client."""

    def __init__(self, max_header_bytes: int = 64 * 1024) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._max = max_header_bytes
        self._events: list[Event] = []
        self._headers: Headers | None = None
        self._trailers: Headers | None = None
        self._url = b""
        self._head_size = 0
        self._in_head = False

    @property
    def in_head(self) -> bool:
        """True while a request head has begun and is not complete (for header timeouts)."""
        return self._in_head

    def feed(self, data: bytes) -> list[Event | ProtocolError]:
        """Events for `data`; a `ProtocolError` comes last when the input turned bad."""
        events: list[Event | ProtocolError] = []
        self._events = events  # type: ignore[assignment]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            events.append(Upgraded(data[up.args[0]:]))
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, ProtocolError):
                raise
            events.append(exc.__context__)
            return events
        except httptools.HttpParserError as exc:
            events.append(ProtocolError(ErrorCode.BAD_REQUEST, f"malformed request: {exc}"))
            return events
        if self._in_head:
            # Bytes of a head still incomplete: bound them before llhttp buffers more.
            self._head_size += len(data)
            if self._head_size > self._max:
                events.append(ProtocolError(ErrorCode.HEADERS_TOO_LARGE,
                                            f"request head larger than {self._max} bytes"))
        return events

    # llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._headers = []
        self._trailers = None
        self._url = b""
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers is not None:
            self._headers.append((name.lower(), value))
        else:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        headers = self._headers
        assert headers is not None
        self._headers = None
        self._in_head = False
        p = self._parser
        size = len(self._url) + sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self._max:
            raise ProtocolError(ErrorCode.HEADERS_TOO_LARGE,
                                f"request head larger than {self._max} bytes")
        head = RequestHead(p.get_method(), self._url, p.get_http_version().encode(), headers,
                           p.should_keep_alive(), p.should_upgrade())
        hosts = 0
        for k, v in headers:
            if k == b"host":
                hosts += 1
                head.authority = v.lower()
            elif k == b"content-length":
                head.content_length = int(v)  # llhttp has checked it is one decimal number
            elif k == b"transfer-encoding":
                head.chunked = True  # llhttp refuses a request whose last coding is not chunked
            elif k == b"expect":
                head.expect_continue = v.lower() == b"100-continue"
            elif k == b"x-request-id" and valid_request_id(v):
                head.request_id = v
            elif k == b"connection":
                head.connection = _join_tokens(head.connection, v)
        if hosts > 1:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "more than one Host header")
        target = self._url
        if target[:1] != b"/":
            _absolute_form(head, target)
        elif hosts == 0 and head.version == b"1.1":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "HTTP/1.1 request without Host")
        if head.chunked:
            head.content_length = None
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._events.append(EndOfMessage(self._trailers))


def _join_tokens(seen: bytes | None, value: bytes) -> bytes:
    value = value.lower()
    return value if seen is None else seen + b"," + value


def _absolute_form(head: RequestHead, target: bytes) -> None:
    """`GET http://service/path` (a client using us as HTTP_PROXY): split out the authority."""
    if target == b"*" and head.method == b"OPTIONS":
        return
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request target is not origin or absolute form")
    authority, slash, path = rest.partition(b"/")
    if not authority or b"@" in authority:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "absolute-form target without a valid host")
    # RFC 9112 §3.2.2: the target's authority wins over any Host header.
    head.authority = authority.lower()
    head.target = b"/" + path if slash else b"/"
    head.headers = [(k, v) for k, v in head.headers if k != b"host"]
    head.headers.append((b"host", authority))


class ResponseReader:
    """Parses responses arriving from an upstream server, one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._headers: Headers | None = None
        self._trailers: Headers | None = None
        self._reason = b""
        self._no_body = False  # the pending request was HEAD
        self._interim = False  # inside a 1xx response that is not 101
        self.until_close = False  # the body runs until the connection closes

    def expect(self, method: bytes) -> None:
        """Tell the reader which request the next response answers."""
        self._no_body = method == b"HEAD"

    def feed(self, data: bytes) -> list[Event]:
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            events.append(Upgraded(data[up.args[0]:]))
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadDone):
                raise
            # llhttp cannot be told that a HEAD response has no body: start afresh.
            self._parser = httptools.HttpResponseParser(self)
            self._no_body = False
        except httptools.HttpParserError as exc:
            raise ProtocolError(ErrorCode.UPSTREAM_PROTOCOL_ERROR,
                                f"malformed response from upstream: {exc}") from None
        return events

    def eof(self) -> list[Event]:
        """The upstream closed: that ends a body delimited by the connection closing."""
        if self.until_close:
            self.until_close = False
            return [EndOfMessage()]
        return []

    # llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = None
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers is not None:
            self._headers.append((name.lower(), value))
        else:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        headers = self._headers
        assert headers is not None
        self._headers = None
        p = self._parser
        status = p.get_status_code()
        head = ResponseHead(status, self._reason, p.get_http_version().encode(), headers,
                            p.should_keep_alive(), p.should_upgrade())
        for k, v in headers:
            if k == b"content-length":
                head.content_length = int(v)
            elif k == b"transfer-encoding":
                head.chunked = v.rstrip().lower().endswith(b"chunked")
            elif k == b"connection":
                head.connection = _join_tokens(head.connection, v)
        if head.chunked:
            head.content_length = None
        self._interim = 100 <= status < 200 and status != 101
        self._events.append(head)
        if self._no_body and not self._interim:
            self._events.append(EndOfMessage())
            raise _HeadDone()
        if (head.content_length is None and not head.chunked and not self._interim
                and status not in (101, 204, 304)):
            self.until_close = True
            head.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False  # the final response follows on the same connection
            return
        self.until_close = False
        self._events.append(EndOfMessage(self._trailers))
