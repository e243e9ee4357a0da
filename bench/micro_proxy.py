"""The proxy's own CPU per request, without sockets: fake transports on both sides.

Feeds a keep-alive GET into a downstream connection and a small response into its
upstream connection, N times, and reports µs per request of the proxy's own work. Not
a substitute for `http_keepalive.py` (no syscalls, no event loop); a steady,
repeatable figure to profile and to compare changes by:

    python bench/micro_proxy.py [-n 200000] [--profile] [--trace RATIO]
    python bench/micro_proxy.py --callgrind [--trace RATIO]   # instructions per request

`--trace RATIO` adds a tracer sampling that share of the (context-free) requests, its
spans encoded and dropped by a null exporter. CPU time on a shared machine moves with
the neighbours; instructions under callgrind do not, so compare changes by those.
PYTHONPATH=build/compiled measures the compiled build (the repository is appended to
the path, so the build on PYTHONPATH wins).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import pstats
import sys
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.measure import callgrind_per_call
from sidecar.config.model import Config, Endpoint
from sidecar.discovery import EndpointSet
from sidecar.routing.cluster import Cluster
from sidecar.routing.router import RouteEntry, Router
from sidecar.telemetry.config import TracingConfig
from sidecar.telemetry.metrics import Metrics
from sidecar.telemetry.tracing import Tracer
from sidecar.transport.downstream import DownstreamConnection
from sidecar.transport.listener import Listener, ListenerState
from sidecar.transport.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:15006\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 05:29:16 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class NullExporter:
    """Takes encoded batches and drops them: the encoding is measured, not the export."""

    def export(self, body: bytes) -> bool:
        return True

    def shutdown(self) -> None: ...


def build(loop: asyncio.AbstractEventLoop, trace: float | None = None
          ) -> tuple[DownstreamConnection, UpstreamConnection]:
    config = Config()
    metrics = Metrics()
    cluster = Cluster("app", config.upstream, loop)
    cluster.update(EndpointSet("app", (Endpoint("127.0.0.1", 8080),), known=True))
    stats = metrics.requests("inbound", "app")
    router = Router([RouteEntry("app", cluster, stats, 15.0)])
    state = ListenerState("inbound", "app", b"http", config.limits, router, stats)
    if trace is not None:
        tracer = Tracer(TracingConfig(sample_ratio=trace, service_name="app"),
                        exporter=NullExporter())
        state = dataclasses.replace(state, tracer=tracer)
    listener = Listener("inbound", state, metrics, loop)
    ds = DownstreamConnection(listener)
    ds.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool = cluster.endpoints[0].pool
    up = UpstreamConnection(pool)
    up.connection_made(FakeTransport())  # type: ignore[arg-type]
    pool.idle.append(up)
    return ds, up


def run(n: int, trace: float | None = None, warm: int = 0) -> float:
    loop = asyncio.new_event_loop()
    try:
        ds, up = build(loop, trace)
        pool, listener = up.pool, ds.listener
        # The loop never runs here. The batched writes ask it to call them back at the
        # end of the tick: that request goes to a deque (C-speed, like uvloop's, where
        # asyncio's pure-Python call_soon would add a sixth to the figure) and is dropped
        # each round (piled up, the callbacks made every garbage collection walk more).
        ready: deque[object] = deque()
        pool.writes.loop = listener.writes.loop = SimpleNamespace(  # type: ignore[assignment]
            call_soon=ready.append)
        gc.collect()
        gc.freeze()  # as `sidecar run` does once started
        t0 = 0.0
        for i in range(warm + n):
            if i == warm:
                t0 = time.process_time()
            ds.data_received(REQUEST)
            pool.writes.send()  # what the end of the loop's tick does
            up.data_received(RESPONSE)
            listener.writes.send()
            ready.clear()
        return (time.process_time() - t0) / n * 1e6
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--all", action="store_true", help="with --profile: more rows")
    parser.add_argument("--trace", type=float, metavar="RATIO",
                        help="with a tracer sampling this share of requests")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per request under valgrind (N = n / 20)")
    parser.add_argument("--loop", type=int, help=argparse.SUPPRESS)  # one callgrind run
    args = parser.parse_args()
    trace = ["--trace", str(args.trace)] if args.trace is not None else []
    if args.callgrind:
        per_call = callgrind_per_call(Path(__file__).resolve(), trace, max(1, args.n // 20))
        print(f"{per_call:,.0f} instructions per request (no I/O; "
              f"{'tracing at ' + str(args.trace) if trace else 'no tracing'})")
        return
    if args.loop is not None:
        run(args.loop, args.trace, warm=2000)
        return
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.n, args.trace, warm=2000)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40 if args.all else 18)
        return
    # The least of several rounds: this machine's neighbours add noise, never speed.
    best = min(run(args.n // 5, args.trace, warm=2000) for _ in range(5))
    print(f"{best:.2f} µs of proxy CPU per request (no I/O, best of 5 rounds)")


if __name__ == "__main__":
    main()
