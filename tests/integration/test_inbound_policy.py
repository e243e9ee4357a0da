"""Inbound policy through a running sidecar: JWT (inline and served JWKS with rotation),
RBAC by role and by peer identity, rate limits (local, and global through a real Redis
shared by two sidecars), and dry-run.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from sidecar.testing.mesh_ca import MeshCa
from sidecar.testing.redis import RedisServer

from .support import assert_error, sidecar_config
from .test_mtls import client_ctx

ISSUER = "https://id.test/"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def jwks(*keys: tuple[str, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    out = []
    for kid, key in keys:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk.update(kid=kid, alg="ES256")
        out.append(jwk)
    return {"keys": out}


def token(key: ec.EllipticCurvePrivateKey = KEY, kid: str = "k1", **claims: Any) -> str:
    body = {"iss": ISSUER, "aud": "orders", "sub": "alice", "roles": ["reader"],
            "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def policy_config(app: Any, jwks_source: dict[str, Any], routes: list[dict[str, Any]],
                  **extra: Any) -> dict[str, Any]:
    cfg = sidecar_config(app=app.address)
    cfg["auth"] = {"providers": [{"name": "idp", "issuer": ISSUER, "audiences": ["orders"],
                                  "algorithms": ["ES256"], "jwks": jwks_source}]}
    cfg["inbound_routes"] = routes
    cfg.update(extra)
    return cfg


INLINE = {"inline": jwks(("k1", KEY))}


async def test_jwt_lets_good_tokens_through_with_claims_and_refuses_the_rest(
        upstreams, sidecar, clients) -> None:
    app = await upstreams.raw(name="app")
    sc = await sidecar(policy_config(app, INLINE, [
        {"name": "orders", "match": {"path_prefix": "/orders"}, "jwt": True}]))
    c = await clients.connect(sc.inbound)

    r = await c.request("GET", "/orders/1", [("Host", "orders"),
                                             ("Authorization", f"Bearer {token()}"),
                                             ("X-Auth-Sub", "mallory")])
    assert r.status == 200, r
    req = app.requests[-1]
    assert req.header_all("x-auth-sub") == ["alice"] and req.header("x-auth-roles") == "reader"

    for bad, why in [(token(exp=int(time.time()) - 3600), "expired"),
                     (token(OTHER), "bad signature"),
                     (token(iss="https://evil.test/"), "wrong issuer"),
                     (token()[:-10] + "AAAAAAAAAA", "tampered"),
                     ("not.a.token", "malformed")]:
        r = await c.request("GET", "/orders/1", [("Host", "orders"),
                                                 ("Authorization", f"Bearer {bad}")])
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in r.header("www-authenticate"), why
    r = await c.get("/orders/1", host="orders")
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.header("www-authenticate") == 'Bearer realm="sidecar"'
    assert len(app.requests) == 1  # none of the refused reached the app

    r = await c.get("/public", host="orders")  # no route with jwt: nothing asked
    assert r.status == 200
    text = sc.sidecar.metrics.render().decode()
    assert 'policy="jwt",reason="expired",service="trading"' in text


async def test_jwks_rotation_is_fetched_when_an_unknown_kid_arrives(
        upstreams, sidecar, clients) -> None:
    served = {"doc": jwks(("k1", KEY))}
    fetches = []

    async def handler(request: web.Request) -> web.Response:
        fetches.append(time.monotonic())
        return web.json_response(served["doc"], headers={"Cache-Control": "max-age=3600"})

    idp_app = web.Application()
    idp_app.router.add_get("/jwks", handler)
    idp = await upstreams.aiohttp(idp_app)
    app = await upstreams.raw(name="app")
    host, port = idp.address
    sc = await sidecar(policy_config(
        app, {"url": f"http://{host}:{port}/jwks", "min_refresh_interval": "100ms"},
        [{"name": "all", "jwt": True}]))
    c = await clients.connect(sc.inbound)
    assert len(fetches) == 1  # at start

    r = await c.request("GET", "/", [("Host", "a"), ("Authorization", f"Bearer {token()}")])
    assert r.status == 200, r

    served["doc"] = jwks(("k1", KEY), ("k2", OTHER))  # the IdP rotates in a new key
    await asyncio.sleep(0.15)  # past min_refresh_interval since the start's fetch
    r = await c.request("GET", "/", [("Host", "a"),
                                     ("Authorization", f"Bearer {token(OTHER, 'k2')}")])
    assert r.status == 200, r  # waited for one refresh, then verified
    assert len(fetches) == 2

    await idp.close()  # the IdP goes down: known keys keep working, unknown ones fail closed
    r = await c.request("GET", "/", [("Host", "a"),
                                     ("Authorization", f"Bearer {token(OTHER, 'k2')}")])
    assert r.status == 200
    await asyncio.sleep(0.15)
    r = await c.request("GET", "/", [("Host", "a"),
                                     ("Authorization", f"Bearer {token(OTHER, 'k3')}")])
    assert_error(r, 401, "UNAUTHORIZED")


async def test_rbac_by_role_and_by_peer_identity(tmp_path: Path, upstreams, sidecar,
                                                 clients) -> None:
    ca = MeshCa(tmp_path)
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    cfg = policy_config(app, INLINE, [
        {"name": "admin", "match": {"path_prefix": "/admin"}, "jwt": True,
         "rbac": [{"name": "admins", "roles": ["admin"]}]},
        {"name": "internal", "match": {"path_prefix": "/internal-api"},
         "rbac": [{"name": "trading-only", "peers": [ca.spiffe_id("trading")]}]}])
    cfg["service"] = {"name": "portfolio"}
    cfg["identity"] = server.config()
    sc = await sidecar(cfg)

    trading = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("trading"), server.bundle))
    user = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("user"), server.bundle))
    assert (await trading.get("/internal-api/x", host="p")).status == 200
    r = await user.get("/internal-api/x", host="p")
    err = assert_error(r, 403, "FORBIDDEN")
    assert "trading-only" not in json.dumps(err)  # which rule decided is logged, not told

    r = await user.request("GET", "/admin/x", [("Host", "p"),
                                                ("Authorization", f"Bearer {token()}")])
    assert_error(r, 403, "FORBIDDEN")
    r = await user.request("GET", "/admin/x", [
        ("Host", "p"), ("Authorization", f"Bearer {token(roles=['admin'])}")])
    assert r.status == 200
    assert len(app.requests) == 2


async def test_local_rate_limit_answers_429_with_headers(upstreams, sidecar, clients) -> None:
    app = await upstreams.raw(name="app")
    cfg = sidecar_config(app=app.address)
    cfg["rate_limiting"] = {"headers_on_allowed": True}
    cfg["inbound_routes"] = [{"name": "login", "match": {"path_prefix": "/login"},
                              "rate_limits": [{"by": "ip", "minute": 3}]}]
    sc = await sidecar(cfg)
    c = await clients.connect(sc.inbound)

    for left in (2, 1, 0):
        r = await c.get("/login", host="a")
        assert r.status == 200
        assert r.header("ratelimit-limit") == "3" and r.header("ratelimit-remaining") == str(left)
    r = await c.get("/login", host="a")
    assert_error(r, 429, "RATE_LIMITED")
    assert 15 <= int(r.header("retry-after")) <= 20  # one token per 20 s
    assert (await c.get("/other", host="a")).status == 200  # another route: not limited
    assert len(app.requests) == 4


async def test_dry_run_decides_and_counts_but_lets_through(upstreams, sidecar, clients) -> None:
    app = await upstreams.raw(name="app")
    sc = await sidecar(policy_config(app, INLINE, [
        {"name": "all", "jwt": {"dry_run": True},
         "rbac": {"dry_run": True, "rules": [{"name": "admins", "roles": ["admin"]}]}}]))
    c = await clients.connect(sc.inbound)

    r = await c.request("GET", "/", [("Host", "a"), ("Authorization", "Bearer garbage")])
    assert r.status == 200
    text = sc.sidecar.metrics.render().decode()
    assert 'mode="dry_run",policy="jwt",reason="malformed"' in text
    assert 'mode="dry_run",policy="rbac",reason="rule"' in text


async def test_global_rate_limit_through_two_sidecars_sharing_redis(upstreams, sidecar) -> None:
    app = await upstreams.raw(name="app", record=False)
    async with RedisServer() as redis:
        def cfg() -> dict[str, Any]:
            c = sidecar_config(app=app.address)
            c["service"] = {"name": "orders"}
            # The Redis timeout is generous: two cores carry both sidecars, Redis and the
            # clients here, and a slow answer would fall back to local buckets.
            c["rate_limiting"] = {"policy": "redis",
                                  "redis": {"url": redis.url, "timeout": "2s"},
                                  "limits": [{"name": "per-key", "by": "header",
                                              "header": "x-api-key", "minute": 200}]}
            return c
        a, b = await sidecar(cfg()), await sidecar(cfg())
        statuses: dict[int, int] = {}

        async def hammer(target: tuple[str, int]) -> None:
            from .rawclient import RawClient
            c = await RawClient.connect(target)
            try:
                for _ in range(60):
                    r = await c.request("GET", "/", [("Host", "orders"), ("X-Api-Key", "k1")])
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            finally:
                await c.close()

        await asyncio.gather(*(hammer(sc.inbound) for sc in (a, b) for _ in range(4)))
        assert set(statuses) <= {200, 429}
        # 480 requests, 200 allowed per minute across both sidecars (plus what refilled
        # during the run: 200/60 per second).
        assert 200 <= statuses[200] <= 202 + 4 * 2, statuses
        for sc in (a, b):
            assert sc.sidecar.rate_limits.store.ready()


async def test_explain_says_which_route_and_why_without_sending_anything(
        upstreams, sidecar, http) -> None:
    app = await upstreams.raw(name="app")
    sc = await sidecar(policy_config(app, INLINE, [
        {"name": "admin", "match": {"path_prefix": "/admin"}, "jwt": True,
         "rbac": [{"name": "admins", "roles": ["admin"]}],
         "rate_limits": [{"by": "consumer", "minute": 5}]}]))
    url = "http://%s:%d/internal/v1/explain" % sc.admin

    async with http.get(url, params={"method": "GET", "path": "/admin/users"},
                        headers={"Authorization": f"Bearer {token()}"}) as resp:
        body = await resp.json()
    assert body["route"] == "admin" and body["decision"] == "deny"
    jwt_step, rbac_step, limit_step = body["policies"]
    assert jwt_step["decision"] == "allow" and jwt_step["sub"] == "alice"
    assert rbac_step == {"policy": "rbac", "dry_run": False, "decision": "deny",
                         "rule": "admins", "reason": rbac_step["reason"]}
    assert limit_step["decision"] == "allow" and limit_step["remaining"] == 5

    async with http.get(url, params={"path": "/admin/users"},
                        headers={"Authorization": f"Bearer {token(roles=['admin'])}"}) as resp:
        body = await resp.json()
    assert body["decision"] == "allow"
    assert body["policies"][2]["remaining"] == 5  # explaining took no token
    async with http.get(url, params={"path": "/elsewhere"}) as resp:
        assert (await resp.json()) == {"route": "app", "policies": [], "decision": "allow"}
    assert app.requests == []


async def test_transforms_and_cors_on_an_inbound_route(upstreams, sidecar, clients) -> None:
    app = await upstreams.raw(name="app")
    cfg = sidecar_config(app=app.address)
    cfg["inbound_routes"] = [{
        "name": "trading", "match": {"path_prefix": "/trades"},
        "transform": {
            "request": {"remove": {"headers": ["x-debug"], "querystring": ["debug"]},
                        "rename": {"headers": ["x-client-id:x-consumer"]},
                        "add": {"headers": ["X-Service-Version:v1"],
                                "querystring": ["source:mesh"]}},
            "response": {"remove": {"headers": ["x-powered-by"]},
                         "add": {"headers": ["X-Service-Version:v1"]}}},
        "cors": {"origins": ["https://*.example.com"], "methods": ["GET", "POST"],
                 "credentials": True, "max_age": 600, "exposed_headers": ["X-Total"]}}]
    sc = await sidecar(cfg)
    c = await clients.connect(sc.inbound)

    # The seed's request-transformer: the app sees the edited request.
    r = await c.request("GET", "/trades?debug=1&acct=7", [
        ("Host", "trading"), ("X-Debug", "yes"), ("X-Client-Id", "c-9"),
        ("Origin", "https://app.example.com")])
    assert r.status == 200, r
    req = app.requests[-1]
    assert req.target == "/trades?acct=7&source=mesh"
    assert req.header("x-debug") is None and req.header("x-consumer") == "c-9"
    assert req.header("x-service-version") == "v1"
    # ...and the client the edited response, with the CORS fields for its origin.
    assert r.header("x-service-version") == "v1"
    assert r.header("access-control-allow-origin") == "https://app.example.com"
    assert r.header("access-control-allow-credentials") == "true"

    # A preflight is answered by the sidecar; the app never sees it.
    seen = len(app.requests)
    r = await c.request("OPTIONS", "/trades", [
        ("Host", "trading"), ("Origin", "https://app.example.com"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type")])
    assert r.status == 204 and r.header("content-length") is None
    assert r.header("access-control-allow-methods") == "GET,POST"
    assert r.header("access-control-max-age") == "600"
    r = await c.request("OPTIONS", "/trades", [
        ("Host", "trading"), ("Origin", "https://evil.test"),
        ("Access-Control-Request-Method", "POST")])
    assert r.status == 403 and r.header("access-control-allow-origin") is None
    assert len(app.requests) == seen
    # A request from an origin not allowed gets no CORS fields (the browser then blocks).
    r = await c.request("GET", "/trades", [("Host", "trading"), ("Origin", "https://evil.test")])
    assert r.status == 200 and r.header("access-control-allow-origin") is None
