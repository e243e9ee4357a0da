"""The HTTP/1.1 codec without sockets: bytes in, calls on a recording sink out."""

from __future__ import annotations

import pytest

from sidecar.core.errors import ErrorCode
from sidecar.protocol.events import RequestHead, ResponseHead
from sidecar.protocol.h1 import ProtocolError, RequestReader, ResponseReader, valid_request_id
from sidecar.testing import Recorder


def requests(*chunks: bytes, limit: int = 64 * 1024) -> Recorder:
    rec = Recorder()
    reader = RequestReader(rec, limit)
    for chunk in chunks:
        reader.feed(chunk)
    return rec


def responses(*chunks: bytes, method: bytes = b"GET") -> Recorder:
    rec = Recorder()
    reader = ResponseReader(rec)
    reader.expect(method)
    for chunk in chunks:
        reader.feed(chunk)
    return rec


def test_pipelined_requests_come_out_in_order_with_bodies_and_trailers() -> None:
    rec = requests(b"GET /a?x=1 HTTP/1.1\r\nHost: Portfolio:80\r\nX-Request-Id: abc\r\n\r\n"
                   b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
    assert rec.kinds() == ["head", "end", "head", "data", "end"]
    first, second = rec.events[0][1], rec.events[2][1]
    assert (first.method, first.target, first.authority) == (b"GET", b"/a?x=1", b"portfolio:80")
    assert first.request_id == b"abc" and not first.has_body
    assert second.chunked and second.content_length is None
    assert rec.body() == b"hello"
    assert rec.events[4] == ("end", [(b"x-t", b"1")])


def test_bytes_split_anywhere_give_the_same_calls() -> None:
    raw = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    rec = requests(*(raw[i:i + 1] for i in range(len(raw))))
    assert rec.kinds() == ["head"] + ["data"] * 5 + ["end"]
    assert rec.body() == b"hello"


def test_absolute_form_target_names_the_authority_and_becomes_origin_form() -> None:
    head = requests(b"GET http://user:8080/api?q=1 HTTP/1.1\r\nHost: other\r\n\r\n").first("head")
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
    (b"GET / HTTP/1.1\r\nHost: port folio\r\n\r\n", ErrorCode.BAD_REQUEST),
    (b"GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n", ErrorCode.BAD_REQUEST),
])
def test_bad_requests_end_in_a_protocol_error(raw: bytes, code: ErrorCode) -> None:
    # A head may come out before a bad body: the shell sends a request upstream only
    # once the bytes read with it proved sound, so the upstream sees nothing of it.
    rec = requests(raw)
    kind, error = rec.events[-1]
    assert kind == "error" and isinstance(error, ProtocolError) and error.code is code


def test_calls_before_the_bad_bytes_are_kept() -> None:
    rec = requests(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\n")
    assert rec.kinds() == ["head", "end", "error"]


def test_head_larger_than_the_limit_is_refused_complete_or_not() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n"
    assert requests(big, limit=4096).events[-1][1].code is ErrorCode.HEADERS_TOO_LARGE
    endless = requests(b"GET / HTTP/1.1\r\nX-Endless: ", *[b"y" * 1000] * 5, limit=4096)
    assert endless.kinds() == ["error"]
    assert endless.events[0][1].code is ErrorCode.HEADERS_TOO_LARGE


def test_upgrade_request_hands_over_the_bytes_that_follow() -> None:
    rec = requests(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\n\r\nRAW")
    assert rec.kinds() == ["head", "end", "upgrade"]
    assert rec.first("head").upgrade and rec.first("upgrade") == b"RAW"


def test_interim_then_final_response() -> None:
    rec = responses(b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert rec.kinds() == ["head", "head", "data", "end"]
    assert [v.status for k, v in rec.events if k == "head"] == [100, 200]


def test_response_head_is_kept_raw_with_its_framing_found() -> None:
    rec = responses(b"HTTP/1.1 200 OK\r\nServer: x\r\nCONTENT-LENGTH: 2\r\n"
                    b"Connection: keep-alive\r\nX-Request-Id: up\r\n\r\nok")
    head = rec.first("head")
    assert isinstance(head, ResponseHead)
    assert head.content_length == 2 and head.has_request_id and head.connection == b"keep-alive"
    assert head.raw.startswith(b"HTTP/1.1 200 OK\r\n") and head.raw.endswith(b"\r\n\r\n")
    assert head.header(b"server") == b"x"


@pytest.mark.parametrize("line", [
    b"Content-Length: 12", b"content-length: 12", b"Content-Length:12", b"CONTENT-LENGTH:  12",
    b"Content-Length: 12  ", b"cOnTeNt-LeNgTh:\t12\t"])
def test_content_length_in_any_spelling_and_spacing(line: bytes) -> None:
    rec = responses(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + line
                    + b"\r\n\r\nhello world!")
    head = rec.first("head")
    assert isinstance(head, ResponseHead)
    assert head.content_length == 12 and not head.chunked
    assert rec.first("data") == b"hello world!"


@pytest.mark.parametrize(("lines", "connection", "chunked"), [
    (b"Connection: keep-alive", b"keep-alive", False),
    (b"Connection: Keep-Alive, X-Foo", b"keep-alive, x-foo", False),
    (b"Connection:close", b"close", False),
    (b"Connection: keep-alive\r\nconnection: x-bar", b"keep-alive,x-bar", False),
    (b"Transfer-Encoding: chunked", None, True),
    (b"transfer-encoding:  gzip, Chunked ", None, True),
    (b"Content-Type: a\r\nContent-Encoding: b\r\nX-Powered-By: c", None, False)])
def test_connection_and_transfer_encoding_found_in_any_spelling(
        lines: bytes, connection: bytes | None, chunked: bool) -> None:
    body = b"0\r\n\r\n" if chunked else b""
    framing = b"" if chunked else b"\r\nContent-Length: 0"
    rec = responses(b"HTTP/1.1 200 OK\r\n" + lines + framing + b"\r\n\r\n" + body)
    head = rec.first("head")
    assert isinstance(head, ResponseHead)
    assert head.connection == connection and head.chunked is chunked
    cut = [head.raw[a + 2:b].split(b":")[0].lower() for a, b in head.cuts or ()]
    assert all(name in (b"connection", b"transfer-encoding") for name in cut)
    assert len(cut) == lines.lower().count(b"connection") + lines.lower().count(b"transfer-enc")


def test_response_head_split_across_reads() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"
    rec = responses(*(raw[i:i + 3] for i in range(0, len(raw), 3)))
    assert rec.first("head").raw == raw[:-3] and rec.body() == b"abc"
    assert rec.kinds()[-1] == "end"


def test_response_to_head_has_no_body_and_the_reader_continues() -> None:
    rec = Recorder()
    reader = ResponseReader(rec)
    reader.expect(b"HEAD")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert rec.kinds() == ["head", "end"]
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert rec.kinds() == ["head", "end", "head", "data", "end"]


def test_switching_protocols_hands_over_the_tunnel_bytes() -> None:
    rec = responses(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\nWS")
    assert rec.kinds() == ["head", "upgrade"] and rec.first("upgrade") == b"WS"


def test_body_until_close_ends_at_eof() -> None:
    rec = Recorder()
    reader = ResponseReader(rec)
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.0 200 OK\r\n\r\nbody")
    assert not rec.first("head").keep_alive and reader.eof()


def test_garbage_and_unsolicited_responses_are_upstream_protocol_errors() -> None:
    with pytest.raises(ProtocolError) as err:
        responses(b"garbage garbage\r\n\r\n")
    assert err.value.code is ErrorCode.UPSTREAM_PROTOCOL_ERROR
    with pytest.raises(ProtocolError, match="nobody asked"):
        responses(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.parametrize("value, ok", [(b"abc-123", True), (b"a b", False), (b"x" * 201, False),
                                       (b'q"', False), (b"", False)])
def test_request_id_validity(value: bytes, ok: bool) -> None:
    assert valid_request_id(value) is ok


def test_the_version_is_known_whether_or_not_llhttp_was_asked_for_it() -> None:
    """The version is read from llhttp only when it can be other than 1.1 (not kept
    alive, or a Connection header): every case still comes out right."""
    cases = {
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n": ("1.1", True),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n": ("1.1", False),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n": ("1.1", True),
        b"GET / HTTP/1.0\r\n\r\n": ("1.0", False),
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n": ("1.0", True),
    }
    for raw, expected in cases.items():
        head = requests(raw).first("head")
        assert isinstance(head, RequestHead)
        assert (head.version, head.keep_alive) == expected, raw
    # HTTP/1.1 needs a Host; HTTP/1.0 does not.
    assert requests(b"GET / HTTP/1.1\r\n\r\n").kinds() == ["error"]


def test_each_host_header_is_checked_even_after_a_valid_one() -> None:
    rec = requests(b"GET / HTTP/1.1\r\nHost: Svc:80\r\n\r\n"
                   b"GET / HTTP/1.1\r\nHost: Svc:80\r\n\r\n"
                   b"GET / HTTP/1.1\r\nHost: other\r\n\r\n"
                   b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n")
    heads = [e[1] for e in rec.events if e[0] == "head"]
    assert [h.authority for h in heads] == [b"svc:80", b"svc:80", b"other"]
    assert rec.kinds()[-1] == "error"


@pytest.mark.parametrize("head_pad, body", [
    (0, b"a\r\n\r\nb" * 400),          # a small head, a body with blank lines past 1 KiB
    (1500, b"ok"),                        # a head past 1 KiB
    (0, b"x\r\n" * 50),                   # all within 1 KiB, the body full of CRLFs
])
def test_the_head_ends_at_its_first_blank_line_whatever_the_body_holds(
        head_pad: int, body: bytes) -> None:
    head_bytes = (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * head_pad + b"\r\nConnection: x-a\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
    rec = responses(b"HTTP/1.1 100 Continue\r\n\r\n" + head_bytes + body)
    heads = [e for e in rec.events if e[0] == "head"]
    final = heads[-1][1]
    assert isinstance(final, ResponseHead)
    assert final.raw == head_bytes and final.content_length == len(body)
    assert final.connection == b"x-a" and final.cuts is not None
    assert b"".join(e[1] for e in rec.events if e[0] == "data") == body
