"""Weighted random choice and the skipping draw P2C is built on."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from sidecar.balance import RandomPick
from sidecar.balance.random_pick import WeightedDraw
from sidecar.testing import FakeClock as Clock


@dataclass(frozen=True)
class Ep:
    name: str
    weight: int = 1

    @property
    def address(self) -> str:
        return self.name


def shares(balancer: RandomPick[Ep], picks: int, exclude: Ep | None = None) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        handle = balancer.pick(exclude=exclude)
        assert handle is not None
        counts[handle.endpoint.name] += 1
        handle.done(0.010)
    return {name: n / picks for name, n in counts.items()}


def test_weights_respected() -> None:
    eps = [Ep("a", 1), Ep("b", 2), Ep("c", 7)]
    got = shares(RandomPick(eps, rng=random.Random(11), clock=Clock()), 20_000)
    for ep in eps:
        assert got[ep.name] == pytest.approx(ep.weight / 10, abs=0.015), got


def test_equal_weights_are_uniform() -> None:
    eps = [Ep(n) for n in "abcd"]
    got = shares(RandomPick(eps, rng=random.Random(12), clock=Clock()), 20_000)
    assert all(share == pytest.approx(0.25, abs=0.015) for share in got.values()), got


def test_exclude_and_penalty() -> None:
    clock = Clock()
    eps = [Ep("a", 1), Ep("b", 2), Ep("c", 7)]
    balancer = RandomPick(eps, rng=random.Random(13), clock=clock)
    got = shares(balancer, 9_000, exclude=Ep("c", 7))
    assert set(got) == {"a", "b"} and got["b"] == pytest.approx(2 / 3, abs=0.02), got
    balancer.penalize(eps[1], 1.0)
    assert set(shares(balancer, 200, exclude=eps[2])) == {"a"}
    balancer.penalize(eps[0], 1.0)  # all but the excluded one penalized: penalties give way
    assert set(shares(balancer, 200, exclude=eps[2])) == {"a", "b"}
    clock.now = 1.0
    assert set(shares(balancer, 200)) == {"a", "b", "c"}


def test_single_and_empty() -> None:
    assert RandomPick([], rng=random.Random(), clock=Clock()).pick() is None
    only = Ep("a")
    handle = RandomPick([only], rng=random.Random(), clock=Clock()).pick(exclude=only)
    assert handle is not None and handle.endpoint == only


@pytest.mark.parametrize("weights", [(3, 1, 5, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("skip", [(), (0,), (2,), (3,), (0, 2), (1, 3), (0, 1, 2)])
def test_draw_skips_exactly_and_keeps_proportions(weights: tuple[int, ...],
                                                 skip: tuple[int, ...]) -> None:
    draw, rng = WeightedDraw(weights), random.Random(14)
    counts = Counter(draw.draw(rng, skip) for _ in range(20_000))
    left = {i: w for i, w in enumerate(weights) if i not in skip}
    assert set(counts) == set(left)
    for i, w in left.items():
        assert counts[i] / 20_000 == pytest.approx(w / sum(left.values()), abs=0.015)
