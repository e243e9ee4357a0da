"""JWT verification with pinned algorithms, keys by `kid`, and a cache of verified tokens.

How it works
------------
`verify_now(token)` is the hot path and a plain call: a token seen before (same SHA-256,
not expired) is answered from the cache; a new one is parsed, checked and verified with
PyJWT against the keys at hand (a CPU-bound call, no waiting). It returns `Verified`,
raises `AuthError`, or returns None in exactly one case: the token names a key the set
does not hold and the set may refresh now. Only then does the caller `await
verify(token)`, which refreshes the key set (rate-limited, shared) and tries once more;
an unknown `kid` then fails closed.

Checks, in order (the first failing one is the reason): size; three base64url parts of
JSON objects; the provider (by `iss` when the route accepts several); `alg` is not
`none` and is pinned for the provider; no `crit` (no extension is supported); a key that
can verify `alg` (HS256: only the configured secret, never a JWKS key, so an RSA public
key can never be used as an HMAC secret); the signature, `iss`, `aud` and required
claims (PyJWT); then `exp`, `nbf`, `iat` against the injected clock, with leeway.
Header parameters that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are never followed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.types import Options

from .cache import TokenCache
from .claims import ClaimHeaders
from .config import AuthConfig, JwtProvider
from .errors import AuthError, Reason
from .jwks import KeySet

__all__ = ["Verified", "Verifier"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ERRORS: tuple[tuple[type[Exception], Reason], ...] = (
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE),   # before DecodeError, its base
    (jwt.DecodeError, Reason.MALFORMED),
    (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, Reason.WRONG_ISSUER),
    (jwt.InvalidAlgorithmError, Reason.ALG_NOT_ALLOWED),
    (jwt.InvalidKeyError, Reason.KEY_MISMATCH),
)
_MISSING_CLAIM = {"aud": Reason.WRONG_AUDIENCE, "iss": Reason.WRONG_ISSUER}


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token, as the cache keeps it: everything derived from its claims that a
    request needs is made once, here or on first use, and served with every cache hit."""

    provider: str
    claims: Mapping[str, Any]
    headers: tuple[tuple[bytes, bytes], ...]   # the claim headers for the app
    expires_at: float                          # exp + leeway: the cache answers until then
    subject: str | None = field(init=False)    # `sub` when a string: rate limits by consumer
    # Decisions that depend on the claims alone, kept by the step that makes them (RBAC:
    # per rule, keyed by the rule's own values): the claims never change, nor do they.
    memo: dict[Hashable, Any] = field(init=False, default_factory=dict, repr=False,
                                      compare=False)

    def __post_init__(self) -> None:
        sub = self.claims.get("sub")
        object.__setattr__(self, "subject", sub if isinstance(sub, str) else None)


class Verifier:
    def __init__(self, config: AuthConfig, keysets: Mapping[str, KeySet],
                 secrets: Mapping[str, bytes] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.keysets = dict(keysets)
        self.secrets = dict(secrets or {})
        self.claim_headers = ClaimHeaders(config.claim_headers)
        self._max_token_bytes = config.max_token_bytes
        self.cache: TokenCache[Verified] = TokenCache(config.cache_size, clock)
        self._clock = clock
        self._providers = {p.name: p for p in config.providers}
        for keyset in self.keysets.values():
            keyset.on_removed.append(self.cache.clear)   # a key withdrawn: re-verify all

    def verify_now(self, token: str, providers: Collection[str] = ()) -> Verified | None:
        """Verified, or AuthError raised; None: the key is unknown, `await verify()`."""
        if len(token) > self._max_token_bytes:
            raise AuthError(Reason.TOO_LARGE, f"{len(token)} bytes")
        hit = self.cache.get(token)
        if hit is not None and (not providers or hit.provider in providers):
            return hit
        out = self._verify(token, providers, may_wait=True)
        return out if isinstance(out, Verified) else None

    async def verify(self, token: str, providers: Collection[str] = ()) -> Verified:
        """`verify_now`, and when it cannot decide, a key set refresh and one more try."""
        got = self.verify_now(token, providers)
        if got is not None:
            return got
        pending = self._verify(token, providers, may_wait=True)
        if isinstance(pending, KeySet):
            await pending.refresh()
        out = self._verify(token, providers, may_wait=False)
        assert isinstance(out, Verified)
        return out

    def _verify(self, token: str, providers: Collection[str], may_wait: bool) -> Verified | KeySet:
        header, payload = _parse(token)
        provider = self._provider(payload, providers)
        alg = _check_header(header, provider)
        kid = header.get("kid")
        if alg == "HS256":
            keys: list[Any] = [self.secrets[provider.name]]
        else:
            keyset = self.keysets[provider.name]
            found = keyset.find(kid, alg)
            if not found:
                if may_wait and keyset.can_refresh():
                    return keyset
                raise AuthError(Reason.UNKNOWN_KID, f"no key {kid!r} for {provider.name}")
            if not found[0].can_verify(alg):
                raise AuthError(Reason.KEY_MISMATCH, f"key {kid!r} cannot verify {alg}")
            keys = [k.key for k in found]
        claims = self._decode(token, provider, alg, keys)
        verified = Verified(provider=provider.name, claims=claims,
                            headers=self.claim_headers.render(claims),
                            expires_at=self._check_times(claims, provider.leeway_s))
        self.cache.put(token, verified)
        return verified

    def _provider(self, payload: Mapping[str, Any], names: Collection[str]) -> JwtProvider:
        candidates = [self._providers[n] for n in names] if names else list(self._providers.values())
        if len(candidates) == 1:
            return candidates[0]     # a wrong `iss` is then reported by the issuer check
        iss = payload.get("iss")
        for p in candidates:
            if p.issuer == iss:
                return p
        raise AuthError(Reason.WRONG_ISSUER, f"no provider for issuer {iss!r}")

    def _decode(self, token: str, provider: JwtProvider, alg: str, keys: list[Any]) -> dict[str, Any]:
        options: Options = {
            # Times are checked in _check_times with the injected clock, after the signature.
            "verify_exp": False, "verify_nbf": False, "verify_iat": False,
            "verify_aud": bool(provider.audiences),
            "require": list(provider.required_claims),
            "enforce_minimum_key_length": True,
        }
        error: AuthError | None = None
        for key in keys:     # several only for a token without `kid`
            try:
                # `alg` is the header's, but already checked against the pinned list and
                # the key's type: passing just it keeps PyJWT to that one algorithm.
                return jwt.decode(token, key, algorithms=[alg], options=options,
                                  audience=list(provider.audiences) or None,
                                  issuer=provider.issuer, leeway=provider.leeway_s)
            except jwt.MissingRequiredClaimError as exc:
                raise AuthError(_MISSING_CLAIM.get(exc.claim, Reason.MISSING_CLAIM),
                                f"no {exc.claim!r} claim") from None
            except jwt.PyJWTError as exc:
                reason = next((r for t, r in _ERRORS if isinstance(exc, t)), Reason.MALFORMED)
                error = AuthError(reason, str(exc))
                if reason is not Reason.BAD_SIGNATURE:
                    raise error from None
        assert error is not None
        raise error

    def _check_times(self, claims: Mapping[str, Any], leeway: float) -> float:
        now = self._clock()
        exp, nbf, iat = (_number(claims, c) for c in ("exp", "nbf", "iat"))
        if exp is not None and now >= exp + leeway:
            raise AuthError(Reason.EXPIRED, f"expired {now - exp:.0f}s ago")
        if nbf is not None and nbf > now + leeway:
            raise AuthError(Reason.NOT_YET_VALID, f"valid in {nbf - now:.0f}s")
        if iat is not None and iat > now + leeway:
            raise AuthError(Reason.NOT_YET_VALID, f"issued {iat - now:.0f}s in the future")
        return exp + leeway if exp is not None else now   # no exp: not cached


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(Reason.MALFORMED, f"{name} is not a number")
    return float(value)


def _check_header(header: Mapping[str, Any], provider: JwtProvider) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise AuthError(Reason.MALFORMED, "no alg")
    if alg.lower() == "none":
        raise AuthError(Reason.ALG_NONE, "unsigned token")
    if alg not in provider.algorithms:
        raise AuthError(Reason.ALG_NOT_ALLOWED, f"{alg} is not pinned for {provider.name}")
    if "crit" in header:
        raise AuthError(Reason.UNKNOWN_CRIT, f"crit {header['crit']!r}")
    if "kid" in header and not isinstance(header["kid"], str):
        raise AuthError(Reason.MALFORMED, "kid is not a string")
    return alg


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError(Reason.MALFORMED, f"{len(parts)} parts, a JWS has 3")
    if not all(_B64URL.fullmatch(p) for p in parts):
        raise AuthError(Reason.MALFORMED, "not base64url")
    return _json_part(parts[0], "header"), _json_part(parts[1], "payload")


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise AuthError(Reason.MALFORMED, f"{what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise AuthError(Reason.MALFORMED, f"{what} is not a JSON object")
    return value
