"""Fixtures for the HTTP/1.1 data-plane integration tests.

Real sockets on 127.0.0.1 port 0, real servers, the real sidecar (in-process through
`sidecar.testing.running_sidecar`, or as a child process through `SidecarProcess`).
Everything a test opens is closed here, in reverse order: sidecar, then clients, then
upstreams, so that `filterwarnings = error` never trips on a leaked transport.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from .rawclient import RawClient
from .upstream import AiohttpUpstream, Handler, RawUpstream

# The sidecar runs on uvloop in production; run these tests on it too, when the
# installed pytest-asyncio lets a conftest choose the loop (1.x hook).
# SIDECAR_TEST_LOOP=asyncio runs them on the standard loop instead.
try:
    from pytest_asyncio.plugin import PytestAsyncioSpecs as _Specs
except ImportError:  # pragma: no cover
    _Specs = None
if (os.environ.get("SIDECAR_TEST_LOOP", "uvloop") == "uvloop" and _Specs is not None
        and hasattr(_Specs, "pytest_asyncio_loop_factories")):
    def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
        return {"uvloop": uvloop.new_event_loop}


class Upstreams:
    def __init__(self) -> None:
        self.servers: list[RawUpstream | AiohttpUpstream] = []

    async def raw(self, handler: Handler | None = None, name: str = "up",
                  record: bool = True) -> RawUpstream:
        up = RawUpstream(handler, name, record)
        self.servers.append(up)
        return await up.start()

    async def aiohttp(self, app: Any) -> AiohttpUpstream:
        up = AiohttpUpstream(app)
        self.servers.append(up)
        return await up.start()

    async def close(self) -> None:
        for s in reversed(self.servers):
            await s.close()


class Clients:
    def __init__(self) -> None:
        self.open: list[RawClient] = []

    async def connect(self, address: tuple[str, int], ssl: Any = None) -> RawClient:
        c = await RawClient.connect(address, ssl=ssl)
        self.open.append(c)
        return c

    async def close(self) -> None:
        for c in self.open:
            await c.close()


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    u = Upstreams()
    try:
        yield u
    finally:
        await u.close()


@pytest.fixture
async def clients(upstreams: Upstreams) -> AsyncIterator[Clients]:
    c = Clients()
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def sidecar(clients: Clients) -> AsyncIterator[Any]:
    """`sc = await sidecar(config_dict)`: an in-process sidecar in this test's loop."""
    from sidecar.testing import running_sidecar

    async with contextlib.AsyncExitStack() as stack:
        async def start(config: dict[str, Any]) -> Any:
            return await stack.enter_async_context(running_sidecar(config))
        yield start


@pytest.fixture
async def sidecar_process(clients: Clients, tmp_path: Path) -> AsyncIterator[Any]:
    """`sc = await sidecar_process(config_dict)`: `python -m sidecar run` as a child."""
    from sidecar.testing import SidecarProcess

    async with contextlib.AsyncExitStack() as stack:
        async def start(config: dict[str, Any]) -> Any:
            return await stack.enter_async_context(SidecarProcess(config, workdir=tmp_path))
        yield start


@pytest.fixture
async def consul() -> AsyncIterator[Any]:
    """A real `consul agent -dev` on loopback ports of its own."""
    from sidecar.testing.consul import ConsulAgent

    async with ConsulAgent() as agent:
        yield agent


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """An aiohttp client session, closed after the test."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session
