"""The circuit breaker's state machine, driven by a fake clock: no sleeping, no sockets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sidecar.policy.breaker import (
    Breaker,
    BreakerConfig,
    IllegalTransition,
    State,
    WindowType,
)

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
FORCED_OPEN, DISABLED = State.FORCED_OPEN, State.DISABLED


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[State, State]] = []

    def __call__(self, source: State, target: State) -> None:
        self.seen.append((source, target))


def make(clock: FakeClock | None = None, **cfg: Any) -> tuple[Breaker, FakeClock, Recorder]:
    clock = clock or FakeClock()
    heard = Recorder()
    return Breaker(BreakerConfig(**cfg), clock, [heard]), clock, heard


def fail(b: Breaker, n: int = 1, duration: float = 0.01) -> None:
    for _ in range(n):
        assert b.try_acquire()
        b.on_result(duration, failed=True)


def succeed(b: Breaker, n: int = 1, duration: float = 0.01) -> None:
    for _ in range(n):
        assert b.try_acquire()
        b.on_result(duration, failed=False)


# --- the transition table -------------------------------------------------------------

# Written out here, not imported: the spec the table in breaker.py must match
# (resilience4j's StateTransition, less METRICS_ONLY).
LEGAL = {
    (CLOSED, OPEN), (CLOSED, FORCED_OPEN), (CLOSED, DISABLED),
    (OPEN, HALF_OPEN), (OPEN, CLOSED), (OPEN, FORCED_OPEN), (OPEN, DISABLED),
    (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN), (HALF_OPEN, FORCED_OPEN), (HALF_OPEN, DISABLED),
    (FORCED_OPEN, CLOSED), (FORCED_OPEN, OPEN), (FORCED_OPEN, HALF_OPEN),
    (FORCED_OPEN, DISABLED),
    (DISABLED, CLOSED), (DISABLED, OPEN), (DISABLED, HALF_OPEN), (DISABLED, FORCED_OPEN),
}
# How to reach each state from CLOSED by legal moves.
PATH = {CLOSED: [], OPEN: [OPEN], HALF_OPEN: [OPEN, HALF_OPEN], FORCED_OPEN: [FORCED_OPEN],
        DISABLED: [DISABLED]}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)),
                         ids=lambda s: s.value)
def test_every_transition_is_legal_or_refused(source: State, target: State) -> None:
    b, _, heard = make()
    for step in PATH[source]:
        b.transition_to(step)
    assert b.state is source
    heard.seen.clear()
    if (source, target) in LEGAL:
        b.transition_to(target)
        assert b.state is target
        assert heard.seen == [(source, target)]
    else:
        with pytest.raises(IllegalTransition):
            b.transition_to(target)
        assert b.state is source  # nothing moved, nobody told
        assert heard.seen == []


def test_the_table_has_19_legal_moves_and_6_illegal() -> None:
    assert len(LEGAL) == 19
    illegal = set(itertools.product(State, State)) - LEGAL
    assert illegal == {(s, s) for s in State} | {(CLOSED, HALF_OPEN)}


# --- CLOSED: count window, minimum calls -----------------------------------------------

def test_minimum_calls_before_the_rate_counts() -> None:
    b, _, heard = make(window_size=10, minimum_calls=5, failure_rate_threshold=50)
    fail(b, 4)  # 100% failures, but only 4 calls
    assert b.state is CLOSED
    assert b.metrics().failure_rate == -1.0  # not computed yet, as resilience4j reports it
    fail(b)
    assert b.state is OPEN
    assert heard.seen == [(CLOSED, OPEN)]
    m = b.metrics()
    assert (m.calls, m.failed_calls, m.failure_rate) == (5, 5, 100.0)  # what tripped it


def test_failure_rate_at_the_threshold_opens_below_does_not() -> None:
    b, _, _ = make(window_size=10, minimum_calls=10, failure_rate_threshold=50)
    succeed(b, 6)
    fail(b, 4)  # 40%
    assert b.state is CLOSED
    assert b.metrics().failure_rate == 40.0
    b2, _, _ = make(window_size=10, minimum_calls=10, failure_rate_threshold=50)
    succeed(b2, 5)
    fail(b2, 5)  # exactly 50%: >= opens
    assert b2.state is OPEN


def test_a_failure_past_the_minimum_opens() -> None:
    b, _, _ = make(window_size=10, minimum_calls=2, failure_rate_threshold=50)
    succeed(b, 3)
    fail(b, 2)  # 2 of 5
    assert b.state is CLOSED
    fail(b)  # 3 of 6
    assert b.state is OPEN


def test_count_window_forgets_the_oldest_call() -> None:
    b, _, _ = make(window_size=4, minimum_calls=4, failure_rate_threshold=50)
    fail(b)
    succeed(b, 3)  # F S S S: 25%
    assert b.metrics().failure_rate == 25.0
    succeed(b)  # the F slides out: S S S S
    assert b.metrics().failed_calls == 0
    fail(b)  # S S S F
    assert b.state is CLOSED
    fail(b)  # S S F F: 50%
    assert b.state is OPEN


def test_a_success_that_reaches_the_minimum_can_open() -> None:
    b, _, _ = make(window_size=10, minimum_calls=5, failure_rate_threshold=50)
    fail(b, 4)
    succeed(b)  # 4 of 5 failed, judged now that there are 5
    assert b.state is OPEN


def test_count_window_minimum_is_at_most_the_window() -> None:
    # resilience4j: minimum_calls above the window size means the whole window.
    b, _, _ = make(window_size=5, minimum_calls=100)
    fail(b, 5)
    assert b.state is OPEN


def test_closed_count_window_never_reads_the_clock() -> None:
    def no_clock() -> float:
        raise AssertionError("the hot path read the clock")

    b = Breaker(BreakerConfig(window_size=10, minimum_calls=10), no_clock)
    succeed(b, 25)
    fail(b, 3)
    assert b.state is CLOSED


# --- CLOSED: time window -----------------------------------------------------------------

def test_time_window_forgets_calls_older_than_the_window() -> None:
    b, clock, _ = make(FakeClock(100.2), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=3, failure_rate_threshold=50)
    succeed(b, 3)
    clock.now = 105.0
    fail(b, 2)  # 2 of 5: 40%
    assert b.state is CLOSED
    assert b.metrics().calls == 5
    clock.now = 110.0  # second 100 has left the window (101..110)
    assert b.metrics().calls == 2
    fail(b)  # 3 of 3
    assert b.state is OPEN


def test_time_window_a_success_can_open_once_older_successes_expire() -> None:
    b, clock, _ = make(FakeClock(100.0), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=3, failure_rate_threshold=50)
    succeed(b, 4)
    clock.now = 105.0
    fail(b, 3)  # 3 of 7
    clock.now = 110.0
    succeed(b)  # the successes of second 100 left: 3 of 4 failed (and 4 is past the minimum)
    assert b.state is OPEN


def test_time_window_expiry_seen_first_by_a_metrics_read_still_counts() -> None:
    b, clock, _ = make(FakeClock(100.0), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=3, failure_rate_threshold=50)
    succeed(b, 4)
    clock.now = 105.0
    fail(b, 3)
    clock.now = 110.0
    assert b.metrics().calls == 3  # the admin API's read drops second 100 ...
    succeed(b)  # ... and this success, in the same second, is judged on what is left
    assert b.state is OPEN


def test_time_window_uses_the_time_the_caller_passes() -> None:
    b, clock, _ = make(FakeClock(100.0), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=1)
    clock.now = float("nan")  # must not be read
    assert b.try_acquire()
    b.on_result(0.1, failed=False, now=100.5)
    b.on_result(0.1, failed=False, now=101.5)
    assert b.state is CLOSED


def test_time_window_survives_a_clock_stepping_back() -> None:
    b, clock, _ = make(FakeClock(100.0), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=4)
    succeed(b, 2)
    clock.now = 90.0  # counted in the newest bucket rather than lost or misplaced
    succeed(b, 1)
    clock.now = 100.5
    fail(b, 1)
    m = b.metrics()
    assert (m.calls, m.failed_calls) == (4, 1)


def test_time_window_keeps_calls_inside_the_window() -> None:
    b, clock, _ = make(FakeClock(100.0), window_type=WindowType.TIME, window_size=10,
                       minimum_calls=3, failure_rate_threshold=50)
    succeed(b, 3)
    clock.now = 109.9  # second 100 is still in (100..109)
    fail(b, 2)  # 2 of 5
    assert b.state is CLOSED
    assert b.metrics().calls == 5


def test_time_window_long_silence_empties_it() -> None:
    b, clock, _ = make(window_type=WindowType.TIME, window_size=5, minimum_calls=4)
    fail(b, 3)
    clock.now += 3600
    succeed(b)
    m = b.metrics()
    assert (m.calls, m.failed_calls) == (1, 0)


def test_time_window_minimum_calls_counts_within_the_window() -> None:
    # Unlike a count window, the minimum is not capped by the size: 10 s, 20 calls.
    b, clock, _ = make(window_type=WindowType.TIME, window_size=10, minimum_calls=20)
    for _ in range(19):
        fail(b)
        clock.now += 0.1
    assert b.state is CLOSED
    fail(b)
    assert b.state is OPEN


# --- slow calls ------------------------------------------------------------------------

def test_slow_call_rate_opens_even_when_all_succeed() -> None:
    b, _, _ = make(window_size=4, minimum_calls=4, slow_call_duration_s=1.0,
                   slow_call_rate_threshold=50)
    succeed(b, 2, duration=0.5)
    succeed(b, 1, duration=1.0)  # at the threshold counts as slow
    assert b.state is CLOSED
    m = b.metrics()
    assert (m.slow_calls, m.failed_calls) == (1, 0)
    succeed(b, 1, duration=3.0)  # 2 of 4 slow
    assert b.state is OPEN
    assert b.metrics().slow_call_rate == 50.0


def test_a_slow_failure_counts_in_both_rates() -> None:
    b, _, _ = make(window_size=2, minimum_calls=2, slow_call_duration_s=1.0,
                   failure_rate_threshold=100, slow_call_rate_threshold=100)
    fail(b, 1, duration=2.0)
    m = b.metrics()
    assert (m.failed_calls, m.slow_calls) == (1, 1)


def test_default_slow_threshold_is_off_in_effect() -> None:
    b, _, _ = make(window_size=10, minimum_calls=10)
    succeed(b, 9, duration=120.0)
    succeed(b, 1, duration=0.1)  # 90% slow < 100%
    assert b.state is CLOSED


# --- OPEN ------------------------------------------------------------------------------

def test_open_refuses_until_the_wait_has_passed() -> None:
    b, clock, heard = make(window_size=2, minimum_calls=2, wait_in_open_s=10)
    fail(b, 2)
    assert b.state is OPEN
    assert not b.try_acquire()
    clock.now += 4
    assert b.retry_after_s() == pytest.approx(6)
    assert not b.try_acquire()
    assert b.metrics().not_permitted == 2
    clock.now += 6
    assert b.state is OPEN  # no timer: only a call moves it
    assert b.try_acquire()
    assert b.state is HALF_OPEN
    assert heard.seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert b.retry_after_s() == 0.0


def test_outcomes_of_calls_let_through_before_opening_are_not_counted() -> None:
    b, _, _ = make(window_size=2, minimum_calls=2)
    assert b.try_acquire()  # a slow call starts while closed
    fail(b, 2)
    assert b.state is OPEN
    b.on_result(0.1, failed=False)  # ... and ends while open
    assert b.state is OPEN


# --- HALF_OPEN -------------------------------------------------------------------------

def opened_then_half_open(**cfg: Any) -> tuple[Breaker, FakeClock, Recorder]:
    b, clock, heard = make(window_size=2, minimum_calls=2, wait_in_open_s=10,
                           half_open_calls=3, **cfg)
    fail(b, 2)
    clock.now += 10
    return b, clock, heard


def test_half_open_permits_only_its_probes() -> None:
    b, _, _ = opened_then_half_open()
    assert [b.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert b.state is HALF_OPEN


def test_half_open_successes_close_with_a_fresh_window() -> None:
    b, _, heard = opened_then_half_open()
    permits = [b.try_acquire() for _ in range(3)]
    assert permits == [True] * 3
    b.on_result(0.1, failed=False)
    b.on_result(0.1, failed=True)
    assert b.state is HALF_OPEN  # waits for every probe
    b.on_result(0.1, failed=False)  # 1 of 3 failed: 33% < 50%
    assert b.state is CLOSED
    assert heard.seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert b.metrics().calls == 0
    assert b.try_acquire()


def test_half_open_failures_open_again_and_restart_the_wait() -> None:
    b, clock, heard = opened_then_half_open()
    for _ in range(3):
        assert b.try_acquire()
    b.on_result(0.1, failed=True)
    b.on_result(0.1, failed=True)
    b.on_result(0.1, failed=False)  # 67% >= 50%
    assert b.state is OPEN
    assert heard.seen[-1] == (HALF_OPEN, OPEN)
    clock.now += 9.9
    assert not b.try_acquire()
    clock.now += 0.1
    assert b.try_acquire()
    assert b.state is HALF_OPEN


def test_half_open_slow_probes_open_again() -> None:
    b, _, _ = opened_then_half_open(slow_call_duration_s=1.0, slow_call_rate_threshold=50)
    for _ in range(3):
        assert b.try_acquire()
        b.on_result(5.0, failed=False)
    assert b.state is OPEN


def test_release_gives_a_probe_back() -> None:
    b, _, _ = opened_then_half_open()
    assert [b.try_acquire() for _ in range(4)] == [True, True, True, False]
    b.release()  # that probe's client went away
    assert b.try_acquire()
    for _ in range(3):
        b.on_result(0.1, failed=False)
    assert b.state is CLOSED
    b.release()  # in CLOSED nothing is counted: harmless
    assert b.state is CLOSED


def test_results_beyond_the_probes_are_ignored() -> None:
    b, _, _ = opened_then_half_open()
    b.on_result(0.1, failed=True)  # a straggler from before the opening, no probe out
    assert b.try_acquire()
    b.on_result(0.1, failed=False)
    assert b.metrics().calls == 1
    assert b.state is HALF_OPEN


def test_lost_probes_reopen_after_the_max_wait() -> None:
    b, clock, heard = opened_then_half_open(max_wait_in_half_open_s=30)
    for _ in range(3):
        assert b.try_acquire()  # never answered
    clock.now += 29
    assert not b.try_acquire()
    assert b.state is HALF_OPEN
    clock.now += 1
    assert not b.try_acquire()
    assert b.state is OPEN
    assert heard.seen[-1] == (HALF_OPEN, OPEN)
    clock.now += 10
    assert b.try_acquire()  # probing again


def test_no_max_wait_means_half_open_waits_for_its_probes() -> None:
    b, clock, _ = opened_then_half_open(max_wait_in_half_open_s=0)
    for _ in range(3):
        assert b.try_acquire()
    clock.now += 10**6
    assert not b.try_acquire()
    assert b.state is HALF_OPEN


# --- operator states, reset, listeners --------------------------------------------------

def test_forced_open_refuses_everything_and_never_moves_by_itself() -> None:
    b, clock, _ = make(wait_in_open_s=1)
    b.transition_to(FORCED_OPEN)
    clock.now += 3600
    assert not any(b.try_acquire() for _ in range(10))
    assert b.state is FORCED_OPEN
    assert b.metrics().not_permitted == 10


def test_disabled_passes_everything_and_records_nothing() -> None:
    b, _, _ = make(window_size=2, minimum_calls=2)
    b.transition_to(DISABLED)
    fail(b, 50)
    assert b.state is DISABLED
    b.transition_to(CLOSED)
    assert b.metrics().calls == 0


def test_reset_from_any_state_gives_a_fresh_closed_breaker() -> None:
    b, _, heard = make(window_size=4, minimum_calls=4)
    fail(b, 3)
    b.reset()
    assert b.state is CLOSED and b.metrics().calls == 0
    assert heard.seen == []  # CLOSED -> CLOSED is no transition
    fail(b, 4)
    b.reset()
    assert heard.seen == [(CLOSED, OPEN), (OPEN, CLOSED)]


def test_listener_hears_the_whole_automatic_cycle() -> None:
    b, clock, heard = make(window_size=2, minimum_calls=2, wait_in_open_s=5,
                           half_open_calls=1)
    later: list[tuple[State, State]] = []
    b.add_listener(lambda s, t: later.append((s, t)))
    fail(b, 2)
    clock.now += 5
    succeed(b)
    cycle = [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert heard.seen == cycle
    assert later == cycle


# --- configuration ---------------------------------------------------------------------

def test_defaults() -> None:
    cfg = BreakerConfig()
    assert cfg.window_type is WindowType.COUNT and cfg.window_size == 100
    assert (cfg.failure_rate_threshold, cfg.slow_call_rate_threshold) == (50.0, 100.0)
    assert cfg.slow_call_duration_s == 60.0 and cfg.half_open_calls == 10
    # the sidecar's own choices (see the comments in BreakerConfig)
    assert (cfg.minimum_calls, cfg.wait_in_open_s, cfg.max_wait_in_half_open_s) == (20, 10.0, 60.0)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as e:
        BreakerConfig(window_size=0, failure_rate_threshold=0, slow_call_rate_threshold=101,
                      slow_call_duration_s=0, minimum_calls=0, wait_in_open_s=-1,
                      half_open_calls=0, max_wait_in_half_open_s=-1)
    lines = str(e.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "window_size", "failure_rate_threshold", "slow_call_rate_threshold",
        "slow_call_duration_s", "minimum_calls", "wait_in_open_s", "half_open_calls",
        "max_wait_in_half_open_s"]


def test_config_is_frozen() -> None:
    cfg = BreakerConfig()
    with pytest.raises(AttributeError):
        cfg.window_size = 5  # type: ignore[misc]
