"""Where the token is found: Bearer header by default, a named header, a cookie, a query
parameter; a token given twice is refused; the route guard says when one is missing."""

from __future__ import annotations

import pytest
from auth_helpers import provider, rsa_key, sign, verifier

from sidecar.auth import AuthError, Reason, RouteAuth, RouteGuard, TokenLocation, find_token

BEARER = TokenLocation()


@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"authorization", b"Bearer abc.def.ghi")], "abc.def.ghi"),
    ([(b"authorization", b"bearer   abc.def.ghi  ")], "abc.def.ghi"),
    ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),
    ([(b"authorization", b"Bearer ")], None),
    ([(b"x-other", b"Bearer abc")], None),
    ([], None),
])
def test_bearer_header(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert find_token([BEARER], headers, b"/") == expected


def test_two_bearer_tokens_are_ambiguous() -> None:
    with pytest.raises(AuthError) as info:
        find_token([BEARER], [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], b"/")
    assert info.value.reason is Reason.AMBIGUOUS


def test_non_ascii_token_is_malformed() -> None:
    with pytest.raises(AuthError) as info:
        find_token([BEARER], [(b"authorization", "Bearer tök".encode())], b"/")
    assert info.value.reason is Reason.MALFORMED


def test_named_header_cookie_and_query() -> None:
    headers = [(b"x-token", b"h.h.h"), (b"cookie", b"theme=dark; session=c.c.c; x=1")]
    assert find_token([TokenLocation("header", "x-token", "")], headers, b"/") == "h.h.h"
    assert find_token([TokenLocation("cookie", "session", "")], headers, b"/") == "c.c.c"
    query = TokenLocation("query", "access_token", "")
    assert find_token([query], [], b"/orders?a=1&access_token=q.q.q#frag") == "q.q.q"
    assert find_token([query], [], b"/orders") is None
    with pytest.raises(AuthError):
        find_token([query], [], b"/o?access_token=a&access_token=b")


def test_first_location_holding_a_token_wins() -> None:
    cookie = TokenLocation("cookie", "session", "")
    headers = [(b"cookie", b"session=from-cookie")]
    assert find_token([BEARER, cookie], headers, b"/") == "from-cookie"


def test_guard_requires_a_token_only_when_the_route_does() -> None:
    v = verifier()
    with pytest.raises(AuthError) as info:
        RouteGuard(v, RouteAuth()).find([], b"/")
    assert info.value.reason is Reason.MISSING_TOKEN
    assert RouteGuard(v, RouteAuth(required=False)).find([], b"/") is None


async def test_guard_end_to_end_strips_spoofed_headers_and_adds_claims() -> None:
    v = verifier(providers=(provider(), provider(name="other", issuer="https://o.test/",
                                                 location=TokenLocation("cookie", "s", ""))))
    guard = RouteGuard(v, RouteAuth(providers=("corp",)))
    assert guard.locations == (BEARER,) and guard.providers == ("corp",)
    headers = [(b"authorization", b"Bearer " + sign(rsa_key()).encode()),
               (b"x-auth-sub", b"root")]
    token = guard.find(headers, b"/orders")
    assert token is not None
    verified = guard.verify_now(token) or await guard.verify(token)
    forwarded = guard.forward(headers, verified)
    assert (b"x-auth-sub", b"root") not in forwarded
    assert (b"x-auth-sub", b"alice") in forwarded and (b"x-auth-roles", b"reader,writer") in forwarded
    assert guard.forward(headers, None) == headers[:1]
