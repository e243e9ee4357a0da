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


def traced(cfg: dict[str, Any], service: str, jaeger: JaegerServer, log: Path,
           ratio: float) -> dict[str, Any]:
    cfg["service"] = {"name": service}
    cfg["telemetry"] = {"tracing": {"endpoint": jaeger.otlp_traces_url, "sample_ratio": ratio,
                                    "schedule_delay": "100ms"},
                        "access_log": {"path": str(log), "flush_interval": "50ms"}}
    return cfg


async def trading_and_portfolio(jaeger: JaegerServer, upstreams: Any, sidecar: Any,
                                logs: Path, ratio: float) -> tuple[Any, Any]:
    """The demo's two services, each behind its sidecar, tracing at `ratio`."""
    portfolio_app = await upstreams.aiohttp(build_app("portfolio"))
    portfolio = await sidecar(traced(sidecar_config(app=portfolio_app.address), "portfolio",
                                     jaeger, logs / "portfolio.log", ratio))
    # The trading app needs its sidecar's outbound address before the sidecar has one:
    # the sidecar takes a fixed free port for it.
    from sidecar.testing import free_port
    outbound_port = free_port()
    trading_app = await upstreams.aiohttp(build_app("trading", f"127.0.0.1:{outbound_port}"))
    trading = await sidecar(traced(sidecar_config(
        app=trading_app.address, services={"portfolio": [portfolio.inbound]},
        listeners={"outbound": f"127.0.0.1:{outbound_port}"}),
        "trading", jaeger, logs / "trading.log", ratio))
    return trading, portfolio


def log_lines(logs: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for name in ("trading", "portfolio")
            for line in (logs / f"{name}.log").read_text().splitlines()]


ORDER = {"user_id": 7, "symbol": "AAPL", "side": "BUY", "quantity": 3}


async def test_an_order_is_one_trace_in_jaeger_and_one_log_line_per_hop(
        jaeger: JaegerServer, upstreams, sidecar, tmp_path: Path) -> None:
    trading, portfolio = await trading_and_portfolio(jaeger, upstreams, sidecar, tmp_path, 1.0)

    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    async with aiohttp.ClientSession() as s, s.post(
            "http://%s:%d/api/trading/orders" % trading.inbound, json=ORDER,
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
    lines = log_lines(tmp_path)
    assert {(x["direction"], x["service"]) for x in lines} == {
        ("inbound", "trading"), ("outbound", "portfolio"), ("inbound", "portfolio")}
    assert all(x["trace_id"] == trace_id for x in lines), lines
    out = next(x for x in lines if x["direction"] == "outbound")
    assert out["status"] == 200 and out["upstream"] == "%s:%d" % portfolio.inbound
    assert out["bytes_in"] > 0 and out["bytes_out"] > 0 and out["duration_ms"] > 0


async def test_a_trace_not_sampled_passes_one_new_trace_id_through_every_hop(
        jaeger: JaegerServer, upstreams, sidecar, tmp_path: Path) -> None:
    """At ratio 0 the first sidecar starts a trace it does not sample: its id goes on
    flagged "not sampled" (through the trading app, which copies traceparent), every hop
    obeys, and every access-log line names that one trace."""
    trading, portfolio = await trading_and_portfolio(jaeger, upstreams, sidecar, tmp_path, 0.0)
    ids = []
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post("http://%s:%d/api/trading/orders" % trading.inbound,
                              json=ORDER) as r:
                assert r.status == 201, await r.text()
    await portfolio.sidecar.stop()
    await trading.sidecar.stop()
    lines = log_lines(tmp_path)
    assert len(lines) == 9  # three hops a request
    for direction, service in (("inbound", "trading"), ("outbound", "portfolio"),
                               ("inbound", "portfolio")):
        ids.append([x["trace_id"] for x in lines
                    if (x["direction"], x["service"]) == (direction, service)])
    assert ids[0] == ids[1] == ids[2]  # request by request, the same trace at every hop
    assert len(set(ids[0])) == 3 and all(len(t) == 32 and int(t, 16) for t in ids[0])
