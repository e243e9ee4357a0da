"""HTTP/1.1 forwarding: routing, keep-alive, pipelining, bodies, connection management."""

from __future__ import annotations

import os

import pytest

from .rawclient import build_request
from .support import assert_error, sidecar_config
from .upstream import (
    Reply,
    echo_reply,
    serve,
)

# -- routing ---------------------------------------------------------------------------


async def test_inbound_forwards_every_request_to_the_app(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/hello/world?x=1&y=%20", host="trading.example")

    assert r.status == 200, r
    assert r.json()["upstream"] == "app"
    [req] = app.requests
    assert (req.method, req.target, req.version) == ("GET", "/hello/world?x=1&y=%20", "1.1")
    assert req.header("host") == "trading.example"


@pytest.mark.parametrize("host", ["portfolio", "PORTFOLIO", "portfolio:80"])
async def test_outbound_routes_by_host_header(upstreams, sidecar, clients, host):
    portfolio = await upstreams.raw(name="portfolio")
    other = await upstreams.raw(name="other")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address],
                                                "other": [other.address]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/v1/positions?account=7", host=host)

    assert r.status == 200, r
    assert r.json()["upstream"] == "portfolio"
    [req] = portfolio.requests
    assert req.target == "/v1/positions?account=7"
    assert other.bytes_received == 0


async def test_outbound_absolute_form_is_forwarded_in_origin_form(upstreams, sidecar, clients):
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address]}))
    c = await clients.connect(sc.outbound)

    await c.send(b"GET http://portfolio/v1/quotes?sym=ACME HTTP/1.1\r\n"
                 b"Host: portfolio\r\n\r\n")
    r = await c.read_response()

    assert r.status == 200, r
    [req] = portfolio.requests
    assert req.target == "/v1/quotes?sym=ACME"


async def test_outbound_absolute_form_authority_wins_over_host(upstreams, sidecar, clients):
    # RFC 9112 3.2.2: with an absolute-form target the Host header is ignored.
    portfolio = await upstreams.raw(name="portfolio")
    other = await upstreams.raw(name="other")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address],
                                                "other": [other.address]}))
    c = await clients.connect(sc.outbound)

    await c.send(b"GET http://portfolio/x HTTP/1.1\r\nHost: other\r\n\r\n")
    r = await c.read_response()

    assert r.status == 200, r
    assert r.json()["upstream"] == "portfolio"
    assert other.bytes_received == 0


async def test_route_matches_host_and_prefix_and_rewrites_host(upstreams, sidecar, clients):
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(
        services={"portfolio": [portfolio.address]},
        routes=[{"name": "api", "service": "portfolio",
                 "match": {"host": "api.example", "path_prefix": "/v1"},
                 "host_rewrite": "portfolio.internal"}]))
    c = await clients.connect(sc.outbound)

    r = await c.get("/v1/quotes", host="api.example")

    assert r.status == 200, r
    [req] = portfolio.requests
    assert req.target == "/v1/quotes"
    assert req.header_all("host") == ["portfolio.internal"]
    assert req.header("x-forwarded-host") == "api.example"

    miss = await c.get("/v2/quotes", host="api.example")
    assert_error(miss, 404, "NO_ROUTE")
    assert len(portfolio.requests) == 1


# -- keep-alive and pipelining -------------------------------------------------------


@pytest.mark.parametrize("side", ["inbound", "outbound"])
async def test_keep_alive_reuses_one_upstream_connection(upstreams, sidecar, clients, side):
    up = await upstreams.raw(name="up")
    sc = await sidecar(sidecar_config(app=up.address, services={"portfolio": [up.address]}))
    c = await clients.connect(getattr(sc, side))

    for i in range(10):
        r = await c.get(f"/n/{i}", host="portfolio")
        assert r.status == 200, r
        assert r.json()["target"] == f"/n/{i}"

    assert up.accepted == 1, f"upstream accepted {up.accepted} connections for 10 requests"
    assert len(up.connections[0].requests) == 10


async def test_upstream_connection_is_pooled_across_client_connections(upstreams, sidecar,
                                                                        clients):
    up = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))

    for i in range(3):
        c = await clients.connect(sc.outbound)
        r = await c.get(f"/c/{i}", host="portfolio")
        assert r.status == 200, r
        await c.close()

    assert up.accepted == 1


@pytest.mark.parametrize("side", ["inbound", "outbound"])
async def test_pipelined_requests_are_answered_in_order(upstreams, sidecar, clients, side):
    up = await upstreams.raw(name="up")
    sc = await sidecar(sidecar_config(app=up.address, services={"portfolio": [up.address]}))
    c = await clients.connect(getattr(sc, side))
    h = [("Host", "portfolio")]
    batch = b"".join([
        build_request("GET", "/p/1", h),
        build_request("POST", "/p/2", h, body=b"two" * 1000),
        build_request("HEAD", "/p/3", h),
        build_request("POST", "/p/4", h, chunks=[b"fo", b"ur"]),
        build_request("GET", "/p/5", h),
    ])

    await c.send(batch)

    methods = ["GET", "POST", "HEAD", "POST", "GET"]
    for i, method in enumerate(methods, start=1):
        r = await c.read_response(method)
        assert r.status == 200, (i, r)
        if method == "HEAD":
            assert r.body == b""
        else:
            assert r.json()["target"] == f"/p/{i}", (i, r)
    bodies = [(req.target, req.body) for req in up.requests]
    assert bodies == [("/p/1", b""), ("/p/2", b"two" * 1000), ("/p/3", b""),
                      ("/p/4", b"four"), ("/p/5", b"")]


# -- bodies ----------------------------------------------------------------------------


async def test_content_length_request_body_arrives_intact(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    body = os.urandom(300_000)

    r = await c.request("POST", "/upload", [("Host", "app"), ("Content-Type", "x/y")], body)

    assert r.status == 200, r
    [req] = app.requests
    assert req.body == body
    if not req.chunked:
        assert req.content_length == len(body)


async def test_chunked_request_body_arrives_intact(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    chunks = [os.urandom(n) for n in (1, 17, 4096, 70_000, 3)]

    await c.send(build_request("POST", "/upload", [("Host", "app")], chunks=chunks))
    r = await c.read_response()

    assert r.status == 200, r
    [req] = app.requests
    assert req.body == b"".join(chunks)


async def test_empty_post_body(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.request("POST", "/empty", [("Host", "app")], b"")
    r2 = await c.get("/after")

    assert (r.status, r2.status) == (200, 200)
    assert [q.body for q in app.requests] == [b"", b""]


async def test_chunked_response_arrives_intact(upstreams, sidecar, clients):
    parts = [b"alpha", os.urandom(100_000), b"", b"omega"]
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [("X-Kind", "chunked")],
                                                            parts, chunked=True)))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r1 = await c.get("/stream")
    r2 = await c.get("/stream")  # the connection is still in sync after a chunked body

    for r in (r1, r2):
        assert r.status == 200, r
        assert r.header("x-kind") == "chunked"
        assert r.body == b"".join(parts)


async def test_content_length_response_arrives_intact(upstreams, sidecar, clients):
    body = os.urandom(2_000_000)
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [], body)))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/big")

    assert r.status == 200
    assert r.header("content-length") == str(len(body))
    assert r.body == body


async def test_close_delimited_response_arrives_intact(upstreams, sidecar, clients):
    body = os.urandom(50_000)
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [], body,
                                                            content_length=False)))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(build_request("GET", "/eof", [("Host", "app")]))
    r = await c.read_response()

    assert r.status == 200
    assert r.body == body


async def test_head_and_bodiless_statuses_keep_the_connection_in_sync(upstreams, sidecar,
                                                                      clients):
    def respond(req, conn):
        if req.target == "/head":
            return Reply(200, [("Content-Length", "1234")], b"")
        if req.target == "/204":
            return Reply(204, [], b"")
        if req.target == "/304":
            return Reply(304, [("ETag", '"x"')], b"")
        return echo_reply(req, conn)

    app = await upstreams.raw(serve(respond))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    head = await c.request("HEAD", "/head", [("Host", "app")])
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == "1234"
    assert (await c.get("/204")).status == 204
    assert (await c.get("/304")).status == 304
    last = await c.get("/last")
    assert last.status == 200 and last.json()["target"] == "/last"
    assert app.accepted == 1


# -- connection management and versions ---------------------------------------------------


async def test_client_connection_close_is_honoured(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    r = await c.get("/bye", headers=[("Connection", "close")])

    assert r.status == 200
    assert "close" in r.connection_tokens, r
    assert await c.expect_closed() == b""
    # The upstream connection is the sidecar's own: it stays pooled.
    c2 = await clients.connect(sc.inbound)
    assert (await c2.get("/again")).status == 200
    assert app.accepted == 1


async def test_upstream_connection_close_is_not_reused(upstreams, sidecar, clients):
    def respond(req, conn):
        return Reply(200, [("Connection", "close")], b"once")

    app = await upstreams.raw(serve(respond), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    for _ in range(3):
        r = await c.get("/")  # the client's connection is unaffected
        assert r.status == 200 and r.body == b"once", r
        assert "close" not in r.connection_tokens
    assert app.accepted == 3


async def test_http_1_0_client_gets_no_chunked_and_a_close(upstreams, sidecar, clients):
    # RFC 9112 7.1: chunked MUST NOT be sent to an HTTP/1.0 recipient.
    parts = [b"one-", b"two-", b"three"]
    app = await upstreams.raw(serve(lambda req, conn: Reply(200, [], parts, chunked=True)))
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
    r = await c.read_response()

    assert r.status == 200, r
    assert not r.chunked, r
    assert r.body == b"one-two-three"
    assert await c.expect_closed() == b""


async def test_http_1_0_keep_alive_client(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /a HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\n")
    r = await c.read_response()
    assert r.status == 200
    # RFC 9112 9.3: a 1.0 client keeps the connection only if the answer says keep-alive
    # (a bare 1.1 answer leaves it waiting for a close that never comes: ab -k hangs).
    assert "keep-alive" in r.connection_tokens, r
    await c.send(b"GET /b HTTP/1.0\r\nHost: app\r\nConnection: keep-alive\r\n\r\n")
    assert (await c.read_response()).json()["target"] == "/b"


async def test_upstream_errors_pass_through_untouched(upstreams, sidecar, clients):
    def respond(req, conn):
        return Reply(int(req.target[1:]), [("Content-Type", "text/plain"),
                                           ("X-App", "yes")], b"app says no")

    app = await upstreams.raw(serve(respond), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    for status in (400, 404, 500, 502, 503):
        r = await c.get(f"/{status}")
        assert r.status == status
        assert r.body == b"app says no", r  # the app's own answer, not an envelope
        assert r.header("x-app") == "yes"
        assert r.header("content-type") == "text/plain"
