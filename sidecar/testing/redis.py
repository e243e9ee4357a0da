"""A real, private `redis-server` for tests, on a free loopback port, keeping nothing on disk.

    async with RedisServer() as redis:
        url = redis.url                  # "redis://127.0.0.1:<port>/0"
        await redis.kill()               # SIGKILL: a Redis that vanishes mid-test
        await redis.start()              # back on the same port, empty

The binary is `$SIDECAR_REDIS_SERVER`, else `redis-server` on PATH (Debian's package puts
it in /usr/bin). A missing binary raises `RedisNotFound`: the tests that need Redis fail,
they are not skipped. The server binds 127.0.0.1 only, with persistence off
(`--save '' --appendonly no`), in a temp dir of its own; it counts as started once it
answers PING. Every server started is stopped on exit, even if a test forgot to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .ports import free_port
from .servers import RUNNING

__all__ = ["RedisNotFound", "RedisServer", "RedisStartError", "find_redis_server"]

DEFAULT_START_TIMEOUT = 10.0


class RedisNotFound(RuntimeError):
    """No redis-server binary (Debian: `apt-get install redis-server`)."""


class RedisStartError(RuntimeError):
    """The server exited, or did not answer PING, in time."""


def find_redis_server() -> str:
    env = os.environ.get("SIDECAR_REDIS_SERVER")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise RedisNotFound(f"SIDECAR_REDIS_SERVER={env!r} is not an executable file")
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if found:
        return found
    raise RedisNotFound("no redis-server on PATH; install it (apt-get install redis-server)")


async def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis answers PING at host:port (inline command, no client library)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        return await asyncio.wait_for(reader.readline(), timeout) == b"+PONG\r\n"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class RedisServer:
    def __init__(self, *, binary: str | None = None, port: int | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.binary = binary or find_redis_server()
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(self.host)
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="sidecar-redis-"))
        self.log_path = self.workdir / "redis.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--daemonize", "no", "--logfile", str(self.log_path)]

    async def start(self) -> None:
        """Start (again, on the same port: clients know it). A first start that finds its
        port taken in the meantime tries a fresh one."""
        for attempt in range(3):
            try:
                await self._start_once()
                self.starts += 1
                return
            except RedisStartError:
                if self.starts or self._fixed_port or attempt == 2:
                    raise
                self.port = free_port(self.host)

    async def _start_once(self) -> None:
        if self.running:
            raise RuntimeError("redis-server already running")
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True)  # a ^C in the terminal is for pytest, not Redis
        RUNNING.add(self.proc.pid)
        deadline = time.monotonic() + self.start_timeout
        try:
            while not await ping(self.host, self.port, 0.5):
                if self.proc.returncode is not None:
                    raise RedisStartError(f"redis-server exited with {self.proc.returncode}; "
                                          f"last log lines:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RedisStartError(f"redis-server did not answer PING within "
                                          f"{self.start_timeout:g}s:\n{self.log_tail()}")
                await asyncio.sleep(0.02)
        except BaseException:
            await self.kill()
            raise

    async def stop(self, timeout: float = 5.0) -> None:
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
                await self.kill()
        RUNNING.discard(proc.pid)

    async def kill(self) -> None:
        """SIGKILL: a Redis that vanishes without a word."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        RUNNING.discard(proc.pid)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def __aenter__(self) -> RedisServer:
        try:
            await self.start()
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        if et is None:
            shutil.rmtree(self.workdir, ignore_errors=True)  # on failure the log stays
