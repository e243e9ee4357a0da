"""Circuit breaker per upstream cluster (resilience4j's semantics); the Envoy-style
concurrency limits that stand beside it are in `limits.py`.

How it works
------------
The breaker is a state machine; `_LEGAL` lists every transition it may take (the
table of resilience4j's `CircuitBreaker.StateTransition`, less METRICS_ONLY) and
`_to()` is the one place the state changes, after which listeners hear `(from, to)`.

  CLOSED       calls pass; each outcome enters a sliding window: the last N calls
               (COUNT) or the last N seconds in one-second buckets (TIME). Once the
               window holds `minimum_calls`, a failure rate or a slow-call rate at or
               above its threshold opens the breaker.
  OPEN         `try_acquire()` is False: the caller answers 503 CIRCUIT_OPEN at once.
               The first `try_acquire()` after `wait_in_open_s` moves to HALF_OPEN;
               there are no timers.
  HALF_OPEN    `half_open_calls` probes pass and the rest are refused. When all the
               probes' outcomes are in, the same thresholds over just those probes
               decide: CLOSED (with a fresh window) or OPEN again.
  FORCED_OPEN  an operator's (admin API) "refuse everything"; DISABLED, "pass
  DISABLED     everything"; neither records outcomes nor moves by itself.

The hot path is `try_acquire()` then `on_result()`: plain calls, O(1) (amortized for
the time window). In CLOSED with a count window neither reads the clock.

Every `try_acquire()` that returned True is answered by exactly one `on_result()`
(the call finished) or `release()` (it ended with no verdict, e.g. the client left);
otherwise a half-open probe is lost, and only `max_wait_in_half_open_s` gets the
breaker out of HALF_OPEN.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerMetrics",
    "IllegalTransition",
    "State",
    "WindowType",
]

Clock = Callable[[], float]


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


Listener = Callable[[State, State], None]

# Module globals: on Python 3.11 `State.CLOSED` costs a class attribute lookup per use.
_CLOSED, _OPEN, _HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
_FORCED_OPEN, _DISABLED = State.FORCED_OPEN, State.DISABLED

_LEGAL: dict[State, frozenset[State]] = {
    # Only CLOSED -> HALF_OPEN is missing: probing makes sense only after an opening.
    # X -> X is no transition; `reset()` restarts CLOSED with a fresh window.
    State.CLOSED: frozenset({State.OPEN, State.FORCED_OPEN, State.DISABLED}),
    State.OPEN: frozenset({State.HALF_OPEN, State.CLOSED, State.FORCED_OPEN, State.DISABLED}),
    State.HALF_OPEN: frozenset({State.CLOSED, State.OPEN, State.FORCED_OPEN, State.DISABLED}),
    State.FORCED_OPEN: frozenset({State.CLOSED, State.OPEN, State.HALF_OPEN, State.DISABLED}),
    State.DISABLED: frozenset({State.CLOSED, State.OPEN, State.HALF_OPEN, State.FORCED_OPEN}),
}


class IllegalTransition(ValueError):
    def __init__(self, source: State, target: State) -> None:
        super().__init__(f"circuit breaker cannot go from {source.value} to {target.value}")
        self.source = source
        self.target = target


class WindowType(Enum):
    COUNT = "count"  # the last `window_size` calls
    TIME = "time"  # the calls of the last `window_size` seconds


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """resilience4j's defaults except where a sidecar is better served (marked)."""

    window_type: WindowType = WindowType.COUNT
    window_size: int = 100  # calls (COUNT) or seconds (TIME)
    failure_rate_threshold: float = 50.0  # percent of the window's calls that failed
    # Slow-call opening is off in effect by default (every call must be slow): the
    # sidecar cannot know an upstream's normal latency; routes that do, set both.
    slow_call_rate_threshold: float = 100.0  # percent
    slow_call_duration_s: float = 60.0
    # resilience4j waits for 100 calls. Sidecar: an upstream seeing 1 request/s would
    # fail for 100 s before tripping. 20 all-failed calls are enough evidence, and a
    # healthy upstream with 10% errors reaches 50% in 20 calls with odds ~1e-5.
    minimum_calls: int = 20
    # resilience4j: 60 s. Sidecar: the whole cluster answers 503 while open, and a
    # probe costs only `half_open_calls` requests, so look again sooner.
    wait_in_open_s: float = 10.0
    half_open_calls: int = 10
    # resilience4j: 0 (wait forever). Sidecar: a probe lost by a bug must not leave
    # the cluster refusing traffic for good; after this long, back to OPEN. 0 = off.
    max_wait_in_half_open_s: float = 60.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.window_type, WindowType):
            problems.append("window_type: must be count or time")
        if self.window_size < 1:
            problems.append("window_size: must be >= 1")
        if not 0 < self.failure_rate_threshold <= 100:
            problems.append("failure_rate_threshold: must be in (0, 100]")
        if not 0 < self.slow_call_rate_threshold <= 100:
            problems.append("slow_call_rate_threshold: must be in (0, 100]")
        if not self.slow_call_duration_s > 0:
            problems.append("slow_call_duration_s: must be > 0")
        if self.minimum_calls < 1:
            problems.append("minimum_calls: must be >= 1")
        if not self.wait_in_open_s > 0:
            problems.append("wait_in_open_s: must be > 0")
        if self.half_open_calls < 1:
            problems.append("half_open_calls: must be >= 1")
        if not self.max_wait_in_half_open_s >= 0:
            problems.append("max_wait_in_half_open_s: must be >= 0 (0: no limit)")
        if problems:  # one line per problem, so a loader can prefix each with its path
            raise ValueError("\n".join(problems))


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot for metrics and the admin API; rates are -1.0 below `minimum_calls`."""

    state: State
    calls: int
    failed_calls: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    not_permitted: int


# An outcome is 2 bits: failed | slow << 1. The window keeps the sums as outcomes
# enter and leave, so a rate is two divisions whatever the window's size.
_FAILED, _SLOW = 1, 2


class _CountWindow:
    """The last `size` outcomes in a ring."""

    __slots__ = ("_i", "_ring", "_size", "calls", "failed", "slow")

    def __init__(self, size: int) -> None:
        self._ring = [-1] * size  # -1: empty slot
        self._size = size
        self._i = 0
        self.calls = self.failed = self.slow = 0

    def record(self, now: float, outcome: int) -> bool:
        """Add an outcome; True if older ones left the window other than by replacement
        (never, here)."""
        ring, i = self._ring, self._i
        old = ring[i]
        ring[i] = outcome
        if old < 0:
            self.calls += 1
        elif old:  # the common case, a fast success replacing one, changes no sum
            self.failed -= old & _FAILED
            self.slow -= old >> 1
        if outcome:
            self.failed += outcome & _FAILED
            self.slow += outcome >> 1
        i += 1
        self._i = 0 if i == self._size else i
        return False

    def advance(self, now: float) -> None:
        pass


class _TimeWindow:
    """The last `size` seconds, one bucket per second (resilience4j's partial aggregations).
    The newest bucket is the current second's; older buckets are emptied as time moves."""

    __slots__ = ("_calls", "_failed", "_moved", "_second", "_slow", "calls", "failed", "slow")

    def __init__(self, size: int, now: float) -> None:
        self._calls = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size
        self._second = int(now)  # the newest bucket's second
        self._moved = False  # buckets were emptied since the last record()
        self.calls = self.failed = self.slow = 0

    def advance(self, now: float) -> None:
        second = int(now)
        gap = second - self._second
        if gap <= 0:  # the same second (or a clock that stepped back: keep the newest)
            return
        self._moved = True
        calls, failed, slow = self._calls, self._failed, self._slow
        size = len(calls)
        if gap >= size:
            calls[:] = failed[:] = slow[:] = [0] * size
            self.calls = self.failed = self.slow = 0
        else:  # each bucket is emptied at most once per pass of the window: O(1) amortized
            for s in range(self._second + 1, second + 1):
                j = s % size
                self.calls -= calls[j]
                self.failed -= failed[j]
                self.slow -= slow[j]
                calls[j] = failed[j] = slow[j] = 0
        self._second = second

    def record(self, now: float, outcome: int) -> bool:
        """Add an outcome; True if buckets were emptied since the last one (here, or by
        a `metrics()` read in between)."""
        if int(now) != self._second:
            self.advance(now)
        moved, self._moved = self._moved, False
        j = self._second % len(self._calls)
        f, s = outcome & _FAILED, outcome >> 1
        self._calls[j] += 1
        self._failed[j] += f
        self._slow[j] += s
        self.calls += 1
        self.failed += f
        self.slow += s
        return moved


class Breaker:
    def __init__(self, config: BreakerConfig | None = None, clock: Clock = time.monotonic,
                 listeners: Iterable[Listener] = ()) -> None:
        self.config = cfg = config or BreakerConfig()
        self._clock = clock
        self._listeners = list(listeners)
        self._timed = cfg.window_type is WindowType.TIME
        # resilience4j: a count window can never hold more calls than its size.
        self._closed_min = (cfg.minimum_calls if self._timed
                            else min(cfg.minimum_calls, cfg.window_size))
        self._slow_s = cfg.slow_call_duration_s
        self._state = State.CLOSED
        self._window: _CountWindow | _TimeWindow = self._closed_window()
        self._since = 0.0  # when OPEN or HALF_OPEN began
        self._probes_left = 0  # HALF_OPEN: permits still to hand out
        self._probes_out = 0  # HALF_OPEN: permits handed out and not yet answered
        self.not_permitted = 0  # calls refused, for metrics

    @property
    def state(self) -> State:
        """The current state. OPEN turns HALF_OPEN only on the next `try_acquire()`."""
        return self._state

    def add_listener(self, listener: Listener) -> None:
        """`listener(from, to)` after each transition (metrics, logs). It runs on the
        request path: keep it cheap, and do not let it raise."""
        self._listeners.append(listener)

    def try_acquire(self) -> bool:
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return True
        if state is _OPEN:
            if self._clock() - self._since < self.config.wait_in_open_s:
                self.not_permitted += 1
                return False
            self._to(_HALF_OPEN)
        elif state is _FORCED_OPEN:
            self.not_permitted += 1
            return False
        # HALF_OPEN
        if self._probes_left > 0:
            self._probes_left -= 1
            self._probes_out += 1
            return True
        limit = self.config.max_wait_in_half_open_s
        if limit and self._clock() - self._since >= limit:  # a probe was lost
            self._to(_OPEN)
        self.not_permitted += 1
        return False

    def on_result(self, duration_s: float, failed: bool, now: float | None = None) -> None:
        """The outcome of a call `try_acquire()` let through. A time window needs the
        time: pass `now` if it was just read (to measure the duration), or the clock is."""
        state = self._state
        outcome = (_FAILED if failed else 0) | (_SLOW if duration_s >= self._slow_s else 0)
        if state is _CLOSED:
            window = self._window
            if self._timed and now is None:
                now = self._clock()
            moved = window.record(now or 0.0, outcome)
            # The rates were below their thresholds after the last call (or we would be
            # OPEN). A fast success cannot raise them (the sums stay or fall, the count
            # stays or grows), so look only after a failed or slow call, when old calls
            # expired, or when the window has just reached its minimum.
            calls, least = window.calls, self._closed_min
            if (outcome or moved or calls == least) and calls >= least and self._exceeded(window):
                self._to(_OPEN)
        elif state is _HALF_OPEN:
            if self._probes_out == 0:  # a call let through before the opening: not a probe
                return
            self._probes_out -= 1
            window = self._window
            window.record(0.0, outcome)
            if window.calls >= self.config.half_open_calls:
                self._to(_OPEN if self._exceeded(window) else _CLOSED)
        # OPEN, FORCED_OPEN, DISABLED: late outcomes of earlier calls are not counted.

    def release(self) -> None:
        """A call `try_acquire()` let through ended with no verdict: give its permit back."""
        if self._state is _HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1
            self._probes_left += 1

    def transition_to(self, target: State) -> None:
        """An operator's move (admin API); raises IllegalTransition if `_LEGAL` has none."""
        self._to(target)

    def reset(self) -> None:
        """Back to CLOSED with an empty window, from any state."""
        if self._state is State.CLOSED:
            self._window = self._closed_window()
        else:
            self._to(State.CLOSED)

    def retry_after_s(self) -> float:
        """While OPEN, the wait left before probing (for a `Retry-After`); else 0."""
        if self._state is not State.OPEN:
            return 0.0
        return max(0.0, self.config.wait_in_open_s - (self._clock() - self._since))

    def metrics(self) -> BreakerMetrics:
        window = self._window
        if self._timed and self._state is not State.HALF_OPEN:
            window.advance(self._clock())
        calls = window.calls
        enough = calls >= (self.config.half_open_calls if self._state is State.HALF_OPEN
                           else self._closed_min)
        return BreakerMetrics(
            state=self._state, calls=calls, failed_calls=window.failed, slow_calls=window.slow,
            failure_rate=window.failed * 100 / calls if enough else -1.0,
            slow_call_rate=window.slow * 100 / calls if enough else -1.0,
            not_permitted=self.not_permitted)

    def _exceeded(self, window: _CountWindow | _TimeWindow) -> bool:
        calls, cfg = window.calls, self.config
        return (window.failed * 100 >= cfg.failure_rate_threshold * calls
                or window.slow * 100 >= cfg.slow_call_rate_threshold * calls)

    def _closed_window(self) -> _CountWindow | _TimeWindow:
        size = self.config.window_size
        return _TimeWindow(size, self._clock()) if self._timed else _CountWindow(size)

    def _to(self, target: State) -> None:
        source = self._state
        if target not in _LEGAL[source]:
            raise IllegalTransition(source, target)
        if target is State.CLOSED:
            self._window = self._closed_window()
        elif target is State.OPEN:
            self._since = self._clock()
        elif target is State.HALF_OPEN:
            self._since = self._clock()
            self._window = _CountWindow(self.config.half_open_calls)
            self._probes_left = self.config.half_open_calls
            self._probes_out = 0
        self._state = target
        for listener in self._listeners:
            listener(source, target)
