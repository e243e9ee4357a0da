"""CPU per span of exporting sampled spans: the OpenTelemetry SDK's path beside ours.

    .venv/bin/python bench/span_export.py [-n 4096] [--rounds 7] [--batch 512]
                                          [--only old,new] [--no-http]

Records N spans as the data plane does (per hop: a root server span and a client span
under it, status 200, the request id and client port differing per hop), then exports
them in batches of `--batch`, as the tracer's export thread does, two ways:

  old   each record made into an SDK `ReadableSpan`, the batch handed to the SDK's
        `OTLPSpanExporter` (protobuf encoding, then `requests`), as tracing.py did
  new   `otlp.TraceEncoder.encode` then `otlp.HttpExporter.export` (http.client)

Both POST to a local sink (a thread of this process answering 200, keep-alive). The
figure is the CPU time of the exporting thread (`time.thread_time`) divided by the
spans: encoding and the POST's own work, not the wait for the answer nor the sink's
work. The "encode" column is the encoding alone (for old: the `ReadableSpan`s and
`encode_spans(...).SerializePartialToString()`). Best and median of `--rounds`.

The machine is shared and noisy: compare old and new from one run. For instruction
counts instead, one path at a time under callgrind:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/new.out \\
        .venv/bin/python bench/span_export.py --only new --no-http -n 1024 --rounds 1
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from sidecar.telemetry.otlp import HttpExporter, SpanKind, SpanRecord, TraceEncoder
from sidecar.telemetry.tracing import Outbound, ServerSpan, Tracer, TracingConfig

Batch = Sequence[SpanRecord]


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Discard:
    def export(self, request: bytes) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def record_spans(n: int) -> list[SpanRecord]:
    """n spans as the tracer records them (n/2 hops), taken from its queue unexported."""
    cfg = TracingConfig("trading", sample_ratio=1.0, max_queue_size=n + 1,
                        max_export_batch_size=n + 1, schedule_delay_s=3600)
    tracer = Tracer(cfg, exporter=_Discard(), env={})
    for i in range(n // 2):
        rid = b"9f1c2d-%08x" % i
        server = tracer.start_server([(b"user-agent", b"wrk/4.2.0")], b"GET",
                                     b"/api/quotes/ACME?fields=all", authority=b"trading:8080",
                                     peer=("10.1.2.3", 30000 + i % 30000),
                                     route="/api/quotes/{symbol}", request_id=rid)
        assert isinstance(server, ServerSpan)
        app_headers = [(k, v) for k, v in server.child_headers() if k == b"traceparent"]
        out = tracer.start_outbound(app_headers, b"GET", b"/positions/7", authority=b"portfolio",
                                    cluster="portfolio", request_id=rid)
        assert isinstance(out, Outbound)
        attempt = out.start_try(("10.0.0.7", 9001))
        attempt.end(200)
        server.end(200)
    spans: list[SpanRecord] = list(tracer._queue._spans)  # as the export thread sees them
    tracer.shutdown(0)
    return spans


def old_path(endpoint: str | None) -> Callable[[Batch], object] | None:
    """The SDK's path, as tracing.py had it (None: the SDK is not installed)."""
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, TraceFlags, TraceState
        from opentelemetry.trace import SpanKind as OtelKind
        from opentelemetry.trace.status import Status, StatusCode
    except ImportError:
        return None
    resource = Resource.create({"service.name": "trading"})
    scope = InstrumentationScope("sidecar")
    kinds = {SpanKind.SERVER: OtelKind.SERVER, SpanKind.CLIENT: OtelKind.CLIENT}
    sampled = TraceFlags(TraceFlags.SAMPLED)

    def readable(s: SpanRecord) -> ReadableSpan:
        state = TraceState.from_header([s.tracestate.decode()]) if s.tracestate else None
        context = SpanContext(s.trace_id, s.span_id, False, sampled, state)
        parent = SpanContext(s.trace_id, s.parent_id, True, sampled, state) \
            if s.parent_id else None
        status = Status(StatusCode.ERROR, s.error) if s.error is not None \
            else Status(StatusCode.UNSET)
        return ReadableSpan(s.name, context, parent, resource, s.attrs, kind=kinds[s.kind],
                            status=status, start_time=s.start_ns, end_time=s.end_ns,
                            instrumentation_scope=scope)

    if endpoint is None:
        return lambda batch: encode_spans([readable(s) for s in batch]).SerializePartialToString()
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5)
    return lambda batch: exporter.export([readable(s) for s in batch])


def new_path(endpoint: str | None) -> Callable[[Batch], object]:
    encoder = TraceEncoder({"service.name": "trading"}, "sidecar", "0.1.0")
    if endpoint is None:
        return encoder.encode
    exporter = HttpExporter(endpoint, 5.0, {})
    return lambda batch: exporter.export(encoder.encode(batch))


PATHS = {"old": old_path, "new": new_path}


def cpu_per_span(export: Callable[[Batch], object], spans: list[SpanRecord], batch: int,
                 rounds: int) -> list[float]:
    """µs of this thread's CPU per span, one figure per round."""
    batches = [spans[i:i + batch] for i in range(0, len(spans), batch)]
    export(batches[0])  # warm: connection open, caches filled
    out = []
    for _ in range(rounds):
        start = time.thread_time()
        for b in batches:
            if export(b) is False:
                raise SystemExit("export failed")
        out.append((time.thread_time() - start) / len(spans) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=4096, help="spans (default 4096)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=512, help="spans per export (the default "
                    "max_export_batch_size)")
    ap.add_argument("--only", default="old,new", help="old, new or old,new")
    ap.add_argument("--no-http", action="store_true", help="encode only, no POST")
    args = ap.parse_args()
    spans = record_spans(args.n)
    endpoint = None
    if not args.no_http:
        sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"

    print(f"{len(spans)} spans, batches of {args.batch}, {args.rounds} rounds: "
          "µs of CPU per span (best / median)")
    print(f"{'path':<6} {'encode':>15} {'encode + POST':>15}   at 1%, 2 spans a hop")
    for name in args.only.split(","):
        row = []
        for ep in [None] if args.no_http else [None, endpoint]:
            export = PATHS[name](ep)
            if export is None:
                print(f"{name:<6} (opentelemetry-sdk is not installed)")
                break
            t = cpu_per_span(export, spans, args.batch, args.rounds)
            row.append((min(t), statistics.median(t)))
        if row:
            cells = "".join(f"{b:>8.1f} / {m:<5.1f}" for b, m in row)
            print(f"{name:<6} {cells}   {row[-1][0] * 0.02:.2f} µs per hop")


if __name__ == "__main__":
    main()
