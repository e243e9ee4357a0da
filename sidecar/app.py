"""Builds a running sidecar from its configuration: the one wiring place.

Roles differ only in configuration: the inbound listener routes everything to the
local app's cluster; the outbound listener routes by the configured routes and, by
default, by `Host` to the service of that name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

from .config.consul import ConsulConfig
from .config.errors import ConfigError
from .config.load import SERVICE_NAME, load_file
from .config.model import Config, Endpoint, InboundRoute, Route, Subset
from .discovery import Discovery, EndpointSet, StaticFileDiscovery
from .inbound.policy import RoutePolicy
from .policy.breaker import Breaker, State
from .routing.cluster import Cluster, make_breaker
from .routing.router import RouteEntry, Router
from .telemetry import names
from .telemetry.metrics import Metrics
from .transport.client_tls import ClientTls
from .transport.listener import Listener, ListenerState
from .transport.tls import TlsGate

log = logging.getLogger("sidecar")


class Sidecar:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.metrics = Metrics(config.request_metrics)
        self.discovery: Discovery = _discovery(config)
        self.registration: Any = None  # discovery.registration.Registration, with Consul
        self.identity: Any = None  # identity.provider.IdentityProvider, when configured
        self.auth: Any = None  # auth.runtime.AuthRuntime, when JWT providers are configured
        self.rate_limits: Any = None  # ratelimit.limiter.RateLimits
        self.tracer: Any = None  # telemetry.tracing.Tracer, when tracing is on
        self.access_log: Any = None  # telemetry.access_log.AccessLog, when on
        self.clusters: dict[str, Cluster] = {}  # by service, or `service[subset]`
        self._rng = random.Random()  # traffic splits
        self._route_breakers: dict[str, tuple[Any, Breaker]] = {}  # by route name
        self.app_cluster = Cluster(config.service.name, config.upstream, self.loop)
        self.listeners: dict[str, Listener] = {}
        self.started_at = time.time()
        self.draining = False
        self.admin: Any = None
        self._pool_sweeper: asyncio.Task[None] | None = None
        self.metrics.gauges(self._gauges)

    # building -----------------------------------------------------------------------
    def _cluster(self, service: str, subset: Subset | None = None) -> Cluster:
        """The cluster of `service` (or of one subset of its endpoints: a version)."""
        key = service if subset is None or subset == Subset() else f"{service}[{subset}]"
        cluster = self.clusters.get(key)
        if cluster is None:
            tls = None
            if self.config.upstream.mtls:
                tls = ClientTls(self.identity, self.config.service.namespace, service)
            cluster = self.clusters[key] = Cluster(
                service, self.config.upstream, self.loop, tls=tls,
                health=self.config.upstream.health,
                subset=subset if key != service else None,
                on_breaker=self._breaker_moved(service, ""))
            self.discovery.watch(service).subscribe(cluster.update)
        return cluster

    def _breaker_moved(self, service: str, route: str) -> Callable[[State, State], None]:
        def moved(source: State, target: State) -> None:
            self.metrics.inc(names.CIRCUIT_BREAKER_TRANSITIONS, service=service, route=route,
                             to=target.value)
            log.warning("circuit breaker %s -> %s", source.value, target.value,
                        extra={"service": service, "route": route})
        return moved

    def _route_breaker(self, r: Route) -> Breaker | None:
        """The route's own breaker; one that reloads unchanged keeps its state."""
        kept = self._route_breakers.get(r.name)
        if kept is not None and kept[0] == r.circuit_breaker:
            return kept[1]
        breaker = make_breaker(r.circuit_breaker, self._breaker_moved(r.service, r.name))
        if breaker is None:
            self._route_breakers.pop(r.name, None)
        else:
            self._route_breakers[r.name] = (r.circuit_breaker, breaker)
        return breaker

    def _route_entry(self, config: Config, r: Route) -> RouteEntry:
        timeout = r.timeout if r.timeout is not None else config.upstream.timeout
        stats = self.metrics.requests("outbound", r.service, r.name)

        def entry(subset: Subset) -> RouteEntry:
            return RouteEntry(r.name, self._cluster(r.service, subset), stats, timeout,
                              r.match.host, r.match.path_prefix, r.host_rewrite,
                              retry=r.retries or config.upstream.retries,
                              headers=r.match.headers)

        main = entry(r.subset)
        main.breaker = self._route_breaker(r)
        if r.split:
            main.split_over([(b.weight, entry(b.subset)) for b in r.split], self._rng)
        return main

    def _states(self, config: Config) -> dict[str, ListenerState]:
        name = config.service.name
        for cluster in [self.app_cluster, *self.clusters.values()]:
            cluster.configure(config.upstream)
        app = Endpoint(*config.app.address)
        self.app_cluster.update(EndpointSet(name, (app,), known=True))
        # Requests answered before a route was found (malformed, too large...): route "-".
        inbound_stats = self.metrics.requests("inbound", name, "-")
        inbound_entries = []
        for r in config.inbound_routes:
            entry = RouteEntry(r.name, self.app_cluster,
                               self.metrics.requests("inbound", name, r.name),
                               r.timeout if r.timeout is not None else config.upstream.timeout,
                               r.match.host, r.match.path_prefix, policy=self._policy(config, r))
            entry.response_rewrite = self._response_rewrite(r)
            inbound_entries.append(entry)
        inbound = Router([
            *inbound_entries,
            RouteEntry("app", self.app_cluster, self.metrics.requests("inbound", name, "app"),
                       config.upstream.timeout,
                       policy=self._policy(config, None))])
        entries = [self._route_entry(config, r) for r in config.routes]
        names_now = {r.name for r in config.routes}
        for gone in [n for n in self._route_breakers if n not in names_now]:
            del self._route_breakers[gone]
        timeout = config.upstream.timeout

        def implicit(host: str) -> RouteEntry | None:
            if not SERVICE_NAME.fullmatch(host):
                return None
            return RouteEntry(host, self._cluster(host),
                              self.metrics.requests("outbound", host, host),
                              timeout, retry=config.upstream.retries)

        outbound = Router(entries, implicit)
        return {
            "inbound": ListenerState("inbound", name, b"http", config.limits, inbound,
                                     inbound_stats, self.tracer, self.access_log),
            "outbound": ListenerState("outbound", name, b"http", config.limits, outbound,
                                      self.metrics.requests("outbound", "-", "-"), self.tracer,
                                      self.access_log),
        }

    def _policy(self, config: Config, route: InboundRoute | None) -> RoutePolicy | None:
        """The route's stack (JWT → RBAC → rate limits); None when it has nothing to check.
        `route` None: requests no inbound route matched (service-wide limits only)."""
        name = route.name if route is not None else "default"
        limiter = self.rate_limits.for_route(name, route.rate_limits if route else ())
        guard = rbac = None
        if route is not None and route.jwt is not None:
            from .auth.guard import RouteGuard
            guard = RouteGuard(self.auth.verifier, route.jwt)
        if route is not None and route.rbac is not None and route.rbac.rules:
            from .auth.rbac import Rbac
            rbac = Rbac(route.rbac)
        cors = transform = None
        if route is not None and route.cors is not None:
            from .inbound.cors import Cors
            cors = Cors(route.cors)
        if route is not None and route.transform is not None:
            from .inbound.transform import RequestTransform
            transform = RequestTransform(route.transform) or None
        if guard is None and rbac is None and limiter is None and cors is None \
                and transform is None:
            return None
        return RoutePolicy(name, config.service.name, self.metrics, guard=guard,
                           jwt_dry_run=route.jwt.dry_run if route and route.jwt else False,
                           rbac=rbac, limiter=limiter, cors=cors, transform=transform)

    @staticmethod
    def _response_rewrite(route: InboundRoute) -> Any:
        """The route's response transform as a head-rewriting function, or None."""
        if route.transform is None or not route.transform.response_headers:
            return None
        from .inbound.transform import ResponseTransform
        return ResponseTransform(route.transform).rewrite

    # running ------------------------------------------------------------------------
    async def start(self) -> None:
        from .admin.server import AdminServer  # aiohttp stays off the data plane's imports

        identity = self.config.identity
        if identity is not None:
            from .identity.provider import provider_for
            self.identity = provider_for(identity, self.config.service.namespace,
                                         self.config.service.name)
            await self.identity.start()  # no certificate, no mesh: fails the start loudly
        if self.config.auth.providers:
            from .auth.runtime import AuthRuntime
            self.auth = AuthRuntime(self.config.auth)  # reads key files: ConfigError if bad
            await self.auth.start()  # fetches JWKS URLs once; a failure fails closed, later
        self.rate_limits = _rate_limits(self.config)
        if self.config.tracing is not None:
            from .telemetry.tracing import Tracer  # its export thread starts only here
            self.tracer = Tracer(self.config.tracing)
            self.metrics.gauges(self.tracer.metric_samples)
        if self.config.access_log is not None:
            from .telemetry.access_log import AccessLog
            self.access_log = AccessLog(self.config.access_log)
            self.metrics.gauges(self.access_log.metric_samples)
        await self.discovery.start()
        states = self._states(self.config)
        for name in ("inbound", "outbound"):
            spec = getattr(self.config.listeners, name)
            if spec.enabled:
                gate = None
                if spec.mtls != "off" and identity is not None:
                    gate = TlsGate(self.identity, spec.mtls, identity.handshake_timeout,
                                   identity.max_handshakes, str(self.identity.creds.spiffe_id))
                listener = Listener(name, states[name], self.metrics, self.loop, tls=gate)
                await listener.start(spec.address)
                self.listeners[name] = listener
        if self.config.listeners.admin.enabled:
            self.admin = AdminServer(self)
            await self.admin.start(self.config.listeners.admin.address)
        consul = self.config.discovery.consul
        if consul is not None and consul.registration is not None:
            # After the admin listener: Consul's health check calls it.
            from .discovery.registration import Registration
            self.registration = Registration(self._bound(consul))
            await self.registration.start()
        self._pool_sweeper = self.loop.create_task(self._sweep_pools())

    def reload(self) -> list[str]:
        """Re-read the config file; apply it whole or not at all. Returns the problems."""
        if self.config.source is None:
            return ["no configuration file to reload (running on embedded defaults)"]
        try:
            config = load_file(self.config.source)
        except ConfigError as exc:
            self.metrics.inc(names.CONFIG_RELOADS, result="rejected")
            log.error("reload rejected: %s", "; ".join(exc.problems))
            return exc.problems
        restart = [f"listeners.{n}: changing a listener needs a restart"
                   for n in ("inbound", "outbound", "admin")
                   if getattr(config.listeners, n) != getattr(self.config.listeners, n)]
        if config.discovery.consul != self.config.discovery.consul:
            restart.append("discovery.consul: changing Consul settings needs a restart")
        if config.identity != self.config.identity:
            restart.append("identity: changing the identity settings needs a restart"
                           " (rotated certificate files are picked up without one)")
        if config.upstream.mtls != self.config.upstream.mtls:
            restart.append("upstream.mtls: changing it needs a restart")
        for section in ("tracing", "access_log", "request_metrics"):
            if getattr(config, section) != getattr(self.config, section):
                restart.append(f"telemetry.{section}: changing it needs a restart")
        if config.auth != self.config.auth:
            restart.append("auth: changing JWT providers needs a restart (routes' jwt and rbac"
                           " settings reload)")
        old_rl, new_rl = self.config.rate_limiting, config.rate_limiting
        if (old_rl.policy, old_rl.redis) != (new_rl.policy, new_rl.redis):
            restart.append("rate_limiting: changing the policy or Redis settings needs a restart")
        if restart:
            self.metrics.inc(names.CONFIG_RELOADS, result="rejected")
            return restart
        self.config = config
        if config.rate_limiting != self.rate_limits.config:  # new buckets; the same store
            self.rate_limits = _rate_limits(config, self.rate_limits.store)
        if isinstance(self.discovery, StaticFileDiscovery):
            self.discovery.configure(config.discovery.static)
        for name, state in self._states(config).items():
            if name in self.listeners:
                self.listeners[name].state = state  # atomic: the next request sees it
        self.metrics.inc(names.CONFIG_RELOADS, result="ok")
        log.info("configuration reloaded", extra={"source": config.source})
        return []

    async def drain(self) -> None:
        """SIGTERM: stop accepting, finish what is in flight, close; bounded by drain_timeout."""
        self.draining = True
        deadline = monotonic() + self.config.limits.drain_timeout
        if self.registration is not None:
            # Out of the catalog first, so peers stop choosing us while we finish.
            await self.registration.deregister()
        await asyncio.gather(*(lst.drain(deadline) for lst in self.listeners.values()))

    async def stop(self) -> None:
        if self._pool_sweeper is not None:
            self._pool_sweeper.cancel()
        if self.registration is not None:
            await self.registration.stop()
        for listener in self.listeners.values():
            await listener.close()
        if self.admin is not None:
            await self.admin.stop()
        await self.discovery.stop()
        if self.auth is not None:
            await self.auth.aclose()
        if self.tracer is not None:  # export what is queued, off the loop
            await asyncio.to_thread(self.tracer.shutdown)
        if self.access_log is not None:
            await asyncio.to_thread(self.access_log.close)
        if self.rate_limits is not None:
            await self.rate_limits.close()
        if self.identity is not None:
            await self.identity.stop()
        for cluster in [*self.clusters.values(), self.app_cluster]:
            cluster.close()
        await asyncio.gather(*(c.prober.stop() for c in self.clusters.values()
                               if c.prober is not None))

    def _bound(self, consul: ConsulConfig) -> ConsulConfig:
        """Listeners configured on port 0 are registered with the ports they got."""
        reg = consul.registration
        assert reg is not None
        inbound = self.listeners.get("inbound")
        if reg.port == 0 and inbound is not None and inbound.address is not None:
            reg = dataclasses.replace(reg, port=inbound.address[1])
        admin = self.admin.address if self.admin is not None else None
        if admin is not None and ":0/" in reg.check_url:
            reg = dataclasses.replace(reg, check_url=reg.check_url.replace(
                ":0/", f":{admin[1]}/", 1))
        return dataclasses.replace(consul, registration=reg)

    async def _sweep_pools(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = monotonic()
            for cluster in [*self.clusters.values(), self.app_cluster]:
                for pool in cluster.pools():
                    pool.sweep(now)

    def _gauges(self) -> Iterator[tuple[str, dict[str, str], float]]:
        for name, listener in self.listeners.items():
            yield names.CONNECTIONS_ACTIVE, {"listener": name}, len(listener.connections)
            yield names.CONNECTIONS_TOTAL, {"listener": name}, listener.accepted
            if listener.tls is not None:
                yield names.TLS_HANDSHAKES, {"listener": name, "result": "ok"}, listener.tls.ok
                for reason, count in sorted(listener.tls.failed.items()):
                    yield names.TLS_HANDSHAKES, {"listener": name, "result": reason}, count
        store = self.rate_limits.store if self.rate_limits is not None else None
        if store is not None:
            yield names.RATE_LIMIT_STORE_UP, {}, 1.0 if store.ready() else 0.0
        if self.identity is not None and self.identity.contexts is not None:
            yield names.CERTIFICATE_EXPIRY, {}, self.identity.seconds_left()
            yield names.CERTIFICATE_ROTATIONS, {}, self.identity.rotations
            yield names.CERTIFICATE_LOAD_FAILURES, {}, self.identity.failures
        for cluster in [self.app_cluster, *self.clusters.values()]:
            if not cluster.known or cluster.subset is not None:
                # A Host nobody serves: no labels for it. A subset (a version) shares its
                # service's endpoints: counted once, with the service.
                continue
            idle = sum(len(p.idle) for p in cluster.pools())
            busy = sum(p.busy for p in cluster.pools())
            yield names.UPSTREAM_POOL, {"service": cluster.name, "state": "idle"}, idle
            yield names.UPSTREAM_POOL, {"service": cluster.name, "state": "busy"}, busy
            yield names.DISCOVERY_ENDPOINTS, {"service": cluster.name}, len(cluster.endpoints)
            healthy = len(cluster.endpoints) if cluster.health is None \
                else len(cluster.health.available(cluster.endpoints))
            yield names.UPSTREAM_ENDPOINTS, {"service": cluster.name, "state": "healthy"}, healthy
            yield (names.UPSTREAM_ENDPOINTS, {"service": cluster.name, "state": "unhealthy"},
                   len(cluster.endpoints) - healthy)
            yield (names.UPSTREAM_CONNECT_ERRORS, {"service": cluster.name},
                   sum(p.connect_errors for p in cluster.pools()))
            if cluster.breaker is not None:
                yield from _breaker_state(cluster.name, "", cluster.breaker)
        for route, (_, breaker) in sorted(self._route_breakers.items()):
            service = next((r.service for r in self.config.routes if r.name == route), "")
            yield from _breaker_state(service, route, breaker)


def _breaker_state(service: str, route: str, breaker: Breaker
                   ) -> Iterator[tuple[str, dict[str, str], float]]:
    current = breaker.state.value
    for state in ("closed", "open", "half_open"):
        yield (names.CIRCUIT_BREAKER_STATE, {"service": service, "route": route, "state": state},
               1.0 if current == state else 0.0)


def _rate_limits(config: Config, store: Any = None) -> Any:
    from .ratelimit.limiter import RateLimits  # redis is imported only with policy: redis

    return RateLimits(config.rate_limiting, config.service.name, store=store)


def _discovery(config: Config) -> Discovery:
    """Consul when configured (py-consul is imported only then), else the static source."""
    if config.discovery.consul is not None:
        from .discovery.consul import ConsulDiscovery
        return ConsulDiscovery(config.discovery.consul)
    return StaticFileDiscovery(config.discovery.static)
