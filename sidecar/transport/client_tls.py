"""mTLS to peer sidecars: the context to connect with, and whose certificate to accept.

A peer is authenticated by its SPIFFE ID, not its host name: an endpoint of service
`portfolio` must present `spiffe://<our trust domain>/ns/<namespace>/sa/portfolio`. Any other
valid mesh certificate (a stolen address, a misrouted endpoint) fails the request with 502
`UPSTREAM_IDENTITY_MISMATCH`; the connection is never pooled.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ..identity.contexts import peer_spiffe_id

if TYPE_CHECKING:
    from ..identity.provider import IdentityProvider

__all__ = ["ClientTls"]


class ClientTls:
    __slots__ = ("namespace", "provider", "service")

    def __init__(self, provider: IdentityProvider, namespace: str, service: str) -> None:
        self.provider = provider
        self.namespace = namespace
        self.service = service

    def context(self) -> ssl.SSLContext:
        """The current client context: a rotation applies to the next connection made."""
        return self.provider.client_context()

    @property
    def expected(self) -> str:
        td = self.provider.creds.spiffe_id.trust_domain
        return f"spiffe://{td}/ns/{self.namespace}/sa/{self.service}"

    def mismatch(self, transport: Any) -> str | None:
        """Why the connected peer is not the one expected, or None when it is."""
        peer = peer_spiffe_id(transport.get_extra_info("peercert"))
        expected = self.expected
        if peer == expected:
            return None
        return f"peer presented {peer or 'no SPIFFE ID'}, expected {expected}"
