"""Key sets: JWKS parsing, cache lifetime, rate-limited single-flight refresh, stale keys
kept when the endpoint is down. A fake fetch and a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from auth_helpers import NOW, ec_key, jwk, rsa_key, sign, verifier
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.auth import AuthError, JwksError, JwksResponse, JwksSource, KeySet, Reason, parse_jwks
from sidecar.auth.fetch import max_age
from sidecar.testing.clock import FakeClock


class FakeFetch:
    """Answers with `self.keys` (or raises `self.error`); `gate` holds a fetch in flight."""

    def __init__(self, *keys: dict[str, Any], max_age_s: float | None = None) -> None:
        self.keys = list(keys)
        self.max_age_s = max_age_s
        self.error: Exception | None = None
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> JwksResponse:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        body = json.dumps({"keys": self.keys}).encode()
        return JwksResponse(body, self.max_age_s)


def remote(fetch: FakeFetch, clock: FakeClock, **src: Any) -> KeySet:
    return KeySet(fetch=fetch, source=JwksSource(url="https://id.test/jwks", **src), clock=clock)


# -- parsing --------------------------------------------------------------------------------

def test_parse_keeps_signing_keys_and_says_why_others_were_skipped() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_jwk = jwk(rsa_key(), "priv")
    private_jwk.update({"d": "AQAB"})      # not a real private key: PyJWK must refuse it...
    keys, skipped = parse_jwks({"keys": [
        jwk(rsa_key(), "r1"), jwk(ec_key(), "e1", "ES256"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**jwk(rsa_key(), "enc"), "use": "enc"},
        jwk(small, "small"),
        {**jwk(rsa_key(), "dup")}, {**jwk(ec_key(), "dup")},
        {**jwk(rsa_key(), "weird"), "alg": "RSA-OAEP"},
        "not a key",
        private_jwk,
    ]})
    assert [k.kid for k in keys] == ["r1", "e1", "dup"]
    text = "\n".join(skipped)
    for expected in ("symmetric", "'enc'", "1024 bits", "appears twice", "RSA-OAEP",
                     "not an object", "not a usable key"):
        assert expected in text
    assert len(skipped) == 7


def test_a_private_jwk_contributes_only_its_public_key() -> None:
    from jwt.algorithms import RSAAlgorithm
    full: dict[str, Any] = RSAAlgorithm.to_jwk(rsa_key(), as_dict=True)
    (key,), _ = parse_jwks({"keys": [{**full, "kid": "p"}]})
    assert isinstance(key.key, rsa.RSAPublicKey)


@pytest.mark.parametrize("doc", [b"not json", b"[]", b'{"keys": {}}', "{}"])
def test_parse_refuses_what_is_no_jwks(doc: bytes | str) -> None:
    with pytest.raises(JwksError):
        parse_jwks(doc)


def test_alg_pinned_in_the_jwk_limits_what_the_key_verifies() -> None:
    (key,), _ = parse_jwks({"keys": [jwk(rsa_key(), "k", "RS256")]})
    assert key.can_verify("RS256")
    assert not key.can_verify("RS512") and not key.can_verify("ES256")


@pytest.mark.parametrize(("header", "expected"), [
    ("max-age=600", 600.0), ("public, max-age=60, must-revalidate", 60.0),
    ("no-cache", 0.0), ("no-store, max-age=600", 0.0), ("private", None), (None, None),
    ("s-maxage=10", None), ('max-age="30"', 30.0)])
def test_cache_control(header: str | None, expected: float | None) -> None:
    assert max_age(header) == expected


# -- lifetime and refresh --------------------------------------------------------------------

async def test_first_refresh_installs_keys_and_honours_max_age() -> None:
    clock = FakeClock(100.0)
    ks = remote(FakeFetch(jwk(rsa_key(), "k1"), max_age_s=120), clock)
    assert not ks.keys and ks.refresh_due_at == float("-inf")
    assert await ks.refresh()
    assert [k.kid for k in ks.keys] == ["k1"]
    assert ks.refresh_due_at == 220.0


@pytest.mark.parametrize(("max_age_s", "src", "due_in"), [
    (None, {}, 300.0),                                  # no Cache-Control: default_ttl
    (10**7, {}, 86400.0),                               # clamped to max_ttl
    (0.0, {}, 30.0),                                    # no-cache: not below min_ttl
    (10.0, {"min_ttl_s": 5.0}, 10.0),
    (1.0, {"min_ttl_s": 0.0}, 5.0),                     # never below the refresh interval
    (120, {"ttl_s": 1.0}, 5.0),
    (120, {"ttl_s": 30.0}, 30.0),                       # a configured TTL wins
    (None, {"default_ttl_s": 60.0}, 60.0),
])
async def test_cache_lifetime(max_age_s: float | None, src: dict[str, Any], due_in: float) -> None:
    clock = FakeClock(0.0)
    ks = remote(FakeFetch(jwk(rsa_key(), "k1"), max_age_s=max_age_s), clock, **src)
    await ks.refresh()
    assert ks.refresh_due_at == due_in


async def test_refresh_is_rate_limited() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, clock, min_refresh_interval_s=5.0)
    assert await ks.refresh()
    clock.advance(4.9)
    assert not ks.can_refresh()
    assert not await ks.refresh()
    assert fetch.calls == 1
    clock.advance(0.1)
    assert ks.can_refresh() and await ks.refresh()
    assert fetch.calls == 2


async def test_concurrent_refreshes_share_one_fetch_and_known_keys_keep_serving() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, clock)
    await ks.refresh()
    clock.advance(10)
    fetch.keys.append(jwk(ec_key(), "k2"))
    fetch.gate = asyncio.Event()
    waiters = [asyncio.ensure_future(ks.refresh()) for _ in range(3)]
    await asyncio.sleep(0)
    assert ks.find("k1", "RS256") and not ks.find("k2", "ES256")   # in flight: old keys serve
    assert ks.can_refresh()                                          # joining is allowed
    fetch.gate.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert fetch.calls == 2
    assert ks.find("k2", "ES256")


async def test_a_waiter_giving_up_does_not_cancel_the_refresh_for_others() -> None:
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    fetch.gate = asyncio.Event()
    ks = remote(fetch, FakeClock(0.0))
    quitter = asyncio.ensure_future(ks.refresh())
    stayer = asyncio.ensure_future(ks.refresh())
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await stayer
    assert quitter.cancelled()
    assert ks.find("k1", "RS256")


async def test_failed_refresh_keeps_the_known_keys_and_retries_later() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, clock)
    await ks.refresh()
    clock.advance(400)
    fetch.error = ConnectionRefusedError("down")
    assert not await ks.refresh()
    assert ks.find("k1", "RS256")
    assert ks.refresh_due_at == 430.0                # retried 30 s later
    fetch.error = None
    fetch.keys = [{"kty": "oct", "k": "c2VjcmV0"}]   # no usable key: a failure too
    clock.advance(30)
    assert not await ks.refresh()
    assert [k.kid for k in ks.keys] == ["k1"]


async def test_a_document_that_is_no_jwks_keeps_the_known_keys() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, clock)
    await ks.refresh()
    clock.advance(10)

    async def broken() -> JwksResponse:
        return JwksResponse(b"<html>oops</html>", None)
    ks._fetch = broken
    assert not await ks.refresh()
    assert [k.kid for k in ks.keys] == ["k1"]


async def test_removed_key_is_announced_added_key_is_not() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, clock)
    heard: list[str] = []
    ks.on_removed.append(lambda: heard.append("removed"))
    await ks.refresh()
    clock.advance(10)
    fetch.keys.append(jwk(ec_key(), "k2"))
    await ks.refresh()
    assert heard == []
    clock.advance(10)
    fetch.keys = fetch.keys[1:]
    await ks.refresh()
    assert heard == ["removed"]


async def test_background_refresh_sleeps_until_the_cache_lifetime_ends() -> None:
    clock = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"), max_age_s=60)
    ks = remote(fetch, clock)
    slept: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise Stop
        clock.advance(seconds)
    fetch_errors = iter([None, ConnectionError("down"), None])

    async def flaky() -> JwksResponse:
        fetch.error = next(fetch_errors)
        return await fetch()
    ks._fetch = flaky
    with pytest.raises(Stop):
        await ks.run(sleep)
    # fetch now → wait 60 (max-age) → fetch fails → wait 30 (retry) → ...
    assert slept == [60.0, 30.0, 60.0]
    assert fetch.calls == 3


# -- the verifier over a URL key set ---------------------------------------------------------

async def test_rotation_unknown_kid_refreshes_then_verifies() -> None:
    mono = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, mono)
    await ks.refresh()
    v = verifier(ks)
    mono.advance(10)
    fetch.keys.append(jwk(rsa_key("b"), "k2"))
    token = sign(rsa_key("b"), kid="k2")
    assert v.verify_now(token) is None               # must wait for a refresh
    got = await v.verify(token)
    assert got.claims["sub"] == "alice"
    assert v.verify_now(token) is got                # and now it is cached
    assert fetch.calls == 2


async def test_unknown_kid_fails_closed_after_refresh_and_at_once_while_rate_limited() -> None:
    mono = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, mono)
    await ks.refresh()
    v = verifier(ks)
    mono.advance(10)
    with pytest.raises(AuthError) as info:
        await v.verify(sign(rsa_key("b"), kid="nope"))
    assert info.value.reason is Reason.UNKNOWN_KID and fetch.calls == 2
    # Within the interval no request waits and nothing is fetched: a plain, immediate refusal.
    with pytest.raises(AuthError) as info:
        v.verify_now(sign(rsa_key("b"), kid="other"))
    assert info.value.reason is Reason.UNKNOWN_KID and fetch.calls == 2


async def test_endpoint_down_known_keys_work_unknown_fail_closed() -> None:
    mono = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"))
    ks = remote(fetch, mono)
    await ks.refresh()
    v = verifier(ks, clock=FakeClock(NOW))
    fetch.error = ConnectionRefusedError("down")
    mono.advance(10_000)                             # long past the cache lifetime
    assert v.verify_now(sign(rsa_key(), sub="bob")) is not None
    with pytest.raises(AuthError) as info:
        await v.verify(sign(rsa_key("b"), kid="k9"))
    assert info.value.reason is Reason.UNKNOWN_KID


async def test_withdrawn_key_empties_the_verified_token_cache() -> None:
    mono = FakeClock(0.0)
    fetch = FakeFetch(jwk(rsa_key(), "k1"), jwk(rsa_key("b"), "k2"))
    ks = remote(fetch, mono)
    await ks.refresh()
    v = verifier(ks)
    token = sign(rsa_key(), kid="k1")
    assert v.verify_now(token) is not None and len(v.cache) == 1
    mono.advance(10)
    fetch.keys = fetch.keys[1:]
    await ks.refresh()
    assert len(v.cache) == 0
    with pytest.raises(AuthError) as info:
        await v.verify(token)
    assert info.value.reason is Reason.UNKNOWN_KID
