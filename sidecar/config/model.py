"""The sidecar's configuration: frozen values, built and validated by `load.py`.

Every field has a default so that `sidecar run` works with no file at all (the
"embedded defaults"). Durations are seconds as floats; addresses are (host, port).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..auth.config import AuthConfig, RbacConfig, RouteAuth
from ..health.config import HealthSettings
from ..inbound.cors import CorsConfig
from ..inbound.transform_config import TransformConfig
from ..policy.budget import BudgetConfig
from ..policy.retry import RetryPolicy
from ..ratelimit.config import RateLimiting, Rule
from ..telemetry.config import AccessLogConfig, TracingConfig
from .consul import ConsulConfig

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    name: str = "app"
    namespace: str = "default"
    version: str = ""


@dataclass(frozen=True, slots=True)
class Listener:
    address: Address
    enabled: bool = True
    # Inbound only: strict (a client certificate from the mesh is required), permissive
    # (mTLS, plain TLS and plaintext all accepted: for migrating a service into the mesh),
    # off. The loader resolves the default: strict when an identity is configured.
    mtls: str = "off"


@dataclass(frozen=True, slots=True)
class Listeners:
    # Inbound listens on all interfaces: peers reach the pod through it.
    inbound: Listener = Listener(("0.0.0.0", 15006))
    # Outbound and admin stay on loopback: only the local app may use them.
    outbound: Listener = Listener(("127.0.0.1", 15001))
    admin: Listener = Listener(("127.0.0.1", 15000))


@dataclass(frozen=True, slots=True)
class App:
    address: Address = ("127.0.0.1", 8080)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StaticDiscovery:
    # A YAML file of `services: {name: [endpoints]}`, re-read when it changes.
    file: str | None = None
    # Services given inline in the sidecar's own config.
    services: tuple[tuple[str, tuple[Endpoint, ...]], ...] = ()
    # How often the file's mtime is checked; cheap, one stat() per period.
    poll_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Discovery:
    static: StaticDiscovery = StaticDiscovery()
    # When set, endpoints come from Consul (and the static entries are not used).
    consul: ConsulConfig | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    host: str | None = None  # authority without port, lower case; None matches any
    path_prefix: str = "/"
    # Request headers that must be present with these exact values (names lower case):
    # how a caller asks for a version (`x-api-version: v2`).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Subset:
    """Some endpoints of a service: those with all these tags and meta values (Consul's
    service tags and meta, or the static file's). Empty: all of them."""

    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    def admits(self, endpoint: Endpoint) -> bool:
        return all(t in endpoint.tags for t in self.tags) and \
            all(kv in endpoint.meta for kv in self.meta)

    def __str__(self) -> str:
        return ",".join([*self.tags, *(f"{k}={v}" for k, v in self.meta)]) or "all"


@dataclass(frozen=True, slots=True)
class Backend:
    """One side of a traffic split: a subset of the route's service, and its weight."""

    subset: Subset
    weight: int


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    service: str
    match: RouteMatch = RouteMatch()
    # Time allowed for the upstream's response head; the body is then covered by idle_timeout.
    timeout: float | None = None
    host_rewrite: str | None = None
    retries: RetryPolicy | None = None  # None: the upstream's
    subset: Subset = Subset()  # which endpoints of the service serve this route
    # This route's own breaker (else the service's, `upstream.circuit_breaker`).
    circuit_breaker: CircuitBreaker | None = None
    # A canary: requests spread over subsets by weight (instead of `subset`).
    split: tuple[Backend, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundRoute:
    """Policy for requests into the local app: the first route that matches applies.

    The stack runs in this order: identity (mTLS, at the handshake) → JWT → RBAC →
    rate limits → the app. A request no inbound route matches gets no route policy
    (service-wide rate limits still apply)."""

    name: str
    match: RouteMatch = RouteMatch()
    jwt: RouteAuth | None = None
    rbac: RbacConfig | None = None
    rate_limits: tuple[Rule, ...] = ()
    timeout: float | None = None
    cors: CorsConfig | None = None  # browsers' cross-origin calls; preflights answered here
    transform: TransformConfig | None = None  # Kong's request/response-transformer


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 10_000  # per listener; beyond it, new connections are closed at once
    max_header_bytes: int = 64 * 1024  # request line + headers; beyond it, 431
    header_timeout: float = 10.0  # a request head must arrive within this (slow-loris guard)
    idle_timeout: float = 60.0  # keep-alive idle, and silence in the middle of a body
    drain_timeout: float = 20.0  # on SIGTERM, in-flight requests get this long to finish
    max_pipelined: int = 32  # requests queued behind the one in flight on one connection


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Per upstream cluster, resilience4j's semantics (see sidecar/policy/breaker.py)."""

    window: str = "count"  # count: the last `window_size` calls; time: the last seconds
    window_size: int = 100
    failure_rate: float = 50.0  # percent of the window's calls that failed (5xx, no answer)
    slow_call_rate: float = 100.0  # percent; with slow_call_duration
    slow_call_duration: float = 60.0
    minimum_calls: int = 20  # before any rate counts
    wait_in_open: float = 10.0  # answering 503 CIRCUIT_OPEN at once, then probing
    half_open_calls: int = 10  # probes that decide between closed and open again
    max_wait_in_half_open: float = 60.0


@dataclass(frozen=True, slots=True)
class Upstream:
    connect_timeout: float = 2.0
    timeout: float = 15.0  # default response-head timeout when a route sets none
    max_connections_per_endpoint: int = 1024
    max_idle_per_endpoint: int = 128
    # Envoy's cluster limits: requests in flight to a service, and waiting for a connection
    # to one endpoint. Past them: 503 UPSTREAM_OVERFLOW at once (queueing more would only
    # add latency to a service that is already saturated).
    max_requests: int = 1024
    max_pending_per_endpoint: int = 1024
    idle_timeout: float = 30.0  # pooled connections unused this long are closed
    # least_request (P2C over peak EWMA latency times in-flight), round_robin, ring_hash, random
    balancer: str = "least_request"
    # Off unless configured: an open breaker refuses every request to the cluster.
    circuit_breaker: CircuitBreaker | None = None
    # Which failed tries are tried again, how often and how soon (see policy/retry.py);
    # routes may set their own. The budget caps retries per cluster (None: no cap).
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    retry_budget: BudgetConfig | None = field(default_factory=BudgetConfig)
    # Active checks (off unless configured), outlier ejection and Retry-After penalties
    # (on by default); see sidecar/health/.
    health: HealthSettings = field(default_factory=HealthSettings)
    # Originate mTLS to peer sidecars and check their SPIFFE ID; the loader's default is
    # on when an identity is configured. The local app is always reached in plaintext.
    mtls: bool = False


@dataclass(frozen=True, slots=True)
class Identity:
    """Where the workload's certificate comes from, and how handshakes are bounded."""

    issuer: str = "files"  # files: cert/key/bundle written by someone else; local-ca: ours
    cert: str | None = None  # files: the leaf and its chain (PEM)
    key: str | None = None
    bundle: str | None = None  # the roots peers must chain to
    crl: str | None = None  # optional; with it, revoked peer leaves are refused
    ca_dir: str | None = None  # local-ca: the directory made by `sidecar ca init`
    ttl: float = 3600.0  # local-ca: lifetime of each leaf; renewed at half of it
    poll_interval: float = 1.0  # how often the files are checked for a change
    handshake_timeout: float = 5.0
    max_handshakes: int = 128  # in progress at once per listener; more wait their turn


@dataclass(frozen=True, slots=True)
class Config:
    service: ServiceIdentity = ServiceIdentity()
    listeners: Listeners = Listeners()
    app: App = App()
    discovery: Discovery = Discovery()
    routes: tuple[Route, ...] = ()
    limits: Limits = Limits()
    upstream: Upstream = Upstream()
    identity: Identity | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)  # JWT providers, claim headers
    rate_limiting: RateLimiting = field(default_factory=RateLimiting)
    inbound_routes: tuple[InboundRoute, ...] = ()
    tracing: TracingConfig | None = None  # off unless configured
    access_log: AccessLogConfig | None = None  # off unless configured
    # Per-request counters and histograms (sidecar_requests_total...); off only to measure
    # what they cost: nothing else would tell requests apart.
    request_metrics: bool = True
    # Where the config came from (None: embedded defaults); reload re-reads this file.
    source: str | None = field(default=None, compare=False)
