"""The proxy's header duties, sans-IO."""

from __future__ import annotations

from sidecar.protocol.events import RequestHead, ResponseHead
from sidecar.protocol.forwarding import forwarded_lines, request_head, response_head
from sidecar.protocol.h1 import RequestReader, ResponseReader
from sidecar.telemetry.propagation import Unsampled
from sidecar.testing import Recorder


def parse_request(raw: bytes) -> RequestHead:
    rec = Recorder()
    RequestReader(rec).feed(raw)
    head = rec.first("head")
    assert isinstance(head, RequestHead)
    return head


def parse_response(raw: bytes) -> ResponseHead:
    rec = Recorder()
    reader = ResponseReader(rec)
    reader.expect(b"GET")
    reader.feed(raw)
    head = rec.first("head")
    assert isinstance(head, ResponseHead)
    return head


def lines(block: bytes) -> list[bytes]:
    return block.split(b"\r\n")


def test_request_head_drops_hop_by_hop_and_sets_forwarding_headers() -> None:
    head = parse_request(
        b"GET /p HTTP/1.1\r\nHost: portfolio\r\nConnection: keep-alive, X-Secret\r\n"
        b"Keep-Alive: timeout=5\r\nX-Secret: s\r\nTE: trailers\r\nProxy-Authorization: b\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n")
    out = lines(request_head(head, client_ip=b"127.0.0.1", proto=b"http", request_id=b"rid-1"))
    assert out[0] == b"GET /p HTTP/1.1"
    names = [line.split(b":")[0] for line in out[1:] if line]
    for dropped in (b"connection", b"keep-alive", b"x-secret", b"te", b"proxy-authorization"):
        assert dropped not in names
    assert b"host: portfolio" in out and b"accept: */*" in out
    assert b"x-forwarded-for: 10.0.0.1, 127.0.0.1" in out
    assert b"x-forwarded-proto: http" in out and b"x-forwarded-host: portfolio" in out
    assert b"x-request-id: rid-1" in out and b"via: 1.1 sidecar" in out


def test_a_new_unsampled_trace_replaces_whatever_context_the_client_sent() -> None:
    head = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\ntraceparent: garbage\r\n"
                         b"tracestate: x=1\r\nb3: 0\r\n\r\n")
    unsampled = Unsampled(b"0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331")
    out = lines(request_head(head, client_ip=b"::1", proto=b"http", request_id=b"r",
                             trace_ids=unsampled.ids))
    tp = [line for line in out if line.lower().startswith((b"traceparent", b"tracestate", b"b3"))]
    assert tp == [b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"]
    assert unsampled.child_headers() == [(b"traceparent", tp[0][len(b"traceparent: "):])]
    assert out[-2:] == [b"", b""]  # the head still ends in one blank line


def test_the_connections_ready_forwarded_lines_give_the_same_head() -> None:
    """A connection passes its X-Forwarded-* lines made once; the head must read as if
    they were made per request, and a request bringing its own fields must not get
    ours twice."""
    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET / HTTP/1.0\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: b\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"):
        head = parse_request(raw)
        args = {"client_ip": b"::1", "proto": b"http", "request_id": b"r"}
        plain = request_head(head, **args)
        ready = request_head(head, **args,
                             forwarded=forwarded_lines(b"::1", b"http", head.authority))
        assert sorted(lines(plain)) == sorted(lines(ready)), raw
        assert plain.endswith(b"\r\n\r\n") and ready.endswith(b"\r\n\r\n")
        assert len([x for x in lines(ready) if x.startswith(b"x-forwarded-for")]) == 1


def test_host_rewrite_and_chunked_reframing() -> None:
    head = parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    out = lines(request_head(head, client_ip=b"::1", proto=b"http", request_id=b"r",
                             host=b"portfolio.internal"))
    assert b"host: portfolio.internal" in out
    assert out.count(b"transfer-encoding: chunked") == 1


def test_response_head_framing_and_connection() -> None:
    resp = parse_response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
                          b"Content-Type: text/plain\r\nX-Request-Id: up\r\n\r\n")
    out = lines(response_head(resp, request_id=b"mine", keep_alive=False, chunked=True))
    assert out[0] == b"HTTP/1.1 200 OK"
    assert b"Connection: keep-alive" not in out  # hop-by-hop: cut from the received head
    assert b"Content-Type: text/plain" in out  # the rest passes as it came
    assert b"connection: close" in out and b"transfer-encoding: chunked" in out
    assert b"X-Request-Id: up" in out and b"x-request-id: mine" not in out


def test_response_head_from_http10_and_connection_named_fields() -> None:
    resp = parse_response(b"HTTP/1.0 404 Nope\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
                          b"Content-Length: 0\r\n\r\n")
    out = lines(response_head(resp, request_id=b"r", keep_alive=True, chunked=False))
    assert out[0] == b"HTTP/1.1 404 Not Found"
    assert not any(line.lower().startswith((b"x-hop", b"connection")) for line in out)
    assert b"content-length: 0" in out and b"x-request-id: r" in out


def test_every_hop_by_hop_response_field_is_cut_in_any_spelling() -> None:
    """The line walk that finds them must cut exactly those lines, whatever their case
    or spacing, and leave look-alikes (`Content-Type`, `Keep-Alive-Ish`, `Tea`) alone."""
    resp = parse_response(
        b"HTTP/1.1 200 OK\r\nServer: s\r\nconnection:keep-alive\r\nKEEP-ALIVE: timeout=5\r\n"
        b"Proxy-Connection:  x\r\nTE: trailers\r\nTea: green\r\nTrailer: X-T\r\n"
        b"Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nKeep-Alive-Ish: yes\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n")
    assert resp.content_length == 2 and resp.connection == b"keep-alive"
    out = lines(response_head(resp, request_id=b"r", keep_alive=True, chunked=False))
    assert out[0] == b"HTTP/1.1 200 OK"
    assert b"Server: s" in out and b"Tea: green" in out and b"Keep-Alive-Ish: yes" in out
    assert b"Content-Type: text/plain" in out and b"Content-Length: 2" in out
    kept = {line.split(b":")[0].strip().lower() for line in out[1:] if line}
    assert not kept & {b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                       b"proxy-authenticate"}
    assert [line for line in out if line.lower().startswith(b"connection")] == []
