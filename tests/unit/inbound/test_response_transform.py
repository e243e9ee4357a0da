"""Response transforms on a whole response head, as bytes; and with forwarding's heads."""

from __future__ import annotations

from typing import Any

from sidecar.inbound.transform import ResponseTransform, parse_transform
from sidecar.protocol.events import ResponseHead, parse_header_lines
from sidecar.protocol.forwarding import response_head


def rt(response: dict[str, Any]) -> ResponseTransform:
    return ResponseTransform(parse_transform({"response": response}))


HEAD = (b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Type: text/plain\r\n"
        b"X-Powered-By: py\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\n")


def test_seed_version_added_when_absent_only() -> None:
    t = rt({"add": {"headers": ["X-Service-Version:v1"]}})
    out = t.rewrite(HEAD)
    assert out == HEAD[:-2] + b"x-service-version: v1\r\n\r\n"
    present = HEAD[:-2] + b"X-Service-Version: v0\r\n\r\n"
    assert t.rewrite(present) == present


def test_remove_cuts_lines_and_keeps_the_rest_as_sent() -> None:
    out = rt({"remove": {"headers": ["server", "X-Powered-By"]}}).rewrite(HEAD)
    assert out == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
                   b"Set-Cookie: b=2\r\nContent-Length: 2\r\n\r\n")


def test_replace_rename_append_in_kong_order() -> None:
    t = rt({"replace": {"headers": ["set-cookie:c=3", "x-absent:1"]},
            "rename": {"headers": ["server:x-origin-server"]},
            "append": {"headers": ["x-origin-server:sidecar"]}})
    out = t.rewrite(HEAD)
    assert parse_header_lines(out) == [
        (b"content-type", b"text/plain"), (b"x-powered-by", b"py"),
        (b"content-length", b"2"), (b"x-origin-server", b"gunicorn"),
        (b"set-cookie", b"c=3"), (b"x-origin-server", b"sidecar")]
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")


def test_only_whole_names_match() -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Server-Id: 1\r\nServerx: 2\r\n\r\n"
    assert rt({"remove": {"headers": ["server"]}}).rewrite(head) == head


def test_on_what_forwarding_made_both_paths() -> None:
    # Run on response_head's output: the raw-edit path and the rebuilt path alike.
    t = rt({"remove": {"headers": ["server"]}, "add": {"headers": ["x-service-version:v1"]}})
    raw = ResponseHead(200, True, raw=b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n\r\n")
    raw.content_length = 0
    built = ResponseHead(200, True, headers=[(b"server", b"s"), (b"content-length", b"0")])
    for head in (raw, built):
        out = t.rewrite(response_head(head, request_id=b"r1", keep_alive=True, chunked=False,
                                      extra=b"x-extra: 1\r\n"))
        fields = parse_header_lines(out)
        assert (b"server", b"s") not in fields
        assert (b"x-service-version", b"v1") in fields
        assert (b"x-request-id", b"r1") in fields and (b"x-extra", b"1") in fields
        assert out.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in out[:-4]


def test_nothing_configured_is_identity() -> None:
    t = ResponseTransform(parse_transform({}))
    assert not t
    assert t.rewrite(HEAD) is HEAD
