"""YAML (or a dict) → a validated, frozen `Config`; every problem reported at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..auth.config import AuthConfig
from ..auth.parse import read_auth
from ..auth.parse_route import read_rbac, read_route_auth
from ..inbound.cors import read_cors
from ..inbound.transform_config import read_transform
from ..ratelimit.config import read_rules, read_section
from .consul import ConsulConfig, RegistrationConfig
from .errors import ConfigError
from .fields import Fields, join, parse_address
from .identity import read_identity
from .model import (
    App,
    Backend,
    Config,
    Discovery,
    Endpoint,
    InboundRoute,
    Limits,
    Listener,
    Listeners,
    Route,
    RouteMatch,
    ServiceIdentity,
    StaticDiscovery,
    Subset,
)
from .telemetry import read_telemetry
from .upstream import read_breaker, read_retries, read_upstream

__all__ = ["load_data", "load_file", "parse_endpoints"]

# A service name is a DNS label: it becomes a Host header, a SPIFFE path segment, a metric label.
_BALANCERS = re.compile("least_request|round_robin|ring_hash|random")
SERVICE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
HOST = re.compile(r"[a-z0-9*]([a-z0-9.-]{0,251}[a-z0-9])?")


def load_file(path: str | Path) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    return load_data(data, source=source, base_dir=Path(path).parent)


def load_data(data: Any, source: str | None = None, base_dir: Path | None = None) -> Config:
    problems: list[str] = []
    top = Fields(data, "", problems)
    service = _service(top.child("service"))
    identity = read_identity(top.child("identity"), base_dir) if top.has("identity") else None
    auth = read_auth(top.child("auth"), base_dir)
    tracing, access_log, request_metrics = read_telemetry(top.child("telemetry"), service)
    listeners = _listeners(top.child("listeners"), identity is not None)
    config = Config(
        service=service,
        listeners=listeners,
        app=App(top.child("app").address("address", App().address)),
        discovery=_discovery(top.child("discovery"), base_dir, service, listeners),
        routes=_routes(top, problems),
        limits=_limits(top.child("limits")),
        upstream=read_upstream(top.child("upstream"), identity is not None),
        identity=identity,
        auth=auth,
        rate_limiting=read_section(top.child("rate_limiting")),
        inbound_routes=_inbound_routes(top, problems, auth),
        tracing=tracing,
        access_log=access_log,
        request_metrics=request_metrics,
        source=source,
    )
    top.finish()
    if problems:
        raise ConfigError(problems, source)
    return config


def _service(f: Fields) -> ServiceIdentity:
    d = ServiceIdentity()
    out = ServiceIdentity(
        name=f.string("name", d.name, SERVICE_NAME, "a DNS label ([a-z0-9-], at most 63)"),
        namespace=f.string("namespace", d.namespace, SERVICE_NAME, "a DNS label"),
        version=f.string("version", d.version),
    )
    f.finish()
    return out


def _listener(f: Fields, default: Listener) -> Listener:
    out = Listener(address=f.address("address", default.address),
                   enabled=f.boolean("enabled", default.enabled))
    f.finish()
    return out


_MTLS = re.compile("strict|permissive|off")


def _inbound(f: Fields, default: Listener, has_identity: bool) -> Listener:
    mtls = f.string("mtls", "strict" if has_identity else "off", _MTLS,
                    "one of strict, permissive, off")
    if mtls != "off" and not has_identity:
        f.problem("mtls", f"{mtls} needs an identity (the `identity` section)")
    out = Listener(address=f.address("address", default.address),
                   enabled=f.boolean("enabled", default.enabled), mtls=mtls)
    f.finish()
    return out


def _listeners(f: Fields, has_identity: bool) -> Listeners:
    d = Listeners()
    out = Listeners(
        inbound=_inbound(f.child("inbound"), d.inbound, has_identity),
        outbound=_listener(f.child("outbound"), d.outbound),
        admin=_listener(f.child("admin"), d.admin),
    )
    f.finish()
    enabled = [(n, lst.address) for n, lst in
               (("inbound", out.inbound), ("outbound", out.outbound), ("admin", out.admin))
               if lst.enabled and lst.address[1] != 0]
    seen: dict[tuple[str, int], str] = {}
    for name, addr in enabled:
        if addr in seen:
            f.problem(name, f"address {addr[0]}:{addr[1]} is also used by {seen[addr]}")
        seen[addr] = name
    return out


def parse_endpoints(raw: Any, path: str, problems: list[str]) -> tuple[Endpoint, ...]:
    """A list of `host:port` strings or `{address, weight, tags, meta}` mappings."""
    if not isinstance(raw, list):
        problems.append(f"{path}: must be a list of endpoints")
        return ()
    out: list[Endpoint] = []
    for i, item in enumerate(raw):
        where = join(path, i)
        if isinstance(item, str):
            addr = parse_address(item)
            if addr is None:
                problems.append(f"{where}: must be an address like 10.0.0.7:8080 (got {item!r})")
                continue
            out.append(Endpoint(addr[0], addr[1]))
            continue
        f = Fields(item, where, problems)
        addr = f.address("address", ("", 0))
        no_tags: tuple[str, ...] = ()
        no_meta: tuple[tuple[str, str], ...] = ()
        tags = f.value("tags", no_tags, _str_tuple, "a list of strings")
        meta = f.value("meta", no_meta, _str_pairs, "a mapping of strings")
        weight = f.integer("weight", 1, minimum=1, maximum=10_000)
        f.finish()
        if not f.has("address"):
            f.problem("address", "is required")
        if addr != ("", 0):
            out.append(Endpoint(addr[0], addr[1], weight=weight, tags=tags, meta=meta))
    return tuple(out)


def _str_tuple(v: Any) -> tuple[str, ...] | None:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return None


def _str_pairs(v: Any) -> tuple[tuple[str, str], ...] | None:
    if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str | int | float)
                                   for k, x in v.items()):
        return tuple(sorted((k, str(x)) for k, x in v.items()))
    return None


def parse_services(raw: dict[str, Any], path: str,
                   problems: list[str]) -> tuple[tuple[str, tuple[Endpoint, ...]], ...]:
    out = []
    for name, endpoints in raw.items():
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            problems.append(f"{join(path, str(name))}: service name must be a DNS label")
            continue
        out.append((name, parse_endpoints(endpoints, join(path, name), problems)))
    return tuple(sorted(out))


def _discovery(f: Fields, base_dir: Path | None, service: ServiceIdentity,
               listeners: Listeners) -> Discovery:
    consul = _consul(f.child("consul"), service, listeners) if f.has("consul") else None
    s = f.child("static")
    file = s.optional_string("file")
    if file is not None and base_dir is not None and not Path(file).is_absolute():
        file = str(base_dir / file)
    static = StaticDiscovery(
        file=file,
        services=parse_services(s.mapping("services"), join(s.path, "services"), s.problems),
        poll_interval=s.duration("poll_interval", StaticDiscovery().poll_interval),
    )
    s.finish()
    f.finish()
    return Discovery(static=static, consul=consul)


def _consul(f: Fields, service: ServiceIdentity, listeners: Listeners) -> ConsulConfig:
    d = ConsulConfig()
    register = f.data.get("registration")
    registration = None
    f.seen.add("registration")
    if register is True or isinstance(register, dict):
        sub = Fields(register if isinstance(register, dict) else {},
                     join(f.path, "registration"), f.problems)
        registration = _registration(sub, service, listeners)
    elif register not in (None, False):
        f.problem("registration", "must be true, false or a mapping")
    out = ConsulConfig(
        address=f.string("address", d.address),
        token=f.optional_string("token"),
        datacenter=f.optional_string("datacenter"),
        wait=f.duration("wait", d.wait),
        backoff_base=f.duration("backoff_base", d.backoff_base),
        backoff_cap=f.duration("backoff_cap", d.backoff_cap),
        registration=registration,
    )
    f.finish()
    f.problems.extend(out.problems(f.path))
    return out


def _registration(f: Fields, service: ServiceIdentity, listeners: Listeners) -> RegistrationConfig:
    """The local service as peers reach it: through this sidecar's inbound listener,
    checked on its admin health; every field can be overridden."""
    host, port = listeners.inbound.address
    admin_host, admin_port = listeners.admin.address
    if admin_host in ("0.0.0.0", "::", ""):
        admin_host = "127.0.0.1"
    no_tags: tuple[str, ...] = ()
    no_meta: tuple[tuple[str, str], ...] = ()
    meta = f.value("meta", no_meta, _str_pairs, "a mapping of strings")
    if service.version and "version" not in dict(meta):
        meta = (*meta, ("version", service.version))
    d = RegistrationConfig(name=service.name)
    out = RegistrationConfig(
        name=f.string("name", service.name, SERVICE_NAME, "a service name (a DNS label)"),
        id=f.optional_string("id") or f"{service.name}-{port}",
        address=f.optional_string("address") or (None if host in ("0.0.0.0", "::") else host),
        port=f.integer("port", port, minimum=1, maximum=65535),
        tags=f.value("tags", no_tags, _str_tuple, "a list of strings"),
        meta=tuple(sorted(meta)),
        weight=f.integer("weight", d.weight, minimum=1),
        check_url=f.string("check_url", f"http://{admin_host}:{admin_port}/internal/v1/health"),
        check_interval=f.duration("check_interval", d.check_interval),
        check_timeout=f.duration("check_timeout", d.check_timeout),
        deregister_critical_after=f.duration("deregister_critical_after",
                                             d.deregister_critical_after),
        resync_interval=f.duration("resync_interval", d.resync_interval),
    )
    f.finish()
    return out


def _routes(top: Fields, problems: list[str]) -> tuple[Route, ...]:
    out: list[Route] = []
    names: set[str] = set()
    for path, raw in top.items("routes"):
        f = Fields(raw, path, problems)
        service = f.string("service", "", SERVICE_NAME, "a service name (a DNS label)")
        if not f.has("service"):
            f.problem("service", "is required")
        name = f.string("name", service or f"route-{len(out)}")
        if name in names:
            f.problem("name", f"duplicate route name {name!r}")
        names.add(name)
        match = _match(f.child("match"), headers=True)
        timeout = f.optional_duration("timeout")
        retries = read_retries(f) if f.has("retries") else None
        subset = _subset(f.child("subset")) if f.has("subset") else Subset()
        split = _split(f) if f.has("split") else ()
        breaker = read_breaker(f.child("circuit_breaker")) if f.has("circuit_breaker") else None
        if split and f.has("subset"):
            f.problem("split", "a route has either a subset or a split, not both")
        out.append(Route(name=name, service=service, match=match,
                         timeout=timeout, host_rewrite=f.optional_string("host_rewrite"),
                         retries=retries, subset=subset, split=split,
                         circuit_breaker=breaker))
        f.finish()
    return tuple(out)


def _inbound_routes(top: Fields, problems: list[str], auth: AuthConfig) -> tuple[InboundRoute, ...]:
    out: list[InboundRoute] = []
    providers = [p.name for p in auth.providers]
    for i, (path, raw) in enumerate(top.items("inbound_routes")):
        f = Fields(raw, path, problems)
        name = f.string("name", f"inbound-{i}")
        if any(r.name == name for r in out):
            f.problem("name", f"duplicate route name {name!r}")
        match = _match(f.child("match"))
        jwt = read_route_auth(f.data.get("jwt"), join(path, "jwt"), problems, providers) \
            if f.has("jwt") else None
        rbac = read_rbac(f.data.get("rbac"), join(path, "rbac"), problems) \
            if f.has("rbac") else None
        f.seen.update(("jwt", "rbac"))
        cors = read_cors(f.child("cors")) if f.has("cors") else None
        transform = read_transform(f.child("transform")) if f.has("transform") else None
        out.append(InboundRoute(name=name, match=match, jwt=jwt, rbac=rbac,
                                rate_limits=read_rules(f), timeout=f.optional_duration("timeout"),
                                cors=cors, transform=transform or None))
        f.finish()
    return tuple(out)


def _match(m: Fields, headers: bool = False) -> RouteMatch:
    host = m.optional_string("host")
    if host is not None and not HOST.fullmatch(host.lower()):
        m.problem("host", f"must be a host name (got {host!r})")
    prefix = m.string("path_prefix", "/")
    if not prefix.startswith("/"):
        m.problem("path_prefix", "must start with /")
    no_headers: tuple[tuple[str, str], ...] = ()
    wanted = m.value("headers", no_headers, _str_pairs, "a mapping of header names to values") \
        if headers else no_headers
    m.finish()
    return RouteMatch(host.lower() if host else None, prefix,
                      tuple((k.lower(), v) for k, v in wanted))


def _subset(f: Fields) -> Subset:
    no_tags: tuple[str, ...] = ()
    no_meta: tuple[tuple[str, str], ...] = ()
    out = Subset(tags=f.value("tags", no_tags, _str_tuple, "a list of strings"),
                 meta=f.value("meta", no_meta, _str_pairs, "a mapping of strings"))
    f.finish()
    return out


def _split(f: Fields) -> tuple[Backend, ...]:
    out = []
    for path, raw in f.items("split"):
        b = Fields(raw, path, f.problems)
        subset = _subset(b.child("subset"))
        weight = b.integer("weight", 0, minimum=0, maximum=10_000)
        if not b.has("weight"):
            b.problem("weight", "is required")
        b.finish()
        out.append(Backend(subset, weight))
    if out and sum(b.weight for b in out) == 0:
        f.problem("split", "the weights add up to 0")
    return tuple(out)


def _limits(f: Fields) -> Limits:
    d = Limits()
    out = Limits(
        max_connections=f.integer("max_connections", d.max_connections, minimum=1),
        max_header_bytes=f.integer("max_header_bytes", d.max_header_bytes, minimum=1024),
        header_timeout=f.duration("header_timeout", d.header_timeout),
        idle_timeout=f.duration("idle_timeout", d.idle_timeout),
        drain_timeout=f.duration("drain_timeout", d.drain_timeout),
        max_pipelined=f.integer("max_pipelined", d.max_pipelined, minimum=1),
    )
    f.finish()
    return out

