"""Rotation under load: a sidecar pair keeps answering while certificates and roots change.

Two sidecar processes (trading → portfolio over mTLS) carry a steady stream of requests
while both leaves are replaced several times and the CA's root is rotated (the bundle
first, then leaves from the new root, as an operator does it). The outbound pool keeps
few idle connections, so new handshakes happen all along. Not one request may fail.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from sidecar.testing import SidecarProcess
from sidecar.testing.mesh_ca import LeafFiles, MeshCa

from .rawclient import RawClient
from .support import sidecar_config

pytestmark = pytest.mark.slow

CLIENTS = 8


async def metric(admin: tuple[str, int], name: str) -> float:
    c = await RawClient.connect(admin)
    try:
        r = await c.get("/internal/v1/metrics", host="admin")
    finally:
        await c.close()
    total = 0.0
    for line in r.body.decode().splitlines():
        if re.match(rf"{name}(\{{|\s)", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def rotated(sc: SidecarProcess, before: float) -> None:
    async with asyncio.timeout(10):
        while await metric(sc.admin, "sidecar_certificate_rotations_total") <= before:
            await asyncio.sleep(0.05)


async def test_zero_failures_while_leaves_and_root_rotate(tmp_path: Path, upstreams):
    ca = MeshCa(tmp_path)
    app = await upstreams.raw(name="portfolio-app", record=False)
    portfolio_files, trading_files = ca.leaf("portfolio"), ca.leaf("trading")

    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    pcfg = sidecar_config(app=app.address)
    pcfg["service"] = {"name": "portfolio"}
    pcfg["identity"] = portfolio_files.config()
    portfolio = SidecarProcess(pcfg, tmp_path / "p")
    await portfolio.start()
    try:
        tcfg = sidecar_config(services={"portfolio": [portfolio.inbound]},
                              upstream={"max_idle_per_endpoint": 6})
        tcfg["identity"] = trading_files.config()
        trading = SidecarProcess(tcfg, tmp_path / "t")
        await trading.start()
        try:
            await _run(ca, portfolio, trading, portfolio_files, trading_files)
        finally:
            await trading.stop()
    finally:
        await portfolio.stop()


async def _run(ca: MeshCa, portfolio: SidecarProcess, trading: SidecarProcess,
               portfolio_files: LeafFiles, trading_files: LeafFiles) -> None:
    stop = asyncio.Event()
    ok = [0]
    failures: list[str] = []
    phase = [0]
    per_phase: dict[int, int] = {}

    async def client() -> None:
        c = await RawClient.connect(trading.outbound)
        try:
            while not stop.is_set():
                try:
                    r = await c.get("/quote", host="portfolio")
                except Exception as exc:  # a reset is a failure like any other
                    failures.append(repr(exc))
                    await c.close()
                    c = await RawClient.connect(trading.outbound)
                    continue
                if r.status == 200:
                    ok[0] += 1
                    per_phase[phase[0]] = per_phase.get(phase[0], 0) + 1
                else:
                    failures.append(f"{r.status} {r.body[:200]!r}")
        finally:
            await c.close()

    handshakes_before = await metric(portfolio.admin, 'sidecar_tls_handshakes_total{listener="inbound",result="ok"}')
    t0 = time.monotonic()
    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        async def both_rotate(action: object) -> None:
            before = [await metric(s.admin, "sidecar_certificate_rotations_total")
                      for s in (portfolio, trading)]
            assert callable(action)
            action()
            await rotated(portfolio, before[0])
            await rotated(trading, before[1])
            await asyncio.sleep(0.5)  # traffic on the new credentials
            phase[0] += 1

        for _ in range(2):  # new leaves from the same root
            await both_rotate(lambda: (ca.leaf("portfolio"), ca.leaf("trading")))
        # A new root: bundles first (old and new roots), then leaves under the new root.
        ca.rotate_root()
        await both_rotate(lambda: (ca.refresh(portfolio_files), ca.refresh(trading_files)))
        for _ in range(2):
            await both_rotate(lambda: (ca.leaf("portfolio"), ca.leaf("trading")))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0

    handshakes = await metric(
        portfolio.admin, 'sidecar_tls_handshakes_total{listener="inbound",result="ok"}') \
        - handshakes_before
    print(f"\nrotation under load: {ok[0]} requests in {elapsed:.1f}s "
          f"({ok[0] / elapsed:.0f}/s), {handshakes:.0f} new mTLS handshakes, "
          f"{len(failures)} failures, per phase {per_phase}")
    assert failures == [], failures[:5]
    assert sorted(per_phase) == [0, 1, 2, 3, 4, 5], per_phase  # traffic through every phase
    assert handshakes > 10  # connections were made on the rotated credentials too
