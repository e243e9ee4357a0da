"""A real Consul agent (`consul agent -dev`) for tests, on loopback ports chosen here.

    async with ConsulAgent() as consul:
        url = consul.http_url            # "http://127.0.0.1:<port>"
        ...
        await consul.restart()           # same ports, same data dir

The binary is found through `$SIDECAR_CONSUL`, then the tools cache that
`scripts/install-consul.sh` builds into (`${SIDECAR_TOOLS:-~/.cache/sidecar}/bin/consul`),
then `PATH`. A missing Consul raises `ConsulNotFound`: the tests that need Consul fail, they
are not skipped.

Every port of `-dev` mode is set explicitly (HTTP, DNS, Serf LAN and WAN, server RPC, gRPC
and gRPC-TLS), so agents started in parallel do not collide. The agent binds 127.0.0.1 only.
Dev mode keeps the Raft state (the catalog) in memory: a restart starts from an empty
catalog, but services and checks registered through the agent API (`/v1/agent/...`) are
persisted in the data dir and synced back to the catalog by the restarted agent.
`restart(wipe_data=True)` loses those too (an agent that forgot its registrations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

from .servers import RUNNING, ServerProcess, find_tool, http_get

INSTALL_HINT = "run `bash scripts/install-consul.sh` (or `make system-deps`) to build it"
DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 15.0


class ConsulNotFound(RuntimeError):
    """No Consul binary: the tests that need one fail with this."""


class ConsulStartError(RuntimeError):
    """The agent exited, or did not elect itself leader, in time."""


def find_consul() -> str:
    """`$SIDECAR_CONSUL`, else the tools cache, else `consul` on PATH."""
    return find_tool("consul", "SIDECAR_CONSUL", ConsulNotFound, INSTALL_HINT)


@dataclass(frozen=True)
class ConsulPorts:
    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int
    grpc: int
    grpc_tls: int

    def flags(self) -> list[str]:
        return ["-http-port", str(self.http), "-dns-port", str(self.dns),
                "-serf-lan-port", str(self.serf_lan), "-serf-wan-port", str(self.serf_wan),
                "-server-port", str(self.server), "-grpc-port", str(self.grpc),
                "-grpc-tls-port", str(self.grpc_tls)]


# DNS and both Serf ports listen on UDP as well as TCP: those must be free for both.
_UDP_TOO = {"dns", "serf_lan", "serf_wan"}


def pick_ports(host: str = "127.0.0.1") -> ConsulPorts:
    """Distinct ports free on `host` now (TCP, and UDP where Consul needs it).

    Every socket is held until all ports are chosen, so the ports differ from each
    other; another process may still take one before the agent binds it, as with any
    port chosen ahead of a child process.
    """
    held: list[socket.socket] = []
    chosen: dict[str, int] = {}
    try:
        for f in fields(ConsulPorts):
            for _ in range(50):
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(tcp)
                tcp.bind((host, 0))
                port = int(tcp.getsockname()[1])
                if f.name in _UDP_TOO:
                    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    held.append(udp)
                    try:
                        udp.bind((host, port))
                    except OSError:
                        continue
                chosen[f.name] = port
                break
            else:  # pragma: no cover - 50 busy UDP ports in a row
                raise OSError(f"no free TCP+UDP port on {host} for Consul's {f.name}")
    finally:
        for s in held:
            s.close()
    return ConsulPorts(**chosen)


class ConsulAgent(ServerProcess):
    """`consul agent -dev` bound to 127.0.0.1 on ports of its own, in a temp dir of its own."""

    def __init__(self, *, binary: str | None = None, node_name: str = "sidecar-test",
                 start_timeout: float = DEFAULT_START_TIMEOUT,
                 extra_args: tuple[str, ...] = (), workdir: Path | None = None) -> None:
        self.binary = binary or find_consul()
        self.node_name = node_name
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.host = "127.0.0.1"
        self.ports = pick_ports(self.host)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="sidecar-consul-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "consul.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.started_in: float | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def http_address(self) -> str:
        """The HTTP API as `127.0.0.1:<port>`, the form CONSUL_HTTP_ADDR and clients take."""
        return f"{self.host}:{self.ports.http}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def dns_address(self) -> tuple[str, int]:
        return (self.host, self.ports.dns)

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def command(self) -> list[str]:
        return [self.binary, "agent", "-dev",
                "-bind", self.host, "-client", self.host,
                "-data-dir", str(self.data_dir), "-node", self.node_name,
                *self.ports.flags(), *self.extra_args]

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Free ports are picked before Consul binds them; another process may take one in
        # between. A first start that loses that race gets fresh ports (a restart keeps its
        # ports: its clients know them).
        for attempt in range(3):
            try:
                await self._start_once()
                return
            except ConsulStartError as exc:
                if self.started_in is not None or attempt == 2 \
                        or "address already in use" not in str(exc):
                    raise
                self.ports = pick_ports(self.host)

    async def _start_once(self) -> None:
        if self.running:
            raise RuntimeError("Consul agent already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:  # a file, not a pipe nobody drains
            log.write(f"==> {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a ^C in the terminal is for pytest, not Consul
        RUNNING.add(self.proc.pid)
        try:
            await self._wait_ready(t0 + self.start_timeout)
        except BaseException:
            await self._terminate()
            raise
        self.started_in = time.monotonic() - t0

    async def _wait_ready(self, deadline: float) -> None:
        """Until the agent has a leader and its own node is in the catalog."""
        assert self.proc is not None
        last = "no answer yet"
        while True:
            if self.proc.returncode is not None:
                raise ConsulStartError(
                    f"consul agent exited with {self.proc.returncode} during start-up; "
                    f"last log lines:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConsulStartError(
                    f"consul agent not ready within {self.start_timeout:g}s ({last}); "
                    f"last log lines:\n{self.log_tail()}")
            try:
                status, body = await http_get(self.host, self.ports.http, "/v1/status/leader",
                                               min(2.0, remaining))
                leader = json.loads(body) if status == 200 else ""
                if not leader:
                    last = f"leader: HTTP {status} {body[:100]!r}"
                else:
                    status, body = await http_get(
                        self.host, self.ports.http, f"/v1/catalog/node/{self.node_name}",
                        min(2.0, remaining))
                    node = json.loads(body) if status == 200 else None
                    if isinstance(node, dict) and node.get("Node"):
                        return
                    last = f"leader {leader}, node not in the catalog yet"
            except (OSError, TimeoutError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Idempotent."""
        await self._terminate(timeout)

    async def _terminate(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
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

    async def kill(self) -> None:
        """SIGKILL: an agent that dies without leaving."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self.proc is not None:
            RUNNING.discard(self.proc.pid)

    async def restart(self, *, wipe_data: bool = False) -> None:
        """Stop and start again on the same ports with the same data dir.

        `wipe_data=True` empties the data dir first: the agent comes back without the
        services and checks registered through it.
        """
        await self.stop()
        if wipe_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        await self.start()


class TcpTarget:
    """A loopback port for a Consul TCP check; stopped, it refuses (the check fails)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TcpTarget:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
