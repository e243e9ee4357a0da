"""Metrics kept as plain numbers on the hot path, turned into Prometheus text on scrape.

A `prometheus_client` labelled child costs a lock and a dict lookup per update; a
proxy hop has ~20 µs in all. So requests are counted in `RequestStats` (ints in a
dict, a list of bucket counts) and a custom collector renders them when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from . import names

# A list of floats, scanned in order: compiled, reading one is an unboxing, where a tuple
# constant would be boxed again element by element for `bisect` on every call.
_BOUNDS: Final[list[float]] = list(names.DURATION_BUCKETS)


# A request method as a label: the standard ones, and `other` for whatever else a client
# invents (labels stay bounded).
_METHODS: Final = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                     "OPTIONS", "CONNECT", "TRACE")}


class RequestStats:
    """Requests of one (direction, service, route): counts by method and status, a duration
    histogram, bytes in and out."""

    __slots__ = ("_by_method", "buckets", "bytes_in", "bytes_out", "direction", "route",
                 "service", "sum")

    def __init__(self, direction: str, service: str, route: str = "") -> None:
        self.direction = direction
        self.service = service
        self.route = route
        # method -> status -> requests: two lookups on keys whose hashes are cheap (an int,
        # a 3-7 byte method), where a (method, status) key was a tuple built and hashed
        # per request.
        self._by_method: dict[bytes, dict[int, int]] = {}
        self.buckets = [0] * (len(_BOUNDS) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0
        self.bytes_in = 0  # request bodies received
        self.bytes_out = 0  # response bodies sent

    def observe(self, status: int, seconds: float, method: bytes = b"GET", bytes_in: int = 0,
                bytes_out: int = 0) -> None:
        by_status = self._by_method.get(method)
        if by_status is None:
            by_status = self._by_method[method] = {}
        by_status[status] = by_status.get(status, 0) + 1
        bucket = 0  # the first whose bound is >= seconds (Prometheus's `le`); else +Inf
        for bound in _BOUNDS:
            if seconds <= bound:
                break
            bucket += 1
        self.buckets[bucket] += 1
        self.sum += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def codes(self) -> dict[tuple[bytes, int], int]:
        """Requests by (method, status)."""
        return {(method, status): n for method, by_status in self._by_method.items()
                for status, n in by_status.items()}

    def by_code(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for by_status in self._by_method.values():
            for code, n in by_status.items():
                out[code] = out.get(code, 0) + n
        return out


class _Uncounted(RequestStats):
    """What `requests()` gives with request metrics off: observes nothing."""

    def observe(self, status: int, seconds: float, method: bytes = b"GET", bytes_in: int = 0,
                bytes_out: int = 0) -> None:
        pass


class Metrics:
    """The sidecar's metric state; `render()` gives the Prometheus exposition text."""

    def __init__(self, request_metrics: bool = True) -> None:
        self.request_metrics = request_metrics
        self._stats: dict[tuple[str, str, str], RequestStats] = {}
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: list[Callable[[], Iterable[tuple[str, dict[str, str], float]]]] = []
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # process CPU, memory, open fds

    def requests(self, direction: str, service: str, route: str = "") -> RequestStats:
        key = (direction, service, route)
        stats = self._stats.get(key)
        if stats is None:
            kind = RequestStats if self.request_metrics else _Uncounted
            stats = self._stats[key] = kind(direction, service, route)
        return stats

    def inc(self, name: str, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + 1.0

    def gauges(self, source: Callable[[], Iterable[tuple[str, dict[str, str], float]]]) -> None:
        """Register a function read at scrape time, yielding (name, labels, value);
        names ending in `_total` are exported as counters."""
        self._gauges.append(source)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def all_stats(self) -> list[RequestStats]:
        return list(self._stats.values())


_HELP = {
    names.REQUESTS_TOTAL: "Requests proxied, by direction, service and status code.",
    names.REQUEST_DURATION: "Time from request head to response end, by direction, service, route.",
    names.REQUEST_BYTES: "Request body bytes received, by direction, service and route.",
    names.RESPONSE_BYTES: "Response body bytes sent, by direction, service and route.",
    names.CONNECTIONS_ACTIVE: "Client connections open now, by listener.",
    names.CONNECTIONS_TOTAL: "Client connections accepted, by listener.",
    names.CONNECTIONS_REJECTED: "Client connections refused, by listener and reason.",
    names.UPSTREAM_POOL: "Upstream connections by service and state (idle or busy).",
    names.UPSTREAM_CONNECT_ERRORS: "Failed connection attempts to upstream endpoints.",
    names.CONFIG_RELOADS: "Configuration reloads, by result.",
    names.DISCOVERY_ENDPOINTS: "Endpoints known for each service.",
    names.UPSTREAM_ENDPOINTS: "Endpoints of each service, balanced over (healthy) or set aside.",
    names.CIRCUIT_BREAKER_STATE: "Circuit breaker state per service or route (1: the current).",
    names.CIRCUIT_BREAKER_TRANSITIONS: "Circuit breaker transitions, by the state entered.",
    names.RETRIES: "Retries sent, by service and the condition that caused them.",
    names.RETRY_BUDGET_EXHAUSTED: "Retries not sent because the service's retry budget was spent.",
    names.POLICY_DENIALS: "Requests refused by inbound policy (or that would be, in dry-run).",
    names.RATE_LIMIT_STORE_UP: "1 while the global rate-limit store answers, 0 while falling back.",
    names.TLS_HANDSHAKES: "TLS handshakes on a listener, by result (ok or the failure reason).",
    names.CERTIFICATE_EXPIRY: "Seconds until this sidecar's certificate expires.",
    names.CERTIFICATE_ROTATIONS: "Certificate sets swapped in after the first.",
    names.CERTIFICATE_LOAD_FAILURES: "Certificate sets refused (the current one stayed).",
    names.TRACE_SPANS_EXPORTED: "Spans handed to the OTLP exporter.",
    names.TRACE_SPANS_DROPPED: "Spans lost rather than waited for, by reason.",
    names.ACCESS_LOG_RECORDS_WRITTEN: "Access-log lines written.",
    names.ACCESS_LOG_RECORDS_DROPPED: "Access-log records lost rather than waited for, by reason.",
}


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ["direction", "service", "route"]
        reqs = CounterMetricFamily(names.REQUESTS_TOTAL.removesuffix("_total"),
                                   _HELP[names.REQUESTS_TOTAL],
                                   labels=[*labels, "method", "code"])
        hist = HistogramMetricFamily(names.REQUEST_DURATION, _HELP[names.REQUEST_DURATION],
                                     labels=labels)
        received = CounterMetricFamily(names.REQUEST_BYTES.removesuffix("_total"),
                                       _HELP[names.REQUEST_BYTES], labels=labels)
        sent = CounterMetricFamily(names.RESPONSE_BYTES.removesuffix("_total"),
                                   _HELP[names.RESPONSE_BYTES], labels=labels)
        for st in self.m.all_stats():
            codes = st.codes()
            if not codes:
                continue  # never used (e.g. a Host nobody serves): no series for it
            values = [st.direction, st.service, st.route]
            methods: dict[tuple[str, int], int] = {}
            for (raw, code), n in codes.items():
                key = (_METHODS.get(raw, "other"), code)
                methods[key] = methods.get(key, 0) + n
            for (label, code), n in sorted(methods.items()):
                reqs.add_metric([*values, label, str(code)], n)
            cumulative, acc = [], 0
            for bound, n in zip((*map(repr, _BOUNDS), "+Inf"), st.buckets, strict=True):
                acc += n
                cumulative.append((bound, acc))
            hist.add_metric(values, cumulative, st.sum)
            received.add_metric(values, st.bytes_in)
            sent.add_metric(values, st.bytes_out)
        yield reqs
        yield hist
        yield received
        yield sent
        yield from self._counters()
        yield from self._gauge_families()

    def _counters(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for (name, labels), value in sorted(self.m.counters.items()):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = CounterMetricFamily(
                    name.removesuffix("_total"), _HELP.get(name, name), labels=[k for k, _ in labels])
            fam.add_metric([v for _, v in labels], value)
        yield from families.values()

    def _gauge_families(self) -> Iterator[Metric]:
        # Read at scrape time; a name ending in _total is a counter kept elsewhere.
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for source in self.m._gauges:
            for name, labels, value in source():
                fam = families.get(name)
                if fam is None:
                    if name.endswith("_total"):
                        fam = CounterMetricFamily(name.removesuffix("_total"),
                                                  _HELP.get(name, name), labels=list(labels))
                    else:
                        fam = GaugeMetricFamily(name, _HELP.get(name, name), labels=list(labels))
                    families[name] = fam
                fam.add_metric(list(labels.values()), value)
        yield from families.values()


def summary(stats: list[RequestStats]) -> dict[str, Any]:
    """The seed's /internal/v1/metrics numbers, for people (JSON) rather than Prometheus."""
    by_code = [s.by_code() for s in stats]
    total = sum(sum(codes.values()) for codes in by_code)
    errors = sum(n for codes in by_code for c, n in codes.items() if c >= 500)
    return {"request_count": total, "error_rate": errors / total if total else 0.0}
