"""Least request over peak EWMA (P2C): a fake clock, a seeded rng, no sockets."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.balance import P2C, Handle
from sidecar.testing import FakeClock as Clock


@dataclass(frozen=True)
class Ep:
    name: str
    weight: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.name, 80)


def make(names: str = "abc", seed: int = 1, **options: Any) -> tuple[P2C[Ep], Clock]:
    clock = Clock()
    return P2C([Ep(n) for n in names], rng=random.Random(seed), clock=clock, **options), clock


def pick(p2c: P2C[Ep], exclude: Ep | None = None) -> Handle[Ep]:
    handle = p2c.pick(exclude=exclude)
    assert handle is not None
    return handle


def simulate(p2c: P2C[Ep], clock: Clock, latency: dict[str, float], requests: int,
             rate: float, seed: int = 7) -> Counter[str]:
    """Poisson arrivals at `rate`/s; each request holds its endpoint for its latency (±20%)."""
    rng = random.Random(seed)
    in_flight: list[tuple[float, int, Handle[Ep], float]] = []
    counts: Counter[str] = Counter()
    for n in range(requests):
        clock.now += rng.expovariate(rate)
        arrival = clock.now
        while in_flight and in_flight[0][0] <= arrival:
            finish, _, handle, took = heapq.heappop(in_flight)
            clock.now = finish
            handle.done(took)
        clock.now = arrival
        handle = pick(p2c)
        took = latency[handle.endpoint.name] * rng.uniform(0.8, 1.2)
        heapq.heappush(in_flight, (arrival + took, n, handle, took))
        counts[handle.endpoint.name] += 1
    for finish, _, handle, took in sorted(in_flight):  # drain: the next phase starts idle
        clock.now = finish
        handle.done(took)
    return counts


def test_converges_away_from_a_slow_endpoint() -> None:
    p2c, clock = make("abc")
    counts = simulate(p2c, clock, {"a": 0.010, "b": 0.010, "c": 0.100}, 10_000, rate=500)
    share = counts["c"] / 10_000
    assert share < 0.05, f"slow endpoint took {share:.2%} of traffic: {dict(counts)}"
    assert p2c.loads.group.pending == 0


def test_a_recovered_endpoint_wins_its_share_back() -> None:
    p2c, clock = make("abc")
    simulate(p2c, clock, {"a": 0.010, "b": 0.010, "c": 0.100}, 10_000, rate=500)
    # c is fast again: its estimate fades while idle until it is tried, then each fast
    # sample pulls it down with the 10 s time constant. Shares per 10 s window:
    fast = {"a": 0.010, "b": 0.010, "c": 0.010}
    shares = [simulate(p2c, clock, fast, 5_000, rate=500, seed=s)["c"] / 5_000
              for s in (8, 9, 10, 11)]
    report = ", ".join(f"{share:.1%}" for share in shares)
    assert shares == sorted(shares) and shares[1] > 0.10 and shares[3] > 0.25, report


def test_pending_requests_shift_load() -> None:
    p2c, _ = make("ab")
    for ep in p2c.loads.endpoints:
        p2c.observe(ep, 0.010)
    held = Counter(pick(p2c).endpoint.name for _ in range(100))  # none completes
    assert held == {"a": 50, "b": 50}, "equal latency: the pending count alone must split load"

    p2c, _ = make("abc")
    a, b, c = p2c.loads.endpoints
    for ep in (a, b, c):
        p2c.observe(ep, 0.010)
    p2c.observe(a, 0.005)  # a is the fastest...
    hold = [p2c.loads.handle(0) for _ in range(3)]  # ...but has three requests in flight
    assert pick(p2c).endpoint.name in {"b", "c"}
    for h in hold:
        h.done(0.005)
    assert p2c.loads.records[0].pending == 0


def test_peak_jumps_at_once_then_decays_with_the_time_constant() -> None:
    tau = 5.0
    p2c, clock = make("ab", decay=tau)
    a, b = p2c.loads.endpoints
    load = p2c.loads.by_address[a.address]
    p2c.observe(a, 0.010)
    p2c.observe(b, 0.020)
    assert load.latency(clock.now) == 0.010  # the first sample replaces the default
    first = pick(p2c)
    assert first.endpoint == a
    first.cancel()

    clock.now = 1.0
    p2c.observe(a, 0.500)  # one slow sample
    assert load.latency(clock.now) == 0.500, "a sample above the average is taken at once"
    assert pick(p2c).endpoint == b, "and the very next pick avoids the endpoint"

    # Fast samples every 10 ms for one time constant: 1/e of the peak's excess remains.
    for _ in range(int(tau / 0.010)):
        clock.now += 0.010
        p2c.observe(a, 0.010)
    assert load.latency(clock.now) == pytest.approx(0.010 + 0.490 / math.e, rel=1e-6)

    # Left alone, an estimate fades toward zero with the same time constant.
    before = load.latency(clock.now)
    clock.now += tau
    assert load.latency(clock.now) == pytest.approx(before / math.e, rel=1e-9)


def test_an_endpoint_without_samples_is_probed_then_counts_as_default_rtt() -> None:
    for default_rtt, second in ((0.010, "b"), (0.030, "a")):
        p2c, _ = make("ab", default_rtt=default_rtt)
        p2c.observe(p2c.loads.endpoints[0], 0.050)
        probe = pick(p2c)
        assert probe.endpoint.name == "b"  # never measured, nothing in flight: tried at once
        # With its probe in flight it costs default_rtt per request: 2 x 10 ms beats a's
        # 50 ms; 2 x 30 ms does not.
        assert pick(p2c).endpoint.name == second


def test_a_new_endpoint_among_fast_ones_gets_traffic() -> None:
    """Fast endpoints (1 ms) must not shut out one that joined later (the bug the Consul
    fault tests found: an unsampled endpoint counted 30 ms and was never picked)."""
    p2c, clock = make("abc")
    for ep in p2c.loads.endpoints[:2]:
        p2c.observe(ep, 0.001)
    got: Counter[str] = Counter()
    for _ in range(300):
        handle = pick(p2c)
        got[handle.endpoint.name] += 1
        clock.now += 0.002
        handle.done(0.001)
    assert got["c"] > 30, got


def test_a_fast_failure_does_not_look_fast() -> None:
    for failure_rtt, expected in ((1.0, "b"), (0.0, "a")):
        p2c, _ = make("ab", failure_rtt=failure_rtt)
        b = p2c.loads.endpoints[1]
        p2c.observe(b, 0.020)
        handle = p2c.loads.handle(0)
        handle.done(0.001, ok=False)  # connection refused in 1 ms
        assert pick(p2c).endpoint.name == expected


def test_penalized_endpoint_avoided_until_its_time_passes() -> None:
    p2c, clock = make("abc")
    a = p2c.loads.endpoints[0]
    for ep in p2c.loads.endpoints:
        p2c.observe(ep, 0.010)
    p2c.observe(a, 0.001)  # the fastest, and so the favourite...
    p2c.penalize(a, 5.0)  # ...until it answers 429 with Retry-After: 5
    while clock.now < 5.0:
        handle = pick(p2c)
        assert handle.endpoint != a, f"penalized endpoint picked at t={clock.now:.2f}"
        handle.done(0.010)
        clock.now += 0.005
    picks = Counter(pick(p2c).endpoint.name for _ in range(100))
    assert picks["a"] > 0, "the penalty is over: the endpoint is back"


def test_only_penalized_endpoints_are_still_used() -> None:
    p2c, _ = make("ab")
    for ep in p2c.loads.endpoints:
        p2c.penalize(ep, 5.0)
    assert pick(p2c).endpoint in p2c.loads.endpoints


def test_state_survives_a_rebuild_by_address() -> None:
    p2c, clock = make("abc")
    a, b, c = p2c.loads.endpoints
    p2c.observe(a, 0.400)
    p2c.observe(b, 0.010)
    p2c.penalize(c, 60.0)
    in_flight = p2c.loads.handle(1)  # b, picked before discovery changed

    # Discovery: new objects for a, b and c, plus d; nothing else in common.
    fresh = [Ep("a"), Ep("b"), Ep("c"), Ep("d")]
    rebuilt = P2C(fresh, rng=random.Random(2), clock=clock, previous=p2c.loads)
    loads = rebuilt.loads
    assert loads.by_address[a.address].latency(clock.now) == pytest.approx(0.400)
    assert loads.by_address[fresh[3].address].latency(clock.now) == 0.030  # new: the default
    assert loads.records[1].pending == 1 and loads.group.pending == 1
    held = [pick(rebuilt) for _ in range(50)]
    assert all(h.endpoint.name != "c" for h in held), "the penalty is kept too"
    assert loads.group.pending == 51
    on_b = loads.records[1].pending

    in_flight.done(0.010)  # settles on the live record
    assert loads.records[1].pending == on_b - 1 and loads.group.pending == 50

    # An endpoint that leaves and comes back starts afresh.
    without_a = P2C(fresh[1:], rng=random.Random(3), clock=clock, previous=loads)
    back = P2C(fresh, rng=random.Random(4), clock=clock, previous=without_a.loads)
    assert back.loads.by_address[a.address].latency(clock.now) == 0.030


def test_single_endpoint_and_empty() -> None:
    assert make("")[0].pick() is None
    p2c, _ = make("a")
    (a,) = p2c.loads.endpoints
    assert pick(p2c).endpoint == a
    assert pick(p2c, exclude=a).endpoint == a, "no other endpoint: a retry goes to the same one"


@pytest.mark.parametrize("weights", [(1, 1), (1, 1, 1), (1, 1, 1, 1, 1), (1, 100), (50, 1, 1)])
def test_exclude_never_gives_the_same_endpoint_twice_in_a_row(weights: tuple[int, ...]) -> None:
    clock = Clock()
    eps = [Ep(f"e{i}", w) for i, w in enumerate(weights)]
    p2c = P2C(eps, rng=random.Random(5), clock=clock)
    previous = pick(p2c)
    for _ in range(2000):
        # The retry names the endpoint with a new object of the same address (a rebuild).
        handle = pick(p2c, exclude=Ep(previous.endpoint.name, previous.endpoint.weight))
        assert handle.endpoint != previous.endpoint
        previous.done(0.010, ok=False)
        previous = handle
    previous.cancel()
    assert p2c.loads.group.pending == 0


def test_weights_bias_the_two_choices() -> None:
    clock = Clock()
    eps = [Ep("light1"), Ep("light2"), Ep("heavy", 8)]
    p2c = P2C(eps, rng=random.Random(6), clock=clock)
    for ep in eps:
        p2c.observe(ep, 0.010)
    counts: Counter[str] = Counter()
    for _ in range(10_000):  # equal costs: the first of the two draws wins the tie
        handle = pick(p2c)
        counts[handle.endpoint.name] += 1
        handle.done(0.010)
    share = counts["heavy"] / 10_000
    assert 0.75 < share < 0.85, f"heavy (weight 8 of 10) took {share:.2%}"


def test_done_and_cancel_settle_once() -> None:
    p2c, _ = make("ab")
    handle = pick(p2c)
    load = p2c.loads.by_address[handle.endpoint.address]
    handle.done(0.010)
    handle.done(5.0)
    handle.cancel()
    assert load.pending == 0 and p2c.loads.group.pending == 0
    assert load.latency(0.0) == 0.010
