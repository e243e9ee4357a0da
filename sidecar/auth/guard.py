"""The JWT step of one route, built once from its `RouteAuth`: the data plane's one handle.

    guard = RouteGuard(runtime.verifier, route_auth)           # at config (re)load
    ...
    token = guard.find(headers, target)       # AuthError(MISSING_TOKEN) when required
    verified = None
    if token is not None:
        verified = guard.verify_now(token)    # plain call; a cached token: a dict lookup
        if verified is None:                  # unknown kid: the only suspension
            verified = await guard.verify(token)
    headers = guard.forward(headers, verified)   # client's x-auth-* out, claims in

or, on the data plane, all of it but the wait in one call: `guard.admit(head)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import RouteAuth, TokenLocation
from .errors import AuthError, Reason
from .token import HeaderToken, find_token
from .verifier import Verified, Verifier

if TYPE_CHECKING:
    from ..protocol.events import RequestHead

__all__ = ["RouteGuard"]

Header = tuple[bytes, bytes]


class RouteGuard:
    def __init__(self, verifier: Verifier, route: RouteAuth) -> None:
        self.verifier = verifier
        self._cache = verifier.cache
        self._claims = verifier.claim_headers
        self.required = route.required
        # In config order: with several, the token's `iss` picks the first that matches.
        self.providers = tuple(p.name for p in verifier.config.providers
                               if not route.providers or p.name in route.providers)
        locations: list[TokenLocation] = []
        for p in verifier.config.providers:
            if p.name in self.providers and p.location not in locations:
                locations.append(p.location)
        self.locations = tuple(locations)
        # The common case, one header (`Authorization: Bearer`) that is no claim header:
        # its bytes made here, once, and one pass over a request's headers finds both the
        # token and any claim header the client sent.
        only = locations[0] if len(locations) == 1 else None
        self._header = HeaderToken(only, self._claims.names) \
            if only is not None and only.kind == "header" \
            and only.name.encode() not in self._claims.names else None

    def find(self, headers: Sequence[Header], target: bytes) -> str | None:
        header = self._header
        token = header.scan(headers)[0] if header is not None \
            else find_token(self.locations, headers, target)
        if token is None and self.required:
            raise AuthError(Reason.MISSING_TOKEN, "no token")
        return token

    def admit(self, head: RequestHead) -> Verified | str | None:
        """`find`, `verify_now` and `forward` on a request head in one call: the data plane's.

        Answers the verified token (`head.headers` forwarded with its claims), None (no
        token, none required: forwarded without claims), or the token itself when its key
        must be fetched first (head untouched: `await verify(token)`, then `forward`).
        Raises AuthError as those do, the head untouched."""
        headers = head.headers
        header = self._header
        if header is None:   # a cookie, a query parameter, several places
            token, claimed = find_token(self.locations, headers, head.target), True
        else:
            token, claimed = header.scan(headers)
        verified = None
        if token is not None:
            # A token verified before, for a provider this route accepts, is answered
            # here: `verify_now` does the same, but it is not compiled, and a call into
            # it cost more than the rest of the guard.
            verified = self._cache.get(token)
            if verified is None or verified.provider not in self.providers:
                verified = self.verifier.verify_now(token, self.providers)
                if verified is None:
                    return token
        elif self.required:
            raise AuthError(Reason.MISSING_TOKEN, "no token")
        rendered = verified.headers if verified is not None else ()
        # Without a claim header from the client, nothing to strip: no filtering copy.
        head.headers = self._claims.apply(headers, rendered) if claimed \
            else [*headers, *rendered]
        return verified

    def verify_now(self, token: str) -> Verified | None:
        return self.verifier.verify_now(token, self.providers)

    async def verify(self, token: str) -> Verified:
        return await self.verifier.verify(token, self.providers)

    def forward(self, headers: Sequence[Header], verified: Verified | None) -> list[Header]:
        return self._claims.apply(headers, verified.headers if verified is not None else ())
