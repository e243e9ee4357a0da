"""Limiters over a fake clock: the tightest window decides, Retry-After is right, keys,
rules that add up, dry-run, and only looking."""

from __future__ import annotations

import random

import pytest

from sidecar.ratelimit import (
    Limiter,
    RateLimiting,
    RateLimits,
    Source,
    parse,
    parse_rules,
    rate_limit_headers,
)
from sidecar.testing import FakeClock

IP = "10.0.0.7"


def limiter(rules: list[dict[str, object]], clock: FakeClock, **section: object) -> Limiter:
    cfg = parse({"limits": rules, **section})
    out = RateLimits(cfg, "svc", clock=clock).for_route("r")
    assert out is not None and not out.is_global
    return out


def admitted(lim: Limiter, n: int) -> int:
    return sum(lim.check(IP).allowed for _ in range(n))


def test_the_tightest_window_decides_and_retry_after_is_when_it_lets_one_through() -> None:
    clock = FakeClock()
    lim = limiter([{"second": 10, "minute": 15}], clock)  # minute: 0.25 token/s
    assert admitted(lim, 12) == 10
    d = lim.check(IP)
    assert d.limited and not d.allowed
    assert (d.limit, d.window_s) == (10, 1.0) and d.retry_after_s == pytest.approx(0.1)

    clock.advance(1.0)  # second full again; minute 5 + 0.25
    first = lim.check(IP)
    assert first.allowed and (first.limit, first.remaining) == (15, 4)  # minute is tightest
    assert admitted(lim, 10) == 4
    d = lim.check(IP)
    assert d.limited and d.limit == 15 and d.window_s == 60.0
    assert d.retry_after_s == pytest.approx(3.0)  # 0.25 left, 0.75 to go at 0.25/s
    assert d.reset_s == pytest.approx(59.0)  # 14.75 tokens to full

    clock.advance(2.99)
    assert not lim.check(IP).allowed
    clock.advance(0.01)
    assert lim.check(IP).allowed  # exactly when Retry-After said


def test_headers_of_a_refusal_and_of_an_allowed_request() -> None:
    clock = FakeClock()
    lim = limiter([{"second": 10, "minute": 15}], clock)
    ok = lim.check(IP)
    assert rate_limit_headers(ok) == [
        (b"ratelimit-limit", b"10"), (b"ratelimit-remaining", b"9"),
        (b"ratelimit-reset", b"1"), (b"ratelimit-policy", b"10;w=1")]
    admitted(lim, 9)
    clock.advance(1.0)
    admitted(lim, 5)
    refused = lim.check(IP)
    assert rate_limit_headers(refused) == [
        (b"ratelimit-limit", b"15"), (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", b"59"), (b"ratelimit-policy", b"15;w=60"),
        (b"retry-after", b"3")]


def test_retry_after_is_never_zero() -> None:
    lim = limiter([{"second": 1000}], FakeClock())
    admitted(lim, 1000)
    d = lim.check(IP)
    assert d.retry_after_s == pytest.approx(0.001)
    assert dict(rate_limit_headers(d))[b"retry-after"] == b"1"


@pytest.mark.parametrize(("by", "same", "other"), [
    ("ip", {"client_ip": "1.1.1.1"}, {"client_ip": "2.2.2.2"}),
    ("consumer", {"consumer": "alice"}, {"consumer": "bob"}),
    ("peer", {"peer": "spiffe://td/ns/a/sa/x"}, {"peer": "spiffe://td/ns/a/sa/y"}),
    ("header", {"headers": [(b"x-api-key", b"k1")]}, {"headers": [(b"x-api-key", b"k2")]}),
])
def test_each_key_has_its_own_bucket(by: str, same: dict[str, object],
                                     other: dict[str, object]) -> None:
    rule: dict[str, object] = {"by": by, "minute": 3}
    if by == "header":
        rule["header"] = "X-Api-Key"
    lim = limiter([rule], FakeClock())
    assert sum(lim.check(**{"client_ip": IP, **same}).allowed  # type: ignore[arg-type]
               for _ in range(5)) == 3
    assert lim.check(**{"client_ip": IP, **other}).allowed  # type: ignore[arg-type]


def test_a_missing_identity_counts_by_client_ip() -> None:
    lim = limiter([{"by": "consumer", "minute": 2}], FakeClock())
    assert admitted(lim, 2) == 2  # anonymous, from IP
    assert not lim.check(IP, consumer=None).allowed
    assert lim.check(IP, consumer=IP).allowed  # a subject named like the IP is someone else
    assert lim.check("10.9.9.9").allowed


def test_a_long_key_is_hashed() -> None:
    lim = limiter([{"by": "header", "header": "x-k", "minute": 1}], FakeClock())
    (key,) = lim.keys(IP, headers=[(b"x-k", b"v" * 10_000)])
    assert key.startswith("sha:") and len(key) < 64


def test_service_rules_are_shared_by_routes_and_route_rules_are_not() -> None:
    clock = FakeClock()
    cfg = parse({"limits": [{"name": "svc", "minute": 5}]})
    limits = RateLimits(cfg, "svc", clock=clock)
    a = limits.for_route("a", parse_rules([{"minute": 2}]))
    b = limits.for_route("b", parse_rules([{"minute": 2}]))
    assert a is not None and b is not None
    assert admitted(a, 3) == 2 and admitted(b, 3) == 2  # each route's own 2
    c = limits.for_route("c")
    assert c is not None
    assert admitted(c, 3) == 1  # the service's 5, of which a and b took 4
    d = c.check(IP)
    assert d.rule == "svc" and d.limited


def test_a_refused_request_takes_nothing_from_the_other_rules() -> None:
    clock = FakeClock()
    limits = RateLimits(parse({"limits": [{"minute": 10}]}), "svc", clock=clock)
    tight = limits.for_route("tight", parse_rules([{"second": 1}]))
    loose = limits.for_route("loose")
    assert tight is not None and loose is not None
    assert admitted(tight, 50) == 1  # 49 refused by the route's rule...
    assert admitted(loose, 50) == 9  # ...cost the service-wide bucket nothing


def test_by_route_and_by_service() -> None:
    clock = FakeClock()
    limits = RateLimits(parse({"limits": [{"by": "route", "minute": 1}]}), "svc", clock=clock)
    a, b = limits.for_route("a"), limits.for_route("b")
    assert a is not None and b is not None
    assert a.check("1.1.1.1").allowed and not a.check("2.2.2.2").allowed
    assert b.check("3.3.3.3").allowed
    limits = RateLimits(parse({"limits": [{"by": "service", "minute": 1}]}), "svc", clock=clock)
    a, b = limits.for_route("a"), limits.for_route("b")
    assert a is not None and b is not None
    assert a.check("1.1.1.1").allowed and not b.check("2.2.2.2").allowed


def test_dry_run_decides_but_lets_through() -> None:
    lim = limiter([{"minute": 1}], FakeClock(), dry_run=True)
    assert lim.check(IP).allowed
    d = lim.check(IP)
    assert d.allowed and d.limited
    assert b"retry-after" not in dict(rate_limit_headers(d))


def test_looking_takes_nothing() -> None:
    lim = limiter([{"minute": 1}], FakeClock())
    for _ in range(3):
        d = lim.check(IP, take=False)
        assert d.allowed and d.remaining == 1
    assert lim.check(IP).allowed and not lim.check(IP, take=False).allowed


def test_no_rules_no_limiter() -> None:
    assert RateLimits(RateLimiting(), "svc").for_route("r") is None


def test_decisions_say_who_decided() -> None:
    lim = limiter([{"by": "ip", "minute": 1}], FakeClock())
    assert lim.check(IP).source is Source.LOCAL


def test_the_one_window_path_answers_as_the_general_one() -> None:
    """A one-rule, one-window limiter has a fast path of its own; a twin rule that always
    holds the same tokens (one client, so by ip and by service agree) forces the general
    path, and every answer must match."""
    rng = random.Random(7)
    clock = FakeClock()
    fast = limiter([{"name": "a", "second": 3}], clock)
    general = limiter([{"name": "a", "second": 3}, {"name": "b", "by": "service", "second": 3}],
                      clock)
    seen = set()
    for _ in range(500):
        take = rng.random() < 0.9
        got, want = fast.check(IP, take=take), general.check(IP, take=take)
        assert got == want
        seen.add(got.allowed)
        clock.advance(rng.choice([0.0, 0.0, 0.1, 0.25, 0.7]))
    assert seen == {True, False}


@pytest.mark.parametrize(("rules", "section"), [
    ([{"second": 3}], {}),                                          # admit()'s own path
    ([{"second": 3, "minute": 5}], {}),                             # several windows
    ([{"name": "a", "second": 3}, {"name": "b", "by": "consumer", "minute": 4}], {}),
    ([{"second": 3}], {"dry_run": True}),
    ([{"second": 3}], {"headers_on_allowed": True}),                # the numbers are wanted
])
def test_admit_answers_as_check_does(rules: list[dict[str, object]],
                                     section: dict[str, object]) -> None:
    """`admit()` is the data plane's `check()`: None where check allows and no header wants
    the numbers, the same Decision otherwise; the twins' buckets stay in step."""
    rng = random.Random(11)
    clock = FakeClock()
    admitting, checking = limiter(rules, clock, **section), limiter(rules, clock, **section)
    quiet = not section.get("headers_on_allowed")
    seen = set()
    for _ in range(400):
        consumer = rng.choice([None, "alice", "bob"])
        got = admitting.admit(IP, consumer)
        want = checking.check(IP, consumer)
        assert got == (None if quiet and not want.limited else want)
        seen.add(want.limited)
        clock.advance(rng.choice([0.0, 0.0, 0.1, 0.25, 0.7]))
    assert seen == {True, False}


def test_keys_follow_the_identity_when_requests_alternate() -> None:
    """The limiter remembers the last key it made; alternating clients, subjects and
    ways of keying must still land each request in its own bucket."""
    clock = FakeClock()
    by_ip = limiter([{"by": "ip", "second": 2}], clock)
    a, b = "10.0.0.1", "10.0.0.2"
    assert [by_ip.admit(ip) is None for ip in (a, b, a, b, a, b)] == \
        [True, True, True, True, False, False]
    by_sub = limiter([{"by": "consumer", "second": 1}], clock)
    assert by_sub.admit(a, "alice") is None and by_sub.admit(a, "bob") is None
    assert by_sub.admit(a, None) is None  # no subject: keyed by the IP instead
    assert by_sub.admit(a, "alice") is not None and by_sub.admit(a, None) is not None
    assert by_sub.keys(a, "".join(["al", "ice"])) == ["sub:alice"]  # equal, not the same str
