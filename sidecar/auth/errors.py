"""Why a request failed authentication: one typed error with a reason, mapped once at the edge.

Every `AuthError` becomes `401` with `WWW-Authenticate: Bearer error="invalid_token"` (RFC
6750 §3) and the sidecar's JSON error envelope; a missing token gets the bare challenge
(`Bearer realm=...`, no error code), as RFC 6750 §3.1 asks. The reason and detail are for
the log and metrics, never for the response body: telling a caller *which* check failed
helps an attacker more than a client.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["AuthError", "Reason"]


class Reason(Enum):
    MISSING_TOKEN = "missing_token"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"              # not three base64url parts, bad JSON, bad claim types
    ALG_NONE = "alg_none"
    ALG_NOT_ALLOWED = "alg_not_allowed"  # not pinned for the provider (incl. HS256 vs RSA keys)
    UNKNOWN_CRIT = "unknown_crit"
    UNKNOWN_KID = "unknown_kid"          # not in the key set, even after a refresh (or none allowed)
    KEY_MISMATCH = "key_mismatch"        # the key cannot verify this algorithm (RSA key, ES256...)
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"        # also: no provider of the route has this `iss`
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    AMBIGUOUS = "ambiguous"              # the token appears more than once where it is read


class AuthError(Exception):
    """The token (or its absence) is not acceptable; `reason` says why, `detail` says more."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

    def challenge(self, realm: str = "sidecar") -> str:
        """The `WWW-Authenticate` value to answer with."""
        if self.reason is Reason.MISSING_TOKEN:
            return f'Bearer realm="{realm}"'
        return f'Bearer realm="{realm}", error="invalid_token"'
