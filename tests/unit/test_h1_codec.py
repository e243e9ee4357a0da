"""The HTTP/1.1 codec without sockets: bytes in, events out."""

from __future__ import annotations

import pytest

from sidecar.core.errors import ErrorCode
from sidecar.protocol.events import Data, EndOfMessage, RequestHead, ResponseHead, Upgraded
from sidecar.protocol.h1 import ProtocolError, RequestReader, ResponseReader, valid_request_id


def kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_pipelined_requests_come_out_in_order_with_bodies_and_trailers() -> None:
    events = RequestReader().feed(
        b"GET /a?x=1 HTTP/1.1\r\nHost: Portfolio:80\r\nX-Request-Id: abc\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
    assert kinds(events) == ["RequestHead", "EndOfMessage", "RequestHead", "Data", "EndOfMessage"]
    first, second = events[0], events[2]
    assert isinstance(first, RequestHead) and isinstance(second, RequestHead)
    assert (first.method, first.target, first.authority) == (b"GET", b"/a?x=1", b"portfolio:80")
    assert first.request_id == b"abc" and not first.has_body
    assert second.chunked and second.content_length is None
    assert isinstance(events[3], Data) and events[3].data == b"hello"
    assert isinstance(events[4], EndOfMessage) and events[4].trailers == [(b"x-t", b"1")]


def test_bytes_split_anywhere_give_the_same_events() -> None:
    raw = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    reader = RequestReader()
    events = [e for i in range(len(raw)) for e in reader.feed(raw[i:i + 1])]
    assert kinds(events) == ["RequestHead"] + ["Data"] * 5 + ["EndOfMessage"]
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"hello"


def test_absolute_form_target_names_the_authority_and_becomes_origin_form() -> None:
    head = RequestReader().feed(b"GET http://user:8080/api?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.authority == b"user:8080" and head.target == b"/api?q=1"
    assert head.headers == [(b"host", b"user:8080")]


@pytest.mark.parametrize("raw, code", [
    (b"GARBAGE\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: a\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET / HTTP/1.1\r\nX: a\x01b\r\nHost: a\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     ErrorCode.BAD_REQUEST),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     ErrorCode.BAD_REQUEST),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     ErrorCode.BAD_REQUEST),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET / HTTP/1.1\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n", ErrorCode.BAD_REQUEST),
])
def test_bad_requests_end_in_a_protocol_error(raw: bytes, code: ErrorCode) -> None:
    # A head may come out before a bad body: the shell drops a request whose error
    # arrives in the same batch, so the upstream sees nothing of it.
    events = RequestReader().feed(raw)
    assert isinstance(events[-1], ProtocolError) and events[-1].code is code


def test_events_before_the_bad_bytes_are_kept() -> None:
    events = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\n")
    assert kinds(events) == ["RequestHead", "EndOfMessage", "ProtocolError"]


def test_head_larger_than_the_limit_is_refused_complete_or_not() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n"
    events = RequestReader(max_header_bytes=4096).feed(big)
    assert isinstance(events[-1], ProtocolError)
    assert events[-1].code is ErrorCode.HEADERS_TOO_LARGE
    reader = RequestReader(max_header_bytes=4096)
    reader.feed(b"GET / HTTP/1.1\r\nX-Endless: ")
    out = [e for _ in range(5) for e in reader.feed(b"y" * 1000)]
    assert isinstance(out[-1], ProtocolError) and out[-1].code is ErrorCode.HEADERS_TOO_LARGE


def test_upgrade_request_hands_over_the_bytes_that_follow() -> None:
    events = RequestReader().feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\n\r\nRAW")
    assert kinds(events) == ["RequestHead", "EndOfMessage", "Upgraded"]
    assert isinstance(events[2], Upgraded) and events[2].rest == b"RAW"


def test_interim_then_final_response() -> None:
    events = ResponseReader().feed(b"HTTP/1.1 100 Continue\r\n\r\n"
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert kinds(events) == ["ResponseHead", "ResponseHead", "Data", "EndOfMessage"]
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [100, 200]


def test_response_to_head_has_no_body_and_the_reader_continues() -> None:
    reader = ResponseReader()
    reader.expect(b"HEAD")
    assert kinds(reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")) == [
        "ResponseHead", "EndOfMessage"]
    reader.expect(b"GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert kinds(events) == ["ResponseHead", "Data", "EndOfMessage"]


def test_body_until_close_ends_at_eof() -> None:
    reader = ResponseReader()
    events = reader.feed(b"HTTP/1.0 200 OK\r\n\r\nbody")
    head = events[0]
    assert isinstance(head, ResponseHead) and not head.keep_alive
    assert kinds(reader.eof()) == ["EndOfMessage"]


def test_garbage_response_is_an_upstream_protocol_error() -> None:
    with pytest.raises(ProtocolError) as err:
        ResponseReader().feed(b"garbage garbage\r\n\r\n")
    assert err.value.code is ErrorCode.UPSTREAM_PROTOCOL_ERROR


@pytest.mark.parametrize("value, ok", [(b"abc-123", True), (b"a b", False), (b"x" * 201, False),
                                       (b'q"', False), (b"", False)])
def test_request_id_validity(value: bytes, ok: bool) -> None:
    assert valid_request_id(value) is ok
