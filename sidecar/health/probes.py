"""One active health check of one endpoint: HTTP GET or TCP connect, on a raw asyncio stream.

A probe answers True (passed) or False; every failure the network can cause (refused,
reset, timeout, garbage instead of a status line) is a False, never an exception.
No aiohttp session: one short connection per probe, `Connection: close`, and only the
status line is read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .config import HealthCheck

__all__ = ["Address", "Probe", "http_probe", "make_probe", "tcp_probe"]

Address = tuple[str, int]
Probe = Callable[[Address], Awaitable[bool]]

_USER_AGENT = b"sidecar-health-check"


async def http_probe(address: Address, check: HealthCheck, host: str) -> bool:
    """GET `check.path`: passes if the status is one of `check.expected_statuses`."""
    request = (b"GET %b HTTP/1.1\r\nHost: %b\r\nUser-Agent: %b\r\nAccept: */*\r\n"
               b"Connection: close\r\n\r\n" % (check.path.encode(), host.encode("idna"),
                                               _USER_AGENT))
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(*address)
            try:
                writer.write(request)
                line = await reader.readline()
            finally:
                await _close(writer)
    except (OSError, TimeoutError, EOFError, ValueError):
        return False
    status = _status(line)
    return status is not None and check.passes(status)


async def tcp_probe(address: Address, check: HealthCheck) -> bool:
    """Passes if a connection is accepted within `check.timeout`."""
    try:
        async with asyncio.timeout(check.timeout):
            _, writer = await asyncio.open_connection(*address)
            await _close(writer)
    except (OSError, TimeoutError):
        return False
    return True


def make_probe(check: HealthCheck, host: str) -> Probe:
    """The probe `check` describes; `host` is the Host header when the check names none."""
    if check.kind == "tcp":
        return lambda address: tcp_probe(address, check)
    header = check.host or host
    return lambda address: http_probe(address, check, header or f"{address[0]}:{address[1]}")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _status(line: bytes) -> int | None:
    """The status of an HTTP/1.x status line (`HTTP/1.1 200 OK`), or None."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        return None
    return int(parts[1])
