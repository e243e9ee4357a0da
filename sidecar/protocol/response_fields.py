"""The response fields a proxy acts on, and how the response codec finds them fast.

`h1.ResponseReader` walks a response head's lines once; these tables let it skip most
lines on their first byte and name the usual spellings without a method call.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KNOWN_FIELDS", "RESPONSE_SPECIAL", "SPECIAL_FIRST"]

# The response fields the proxy must act on; all others pass through untouched.
RESPONSE_SPECIAL: Final = frozenset((
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"trailer", b"upgrade", b"proxy-authenticate",
    b"proxy-authorization", b"x-request-id"))
# Per byte: can a field name starting with it be one of those? Most lines are skipped
# on their first byte (Server, Date, Cache-Control...), before any slicing or hashing.
SPECIAL_FIRST: Final = bytes(
    1 if bytes((c,)).lower() in {n[:1] for n in RESPONSE_SPECIAL} else 0 for c in range(256))
# The usual spellings of the fields that pass the first-byte test, so that the common
# case needs no method call per field (a call on bytes is a generic one in compiled
# code): special ones to their lower case, others (Content-Type...) to b"", "not ours".
KNOWN_FIELDS: Final = {n: n.lower() for n in (b"Content-Length", b"Connection",
                                               b"Transfer-Encoding", b"Keep-Alive",
                                               b"X-Request-Id", b"X-Request-ID")}
KNOWN_FIELDS.update({v: v for v in list(KNOWN_FIELDS.values())})
KNOWN_FIELDS.update({n: b"" for name in (
    b"Content-Type", b"Cache-Control", b"Content-Encoding", b"Content-Language",
    b"Content-Location", b"Content-Range", b"Content-Disposition",
    b"Content-Security-Policy", b"Cross-Origin-Resource-Policy", b"Timing-Allow-Origin",
    b"X-Content-Type-Options", b"X-Frame-Options", b"X-Powered-By", b"X-XSS-Protection",
    b"Permissions-Policy", b"Pragma", b"Upgrade-Insecure-Requests")
    for n in (name, name.lower())})
