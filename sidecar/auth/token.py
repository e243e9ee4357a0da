"""Where the token is read from a request: a header (Bearer), a cookie or a query parameter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl

from .config import TokenLocation
from .errors import AuthError, Reason

__all__ = ["HeaderToken", "find_token"]

Headers = Sequence[tuple[bytes, bytes]]


def find_token(locations: Iterable[TokenLocation], headers: Headers, target: bytes) -> str | None:
    """The token at the first of `locations` that holds one; None when none does.

    `headers` are the request's (lower-case name, value) pairs, `target` its request
    target (`/path?query`). A token given twice at one location is refused (AMBIGUOUS):
    which of the two a proxy and an app would each pick is exactly how smuggling starts.
    """
    for loc in locations:
        if loc.kind == "header":
            token, _ = HeaderToken(loc).scan(headers)
        elif loc.kind == "cookie":
            token = _single(loc, [v for n, v in _cookies(headers) if n == loc.name.encode()])
        else:
            token = _single(loc, _query_values(target, loc.name))
        if token:
            return token
    return None


class HeaderToken:
    """A token read from one header after a prefix (`Authorization: Bearer <token>`), the
    bytes to look for made once: a route guard keeps one, and it is the hot path.

    `scan(headers)` answers the token, None when no such header holds one (as `find_token`
    would), and whether any other header is named in `watch` (the route's claim headers:
    the client's copies are stripped only when there are any): one pass for both. The
    last header value that held a token is kept with the token read from it, so a run of
    requests carrying one token (a keep-alive client's) reads it once.
    """

    __slots__ = ("_last", "_n", "_prefix", "name", "watch")

    def __init__(self, location: TokenLocation, watch: frozenset[bytes] = frozenset()) -> None:
        self.name = location.name.encode()
        self._prefix = location.prefix.encode().lower()  # matched case-insensitively
        self._n = len(self._prefix)
        self.watch = watch
        self._last: tuple[bytes | None, str] = (None, "")  # a header value, its token

    def scan(self, headers: Headers) -> tuple[str | None, bool]:
        name, watch = self.name, self.watch
        last_value, last_token = self._last
        known: str | None = None  # the token, when its header value is the last one's
        found = value_found = b""  # or the token as sent, and its header value
        count = 0
        watched = False
        for key, value in headers:
            if key == name:
                if value == last_value:
                    known = last_token
                    count += 1
                else:
                    token = self._after_prefix(value)
                    if token:
                        found, value_found = token, value
                        count += 1
            elif key in watch:
                watched = True
        if not count:
            return None, watched
        if count > 1:
            raise AuthError(Reason.AMBIGUOUS, f"{count} tokens in header {name.decode()!r}")
        if known is None:
            try:
                known = found.decode("ascii")
            except UnicodeDecodeError:
                raise AuthError(Reason.MALFORMED, "the token is not ASCII") from None
            self._last = (value_found, known)
        return known, watched

    def _after_prefix(self, value: bytes) -> bytes:
        """The token in one header value; b"" when it holds none (another scheme: `Basic`)."""
        value = value.strip()
        n = self._n
        if not n:
            return value
        if value[:n].lower() != self._prefix:
            return b""
        return value[n:].strip()


def _single(loc: TokenLocation, values: list[bytes]) -> str | None:
    values = [v.strip() for v in values if v.strip()]
    if not values:
        return None
    if len(values) > 1:
        raise AuthError(Reason.AMBIGUOUS, f"{len(values)} tokens in {loc.kind} {loc.name!r}")
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        raise AuthError(Reason.MALFORMED, "the token is not ASCII") from None


def _cookies(headers: Headers) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == b"cookie":
            for pair in value.split(b";"):
                k, eq, v = pair.strip().partition(b"=")
                if eq:
                    out.append((k.strip(), v.strip().strip(b'"')))
    return out


def _query_values(target: bytes, name: str) -> list[bytes]:
    _, mark, query = target.partition(b"?")
    if not mark:
        return []
    query = query.partition(b"#")[0]
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return [v.encode("latin-1") for k, v in pairs if k == name]
