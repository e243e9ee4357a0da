"""A route's policy chain without sockets, request after request: what it keeps between
requests (the token read, its hash, its claim headers and RBAC answers, the one-window
bucket's quiet path) never changes what a request gets."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from sidecar.auth import AuthConfig, JwtProvider, Rbac, RbacConfig, RbacRule, RouteAuth, RouteGuard
from sidecar.auth.verifier import Verifier
from sidecar.core.errors import ErrorCode
from sidecar.core.exchange import Exchange
from sidecar.inbound.policy import Denied, RoutePolicy
from sidecar.protocol.events import RequestHead
from sidecar.ratelimit import RateLimits, parse, parse_rules
from sidecar.telemetry.metrics import Metrics
from sidecar.testing import FakeClock

ISSUER = "https://id.test/"
SECRET = "s" * 40
NOW = 1_700_000_000.0
IP = "10.0.0.7"


def token(sub: str, roles: list[str], exp: float = NOW + 600) -> str:
    return jwt.encode({"iss": ISSUER, "sub": sub, "roles": roles, "exp": int(exp)}, SECRET,
                      algorithm="HS256")


def route_policy(clock: FakeClock, limits: list[dict[str, Any]] | None = None,
                 **section: Any) -> RoutePolicy:
    p = JwtProvider(name="idp", issuer=ISSUER, algorithms=("HS256",), secret=SECRET)
    verifier = Verifier(AuthConfig(providers=(p,)), {}, {"idp": SECRET.encode()}, clock)
    rbac = Rbac(RbacConfig(rules=(RbacRule("readers", roles=frozenset({"reader"})),)))
    rules = parse_rules(limits or [{"second": 1000}])
    limiter = RateLimits(parse(section), "svc", clock=clock).for_route("r", rules)
    return RoutePolicy("r", "svc", Metrics(), guard=RouteGuard(verifier, RouteAuth()),
                       rbac=rbac, limiter=limiter)


def request(policy: RoutePolicy, *headers: tuple[bytes, bytes]) -> tuple[Any, Exchange]:
    head = RequestHead(b"GET", b"/orders/1", "1.1", [(b"host", b"orders"), *headers], True)
    ex = Exchange(None, head, b"req-1", 0.0)
    return policy.check(ex, None, IP), ex


def bearer(t: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {t}".encode())


def claims_sent(ex: Exchange) -> list[tuple[bytes, bytes]]:
    return [h for h in ex.head.headers if h[0].startswith(b"x-auth-")]


def test_each_request_gets_its_own_tokens_claims_and_answer_cached_or_not(
        decodes: list[str]) -> None:
    policy = route_policy(FakeClock(NOW))
    alice, bob = token("alice", ["reader"]), token("bob", ["writer"])
    spoofed = ((b"x-auth-sub", b"root"), (b"x-auth-roles", b"reader"))
    for _ in range(3):
        for extra in ((), spoofed):
            verdict, ex = request(policy, bearer(alice), *extra)
            assert verdict is None
            assert claims_sent(ex) == [(b"x-auth-sub", b"alice"), (b"x-auth-roles", b"reader")]
            verdict, ex = request(policy, bearer(bob), *extra)
            assert isinstance(verdict, Denied) and verdict.code is ErrorCode.FORBIDDEN
    assert decodes == [alice, bob]                        # then answered from the cache
    verdict, ex = request(policy, *spoofed)
    assert isinstance(verdict, Denied) and verdict.code is ErrorCode.UNAUTHORIZED
    text = policy.metrics.render().decode()
    assert 'policy="rbac",reason="rule",service="svc"} 6.0' in text


def test_a_token_that_expires_is_refused_at_once_though_it_was_just_let_through() -> None:
    clock = FakeClock(NOW)
    policy = route_policy(clock)
    t = token("alice", ["reader"], exp=NOW + 60)
    assert request(policy, bearer(t))[0] is None
    assert request(policy, bearer(t))[0] is None
    clock.advance(60 + 30)                                # past exp + leeway
    verdict, _ = request(policy, bearer(t), (b"x-auth-sub", b"root"))
    assert isinstance(verdict, Denied) and verdict.code is ErrorCode.UNAUTHORIZED
    assert 'error="invalid_token"' in dict(verdict.headers)[b"www-authenticate"].decode()


@pytest.mark.parametrize("section", [{}, {"headers_on_allowed": True}])
def test_the_rate_limit_counts_every_request_and_answers_429_with_its_headers(
        section: dict[str, Any]) -> None:
    clock = FakeClock(NOW)
    policy = route_policy(clock, [{"second": 2}], **section)
    t = bearer(token("alice", ["reader"]))
    for _ in range(2):
        verdict, ex = request(policy, t)
        assert verdict is None
        assert (b"ratelimit-limit: 2" in ex.response_extra) is bool(section)
    verdict, ex = request(policy, t)
    assert isinstance(verdict, Denied) and verdict.code is ErrorCode.RATE_LIMITED
    assert dict(verdict.headers)[b"retry-after"] == b"1"
    clock.advance(0.5)
    assert request(policy, t)[0] is None
    assert isinstance(request(policy, t)[0], Denied)


def test_the_clock_is_read_once_per_request_by_each_step_that_needs_it() -> None:
    """One read for the token's expiry, one for the bucket; not one per lookup."""
    reads = []

    class Counting(FakeClock):
        def __call__(self) -> float:
            reads.append(1)
            return super().__call__()

    policy = route_policy(Counting(NOW))
    t = bearer(token("alice", ["reader"]))
    request(policy, t)
    reads.clear()
    request(policy, t)
    assert len(reads) == 2
