"""JWKS over real HTTP: an aiohttp server on 127.0.0.1:0 whose keys rotate, the sidecar's
fetcher and key set against it. The key set's clock is injected, so the refresh rate limit
and the cache lifetime are driven without sleeping; the sockets are real."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sidecar.auth import (
    AuthConfig,
    AuthError,
    AuthRuntime,
    HttpJwksFetcher,
    JwksSource,
    JwtProvider,
    KeySet,
    Reason,
    Verifier,
)
from sidecar.testing.clock import FakeClock

from .conftest import Upstreams

ISSUER = "https://id.integration.test/"


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(kid: str) -> dict[str, Any]:
    if kid.startswith("ec"):
        out: dict[str, Any] = ECAlgorithm.to_jwk(ec_key(kid).public_key(), as_dict=True)
    else:
        out = RSAAlgorithm.to_jwk(rsa_key(kid).public_key(), as_dict=True)
    return {**out, "kid": kid}


def token(kid: str, sub: str = "alice") -> str:
    key: Any = ec_key(kid) if kid.startswith("ec") else rsa_key(kid)
    alg = "ES256" if kid.startswith("ec") else "RS256"
    claims = {"iss": ISSUER, "aud": "orders", "sub": sub, "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


class JwksServer:
    """Serves `keys` (kids) with `cache_control`; counts the GETs."""

    def __init__(self, *kids: str, cache_control: str = "public, max-age=120") -> None:
        self.kids = list(kids)
        self.cache_control = cache_control
        self.hits = 0
        self.app = web.Application()
        self.app.router.add_get("/.well-known/jwks.json", self.handle)
        self.app.router.add_get("/broken", self.broken)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"keys": [public_jwk(k) for k in self.kids]},
                                 headers={"Cache-Control": self.cache_control})

    async def broken(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=503, text="down for maintenance")


def provider(url: str) -> JwtProvider:
    return JwtProvider(name="idp", issuer=ISSUER, audiences=("orders",),
                       algorithms=("RS256", "ES256"), jwks=JwksSource(url=url))


async def serve(upstreams: Upstreams, server: JwksServer) -> str:
    up = await upstreams.aiohttp(server.app)
    return f"http://{up.hostport}/.well-known/jwks.json"


@pytest.fixture
async def fetchers() -> Any:
    made: list[HttpJwksFetcher] = []
    yield made
    for f in made:
        await f.aclose()


def keyset(url: str, clock: FakeClock, fetchers: list[HttpJwksFetcher], **src: Any) -> KeySet:
    fetcher = HttpJwksFetcher(url, timeout_s=2.0)
    fetchers.append(fetcher)
    return KeySet(fetch=fetcher, source=JwksSource(url=url, **src), clock=clock, name="idp")


async def test_initial_fetch_honours_cache_control(upstreams: Upstreams, fetchers: Any) -> None:
    server = JwksServer("rsa-1", "ec-1")
    url = await serve(upstreams, server)
    clock = FakeClock(1000.0)
    ks = keyset(url, clock, fetchers)
    assert await ks.refresh()
    assert server.hits == 1
    assert sorted(k.kid or "" for k in ks.keys) == ["ec-1", "rsa-1"]
    assert ks.refresh_due_at == 1120.0                     # max-age=120
    v = Verifier(AuthConfig(providers=(provider(url),)), {"idp": ks})
    for kid in ("rsa-1", "ec-1"):
        assert v.verify_now(token(kid)) is not None
    assert server.hits == 1                                # known keys: no fetch


async def test_rotation_refresh_rate_limit_and_outage(upstreams: Upstreams, fetchers: Any) -> None:
    server = JwksServer("rsa-1", cache_control="max-age=600")
    url = await serve(upstreams, server)
    clock = FakeClock(0.0)
    ks = keyset(url, clock, fetchers, min_refresh_interval_s=5.0)
    await ks.refresh()
    v = Verifier(AuthConfig(providers=(provider(url),)), {"idp": ks})
    clock.advance(10)

    # Rotation: the provider starts signing with a key published after our fetch.
    server.kids.append("rsa-2")
    fresh = token("rsa-2")
    assert v.verify_now(fresh) is None                     # only this request waits
    assert (await v.verify(fresh)).claims["sub"] == "alice"
    assert server.hits == 2

    # Rate limit: an unknown kid right after a refresh is refused at once, nothing fetched.
    with pytest.raises(AuthError) as info:
        v.verify_now(token("rsa-3"))
    assert info.value.reason is Reason.UNKNOWN_KID
    assert server.hits == 2
    clock.advance(5)
    with pytest.raises(AuthError) as info:                 # fetched again, still unknown
        await v.verify(token("rsa-3"))
    assert info.value.reason is Reason.UNKNOWN_KID
    assert server.hits == 3

    # Outage: the server goes away; known keys keep working, unknown ones fail closed.
    await upstreams.close()
    upstreams.servers.clear()
    clock.advance(3600)                                    # long past max-age
    assert not await ks.refresh()                          # the background refresh fails...
    assert v.verify_now(token("rsa-1", sub="bob")) is not None   # ...known keys still verify
    assert v.verify_now(token("rsa-2", sub="carol")) is not None
    clock.advance(5)
    with pytest.raises(AuthError) as info:
        await v.verify(token("ec-9"))
    assert info.value.reason is Reason.UNKNOWN_KID


async def test_error_status_and_oversized_bodies_are_failed_fetches(
        upstreams: Upstreams, fetchers: Any) -> None:
    server = JwksServer(*(f"rsa-{i}" for i in range(3)))
    url = await serve(upstreams, server)
    broken = HttpJwksFetcher(url.replace("/.well-known/jwks.json", "/broken"))
    small = HttpJwksFetcher(url, max_bytes=1024)
    fetchers.extend([broken, small])
    with pytest.raises(OSError, match="HTTP 503"):
        await broken()
    with pytest.raises(OSError, match=r"too large|larger than"):
        await small()
    ks = KeySet(fetch=broken, source=JwksSource(url=url), clock=FakeClock(0.0))
    assert not await ks.refresh() and ks.keys == ()


async def test_runtime_fetches_at_start_and_stops_cleanly(upstreams: Upstreams) -> None:
    server = JwksServer("rsa-1")
    url = await serve(upstreams, server)
    runtime = AuthRuntime(AuthConfig(providers=(provider(url),)))
    try:
        await runtime.start()
        assert server.hits == 1
        assert runtime.verifier.verify_now(token("rsa-1")) is not None
    finally:
        await runtime.aclose()


async def test_runtime_starts_even_when_the_endpoint_is_down(upstreams: Upstreams) -> None:
    server = JwksServer("rsa-1")
    url = (await serve(upstreams, server)).replace("/.well-known/jwks.json", "/broken")
    runtime = AuthRuntime(AuthConfig(providers=(provider(url),)))
    try:
        await runtime.start()
        with pytest.raises(AuthError) as info:
            runtime.verifier.verify_now(token("rsa-1"))    # rate-limited: refused at once
        assert info.value.reason is Reason.UNKNOWN_KID
    finally:
        await runtime.aclose()
