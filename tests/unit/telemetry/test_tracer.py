"""The tracer as the data plane drives it: sampling decisions, spans, headers, export."""

from __future__ import annotations

import gzip
import http.client
import logging
import random
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

import sidecar
from sidecar.telemetry import names
from sidecar.telemetry.otlp import HttpExporter
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


class RecordingExporter:
    """Keeps every request the tracer sends, decoded as a collector would."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def export(self, request: bytes) -> bool:
        self.requests.append(ExportTraceServiceRequest.FromString(request))
        return True

    def shutdown(self) -> None:
        pass

    def spans(self) -> list[Span]:
        return [span for r in self.requests for rs in r.resource_spans
                for ss in rs.scope_spans for span in ss.spans]


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


@pytest.fixture
def exporter() -> RecordingExporter:
    return RecordingExporter()


def make(exporter: Any, ratio: float, env: dict[str, str] | None = None,
         **kw: object) -> Tracer:
    cfg = TracingConfig(service_name="trading", sample_ratio=ratio, **kw)  # type: ignore[arg-type]
    return Tracer(cfg, exporter=exporter, rng=random.Random(7), env=env or {})


@pytest.fixture
def tracers() -> Iterator[list[Tracer]]:
    made: list[Tracer] = []
    yield made
    for t in made:
        t.shutdown()


def exported(tracer: Tracer, exporter: RecordingExporter) -> list[Span]:
    assert tracer.flush()
    return exporter.spans()


def span_id(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def test_root_sampled_span_has_semconv_attributes(exporter: RecordingExporter,
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
    assert s.kind == Span.SPAN_KIND_SERVER and s.parent_span_id == b""
    assert s.name == "GET /quotes/{symbol}"
    (resource_spans,) = exporter.requests[0].resource_spans
    assert attributes(resource_spans.resource.attributes)["service.name"] == "trading"
    assert attributes(s.attributes) == {
        "http.request.method": "GET", "network.protocol.version": "1.1",
        "server.address": "trading", "server.port": 8080, "sidecar.request_id": "rid-1",
        "user_agent.original": "curl/8", "url.path": "/quotes/ACME", "url.scheme": "http",
        "http.route": "/quotes/{symbol}", "network.peer.address": "10.1.2.3",
        "client.address": "10.1.2.3", "network.peer.port": 51000,
        "http.response.status_code": 200}
    assert s.status.code == Status.STATUS_CODE_UNSET
    assert span_id(s.trace_id) == span.trace_id and span_id(s.span_id) == span.span_id


def test_sampled_parent_is_continued_even_at_ratio_zero(exporter: RecordingExporter,
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
    assert span_id(s.parent_span_id) == SPAN and s.flags & 0x300 == 0x300  # remote
    assert s.trace_state == "vendor=abc"
    assert attributes(s.attributes)["server.port"] == 80


def test_unsampled_parent_means_nothing_to_do(exporter: RecordingExporter,
                                              tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    assert tracer.start_server(header(TRACE, SPAN, "00"), b"GET", b"/") is None
    assert tracer.start_outbound(header(TRACE, SPAN, "00"), b"GET", b"/") is None
    assert tracer.start_server([(b"b3", b"0")], b"GET", b"/") is None
    assert exported(tracer, exporter) == []


def test_an_invalid_unsampled_traceparent_starts_a_new_trace(
        exporter: RecordingExporter, tracers: list[Tracer]) -> None:
    """The tracer's shortcut for "not sampled" still checks what the parser checks."""
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    for bad in (f"00-{0:032x}-{SPAN:016x}-00", f"00-{TRACE:032x}-{0:016x}-00",
                f"ff-{TRACE:032x}-{SPAN:016x}-00", f"00-{TRACE:032x}-{SPAN:016x}-0g",
                f"00-{TRACE:032x}-{SPAN:015x}--00"):
        span = tracer.start_server([(b"traceparent", bad.encode())], b"GET", b"/")
        assert isinstance(span, ServerSpan), bad
        assert span.parent_id == 0 and span.trace_id != TRACE


def test_unsampled_root_passes_a_not_sampled_trace_on(exporter: RecordingExporter,
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
    assert exported(tracer, exporter) == []


def test_ratio_decides_by_trace_id_so_every_hop_agrees(exporter: RecordingExporter,
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


def test_b3_callers_get_b3_back(exporter: RecordingExporter, tracers: list[Tracer]) -> None:
    tracer = make(exporter, 0.0)
    tracers.append(tracer)
    span = tracer.start_server([(b"b3", b"1")], b"GET", b"/")  # "sample", no ids: new trace
    assert isinstance(span, ServerSpan) and span.parent_id == 0
    back = dict(span.child_headers())
    ctx = parse_b3_single(back[b"b3"])
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled) == \
        (span.trace_id, span.span_id, True)
    assert b"traceparent" in back


def test_each_try_is_a_client_span_under_the_same_parent(exporter: RecordingExporter,
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
    assert [s.kind for s in spans] == [Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_CLIENT]
    assert {span_id(s.parent_span_id) for s in spans} == {SPAN}
    assert len({s.span_id for s in spans}) == 2
    a, b = (attributes(s.attributes) for s in spans)
    assert a["url.full"] == "http://portfolio/positions"
    assert a["sidecar.upstream.endpoint"] == "10.0.0.7:9001"
    assert a["sidecar.upstream.cluster"] == "portfolio"
    assert (a["network.peer.address"], a["network.peer.port"]) == ("10.0.0.7", 9001)
    assert "http.request.resend_count" not in a and b["http.request.resend_count"] == 1
    assert spans[0].status.code == Status.STATUS_CODE_ERROR and a["error.type"] == "503"
    assert spans[0].status.message == "503"
    assert spans[1].status.code == Status.STATUS_CODE_UNSET


def test_error_status_by_span_kind(exporter: RecordingExporter,
                                   tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0)
    tracers.append(tracer)
    for status, error in ((404, None), (503, None), (504, "UPSTREAM_TIMEOUT"), (0, None)):
        span = tracer.start_server([], b"BREW", b"/")
        assert isinstance(span, ServerSpan)
        span.end(status, error)
        span.end(200)  # a second end() changes nothing
    spans = exported(tracer, exporter)
    assert [s.status.code for s in spans] == [Status.STATUS_CODE_UNSET] + \
        [Status.STATUS_CODE_ERROR] * 3
    assert [s.status.message for s in spans] == ["", "503", "UPSTREAM_TIMEOUT", "no_response"]
    assert [attributes(s.attributes).get("error.type") for s in spans] == \
        [None, "503", "UPSTREAM_TIMEOUT", "no_response"]
    assert attributes(spans[0].attributes)["http.request.method"] == "_OTHER"
    assert attributes(spans[0].attributes)["http.request.method_original"] == "BREW"


class BlockingExporter(RecordingExporter):
    """Blocks in export() until released: a collector that does not answer."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, request: bytes) -> bool:
        self.entered.set()
        self.release.wait(30)
        return super().export(request)


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
    assert len(stuck.spans()) == 5
    samples = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    assert samples[(names.TRACE_SPANS_EXPORTED, ())] == 5


class FailingExporter(RecordingExporter):
    def export(self, request: bytes) -> bool:
        return False


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


def test_shutdown_exports_what_is_queued(exporter: RecordingExporter) -> None:
    tracer = make(exporter, 1.0, schedule_delay_s=3600)
    span = tracer.start_server([], b"GET", b"/")
    assert span is not None
    span.end(200)
    tracer.shutdown()
    assert len(exporter.spans()) == 1


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


def test_an_unencodable_span_costs_its_batch_not_the_thread(exporter: RecordingExporter,
                                                            tracers: list[Tracer]) -> None:
    tracer = make(exporter, 1.0, max_export_batch_size=1)
    tracers.append(tracer)
    bad = tracer.start_server([], b"GET", b"/")
    assert isinstance(bad, ServerSpan)
    # Past set()'s annotation (which the compiled build enforces): the encoder's own guard.
    bad.extra = {"sidecar.odd": ["not", "an", "attribute", "value"]}  # type: ignore[dict-item]
    bad.end(200)
    assert not tracer.flush()
    good = tracer.start_server([], b"GET", b"/")
    assert good is not None
    good.end(200)
    assert len(exported(tracer, exporter)) == 1
    samples = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    assert samples[(names.TRACE_SPANS_DROPPED, (("reason", "export_failed"),))] == 1
    assert samples[(names.TRACE_SPANS_EXPORTED, ())] == 1


def test_resource_and_scope(exporter: RecordingExporter, tracers: list[Tracer]) -> None:
    """As the SDK's Resource.create ranked them: its own, then OTEL_RESOURCE_ATTRIBUTES,
    then the configured ones, then the service's name."""
    env = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b,"
                                       "service.namespace=env,service.name=env"}
    tracer = make(exporter, 1.0, env, resource_attributes={"service.namespace": "demo"})
    tracers.append(tracer)
    span = tracer.start_server([], b"GET", b"/")
    assert span is not None
    span.end(200)
    exported(tracer, exporter)
    (resource_spans,) = exporter.requests[0].resource_spans
    resource = attributes(resource_spans.resource.attributes)
    instance = resource.pop("service.instance.id")
    assert len(instance) == 36  # a UUID, one per tracer
    assert resource == {"telemetry.sdk.language": "python", "telemetry.sdk.name": "sidecar",
                        "telemetry.sdk.version": sidecar.__version__,
                        "deployment.environment": "prod", "team": "a b",
                        "service.namespace": "demo", "service.name": "trading"}
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == \
        ("sidecar", sidecar.__version__)


# The OTLP/HTTP exporter against a fake connection: what it sends, when it retries.

class FakeSocket:
    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.reason, self.headers = status, "Reason", headers

    def read(self) -> bytes:
        return b""

    def getheader(self, name: str, default: str) -> str:
        return self.headers.get(name, default)


class FakeConnection:
    """Answers each request with the next of `answers`: a status (and headers), or an
    exception raised by `request` as a socket error would be."""

    def __init__(self, *answers: int | tuple[int, dict[str, str]] | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.sock: FakeSocket | None = None
        self.timeout: float | None = None
        self.closed = 0

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        self.sent.append((method, path, body, dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.sock = self.sock or FakeSocket()  # connected; kept alive after
        self.answer = answer if isinstance(answer, tuple) else (answer, {})

    def getresponse(self) -> FakeResponse:
        return FakeResponse(*self.answer)

    def close(self) -> None:
        self.sock = None
        self.closed += 1


def http_exporter(conn: FakeConnection, env: dict[str, str] | None = None,
                  timeout_s: float = 5.0) -> HttpExporter:
    return HttpExporter("http://collector:4318/v1/traces?x=1", timeout_s, env or {},
                        rng=random.Random(1),
                        connection=conn)  # type: ignore[arg-type]


def test_export_posts_protobuf_with_the_environments_headers() -> None:
    conn = FakeConnection(200)
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20t0k,x-tenant=ignored",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "X-Tenant=a, x-scope = b%2Cc "}
    assert http_exporter(conn, env).export(b"\x0a\x00")
    ((method, path, body, headers),) = conn.sent
    assert (method, path, body) == ("POST", "/v1/traces?x=1", b"\x0a\x00")
    assert headers == {"user-agent": f"sidecar/{sidecar.__version__}", "x-tenant": "a",
                       "x-scope": "b,c", "content-type": "application/x-protobuf"}


def test_export_compresses_when_told() -> None:
    conn = FakeConnection(200)
    assert http_exporter(conn, {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}).export(b"spans")
    ((_, _, body, headers),) = conn.sent
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b"spans"


def test_retry_later_answers_are_retried_as_told() -> None:
    conn = FakeConnection((503, {"retry-after": "0"}), (429, {"retry-after": "0"}), 200)
    assert http_exporter(conn).export(b"spans")
    assert [sent[2] for sent in conn.sent] == [b"spans"] * 3


def test_other_answers_fail_at_once(caplog: pytest.LogCaptureFixture) -> None:
    conn = FakeConnection(400, 400, 200)
    exporter = http_exporter(conn)
    with caplog.at_level(logging.INFO, "sidecar.telemetry"):
        assert not exporter.export(b"spans")
        assert not exporter.export(b"spans")  # logged once per outage, not per batch
        assert exporter.export(b"spans")
    assert len(conn.sent) == 3
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "HTTP 400" in caplog.records[0].getMessage()


def test_a_connection_the_collector_closed_is_opened_again_at_once() -> None:
    conn = FakeConnection(200, http.client.RemoteDisconnected("closed"), 200)
    exporter = http_exporter(conn, timeout_s=0.5)  # no time for a back-off
    assert exporter.export(b"first")
    assert exporter.export(b"second")  # kept alive, found closed: a new one, no wait
    assert [sent[2] for sent in conn.sent] == [b"first", b"second", b"second"]
    assert conn.closed == 1


def test_no_collector_fails_within_the_timeout() -> None:
    conn = FakeConnection(ConnectionRefusedError(111, "refused"), 200)
    exporter = http_exporter(conn, timeout_s=0.5)  # a back-off (~1 s) would not fit
    assert not exporter.export(b"spans")
    assert len(conn.sent) == 1
