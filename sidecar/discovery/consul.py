"""Consul discovery: endpoints from blocking queries on `/v1/health/service/<name>?passing`.

How this works. Each watched service gets one task that loops on a blocking query
(https://developer.hashicorp.com/consul/api-docs/features/blocking):

- the first read goes out with index 0 (answered at once); every later read carries the
  X-Consul-Index of the previous answer and hangs until something changes or `wait`
  (jittered, so many sidecars do not wake together) runs out;
- the index rules are `next_index`: an index that goes backwards (a restarted server, a
  snapshot restore) resets to 0, which restarts the loop with a full read; an index of 0 or
  less after an answer is taken as 1, so a buggy answer never turns into a busy loop;
- an answer whose index did not move, returned faster than `MIN_SPACING`, is followed by a
  short pause (the docs ask clients to rate-limit); a real change always moves the index,
  so this never delays one;
- an error (Consul unreachable, 5xx, timeout) keeps the last good set untouched, records
  the error and since when (`describe()`), and retries after a capped, jittered back-off;
  the retry is a fresh read (index 0), because a restarted server may be behind our index
  and would hold a query on it for all of `wait`. Its answer still goes through
  `next_index` against the index from before the error, so a backwards index is seen.

The pure pieces (`next_index`, `endpoints_from_health`, `Backoff`, `duration`) take values and
return values; only `ConsulDiscovery` touches the network, through py-consul's asyncio client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import consul
import consul.aio

from ..config.consul import ConsulConfig, RegistrationConfig, split_address
from ..config.model import Endpoint
from ..core.watch import Watched
from .base import Discovery, EndpointSet

__all__ = ["Backoff", "ConsulConfig", "ConsulDiscovery", "RegistrationConfig",
           "consul_client", "duration", "endpoints_from_health", "next_index", "split_address"]

log = logging.getLogger("sidecar.discovery.consul")

# An unchanged index returned sooner than this is followed by a pause of this long.
MIN_SPACING = 0.05
# A Consul agent that comes back (restarted, or reachable again) may answer "no instance"
# for a few moments: it re-syncs its registrations and runs its checks first. Such an
# answer, when it would empty a set that had endpoints, is believed only once it has
# lasted this long; meanwhile the last good set stays and Consul is asked again often.
RECOVERY_GRACE = 5.0
RECOVERY_RECHECK = 0.25
# What one request to Consul may raise when Consul is down, slow or unhappy.
CONSUL_ERRORS: tuple[type[BaseException], ...] = (
    consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError, ValueError)


def next_index(previous: int, returned: int) -> int:
    """The index for the next blocking query, after an answer carrying `returned`.

    Zero or less (a Consul bug the docs warn about): 1, never 0, so the next query still
    blocks instead of returning at once forever (any real index is above 1, so a query on
    1 answers at once with the current state, like a fresh read).
    Backwards (the state behind the query was rebuilt): 0, a fresh non-blocking read.
    """
    if returned <= 0:
        return 1
    if returned < previous:
        return 0
    return returned


def duration(seconds: float) -> str:
    """A Go duration string Consul accepts ("1500ms")."""
    return f"{max(1, round(seconds * 1000))}ms"


class Backoff:
    """Capped exponential back-off with full jitter: uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        # never quite zero: a dead agent must not turn into a busy loop
        return max(self.base / 10, self.rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


def endpoints_from_health(entries: object) -> tuple[Endpoint, ...]:
    """Endpoints from a /v1/health/service answer, sorted so equal sets compare equal.

    Address: Service.Address, else Node.Address. Weight: Service.Weights.Passing (1).
    Raises ValueError on an answer of the wrong shape.
    """
    if not isinstance(entries, list):
        raise ValueError(f"health answer is not a list: {type(entries).__name__}")
    out: list[Endpoint] = []
    for entry in entries:
        svc = _mapping(entry, "Service")
        node = _mapping(entry, "Node")
        host = str(svc.get("Address") or node.get("Address") or "")
        port = svc.get("Port")
        if not host or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"instance without address/port: {svc.get('ID')!r}")
        weights = svc.get("Weights") or {}
        weight = weights.get("Passing", 1) if isinstance(weights, Mapping) else 1
        meta = svc.get("Meta") or {}
        out.append(Endpoint(
            host=host, port=port,
            weight=weight if isinstance(weight, int) and weight > 0 else 1,
            tags=tuple(str(t) for t in svc.get("Tags") or ()),
            meta=tuple(sorted((str(k), str(v)) for k, v in meta.items()))))
    out.sort(key=lambda e: (e.host, e.port, e.weight, e.tags, e.meta))
    return tuple(out)


def _mapping(entry: object, key: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValueError("health entry is not an object")
    value = entry.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"health entry {key} is not an object")
    return value


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# -- the I/O shell ---------------------------------------------------------------------------

def consul_client(config: ConsulConfig) -> consul.aio.Consul:
    """py-consul's asyncio client for `config`; call inside a running loop, then close()."""
    scheme, host, port = split_address(config.address)
    with warnings.catch_warnings():
        # py-consul 1.8 passes aiohttp's deprecated `ssl_context=` when it builds its connector.
        warnings.filterwarnings("ignore", "ssl_context is deprecated", DeprecationWarning)
        client = consul.aio.Consul(host=host, port=port, scheme=scheme,
                                   dc=config.datacenter, token=config.token)
    if config.token is not None:
        client.token = config.token  # py-consul lets $CONSUL_HTTP_TOKEN win; the config wins here
    return client


@dataclass(eq=False, slots=True)
class _Followed:
    """One watched service: its value and what the loop knows about it."""

    watched: Watched[EndpointSet]
    index: int = 0
    answers: int = 0
    resets: int = 0
    last_error: str | None = None
    error_since: float | None = None
    last_answer: float | None = None
    held_since: float | None = None  # an empty answer after a recovery, not believed yet


class ConsulDiscovery(Discovery):
    def __init__(self, config: ConsulConfig, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._clock = clock  # wall-clock time for describe(); sleeps are the loop's
        self._rng = rng or random.Random()
        self._followed: dict[str, _Followed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: consul.aio.Consul | None = None

    def watch(self, service: str) -> Watched[EndpointSet]:
        f = self._followed.get(service)
        if f is None:
            f = self._followed[service] = _Followed(Watched(EndpointSet(service, settled=False)))
            if self._client is not None:
                self._spawn(service, f)
        return f.watched

    def describe(self) -> dict[str, object]:
        services: dict[str, object] = {}
        errors: list[tuple[float, str]] = []
        for name, f in sorted(self._followed.items()):
            value = f.watched.value
            services[name] = {
                "known": value.known, "endpoints": [str(e) for e in value.endpoints],
                "index": f.index, "answers": f.answers, "index_resets": f.resets,
                "last_answer": f.last_answer, "last_error": f.last_error,
                "error_since": f.error_since}
            if f.last_error is not None and f.error_since is not None:
                errors.append((f.error_since, f.last_error))
        first = min(errors) if errors else None
        return {"source": "consul", "address": self.config.address,
                "datacenter": self.config.datacenter, "services": services,
                "last_error": first[1] if first else None,
                "error_since": first[0] if first else None}

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = consul_client(self.config)
        for name, f in self._followed.items():
            self._spawn(name, f)

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _spawn(self, service: str, f: _Followed) -> None:
        task = asyncio.get_running_loop().create_task(self._follow(service, f),
                                                      name=f"consul-watch:{service}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, service: str, f: _Followed) -> None:
        backoff = Backoff(self.config.backoff_base, self.config.backoff_cap, self._rng)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # After an error, read afresh (index 0): a restarted server may now be behind
            # our index, and a query on an index it has not reached hangs for all of `wait`.
            # So is every read while an empty answer after a recovery is being held.
            afresh = f.last_error is not None or f.held_since is not None
            query_index = 0 if afresh else f.index
            try:
                returned, endpoints = await self._read(service, query_index)
                # Consul answers [] for any name; only the catalog says a service exists.
                known = bool(endpoints) or await self._registered(service)
            except CONSUL_ERRORS as exc:
                self._failed(service, f, describe_error(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            if self._hold(service, f, query_index, endpoints, loop.time()):
                await asyncio.sleep(RECOVERY_RECHECK)
                continue
            previous = f.index
            f.index = next_index(previous, returned)
            if f.index == 0:
                f.resets += 1
                log.info("consul index went backwards, reading afresh",
                         extra={"service": service, "was": previous, "now": returned})
            f.answers += 1
            f.last_answer = self._clock()
            if f.last_error is not None:
                log.info("consul answers again for %s", service)
            f.last_error = f.error_since = None
            f.watched.set(EndpointSet(service, endpoints, known=known))
            if f.index == previous and loop.time() - started < MIN_SPACING:
                await asyncio.sleep(MIN_SPACING)  # an early "no change": rate-limit

    def _hold(self, service: str, f: _Followed, query_index: int,
              endpoints: tuple[Endpoint, ...], now: float) -> bool:
        """Keep the last good set instead of an empty answer read afresh after a recovery
        (see RECOVERY_GRACE)? The next read is afresh too, until the answer is believed."""
        recovering = query_index == 0 and f.answers > 0
        if endpoints or not recovering or not f.watched.value.endpoints:
            f.held_since = None
            return False
        if f.held_since is None:
            f.held_since = now
            log.info("consul answers no instance of %s right after recovering; keeping the "
                     "last known endpoints for up to %gs", service, RECOVERY_GRACE)
        if now - f.held_since >= RECOVERY_GRACE:
            f.held_since = None
            return False
        # f.index stays the one from before the outage, so that the answer finally
        # believed is still compared against it and a backwards index is seen.
        f.last_error = f.error_since = None
        return True

    async def _registered(self, service: str) -> bool:
        """Has the catalog any instance of `service`, passing or not? (Asked only when
        none passes: it tells a service that is down from a name nobody uses.)"""
        client = self._client
        assert client is not None, "ConsulDiscovery.start() not called"
        _, nodes = await asyncio.wait_for(client.catalog.service(service), 10.0)
        return bool(nodes)

    async def _read(self, service: str, index: int) -> tuple[int, tuple[Endpoint, ...]]:
        """One (blocking, unless index is 0) read of the passing instances."""
        client = self._client
        assert client is not None, "ConsulDiscovery.start() not called"
        wait = self.config.wait * self._rng.uniform(0.9, 1.1)
        # Consul adds up to wait/16 of its own jitter; allow that plus some slack.
        timeout = wait * (1 + 1 / 16) + 5.0
        raw_index, entries = await asyncio.wait_for(
            client.health.service(service, index=index, wait=duration(wait), passing=True),
            timeout)
        return int(raw_index), endpoints_from_health(entries)

    def _failed(self, service: str, f: _Followed, message: str) -> None:
        if not f.watched.value.settled:  # never answered: requests waiting for it give up
            f.watched.set(EndpointSet(service))
        if f.last_error is None:
            f.error_since = self._clock()
            log.warning("consul unreachable for %s, keeping the last known endpoints: %s",
                        service, message)
        f.last_error = message

