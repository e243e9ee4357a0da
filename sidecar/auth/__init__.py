"""JWT authentication and role-based access for the inbound side, as sans-IO pieces.

- `config` / `parse` / `parse_route`: frozen config (`AuthConfig`, `RouteAuth`,
  `RbacConfig`) from YAML, every problem reported with its path.
- `token.find_token`: where a request carries its token; `token.HeaderToken`: the
  common case (one header), read once per distinct header value.
- `verifier.Verifier`: `verify_now(token)` (plain call, cached) and `await verify(token)`
  (only when a key set must be refreshed first); failures raise `AuthError(reason)`.
- `jwks.KeySet`: a provider's keys, refreshed (rate-limited, single flight) from a URL
  by `fetch.HttpJwksFetcher`; `runtime.AuthRuntime` builds and runs them from config.
- `claims.ClaimHeaders`: claims to `x-auth-*` headers, client copies stripped first.
- `guard.RouteGuard`: one route's JWT step (find, verify, forward; `admit` does all
  three at once on the data plane); start here.
- `rbac.Rbac`: first-match rules over method, path, roles, scopes and peer identity.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# Loaded on first use, so that importing one submodule (the config models, which
# sidecar.config imports) does not pull in the rest (PyJWT, aiohttp, redis).
_WHERE = {
    "AuthConfig": "config",
    "AuthError": "errors",
    "AuthRuntime": "runtime",
    "ClaimHeaders": "claims",
    "Decision": "rbac",
    "HeaderToken": "token",
    "HttpJwksFetcher": "fetch",
    "JwksError": "jwks",
    "JwksResponse": "jwks",
    "JwksSource": "config",
    "JwtProvider": "config",
    "Key": "jwks",
    "KeySet": "jwks",
    "Rbac": "rbac",
    "RbacConfig": "config",
    "RbacRule": "config",
    "Reason": "errors",
    "RouteAuth": "config",
    "RouteGuard": "guard",
    "TokenLocation": "config",
    "Verified": "verifier",
    "Verifier": "verifier",
    "find_token": "token",
    "parse_auth": "parse",
    "parse_jwks": "jwks",
    "parse_rbac": "parse_route",
    "read_auth": "parse",
    "read_rbac": "parse_route",
    "read_route_auth": "parse_route",
}

__all__ = [
    "AuthConfig",
    "AuthError",
    "AuthRuntime",
    "ClaimHeaders",
    "Decision",
    "HeaderToken",
    "HttpJwksFetcher",
    "JwksError",
    "JwksResponse",
    "JwksSource",
    "JwtProvider",
    "Key",
    "KeySet",
    "Rbac",
    "RbacConfig",
    "RbacRule",
    "Reason",
    "RouteAuth",
    "RouteGuard",
    "TokenLocation",
    "Verified",
    "Verifier",
    "find_token",
    "parse_auth",
    "parse_jwks",
    "parse_rbac",
    "read_auth",
    "read_rbac",
    "read_route_auth",
]


__getattr__ = lazy_exports(__name__, _WHERE)
