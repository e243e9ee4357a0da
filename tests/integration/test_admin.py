"""The admin listener: health, Prometheus metrics, effective config."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp

from .support import sidecar_config


async def _get(sc: Any, path: str) -> tuple[int, str, str]:
    host, port = sc.admin
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.get(f"http://{host}:{port}{path}") as r):
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_health(sidecar):
    sc = await sidecar(sidecar_config())

    status, ctype, text = await _get(sc, "/internal/v1/health")

    assert status == 200, text
    assert ctype.startswith("application/json")
    body = json.loads(text)
    assert {"status", "timestamp", "dependencies"} <= set(body), body
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["timestamp"], str) and body["timestamp"]
    assert isinstance(body["dependencies"], dict)


def _requests_total(text: str) -> dict[tuple[str | None, str | None], float]:
    """sidecar_requests_total summed by (direction, code)."""
    out: dict[tuple[str | None, str | None], float] = {}
    for line in text.splitlines():
        m = re.match(r'sidecar_requests_total\{([^}]*)\} ([0-9.e+-]+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = (labels.get("direction"), labels.get("code"))
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


async def test_metrics_count_requests(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    status, ctype, before_text = await _get(sc, "/internal/v1/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    before = _requests_total(before_text)

    c = await clients.connect(sc.inbound)
    for _ in range(3):
        assert (await c.get("/")).status == 200
    out = await clients.connect(sc.outbound)
    assert (await out.get("/", host="nowhere")).status == 404
    status, _, text = await _get(sc, "/internal/v1/metrics")

    assert "sidecar_requests_total" in text
    after = _requests_total(text)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert delta.get(("inbound", "200")) == 3.0, text
    assert delta.get(("outbound", "404")) == 1.0, text


async def test_effective_config(upstreams, sidecar):
    sc = await sidecar(sidecar_config(
        services={"portfolio": ["127.0.0.1:9"]},
        routes=[{"name": "api-route", "service": "portfolio",
                 "match": {"host": "api.example", "path_prefix": "/v1"}, "timeout": "2s"}]))

    status, ctype, text = await _get(sc, "/internal/v1/config")

    assert status == 200
    assert ctype.startswith("application/json")
    body = json.loads(text)
    assert isinstance(body, dict)
    assert "trading" in text and "api-route" in text and "api.example" in text


async def test_unknown_admin_path_is_404(sidecar):
    sc = await sidecar(sidecar_config())
    status, _, _ = await _get(sc, "/internal/v1/nope")
    assert status == 404


async def test_hosts_nobody_serves_create_no_series(sidecar, clients):
    # Labels must stay bounded: an app inventing Host values must not mint series.
    sc = await sidecar(sidecar_config(services={"portfolio": ["127.0.0.1:9"]}))
    out = await clients.connect(sc.outbound)
    for host in ("nowhere", "made-up-1", "made-up-2"):
        assert (await out.get("/", host=host)).status == 404
    assert (await out.get("/", host="portfolio")).status == 502  # known, but nobody listens
    _, _, text = await _get(sc, "/internal/v1/metrics")
    for host in ("nowhere", "made-up-1", "made-up-2"):
        assert f'service="{host}"' not in text, text
    assert 'sidecar_discovery_endpoints{service="portfolio"} 1.0' in text


async def test_request_metrics_by_route_and_method_with_bytes(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    cfg = sidecar_config(app=app.address)
    cfg["inbound_routes"] = [{"name": "orders", "match": {"path_prefix": "/orders"}}]
    sc = await sidecar(cfg)
    c = await clients.connect(sc.inbound)
    assert (await c.request("POST", "/orders", [("Host", "a")], b"x" * 1000)).status == 200
    assert (await c.get("/other", host="a")).status == 200
    assert (await c.request("PURGE", "/other", [("Host", "a")])).status == 200  # WebDAV, cache

    _, _, text = await _get(sc, "/internal/v1/metrics")
    from prometheus_client.parser import text_string_to_metric_families
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}

    def value(name: str, **labels: str) -> float | None:
        labels.update(direction="inbound", service="trading")
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("sidecar_requests_total", route="orders", method="POST", code="200") == 1
    assert value("sidecar_requests_total", route="app", method="GET", code="200") == 1
    assert value("sidecar_requests_total", route="app", method="other", code="200") == 1
    assert value("sidecar_request_bytes_total", route="orders") == 1000
    assert (value("sidecar_response_bytes_total", route="orders") or 0) > 0
