"""Routing, sans-IO: a request head → the route entry that serves it.

Routes are tried in order, first match wins (host, then path prefix); on the
outbound side a request whose Host names a known service goes to that service
when no route matched (the mesh's implicit route, like Linkerd's).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..policy.backoff import Backoff
from ..policy.retry import RetryPolicy
from ..protocol.events import RequestHead
from ..telemetry.metrics import RequestStats
from .cluster import Cluster


def host_of(authority: bytes) -> bytes:
    """`portfolio:8080` → `portfolio`; `[::1]:80` → `[::1]`."""
    if authority.endswith(b"]"):
        return authority
    host, sep, port = authority.rpartition(b":")
    return host if sep and port.isdigit() else authority


class RouteEntry:
    __slots__ = (
        "_rng",
        "_total",
        "backoff",
        "breaker",
        "cluster",
        "headers",
        "host",
        "host_rewrite",
        "name",
        "policy",
        "prefix",
        "response_rewrite",
        "retry",
        "split",
        "stats",
        "timeout",
    )

    def __init__(self, name: str, cluster: Cluster, stats: RequestStats, timeout: float,
                 host: str | None = None, prefix: str = "/",
                 host_rewrite: str | None = None, policy: Any = None,
                 retry: RetryPolicy | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.name = name
        self.cluster = cluster
        self.stats = stats
        self.timeout = timeout
        self.host = host.encode() if host else None
        self.prefix = prefix.encode()
        self.host_rewrite = host_rewrite.encode() if host_rewrite else None
        self.policy = policy  # inbound.policy.RoutePolicy: what a request must pass, or None
        self.breaker: Any = None  # this route's own circuit breaker, else the cluster's
        # Edits the response head on its way to the client (a response transform), or None.
        self.response_rewrite: Callable[[bytes], bytes] | None = None
        self.headers = tuple((k.encode(), v.encode()) for k, v in headers)
        # A traffic split: (cumulative weight, the entry of that backend); see `choose`.
        self.split: tuple[tuple[int, RouteEntry], ...] = ()
        # Which failed tries go again (None or one attempt: none), and how long to wait.
        self.retry = retry if retry is not None and retry.max_attempts > 1 else None
        self.backoff = Backoff(retry.backoff_base_s, retry.backoff_cap_s, cluster.rng) \
            if self.retry is not None and retry is not None else None


    def split_over(self, backends: list[tuple[int, RouteEntry]], rng: random.Random) -> None:
        """Requests matching this entry go to one of `backends`, in proportion to weight."""
        total, table = 0, []
        for weight, entry in backends:
            if weight > 0:
                total += weight
                table.append((total, entry))
        self.split = tuple(table)
        self._rng = rng
        self._total = total

    def choose(self) -> RouteEntry:
        point = self._rng.random() * self._total
        for bound, entry in self.split:
            if point < bound:
                return entry
        return self.split[-1][1]

    def matches_headers(self, head: RequestHead) -> bool:
        return all(head.header(name) == value for name, value in self.headers)


class Router:
    def __init__(self, entries: list[RouteEntry],
                 implicit: Callable[[str], RouteEntry | None] | None = None) -> None:
        self.entries = entries
        self._implicit = implicit
        self._by_host: dict[bytes, RouteEntry | None] = {}
        # One route for everything (the inbound side): no need to look at the request.
        only = entries[0] if len(entries) == 1 and implicit is None else None
        self._only = only if only is not None and only.host is None and only.prefix == b"/" else None

    def route(self, head: RequestHead) -> RouteEntry | None:
        if self._only is not None:
            return self._only
        host = host_of(head.authority)
        target = head.target
        for entry in self.entries:
            if (entry.host is None or entry.host == host) and target.startswith(entry.prefix) \
                    and (not entry.headers or entry.matches_headers(head)):
                return entry.choose() if entry.split else entry
        if self._implicit is None:
            return None
        try:
            implicit = self._by_host[host]
        except KeyError:
            implicit = self._implicit(host.decode("ascii", "replace"))
            if len(self._by_host) < 10_000:  # hosts the app may invent: bounded
                self._by_host[host] = implicit
        if implicit is None or (not implicit.cluster.known and implicit.cluster.settled):
            return None
        return implicit  # possibly not settled yet: the caller waits for discovery
