"""The tracer as the data plane drives it: sampling decisions, spans, headers, export."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.telemetry import names
from sidecar.telemetry.propagation import extract, parse_b3_single, parse_traceparent
from sidecar.telemetry.tracing import (
    ClientSpan,
    Outbound,
    ServerSpan,
    Tracer,
    TracingConfig,
    Unsampled,
)

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


def header(trace_id: int, span_id: int, flags: str) -> list[tuple[bytes, bytes]]:
    return [(b"traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags}".encode())]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def make(exporter: SpanExporter, ratio: float, **kw: object) -> Tracer:
    cfg = TracingConfig(service_name="trading", sample_ratio=ratio, **kw)  # type: ignore[arg-type]
    return Tracer(cfg, exporter=exporter, rng=random.Random(7))


@pytest.fixture
def tracers() -> Iterator[list[Tracer]]:
    made: list[Tracer] = []
    yield made
    for t in made:
        t.shutdown()


def exported(tracer: Tracer, exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    assert tracer.flush()
    return exporter.get_finished_spans()


def test_root_sampled_span_has_semconv_attributes(exporter: InMemorySpanExporter,
                                                  tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    span = tracer.start_server([(b"user-agent", b"curl/8")], b"GET", b"/quotes/ACME?x=1",
                               authority=b"trading:8080", peer=("10.1.2.3", 51000),
                               route="/quotes/{symbol}", request_id=b"rid-1")
    assert isinstance(span, ServerSpan)
    headers = dict(span.child_headers())
    ctx = parse_traceparent(headers[b"traceparent"])
    assert ctx is not None and ctx.sampled and ctx.trace_id == span.trace_id
    assert ctx.span_id == span.span_id
    span.end(200)
    (s,) = exported(tracer, exporter)
    assert s.kind is SpanKind.SERVER and s.parent is None
    assert s.name == "GET /quotes/{symbol}"
    assert s.resource.attributes["service.name"] == "trading"
    assert dict(s.attributes or {}) == {
        "http.request.method": "GET", "network.protocol.version": "1.1",
        "server.address": "trading", "server.port": 8080, "sidecar.request_id": "rid-1",
        "user_agent.original": "curl/8", "url.path": "/quotes/ACME", "url.scheme": "http",
        "http.route": "/quotes/{symbol}", "network.peer.address": "10.1.2.3",
        "client.address": "10.1.2.3", "network.peer.port": 51000,
        "http.response.status_code": 200}
    assert s.status.status_code is StatusCode.UNSET
    assert s.context is not None and s.context.trace_id == span.trace_id


def test_sampled_parent_is_continued_even_at_ratio_zero(exporter: InMemorySpanExporter,
                                                        tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.0)
    tracers.append(tracer)
    hdrs = [*header(TRACE, SPAN, "01"), (b"tracestate", b"vendor=abc")]
    span = tracer.start_server(hdrs, b"POST", b"/orders", authority=b"trading")
    assert isinstance(span, ServerSpan)
    assert (span.trace_id, span.parent_id) == (TRACE, SPAN) and span.span_id != SPAN
    assert dict(span.child_headers())[b"tracestate"] == b"vendor=abc"
    span.end(201)
    (s,) = exported(tracer, exporter)
    assert s.parent is not None and s.parent.span_id == SPAN and s.parent.is_remote
    assert s.context is not None and s.context.trace_state.get("vendor") == "abc"
    assert s.attributes is not None and s.attributes["server.port"] == 80


def test_unsampled_parent_means_nothing_to_do(exporter: InMemorySpanExporter,
                                              tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    assert tracer.start_server(header(TRACE, SPAN, "00"), b"GET", b"/") is None
    assert tracer.start_outbound(header(TRACE, SPAN, "00"), b"GET", b"/") is None
    assert tracer.start_server([(b"b3", b"0")], b"GET", b"/") is None
    assert exported(tracer, exporter) == ()


def test_an_invalid_unsampled_traceparent_starts_a_new_trace(
        exporter: InMemorySpanExporter, tracers: list[Tracer]) -> None:
    """The tracer's shortcut for "not sampled" still checks what the parser checks."""
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    for bad in (f"00-{0:032x}-{SPAN:016x}-00", f"00-{TRACE:032x}-{0:016x}-00",
                f"ff-{TRACE:032x}-{SPAN:016x}-00", f"00-{TRACE:032x}-{SPAN:016x}-0g",
                f"00-{TRACE:032x}-{SPAN:015x}--00"):
        span = tracer.start_server([(b"traceparent", bad.encode())], b"GET", b"/")
        assert isinstance(span, ServerSpan), bad
        assert span.parent_id == 0 and span.trace_id != TRACE


def test_unsampled_root_passes_a_not_sampled_trace_on(exporter: InMemorySpanExporter,
                                                      tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.0)
    tracers.append(tracer)
    hop = tracer.start_server([], b"GET", b"/")
    assert isinstance(hop, Unsampled)
    ctx = extract(hop.child_headers())
    assert ctx is not None and ctx.sampled is False and ctx.trace_id == hop.trace_id
    # The next sidecar follows that decision, whatever its own ratio.
    next_hop = make(exporter, 1.0)
    tracers.append(next_hop)
    assert next_hop.start_server(hop.child_headers(), b"GET", b"/") is None
    out = tracer.start_outbound([], b"GET", b"/")
    assert isinstance(out, Unsampled) and out.start_try(("10.0.0.1", 80)) is out
    hop.end(500, "UPSTREAM_TIMEOUT")
    assert exported(tracer, exporter) == ()


def test_ratio_decides_by_trace_id_so_every_hop_agrees(exporter: InMemorySpanExporter,
                                                       tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.25)
    tracers.append(tracer)
    bound = 2**62  # a quarter of the low 64 bits
    kinds = {ServerSpan: 0, Unsampled: 0}
    for _ in range(400):
        hop = tracer.start_server([], b"GET", b"/")
        assert hop is not None
        kinds[type(hop)] += 1
        assert ((hop.trace_id & (2**64 - 1)) < bound) == isinstance(hop, ServerSpan)
    assert kinds[ServerSpan] and kinds[Unsampled]
    # B3 ids without a decision: the same rule on the caller's trace id.
    low, high = (1 << 64) | 5, (1 << 64) | (2**64 - 1)
    b3_low = [(b"b3", f"{low:032x}-{SPAN:016x}".encode())]
    b3_high = [(b"b3", f"{high:032x}-{SPAN:016x}".encode())]
    assert isinstance(tracer.start_server(b3_low, b"GET", b"/"), ServerSpan)
    assert tracer.start_server(b3_high, b"GET", b"/") is None


def test_b3_callers_get_b3_back(exporter: InMemorySpanExporter, tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.0)
    tracers.append(tracer)
    span = tracer.start_server([(b"b3", b"1")], b"GET", b"/")  # "sample", no ids: new trace
    assert isinstance(span, ServerSpan) and span.parent_id == 0
    back = dict(span.child_headers())
    ctx = parse_b3_single(back[b"b3"])
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled) == \
        (span.trace_id, span.span_id, True)
    assert b"traceparent" in back


def test_each_try_is_a_client_span_under_the_same_parent(exporter: InMemorySpanExporter,
                                                         tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.0)
    tracers.append(tracer)
    out = tracer.start_outbound(header(TRACE, SPAN, "01"), b"GET", b"/positions?acct=7",
                                authority=b"portfolio", cluster="portfolio")
    assert isinstance(out, Outbound)
    first = out.start_try(("10.0.0.7", 9001), attempt=1)
    first.end(503)
    second = out.start_try(("10.0.0.8", 9001), attempt=2)
    assert isinstance(second, ClientSpan)
    assert parse_traceparent(dict(second.child_headers())[b"traceparent"]) is not None
    second.end(200)
    spans = exported(tracer, exporter)
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert {s.parent.span_id for s in spans if s.parent} == {SPAN}
    assert len({s.context.span_id for s in spans if s.context}) == 2
    a, b = (dict(s.attributes or {}) for s in spans)
    assert a["url.full"] == "http://portfolio/positions"
    assert a["sidecar.upstream.endpoint"] == "10.0.0.7:9001"
    assert a["sidecar.upstream.cluster"] == "portfolio"
    assert (a["network.peer.address"], a["network.peer.port"]) == ("10.0.0.7", 9001)
    assert "http.request.resend_count" not in a and b["http.request.resend_count"] == 1
    assert spans[0].status.status_code is StatusCode.ERROR and a["error.type"] == "503"
    assert spans[1].status.status_code is StatusCode.UNSET


def test_error_status_by_span_kind(exporter: InMemorySpanExporter,
                                   tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    for status, error in ((404, None), (503, None), (504, "UPSTREAM_TIMEOUT"), (0, None)):
        span = tracer.start_server([], b"BREW", b"/")
        assert isinstance(span, ServerSpan)
        span.end(status, error)
        span.end(200)  # a second end() changes nothing
    spans = exported(tracer, exporter)
    assert [s.status.status_code for s in spans] == \
        [StatusCode.UNSET, StatusCode.ERROR, StatusCode.ERROR, StatusCode.ERROR]
    assert [(s.attributes or {}).get("error.type") for s in spans] == \
        [None, "503", "UPSTREAM_TIMEOUT", "no_response"]
    assert (spans[0].attributes or {})["http.request.method"] == "_OTHER"
    assert (spans[0].attributes or {})["http.request.method_original"] == "BREW"


class BlockingExporter(SpanExporter):
    """Blocks in export() until released: a collector that does not answer."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def test_a_stuck_collector_costs_spans_not_waiting(tracers: list[Tracer]) -> None:
    stuck = BlockingExporter()
    tracer = make(stuck, 1.0, max_queue_size=4, max_export_batch_size=1)
    tracers.append(tracer)
    first = tracer.start_server([], b"GET", b"/")
    assert first is not None
    first.end(200)
    assert stuck.entered.wait(10)  # the export thread is now stuck with span 1
    for _ in range(6):  # these return at once: 4 queued, 2 dropped
        span = tracer.start_server([], b"GET", b"/")
        assert span is not None
        span.end(200)
    samples = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    assert samples[(names.TRACE_SPANS_DROPPED, (("reason", "queue_full"),))] == 2
    stuck.release.set()
    assert tracer.flush()
    assert stuck.spans == 5
    samples = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    assert samples[(names.TRACE_SPANS_EXPORTED, ())] == 5


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def test_failed_exports_are_counted(tracers: list[Tracer]) -> None:
    tracer = make(FailingExporter(), 1.0)
    tracers.append(tracer)
    for _ in range(3):
        span = tracer.start_server([], b"GET", b"/")
        assert span is not None
        span.end(200)
    assert not tracer.flush()
    samples = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    assert samples[(names.TRACE_SPANS_DROPPED, (("reason", "export_failed"),))] == 3


def test_shutdown_exports_what_is_queued(exporter: InMemorySpanExporter) -> None:
    tracer = make(exporter, 1.0, schedule_delay_s=3600)
    span = tracer.start_server([], b"GET", b"/")
    assert span is not None
    span.end(200)
    tracer.shutdown()
    assert len(exporter.get_finished_spans()) == 1


def test_config_reports_every_problem() -> None:
    with pytest.raises(ValueError) as e:
        TracingConfig(service_name="", endpoint="localhost:4318", sample_ratio=2,
                      max_queue_size=0, max_export_batch_size=5, schedule_delay_s=0,
                      export_timeout_s=-1)
    assert str(e.value).splitlines() == [
        "service_name: must not be empty", "endpoint: must be an http:// or https:// URL",
        "sample_ratio: must be in [0, 1]", "max_queue_size: must be >= 1",
        "max_export_batch_size: must be in [1, max_queue_size]",
        "schedule_delay_s: must be > 0", "export_timeout_s: must be > 0"]
