"""A provider's verification keys: parsed from a JWKS, kept fresh when they come from a URL.

How it works
------------
`KeySet` holds the keys by `kid`. Lookups (`find`) are plain calls and never wait.
A key set from a file or inline JSON never changes. One from a URL is given a `fetch`
coroutine function (the I/O, in `fetch.py`) and refreshes:

- in the background (`run()`, one long-lived task per key set): when the cache lifetime
  ends (the response's Cache-Control max-age, or the configured TTL), and after a failed
  fetch, again a little later;
- on demand (`refresh()`), when a token names a `kid` the set does not hold: at most once
  per `min_refresh_interval_s`; callers that arrive while a fetch is in flight share it
  (single flight), and a caller that gives up does not cancel it for the others.

A failed fetch (or a document without one usable key) changes nothing: the known keys keep verifying (stale beats down), and an
unknown `kid` fails closed. When a refresh drops a key, `on_removed` listeners hear it, so
that tokens verified with it stop being served from the verified-token cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .config import ASYMMETRIC_ALGORITHMS, JwksSource

__all__ = ["Fetch", "JwksError", "JwksResponse", "Key", "KeySet", "parse_jwks"]

log = logging.getLogger("sidecar.auth.jwks")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}
_MIN_RSA_BITS = 2048
_RETRY_AFTER_FAILURE_S = 30.0


class JwksError(ValueError):
    """The document is not a usable JWKS at all (single bad keys are skipped instead)."""


@dataclass(frozen=True, slots=True)
class JwksResponse:
    body: bytes
    max_age_s: float | None     # from Cache-Control; None when the server gave none


Fetch = Callable[[], Awaitable[JwksResponse]]


@dataclass(frozen=True, slots=True)
class Key:
    kid: str | None
    alg: str | None             # the JWK's own `alg`, when it names one
    key: PublicKey
    der: bytes                  # SubjectPublicKeyInfo: the key's identity across refreshes

    def can_verify(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        k = self.key
        if alg[:2] in ("RS", "PS"):
            return isinstance(k, rsa.RSAPublicKey)
        if alg in _CURVES:
            return isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == _CURVES[alg]
        if alg == "EdDSA":
            return isinstance(k, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        return False


def parse_jwks(doc: bytes | str | dict[str, Any]) -> tuple[tuple[Key, ...], list[str]]:
    """The usable signing keys, and why each other key was skipped."""
    if isinstance(doc, bytes | str):
        try:
            doc = json.loads(doc)
        except (ValueError, RecursionError) as exc:
            raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError("not a JWKS: expected an object with a 'keys' list")
    keys: list[Key] = []
    skipped: list[str] = []
    for i, jwk in enumerate(doc["keys"]):
        key_or_reason = _key(jwk)
        if isinstance(key_or_reason, str):
            skipped.append(f"keys[{i}]: {key_or_reason}")
        elif key_or_reason.kid is not None and any(k.kid == key_or_reason.kid for k in keys):
            skipped.append(f"keys[{i}]: kid {key_or_reason.kid!r} appears twice, first one kept")
        else:
            keys.append(key_or_reason)
    return tuple(keys), skipped


def _key(jwk: Any) -> Key | str:
    if not isinstance(jwk, dict):
        return "not an object"
    if jwk.get("use", "sig") != "sig":
        return f"use {jwk.get('use')!r} is not 'sig'"
    if jwk.get("kty") == "oct":
        return "symmetric keys are never taken from a JWKS (HS256 needs a configured secret)"
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        return "kid is not a string"
    if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
        return f"alg {alg!r} is not supported"
    try:
        key: Any = jwt.PyJWK(jwk).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        return f"not a usable key: {exc}"
    if hasattr(key, "public_key"):      # a private JWK: keep only its public half
        key = key.public_key()
    if not isinstance(key, PublicKey):
        return f"unsupported key type {type(key).__name__}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        return f"RSA key of {key.key_size} bits (at least {_MIN_RSA_BITS} needed)"
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Key(kid=kid, alg=alg, key=key, der=der)


class KeySet:
    def __init__(self, keys: Iterable[Key] = (), *, fetch: Fetch | None = None,
                 source: JwksSource | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        self.name = name
        self._fetch = fetch
        self._source = source or JwksSource()
        self._clock = clock
        self._keys: tuple[Key, ...] = ()
        self._by_kid: dict[str, Key] = {}
        self._replace(tuple(keys))
        self.on_removed: list[Callable[[], None]] = []
        self.refresh_due_at = float("-inf") if fetch is not None else float("inf")
        self.last_attempt_at: float | None = None
        self.last_success_at: float | None = None
        self._inflight: asyncio.Task[bool] | None = None

    @property
    def keys(self) -> tuple[Key, ...]:
        return self._keys

    def find(self, kid: str | None, alg: str) -> list[Key]:
        """Keys that may verify a token with this `kid` (or, without one, this `alg`)."""
        if kid is not None:
            key = self._by_kid.get(kid)
            return [key] if key is not None else []
        return [k for k in self._keys if k.can_verify(alg)]

    def can_refresh(self) -> bool:
        """Would `refresh()` fetch (or join a fetch) now, rather than return False at once?"""
        if self._fetch is None:
            return False
        if self._inflight is not None or self.last_attempt_at is None:
            return True
        return self._clock() - self.last_attempt_at >= self._source.min_refresh_interval_s

    async def refresh(self) -> bool:
        """Fetch the set again (rate-limited, single flight); True when new keys arrived."""
        task = self._inflight
        if task is None:
            if not self.can_refresh():
                return False
            self.last_attempt_at = self._clock()
            task = self._inflight = asyncio.get_running_loop().create_task(self._refresh_once())
            task.add_done_callback(self._done)
        return await asyncio.shield(task)

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Background refresh, forever: start it as one task per URL key set, cancel to stop."""
        while self._fetch is not None:
            delay = self.refresh_due_at - self._clock()
            if delay > 0:
                await sleep(delay)        # then look again: an on-demand refresh may have run
            elif self.can_refresh():
                await self.refresh()      # success or failure, it moves refresh_due_at on
            else:                         # not reachable (an attempt sets a due time at least
                await sleep(self._source.min_refresh_interval_s)  # that far off); never spin

    async def aclose(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_once(self) -> bool:
        assert self._fetch is not None
        src = self._source
        try:
            response = await asyncio.wait_for(self._fetch(), src.timeout_s)
            keys, skipped = parse_jwks(response.body)
            if not keys:    # as Envoy: an empty set is a broken answer, not a withdrawal of all
                raise JwksError("no usable signing key in the document")
        except Exception as exc:  # any failure keeps the known keys: log it, retry later
            self.refresh_due_at = self._clock() + max(
                src.min_refresh_interval_s, min(_RETRY_AFTER_FAILURE_S, src.default_ttl_s))
            log.warning("JWKS %s: refresh failed, keeping %d known keys: %s",
                        self.name, len(self._keys), str(exc) or type(exc).__name__)
            return False
        for reason in skipped:
            log.warning("JWKS %s: skipped %s", self.name, reason)
        now = self._clock()
        if src.ttl_s is not None:
            ttl = src.ttl_s
        elif response.max_age_s is None:
            ttl = src.default_ttl_s
        else:
            ttl = min(max(response.max_age_s, src.min_ttl_s), src.max_ttl_s)
        self.refresh_due_at = now + max(ttl, src.min_refresh_interval_s)
        self.last_success_at = now
        if self._replace(keys):
            for listener in list(self.on_removed):
                listener()
        return True

    def _replace(self, keys: tuple[Key, ...]) -> bool:
        """Install `keys`; True when a key that was there is gone."""
        removed = {(k.kid, k.der) for k in self._keys} - {(k.kid, k.der) for k in keys}
        self._keys = keys
        self._by_kid = {k.kid: k for k in keys if k.kid is not None}
        return bool(removed)
