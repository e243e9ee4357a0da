"""Access logs: one JSON line per request, written by a thread of their own.

How it works
------------
The request path calls `AccessLog.log(...)` when an exchange is over: a plain call that
samples, then appends a tuple to a bounded deque and returns. Nothing is formatted or
written there. A daemon thread wakes every `flush_interval_s` (or when the queue is half
full), turns the records into JSON lines and writes them in one `write()` + `flush()`.
A slow or stuck disk therefore fills the queue, and then records are dropped and counted
(`sidecar_access_log_records_dropped_total{reason="queue_full"}`); traffic never waits.
`close()` writes what is queued and stops the thread.

A line (keys always present, in this order; null when not known):

    {"time": "2025-01-02T03:04:05.678Z", "request_id": "...", "trace_id": "...",
     "direction": "inbound", "service": "portfolio", "method": "GET",
     "authority": "portfolio", "path": "/positions?account=REDACTED", "status": 200,
     "bytes_in": 0, "bytes_out": 512, "duration_ms": 3.25, "upstream_ms": 2.9,
     "upstream": "127.0.0.1:9001", "flags": [], "peer": "spiffe://mesh/ns/default/sa/trading",
     "client": "127.0.0.1:53422"}

`time` is when the request arrived. `flags` name what the sidecar did to the request,
e.g. NO_ROUTE, UPSTREAM_TIMEOUT, CIRCUIT_OPEN (the `ErrorCode` names), RATE_LIMITED,
RETRIED.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii as _quote
from typing import TextIO

from ..protocol.events import Headers
from . import names
from .config import AccessLogConfig, QueryMode
from .propagation import trace_id_hex

__all__ = ["RESPONSE_FLAGS", "AccessLog", "AccessLogConfig", "format_line", "redact_target"]

# Flags the sidecar sets; the data plane may add others (unknown names are logged as given).
RESPONSE_FLAGS = frozenset((
    "NO_ROUTE", "NO_HEALTHY_ENDPOINTS", "UPSTREAM_CONNECT_FAILED", "UPSTREAM_PROTOCOL_ERROR",
    "UPSTREAM_RESET", "UPSTREAM_TIMEOUT", "CIRCUIT_OPEN", "RATE_LIMITED", "UNAUTHENTICATED",
    "FORBIDDEN", "REQUEST_TIMEOUT", "DOWNSTREAM_RESET", "DRAINING", "RETRIED",
    "OVERLOADED",
))

_REDACTED = "REDACTED"




# What log() queues: a tuple (cheap to build), formatted by the writer thread.
_Record = tuple[float, bytes, str, str, str, bytes, bytes, bytes, int, int, int, float,
                float | None, str, tuple[str, ...], str, str, Headers | None]


def redact_target(target: str, mode: QueryMode) -> str:
    path, sep, query = target.partition("?")
    if not sep or mode == "keep":
        return target
    if mode == "drop":
        return path
    params = (p.partition("=")[0] + ("=" + _REDACTED if "=" in p else "")
              for p in query.split("&"))
    return f"{path}?{'&'.join(params)}"


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _iso(t: float) -> str:
    """UTC, milliseconds; strftime once per second, not once per line."""
    global _second
    sec = int(t)
    if _second[0] != sec:
        _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_second[1]}.{int(t * 1000) % 1000:03d}Z"


def _str(value: str) -> str:
    return _quote(value) if value else "null"


def _ms(seconds: float | None) -> str:
    return "null" if seconds is None else repr(round(seconds * 1000.0, 3))


def format_line(record: _Record, query: QueryMode = "redact") -> str:
    """One JSON object and a newline. Written out by hand: `json.dumps` of the same dict
    costs several times more, and the writer thread shares the GIL with the data plane."""
    (arrived, request_id, trace_id, direction, service, method, authority, target, status,
     bytes_in, bytes_out, duration, upstream_s, upstream, flags, peer, client,
     headers) = record
    if not trace_id and headers:
        trace_id = trace_id_hex(headers)
    return (
        f'{{"time":"{_iso(arrived)}","request_id":{_str(request_id.decode("latin-1"))},'
        f'"trace_id":{_str(trace_id)},"direction":{_str(direction)},'
        f'"service":{_str(service)},"method":{_quote(method.decode("latin-1"))},'
        f'"authority":{_str(authority.decode("latin-1"))},'
        f'"path":{_quote(redact_target(target.decode("latin-1"), query))},'
        f'"status":{int(status) or "null"},"bytes_in":{int(bytes_in)},'
        f'"bytes_out":{int(bytes_out)},"duration_ms":{_ms(duration)},'
        f'"upstream_ms":{_ms(upstream_s)},"upstream":{_str(upstream)},'
        f'"flags":[{",".join(map(_quote, flags))}],"peer":{_str(peer)},'
        f'"client":{_str(client)}}}\n')


class AccessLog:
    """The queue the request path feeds and the thread that writes it out."""

    def __init__(self, config: AccessLogConfig, *, stream: TextIO | None = None,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._clock = clock
        self._ratio = config.sample_ratio
        self._errors = config.always_log_errors
        self._max = config.max_queue_size
        self._wake_at = max(1, config.max_queue_size // 2)
        self._records: deque[_Record] = deque()
        self._owns_stream = stream is None and config.path != "-"
        if stream is not None:
            self._stream = stream
        elif config.path == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(config.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.written = self.dropped_full = self.write_failed = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sidecar-access-log",
                                        daemon=True)
        self._thread.start()

    def log(self, *, request_id: bytes, method: bytes, target: bytes, status: int,
            duration_s: float, authority: bytes = b"", trace_id: str = "",
            direction: str = "", service: str = "", bytes_in: int = 0, bytes_out: int = 0,
            upstream_s: float | None = None, upstream: str = "",
            flags: tuple[str, ...] = (), peer: str = "", client: str = "",
            headers: Headers | None = None) -> None:
        """When an exchange is over (`status` 0: no response was sent). Never blocks.

        `trace_id`: the span's, when the request was traced here; otherwise pass the
        request's `headers` (not copied, so not to be changed after) and the writer
        thread reads the caller's trace id from them, off the request path."""
        if self._ratio < 1.0 and not (
                self._errors and (status >= 500 or not status or flags)) \
                and self._rng.random() >= self._ratio:
            return
        records = self._records
        if len(records) >= self._max:
            self.dropped_full += 1
            return
        records.append((self._clock() - duration_s, request_id, trace_id, direction, service,
                        method, authority, target, status, bytes_in, bytes_out, duration_s,
                        upstream_s, upstream, flags, peer, client, headers))
        if len(records) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping  # read before the last drain: nothing is left behind
            self._write_queued()
            if stopping:
                return

    def _write_queued(self) -> None:
        records, query = self._records, self.config.query
        while records:
            n = len(records)
            lines = [format_line(records.popleft(), query) for _ in range(n)]
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):  # disk full, closed stream: count, go on
                self.write_failed += n
            else:
                self.written += n

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what is queued and stop the writer (blocking, at most `timeout_s`; from
        async code use `asyncio.to_thread`). False if the writer did not finish in time."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        done = not self._thread.is_alive()
        if done and self._owns_stream:
            self._stream.close()
        return done

    def metric_samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """For `Metrics.gauges()`: lines written and records dropped, as counters."""
        yield names.ACCESS_LOG_RECORDS_WRITTEN, {}, self.written
        yield names.ACCESS_LOG_RECORDS_DROPPED, {"reason": "queue_full"}, self.dropped_full
        yield names.ACCESS_LOG_RECORDS_DROPPED, {"reason": "write_failed"}, self.write_failed
