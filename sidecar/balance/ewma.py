"""Per-endpoint load: in-flight requests, peak-EWMA latency, penalties; the handle a pick returns.

Every balancer keeps one `Load` per endpoint in a `Loads` table keyed by the endpoint's
address. A pick returns a `Handle`: it counts the request as pending until the caller
calls `done(latency_s, ok)`, which also feeds the latency estimate. A new table built
over the next endpoint set (discovery changed) adopts the `Load` *objects* of the
addresses that stay, so learned latencies survive and handles taken before the rebuild
still settle on the live record.

Peak EWMA (Finagle's `PeakEwma`, tower's `peak_ewma`):
- a sample above the current estimate replaces it at once (the peak): slowness is
  believed immediately;
- otherwise the estimate moves toward the sample by `1 - exp(-elapsed / decay)`, where
  `elapsed` is the time since the previous sample: a time-weighted moving average;
- between samples the estimate fades toward zero with the same time constant, so an
  endpoint that was slow and then left alone is tried again after about
  `decay * ln(slow / fast)` and the balancer learns whether it recovered;
- before its first sample an endpoint costs nothing while it has no request in flight
  (so it gets one, a probe, at once) and `default_rtt` per request in flight after that.

Reading an estimate does not change it (tower folds the idle decay into the record on
every read, which makes a sample's weight depend on how often the record was read).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Addressed", "Ewma", "Handle", "Load", "Loads"]

# Added to the cost of a penalized endpoint: any unpenalized choice is cheaper.
PENALTY = 1e9


class Addressed(Protocol):
    """What a balancer needs of an endpoint: its share of traffic and a stable identity."""

    @property
    def weight(self) -> int: ...

    @property
    def address(self) -> Hashable: ...


E = TypeVar("E", bound=Addressed)


@dataclass(frozen=True, slots=True)
class Ewma:
    # Time constant of the average, in seconds: a sample's influence falls to 1/e after this.
    decay: float = 10.0
    # What an endpoint with no sample yet counts as (linkerd2-proxy's default, 30 ms).
    default_rtt: float = 0.030
    # A failed request counts as at least this slow, so an endpoint that fails fast
    # (connection refused, an instant 503) does not look like the quickest and draw all
    # the traffic. 0 counts failures at their measured latency.
    failure_rtt: float = 1.0

    def __post_init__(self) -> None:
        if not self.decay > 0:
            raise ValueError(f"decay: must be > 0, got {self.decay}")
        if not self.default_rtt >= 0:
            raise ValueError(f"default_rtt: must be >= 0, got {self.default_rtt}")
        if not self.failure_rtt >= 0:
            raise ValueError(f"failure_rtt: must be >= 0, got {self.failure_rtt}")


class _Group:
    """The in-flight total of one table, kept up to date by its records (ring hash reads it)."""

    __slots__ = ("pending",)

    def __init__(self, pending: int) -> None:
        self.pending = pending


class Load:
    __slots__ = ("estimate", "group", "penalty_until", "pending", "sampled", "settings", "stamp")

    def __init__(self, settings: Ewma, group: _Group) -> None:
        self.settings = settings
        self.group = group
        self.pending = 0
        self.sampled = False
        self.estimate = 0.0  # seconds, as of `stamp`
        self.stamp = 0.0
        self.penalty_until = -math.inf

    def latency(self, now: float) -> float:
        """The peak-EWMA latency estimate at `now`, in seconds."""
        if not self.sampled:
            return self.settings.default_rtt
        return self.estimate * math.exp(-max(now - self.stamp, 0.0) / self.settings.decay)

    def cost(self, now: float) -> float:
        """Latency * (pending + 1): what sending one more request here is expected to cost."""
        if self.sampled:  # latency(), inlined: this runs twice per pick
            settings = self.settings
            latency = self.estimate * math.exp(-max(now - self.stamp, 0.0) / settings.decay)
        elif self.pending:
            latency = self.settings.default_rtt
        else:
            # Never measured and nothing in flight: free, so it is tried at once. One
            # request at a time until it answers (then it counts as default_rtt each):
            # without this a new endpoint among fast ones (< default_rtt) is never picked.
            latency = 0.0
        cost = latency * (self.pending + 1)
        return cost + PENALTY if now < self.penalty_until else cost

    def observe(self, latency_s: float, now: float) -> None:
        if not self.sampled:
            self.sampled = True
            self.estimate = latency_s  # the first sample replaces the default outright
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / self.settings.decay)
            current = self.estimate * w
            self.estimate = latency_s if latency_s > current else current + latency_s * (1 - w)
        self.stamp = now

    def sample(self, latency_s: float, ok: bool) -> float:
        """What a request's outcome teaches: a failure counts as at least `failure_rtt`."""
        return latency_s if ok else max(latency_s, self.settings.failure_rtt)


class Handle(Generic[E]):
    """One pick: `endpoint` is the choice; call `done` (or `cancel`) exactly once when it ends."""

    __slots__ = ("_clock", "_load", "endpoint")

    def __init__(self, endpoint: E, load: Load, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self._load: Load | None = load
        self._clock = clock
        load.pending += 1
        load.group.pending += 1

    def done(self, latency_s: float, ok: bool = True) -> None:
        """The request ended after `latency_s` (to the response head); `ok=False` if it failed."""
        load, self._load = self._load, None  # a second call is a no-op
        if load is not None:
            load.pending -= 1
            load.group.pending -= 1
            load.observe(latency_s if ok else load.sample(latency_s, ok), self._clock())

    def cancel(self) -> None:
        """The request ended without saying anything about the endpoint (the client left)."""
        load, self._load = self._load, None
        if load is not None:
            load.pending -= 1
            load.group.pending -= 1

    def __repr__(self) -> str:
        return f"Handle({self.endpoint!r})"


class Loads(Generic[E]):
    """The endpoints of one balancer and their `Load`s, index-aligned."""

    def __init__(self, endpoints: Sequence[E], clock: Callable[[], float],
                 settings: Ewma | None = None, previous: Loads[E] | None = None) -> None:
        self.endpoints = list(endpoints)
        self.clock = clock
        if settings is None:
            settings = previous.settings if previous is not None else Ewma()
        self.settings: Ewma = settings
        old = previous.by_address if previous is not None else {}
        self.group = group = _Group(0)
        self.by_address: dict[Hashable, Load] = {}
        self.index: dict[Hashable, int] = {}
        self.records: list[Load] = []
        self.penalized_until = -math.inf  # the latest penalty deadline: most picks skip the scan
        for i, endpoint in enumerate(self.endpoints):
            address = endpoint.address
            load = self.by_address.get(address) or old.get(address)
            if load is None:
                load = Load(settings, group)
            elif load.group is not group:  # adopted: now counted in this table's total
                load.settings = settings
                load.group = group
                group.pending += load.pending
            self.by_address[address] = load
            self.penalized_until = max(self.penalized_until, load.penalty_until)
            self.index.setdefault(address, i)
            self.records.append(load)

    def __len__(self) -> int:
        return len(self.endpoints)

    def index_of(self, endpoint: E | None) -> int:
        """The position of `endpoint` (matched by address, so across rebuilds), or -1."""
        return -1 if endpoint is None else self.index.get(endpoint.address, -1)

    def handle(self, i: int) -> Handle[E]:
        return Handle(self.endpoints[i], self.records[i], self.clock)

    def penalize(self, endpoint: E, seconds: float) -> None:
        load = self.by_address.get(endpoint.address)
        if load is not None:
            load.penalty_until = max(load.penalty_until, self.clock() + seconds)
            self.penalized_until = max(self.penalized_until, load.penalty_until)

    def penalized(self) -> list[int]:
        """The positions of the endpoints penalized now, ascending."""
        if self.penalized_until == -math.inf:  # the common case reads no clock
            return []
        now = self.clock()
        if now >= self.penalized_until:
            self.penalized_until = -math.inf
            return []
        return [i for i, load in enumerate(self.records) if now < load.penalty_until]

    def observe(self, endpoint: E, latency_s: float, ok: bool = True) -> None:
        """A latency sample from outside a pick (a health check); pending is not touched."""
        load = self.by_address.get(endpoint.address)
        if load is not None:
            load.observe(load.sample(latency_s, ok), self.clock())

    def weights(self) -> list[int]:
        # Config and Consul guarantee weights >= 1; a zero here would make an endpoint
        # unreachable by every balancer but round robin, so it counts as 1.
        return [max(endpoint.weight, 1) for endpoint in self.endpoints]


class Balanced(Generic[E]):
    """What every balancer shares: the table, penalties and out-of-band samples."""

    loads: Loads[E]

    def penalize(self, endpoint: E, seconds: float) -> None:
        """Weigh `endpoint` down for `seconds` (it answered 429 / Retry-After)."""
        self.loads.penalize(endpoint, seconds)

    def observe(self, endpoint: E, latency_s: float, ok: bool = True) -> None:
        """A latency sample from outside a pick (a health check); pending is not touched."""
        self.loads.observe(endpoint, latency_s, ok)
