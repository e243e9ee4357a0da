"""What the kit's real-server runners share (Consul, Jaeger, Redis): leftovers killed at exit,
and a minimal HTTP GET for their readiness probes."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["RUNNING", "ServerProcess", "find_tool", "http_get", "tools_dir"]

def tools_dir() -> Path:
    """The tools cache outside the clone that the scripts/install-*.sh build into."""
    env = os.environ.get("SIDECAR_TOOLS")
    return Path(env) if env else Path.home() / ".cache" / "sidecar"


def find_tool(name: str, env_var: str, not_found: type[Exception], hint: str) -> str:
    """`$<env_var>`, else the tools cache, else `name` on PATH; else `not_found(why)`."""
    env = os.environ.get(env_var)
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise not_found(f"{env_var}={env!r} is not an executable file")
    cached = tools_dir() / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise not_found(f"no {name} binary: not in ${env_var}, not at {cached}, not on PATH; {hint}")


RUNNING: set[int] = set()  # pids of servers started and not yet reaped


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends without stopping its servers must not leave them behind."""
    for pid in list(RUNNING):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


async def http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 GET (no client library, nothing left open on failure)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    return (int(status[0]) if status and status[0].isdigit() else 0), body


class ServerProcess:
    """What a runner of a real server shares: its log, its temp dir, `async with` that
    starts it, stops it and removes the dir (kept, with the log, when the test failed)."""

    workdir: Path
    log_path: Path
    _own_workdir = True

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Remove the temp dir (data and log). Call after stop()."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        if et is None:
            self.cleanup()  # on failure the log stays in self.workdir for a look
