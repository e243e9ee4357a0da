"""`sidecar run` as a child process, for tests of signals, drain and start-up."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .ports import free_port

Address = tuple[str, int]


def _fill_ports(config: dict[str, Any]) -> dict[str, Any]:
    """A child's ports must be known before it starts: port 0 becomes a free port."""
    out = dict(config)
    listeners = {k: dict(v) for k, v in (config.get("listeners") or {}).items()}
    for name in ("inbound", "outbound", "admin"):
        spec = listeners.setdefault(name, {})
        address = str(spec.get("address", "127.0.0.1:0"))
        host, _, port = address.rpartition(":")
        if port == "0":
            spec["address"] = f"{host or '127.0.0.1'}:{free_port()}"
    out["listeners"] = listeners
    return out


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return (host, int(port))


class SidecarProcess:
    def __init__(self, config: dict[str, Any], workdir: Path, *,
                 python: str = sys.executable) -> None:
        self.config = _fill_ports(config)
        self.config_path = Path(workdir) / "sidecar.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = Path(workdir) / "sidecar.log"
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        listeners = self.config["listeners"]
        self.inbound = _address(listeners["inbound"]["address"])
        self.outbound = _address(listeners["outbound"]["address"])
        self.admin = _address(listeners["admin"]["address"])
        self.started_in: float | None = None

    async def start(self, timeout: float = 10.0) -> None:
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:  # a file, not a pipe nobody drains
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "sidecar", "run", "--config", str(self.config_path),
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        while time.monotonic() - t0 < timeout:
            if self.proc.returncode is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}: "
                                   f"{self.stderr_text()[-2000:]}")
            if await self._healthy():
                self.started_in = time.monotonic() - t0
                return
            await asyncio.sleep(0.02)
        await self.stop()
        raise TimeoutError(f"sidecar not healthy within {timeout}s")

    async def _healthy(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(*self.admin)
        except OSError:
            return False
        try:
            writer.write(b"GET /internal/v1/health HTTP/1.1\r\nHost: admin\r\n"
                         b"Connection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 2.0)
            await asyncio.wait_for(reader.read(), 2.0)
            return line.split(b" ")[1:2] == [b"200"]
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def stderr_text(self) -> str:
        """What the child has logged so far (JSON lines)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 25.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def __aenter__(self) -> SidecarProcess:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
