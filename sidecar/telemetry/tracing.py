"""Tracing for a callback data plane: one server span per inbound hop, one client span per
outbound try, exported by OTLP/HTTP in batches off the event loop.

How it works
------------
The data plane is asyncio Protocols with no coroutine per request, so there is no
contextvar to carry a "current span". Spans are plain objects the caller holds:

    span = tracer.start_server(head.headers, head.method, head.target, authority=..., peer=...)
    # None: not traced here, forward the headers untouched. Otherwise drop the received
    # PROPAGATION_HEADERS and send span.child_headers() to the app instead.
    span.end(status)                      # when the response is done (or error=...)

    out = tracer.start_outbound(head.headers, head.method, head.target, authority=...)
    attempt = out.start_try(("10.0.0.7", 8080), attempt=1)   # per try: retries are
    attempt.child_headers(); attempt.end(status)              # sibling client spans

Sampling is parent-based with a trace-id ratio (OpenTelemetry's
`ParentBased(TraceIdRatioBased(ratio))`): a caller's sampled flag is obeyed; with no flag
(B3 ids only) or no caller, the low 64 bits of the trace id decide, so every hop of one
trace decides alike. The three outcomes:

  None         the caller decided "not sampled" (or the ratio did, for a caller's trace
               id): nothing to do, the caller's headers already say so. Costs a header scan.
  Unsampled    no caller context and the ratio said no: a new trace id goes on with the
               sampled flag off, so the next hops do not start traces of their own.
               One slice of a ready block (`NewTraces`): no span, no clock read.
  ServerSpan / ClientSpan   sampled: a small slotted record; `end()` appends it to a
               bounded queue.

Why not the OpenTelemetry SDK: measured here its `Tracer.start_span` costs ~22 µs per span
(locks, span processors, attribute bounding), and turning a record into its `ReadableSpan`
and encoding that with protobuf ~135 µs more, each as much as a whole proxy hop. So an
export thread encodes the queued records itself (`otlp.TraceEncoder`, ~10 µs a span) and
POSTs each batch to the OTLP/HTTP endpoint (`otlp.HttpExporter`). When the queue is full
(collector slow or down) new spans are dropped and counted, never waited for; a failed
export is counted too.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping

from .. import __version__
from ..protocol.events import Headers
from . import names
from .config import TracingConfig
from .new_traces import NewTraces
from .otlp import AttributeValue, Exporter, HttpExporter, SpanKind, TraceEncoder, env_pairs
from .propagation import Unsampled, b3, extract, traceparent

__all__ = ["ClientSpan", "Outbound", "ServerSpan", "Tracer", "TracingConfig", "Unsampled"]

_MASK64 = (1 << 64) - 1
Endpoint = tuple[str, int]
Sampled = tuple[int, int, bytes, bool]  # trace id, parent span id, tracestate, from_b3
Attrs = dict[str, str | int]


class _Span:
    """A sampled span being recorded: ids, times and attributes, nothing else."""

    __slots__ = ("_queue", "attrs", "end_ns", "error", "from_b3", "kind", "name",
                 "parent_id", "span_id", "start_ns", "trace_id", "tracestate")

    error_from = 500  # the status from which the span is an error (semconv)

    def __init__(self, queue: _SpanQueue, kind: SpanKind, name: str, trace_id: int,
                 span_id: int, parent_id: int, tracestate: bytes, from_b3: bool,
                 start_ns: int, attrs: Attrs) -> None:
        self._queue = queue
        self.kind = kind
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a root span
        self.tracestate = tracestate
        self.from_b3 = from_b3
        self.start_ns = start_ns
        self.end_ns = 0
        self.attrs = attrs
        self.error: str | None = None

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def child_headers(self) -> Headers:
        """The context to send on, naming this span as the parent."""
        out = [(b"traceparent", traceparent(self.trace_id, self.span_id, True))]
        if self.tracestate:
            out.append((b"tracestate", self.tracestate))
        if self.from_b3:
            out.append((b"b3", b3(self.trace_id, self.span_id, True)))
        return out

    def set(self, key: str, value: str | int) -> None:
        """An attribute known only later (e.g. `sidecar.upstream.endpoint`)."""
        self.attrs[key] = value

    def end(self, status: int = 0, error: str | None = None) -> None:
        """Once, when the exchange is over: `status` as answered (0: none was), `error`
        the response flag or error code if the sidecar failed it (e.g. UPSTREAM_TIMEOUT)."""
        if self.end_ns:
            return
        self.end_ns = time.time_ns()
        if status:
            self.attrs["http.response.status_code"] = status
        if error is not None or not status or status >= self.error_from:
            self.error = error or (str(status) if status else "no_response")
            self.attrs["error.type"] = self.error
        self._queue.offer(self)


class ServerSpan(_Span):
    __slots__ = ()


class ClientSpan(_Span):
    __slots__ = ()
    error_from = 400  # a client span is an error from 4xx on (semconv)


class Outbound:
    """One outbound request: its trace, parent and attributes; a client span per try."""

    __slots__ = ("attrs", "from_b3", "name", "parent_id", "trace_id", "tracer", "tracestate")

    def __init__(self, tracer: Tracer, trace_id: int, parent_id: int, tracestate: bytes,
                 from_b3: bool, name: str, attrs: Attrs) -> None:
        self.tracer = tracer
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.tracestate = tracestate
        self.from_b3 = from_b3
        self.name = name
        self.attrs = attrs

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def start_try(self, endpoint: Endpoint, attempt: int = 1) -> ClientSpan:
        """A client span for one try at `endpoint` (attempt 1 is the first; later ones
        carry `http.request.resend_count`)."""
        attrs = dict(self.attrs)
        host, port = endpoint
        attrs["network.peer.address"] = host
        attrs["network.peer.port"] = port
        attrs["sidecar.upstream.endpoint"] = f"{host}:{port}"
        if attempt > 1:
            attrs["http.request.resend_count"] = attempt - 1
        t = self.tracer
        return ClientSpan(t._queue, SpanKind.CLIENT, self.name, self.trace_id,
                          t._rng.getrandbits(64) or 1, self.parent_id, self.tracestate,
                          self.from_b3, time.time_ns(), attrs)


class Tracer:
    """One per sidecar process: the sampler, the span queue and its export thread."""

    def __init__(self, config: TracingConfig, *, exporter: Exporter | None = None,
                 rng: random.Random | None = None,
                 env: Mapping[str, str] = os.environ) -> None:
        """`exporter`: where encoded batches go (default: POSTed to `config.endpoint`);
        `env`: the OTEL_* variables read (resource attributes, exporter headers...)."""
        self.config = config
        self._rng = rng or random.Random()
        self._bound = round(config.sample_ratio * (1 << 64))
        self._new = NewTraces(self._bound) if rng is None else \
            NewTraces(self._bound, rng.randbytes)
        encoder = TraceEncoder(_resource_attributes(config, env), "sidecar", __version__)
        self._queue = _SpanQueue(
            exporter or HttpExporter(config.endpoint, config.export_timeout_s, env),
            encoder, max_size=config.max_queue_size,
            batch_size=config.max_export_batch_size, delay_s=config.schedule_delay_s)

    def decide(self, headers: Headers, context: bool = True) -> Sampled | bytes | None:
        """(trace id, parent span id, tracestate, from_b3) when sampled; for a new trace
        not sampled here, its ids to send on (b"{trace id}-{span id}", see `NewTraces`); None for a
        caller's trace not sampled. `context=False`: the caller knows the headers carry no
        trace context (the codec saw none). Deciding first spares an unsampled request
        the span's arguments."""
        ctx = extract(headers, ids_if_unsampled=False) if context else None
        if ctx is None:
            new = self._new.take()
            if isinstance(new, bytes):
                return new
            return new, 0, b"", False
        if ctx.sampled is False:
            return None
        if not ctx.trace_id:  # a B3 "sample this" without ids: a new trace
            return self._rng.getrandbits(128) or 1, 0, b"", True
        if ctx.sampled is None and ctx.trace_id & _MASK64 >= self._bound:
            return None  # the next hop, seeing the same ids, decides the same
        return ctx.trace_id, ctx.span_id, ctx.tracestate, ctx.from_b3

    def start_server(self, headers: Headers, method: bytes, target: bytes, *,
                     authority: bytes = b"", scheme: str = "http",
                     peer: Endpoint | None = None, route: str = "",
                     request_id: bytes = b"", context: bool = True,
                     decided: Sampled | None = None) -> ServerSpan | Unsampled | None:
        """At an inbound request's head: the span of this hop, or why there is none.
        `decided`: what `decide` said, when the caller asked it first."""
        d = decided if decided is not None else self.decide(headers, context)
        if d is None or isinstance(d, bytes):
            return None if d is None else Unsampled(d)
        trace_id, parent_id, tracestate, from_b3 = d
        attrs = _request_attrs(method, authority, scheme, request_id, headers)
        attrs["url.path"] = target.partition(b"?")[0].decode("latin-1")
        attrs["url.scheme"] = scheme
        if route:
            attrs["http.route"] = route
        if peer is not None:
            attrs["network.peer.address"] = attrs["client.address"] = peer[0]
            attrs["network.peer.port"] = peer[1]
        name = f"{attrs['http.request.method']} {route}" if route else str(
            attrs["http.request.method"])
        return ServerSpan(self._queue, SpanKind.SERVER, name, trace_id,
                          self._rng.getrandbits(64) or 1, parent_id, tracestate, from_b3,
                          time.time_ns(), attrs)

    def start_outbound(self, headers: Headers, method: bytes, target: bytes, *,
                       authority: bytes = b"", scheme: str = "http",
                       cluster: str = "", request_id: bytes = b"", context: bool = True,
                       decided: Sampled | None = None) -> Outbound | Unsampled | None:
        """At an outbound request's head (from the local app), once for all its tries."""
        d = decided if decided is not None else self.decide(headers, context)
        if d is None or isinstance(d, bytes):
            return None if d is None else Unsampled(d)
        trace_id, parent_id, tracestate, from_b3 = d
        attrs = _request_attrs(method, authority, scheme, request_id, headers)
        path = target.partition(b"?")[0].decode("latin-1")
        attrs["url.full"] = f"{scheme}://{authority.decode('latin-1')}{path}"
        if cluster:
            attrs["sidecar.upstream.cluster"] = cluster
        return Outbound(self, trace_id, parent_id, tracestate, from_b3,
                        str(attrs["http.request.method"]), attrs)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export what is queued now, in the calling thread (blocking: from async code
        use `asyncio.to_thread`). False if the time ran out or an export failed."""
        return self._queue.flush(timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the export thread after a last flush (blocking, bounded by timeout_s)."""
        self._queue.shutdown(timeout_s)

    def metric_samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """For `Metrics.gauges()`: spans exported and dropped (by reason), as counters."""
        q = self._queue
        yield names.TRACE_SPANS_EXPORTED, {}, q.exported
        for reason, n in (("queue_full", q.dropped_full), ("export_failed", q.failed),
                          ("shutdown", q.dropped_shutdown)):
            yield names.TRACE_SPANS_DROPPED, {"reason": reason}, n


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                      "PATCH", "QUERY"))
_DEFAULT_PORT = {"http": 80, "https": 443}


def _request_attrs(method: bytes, authority: bytes, scheme: str, request_id: bytes,
                   headers: Headers) -> Attrs:
    """The OpenTelemetry HTTP semantic-convention attributes both span kinds share."""
    m = method.decode("latin-1")
    attrs: Attrs = {"http.request.method": m if m in _METHODS else "_OTHER",
                    "network.protocol.version": "1.1"}
    if m not in _METHODS:
        attrs["http.request.method_original"] = m
    if authority:
        host, port = _split_authority(authority.decode("latin-1"), _DEFAULT_PORT.get(scheme, 80))
        attrs["server.address"] = host
        attrs["server.port"] = port
    if request_id:
        attrs["sidecar.request_id"] = request_id.decode("latin-1")
    for k, v in headers:
        if k == b"user-agent":
            attrs["user_agent.original"] = v.decode("latin-1")
            break
    return attrs


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port or not port.isdigit():  # no port, or a bare IPv6 address
        host, port = authority, ""
    return host.strip("[]"), int(port) if port else default_port


def _resource_attributes(config: TracingConfig, env: Mapping[str, str]
                        ) -> dict[str, AttributeValue]:
    """What every span's resource says, by precedence as the SDK's `Resource.create`:
    this SDK's own, then OTEL_RESOURCE_ATTRIBUTES, then the configured ones, then the
    service's name."""
    return {"telemetry.sdk.language": "python", "telemetry.sdk.name": "sidecar",
            "telemetry.sdk.version": __version__,
            "service.instance.id": str(uuid.uuid4()),  # this process, among the replicas
            **env_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
            **config.resource_attributes, "service.name": config.service_name}


class _SpanQueue:
    """Ended spans waiting for export, and the daemon thread that exports them.

    `offer()` runs on the event loop and only appends to a bounded deque (appends and
    pops of a deque are atomic); the thread wakes when a batch is full or every
    `delay_s`. Counters: each written by one thread only."""

    def __init__(self, exporter: Exporter, encoder: TraceEncoder, *, max_size: int,
                 batch_size: int, delay_s: float) -> None:
        self._exporter = exporter
        self._encoder = encoder
        self._max = max_size
        self._batch = batch_size
        self._delay = delay_s
        self._spans: deque[_Span] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._stopping = False
        self.exported = self.failed = self.dropped_full = self.dropped_shutdown = 0
        self._export_thread = threading.Thread(target=self._run, name="sidecar-span-export",
                                        daemon=True)
        self._export_thread.start()

    def offer(self, span: _Span) -> None:
        spans = self._spans
        if len(spans) >= self._max:
            self.dropped_full += 1
            return
        if self._stopping:
            self.dropped_shutdown += 1
            return
        spans.append(span)
        if len(spans) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            if not self._stopping:
                self._drain(deadline=None)

    def _drain(self, deadline: float | None) -> bool:
        """Export batches until the queue is empty (or the deadline passes)."""
        ok = True
        with self._export_lock:
            spans = self._spans
            while spans and (deadline is None or time.monotonic() < deadline):
                batch = [spans.popleft() for _ in range(min(self._batch, len(spans)))]
                try:
                    exported = self._exporter.export(self._encoder.encode(batch))
                except Exception:  # an encoder or exporter bug must not kill the thread
                    exported = False
                if exported:
                    self.exported += len(batch)
                else:
                    self.failed += len(batch)
                    ok = False
        return ok and not spans

    def flush(self, timeout_s: float) -> bool:
        return self._drain(time.monotonic() + timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        if self._stopping:
            return
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._wake.set()
        self._export_thread.join(timeout_s)
        self._drain(deadline)
        self.dropped_shutdown += len(self._spans)
        self._spans.clear()
        self._exporter.shutdown()

