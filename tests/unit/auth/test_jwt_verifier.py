"""Token verification with real keys and real signatures: what passes, and every way to fail."""

from __future__ import annotations

import json
from typing import Any

import pytest
from auth_helpers import (
    AUDIENCE,
    NOW,
    SECRET,
    b64,
    claims,
    ec_key,
    ed_key,
    forge,
    hs256,
    jwk,
    provider,
    rsa_key,
    sign,
    static_keyset,
    verifier,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sidecar.auth import AuthError, Reason, Verified
from sidecar.testing.clock import FakeClock


def rejects(reason: Reason, token: str, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier(**kw).verify_now(token)
    assert info.value.reason is reason, info.value
    return info.value


# -- what passes ---------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256"])
def test_rsa_algorithms_verify_when_pinned(alg: str) -> None:
    v = verifier(providers=(provider(algorithms=(alg,)),))
    got = v.verify_now(sign(rsa_key(), alg))
    assert isinstance(got, Verified)
    assert got.claims["sub"] == "alice" and got.provider == "corp"


@pytest.mark.parametrize(("alg", "key", "curve"), [
    ("ES256", "ec", "P-256"), ("ES384", "ec", "P-384"), ("EdDSA", "ed", "")])
def test_ec_and_eddsa_verify(alg: str, key: str, curve: str) -> None:
    private = ec_key(curve) if key == "ec" else ed_key()
    v = verifier(static_keyset(jwk(private, "k1")), providers=(provider(algorithms=(alg,)),))
    got = v.verify_now(sign(private, alg))
    assert got is not None and got.claims["aud"] == AUDIENCE


def test_hs256_with_the_configured_secret() -> None:
    p = provider(algorithms=("HS256",), jwks=None, secret=SECRET)
    v = verifier(providers=(p,), secrets={"corp": SECRET.encode()})
    got = v.verify_now(sign(SECRET, "HS256"))
    assert got is not None and got.claims["sub"] == "alice"


def test_claims_become_headers() -> None:
    got = verifier().verify_now(sign(rsa_key()))
    assert got is not None
    assert got.headers == ((b"x-auth-sub", b"alice"), (b"x-auth-roles", b"reader,writer"))


def test_token_without_kid_is_tried_against_keys_that_fit_its_alg() -> None:
    other = rsa_key("other")
    ks = static_keyset(jwk(other, None), jwk(ec_key(), None), jwk(rsa_key(), None))
    assert verifier(ks).verify_now(sign(rsa_key(), kid=None)) is not None


def test_several_providers_are_told_apart_by_issuer() -> None:
    a = provider(name="a", issuer="https://a.test/")
    b = provider(name="b", issuer="https://b.test/")
    v = verifier(providers=(a, b))
    got = v.verify_now(sign(rsa_key(), iss="https://b.test/"))
    assert got is not None and got.provider == "b"
    with pytest.raises(AuthError) as info:
        v.verify_now(sign(rsa_key(), iss="https://c.test/"))
    assert info.value.reason is Reason.WRONG_ISSUER


# -- the attacks and mistakes that must fail -----------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(alg: str) -> None:
    rejects(Reason.ALG_NONE, forge({"alg": alg, "kid": "k1"}, claims()))


def test_hs256_signed_with_the_rsa_public_key_as_secret() -> None:
    pem = rsa_key().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    token = hs256({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(), pem)
    rejects(Reason.ALG_NOT_ALLOWED, token)
    # Even where HS256 is allowed, only the configured secret verifies it, never a JWKS key.
    p = provider(algorithms=("RS256", "HS256"), secret=SECRET)
    rejects(Reason.BAD_SIGNATURE, token, providers=(p,), secrets={"corp": SECRET.encode()})


def test_algorithm_not_pinned() -> None:
    rejects(Reason.ALG_NOT_ALLOWED, sign(rsa_key(), "RS512"))


def test_key_of_another_type_than_the_alg() -> None:
    ks = static_keyset(jwk(ec_key(), "k1"))
    rejects(Reason.KEY_MISMATCH, sign(rsa_key(), "RS256"), keyset=ks)


def test_unknown_kid_with_a_static_key_set() -> None:
    rejects(Reason.UNKNOWN_KID, sign(rsa_key(), kid="nope"))


def test_bad_signature() -> None:
    rejects(Reason.BAD_SIGNATURE, sign(rsa_key("mallory")))


def test_tampered_payload() -> None:
    header, _, signature = sign(rsa_key()).split(".")
    payload = b64(json.dumps(claims(sub="root")).encode())
    rejects(Reason.BAD_SIGNATURE, f"{header}.{payload}.{signature}")


def test_expired_beyond_leeway_but_not_within() -> None:
    rejects(Reason.EXPIRED, sign(rsa_key(), exp=int(NOW) - 31))
    assert verifier().verify_now(sign(rsa_key(), exp=int(NOW) - 29)) is not None


def test_not_yet_valid_beyond_leeway_but_not_within() -> None:
    rejects(Reason.NOT_YET_VALID, sign(rsa_key(), nbf=int(NOW) + 31))
    rejects(Reason.NOT_YET_VALID, sign(rsa_key(), iat=int(NOW) + 31))
    assert verifier().verify_now(sign(rsa_key(), nbf=int(NOW) + 29)) is not None


def test_wrong_issuer() -> None:
    rejects(Reason.WRONG_ISSUER, sign(rsa_key(), iss="https://evil.test/"))
    rejects(Reason.WRONG_ISSUER, sign(rsa_key(), iss=None))


def test_wrong_or_missing_audience() -> None:
    rejects(Reason.WRONG_AUDIENCE, sign(rsa_key(), aud="payments"))
    rejects(Reason.WRONG_AUDIENCE, sign(rsa_key(), aud=None))


def test_unknown_crit_header() -> None:
    token = sign(rsa_key(), headers={"crit": ["urn:example:ext"], "urn:example:ext": 1})
    rejects(Reason.UNKNOWN_CRIT, token)


def test_missing_required_claim() -> None:
    p = provider(required_claims=("exp", "sub"))
    rejects(Reason.MISSING_CLAIM, sign(rsa_key(), sub=None), providers=(p,))
    rejects(Reason.MISSING_CLAIM, sign(rsa_key(), exp=None))   # exp is required by default


@pytest.mark.parametrize("token", [
    "abc!.def.ghi",                                            # not base64url
    b64(b"{not json") + "." + b64(b"{}") + ".sig",             # header not JSON
    b64(b'{"alg":"RS256"}') + "." + b64(b"[1,2]") + ".sig",    # payload not an object
    "only.two",                                                # not three parts
    "a.b.c.d.e",                                               # JWE compact: not supported
    "",
])
def test_malformed(token: str) -> None:
    rejects(Reason.MALFORMED, token)


def test_claim_of_the_wrong_type_is_malformed() -> None:
    rejects(Reason.MALFORMED, sign(rsa_key(), exp="tomorrow"))


def test_oversized_token_is_refused_before_parsing() -> None:
    token = sign(rsa_key(), padding="x" * 9000)
    err = rejects(Reason.TOO_LARGE, token)
    assert "bytes" in err.detail
    assert verifier(max_token_bytes=16384).verify_now(token) is not None


def test_error_challenges() -> None:
    assert AuthError(Reason.EXPIRED).challenge() == 'Bearer realm="sidecar", error="invalid_token"'
    assert AuthError(Reason.MISSING_TOKEN).challenge("orders") == 'Bearer realm="orders"'


# -- the verified-token cache --------------------------------------------------------------

def test_a_verified_token_is_not_verified_again_until_it_expires(decodes: list[str]) -> None:
    clock = FakeClock(NOW)
    v = verifier(clock=clock)
    token = sign(rsa_key(), exp=int(NOW) + 60)
    first = v.verify_now(token)
    assert v.verify_now(token) is first
    assert len(decodes) == 1
    clock.advance(60 + 29)                      # still within exp + leeway
    assert v.verify_now(token) is first
    clock.advance(2)
    with pytest.raises(AuthError) as info:
        v.verify_now(token)
    assert info.value.reason is Reason.EXPIRED
    assert len(decodes) == 2


def test_cache_is_bounded_least_recently_used_first(decodes: list[str]) -> None:
    v = verifier(cache_size=2)
    a, b, c = (sign(rsa_key(), sub=s) for s in "abc")
    v.verify_now(a)
    v.verify_now(b)
    v.verify_now(a)          # a is now the most recently used
    v.verify_now(c)          # evicts b
    assert len(v.cache) == 2
    decodes.clear()
    v.verify_now(a)
    v.verify_now(c)
    assert decodes == []
    v.verify_now(b)
    assert decodes == [b]


def test_cached_token_is_only_served_to_routes_accepting_its_provider() -> None:
    a = provider(name="a", issuer="https://a.test/")
    b = provider(name="b", issuer="https://b.test/")
    v = verifier(providers=(a, b))
    token = sign(rsa_key(), iss="https://a.test/")
    assert v.verify_now(token, ("a",)) is not None
    with pytest.raises(AuthError) as info:
        v.verify_now(token, ("b",))
    assert info.value.reason is Reason.WRONG_ISSUER


def test_rejected_tokens_are_not_cached() -> None:
    v = verifier()
    with pytest.raises(AuthError):
        v.verify_now(sign(rsa_key("mallory")))
    assert len(v.cache) == 0


def test_tokens_without_exp_are_verified_every_time(decodes: list[str]) -> None:
    v = verifier(providers=(provider(required_claims=()),))
    token = sign(rsa_key(), exp=None)
    assert v.verify_now(token) is not None
    assert v.verify_now(token) is not None
    assert len(decodes) == 2

