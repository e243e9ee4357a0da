"""A proxy's duties (RFC 9110 7.6, RFC 9112): hop-by-hop fields, Via, X-Forwarded-*,
request ids, and forwarding messages faithfully without opening a smuggling hole."""

from __future__ import annotations

import pytest

from .rawclient import build_request
from .support import assert_error, request_id_ok, sidecar_config
from .upstream import (
    Reply,
    echo_reply,
    serve,
)

# -- proxy duties ----------------------------------------------------------------------


async def test_hop_by_hop_request_headers_are_removed(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.request("POST", "/hop", [
        ("Host", "app"),
        ("Connection", "keep-alive, X-Hop-Custom, x-other-hop"),
        ("X-Hop-Custom", "secret"),
        ("X-Other-Hop", "secret2"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-End-To-End", "kept"),
        ("Authorization", "Bearer abc"),
    ], b"payload")

    assert r.status == 200, r
    [req] = app.requests
    names = req.names()
    for hop in ("keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                "proxy-authorization", "x-hop-custom", "x-other-hop"):
        assert hop not in names, f"{hop} forwarded upstream: {req.headers}"
    conn_tokens = {t.strip().lower() for t in (req.header("connection") or "").split(",") if t}
    assert conn_tokens <= {"keep-alive", "close"}, req.headers
    assert req.header("x-end-to-end") == "kept"
    assert req.header("authorization") == "Bearer abc"
    assert req.body == b"payload"


async def test_hop_by_hop_response_headers_are_removed(upstreams, sidecar, clients):
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [
        ("Connection", "X-Resp-Hop"),
        ("X-Resp-Hop", "1"),
        ("Keep-Alive", "timeout=7"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
    ], b"ok")))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/")

    assert r.status == 200 and r.body == b"ok"
    for hop in ("x-resp-hop", "proxy-connection", "upgrade"):
        assert r.header(hop) is None, f"{hop} relayed to the client: {r.headers}"
    assert r.header("keep-alive") != "timeout=7"
    assert "x-resp-hop" not in r.connection_tokens
    assert r.header("x-kept") == "yes"


async def test_via_is_added_to_the_request(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.get("/a")
    await c.get("/b", headers=[("Via", "1.0 fred")])

    plain, chained = app.requests
    assert "sidecar" in (plain.header("via") or ""), plain.headers
    via = chained.header("via") or ""
    assert "1.0 fred" in via and "sidecar" in via, chained.headers
    assert via.index("1.0 fred") < via.index("sidecar"), via


async def test_via_is_added_to_the_response(upstreams, sidecar, clients):
    # RFC 9110 7.6.3: a proxy MUST send Via in each message it forwards (both ways).
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [("Via", "1.1 origin")], b"")))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/")

    via = r.header("via") or ""
    assert "1.1 origin" in via and "sidecar" in via, r.headers


async def test_x_forwarded_headers(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.get("/a", host="shop.example:8443")
    await c.get("/b", host="shop.example", headers=[("X-Forwarded-For", "10.1.2.3")])

    first, second = app.requests
    assert first.header("x-forwarded-for") == "127.0.0.1"
    assert first.header("x-forwarded-proto") == "http"
    assert first.header("x-forwarded-host") == "shop.example:8443"
    xff = [p.strip() for p in (second.header("x-forwarded-for") or "").split(",")]
    assert xff == ["10.1.2.3", "127.0.0.1"], second.headers
    assert second.header_all("x-forwarded-proto") == ["http"]
    assert second.header("x-forwarded-host") == "shop.example"


async def test_x_forwarded_on_outbound(upstreams, sidecar, clients):
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address]}))
    c = await clients.connect(sc.outbound)

    await c.get("/x", host="portfolio")

    [req] = portfolio.requests
    assert req.header("x-forwarded-for") == "127.0.0.1"
    assert req.header("x-forwarded-proto") == "http"
    assert req.header("x-forwarded-host") == "portfolio"
    assert "sidecar" in (req.header("via") or "")


async def test_request_id_is_kept_when_valid(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    long_ok = "r" * 200

    r1 = await c.get("/", headers=[("X-Request-Id", "abc-123_XYZ.9")])
    r2 = await c.get("/", headers=[("x-request-id", long_ok)])

    assert app.requests[0].header_all("x-request-id") == ["abc-123_XYZ.9"]
    assert r1.header_all("x-request-id") == ["abc-123_XYZ.9"]
    assert app.requests[1].header_all("x-request-id") == [long_ok]
    assert r2.header_all("x-request-id") == [long_ok]


async def test_request_id_is_generated_when_missing_or_invalid(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r1 = await c.get("/")
    r2 = await c.get("/")
    r3 = await c.get("/", headers=[("X-Request-Id", "x" * 201)])

    ids = []
    for req, resp in zip(app.requests, (r1, r2, r3), strict=True):
        [sent] = req.header_all("x-request-id")
        assert request_id_ok(sent), sent
        assert resp.header_all("x-request-id") == [sent]
        ids.append(sent)
    assert len(set(ids)) == 3
    assert ids[2] != "x" * 201


async def test_request_id_on_outbound_and_on_errors(upstreams, sidecar, clients):
    sc = await sidecar(sidecar_config())
    c = await clients.connect(sc.outbound)

    r = await c.get("/", host="nowhere", headers=[("X-Request-Id", "trace-me")])

    err = assert_error(r, 404, "NO_ROUTE")
    assert err["request_id"] == "trace-me"


# -- fidelity and smuggling ----------------------------------------------------------------


@pytest.mark.parametrize("named", ["content-length", "Content-Length", "host",
                                   "transfer-encoding"])
async def test_connection_cannot_strip_framing_or_host(upstreams, sidecar, clients, named):
    # `Connection: <field>` makes <field> hop-by-hop for the *client's* hop only. The
    # sidecar re-frames the body and must always send Host: a client naming
    # Content-Length must not get the body parsed upstream as a second request.
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    smuggled = build_request("GET", "/smuggled", [("Host", "app")])
    if named.lower() == "transfer-encoding":
        await c.send(build_request("POST", "/a", [("Host", "app"), ("Connection", named)],
                                   chunks=[smuggled]))
    else:
        await c.send(build_request("POST", "/a", [("Host", "app"), ("Connection", named)],
                                   smuggled))
    r = await c.read_response()

    if r.status == 400:  # refusing such a request is fine too
        assert_error(r, 400, "BAD_REQUEST")
        assert app.requests == []
        return
    targets = [q.target for q in app.requests]
    assert "/smuggled" not in targets, f"request smuggled to the upstream: {app.requests}"
    assert r.status == 200, r
    ok = await clients.connect(sc.inbound)
    assert (await ok.get("/check")).status == 200  # the upstream connection is in sync
    first = app.requests[0]
    assert first.target == "/a" and first.body == smuggled, first
    assert first.header_all("host") == ["app"], first.headers


@pytest.mark.parametrize("target", [
    "/a%2Fb/../c/./d;p=1?q=a+b&r=%7E&&s=",
    "/%E2%82%AC?x=%00",
    "//double//slashes/",
    "/?",
])
async def test_request_target_is_forwarded_byte_exact(upstreams, sidecar, clients, target):
    # No normalisation, no decoding: the app sees what the client sent.
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get(target)

    assert r.status == 200, r
    assert app.requests[0].target == target


async def test_repeated_and_empty_headers_are_preserved(upstreams, sidecar, clients):
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [
        ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2, c=3; Expires=Wed, 21 Oct 2015"),
        ("X-Empty", ""), ("X-Spaces", "a  b")], b"")))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/", headers=[("X-Multi", "1"), ("Accept", "a/b"), ("X-Multi", "2"),
                                  ("X-Empty", ""), ("Cookie", "k=v; k2=v2")])

    req = app.requests[0]
    assert req.header_all("x-multi") == ["1", "2"]
    assert req.header_all("x-empty") == [""]
    assert req.header("cookie") == "k=v; k2=v2"
    # Set-Cookie lines are never merged (RFC 9110 5.3).
    assert r.header_all("set-cookie") == ["a=1; Path=/", "b=2, c=3; Expires=Wed, 21 Oct 2015"]
    assert r.header_all("x-empty") == [""]
    assert r.header("x-spaces") == "a  b"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE"])
async def test_methods_are_forwarded(upstreams, sidecar, clients, method):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.request(method, "/res", [("Host", "app")], b"{}")

    assert r.status == 200, r
    assert (app.requests[0].method, app.requests[0].body) == (method, b"{}")


async def test_options_asterisk_is_forwarded(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.request("OPTIONS", "*", [("Host", "app")])

    assert r.status == 200, r
    assert app.requests[0].target == "*"


async def test_many_pipelined_requests(upstreams, sidecar, clients):
    # Far more than max_pipelined (32): reading pauses, nothing is lost or reordered.
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    n = 300

    await c.send(b"".join(build_request("GET", f"/n/{i}", [("Host", "app")])
                          for i in range(n)))

    for i in range(n):
        r = await c.read_response()
        assert r.status == 200 and r.json()["target"] == f"/n/{i}", (i, r)
    assert len(app.requests) == n


async def test_bodiless_responses_with_misleading_framing(upstreams, sidecar, clients):
    # HEAD, 204 and 304 never have a body, whatever their framing headers say.
    def respond(req, conn):
        if req.target == "/head-chunked":
            return Reply(200, [], [b"never sent"], chunked=True)
        if req.target == "/304-length":
            return Reply(304, [("Content-Length", "1234")], b"")
        return echo_reply(req, conn)

    app = await upstreams.raw(serve(respond))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    head = await c.request("HEAD", "/head-chunked", [("Host", "app")])
    assert head.status == 200 and head.body == b""
    not_modified = await c.get("/304-length")
    assert not_modified.status == 304 and not_modified.body == b""
    last = await c.get("/last")
    assert last.status == 200 and last.json()["target"] == "/last"


async def test_early_response_while_the_request_body_is_still_coming(upstreams, sidecar,
                                                                     clients):
    # An upstream may answer before reading the whole body (413, 401...): the answer must
    # reach the client at once, not after the upload ends (RFC 9112 9.3).
    async def early(conn):
        while True:
            req = await conn.read_head()
            if req is None:
                return
            if req.target == "/upload":
                await conn.send(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
                await conn.read_body(req, keep=False)
            else:
                await conn.read_body(req)
                await echo_reply(req, conn).write(conn)

    app = await upstreams.raw(early, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10000000\r\n\r\n"
                 + b"u" * 100_000)
    r = await c.read_response(timeout=3)
    assert r.status == 413 and r.body == b"big", r
    if "close" in r.connection_tokens:
        await c.expect_closed()
    else:  # then the sidecar expects the rest of the body, and the connection goes on
        await c.send(b"u" * (10_000_000 - 100_000))
        nxt = await c.get("/next")
        assert nxt.status == 200 and nxt.json()["target"] == "/next"
