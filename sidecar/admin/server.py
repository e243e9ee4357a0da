"""The admin API (aiohttp, off the data plane): health, metrics, config, reload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..telemetry.metrics import summary

if TYPE_CHECKING:
    from ..app import Sidecar

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
REDACTED = "<redacted>"
SECRET_WORDS = ("secret", "password", "token")
_USERINFO = re.compile(r"(?<=://)[^/@]*@")  # redis://user:password@host


def redact(value: Any) -> Any:
    """The effective config as JSON, with anything that looks like a secret hidden."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: (REDACTED if _secret(f.name) and getattr(value, f.name)
                         else redact(getattr(value, f.name)))
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, tuple | list):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            return f"{value[0]}:{value[1]}"  # an address
        return [redact(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(redact(v) for v in value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str) and "://" in value:
        return _USERINFO.sub(REDACTED + "@", value)
    return value


def _secret(name: str) -> bool:
    return any(w in name for w in SECRET_WORDS) or name == "key" or name.endswith("_key")


class AdminServer:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        app = web.Application()
        app.add_routes([
            web.get("/internal/v1/health", self.health),
            web.get("/internal/v1/metrics", self.metrics),
            web.get("/internal/v1/config", self.config),
            web.get("/internal/v1/clusters", self.clusters),
            web.get("/internal/v1/explain", self.explain),
            web.post("/internal/v1/config/reload", self.reload),
        ])
        self.app = app

    async def start(self, address: tuple[str, int]) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, address[0], address[1], reuse_address=True)
        await site.start()
        # uvloop's Server is no asyncio.Server subclass; both have `sockets`.
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the admin site has no listening socket"
        sock = sockets[0].getsockname()
        self.address = (sock[0], sock[1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        sc = self.sidecar
        app_ok = await _reachable(sc.config.app.address)
        discovery = sc.discovery.describe()
        status = "draining" if sc.draining else ("healthy" if app_ok else "degraded")
        body = {
            "status": status,
            "timestamp": datetime.now(UTC).isoformat(),
            "service": sc.config.service.name,
            "uptime": round(time.time() - sc.started_at, 3),
            "dependencies": {
                "app": {"address": "%s:%d" % sc.config.app.address,
                        "status": "up" if app_ok else "down"},
                "discovery": {"source": discovery["source"],
                              "status": "error" if discovery.get("last_error") else "ok",
                              "last_error": discovery.get("last_error")},
            },
        }
        # The sidecar answers 200 while it serves (an app that is down is `degraded`, and
        # visible); 503 once draining, so that checks take it out of rotation.
        return web.json_response(body, status=503 if sc.draining else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        if request.query.get("format") == "json":
            return web.json_response(summary(self.sidecar.metrics.all_stats()))
        return web.Response(body=self.sidecar.metrics.render(),
                            headers={"Content-Type": PROMETHEUS_TEXT})

    async def clusters(self, request: web.Request) -> web.Response:
        """Each upstream service: its endpoints with their health, and its breaker."""
        out: dict[str, Any] = {}
        for name, cluster in sorted(self.sidecar.clusters.items()):
            if not cluster.known:
                continue
            health = cluster.health
            rows: list[dict[str, Any]] = health.describe() if health is not None else [
                {"address": str(ue.endpoint)} for ue in cluster.endpoints]
            available = set(health.available(cluster.endpoints)) if health is not None \
                else set(cluster.endpoints)
            for row, ue in zip(rows, cluster.endpoints, strict=False):
                row["balanced"] = ue in available
            out[name] = {"endpoints": rows,
                         "circuit_breaker": cluster.breaker.state.value
                         if cluster.breaker is not None else None,
                         "mtls": cluster.tls.expected if cluster.tls is not None else None}
        if self.sidecar.identity is not None and self.sidecar.identity.contexts is not None:
            creds = self.sidecar.identity.creds
            identity = {"spiffe_id": str(creds.spiffe_id), "serial": f"{creds.serial:x}",
                        "not_after": creds.not_after.isoformat(),
                        "rotations": self.sidecar.identity.rotations}
        else:
            identity = None
        routes = {name: breaker.state.value
                  for name, (_, breaker) in sorted(self.sidecar._route_breakers.items())}
        return web.json_response({"clusters": out, "route_breakers": routes,
                                  "identity": identity})

    async def explain(self, request: web.Request) -> web.Response:
        """Which inbound route a request would match and what each policy would decide;
        nothing is sent upstream, counted, or taken from a rate limit. The request is
        described by `method`, `path`, `host`, `peer` (a SPIFFE ID), `client_ip` in the
        query, and by the headers of this request that are not the admin call's own
        (e.g. `Authorization`)."""
        from ..protocol.events import RequestHead

        q = request.query
        listener = self.sidecar.listeners.get("inbound")
        if listener is None:
            return web.json_response({"error": "no inbound listener"}, status=404)
        path = q.get("path", "/")
        if not path.startswith("/"):
            return web.json_response({"error": "path must start with /"}, status=400)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in request.headers.items() if k.lower() not in _OWN_HEADERS]
        head = RequestHead(q.get("method", "GET").upper().encode("latin-1"),
                           path.encode("latin-1"), "1.1", headers, True)
        head.authority = q.get("host", "").lower().encode("latin-1")
        entry = listener.state.router.route(head)
        body: dict[str, Any] = {"route": entry.name if entry is not None else None}
        steps = []
        if entry is not None and entry.policy is not None:
            steps = await entry.policy.explain(head, q.get("peer"), q.get("client_ip", "127.0.0.1"))
        body["policies"] = steps
        enforced = [s for s in steps if s["decision"] == "deny" and not s["dry_run"]]
        body["decision"] = "deny" if enforced else "allow"
        return web.json_response(body)

    async def config(self, request: web.Request) -> web.Response:
        sc = self.sidecar
        body: dict[str, Any] = {"config": redact(sc.config), "discovery": sc.discovery.describe()}
        if sc.registration is not None:
            body["registration"] = sc.registration.describe()
        return web.json_response(body)

    async def reload(self, request: web.Request) -> web.Response:
        problems = self.sidecar.reload()
        if problems:
            return web.json_response({"status": "rejected", "problems": problems}, status=400)
        return web.json_response({"status": "reloaded", "source": self.sidecar.config.source})


# Headers of the admin call itself, not of the request being explained.
_OWN_HEADERS = frozenset(("host", "user-agent", "accept", "accept-encoding", "connection",
                          "content-length"))


async def _reachable(address: tuple[str, int], timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
