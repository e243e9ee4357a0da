"""Balancing around a slow upstream, and what the resilience stack costs, in one run.

    python bench/resilience.py [--duration 10] [--connections 16] [--rounds 3]

Three upstream instances of `portfolio` behind the sidecar's outbound listener (static
discovery), loaded with wrk (`Host: portfolio`) at a fixed concurrency:

- slow set: two fast instances and one that holds 10% of its responses for 50 ms (the
  choice drawn from a seeded RNG, per request). The sidecar balances with `least_request`
  (P2C over peak EWMA, the default) and with `round_robin`, in the same run: p50/p90/p99,
  RPS, and the share of requests each instance served (counted by the backends).
- uniform set: three fast instances. The sidecar runs `plain` (no retries, no retry
  budget, no outlier detection, no Retry-After penalties, no circuit breaker) and `full`
  (the defaults for all of those, plus a circuit breaker and an active HTTP health check
  every second): RPS and the sidecar's CPU time per request.

The backends are this file run as `python bench/resilience.py backend ...`: one asyncio
(uvloop) process per set, answering "ok\\n" on each instance's port, plus a control port
whose `GET /stats` returns what each instance served. The sidecar is pinned to one CPU,
wrk and the backends to the other. Every round runs the four variants, interleaved (the
order reversed every other round), each with a freshly started sidecar. Prints the
per-round figures and the medians, and writes bench/results/resilience-<timestamp>.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the `bench` package importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import (
    WrkResult,
    core_busy,
    core_jiffies,
    cpu_times,
    cpu_used,
    descendants,
    parse_wrk,
    rss_mib,
)
from bench.peers import READY_TIMEOUT_S, SIDECAR_READY_TIMEOUT_S, find_tool, tool_versions
from bench.procs import (
    BenchError,
    Supervisor,
    check_placement,
    free_port,
    log_tail,
    supervised,
    wait_http_ok,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SERVICE = "portfolio"
BODY = b"ok\n"

# wrk's own percentiles (what wrk_report.lua prints) are after wrk's coordinated-omission
# correction (stats_correct: every sample longer than twice the mean interval between a
# connection's requests adds synthetic samples below it). With a heavy tail that is most of
# the tail: one 50 ms answer among 1 ms ones adds ~50 samples. So this script also times
# every request itself (one connection per wrk thread, so request() and response() of a
# thread alternate) and prints those raw per-request percentiles as RAW_JSON.
RAW_LUA = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
started = nil
lat = {}
n = 0
function request()
  started = now_us()
  return wrk.format()
end
function response(status, headers, body)
  if started ~= nil then n = n + 1; lat[n] = now_us() - started; started = nil end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"min": %.0f, "mean": %.1f, "max": %.0f, ' ..
    '"p50": %.0f, "p90": %.0f, "p99": %.0f, "p99.9": %.0f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  local all = {}
  for _, t in ipairs(threads) do
    local l = t:get("lat")
    for i = 1, #l do all[#all + 1] = l[i] end
  end
  table.sort(all)
  local function q(p)
    if #all == 0 then return 0 end
    local i = math.ceil(p / 100 * #all)
    if i < 1 then i = 1 end
    return all[i]
  end
  local sum = 0
  for i = 1, #all do sum = sum + all[i] end
  io.write(string.format('RAW_JSON {"count": %d, "mean": %.1f, "p50": %.0f, "p90": %.0f, ' ..
    '"p99": %.0f, "p99.9": %.0f, "max": %.0f}\\n',
    #all, #all > 0 and sum / #all or 0, q(50), q(90), q(99), q(99.9), q(100)))
end
"""

# ---------------------------------------------------------------------------------------
# The backend: `python bench/resilience.py backend --instance PORT[:slow] ... --control PORT`
# ---------------------------------------------------------------------------------------

Handler = Callable[[bytes], tuple[int, bytes, str, float]]  # path -> status, body, type, delay


@dataclass
class Instance:
    """One upstream instance's behaviour and what it served."""

    port: int
    slow: bool
    rng: random.Random
    delay_s: float
    slow_share: float
    requests: int = 0  # every request but health checks
    delayed: int = 0
    health: int = 0
    queued: int = 0  # arrived while an earlier answer on its connection was still held back
    connections: int = 0

    def answer(self, path: bytes) -> tuple[int, bytes, str, float]:
        if path == b"/health":
            self.health += 1
            return 200, BODY, "text/plain", 0.0
        self.requests += 1
        if self.slow and self.rng.random() < self.slow_share:
            self.delayed += 1
            return 200, BODY, "text/plain", self.delay_s
        return 200, BODY, "text/plain", 0.0


class _Conn(asyncio.Protocol):
    """HTTP/1.1 server connection; answers in request order even when one is held back."""

    def __init__(self, handler: Handler) -> None:
        import httptools  # the sidecar's own HTTP parser; only the backend process needs it

        self._handler = handler
        self._on_queued: Callable[[], None] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._parse_error: type[Exception] = httptools.HttpParserError
        self._loop = asyncio.get_running_loop()
        self._url = b""
        self._pending: collections.deque[tuple[float, bytes, bool]] = collections.deque()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parse_error:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        path, self._url = self._url.split(b"?", 1)[0], b""
        status, body, ctype, delay = self._handler(path)
        keep = bool(self._parser.should_keep_alive())
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n"
        ).encode()
        if delay <= 0 and not self._pending:
            self._write(head + body, keep)
            return
        if self._pending and self._on_queued is not None:
            self._on_queued()
        self._pending.append((self._loop.time() + delay, head + body, keep))
        if len(self._pending) == 1:
            self._loop.call_at(self._pending[0][0], self._flush)

    def _flush(self) -> None:
        now = self._loop.time()
        while self._pending and self._pending[0][0] <= now:
            _, data, keep = self._pending.popleft()
            self._write(data, keep)
        if self._pending:
            self._loop.call_at(self._pending[0][0], self._flush)

    def _write(self, data: bytes, keep: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(data)
        if not keep:
            self._transport.close()


def _factory(handler: Handler, inst: Instance | None = None) -> Callable[[], _Conn]:
    def make() -> _Conn:
        conn = _Conn(handler)
        if inst is not None:
            inst.connections += 1
            conn._on_queued = lambda: setattr(inst, "queued", inst.queued + 1)
        return conn

    return make


async def _serve(instances: list[Instance], control_port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for inst in instances:
        servers.append(await loop.create_server(_factory(inst.answer, inst), "127.0.0.1", inst.port,
                                                backlog=1024))

    def control(path: bytes) -> tuple[int, bytes, str, float]:
        if path != b"/stats":
            return 404, b"not found\n", "text/plain", 0.0
        rows = [
            {"port": i.port, "slow": i.slow, "requests": i.requests, "delayed": i.delayed,
             "health": i.health, "queued": i.queued, "connections": i.connections}
            for i in instances
        ]
        return 200, json.dumps(rows).encode(), "application/json", 0.0

    servers.append(await loop.create_server(_factory(control), "127.0.0.1", control_port))
    await asyncio.Event().wait()  # until SIGTERM


def backend_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="resilience.py backend")
    p.add_argument("--instance", action="append", required=True, help="PORT or PORT:slow")
    p.add_argument("--control", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--delay-ms", type=float, default=50.0)
    p.add_argument("--slow-share", type=float, default=0.1)
    a = p.parse_args(argv)
    instances = []
    for n, spec in enumerate(a.instance):
        port, _, kind = spec.partition(":")
        instances.append(Instance(
            port=int(port), slow=kind == "slow", rng=random.Random(a.seed + n),
            delay_s=a.delay_ms / 1000, slow_share=a.slow_share,
        ))
    try:
        import uvloop

        uvloop.run(_serve(instances, a.control))
    except ImportError:
        asyncio.run(_serve(instances, a.control))
    return 0


# ---------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backends:
    name: str  # slow | uniform
    ports: tuple[int, ...]
    slow_ports: tuple[int, ...]
    control: int

    def stats(self) -> dict[int, dict[str, int]]:
        status, body = _get("127.0.0.1", self.control, "/stats")
        if status != 200:
            raise BenchError(f"backend stats answered {status}")
        return {row["port"]: row for row in json.loads(body)}


@dataclass(frozen=True)
class Variant:
    name: str
    backends: str  # which set
    upstream: str  # the `upstream:` section of the sidecar's config (YAML flow mapping)
    what: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("least_request", "slow", "{balancer: least_request}",
                "P2C over peak EWMA (the default); retries, budget, outlier detection default"),
        Variant("round_robin", "slow", "{balancer: round_robin}",
                "weighted round robin; the rest as least_request"),
        Variant("plain", "uniform",
                "{retries: false, retry_budget: false, outlier_detection: false, "
                "retry_after: false}",
                "least_request, no retries/budget/outlier detection/Retry-After/breaker"),
        Variant("full", "uniform",
                "{circuit_breaker: {}, health_check: {path: /health, interval: 1s}}",
                "least_request, default retries+budget, outlier detection, Retry-After, "
                "circuit breaker, active HTTP health check every 1 s"),
    )
}


@dataclass
class Run:
    variant: str
    round: int
    error: str | None = None
    load: WrkResult | None = None  # wrk's summary; its latency_us is CO-corrected
    raw_latency_us: dict[str, float] = field(default_factory=dict)  # per request, as timed
    cpu_us_per_req: float | None = None
    cpu_share: float | None = None
    proxy_core_busy: float | None = None
    proxy_core_softirq: float | None = None
    load_core_busy: float | None = None
    rss_mib: float | None = None
    served: dict[str, dict[str, int]] = field(default_factory=dict)  # port -> counts (delta)
    slow_share: float | None = None  # of the requests the backends served
    delayed_share: float | None = None  # of the requests the backends served
    backend_requests: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # selected sidecar counters
    clusters: dict[str, Any] = field(default_factory=dict)
    log_problems: list[str] = field(default_factory=list)  # warning/error lines of its log

    @property
    def ok(self) -> bool:
        return self.error is None and self.load is not None

    @property
    def rps_per_core(self) -> float | None:
        if self.load is None or not self.cpu_share:
            return None
        return self.load.rps / self.cpu_share


def _get(host: str, port: int, path: str, headers: dict[str, str] | None = None,
         timeout_s: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _progress(what: str) -> None:
    print(f"[resilience] {what}", file=sys.stderr, flush=True)


def start_backends(sup: Supervisor, args: argparse.Namespace, workdir: Path, name: str,
                   slow: int) -> Backends:
    """Three instances in one asyncio process on the load CPU; `slow` of them slow."""
    ports = tuple(free_port() for _ in range(3))
    control = free_port()
    slow_ports = ports[len(ports) - slow:]
    specs = [f"{p}:slow" if p in slow_ports else str(p) for p in ports]
    argv = [args.python, str(Path(__file__).resolve()), "backend", "--control", str(control),
            "--seed", str(args.seed), "--delay-ms", str(args.delay_ms),
            "--slow-share", str(args.slow_share)]
    for spec in specs:
        argv += ["--instance", spec]
    log = workdir / f"backend-{name}.log"
    proc = sup.start(argv, cpu=args.load_cpu, log=log)
    wait_http_ok(f"http://127.0.0.1:{control}/stats", proc, log, READY_TIMEOUT_S)
    return Backends(name=name, ports=ports, slow_ports=slow_ports, control=control)


@dataclass
class Sidecar:
    proc: Any
    log: Path
    outbound: int
    admin: int

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]


def start_sidecar(sup: Supervisor, args: argparse.Namespace, home: Path, backends: Backends,
                  variant: Variant) -> Sidecar:
    port_out, port_admin = free_port(), free_port()
    home.mkdir(parents=True)
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in backends.ports)
    conf = home / "sidecar.yaml"
    conf.write_text(f"""\
service: {{name: bench}}
listeners:
  inbound: {{enabled: false}}
  outbound: {{address: "127.0.0.1:{port_out}"}}
  admin: {{address: "127.0.0.1:{port_admin}"}}
app: {{address: "127.0.0.1:{backends.control}"}}
discovery:
  static:
    services:
      {SERVICE}: [{endpoints}]
upstream: {variant.upstream}
""")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    log = home / "stderr.log"
    proc = sup.start([args.python, "-m", "sidecar", "run", "--config", str(conf)],
                     cpu=args.proxy_cpu, log=log, env=env, cwd=home)
    wait_http_ok(f"http://127.0.0.1:{port_admin}/internal/v1/health", proc, log,
                 SIDECAR_READY_TIMEOUT_S)
    return Sidecar(proc=proc, log=log, outbound=port_out, admin=port_admin)


def run_wrk(sup: Supervisor, args: argparse.Namespace, port: int,
            duration_s: int) -> tuple[WrkResult, dict[str, float]]:
    """wrk with one thread per connection; its own summary and the raw per-request latency."""
    argv = ["wrk", f"-t{args.connections}", f"-c{args.connections}", f"-d{duration_s}s",
            "--timeout", "5s", "-H", f"Host: {SERVICE}", "-s", str(args.lua),
            f"http://127.0.0.1:{port}/"]
    out = sup.run(argv, cpu=args.load_cpu, timeout_s=duration_s + 30)
    raw = next((json.loads(line[len("RAW_JSON "):]) for line in out.splitlines()
                if line.startswith("RAW_JSON ")), None)
    if raw is None:
        raise BenchError(f"wrk printed no RAW_JSON:\n{out[-500:]}")
    return parse_wrk(out), {k: float(v) for k, v in raw.items()}


_METRIC = re.compile(r"^(sidecar_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$")
_KEEP = ("sidecar_requests_total", "sidecar_retries_total", "sidecar_retry_budget_exhausted_total",
         "sidecar_upstream_connect_errors_total", "sidecar_upstream_endpoints",
         "sidecar_circuit_breaker_state")


def scrape(sidecar: Sidecar) -> dict[str, float]:
    """The sidecar's counters that say whether anything went wrong or was retried."""
    status, body = _get("127.0.0.1", sidecar.admin, "/internal/v1/metrics")
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        m = _METRIC.match(line.strip())
        if m and m.group(1) in _KEEP:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters as increases over the measured run; gauges (endpoints, breaker) as read after."""
    return {k: (v - before.get(k, 0.0)) if k.split("{")[0].endswith("_total") else v
            for k, v in after.items()}


def _log_problems(log: Path, keep: int = 20) -> list[str]:
    """The sidecar's log lines at warning level or worse (JSON lines), and tracebacks."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            level = str(json.loads(line).get("level", "")).lower()
        except (ValueError, AttributeError):
            level = "error" if "Traceback" in line or "Error" in line else ""
        if level in ("warning", "error", "critical"):
            found.append(line)
    return found[:keep]


def measure(sup: Supervisor, args: argparse.Namespace, workdir: Path, backends: Backends,
            variant: Variant, round_no: int) -> Run:
    run = Run(variant=variant.name, round=round_no)
    try:
        side = start_sidecar(sup, args, workdir / f"round-{round_no}" / variant.name, backends,
                             variant)
        got = _get("127.0.0.1", side.outbound, "/", {"Host": SERVICE})
        if got != (200, BODY):
            raise BenchError(f"outbound answered {got!r}, expected (200, {BODY!r})")
        _progress(f"round {round_no} {variant.name}: warm-up {args.warmup} s")
        run_wrk(sup, args, side.outbound, args.warmup)
        _progress(f"round {round_no} {variant.name}: measuring {args.duration} s "
                  f"at {args.connections} connections")
        stats0, metrics0 = backends.stats(), scrape(side)
        cpu0, cores0 = cpu_times(side.pids()), core_jiffies()
        load, run.raw_latency_us = run_wrk(sup, args, side.outbound, args.duration)
        used = cpu_used(cpu0, cpu_times(side.pids()))
        cores1 = core_jiffies()
        stats1, metrics1 = backends.stats(), scrape(side)
        if side.proc.poll() is not None:
            raise BenchError(f"sidecar exited with {side.proc.returncode} during the run:\n"
                             + log_tail(side.log))
        run.load = load
        run.cpu_us_per_req = used / load.requests * 1e6 if load.requests else None
        run.cpu_share = used / load.duration_s
        run.proxy_core_busy, run.proxy_core_softirq = core_busy(cores0, cores1, args.proxy_cpu)
        run.load_core_busy, _ = core_busy(cores0, cores1, args.load_cpu)
        run.rss_mib = rss_mib(side.pids())
        run.served = {
            str(port): {k: stats1[port][k] - stats0[port][k]
                        for k in ("requests", "delayed", "health", "queued", "connections")}
            | {"slow": int(port in backends.slow_ports)}
            for port in backends.ports
        }
        total = sum(s["requests"] for s in run.served.values())
        run.backend_requests = total
        if total:
            run.slow_share = sum(run.served[str(p)]["requests"] for p in backends.slow_ports) / total
            run.delayed_share = sum(s["delayed"] for s in run.served.values()) / total
        run.metrics = _delta(metrics0, metrics1)
        status, body = _get("127.0.0.1", side.admin, "/internal/v1/clusters")
        if status == 200:
            run.clusters = json.loads(body).get("clusters", {})
        if load.requests == 0:
            raise BenchError(f"no request completed; wrk errors {load.errors}")
        if any(k.startswith("sidecar_requests_total") and 'code="5' in k and v
               for k, v in run.metrics.items()):
            _progress(f"round {round_no} {variant.name}: sidecar answered 5xx: "
                      + ", ".join(f"{k}={v:g}" for k, v in run.metrics.items()
                                  if 'code="5' in k and v))
        run.log_problems = _log_problems(side.log)
        if run.log_problems:
            _progress(f"round {round_no} {variant.name}: {len(run.log_problems)} warning/error "
                      f"lines in the sidecar log, e.g. {run.log_problems[0][:200]}")
    except (BenchError, OSError, http.client.HTTPException, ValueError) as exc:
        run.error = str(exc) or type(exc).__name__
        _progress(f"round {round_no} {variant.name}: FAILED: {run.error.splitlines()[0]}")
    return run


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(share: float | None, fmt: str = ".1f") -> str:
    return "-" if share is None else format(share * 100, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}x"


def _retries(run: Run) -> float:
    return sum(v for k, v in run.metrics.items() if k.startswith("sidecar_retries_total"))


def _fivexx(run: Run) -> float:
    return sum(v for k, v in run.metrics.items()
               if k.startswith("sidecar_requests_total") and 'code="5' in k)


def summarize(runs: list[Run]) -> dict[str, dict[str, float | None]]:
    """Per variant, the median over its rounds of each figure (latencies in ms)."""
    out: dict[str, dict[str, float | None]] = {}
    for name in VARIANTS:
        mine = [r for r in runs if r.variant == name and r.ok and r.load is not None]
        if not mine:
            continue
        out[name] = {
            "rounds": len(mine),
            "rps": _median([r.load.rps for r in mine if r.load]),
            **{q: _median([r.raw_latency_us.get(q, 0.0) / 1000 for r in mine])
               for q in ("p50", "p90", "p99", "p99.9", "mean")},
            "wrk_corrected_p99": _median([r.load.latency_us["p99"] / 1000
                                         for r in mine if r.load]),
            "slow_share": _median([r.slow_share for r in mine]),
            "delayed_share": _median([r.delayed_share for r in mine]),
            "cpu_us_per_req": _median([r.cpu_us_per_req for r in mine]),
            "cpu_us_per_req_min": min((r.cpu_us_per_req for r in mine
                                       if r.cpu_us_per_req is not None), default=None),
            "rps_per_core": _median([r.rps_per_core for r in mine]),
            "wrk_errors": sum(r.load.error_count for r in mine if r.load),
            "sidecar_5xx": sum(_fivexx(r) for r in mine),
            "retries": sum(_retries(r) for r in mine),
        }
    return out


_HEAD = (f"{'variant':<14}{'rnd':>4}{'RPS':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
         f"{'p99.9':>8}{'wrk p99':>9}{'to slow %':>10}{'delayed %':>10}{'err':>5}{'5xx':>5}"
         f"{'retry':>6}{'CPU us/req':>11}{'busy %':>9}")


def _row(r: Run) -> str:
    if not r.ok or r.load is None:
        return f"{r.variant:<14}{r.round:>4}  FAILED: {(r.error or '?').splitlines()[0][:90]}"
    raw = r.raw_latency_us
    busy = f"{_pct(r.proxy_core_busy, '.0f')}/{_pct(r.load_core_busy, '.0f')}"
    return (f"{r.variant:<14}{r.round:>4}{r.load.rps:>8,.0f}{raw['p50'] / 1000:>8.2f}"
            f"{raw['p90'] / 1000:>8.2f}{raw['p99'] / 1000:>8.2f}{raw['p99.9'] / 1000:>8.2f}"
            f"{r.load.latency_us['p99'] / 1000:>9.2f}"
            f"{_pct(r.slow_share):>10}{_pct(r.delayed_share, '.2f'):>10}{r.load.error_count:>5}"
            f"{_fivexx(r):>5.0f}{_retries(r):>6.0f}{_f(r.cpu_us_per_req, '.1f'):>11}{busy:>9}")


def render(runs: list[Run], summary: dict[str, dict[str, float | None]],
           args: argparse.Namespace) -> str:
    lines = [
        f"wrk -t{args.connections} -c{args.connections} -H 'Host: {SERVICE}' against the "
        f"outbound listener, {args.duration} s per run; sidecar on CPU {args.proxy_cpu}, wrk + "
        f"backends on CPU {args.load_cpu}. Latency: each request as timed (p50..p99.9); "
        "'wrk p99' is wrk's own, after its coordinated-omission correction.",
        "",
        f"Slow set: 3 instances, one holds {args.slow_share:.0%} of its answers for "
        f"{args.delay_ms:g} ms",
        _HEAD, "-" * len(_HEAD),
    ]
    for name in ("least_request", "round_robin"):
        lines += [_row(r) for r in runs if r.variant == name]
    lines += ["", "Uniform set: 3 fast instances (same load)", _HEAD, "-" * len(_HEAD)]
    for name in ("plain", "full"):
        lines += [_row(r) for r in runs if r.variant == name]

    lines += ["", "Medians over rounds",
              f"{'variant':<14}{'RPS':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'p99.9':>8}"
              f"{'wrk p99':>9}{'to slow %':>10}{'CPU us/req':>11}{'(least)':>8}{'RPS/core':>10}"]
    for name, s in summary.items():
        lines.append(
            f"{name:<14}{_f(s['rps'], ',.0f'):>8}{_f(s['p50'], '.2f'):>8}{_f(s['p90'], '.2f'):>8}"
            f"{_f(s['p99'], '.2f'):>8}{_f(s['p99.9'], '.2f'):>8}"
            f"{_f(s['wrk_corrected_p99'], '.2f'):>9}{_pct(s['slow_share']):>10}"
            f"{_f(s['cpu_us_per_req'], '.1f'):>11}{_f(s['cpu_us_per_req_min'], '.1f'):>8}"
            f"{_f(s['rps_per_core'], ',.0f'):>10}")
    lr, rr = summary.get("least_request"), summary.get("round_robin")
    if lr and rr and lr["p99"] and rr["p99"]:
        lines.append(f"p99 round_robin / least_request: {rr['p99'] / lr['p99']:.1f}x "
                     f"({rr['p99']:.2f} ms vs {lr['p99']:.2f} ms)")
    plain, full = summary.get("plain"), summary.get("full")
    if plain and full and plain["cpu_us_per_req"] and full["cpu_us_per_req"] and plain["rps"] \
            and full["rps"]:
        lines.append(
            f"resilience stack: CPU per request full / plain "
            f"{full['cpu_us_per_req'] / plain['cpu_us_per_req']:.3f}x "
            f"({full['cpu_us_per_req'] - plain['cpu_us_per_req']:+.1f} us/req), "
            f"RPS full / plain {full['rps'] / plain['rps']:.3f}x (medians); least CPU per "
            f"request full / plain {_ratio(full['cpu_us_per_req_min'], plain['cpu_us_per_req_min'])}")
    notes = []
    for r in runs:
        if r.ok and r.proxy_core_busy is not None and r.cpu_share is not None:
            others = r.proxy_core_busy - (r.proxy_core_softirq or 0.0) - r.cpu_share
            if others > 0.1:
                notes.append(f"note: round {r.round} {r.variant}: other processes used "
                             f"~{others:.0%} of the sidecar's core; that run is disturbed.")
        if r.ok and r.load and r.load.error_count:
            notes.append(f"note: round {r.round} {r.variant}: wrk errors {r.load.errors}")
        if r.ok and r.backend_requests is not None and r.load and \
                r.backend_requests > r.load.requests + args.connections:
            notes.append(f"note: round {r.round} {r.variant}: backends served "
                         f"{r.backend_requests} for {r.load.requests} client requests (retries)")
        if r.log_problems:
            notes.append(f"note: round {r.round} {r.variant}: {len(r.log_problems)} warning/"
                         f"error lines in the sidecar log, first: {r.log_problems[0][:200]}")
        if r.error:
            notes.append(f"round {r.round} {r.variant} failed:\n  "
                         + r.error.replace("\n", "\n  "))
    if notes:
        lines += ["", *notes]
    return "\n".join(line.rstrip() for line in lines)


def _meta(args: argparse.Namespace, started: datetime) -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip()
                      for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    return {
        "benchmark": "resilience",
        "started_at": started.isoformat(),
        "machine": {"cpu": cpu_model, "cpus": os.cpu_count(), "kernel": platform.release(),
                    "host": platform.node()},
        "options": {k: v for k, v in vars(args).items() if k != "lua"}
        | {"wrk_threads": args.connections},
        "variants": {v.name: {"backends": v.backends, "upstream": v.upstream, "what": v.what}
                     for v in VARIANTS.values()},
        "tools": tool_versions() | {"python_for_sidecar": args.python},
    }


def _run_json(r: Run) -> dict[str, Any]:
    data = asdict(r)
    if r.load is not None:
        data["load"]["rps"] = r.load.rps
    data["rps_per_core"] = r.rps_per_core
    return data


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before it (2)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, variants interleaved (3)")
    p.add_argument("--only", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--delay-ms", type=float, default=50.0, help="the slow instance's delay (50)")
    p.add_argument("--slow-share", type=float, default=0.1,
                   help="share of the slow instance's answers delayed (0.1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the backends' RNG (1)")
    p.add_argument("--python", default=None,
                   help="interpreter for the sidecar and backends (default .venv/bin/python)")
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU for the sidecar (0)")
    p.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk and the backends (1)")
    args = p.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in VARIANTS]
    if unknown or not args.only:
        p.error(f"--only: unknown {unknown}; choose from {','.join(VARIANTS)}")
    for name in ("duration", "warmup", "connections", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not 0 <= args.slow_share <= 1:
        p.error("--slow-share must be in [0, 1]")
    check_placement(p, args, REPO)
    return args



def _run(args: argparse.Namespace, sup: Supervisor, workdir: Path) -> list[Run]:
    for tool in ("wrk", "taskset"):
        find_tool(tool)
    needed = {VARIANTS[n].backends for n in args.only}
    sets = {}
    if "slow" in needed:
        sets["slow"] = start_backends(sup, args, workdir, "slow", slow=1)
    if "uniform" in needed:
        sets["uniform"] = start_backends(sup, args, workdir, "uniform", slow=0)
    args.lua = workdir / "raw_latency.lua"
    args.lua.write_text(RAW_LUA)
    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        order = args.only if round_no % 2 else list(reversed(args.only))
        for name in order:
            variant = VARIANTS[name]
            with sup.scope():  # this variant's sidecar ends before the next starts
                runs.append(measure(sup, args, workdir, sets[variant.backends], variant,
                                    round_no))
            time.sleep(0.5)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["backend"]:
        return backend_main(argv[1:])
    args = _args(argv)
    started = datetime.now(UTC)
    runs, code = supervised(lambda sup, tmp: _run(args, sup, tmp))
    if runs is None:
        return code
    summary = summarize(runs)
    print(render(runs, summary, args))
    path = RESULTS / f"resilience-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**_meta(args, started), "summary": summary,
                                "runs": [_run_json(r) for r in runs]}, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
