"""Where the token is read from a request: a header (Bearer), a cookie or a query parameter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl

from .config import TokenLocation
from .errors import AuthError, Reason

__all__ = ["find_token"]

Headers = Sequence[tuple[bytes, bytes]]


def find_token(locations: Iterable[TokenLocation], headers: Headers, target: bytes) -> str | None:
    """The token at the first of `locations` that holds one; None when none does.

    `headers` are the request's (lower-case name, value) pairs, `target` its request
    target (`/path?query`). A token given twice at one location is refused (AMBIGUOUS):
    which of the two a proxy and an app would each pick is exactly how smuggling starts.
    """
    for loc in locations:
        if loc.kind == "header":
            token = _from_header(loc, headers)
        elif loc.kind == "cookie":
            token = _single(loc, [v for n, v in _cookies(headers) if n == loc.name.encode()])
        else:
            token = _single(loc, _query_values(target, loc.name))
        if token:
            return token
    return None


def _from_header(loc: TokenLocation, headers: Headers) -> str | None:
    # The hot path: one pass, no copies of the token until the one that is returned.
    name = loc.name.encode()
    prefix = loc.prefix.encode().lower()
    n = len(prefix)
    found: list[bytes] = []
    for key, value in headers:
        if key == name:
            value = value.strip()
            if not n:
                found.append(value)
            elif value[:n].lower() == prefix:   # another scheme (`Basic`): not a bearer token
                found.append(value[n:])
    return _single(loc, found) if found else None


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
