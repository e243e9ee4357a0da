"""A real Jaeger for tests: OTLP/HTTP in, query API out, memory storage, loopback ports.

    async with JaegerServer() as jaeger:
        tracer = Tracer(TracingConfig("trading", endpoint=jaeger.otlp_traces_url, ...))
        ...
        trace = await jaeger.wait_for_trace(trace_id_hex, spans=3)

The binary is found through `$SIDECAR_JAEGER`, then the tools cache that
`scripts/install-jaeger.sh` builds into (`${SIDECAR_TOOLS:-~/.cache/sidecar}/bin/jaeger`),
then `PATH`. A missing Jaeger raises `JaegerNotFound`: tests that need it fail, they are
not skipped.

`github.com/jaegertracing/jaeger/cmd/jaeger` at v1.76.0 is Jaeger v2, an OpenTelemetry
Collector distribution configured by YAML (there are no `--collector.*` or `--query.*`
flags and no COLLECTOR_OTLP_ENABLED any more). So this writes a config of its own: the OTLP
receiver (HTTP only) into the `memory` storage backend, the `jaeger_query` extension (its
HTTP server keeps the v1 JSON API: `/api/services`, `/api/traces?service=`,
`/api/traces/<id>`; and `/api/v3/...`), and `healthcheckv2`, whose `/status` answers 200
once every component is up. Collector self-metrics (they would bind :8888) and the query
service's own tracing are off.
The binary carries no UI assets (those need an npm build), which the API does not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .servers import RUNNING, ServerProcess, find_tool, http_get

__all__ = ["JaegerNotFound", "JaegerServer", "JaegerStartError", "find_jaeger"]

INSTALL_HINT = "run `bash scripts/install-jaeger.sh` to build it"


class JaegerNotFound(RuntimeError):
    """No Jaeger binary: the tests that need one fail with this."""


class JaegerStartError(RuntimeError):
    """Jaeger exited, or was not healthy, in time."""


def find_jaeger() -> str:
    """`$SIDECAR_JAEGER`, else the tools cache, else `jaeger` on PATH."""
    return find_tool("jaeger", "SIDECAR_JAEGER", JaegerNotFound, INSTALL_HINT)


def _free_ports(n: int, host: str) -> list[int]:
    """n distinct ports free now (all held until all are chosen)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: {host}:{health}
  jaeger_query:
    # On by default in v2: it would export the query service's own spans by OTLP/gRPC to
    # 127.0.0.1:4317 and spend 10 s at shutdown trying.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: {host}:{query}
    grpc:
      endpoint: {host}:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
receivers:
  otlp:
    protocols:
      http:
        endpoint: {host}:{otlp_http}
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""

class JaegerServer(ServerProcess):
    """Jaeger v2 with memory storage on 127.0.0.1, ports of its own, in a temp dir."""

    def __init__(self, *, binary: str | None = None, start_timeout: float = 30.0,
                 max_traces: int = 10000) -> None:
        self.binary = binary or find_jaeger()
        self.host = "127.0.0.1"
        self.start_timeout = start_timeout
        self.max_traces = max_traces
        self.otlp_http_port = self.query_port = self.query_grpc_port = self.health_port = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="sidecar-jaeger-"))
        self.config_path = self.workdir / "jaeger.yaml"
        self.log_path = self.workdir / "jaeger.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def otlp_traces_url(self) -> str:
        """Where an OTLP/HTTP span exporter posts: `http://127.0.0.1:<port>/v1/traces`."""
        return f"http://{self.host}:{self.otlp_http_port}/v1/traces"

    @property
    def query_url(self) -> str:
        return f"http://{self.host}:{self.query_port}"

    def _write_config(self) -> None:
        ports = _free_ports(4, self.host)
        self.otlp_http_port, self.query_port, self.query_grpc_port, self.health_port = ports
        self.config_path.write_text(_CONFIG.format(
            host=self.host, otlp_http=self.otlp_http_port, query=self.query_port,
            query_grpc=self.query_grpc_port, health=self.health_port,
            max_traces=self.max_traces))

    async def start(self) -> None:
        # Ports are picked before Jaeger binds them; another process may take one in
        # between: then try again with fresh ones.
        for attempt in range(3):
            try:
                await self._start_once()
                return
            except JaegerStartError as exc:
                if attempt == 2 or "address already in use" not in str(exc):
                    raise

    async def _start_once(self) -> None:
        self._write_config()
        cmd = [self.binary, f"--config=file:{self.config_path}"]
        with open(self.log_path, "ab") as log:  # a file, not a pipe nobody drains
            log.write(f"==> {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a ^C in the terminal is for pytest, not Jaeger
        RUNNING.add(self.proc.pid)
        try:
            await self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, deadline: float) -> None:
        """Until /status says every component is up and the query API answers."""
        assert self.proc is not None
        last = "no answer yet"
        while True:
            if self.proc.returncode is not None:
                raise JaegerStartError(f"jaeger exited with {self.proc.returncode} during "
                                       f"start-up; last log lines:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JaegerStartError(f"jaeger not ready within {self.start_timeout:g}s "
                                       f"({last}); last log lines:\n{self.log_tail()}")
            try:
                status, body = await http_get(self.host, self.health_port, "/status",
                                          min(2.0, remaining))
                if status == 200:
                    status, body = await http_get(self.host, self.query_port, "/api/services",
                                              min(2.0, remaining))
                    if status == 200:
                        return
                last = f"HTTP {status} {body[:100]!r}"
            except (OSError, TimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        RUNNING.discard(proc.pid)

    async def get_json(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """GET on the query API: (status, parsed JSON body or None)."""
        status, body = await http_get(self.host, self.query_port, path, timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    async def wait_for_trace(self, trace_id: str, *, spans: int = 1,
                             timeout: float = 20.0) -> dict[str, Any]:
        """The trace (`data[0]` of `/api/traces/<id>`) once it holds `spans` spans."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, doc = await self.get_json(f"/api/traces/{trace_id}")
            if status == 200 and isinstance(doc, dict) and doc.get("data"):
                last = doc["data"][0]
                if len(last.get("spans", [])) >= spans:
                    return dict(last)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"trace {trace_id} with {spans} span(s) not in Jaeger within "
                           f"{timeout:g}s; last seen: {json.dumps(last)[:500]}")
