"""Frozen, validated configuration for JWT authentication and RBAC (parsed in `parse.py`).

Top level `auth:` holds the providers and the claim→header mapping (`AuthConfig`); each
route says whether it needs a token and from which providers (`RouteAuth`), and carries
its own RBAC rules (`RbacConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "AuthConfig",
    "JwksSource",
    "JwtProvider",
    "RbacConfig",
    "RbacRule",
    "RouteAuth",
    "TokenLocation",
]

ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})
# HS256 only with a configured secret, never with a JWKS key: that is the RS/HS confusion.
SUPPORTED_ALGORITHMS = ASYMMETRIC_ALGORITHMS | {"HS256"}


@dataclass(frozen=True, slots=True)
class TokenLocation:
    """Where the token is read: `Authorization: Bearer <t>` unless configured otherwise."""

    kind: Literal["header", "cookie", "query"] = "header"
    name: str = "authorization"   # header names are lower-case
    prefix: str = "Bearer "       # headers only; matched case-insensitively; "" = whole value


@dataclass(frozen=True, slots=True)
class JwksSource:
    """Keys from exactly one of: a URL (fetched, cached, refreshed), a file, inline JSON."""

    url: str | None = None
    file: str | None = None
    inline: str | None = None          # the JWKS document as JSON text
    # Fixed cache lifetime; None honours the server's Cache-Control max-age, clamped to
    # [min_ttl_s, max_ttl_s] (a `no-cache` IdP must not be polled by every sidecar every
    # few seconds), and default_ttl_s when it sends none.
    ttl_s: float | None = None
    default_ttl_s: float = 300.0
    min_ttl_s: float = 30.0
    max_ttl_s: float = 86400.0
    # An unknown `kid` triggers a refresh at most this often: random kids cannot turn the
    # sidecar into a load generator against the identity provider.
    min_refresh_interval_s: float = 5.0
    timeout_s: float = 5.0
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class JwtProvider:
    name: str
    issuer: str
    audiences: tuple[str, ...] = ()       # empty: `aud` is not checked
    algorithms: tuple[str, ...] = ("RS256",)
    jwks: JwksSource | None = None
    secret: str | None = None             # HS256 only: the shared secret, or
    secret_file: str | None = None        # a file holding it (read when the sidecar starts)
    leeway_s: float = 30.0                # clock skew tolerated on exp / nbf / iat
    # Must be present; `exp` by default so that no token lives forever. Listing your own
    # replaces the default: keep `exp` in it.
    required_claims: tuple[str, ...] = ("exp",)
    location: TokenLocation = field(default_factory=TokenLocation)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    providers: tuple[JwtProvider, ...] = ()
    # claim -> header sent to the app; a dotted claim (`realm_access.roles`) reads nested
    # objects. Lists are joined with commas. These headers are always removed from the
    # client's request first, so the app can trust them.
    claim_headers: tuple[tuple[str, str], ...] = (("sub", "x-auth-sub"), ("roles", "x-auth-roles"))
    max_token_bytes: int = 8192
    cache_size: int = 10_000              # verified tokens remembered (LRU), each until its exp

    def provider(self, name: str) -> JwtProvider | None:
        return next((p for p in self.providers if p.name == name), None)


@dataclass(frozen=True, slots=True)
class RouteAuth:
    """A route's JWT requirement: `required: false` verifies a token if sent, allows none."""

    required: bool = True
    providers: tuple[str, ...] = ()       # names; empty: every configured provider
    dry_run: bool = False                 # decide, count and log; let the request through


@dataclass(frozen=True, slots=True)
class RbacRule:
    """Selects requests by method and path; an `allow` rule then requires its conditions
    (every listed kind must hold: a role, a scope, a peer), a `deny` rule refuses."""

    name: str
    action: Literal["allow", "deny"] = "allow"
    methods: frozenset[str] = frozenset()     # empty: any method
    paths: tuple[str, ...] = ()               # globs: `*` within a segment, `**` across
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    match_all: bool = False                   # roles/scopes: all listed, not any one of them
    peers: tuple[str, ...] = ()               # SPIFFE IDs; a trailing `/*` matches the subtree


@dataclass(frozen=True, slots=True)
class RbacConfig:
    rules: tuple[RbacRule, ...] = ()          # first match wins; none matching: deny
    roles_claim: str = "roles"
    scopes_claim: str = "scope"               # a space-separated string or a list
    dry_run: bool = False                     # decide and log, but let the request through
