"""What the kit's real-server runners share (Consul, Jaeger, Redis): leftovers killed at exit,
and a minimal HTTP GET for their readiness probes."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal

__all__ = ["RUNNING", "http_get"]

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
