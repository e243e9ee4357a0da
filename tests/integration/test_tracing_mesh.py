"""Traces from running sidecars into a real Jaeger, and access-log lines, for the demo's
trading → portfolio path: client → trading sidecar (inbound) → trading app → trading
sidecar (outbound) → portfolio sidecar (inbound) → portfolio app.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.demo.apps import build_app
from sidecar.testing.jaeger import JaegerServer

from .support import sidecar_config


@pytest.fixture
async def jaeger() -> AsyncIterator[JaegerServer]:
    async with JaegerServer() as server:
        yield server


def traced(cfg: dict[str, Any], service: str, jaeger: JaegerServer, log: Path) -> dict[str, Any]:
    cfg["service"] = {"name": service}
    cfg["telemetry"] = {"tracing": {"endpoint": jaeger.otlp_traces_url, "sample_ratio": 1.0,
                                    "schedule_delay": "100ms"},
                        "access_log": {"path": str(log), "flush_interval": "50ms"}}
    return cfg


async def test_an_order_is_one_trace_in_jaeger_and_one_log_line_per_hop(
        jaeger: JaegerServer, upstreams, sidecar, tmp_path: Path) -> None:
    portfolio_app = await upstreams.aiohttp(build_app("portfolio"))
    portfolio = await sidecar(traced(sidecar_config(app=portfolio_app.address), "portfolio",
                                     jaeger, tmp_path / "portfolio.log"))
    # The trading app needs its sidecar's outbound address before the sidecar has one:
    # the sidecar takes a fixed free port for it.
    from sidecar.testing import free_port
    outbound_port = free_port()
    trading_app = await upstreams.aiohttp(build_app("trading", f"127.0.0.1:{outbound_port}"))
    trading = await sidecar(traced(sidecar_config(
        app=trading_app.address, services={"portfolio": [portfolio.inbound]},
        listeners={"outbound": f"127.0.0.1:{outbound_port}"}),
        "trading", jaeger, tmp_path / "trading.log"))

    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    order = {"user_id": 7, "symbol": "AAPL", "side": "BUY", "quantity": 3}
    async with aiohttp.ClientSession() as s, s.post(
            "http://%s:%d/api/trading/orders" % trading.inbound, json=order,
            headers={"traceparent": f"00-{trace_id}-{parent}-01"}) as r:
        assert r.status == 201, await r.text()

    trace = await jaeger.wait_for_trace(trace_id, spans=3)
    spans = {s["spanID"]: s for s in trace["spans"]}
    service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}

    def parent_of(span: dict[str, Any]) -> str | None:
        refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
        return refs[0]["spanID"] if refs else None

    def kind(span: dict[str, Any]) -> str:
        return next(t["value"] for t in span["tags"] if t["key"] == "span.kind")

    [trading_in] = [s for s in spans.values()
                    if service[s["processID"]] == "trading" and kind(s) == "server"]
    [trading_out] = [s for s in spans.values()
                     if service[s["processID"]] == "trading" and kind(s) == "client"]
    [portfolio_in] = [s for s in spans.values()
                      if service[s["processID"]] == "portfolio" and kind(s) == "server"]
    assert parent_of(trading_in) == parent  # the client's span
    assert parent_of(trading_out) == trading_in["spanID"]  # through the app's traceparent
    assert parent_of(portfolio_in) == trading_out["spanID"]
    tags = {t["key"]: t["value"] for t in trading_out["tags"]}
    assert tags["sidecar.upstream.endpoint"] == "%s:%d" % portfolio.inbound
    assert tags["http.response.status_code"] == 200

    await portfolio.sidecar.stop()  # flushes the access logs (stopping twice is harmless)
    await trading.sidecar.stop()
    lines = [json.loads(line) for name in ("trading", "portfolio")
             for line in (tmp_path / f"{name}.log").read_text().splitlines()]
    assert {(x["direction"], x["service"]) for x in lines} == {
        ("inbound", "trading"), ("outbound", "portfolio"), ("inbound", "portfolio")}
    assert all(x["trace_id"] == trace_id for x in lines), lines
    out = next(x for x in lines if x["direction"] == "outbound")
    assert out["status"] == 200 and out["upstream"] == "%s:%d" % portfolio.inbound
    assert out["bytes_in"] > 0 and out["bytes_out"] > 0 and out["duration_ms"] > 0
