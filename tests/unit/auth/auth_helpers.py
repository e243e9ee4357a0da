"""Real keys and real signed tokens for the auth tests (keys made once per process)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sidecar.auth import AuthConfig, JwksSource, JwtProvider, KeySet, Verifier, parse_jwks
from sidecar.testing.clock import FakeClock

ISSUER = "https://id.example.test/"
AUDIENCE = "orders"
NOW = 1_700_000_000.0
SECRET = "s" * 40

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@functools.cache
def rsa_key(name: str = "a") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1() if curve == "P-256" else ec.SECP384R1())


@functools.cache
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def jwk(private: PrivateKey, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        out: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        out = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        out = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        out["kid"] = kid
    if alg is not None:
        out["alg"] = alg
    return out


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
                            "roles": ["reader", "writer"], "iat": int(NOW), "exp": int(NOW) + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(private: PrivateKey | str, alg: str = "RS256", kid: str | None = "k1",
         headers: dict[str, Any] | None = None, **over: Any) -> str:
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(claims(**over), private, algorithm=alg, headers=h)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token put together by hand: what an attacker sends, not what PyJWT would make."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = forge(header, payload).rsplit(".", 1)[0]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def provider(**over: Any) -> JwtProvider:
    base: dict[str, Any] = dict(name="corp", issuer=ISSUER, audiences=(AUDIENCE,),
                                algorithms=("RS256", "ES256", "EdDSA"),
                                jwks=JwksSource(inline="{}"), leeway_s=30.0)
    base.update(over)
    return JwtProvider(**base)


def static_keyset(*jwks: dict[str, Any]) -> KeySet:
    keys, skipped = parse_jwks({"keys": list(jwks)})
    assert not skipped, skipped
    return KeySet(keys)


def verifier(keyset: KeySet | None = None, clock: FakeClock | None = None,
             providers: tuple[JwtProvider, ...] | None = None, secrets: dict[str, bytes] | None = None,
             **cfg: Any) -> Verifier:
    provs = providers or (provider(),)
    ks = keyset if keyset is not None else static_keyset(jwk(rsa_key(), "k1"))
    config = AuthConfig(providers=provs, **cfg)
    return Verifier(config, {p.name: ks for p in provs if p.jwks is not None}, secrets,
                    clock or FakeClock(NOW))
