"""Ring hash with bounded load: stickiness, weights, minimal disruption, the load cap."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.balance import Handle, RingHash
from sidecar.balance.ring_hash import key_hash
from sidecar.testing import FakeClock as Clock

KEYS = [b"session-%d" % i for i in range(10_000)]


@dataclass(frozen=True)
class Ep:
    host: str
    weight: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, 8080)


def ring(eps: list[Ep], clock: Clock | None = None, **options: Any) -> RingHash[Ep]:
    return RingHash(eps, rng=random.Random(1), clock=clock or Clock(), **options)


def hosts(n: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i}") for i in range(1, n + 1)]


def owners(r: RingHash[Ep]) -> dict[bytes, str]:
    out = {}
    for key in KEYS:
        owner = r.owner(key)
        assert owner is not None
        out[key] = owner.host
    return out


def pick(r: RingHash[Ep], key: bytes | None, exclude: Ep | None = None) -> Handle[Ep]:
    """A pick left in flight: it counts toward the bound until done."""
    handle = r.pick(key, exclude=exclude)
    assert handle is not None
    return handle


def pick_done(r: RingHash[Ep], key: bytes | None, exclude: Ep | None = None) -> Ep:
    """A pick that completes at once: no load builds up."""
    handle = pick(r, key, exclude)
    handle.done(0.010)
    return handle.endpoint


def test_the_hash_is_stable_across_processes() -> None:
    # BLAKE2b-64, not the per-process salted hash(): every sidecar, of every version,
    # must draw the same ring, so the values are pinned.
    assert key_hash(b"user-42") == 0x6FA0CA4D7BE6EFA6
    assert key_hash(b"") == 0xE4A6A0577479B2B4


def test_same_key_same_endpoint_whatever_the_order_of_endpoints() -> None:
    eps = hosts(5)
    r = ring(eps)
    first = {key: pick_done(r, key) for key in KEYS[:200]}
    shuffled = eps[:]
    random.Random(3).shuffle(shuffled)
    again = ring([Ep(e.host) for e in shuffled])
    for key, endpoint in first.items():
        assert pick_done(r, key) == endpoint == r.owner(key)
        assert pick_done(again, key) == endpoint


def test_keys_spread_in_proportion_to_weight() -> None:
    r = ring([Ep("a", 1), Ep("b", 2), Ep("c", 3), Ep("d", 4)])
    counts = Counter(owners(r).values())
    for host, weight in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        share = counts[host] / len(KEYS)
        assert share == pytest.approx(weight / 10, rel=0.25), f"{host}: {share:.2%} of keys"


def test_removing_one_of_ten_moves_only_its_keys() -> None:
    eps = hosts(10)
    before = owners(ring(eps))
    gone = eps[3]
    after = owners(ring(eps[:3] + eps[4:]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == gone.host for key in moved), "a key moved between survivors"
    share = len(moved) / len(KEYS)
    assert 0.05 < share < 0.15, f"{share:.2%} of keys moved, ~10% expected"


def test_adding_an_eleventh_takes_only_keys_for_itself() -> None:
    eps = hosts(10)
    before = owners(ring(eps))
    after = owners(ring([*eps, Ep("10.0.0.99")]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "10.0.0.99" for key in moved)
    share = len(moved) / len(KEYS)
    assert 0.045 < share < 0.14, f"{share:.2%} of keys moved, ~9% expected"


def test_ring_size_follows_min_ring_size_in_powers_of_two() -> None:
    assert ring(hosts(10)).ring_size == 10 * 128  # 1024 / 10 -> 103 -> 128 per weight
    assert ring(hosts(9)).ring_size == 9 * 128  # unchanged per weight: no key reshuffle
    assert ring(hosts(3), min_ring_size=100).ring_size == 3 * 64
    assert ring(hosts(2), min_ring_size=16, max_ring_size=16).ring_size == 16
    # Large weights (Consul allows up to 10000) do not make a huge ring: 1/512 per weight.
    big = ring([Ep(f"10.0.{i // 250}.{i % 250}", 10_000) for i in range(100)])
    assert big.ring_size == 100 * 20
    assert ring([Ep("a", 10_000), Ep("b", 5_000)]).ring_size == 1250 + 625  # 1/8 per weight


def test_bounded_load_caps_the_hottest_endpoint() -> None:
    rng = random.Random(9)
    c = 1.25
    eps = hosts(4)
    unbounded, bounded = ring(eps, balance_factor=None), ring(eps, balance_factor=c)
    hot = b"session-hot"
    keys = [hot if rng.random() < 0.5 else rng.choice(KEYS) for _ in range(1000)]
    for r in (unbounded, bounded):
        for m, key in enumerate(keys, 1):  # nothing completes: in flight grows to 1000
            pick(r, key)
            if r is bounded:
                cap = math.ceil(c * m / 4)
                assert max(load.pending for load in r.loads.records) <= cap
    hottest_unbounded = max(load.pending for load in unbounded.loads.records)
    hottest_bounded = max(load.pending for load in bounded.loads.records)
    assert hottest_unbounded > 500
    assert hottest_bounded <= math.ceil(c * 1000 / 4) == 313, hottest_bounded


def test_below_the_bound_keys_stay_with_their_owner() -> None:
    r = ring(hosts(4))
    rng = random.Random(4)
    held = []
    for _ in range(400):  # many requests in flight, spread by ordinary keys
        key = rng.choice(KEYS)
        handle = pick(r, key)
        held.append((key, handle))
    sticky = sum(handle.endpoint == r.owner(key) for key, handle in held) / len(held)
    assert sticky > 0.85, f"only {sticky:.0%} on their owner"


def test_exclude_and_penalty_walk_clockwise_and_back() -> None:
    clock = Clock()
    r = ring(hosts(5), clock)
    key = b"session-7"
    owner = r.owner(key)
    assert owner is not None
    retry = pick_done(r, key, exclude=Ep(owner.host))  # matched by address
    assert retry != owner
    assert pick_done(r, key, exclude=owner) == retry, "the retry target is sticky too"
    r.penalize(owner, 30.0)
    assert pick_done(r, key) == retry
    clock.now = 30.0
    assert pick_done(r, key) == owner


def test_no_key_spreads_at_random() -> None:
    r = ring(hosts(4))
    counts = Counter(pick_done(r, None).host for _ in range(4000))
    assert len(counts) == 4 and min(counts.values()) > 600, counts


def test_single_endpoint_and_empty() -> None:
    assert ring([]).pick(b"k") is None and ring([]).owner(b"k") is None
    (only,) = eps = hosts(1)
    r = ring(eps)
    assert pick_done(r, b"k", exclude=only) == only
    r.penalize(only, 10.0)
    assert pick_done(r, b"k") == only


def test_state_survives_a_rebuild() -> None:
    eps = hosts(3)
    r = ring(eps)
    held = pick(r, b"session-1")
    rebuilt = RingHash([Ep(e.host) for e in eps], rng=random.Random(1), clock=Clock(),
                       previous=r.loads)
    assert rebuilt.loads.group.pending == 1
    held.done(0.010)
    assert rebuilt.loads.group.pending == 0


def test_balance_factor_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="balance_factor"):
        ring(hosts(2), balance_factor=0.9)
