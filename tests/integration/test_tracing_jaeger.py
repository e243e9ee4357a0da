"""Spans from sidecar.telemetry.tracing land in a real Jaeger (v1.76.0's `cmd/jaeger`,
built by scripts/install-jaeger.sh) as one trace, with the parent links the hops made.

The hops are driven as the data plane drives the tracer, for the demo's path:
client → trading's sidecar (inbound, server span) → trading app → trading's sidecar
(outbound: a first try that fails and a retry, one client span each) → portfolio's
sidecar (inbound, server span, continuing the retry's traceparent) → portfolio app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.protocol.events import Headers
from sidecar.telemetry import names
from sidecar.telemetry.propagation import PROPAGATION_HEADERS
from sidecar.telemetry.tracing import ClientSpan, Outbound, ServerSpan, Tracer, TracingConfig
from sidecar.testing.jaeger import JaegerServer


@pytest.fixture
async def jaeger() -> AsyncIterator[JaegerServer]:
    async with JaegerServer() as server:
        yield server


def forwarded(headers: Headers, injected: Headers) -> Headers:
    """What a hop sends on: the received trace headers replaced by its own."""
    return [(k, v) for k, v in headers if k not in PROPAGATION_HEADERS] + injected


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


async def test_trading_to_portfolio_is_one_trace_in_jaeger(jaeger: JaegerServer) -> None:
    def tracer(service: str) -> Tracer:
        return Tracer(TracingConfig(service, endpoint=jaeger.otlp_traces_url, sample_ratio=1.0,
                                    resource_attributes={"service.namespace": "demo"}))

    trading, portfolio = tracer("trading"), tracer("portfolio")
    try:
        # 1. A client request enters trading's sidecar with no trace context.
        client_headers: Headers = [(b"host", b"trading:8080"), (b"user-agent", b"demo")]
        inbound = trading.start_server(client_headers, b"POST", b"/trades?acct=7",
                                       authority=b"trading:8080", peer=("127.0.0.1", 40000),
                                       route="/trades", request_id=b"req-1")
        assert isinstance(inbound, ServerSpan)
        to_trading_app = forwarded(client_headers, inbound.child_headers())

        # 2. The trading app calls portfolio through its sidecar, passing traceparent on.
        app_headers: Headers = [(b"host", b"portfolio"),
                                *[(k, v) for k, v in to_trading_app if k == b"traceparent"]]
        outbound = trading.start_outbound(app_headers, b"GET", b"/positions/7",
                                          authority=b"portfolio", cluster="portfolio",
                                          request_id=b"req-1")
        assert isinstance(outbound, Outbound)
        first = outbound.start_try(("127.0.0.1", 9101), attempt=1)
        first.end(0, "UPSTREAM_CONNECT_FAILED")  # that endpoint was down: retried
        retry = outbound.start_try(("127.0.0.1", 9102), attempt=2)
        assert isinstance(retry, ClientSpan)

        # 3. Portfolio's sidecar receives the retry, with the retry's traceparent.
        at_portfolio = portfolio.start_server(forwarded(app_headers, retry.child_headers()),
                                              b"GET", b"/positions/7", authority=b"portfolio",
                                              peer=("127.0.0.1", 41000))
        assert isinstance(at_portfolio, ServerSpan)
        at_portfolio.set("sidecar.upstream.endpoint", "127.0.0.1:9002")
        at_portfolio.end(200)
        retry.end(200)
        inbound.end(201)

        assert await asyncio.to_thread(trading.flush)
        assert await asyncio.to_thread(portfolio.flush)
    finally:
        await asyncio.to_thread(trading.shutdown)
        await asyncio.to_thread(portfolio.shutdown)

    trace = await jaeger.wait_for_trace(inbound.trace_id_hex, spans=4)
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert len(spans) == 4 and {s["traceID"] for s in spans.values()} == {inbound.trace_id_hex}
    service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}

    def parent(span_id: int) -> str | None:
        refs = spans[f"{span_id:016x}"]["references"]
        assert len(refs) <= 1
        return refs[0]["spanID"] if refs else None

    def row(span_id: int) -> tuple[str, str, str]:
        s = spans[f"{span_id:016x}"]
        return service[s["processID"]], tags(s)["span.kind"], s["operationName"]

    assert row(inbound.span_id) == ("trading", "server", "POST /trades")
    assert row(first.span_id) == ("trading", "client", "GET")
    assert row(retry.span_id) == ("trading", "client", "GET")
    assert row(at_portfolio.span_id) == ("portfolio", "server", "GET")
    assert parent(inbound.span_id) is None
    assert parent(first.span_id) == parent(retry.span_id) == f"{inbound.span_id:016x}"
    assert parent(at_portfolio.span_id) == f"{retry.span_id:016x}"

    first_tags = tags(spans[f"{first.span_id:016x}"])
    retry_tags = tags(spans[f"{retry.span_id:016x}"])
    assert first_tags["error"] is True and first_tags["error.type"] == "UPSTREAM_CONNECT_FAILED"
    assert first_tags["sidecar.upstream.endpoint"] == "127.0.0.1:9101"
    assert retry_tags["http.request.resend_count"] == 1
    assert retry_tags["http.response.status_code"] == 200
    assert retry_tags["url.full"] == "http://portfolio/positions/7"
    assert tags(spans[f"{inbound.span_id:016x}"])["url.path"] == "/trades"

    # And by service, as the Jaeger UI lists traces.
    status, doc = await jaeger.get_json("/api/traces?service=portfolio&limit=20")
    assert status == 200 and [t["traceID"] for t in doc["data"]] == [inbound.trace_id_hex]


async def test_collector_down_costs_spans_not_requests() -> None:
    """Nothing listens at the endpoint: export fails, is counted, and start/end still return
    at once (the export thread is the only one that waits)."""
    from sidecar.testing import free_port

    tracer = Tracer(TracingConfig("trading", endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
                                  sample_ratio=1.0, export_timeout_s=0.5, max_queue_size=8,
                                  max_export_batch_size=4))
    try:
        for _ in range(20):
            span = tracer.start_server([], b"GET", b"/")
            assert span is not None
            span.end(200)
        await asyncio.to_thread(tracer.flush)
    finally:
        await asyncio.to_thread(tracer.shutdown)
    counts = {(n, tuple(lbl.items())): v for n, lbl, v in tracer.metric_samples()}
    failed = counts[(names.TRACE_SPANS_DROPPED, (("reason", "export_failed"),))]
    full = counts[(names.TRACE_SPANS_DROPPED, (("reason", "queue_full"),))]
    assert counts[(names.TRACE_SPANS_EXPORTED, ())] == 0
    assert failed + full + counts[(names.TRACE_SPANS_DROPPED, (("reason", "shutdown"),))] == 20
    assert failed > 0 and full > 0
