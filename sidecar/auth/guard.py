"""The JWT step of one route, built once from its `RouteAuth`: the data plane's one handle.

    guard = RouteGuard(runtime.verifier, route_auth)           # at config (re)load
    ...
    token = guard.find(headers, target)       # AuthError(MISSING_TOKEN) when required
    verified = None
    if token is not None:
        verified = guard.verify_now(token)    # plain call; a cached token costs a hash
        if verified is None:                  # unknown kid: the only suspension
            verified = await guard.verify(token)
    headers = guard.forward(headers, verified)   # client's x-auth-* out, claims in
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import RouteAuth, TokenLocation
from .errors import AuthError, Reason
from .token import find_token
from .verifier import Verified, Verifier

__all__ = ["RouteGuard"]

Header = tuple[bytes, bytes]


class RouteGuard:
    def __init__(self, verifier: Verifier, route: RouteAuth) -> None:
        self.verifier = verifier
        self.required = route.required
        # In config order: with several, the token's `iss` picks the first that matches.
        self.providers = tuple(p.name for p in verifier.config.providers
                               if not route.providers or p.name in route.providers)
        locations: list[TokenLocation] = []
        for p in verifier.config.providers:
            if p.name in self.providers and p.location not in locations:
                locations.append(p.location)
        self.locations = tuple(locations)

    def find(self, headers: Sequence[Header], target: bytes) -> str | None:
        token = find_token(self.locations, headers, target)
        if token is None and self.required:
            raise AuthError(Reason.MISSING_TOKEN, "no token")
        return token

    def verify_now(self, token: str) -> Verified | None:
        return self.verifier.verify_now(token, self.providers)

    async def verify(self, token: str) -> Verified:
        return await self.verifier.verify(token, self.providers)

    def forward(self, headers: Sequence[Header], verified: Verified | None) -> list[Header]:
        return self.verifier.claim_headers.apply(headers, verified.headers if verified else ())
