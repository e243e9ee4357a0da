"""Rotation under load: a sidecar pair keeps answering while certificates and roots change.

wrk drives requests through two sidecar processes (trading's outbound → mTLS →
portfolio's inbound → nginx as the app) while both leaves are replaced twice, the CA's
root is rotated (the bundle first, then leaves from the new root, as an operator does it)
and both leaves are replaced twice more. The outbound pool keeps few idle connections, so
new mTLS handshakes happen all along. Not one request may fail; the rate is reported.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import pytest

from sidecar.testing import SidecarProcess
from sidecar.testing.mesh_ca import MeshCa
from sidecar.testing.nginx import NginxApp

from .rawclient import RawClient
from .support import sidecar_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("wrk") is None, reason="make system-deps")]

SECONDS = 10  # wrk's run; the rotations take about six of them


async def metric(admin: tuple[str, int], name: str) -> float:
    c = await RawClient.connect(admin)
    try:
        r = await c.get("/internal/v1/metrics", host="admin")
    finally:
        await c.close()
    total = 0.0
    for line in r.body.decode().splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_zero_failures_while_leaves_and_root_rotate(tmp_path: Path) -> None:
    ca = MeshCa(tmp_path)
    portfolio_files, trading_files = ca.leaf("portfolio"), ca.leaf("trading")
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    async with NginxApp(tmp_path) as app:
        pcfg = sidecar_config(app=app.address)
        pcfg["service"] = {"name": "portfolio"}
        pcfg["identity"] = portfolio_files.config()
        async with SidecarProcess(pcfg, tmp_path / "p") as portfolio:
            tcfg = sidecar_config(services={"portfolio": [portfolio.inbound]},
                                  upstream={"max_idle_per_endpoint": 6})
            tcfg["identity"] = trading_files.config()
            async with SidecarProcess(tcfg, tmp_path / "t") as trading:
                await _run(ca, portfolio, trading, portfolio_files, trading_files)


async def _run(ca: MeshCa, portfolio: SidecarProcess, trading: SidecarProcess,
               portfolio_files: object, trading_files: object) -> None:
    served = "sidecar_requests_total"
    handshakes = 'sidecar_tls_handshakes_total{listener="inbound",result="ok"}'
    before = await metric(portfolio.admin, handshakes)
    host, port = trading.outbound
    wrk = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c8", f"-d{SECONDS}s", "-H", "Host: portfolio", f"http://{host}:{port}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    t0 = time.monotonic()
    per_phase = []

    async def rotate(action: object) -> None:
        counts = [await metric(s.admin, "sidecar_certificate_rotations_total")
                  for s in (portfolio, trading)]
        start = await metric(portfolio.admin, served)
        assert callable(action)
        action()
        async with asyncio.timeout(10):
            for s, n in zip((portfolio, trading), counts, strict=True):
                while await metric(s.admin, "sidecar_certificate_rotations_total") <= n:
                    await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # traffic on the new credentials
        per_phase.append(await metric(portfolio.admin, served) - start)

    await asyncio.sleep(0.5)
    for _ in range(2):  # new leaves from the same root
        await rotate(lambda: (ca.leaf("portfolio"), ca.leaf("trading")))
    # A new root: bundles first (old and new roots), then leaves under the new root.
    ca.rotate_root()
    await rotate(lambda: (ca.refresh(portfolio_files), ca.refresh(trading_files)))  # type: ignore[arg-type]
    for _ in range(2):
        await rotate(lambda: (ca.leaf("portfolio"), ca.leaf("trading")))
    rotated_by = time.monotonic() - t0
    out, _ = await asyncio.wait_for(wrk.communicate(), SECONDS + 20)
    text = out.decode()
    assert wrk.returncode == 0, text

    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    new_handshakes = await metric(portfolio.admin, handshakes) - before
    print(f"\nrotation under load: {requests} requests, {rate:.0f}/s, rotations done in "
          f"{rotated_by:.1f}s, {new_handshakes:.0f} new mTLS handshakes, per phase {per_phase}")
    assert "Non-2xx" not in text and "Socket errors" not in text, text  # not one failure
    assert all(n > 0 for n in per_phase), per_phase  # traffic through every phase
    assert rotated_by < SECONDS  # every rotation happened while wrk was loading
    assert new_handshakes > 8  # connections were made on rotated credentials too
