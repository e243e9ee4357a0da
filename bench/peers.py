"""The processes under test: the backend, nginx, haproxy and the sidecar.

Each starter writes its config into its own directory under the run's temp dir,
starts the process pinned to a CPU and returns a `Target` that says which URL wrk
should load and which processes to measure; the caller waits until that URL answers.

Every proxy is tuned the same way where the tools allow it: one worker/thread,
keep-alive on both sides with a reused upstream pool, no access log, and no limit on
requests per connection (nginx's default of 1000 would make one target reconnect
mid-run and not another).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import descendants, rss_mib
from bench.procs import BenchError, Supervisor, free_port, sidecar_env, wait_http_ok

__all__ = [
    "READY_TIMEOUT_S",
    "TARGETS",
    "Launch",
    "Target",
    "find_tool",
    "nginx_target",
    "start_backend",
    "start_nginx",
    "start_sidecar",
    "tool_versions",
]

READY_TIMEOUT_S = 10.0
SIDECAR_READY_TIMEOUT_S = 15.0
# Read idle memory a moment after ready, so lazy start-up work is counted.
IDLE_SETTLE_S = 0.5


@dataclass
class Target:
    name: str
    url: str  # what wrk loads
    proc: subprocess.Popen[bytes] | None = None  # None: nothing between wrk and the backend
    log: Path | None = None
    cpu_pids: Callable[[], list[int]] = list  # whose CPU time counts as the proxy's
    rss_pids: Callable[[], list[int]] = list  # whose memory counts as the proxy's
    startup_s: float | None = None
    idle_rss_mib: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """What every target needs to start."""

    sup: Supervisor
    workdir: Path
    proxy_cpu: int
    backend_cpu: int
    backend_port: int
    python: str  # interpreter for the sidecar
    repo: Path


def find_tool(name: str) -> str:
    # nginx and haproxy live in /usr/sbin, which is not on a normal user's PATH.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise BenchError(f"{name} not found; run scripts/install-system-deps.sh")
    return found


def tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name, argv in {"nginx": ["-v"], "haproxy": ["-v"], "wrk": ["-v"]}.items():
        try:
            done = subprocess.run(
                [find_tool(name), *argv], capture_output=True, text=True, timeout=5, check=False
            )
            text = (done.stdout + done.stderr).strip()
            versions[name] = text.splitlines()[0] if text else "?"
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            versions[name] = f"unavailable: {exc}"
    return versions


def _nginx_conf(prefix: Path, http_body: str) -> str:
    tmp = prefix / "tmp"
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # Own temp paths: Debian's compiled-in ones are under /var/lib/nginx.
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{http_body}
}}
"""


def start_nginx(
    sup: Supervisor, prefix: Path, http_body: str, cpu: int
) -> tuple[subprocess.Popen[bytes], Path]:
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, http_body))
    log = prefix / "stderr.log"
    argv = [
        find_tool("nginx"),
        "-p",
        f"{prefix}/",
        "-c",
        str(conf),
        "-e",
        str(prefix / "error.log"),
        "-g",
        "daemon off;",
    ]
    return sup.start(argv, cpu=cpu, log=log), log


def nginx_target(name: str, url: str, proc: subprocess.Popen[bytes], log: Path) -> Target:
    def workers() -> list[int]:
        return descendants(proc.pid) or [proc.pid]

    return Target(
        name=name,
        url=url,
        proc=proc,
        log=log,
        cpu_pids=lambda: [proc.pid, *descendants(proc.pid)],  # master + workers
        rss_pids=workers,  # the worker does the work; the master only sits there
    )


def start_backend(
    sup: Supervisor, workdir: Path, cpu: int, header: tuple[str, str] | None = None
) -> Target:
    """The fast app every target forwards to: nginx answering a fixed 3-byte body
    (plus one fixed response header when `header` is given)."""
    port = free_port()
    extra = f"\n            add_header {header[0]} {header[1]};" if header else ""
    body = f"""\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;{extra}
            return 200 "ok\\n";
        }}
    }}"""
    proc, log = start_nginx(sup, workdir / "backend", body, cpu)
    url = f"http://127.0.0.1:{port}/"
    wait_http_ok(url, proc, log, READY_TIMEOUT_S)
    return nginx_target("backend", url, proc, log)


def _direct(launch: Launch) -> Target:
    # Nothing to start: wrk loads the backend itself. No proxy processes to measure.
    return Target(name="direct", url=f"http://127.0.0.1:{launch.backend_port}/")


def _nginx(launch: Launch) -> Target:
    port = free_port()
    body = f"""\
    upstream app {{
        server 127.0.0.1:{launch.backend_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    proc, log = start_nginx(launch.sup, launch.workdir / "nginx", body, launch.proxy_cpu)
    return nginx_target("nginx", f"http://127.0.0.1:{port}/", proc, log)


def _haproxy(launch: Launch) -> Target:
    port = free_port()
    home = launch.workdir / "haproxy"
    home.mkdir()
    conf = home / "haproxy.cfg"
    conf.write_text(f"""\
global
    nbthread 1
    # Far above the 50 connections used, yet within a default 'ulimit -n' for root.
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:{port}
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
        url=f"http://127.0.0.1:{port}/",
        proc=proc,
        log=log,
        cpu_pids=lambda: [proc.pid, *descendants(proc.pid)],
        rss_pids=lambda: [proc.pid, *descendants(proc.pid)],
    )


def _sidecar(launch: Launch) -> Target:
    return start_sidecar(launch)


def start_sidecar(launch: Launch, extra_config: str = "", scheme: str = "http") -> Target:
    """The sidecar with its inbound listener forwarding to the backend; `extra_config` is
    YAML appended to the generated config (e.g. an `identity:` section), `scheme` that of
    the URL to load (https when the inbound listener terminates TLS)."""
    port_in, port_out, port_admin = free_port(), free_port(), free_port()
    home = launch.workdir / "sidecar"
    home.mkdir()
    conf = home / "sidecar.yaml"
    conf.write_text(f"""\
service: {{name: bench}}
listeners:
  inbound: {{address: "127.0.0.1:{port_in}"}}
  outbound: {{address: "127.0.0.1:{port_out}"}}
  admin: {{address: "127.0.0.1:{port_admin}"}}
app: {{address: "127.0.0.1:{launch.backend_port}"}}
{extra_config}""")
    env = sidecar_env(launch.repo)
    log = home / "stderr.log"
    argv = [launch.python, "-m", "sidecar", "run", "--config", str(conf)]
    # Start-up time runs from just before the process is created to the first 200 from
    # the admin health endpoint: interpreter start, imports, config, binding listeners.
    started = time.perf_counter()
    proc = launch.sup.start(argv, cpu=launch.proxy_cpu, log=log, env=env, cwd=home)
    wait_http_ok(
        f"http://127.0.0.1:{port_admin}/internal/v1/health", proc, log, SIDECAR_READY_TIMEOUT_S
    )
    startup_s = time.perf_counter() - started

    def pids() -> list[int]:
        return [proc.pid, *descendants(proc.pid)]

    time.sleep(IDLE_SETTLE_S)
    idle = rss_mib(pids())  # before any request reaches it
    return Target(
        name="sidecar",
        url=f"{scheme}://127.0.0.1:{port_in}/",
        proc=proc,
        log=log,
        cpu_pids=pids,
        rss_pids=pids,
        startup_s=startup_s,
        idle_rss_mib=idle,
        extra={"python": launch.python},
    )


# Run in this order; the names are what --only accepts.
TARGETS: dict[str, Callable[[Launch], Target]] = {
    "direct": _direct,
    "nginx": _nginx,
    "haproxy": _haproxy,
    "sidecar": _sidecar,
}
