"""What the sidecar's features cost: tracing, access logs and the inbound policy chain,
beside the bare sidecar and nginx, in one run.

    python bench/features.py [--duration 5] [--rounds 3] [--only nginx,bare,policy]

The keep-alive workload of `http_keepalive.py` (wrk -t1 -c50, one nginx backend answering
"ok\\n", the proxy pinned to one CPU, wrk and the backend on another), against:

  nginx         nginx as the reverse proxy (the reference)
  bare          the sidecar as configured by `http_keepalive.py` (request metrics on)
  no-metrics    bare with `telemetry: {request_metrics: false}`
  trace-1       + tracing at sample_ratio 0.01, exported by OTLP/HTTP to a real Jaeger
  trace-100     + tracing at sample_ratio 1.0, same Jaeger
  access-log    + an access log written to a file
  policy        + an inbound route with `jwt: true` (ES256, inline JWKS), an RBAC rule
                  requiring a role the token holds, and a rate limit that never limits

Every request of every target carries the same valid bearer token (wrk -H), so the
requests are byte for byte the same and the policy target verifies it once, then answers
from its verified-token cache. Targets are interleaved per round and each keeps its run
with the least proxy CPU per request. Metrics cannot be switched off, so their cost is
measured without sockets too: `micro_proxy.py`'s hop with and without the per-request
metrics update, and the update alone (see `--help` of this file and bench/README.md).

Prints a table, the issues' targets, notes, and writes bench/results/features-<ts>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    # Run as a script: make the `bench` package importable from the repository root.
    # Appended, not put first: the hop without sockets must import the build that
    # $SIDECAR_BUILD names (on PYTHONPATH), not the repository's pure sources.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.measure import (
    WRK_SCRIPT,
    WrkResult,
    core_busy,
    core_jiffies,
    cpu_times,
    cpu_used,
    parse_wrk,
    rss_mib,
)
from bench.peers import (
    READY_TIMEOUT_S,
    TARGETS,
    Launch,
    Target,
    find_tool,
    start_backend,
    start_sidecar,
    tool_versions,
)
from bench.procs import (
    BenchError,
    Supervisor,
    check_placement,
    free_port,
    http_get,
    log_tail,
    sidecar_build,
    sidecar_env,
    supervised,
)
from bench.report import Goal, Outcome, machine

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

ISSUER = "https://id.bench.test/"
AUDIENCE = "bench"
ROLE = "bench-reader"
_DISTURBED = 0.1


# --- set-up done with the sidecar's interpreter (PyJWT, cryptography, the test kit) ---

_SETUP_SCRIPT = """
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sidecar.testing.jaeger import _CONFIG, JaegerNotFound, find_jaeger
issuer, audience, role = sys.argv[1:4]
key = ec.generate_private_key(ec.SECP256R1())
jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
jwk.update(kid="bench-1", alg="ES256", use="sig")
now = int(time.time())
def token(roles):
    claims = {"iss": issuer, "aud": audience, "sub": "bench-user", "roles": roles,
              "iat": now, "exp": now + 86400}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench-1"})
try:
    jaeger, why = find_jaeger(), ""
except JaegerNotFound as exc:
    jaeger, why = None, str(exc)
print(json.dumps({"jwk": jwk, "token": token([role]), "token_without_role": token(["other"]),
                  "jaeger": jaeger, "jaeger_missing": why, "jaeger_config": _CONFIG}))
"""


@dataclass(frozen=True)
class Setup:
    jwks: dict[str, Any]
    token: str  # valid, holds ROLE: every request of every target carries it
    token_without_role: str  # valid, lacks ROLE: the policy target must answer 403
    jaeger: str | None
    jaeger_missing: str
    jaeger_config: str  # sidecar.testing.jaeger's template (OTLP/HTTP in, memory store)

    @property
    def auth_header(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.token}")


def _sidecar_env() -> dict[str, str]:
    return sidecar_env(REPO)


def make_setup(python: str) -> Setup:
    try:
        done = subprocess.run(
            [python, "-c", _SETUP_SCRIPT, ISSUER, AUDIENCE, ROLE],
            capture_output=True, text=True, env=_sidecar_env(), timeout=60, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"could not make keys and tokens with {python}: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"could not make keys and tokens with {python}:\n{done.stderr[-800:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Setup(jwks={"keys": [data["jwk"]]}, token=data["token"],
                 token_without_role=data["token_without_role"], jaeger=data["jaeger"],
                 jaeger_missing=data["jaeger_missing"], jaeger_config=data["jaeger_config"])


# --- Jaeger: one for the whole run, on the load CPU (the collector is not the proxy) ---

@dataclass(frozen=True)
class Jaeger:
    proc: subprocess.Popen[bytes]
    log: Path
    otlp_url: str
    query_url: str


def start_jaeger(sup: Supervisor, setup: Setup, workdir: Path, cpu: int) -> Jaeger:
    if setup.jaeger is None:
        raise BenchError(setup.jaeger_missing)
    home = workdir / "jaeger"
    home.mkdir()
    ports = {k: free_port() for k in ("otlp_http", "query", "query_grpc", "health")}
    conf = home / "jaeger.yaml"
    conf.write_text(setup.jaeger_config.format(host="127.0.0.1", max_traces=10000, **ports))
    log = home / "jaeger.log"
    proc = sup.start([setup.jaeger, f"--config=file:{conf}"], cpu=cpu, log=log)
    deadline = time.monotonic() + 30
    while True:  # /status answers 200 once every component is up
        if proc.poll() is not None:
            raise BenchError(f"jaeger exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if http_get(f"http://127.0.0.1:{ports['health']}/status")[0] == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"jaeger not ready within 30 s:\n{log_tail(log)}")
        time.sleep(0.05)
    return Jaeger(proc, log, f"http://127.0.0.1:{ports['otlp_http']}/v1/traces",
                  f"http://127.0.0.1:{ports['query']}")


# --- the targets ---------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    launch: Launch
    setup: Setup
    jaeger: Jaeger | None


def _yaml(extra: dict[str, Any]) -> str:
    """Top-level keys for the generated config, each value as JSON (a YAML flow collection)."""
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in extra.items())


def _tracing(ratio: float) -> Callable[[Context], dict[str, Any]]:
    def config(ctx: Context) -> dict[str, Any]:
        if ctx.jaeger is None:
            raise BenchError("no Jaeger for the tracing targets: " + ctx.setup.jaeger_missing)
        return {"telemetry": {"tracing": {"endpoint": ctx.jaeger.otlp_url,
                                          "sample_ratio": ratio}}}
    return config


def _access_log(ctx: Context) -> dict[str, Any]:
    return {"telemetry": {"access_log": {"path": str(ctx.launch.workdir / "access.log")}}}


def _policy(ctx: Context) -> dict[str, Any]:
    provider = {"name": "bench-idp", "issuer": ISSUER, "audiences": [AUDIENCE],
                "algorithms": ["ES256"], "jwks": {"inline": ctx.setup.jwks}}
    route = {"name": "bench", "match": {"path_prefix": "/"}, "jwt": True,
             "rbac": [{"name": "bench-readers", "roles": [ROLE]}],
             "rate_limits": [{"by": "ip", "second": 1_000_000}]}
    return {"auth": {"providers": [provider]}, "inbound_routes": [route]}


# name -> extra sidecar config (None: nginx); in this order.
VARIANTS: dict[str, Callable[[Context], dict[str, Any]] | None] = {
    "nginx": None,
    "bare": lambda ctx: {},
    "no-metrics": lambda ctx: {"telemetry": {"request_metrics": False}},
    "trace-0": _tracing(0.0),
    "trace-1": _tracing(0.01),
    "trace-100": _tracing(1.0),
    "access-log": _access_log,
    "policy": _policy,
}
DESCRIPTIONS = {
    "nginx": "nginx reverse proxy, 1 worker, upstream keepalive (as in http_keepalive.py)",
    "bare": "sidecar as in http_keepalive.py: no tracing, no access log, no policy; "
            "request metrics on (the default)",
    "no-metrics": "bare with telemetry.request_metrics: false (what the metrics cost)",
    "trace-0": "bare + telemetry.tracing, sample_ratio 0: every trace started and passed "
               "on, none recorded (what propagation alone costs)",
    "trace-1": "bare + telemetry.tracing, sample_ratio 0.01, OTLP/HTTP to a real Jaeger",
    "trace-100": "bare + telemetry.tracing, sample_ratio 1.0, OTLP/HTTP to a real Jaeger",
    "access-log": "bare + telemetry.access_log to a file (every request)",
    "policy": "bare + inbound route: jwt (ES256, inline JWKS, cached), rbac role rule, "
              "rate limit by ip 1e6/s",
}


def _admin_url(target: Target) -> str:
    """The admin listener of a sidecar that `start_sidecar` configured (read from the
    config file it wrote next to its log)."""
    assert target.log is not None
    text = (target.log.parent / "sidecar.yaml").read_text()
    found = re.search(r'admin: \{address: "([0-9.]+:\d+)"\}', text)
    if found is None:
        raise BenchError("no admin address in the generated sidecar config")
    return f"http://{found.group(1)}"


# --- HTTP and wrk with headers ----------------------------------------------------------

def _get(url: str, headers: Mapping[str, str] = {}, timeout_s: float = 2.0
         ) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        path = parts.path or "/"
        conn.request("GET", f"{path}?{parts.query}" if parts.query else path, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def run_wrk_h(sup: Supervisor, url: str, *, connections: int, duration_s: int, cpu: int,
              headers: Mapping[str, str]) -> WrkResult:
    """`bench.measure.run_wrk`, with request headers."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s",
            "-s", str(WRK_SCRIPT)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return parse_wrk(sup.run([*argv, url], cpu=cpu, timeout_s=duration_s + 30))


# --- measuring ---------------------------------------------------------------------------

@dataclass
class FeatureOutcome(Outcome):
    round: int = 0
    checks: dict[str, str] = field(default_factory=dict)  # what was verified before loading
    counters: dict[str, float] = field(default_factory=dict)  # sidecar metrics after the run
    collector_cpu_share: float | None = None  # Jaeger's CPU per second of the run


_COUNTERS = re.compile(
    r"^(sidecar_(?:trace_spans_\w+|access_log_records_\w+|policy_denials_total|"
    r"requests_total)(?:\{[^}]*\})?) ([0-9.e+-]+)$", re.M)


def _scrape(admin: str) -> dict[str, float]:
    status, body = _get(f"{admin}/internal/v1/metrics")
    if status != 200:
        return {}
    return {m.group(1): float(m.group(2)) for m in _COUNTERS.finditer(body.decode())}


def _verify(name: str, target: Target, ctx: Context, expected: tuple[int, bytes]
            ) -> dict[str, str]:
    """The target answers like the backend with the token; the policy target also refuses
    without it and without the role, and its explain endpoint shows all three policies."""
    token = dict([ctx.setup.auth_header])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            got = _get(target.url, token)
            if got == expected:
                break
            why = f"answered {got!r}, the backend answers {expected!r}"
        except (OSError, http.client.HTTPException) as exc:
            why = str(exc) or type(exc).__name__
        if target.proc is not None and target.proc.poll() is not None:
            raise BenchError(f"exited with {target.proc.returncode}:\n{log_tail(target.log)}"
                             if target.log else "exited")
        if time.monotonic() > deadline:
            tail = log_tail(target.log) if target.log is not None else ""
            raise BenchError(f"{target.url}: {why}" + (f"\nlog:\n{tail}" if tail else ""))
        time.sleep(0.05)
    checks = {"with token": f"{got[0]} {got[1]!r}"}
    if name != "policy":
        return checks
    for what, headers, want in (
        ("no token", {}, 401),
        ("token without the role", {"Authorization": f"Bearer {ctx.setup.token_without_role}"},
         403),
    ):
        status, _ = _get(target.url, headers)
        if status != want:
            raise BenchError(f"{what}: answered {status}, expected {want}")
        checks[what] = str(status)
    status, body = _get(f"{_admin_url(target)}/internal/v1/explain?method=GET&path=/", token)
    doc = json.loads(body) if status == 200 else {}
    steps = [(s.get("policy"), s.get("decision")) for s in doc.get("policies", [])]
    if doc.get("decision") != "allow" or len(steps) != 3:
        raise BenchError(f"explain answered {status}: {body[:300]!r}")
    checks["explain"] = f"route {doc.get('route')}: " + ", ".join(f"{p} {d}" for p, d in steps)
    return checks


def _jaeger_has_traces(jaeger: Jaeger) -> str:
    try:
        status, body = _get(f"{jaeger.query_url}/api/traces?service=bench&limit=1")
    except (OSError, http.client.HTTPException) as exc:
        return f"query failed: {exc}"
    data = json.loads(body).get("data") if status == 200 else None
    return "yes" if data else f"none yet (HTTP {status})"


def measure(name: str, ctx: Context, args: argparse.Namespace, expected: tuple[int, bytes],
            round_no: int) -> FeatureOutcome:
    out = FeatureOutcome(name=name, round=round_no)
    launch = ctx.launch
    try:
        extra = VARIANTS[name]
        target = TARGETS["nginx"](launch) if extra is None else start_sidecar(launch, _yaml(extra(ctx)))
        out.startup_s, out.idle_rss_mib, out.extra = (
            target.startup_s, target.idle_rss_mib, target.extra)
        out.checks = _verify(name, target, ctx, expected)
        headers = dict([ctx.setup.auth_header])
        _progress(name, f"round {round_no}: warm-up {args.warmup} s")
        run_wrk_h(launch.sup, target.url, connections=args.connections,
                  duration_s=args.warmup, cpu=launch.backend_cpu, headers=headers)
        _progress(name, f"round {round_no}: measuring {args.duration} s")
        collector = [ctx.jaeger.proc.pid] if ctx.jaeger is not None else []
        before, coll_before, cores = (
            cpu_times(target.cpu_pids()), cpu_times(collector), core_jiffies())
        load = out.load = run_wrk_h(launch.sup, target.url, connections=args.connections,
                                    duration_s=args.duration, cpu=launch.backend_cpu,
                                    headers=headers)
        used = cpu_used(before, cpu_times(target.cpu_pids()))
        coll_used = cpu_used(coll_before, cpu_times(collector))
        cores_after = core_jiffies()
        out.proxy_core_busy, out.proxy_core_softirq = core_busy(cores, cores_after,
                                                                launch.proxy_cpu)
        out.load_core_busy, _ = core_busy(cores, cores_after, launch.backend_cpu)
        out.cpu_us_per_req = used / load.requests * 1e6 if load.requests else None
        out.cpu_share = used / load.duration_s
        out.rss_mib = rss_mib(target.rss_pids())
        if collector and name.startswith("trace"):
            out.collector_cpu_share = coll_used / load.duration_s
        if target.proc is not None and target.proc.poll() is not None:
            raise BenchError(f"exited with status {target.proc.returncode} during the run:\n"
                             + (log_tail(target.log) if target.log else ""))
        if load.requests == 0:
            raise BenchError(f"no request completed; wrk errors {load.errors}")
        if extra is not None:
            out.counters = _scrape(_admin_url(target))
        if name.startswith("trace") and ctx.jaeger is not None:
            time.sleep(1.2)  # the export thread's schedule delay is 1 s
            out.checks["traces in jaeger"] = _jaeger_has_traces(ctx.jaeger)
        if name == "access-log":
            path = launch.workdir / "access.log"
            out.checks["access log"] = (f"{path.stat().st_size} bytes" if path.exists()
                                        else "no file")
    except (BenchError, OSError, http.client.HTTPException, ValueError) as exc:
        out.error = str(exc) or type(exc).__name__
        _progress(name, "FAILED: " + out.error.splitlines()[0])
    return out


def _better(kept: FeatureOutcome | None, new: FeatureOutcome) -> FeatureOutcome:
    """The run with the least proxy CPU per request; a failed one never replaces a good one."""
    if kept is None or not kept.ok:
        return new
    if not new.ok or new.cpu_us_per_req is None or kept.cpu_us_per_req is None:
        return kept
    return new if new.cpu_us_per_req < kept.cpu_us_per_req else kept


# --- the same hop without sockets: every variant, and metrics switched off -------------

# micro_proxy.py's method: fake transports on both sides of a real sidecar (started in
# this process from the same config as the live target), a keep-alive GET with the token
# fed in and a small response fed back, N times; process CPU per request (background
# threads, the access-log writer and the span exporter, included). "no-metrics" is the
# bare sidecar with `telemetry: {request_metrics: false}`, measured whenever bare is.
MICRO_VARIANTS = ("bare", "no-metrics", "trace-1", "trace-100", "access-log", "policy",
                  "route", "jwt", "jwt+rbac", "ratelimit")


def _policy_part(*keep: str) -> Callable[[Context], dict[str, Any]]:
    """The policy target's route with only some of its steps: where its cost goes."""
    def config(ctx: Context) -> dict[str, Any]:
        full = _policy(ctx)
        route = {k: v for k, v in full["inbound_routes"][0].items()
                 if k in ("name", "match", *keep)}
        return ({"auth": full["auth"]} if "jwt" in keep else {}) | {"inbound_routes": [route]}
    return config


# Only without sockets: the policy chain taken apart.
MICRO_ONLY: dict[str, Callable[[Context], dict[str, Any]]] = {
    "route": _policy_part(),
    "jwt": _policy_part("jwt"),
    "jwt+rbac": _policy_part("jwt", "rbac"),
    "ratelimit": _policy_part("rate_limits"),
}


def _micro_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the sidecar's interpreter (`features.py --micro-child <json>`)."""
    import asyncio
    import gc

    from bench.micro_proxy import RESPONSE, FakeTransport
    from sidecar.app import Sidecar
    from sidecar.config import load_data
    from sidecar.telemetry.metrics import Metrics, RequestStats
    from sidecar.transport.downstream import DownstreamConnection
    from sidecar.transport.tick import TickWrites
    from sidecar.transport.upstream import UpstreamConnection

    request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:15006\r\nAuthorization: Bearer "
               + spec["token"].encode() + b"\r\n\r\n")
    n, rounds = int(spec["n"]), int(spec["rounds"])

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sidecars: dict[str, Any] = {}
        hops: dict[str, Any] = {}
        for name, extra in spec["variants"].items():
            cfg = {"service": {"name": "bench"},
                   "listeners": {k: {"address": "127.0.0.1:0"}
                                 for k in ("inbound", "outbound", "admin")},
                   "app": {"address": f"127.0.0.1:{spec['app_port']}"}, **extra}
            sc = Sidecar(load_data(cfg), loop)
            await sc.start()
            sidecars[name] = sc
            ds = DownstreamConnection(sc.listeners["inbound"])
            down = FakeTransport()
            ds.connection_made(down)  # type: ignore[arg-type]
            pool = sc.app_cluster.endpoints[0].pool
            up = UpstreamConnection(pool)
            upt = FakeTransport()
            up.connection_made(upt)  # type: ignore[arg-type]
            pool.idle.append(up)
            hops[name] = (ds, up, upt, pool.writes, ds.listener.writes)
        runs: dict[str, list[float]] = {v: [] for v in MICRO_VARIANTS if v in hops}
        gc.collect()
        gc.freeze()  # as `sidecar run` does once started: collections skip what start-up made

        async def run(name: str, count: int) -> float:
            ds, up, upt, upstream_writes, client_writes = hops[name]
            assert isinstance(upstream_writes, TickWrites)
            sent = upt.written
            t0 = time.process_time()
            for i in range(count):
                ds.data_received(request)
                upstream_writes.send()  # what the end of the loop's tick does
                up.data_received(RESPONSE)
                client_writes.send()
                if i & 63 == 63:  # let the loop run what the writes scheduled (no-ops by
                    await asyncio.sleep(0)  # now): piled up, they slow every collection
            time.sleep(0.6)  # background writers catch up (idle costs no CPU)
            used = time.process_time() - t0
            if upt.written - sent != count:
                raise RuntimeError(f"{name}: {upt.written - sent} of {count} requests reached "
                                   "the upstream")
            return used / count * 1e6

        for name in runs:
            await run(name, 2000)  # warm: first-use caches, the token verified once
        for _ in range(rounds):  # interleaved: the machine's mood hits all alike
            for name in runs:
                runs[name].append(await run(name, n))
        dropped = {}
        for name, sc in sidecars.items():
            text = sc.metrics.render().decode()
            dropped[name] = [line for line in text.splitlines()
                             if "_dropped_total{" in line and not line.endswith(" 0.0")]
        for sc in sidecars.values():
            await sc.stop()
        st = RequestStats("inbound", "bench")
        best_observe = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for _ in range(n * 5):
                st.observe(200, 0.0004)
            best_observe = min(best_observe, (time.process_time() - t0) / (n * 5) * 1e6)
        m = Metrics()
        for d in ("inbound", "outbound"):
            s = m.requests(d, "bench")
            for code in (200, 404, 503):
                s.observe(code, 0.001)
        t0 = time.perf_counter()
        for _ in range(50):
            m.render()
        return {"us_per_req": {k: min(v) for k, v in runs.items()}, "rounds": runs,
                "observe_call_us": best_observe,
                "render_ms": (time.perf_counter() - t0) / 50 * 1e3, "dropped": dropped}

    import uvloop  # the sidecar's loop: asyncio's own call_soon is Python, and costs µs
    return uvloop.run(main())


def micro(args: argparse.Namespace, ctx: Context, backend_port: int) -> dict[str, Any]:
    """Run `_micro_child` with the sidecar's interpreter, pinned to the proxy CPU."""
    _progress("micro", f"the hop without sockets, {args.micro_n} requests x 3 rounds per variant")
    variants: dict[str, Any] = {}
    for name in MICRO_VARIANTS:
        make = VARIANTS.get(name) or (MICRO_ONLY.get(name) if "policy" in args.only else None)
        wanted = name in args.only or name in MICRO_ONLY or (
            name == "no-metrics" and "bare" in args.only)
        if wanted and make is not None:
            try:
                variants[name] = make(ctx)
            except BenchError as exc:
                _progress("micro", f"{name} left out: {exc}")
    spec = {"n": args.micro_n, "rounds": 3, "token": ctx.setup.token,
            "app_port": backend_port, "variants": variants}
    try:
        done = subprocess.run(
            ["taskset", "-c", str(args.proxy_cpu), args.python, str(Path(__file__).resolve()),
             "--micro-child", json.dumps(spec)],
            capture_output=True, text=True, env=_sidecar_env(), cwd=REPO, timeout=900,
            check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    if done.returncode != 0:
        return {"error": done.stderr[-1500:] or done.stdout[-500:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the report ------------------------------------------------------------------------

def _cost(variant: Outcome | None, bare: Outcome | None) -> tuple[float | None, float | None]:
    """(cost per core, cost in RPS as measured): 1 - variant / bare."""
    if variant is None or bare is None or not variant.ok or not bare.ok:
        return None, None
    assert variant.load is not None and bare.load is not None
    per_core = (1 - variant.rps_per_core / bare.rps_per_core
                if variant.rps_per_core and bare.rps_per_core else None)
    return per_core, 1 - variant.load.rps / bare.load.rps if bare.load.rps else None


def paired_costs(rounds: list[dict[str, FeatureOutcome]]) -> dict[str, list[float]]:
    """Per round, each variant's cost per core against the bare sidecar of that round."""
    out: dict[str, list[float]] = {}
    for runs in rounds:
        for name, o in runs.items():
            if name in ("nginx", "bare"):
                continue
            c, _ = _cost(o, runs.get("bare"))
            if c is not None:
                out.setdefault(name, []).append(c)
    return out


def micro_costs(micro: dict[str, Any], bare: Outcome | None) -> dict[str, dict[str, float]]:
    """Per variant of the hop without sockets: the CPU it adds per request (µs), and that
    added to the live bare sidecar's CPU per request as an RPS cost: d / (live + d)."""
    us = micro.get("us_per_req") or {}
    if "bare" not in us:
        return {}
    live = bare.cpu_us_per_req if bare is not None and bare.ok else None
    out: dict[str, dict[str, float]] = {}
    for name, value in us.items():
        if name == "bare":
            continue
        # no-metrics is the bare hop minus something: its cost is what metrics add.
        added = us["bare"] - value if name == "no-metrics" else value - us["bare"]
        row = {"added_us": added}
        if live:
            base = live - added if name == "no-metrics" else live
            row["live_equivalent_cost"] = added / (base + added)
        out["metrics" if name == "no-metrics" else name] = row
    return out


def goals(best: dict[str, FeatureOutcome], micro: dict[str, Any],
          paired: dict[str, list[float]] | None = None) -> list[Goal]:
    bare, nginx = best.get("bare"), best.get("nginx")
    mc = micro_costs(micro, bare)

    def per_core_ratio(a: Outcome | None, b: Outcome | None) -> float | None:
        if a is None or b is None or not a.ok or not b.ok or not b.rps_per_core:
            return None
        return (a.rps_per_core or 0) / b.rps_per_core

    def rps_ratio(a: Outcome | None, b: Outcome | None) -> float | None:
        if a is None or b is None or a.load is None or b.load is None or not b.load.rps:
            return None
        return a.load.rps / b.load.rps

    def pct(x: float | None) -> float | None:
        return None if x is None else x * 100

    def live(name: str, i: int) -> float | None:
        return pct(_cost(best.get(name), bare)[i])

    def median_paired(name: str) -> float | None:
        # Each round's variant against that round's bare run, minutes apart at most: on a
        # shared machine the median of those pairs moves least with the neighbours.
        got = (paired or {}).get(name)
        return pct(statistics.median(got)) if got else None

    def no_sockets(name: str) -> float | None:
        return pct(mc.get(name, {}).get("live_equivalent_cost"))

    def metrics_live() -> float | None:
        nm = best.get("no-metrics")
        if nm is None or bare is None or not nm.ok or not bare.ok or not nm.rps_per_core:
            return None
        return pct(1 - (bare.rps_per_core or 0) / nm.rps_per_core)

    observe_share = None
    if bare is not None and bare.cpu_us_per_req and "observe_call_us" in micro:
        observe_share = micro["observe_call_us"] / bare.cpu_us_per_req
    out = [
        Goal("policy chain cost, per core, median of rounds", median_paired("policy"), "%",
             "<", 15),
        Goal("policy chain cost, per core, best runs", live("policy", 0), "%", ""),
        Goal("policy chain cost, RPS", live("policy", 1), "%", ""),
        Goal("policy chain cost, no sockets", no_sockets("policy"), "%", "<", 15),
        Goal("metrics cost, per core (bare vs no-metrics)", metrics_live(), "%", "<", 5),
        Goal("metrics cost, no sockets", no_sockets("metrics"), "%", "<", 5),
        Goal("metrics update / bare CPU per req", pct(observe_share), "%", "<", 5),
        Goal("tracing 1% cost, per core, median of rounds", median_paired("trace-1"), "%",
             "<", 5),
        Goal("tracing 1% cost, per core, best runs", live("trace-1", 0), "%", ""),
        Goal("tracing 1% cost, RPS", live("trace-1", 1), "%", ""),
        Goal("tracing, sampling nothing, per core, best runs", live("trace-0", 0), "%", ""),
        Goal("tracing 1% cost, no sockets", no_sockets("trace-1"), "%", "<", 5),
        Goal("tracing 100% cost, per core", live("trace-100", 0), "%", ""),
        Goal("tracing 100% cost, no sockets", no_sockets("trace-100"), "%", ""),
        Goal("access log cost, per core", live("access-log", 0), "%", ""),
        Goal("access log cost, no sockets", no_sockets("access-log"), "%", ""),
        Goal("RPS per core, bare / nginx", per_core_ratio(bare, nginx), "x", ">=", 0.7),
        Goal("RPS as measured, bare / nginx", rps_ratio(bare, nginx), "x", ""),
    ]
    for name in ("trace-1", "trace-100", "access-log", "policy"):
        out.append(Goal(f"RPS per core, {name} / nginx",
                        per_core_ratio(best.get(name), nginx), "x", ""))
    return out


def render(best: dict[str, FeatureOutcome], paired: dict[str, list[float]],
           micro: dict[str, Any], gs: list[Goal], args: argparse.Namespace) -> str:
    head = (f"{'target':<11}{'RPS':>9}{'RPS/core':>10}{'CPU us/req':>11}{'CPU %':>6}"
            f"{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'core busy %':>13}{'RSS MiB':>8}"
            f"{'cost/core':>10}{'cost RPS':>9}{'per round':>20}")
    lines = [f"wrk -t1 -c{args.connections} keep-alive, {args.duration} s runs, best of "
             f"{args.rounds} rounds (least CPU/req); cost = 1 - variant / bare; "
             "per round = cost/core paired with that round's bare run", head, "-" * len(head)]
    bare = best.get("bare")
    for name, o in best.items():
        if not o.ok or o.load is None:
            lines.append(f"{name:<11}FAILED: {(o.error or '?').splitlines()[0][:100]}")
            continue
        lat = o.load.latency_us
        c_core, c_rps = _cost(o, bare) if name not in ("bare", "nginx") else (None, None)
        per_round = ",".join(f"{c * 100:+.1f}" for c in paired.get(name, []))
        busy = f"{_pct(o.proxy_core_busy)}/{_pct(o.load_core_busy)}"
        lines.append(
            f"{name:<11}{o.load.rps:>9,.0f}{_cell(o.rps_per_core, ',.0f'):>10}"
            f"{_cell(o.cpu_us_per_req, '.1f'):>11}{_pct(o.cpu_share):>6}"
            f"{lat['p50'] / 1000:>8.3f}{lat['p99'] / 1000:>8.3f}{o.load.error_count:>7}"
            f"{busy:>13}{_cell(o.rss_mib, '.1f'):>8}"
            f"{_cell(None if c_core is None else c_core * 100, '+.1f'):>9}%"
            f"{_cell(None if c_rps is None else c_rps * 100, '+.1f'):>8}%{per_round:>20}")
    lines.append("")
    if "error" in micro:
        lines.append("hop without sockets failed: " + micro["error"].strip().splitlines()[-1])
    else:
        mc = micro_costs(micro, bare)
        lines.append("the hop without sockets (CPU us per request, best of 3; 'metrics' = bare "
                     "minus bare with request_metrics off):")
        lines.append("  " + ", ".join(f"{k} {v:.2f}" for k, v in micro["us_per_req"].items()))
        lines.append("  added: " + ", ".join(
            f"{k} {v['added_us']:+.2f} us" + (f" (~{v['live_equivalent_cost']:.1%} of live RPS)"
                                             if "live_equivalent_cost" in v else "")
            for k, v in mc.items()))
        lines.append(f"  the metrics update alone: {micro['observe_call_us']:.3f} us/call; "
                     f"one scrape of /internal/v1/metrics: {micro['render_ms']:.2f} ms")
        for name, dropped in micro.get("dropped", {}).items():
            if dropped:
                lines.append(f"  note: {name} dropped: {'; '.join(dropped)}")
    lines += ["", f"{'':<38}{'measured':>12}   target"]
    for g in gs:
        value = "n/a" if g.value is None else f"{g.value:.2f} {g.unit}"
        target = f"{g.op} {g.limit:g} {g.unit}" if g.op else "(none)"
        verdict = {True: "met", False: "NOT met", None: ""}[g.met]
        lines.append(f"{g.what:<38}{value:>12}   {target:<10}{verdict}")
    lines.append("")
    for o in best.values():
        if o.ok and o.proxy_core_busy is not None and o.cpu_share is not None:
            others = o.proxy_core_busy - (o.proxy_core_softirq or 0.0) - o.cpu_share
            if others > _DISTURBED:
                lines.append(f"note: other processes used ~{others:.0%} of the proxy core "
                             f"during the kept {o.name} run")
        if o.collector_cpu_share is not None:
            lines.append(f"note: {o.name}: Jaeger (on the load core) used "
                         f"{o.collector_cpu_share:.0%} of a core during the run")
        if o.counters:
            shown = {k: v for k, v in o.counters.items() if "requests_total" not in k}
            if shown:
                lines.append(f"note: {o.name} counters: "
                             + ", ".join(f"{k}={v:g}" for k, v in shown.items()))
        if o.checks:
            lines.append(f"checked {o.name}: " + "; ".join(f"{k}: {v}" for k, v in o.checks.items()))
        if o.error:
            lines.append(f"{o.name} failed:\n  " + o.error.replace("\n", "\n  "))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}"


def _progress(name: str, what: str) -> None:
    print(f"[{name}] {what}", file=sys.stderr, flush=True)


# --- the run ----------------------------------------------------------------------------

def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (5)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before it (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--only", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--micro-n", type=int, default=30_000,
                   help="requests per variant and round of the hop without sockets "
                   "(30000); 0 skips it")
    p.add_argument("--python", default=None, help="interpreter of the sidecar "
                   "(default .venv/bin/python of the repository if it exists)")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    args = p.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in VARIANTS]
    if unknown or not args.only:
        p.error(f"--only: unknown {unknown}; choose from {','.join(VARIANTS)}")
    for name in ("duration", "warmup", "connections", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    check_placement(p, args, REPO)
    return args


@dataclass
class RunResult:
    rounds: list[dict[str, FeatureOutcome]]
    best: dict[str, FeatureOutcome]
    micro: dict[str, Any]
    setup_notes: dict[str, str]


def _run(args: argparse.Namespace, sup: Supervisor, workdir: Path) -> RunResult:
    for tool in ("nginx", "wrk", "taskset"):
        find_tool(tool)
    setup = make_setup(args.python)
    backend = start_backend(sup, workdir, args.load_cpu)
    expected = http_get(backend.url)
    port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    launch = Launch(sup=sup, workdir=workdir, proxy_cpu=args.proxy_cpu,
                    backend_cpu=args.load_cpu, backend_port=port, python=args.python, repo=REPO)
    notes: dict[str, str] = {}
    jaeger = None
    if any(n.startswith("trace") for n in args.only):
        try:
            jaeger = start_jaeger(sup, setup, workdir, args.load_cpu)
            notes["jaeger"] = f"{setup.jaeger} (OTLP {jaeger.otlp_url}), on CPU {args.load_cpu}"
        except BenchError as exc:
            notes["jaeger"] = f"not started: {exc}"
            _progress("jaeger", notes["jaeger"])
    rounds: list[dict[str, FeatureOutcome]] = []
    best: dict[str, FeatureOutcome] = {}
    for round_no in range(1, args.rounds + 1):
        runs: dict[str, FeatureOutcome] = {}
        # Each round starts one target later: a place in the round (right after nginx,
        # say) would otherwise weigh on the same target every time.
        shift = (round_no - 1) % len(args.only)
        for name in args.only[shift:] + args.only[:shift]:
            here = workdir / f"round-{round_no}" / name
            here.mkdir(parents=True)
            ctx = Context(dataclasses.replace(launch, workdir=here), setup, jaeger)
            with sup.scope():  # this target's processes end before the next one starts
                runs[name] = measure(name, ctx, args, expected, round_no)
            best[name] = _better(best.get(name), runs[name])
        rounds.append(runs)
    micro_result = (micro(args, Context(launch, setup, jaeger), port) if args.micro_n > 0
                    else {"error": "skipped (--micro-n 0)"})
    return RunResult(rounds, best, micro_result, notes)


def _meta(args: argparse.Namespace, started: datetime) -> dict[str, Any]:
    return {
        "benchmark": "features",
        "started_at": started.isoformat(),
        "machine": machine(),
        "sidecar_build": sidecar_build(args.python, REPO),
        "options": {"duration_s": args.duration, "warmup_s": args.warmup,
                    "connections": args.connections, "wrk_threads": 1, "rounds": args.rounds,
                    "only": args.only, "micro_n": args.micro_n, "python": args.python,
                    "proxy_cpu": args.proxy_cpu, "load_cpu": args.load_cpu},
        "tools": tool_versions() | {"python_for_sidecar": args.python},
        "targets_described": {n: DESCRIPTIONS[n] for n in args.only},
    }


def _outcome_json(o: FeatureOutcome) -> dict[str, Any]:
    data = dataclasses.asdict(o)
    if o.load is not None:
        data["load"]["rps"] = o.load.rps
    data["rps_per_core"] = o.rps_per_core
    return data



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--micro-child"]:  # the in-process part, in the sidecar's interpreter
        print(json.dumps(_micro_child(json.loads(argv[1]))))
        return 0
    args = _args(argv)
    started = datetime.now(UTC)
    result, code = supervised(lambda sup, tmp: _run(args, sup, tmp))
    if result is None:
        return code
    paired = paired_costs(result.rounds)
    gs = goals(result.best, result.micro, paired)
    print(render(result.best, paired, result.micro, gs, args))
    print(f"sidecar build: {sidecar_build(args.python, REPO)}")
    path = RESULTS / f"features-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        **_meta(args, started),
        "setup": result.setup_notes,
        "best": {n: _outcome_json(o) for n, o in result.best.items()},
        "rounds": [{n: _outcome_json(o) for n, o in r.items()} for r in result.rounds],
        "paired_cost_per_core": paired,
        "paired_cost_median": {n: statistics.median(v) for n, v in paired.items() if v},
        "micro": result.micro,
        "goals": [dataclasses.asdict(g) | {"met": g.met} for g in gs],
    }, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0 if all(o.error is None for o in result.best.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
