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
  ServerSpan / ClientSpan   sampled: a small slotted record of the request's facts
               (`spans`); `end()` appends it to a bounded queue, and the export thread
               makes its attributes when it encodes the batch.

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
from .otlp import AttributeValue, Exporter, HttpExporter, TraceEncoder, env_pairs
from .propagation import Unsampled, extract
from .spans import ClientSpan, Outbound, ServerSpan, Span

__all__ = ["ClientSpan", "Outbound", "ServerSpan", "Tracer", "TracingConfig", "Unsampled"]

_MASK64 = (1 << 64) - 1
Endpoint = tuple[str, int]
Sampled = tuple[bytes, int, bytes, bool]  # b"{trace}-{span}", parent span id, tracestate, b3


class Tracer:
    """One per sidecar process: the sampler, the span queue and its export thread."""

    def __init__(self, config: TracingConfig, *, exporter: Exporter | None = None,
                 rng: random.Random | None = None,
                 env: Mapping[str, str] = os.environ) -> None:
        """`exporter`: where encoded batches go (default: POSTed to `config.endpoint`);
        `env`: the OTEL_* variables read (resource attributes, exporter headers...)."""
        self.config = config
        self._bound = round(config.sample_ratio * (1 << 64))
        self._new = NewTraces(self._bound) if rng is None else \
            NewTraces(self._bound, rng.randbytes)
        encoder = TraceEncoder(_resource_attributes(config, env), "sidecar", __version__)
        self._queue = _SpanQueue(
            exporter or HttpExporter(config.endpoint, config.export_timeout_s, env),
            encoder, max_size=config.max_queue_size,
            batch_size=config.max_export_batch_size, delay_s=config.schedule_delay_s)

    def decide(self, headers: Headers, context: bool = True) -> Sampled | bytes | None:
        """When sampled: (ids, parent span id, tracestate, from_b3), the ids of this hop's
        span as b"{trace id}-{span id}" in hex (`NewTraces`). For a new trace not sampled
        here, its ids alone, to send on as not sampled. None for a caller's trace not
        sampled. `context=False`: the caller knows the headers carry no
        trace context (the codec saw none). Deciding first spares an unsampled request
        the span's arguments."""
        ctx = extract(headers, ids_if_unsampled=False) if context else None
        new = self._new
        if ctx is None:
            ids = new.take()
            return (ids, 0, b"", False) if new.sampled else ids
        if ctx.sampled is False:
            return None
        if not ctx.trace_id:  # a B3 "sample this" without ids: a new trace
            return new.take(), 0, b"", True
        if ctx.sampled is None and ctx.trace_id & _MASK64 >= self._bound:
            return None  # the next hop, seeing the same ids, decides the same
        return (b"%032x-%b" % (ctx.trace_id, new.span_id()), ctx.span_id, ctx.tracestate,
                ctx.from_b3)

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
        ids, parent_id, tracestate, from_b3 = d
        return ServerSpan(self._queue, ids, parent_id, tracestate, from_b3, time.time_ns(),
                          method, target, authority, scheme, headers, peer, route, request_id)

    def start_outbound(self, headers: Headers, method: bytes, target: bytes, *,
                       authority: bytes = b"", scheme: str = "http",
                       cluster: str = "", request_id: bytes = b"", context: bool = True,
                       decided: Sampled | None = None) -> Outbound | Unsampled | None:
        """At an outbound request's head (from the local app), once for all its tries."""
        d = decided if decided is not None else self.decide(headers, context)
        if d is None or isinstance(d, bytes):
            return None if d is None else Unsampled(d)
        ids, parent_id, tracestate, from_b3 = d
        return Outbound(self._queue, self._new, ids[:32], parent_id, tracestate, from_b3,
                        method, target, authority, scheme, headers, cluster, request_id)

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
        self._spans: deque[Span] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._stopping = False
        self.exported = self.failed = self.dropped_full = self.dropped_shutdown = 0
        self._export_thread = threading.Thread(target=self._run, name="sidecar-span-export",
                                        daemon=True)
        self._export_thread.start()

    def offer(self, span: Span) -> None:
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

