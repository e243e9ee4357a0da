"""Exponential back-off with full jitter: bounds, cap and distribution, seeded."""

from __future__ import annotations

import random
import statistics

import pytest

from sidecar.policy.backoff import Backoff

DRAWS = 20_000


def test_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    b = Backoff(0.025, 0.25, random.Random(1))
    assert [b.ceiling(a) for a in range(1, 7)] == [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    assert b.ceiling(10**9) == 0.25  # no overflow however long it goes on


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 50])
def test_full_jitter_is_uniform_below_the_ceiling(attempt: int) -> None:
    b = Backoff(0.025, 0.25, random.Random(attempt))
    ceiling = b.ceiling(attempt)
    draws = [b.delay(attempt) for _ in range(DRAWS)]
    assert all(0.0 <= d < ceiling for d in draws)
    assert ceiling <= 0.25
    # Uniform on [0, c): mean c/2, standard deviation c/sqrt(12); the standard error of
    # the mean is c/sqrt(12 * 20000) ~ 0.002c, so 2% is ten of them.
    assert statistics.fmean(draws) == pytest.approx(ceiling / 2, rel=0.02)
    assert statistics.pstdev(draws) == pytest.approx(ceiling / 12**0.5, rel=0.03)
    # it uses the whole interval, not just its middle
    assert min(draws) < 0.01 * ceiling and max(draws) > 0.99 * ceiling
    deciles = [0] * 10
    for d in draws:
        deciles[int(d / ceiling * 10)] += 1
    assert all(abs(n - DRAWS / 10) < DRAWS / 10 * 0.1 for n in deciles)


def test_same_seed_same_delays() -> None:
    a = Backoff(0.025, 1.0, random.Random(7))
    b = Backoff(0.025, 1.0, random.Random(7))
    assert [a.delay(n) for n in range(1, 20)] == [b.delay(n) for n in range(1, 20)]


def test_cap_equal_to_base_is_flat_jitter() -> None:
    b = Backoff(0.1, 0.1, random.Random(3))
    assert {b.ceiling(a) for a in range(1, 10)} == {0.1}


def test_bad_arguments() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="base_s"):
        Backoff(0, 1, rng)
    with pytest.raises(ValueError, match="cap_s"):
        Backoff(0.5, 0.1, rng)
    with pytest.raises(ValueError, match="attempt"):
        Backoff(0.025, 0.25, rng).delay(0)
