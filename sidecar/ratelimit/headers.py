"""The response headers of a rate-limit decision.

`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` as in the IETF httpapi
draft (draft-ietf-httpapi-ratelimit-headers, the separate-fields form GitHub, Envoy and
Kong's `RateLimit-*` use), plus `RateLimit-Policy` naming the window (`100;w=60`), and
`Retry-After` on a refusal. All of them are about the tightest window only: a client
that obeys it obeys every window. Seconds are whole (delta-seconds), rounded up so that
a client that waits as told is not refused again.
"""

from __future__ import annotations

import math

from .decision import Decision, Source

__all__ = ["rate_limit_headers"]

Headers = list[tuple[bytes, bytes]]


def _seconds(s: float) -> bytes:
    return str(math.ceil(s - 1e-9) if s > 0 else 0).encode()


def rate_limit_headers(d: Decision) -> Headers:
    """Headers for the response to a request checked by `d`: a 429 when `d.limited` and
    enforced (with `Retry-After`), or an allowed one (names lower case, values ASCII)."""
    if d.source is Source.OPEN:  # nothing was counted: no numbers to give
        return []
    out: Headers = [
        (b"ratelimit-limit", str(d.limit).encode()),
        (b"ratelimit-remaining", str(d.remaining).encode()),
        (b"ratelimit-reset", _seconds(d.reset_s)),
        (b"ratelimit-policy", b"%d;w=%d" % (d.limit, d.window_s)),
    ]
    if not d.allowed:
        # Retry-After: 0 would invite an immediate retry that is refused again.
        out.append((b"retry-after", str(max(1, math.ceil(d.retry_after_s - 1e-9))).encode()))
    return out
