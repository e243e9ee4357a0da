"""mTLS through the sidecar, beside nginx and haproxy doing mTLS, in one run.

    python bench/mtls.py [--duration 5] [--rounds 2] [--modes keepalive,handshake]

Certificates come from the project's own CA (`sidecar.testing.mesh_ca`): one ECDSA P-256
server leaf used by all three proxies, one client leaf presented by the load tool, and
the trust bundle every proxy requires client certificates to chain to. Each target in
turn (never two at once) terminates mTLS on one CPU and forwards in plaintext, over
keep-alive, to one nginx backend; the load tool and the backend share another CPU.

Two workloads per target, both with ApacheBench (`ab`, apache2-utils: the Debian load
generator that can present a client certificate; wrk and h2load cannot):

- keepalive: `ab -k`, every connection kept for the whole run: requests per second;
- handshake: `ab -H "Connection: close"`: every request on a new connection with a full
  handshake (ab never offers a session to resume): handshakes per second.

For each: RPS, the proxy's CPU time per request and RPS per proxy core (from /proc), how
busy both cores were and how much of the load core ab itself used (to show when the
load side, not the proxy, was the limit). Prints a table and the sidecar's ratios to
nginx and haproxy, and writes bench/results/mtls-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    rss_mib,
)
from bench.peers import (
    READY_TIMEOUT_S,
    Launch,
    Target,
    find_tool,
    nginx_target,
    start_backend,
    start_nginx,
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

MODES = ("keepalive", "handshake")
# ab speaks HTTP/1.0 and keeps a connection only when the response head contains the
# string "keep-alive" (it searches the head; it does not parse Connection). The backend
# adds this header for every target alike, so ab's keep-alive works through a proxy that
# keeps an HTTP/1.0 connection open without saying so; the probe below reports that.
MARK_HEADER = ("X-Bench-Note", "keep-alive")
# ab keeps a record per request: size its table for this many requests per second.
_AB_MAX_RPS = 150_000
_SATURATED = 0.9
_DISTURBED = 0.1


@dataclass(frozen=True)
class Certs:
    server_chain: Path  # leaf + intermediate
    server_key: Path
    server_pem: Path  # chain + key in one file (haproxy's crt)
    bundle: Path  # the roots client certificates must chain to
    client_chain: Path
    client_key: Path
    client_pem: Path  # chain + key in one file (ab -E)
    description: str


@dataclass
class MtlsOutcome(Outcome):
    """One target under one workload (`load` holds ab's figures in wrk's shape)."""

    mode: str = ""
    tls: str | None = None  # what ab negotiated: protocol, cipher, key exchange group
    keepalive_requests: int | None = None  # requests ab sent on a kept connection
    tool_cpu_share: float | None = None  # ab's own CPU per second of the run (1.0 = a core)


_CERTS_SCRIPT = """
import json, sys
from datetime import timedelta
from pathlib import Path
from sidecar.testing.mesh_ca import MeshCa
ca = MeshCa(Path(sys.argv[1]), "bench.test")
ttl = timedelta(hours=12)
s = ca.leaf("bench-server", ttl=ttl, dns=("localhost",))
c = ca.leaf("bench-client", ttl=ttl)
print(json.dumps({"server": [str(s.cert), str(s.key)], "client": [str(c.cert), str(c.key)],
                  "bundle": str(s.bundle)}))
"""


def make_certs(python: str, workdir: Path) -> Certs:
    """Server and client leaves from the project's CA (run with the sidecar's interpreter,
    which has `cryptography`), plus the combined PEM files haproxy and ab want."""
    env = sidecar_env(REPO)
    try:
        done = subprocess.run(
            [python, "-c", _CERTS_SCRIPT, str(workdir / "pki")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"could not make certificates with {python}: {exc}") from None
    if done.returncode != 0:
        raise BenchError(f"could not make certificates with {python}:\n{done.stderr[-800:]}")
    paths = json.loads(done.stdout.strip().splitlines()[-1])
    server_chain, server_key = (Path(p) for p in paths["server"])
    client_chain, client_key = (Path(p) for p in paths["client"])
    server_pem = workdir / "pki" / "server-with-key.pem"
    client_pem = workdir / "pki" / "client-with-key.pem"
    for combined, chain, key in (
        (server_pem, server_chain, server_key),
        (client_pem, client_chain, client_key),
    ):
        combined.write_bytes(chain.read_bytes() + key.read_bytes())
        combined.chmod(0o600)
    return Certs(
        server_chain=server_chain,
        server_key=server_key,
        server_pem=server_pem,
        bundle=Path(paths["bundle"]),
        client_chain=client_chain,
        client_key=client_key,
        client_pem=client_pem,
        description="ECDSA P-256 leaves (server + client) from sidecar.testing.mesh_ca, "
        "chained to an intermediate and a P-256 root",
    )


# --- the three mTLS targets -----------------------------------------------------------


def _nginx(launch: Launch, certs: Certs) -> Target:
    port = free_port()
    body = f"""\
    upstream app {{
        server 127.0.0.1:{launch.backend_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        # nginx 1.22's default leaves TLS 1.3 out; the others offer 1.2 and 1.3.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {certs.server_chain};
        ssl_certificate_key {certs.server_key};
        ssl_client_certificate {certs.bundle};
        ssl_verify_client on;
        ssl_verify_depth 2;  # leaf, intermediate, root (the default of 1 is too short)
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    proc, log = start_nginx(launch.sup, launch.workdir / "nginx", body, launch.proxy_cpu)
    return nginx_target("nginx", f"https://127.0.0.1:{port}/", proc, log)


def _haproxy(launch: Launch, certs: Certs) -> Target:
    port = free_port()
    home = launch.workdir / "haproxy"
    home.mkdir()
    conf = home / "haproxy.cfg"
    conf.write_text(f"""\
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:{port} ssl crt {certs.server_pem} ca-file {certs.bundle} verify required
    default_backend app

backend app
    server app 127.0.0.1:{launch.backend_port}
""")
    log = home / "stderr.log"
    proc = launch.sup.start(
        [find_tool("haproxy"), "-f", str(conf), "-db"], cpu=launch.proxy_cpu, log=log
    )
    return Target(
        name="haproxy",
        url=f"https://127.0.0.1:{port}/",
        proc=proc,
        log=log,
        cpu_pids=lambda: [proc.pid, *descendants(proc.pid)],
        rss_pids=lambda: [proc.pid, *descendants(proc.pid)],
    )


def _sidecar(launch: Launch, certs: Certs) -> Target:
    # The inbound listener requires client certificates (mtls: strict, the default with an
    # identity). No CRL, like the other two.
    identity = (
        f"identity: {{cert: {json.dumps(str(certs.server_chain))}, "
        f"key: {json.dumps(str(certs.server_key))}, bundle: {json.dumps(str(certs.bundle))}}}\n"
    )
    return start_sidecar(launch, identity, scheme="https")


TARGETS: dict[str, Callable[[Launch, Certs], Target]] = {
    "nginx": _nginx,
    "haproxy": _haproxy,
    "sidecar": _sidecar,
}


# --- talking to a target over mTLS ----------------------------------------------------


def client_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.bundle))
    ctx.check_hostname = False  # the leaf names localhost; we dial 127.0.0.1
    ctx.load_cert_chain(str(certs.client_chain), str(certs.client_key))
    return ctx


def https_get(url: str, ctx: ssl.SSLContext, timeout_s: float = 2.0) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s, context=ctx
    )
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_https_ok(target: Target, ctx: ssl.SSLContext, timeout_s: float) -> None:
    """Poll the target's URL over mTLS until it answers 200 (fail early if it exits)."""
    assert target.proc is not None and target.log is not None
    deadline = time.perf_counter() + timeout_s
    last = "no answer yet"
    while True:
        if target.proc.poll() is not None:
            raise BenchError(
                f"exited with status {target.proc.returncode} before ready:\n{log_tail(target.log)}"
            )
        try:
            status, _ = https_get(target.url, ctx, timeout_s=1.0)
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.perf_counter() >= deadline:
            raise BenchError(
                f"{target.url} not ready within {timeout_s:.0f} s: {last}\n{log_tail(target.log)}"
            )
        time.sleep(0.01)


def http10_keepalive(url: str, ctx: ssl.SSLContext) -> str:
    """How the target treats an HTTP/1.0 keep-alive request (what ab -k sends): whether it
    says `Connection: keep-alive`, and if not, whether it closes as a 1.0 client expects."""
    parts = urlsplit(url)
    with (
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 443), 2) as raw,
        ctx.wrap_socket(raw) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\nConnection: Keep-Alive\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed without a complete answer"
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        conn = [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")[1:]
            if line.startswith("connection:")
        ]
        if any("keep-alive" in value for value in conn):
            return "announced"
        sock.settimeout(1.5)
        try:
            while sock.recv(4096):
                pass
            return "not announced; closes (a 1.0 client is fine)"
        except TimeoutError:
            return "NOT announced, yet the connection stays open"
        except (ssl.SSLError, ConnectionError):
            return "not announced; closes (a 1.0 client is fine)"


# --- the load tool ----------------------------------------------------------------------


@dataclass(frozen=True)
class AbRun:
    result: WrkResult
    tls: str
    keepalive_requests: int
    tool_cpu_s: float


def _field(text: str, label: str) -> str | None:
    m = re.search(rf"^{re.escape(label)}:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None


def parse_ab(stdout: str) -> tuple[WrkResult, str, int]:
    """ab's summary as (figures in WrkResult's shape, negotiated TLS, keep-alive requests).

    ab's latencies are whole milliseconds; `requests` counts only successful answers."""
    complete = _field(stdout, "Complete requests")
    taken = _field(stdout, "Time taken for tests")
    if complete is None or taken is None:
        raise BenchError(f"ab printed no summary:\n{stdout[-500:]}")
    errors = {"connect": 0, "receive": 0, "length": 0, "exceptions": 0, "status": 0}
    failed = _field(stdout, "Failed requests") or "0"
    for key in ("connect", "receive", "length", "exceptions"):
        m = re.search(rf"{key}:\s*(\d+)", failed, re.IGNORECASE)
        errors[key] = int(m.group(1)) if m else 0
    failed_n = int(failed.split()[0])
    errors["status"] = int(_field(stdout, "Non-2xx responses") or 0)
    latency: dict[str, float] = {}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}%\s+(\d+)", stdout, re.MULTILINE)
        if m:
            latency[key] = float(m.group(1)) * 1000
    total = re.search(r"^Total:\s+(\d+)\s+(\d+)\s+\S+\s+\d+\s+(\d+)", stdout, re.MULTILINE)
    if total:
        latency.update(
            min=float(total.group(1)) * 1000,
            mean=float(total.group(2)) * 1000,
            max=float(total.group(3)) * 1000,
        )
    tls = ", ".join(
        v for v in (_field(stdout, "SSL/TLS Protocol"), _field(stdout, "Server Temp Key")) if v
    )
    result = WrkResult(
        requests=max(int(complete) - failed_n - errors["status"], 0),
        duration_s=float(taken.split()[0]),
        latency_us=latency,
        errors=errors,
    )
    return result, tls, int(_field(stdout, "Keep-Alive requests") or 0)


def run_ab(
    sup: Supervisor,
    url: str,
    certs: Certs,
    *,
    keepalive: bool,
    connections: int,
    duration_s: int,
    cpu: int,
) -> AbRun:
    argv = [
        find_tool("ab"),
        "-q",
        "-r",  # count a failed read and go on rather than abort the run
        "-s",
        "5",  # per-request timeout, like wrk's --timeout 5s
        "-c",
        str(connections),
        "-t",
        str(duration_s),
        "-n",  # after -t, which would otherwise stop the run at 50,000 requests
        str(duration_s * _AB_MAX_RPS),
        "-E",
        str(certs.client_pem),
    ]
    argv += ["-k"] if keepalive else ["-H", "Connection: close"]
    argv.append(url)
    # ab is the harness's only child that ends in between: its CPU time is the change in
    # the reaped children's usage.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = sup.run(argv, cpu=cpu, timeout_s=duration_s + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result, tls, kept = parse_ab(out)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return AbRun(result, tls, kept, used)


# --- one target -------------------------------------------------------------------------


def _progress(name: str, what: str) -> None:
    print(f"[{name}] {what}", file=sys.stderr, flush=True)


def _measure(
    launch: Launch,
    name: str,
    args: argparse.Namespace,
    certs: Certs,
    expected: tuple[int, bytes],
    facts: dict[str, dict[str, Any]],
) -> dict[str, MtlsOutcome]:
    outs = {mode: MtlsOutcome(name=name, mode=mode) for mode in args.modes}
    ctx = client_context(certs)
    mode = args.modes[0]
    try:
        target = TARGETS[name](launch, certs)
        for out in outs.values():
            out.startup_s, out.idle_rss_mib = target.startup_s, target.idle_rss_mib
            out.extra = dict(target.extra)
        wait_https_ok(target, ctx, READY_TIMEOUT_S)
        got = https_get(target.url, ctx)
        if got != expected:
            raise BenchError(f"answered {got!r}, the backend answers {expected!r}")
        facts.setdefault(name, {})["http10_keepalive"] = http10_keepalive(target.url, ctx)
        for mode in args.modes:
            out = outs[mode]
            keepalive = mode == "keepalive"
            _progress(name, f"{mode}: warm-up {args.warmup} s")
            run_ab(
                launch.sup,
                target.url,
                certs,
                keepalive=keepalive,
                connections=args.connections,
                duration_s=args.warmup,
                cpu=launch.backend_cpu,
            )
            _progress(name, f"{mode}: measuring {args.duration} s at {args.connections} conns")
            before, cores = cpu_times(target.cpu_pids()), core_jiffies()
            ab = run_ab(
                launch.sup,
                target.url,
                certs,
                keepalive=keepalive,
                connections=args.connections,
                duration_s=args.duration,
                cpu=launch.backend_cpu,
            )
            used = cpu_used(before, cpu_times(target.cpu_pids()))
            cores_after = core_jiffies()
            load = out.load = ab.result
            out.tls, out.keepalive_requests = ab.tls, ab.keepalive_requests
            out.tool_cpu_share = ab.tool_cpu_s / load.duration_s if load.duration_s else None
            out.proxy_core_busy, out.proxy_core_softirq = core_busy(
                cores, cores_after, launch.proxy_cpu
            )
            out.load_core_busy, _ = core_busy(cores, cores_after, launch.backend_cpu)
            out.cpu_us_per_req = used / load.requests * 1e6 if load.requests else None
            out.cpu_share = used / load.duration_s if load.duration_s else None
            out.rss_mib = rss_mib(target.rss_pids())
            if target.proc is not None and target.proc.poll() is not None:
                raise BenchError(
                    f"exited with status {target.proc.returncode} during the run:\n"
                    f"{log_tail(target.log) if target.log else ''}"
                )
            if load.requests == 0:
                raise BenchError(f"no request succeeded; ab errors {load.errors}")
    except (BenchError, OSError, http.client.HTTPException) as exc:
        error = str(exc) or type(exc).__name__
        _progress(name, f"FAILED ({mode}): " + error.splitlines()[0])
        for later in args.modes[args.modes.index(mode) :]:
            outs[later].error = error
    return outs


def _better(kept: MtlsOutcome | None, new: MtlsOutcome) -> MtlsOutcome:
    """Of two rounds, the one with the least proxy CPU per request; a failed round never
    replaces a good one."""
    if kept is None or not kept.ok:
        return new
    if not new.ok:
        return kept
    if new.cpu_us_per_req is not None and kept.cpu_us_per_req is not None:
        return new if new.cpu_us_per_req < kept.cpu_us_per_req else kept
    assert new.load is not None and kept.load is not None
    return new if new.load.rps > kept.load.rps else kept


Results = dict[str, dict[str, MtlsOutcome]]  # mode -> target -> outcome


def _run(
    args: argparse.Namespace, sup: Supervisor, workdir: Path
) -> tuple[Results, dict[str, dict[str, Any]], Certs]:
    for tool in ("ab", "nginx", "taskset", *(["haproxy"] if "haproxy" in args.only else [])):
        find_tool(tool)  # fail at once, with the install hint, rather than per target
    certs = make_certs(args.python, workdir)
    backend = start_backend(sup, workdir, args.load_cpu, header=MARK_HEADER)
    expected = http_get(backend.url)
    port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    launch = Launch(
        sup=sup,
        workdir=workdir,
        proxy_cpu=args.proxy_cpu,
        backend_cpu=args.load_cpu,
        backend_port=port,
        python=args.python,
        repo=REPO,
    )
    results: Results = {mode: {} for mode in args.modes}
    facts: dict[str, dict[str, Any]] = {}
    for round_no in range(1, args.rounds + 1):
        here = workdir / f"round-{round_no}"
        here.mkdir()
        this_round = dataclasses.replace(launch, workdir=here)
        for name in args.only:
            if args.rounds > 1:
                _progress(name, f"round {round_no} of {args.rounds}")
            with sup.scope():  # this target's processes end before the next one starts
                outs = _measure(this_round, name, args, certs, expected, facts)
            for mode, out in outs.items():
                results[mode][name] = _better(results[mode].get(name), out)
    return results, facts, certs


# --- report -----------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def goals(results: Results) -> list[Goal]:
    """The issue's targets (per proxy core, the fair figure) and the other ratios."""
    out: list[Goal] = []
    label = {"keepalive": "keep-alive RPS", "handshake": "handshakes/s"}
    for mode, by_target in results.items():
        side = by_target.get("sidecar")
        if side is None:
            continue

        def ok(name: str, by_target: dict[str, MtlsOutcome] = by_target) -> MtlsOutcome | None:
            o = by_target.get(name)
            return o if o is not None and o.ok else None

        s, n, h = ok("sidecar"), ok("nginx"), ok("haproxy")

        def per_core(o: MtlsOutcome | None) -> float | None:
            return o.rps_per_core if o else None

        def rps(o: MtlsOutcome | None) -> float | None:
            return o.load.rps if o and o.load else None

        what = label[mode]
        out += [
            Goal(f"{what} per core, / nginx", _ratio(per_core(s), per_core(n)), "x", ">=", 0.7),
            Goal(f"{what} as measured, / nginx", _ratio(rps(s), rps(n)), "x", ""),
            Goal(f"{what} per core, / haproxy", _ratio(per_core(s), per_core(h)), "x", ""),
            Goal(f"{what} as measured, / haproxy", _ratio(rps(s), rps(h)), "x", ""),
        ]
    return out


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}"


def _table(mode: str, by_target: dict[str, MtlsOutcome], connections: int) -> list[str]:
    title = {
        "keepalive": f"mTLS keep-alive: ab -k -c{connections} (HTTP/1.0 keep-alive)",
        "handshake": f"mTLS new connections: ab -c{connections} -H 'Connection: close' "
        "(a full handshake per request; RPS = handshakes/s)",
    }[mode]
    head = (
        f"{'target':<9}{'RPS':>9}{'RPS/core':>10}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}"
        f"{'CPU us/req':>11}{'CPU %':>6}{'core busy %':>13}{'ab CPU %':>9}{'RSS MiB':>8}  TLS"
    )
    lines = [title, head, "-" * (len(head) + 30)]
    for name, out in by_target.items():
        if not out.ok or out.load is None:
            first = (out.error or "no result").splitlines()[0]
            lines.append(f"{name:<9}FAILED: {first[:110]}")
            continue
        lat = out.load.latency_us
        busy = f"{_pct(out.proxy_core_busy)}/{_pct(out.load_core_busy)}"
        lines.append(
            f"{name:<9}{out.load.rps:>9,.0f}{_cell(out.rps_per_core, ',.0f'):>10}"
            f"{_cell(lat.get('p50', 0) / 1000, '.0f'):>8}{_cell(lat.get('p99', 0) / 1000, '.0f'):>8}"
            f"{out.load.error_count:>8}{_cell(out.cpu_us_per_req, '.1f'):>11}"
            f"{_pct(out.cpu_share):>6}{busy:>13}{_pct(out.tool_cpu_share):>9}"
            f"{_cell(out.rss_mib, '.1f'):>8}  {out.tls or '?'}"
        )
    return lines


def _goal_lines(gs: list[Goal]) -> list[str]:
    lines = [f"{'sidecar':<40}{'measured':>10}   target"]
    for g in gs:
        value = "n/a" if g.value is None else f"{g.value:.3f} {g.unit}"
        target = f"{g.op} {g.limit:g} {g.unit}" if g.op else "(none)"
        verdict = {True: "met", False: "NOT met", None: ""}[g.met]
        lines.append(f"{g.what:<40}{value:>10}   {target:<10}{verdict}")
    return lines


def _notes(results: Results, facts: dict[str, dict[str, Any]]) -> list[str]:
    notes: list[str] = []
    for name, f in facts.items():
        how = f.get("http10_keepalive", "")
        if how.startswith("NOT announced"):
            notes.append(
                f"note: {name} answers an HTTP/1.0 keep-alive request without "
                "`Connection: keep-alive` yet keeps the connection open, so a real HTTP/1.0 "
                "client waits for a close that never comes. ab -k works here only because the "
                f"backend adds `{MARK_HEADER[0]}: {MARK_HEADER[1]}` (the same for every target) "
                "and ab looks for that word anywhere in the response head."
            )
    for mode, by_target in results.items():
        nginx = by_target.get("nginx")
        if nginx and nginx.ok and nginx.cpu_share is not None and nginx.cpu_share < _SATURATED:
            notes.append(
                f"note: {mode}: the nginx proxy used {nginx.cpu_share:.0%} of its core while the "
                f"load core was {_pct(nginx.load_core_busy)}% busy (ab alone "
                f"{_pct(nginx.tool_cpu_share)}%): the load side capped nginx, so compare RPS "
                "per core / CPU per request rather than RPS."
            )
        tls = {o.tls for o in by_target.values() if o.ok and o.tls}
        if len(tls) > 1:
            notes.append(f"note: {mode}: the targets negotiated different TLS: {sorted(tls)}")
        for out in by_target.values():
            if not out.ok or out.proxy_core_busy is None or out.cpu_share is None:
                continue
            others = out.proxy_core_busy - (out.proxy_core_softirq or 0.0) - out.cpu_share
            if others > _DISTURBED:
                notes.append(
                    f"note: {mode}: other processes used ~{others:.0%} of the proxy core during "
                    f"the {out.name} run; its figures are disturbed."
                )
            if out.load and out.load.error_count:
                notes.append(f"note: {mode}: {out.name}: ab counted errors {out.load.errors}")
            kept = out.keepalive_requests
            if mode == "keepalive" and out.load and kept is not None and kept < out.load.requests:
                notes.append(
                    f"note: keepalive: {out.name}: only {kept} of {out.load.requests} "
                    "requests went over a kept connection."
                )
    seen: set[str] = set()
    for by_target in results.values():
        for out in by_target.values():
            if out.error and out.name not in seen:
                seen.add(out.name)
                notes.append(
                    f"{out.name} failed ({out.mode}):\n  " + out.error.replace("\n", "\n  ")
                )
    return notes


def render(results: Results, facts: dict[str, dict[str, Any]], connections: int) -> str:
    lines: list[str] = []
    for mode, by_target in results.items():
        lines += [*_table(mode, by_target, connections), ""]
    lines.append(
        "CPU % = proxy's use of its core; core busy % = proxy core / load core (ab + backend), "
        "by any process; ab CPU % = the load tool alone"
    )
    if any("sidecar" in by_target for by_target in results.values()):
        lines += ["", *_goal_lines(goals(results))]
    notes = _notes(results, facts)
    if notes:
        lines += ["", *notes]
    return "\n".join(line.rstrip() for line in lines)


def _outcome_json(out: MtlsOutcome) -> dict[str, Any]:
    data = asdict(out)
    if out.load is not None:
        data["load"]["rps"] = out.load.rps
    data["rps_per_core"] = out.rps_per_core
    return data


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: Results,
    facts: dict[str, dict[str, Any]],
) -> None:
    doc = {
        **meta,
        "probes": facts,
        "modes": {
            mode: {name: _outcome_json(out) for name, out in by_target.items()}
            for mode, by_target in results.items()
        },
        "sidecar_goals": [asdict(g) | {"met": g.met} for g in goals(results)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _versions() -> dict[str, str]:
    versions = tool_versions()
    versions.pop("wrk", None)
    for name, argv in {"ab": ["-V"], "openssl": ["version"]}.items():
        try:
            done = subprocess.run(
                [find_tool(name), *argv], capture_output=True, text=True, timeout=5, check=False
            )
            text = (done.stdout + done.stderr).strip()
            versions[name] = text.splitlines()[0] if text else "?"
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            versions[name] = f"unavailable: {exc}"
    try:  # ab's own banner names no release; the Debian package does
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "apache2-utils"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            versions["ab"] += f" (apache2-utils {done.stdout.strip()})"
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def _meta(args: argparse.Namespace, started: datetime, certs: Certs | None) -> dict[str, Any]:
    return {
        "benchmark": "mtls",
        "started_at": started.isoformat(),
        "machine": machine(),
        "sidecar_build": sidecar_build(args.python, REPO),
        "options": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "rounds": args.rounds,
            "modes": args.modes,
            "only": args.only,
            "python": args.python,
            "proxy_cpu": args.proxy_cpu,
            "load_cpu": args.load_cpu,
            "load_tool": "ab (apache2-utils), HTTP/1.0; -k for keepalive, "
            "-H 'Connection: close' for handshake",
            "backend_marker_header": list(MARK_HEADER),
        },
        "certificates": certs.description if certs else None,
        "tools": _versions() | {"python_for_sidecar": args.python},
    }


# --- command line -----------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=5, help="seconds of each measured run (5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each (1)")
    p.add_argument("--connections", type=int, default=50, help="ab concurrency (50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measure every target this many times, interleaved, and keep each one's best "
        "(default 2)",
    )
    p.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    p.add_argument("--only", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    p.add_argument(
        "--python",
        default=None,
        help="interpreter that runs the sidecar and makes the certificates (default: "
        ".venv/bin/python of the repo if it exists, else this one)",
    )
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU for the proxy under test (0)")
    p.add_argument("--load-cpu", type=int, default=1, help="CPU for ab and the backend (1)")
    args = p.parse_args(argv)
    for key, allowed in (("only", TARGETS), ("modes", MODES)):
        chosen = [n.strip() for n in getattr(args, key).split(",") if n.strip()]
        unknown = [n for n in chosen if n not in allowed]
        if unknown or not chosen:
            p.error(f"--{key}: unknown {unknown}; choose from {','.join(allowed)}")
        setattr(args, key, chosen)
    for name in ("duration", "warmup", "connections", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    check_placement(p, args, REPO)
    return args



def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.proxy_cpu == args.load_cpu:
        print("warning: proxy and load share one CPU", file=sys.stderr)
    started = datetime.now(UTC)
    ran, code = supervised(lambda sup, tmp: _run(args, sup, tmp))
    if ran is None:
        return code
    results, facts, certs = ran
    print(render(results, facts, args.connections))
    print(f"sidecar build: {sidecar_build(args.python, REPO)}")
    path = RESULTS / f"mtls-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(path, _meta(args, started, certs), results, facts)
    print(f"\nwrote {path.relative_to(REPO)}")
    ok = all(o.error is None for by_target in results.values() for o in by_target.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
